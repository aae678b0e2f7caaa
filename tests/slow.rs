//! Slow and long answers for an account without the customer-service API (`late.via:
//! retries`), through the real App: a WeChat stand-in that tries each push as WeChat does
//! (the same MsgId three times, 5 s apart, each attempt dropped at 5 s), a backend on
//! 127.0.0.1 answering after 1, 7, 12 and 25 s. The backend is asked once each time, and
//! the user gets the answer exactly once: passively, on a retry, or on the next message.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::backend::Backend;
use common::fake_wechat::{FakeWechat, APPID};
use common::redis_server::RedisServer;
use common::*;
use wxrules::accounts::Secrets;
use wxrules::act::outbox::Senders;
use wxrules::server::{AppState, Options};
use wxrules::store::{dedup, Store};

const RULES: &str = r#"rules:
  - name: assistant
    when: { keyword: { regex: '^问\s*(?P<ms>\d+)$' } }
    call: { url: "{BASE}/slow/{{captures.ms}}", timeout: 40s }
    late:
      reply: { text: "正在思考，回复 1 查看结果" }
      pickup: ["1", 结果]
    reply: { text: "答案：{{call.answer}}" }
  - name: long
    when: { keyword: 长 }
    call: { url: "{BASE}/long", timeout: 40s }
    late: { via: retries }
    reply: { text: "{{call.text}}" }
  - name: deferred
    when: { keyword: 延迟 }
    call: { url: "{BASE}/deferred", timeout: 30s }
    late: { reply: { text: 稍候 } }
    reply: { text: "送达：{{call.answer}}" }
  - name: markdown
    when: { keyword: md }
    call: { url: "{BASE}/markdown" }
    format: plain
    reply: { text: "{{call.answer}}" }
  - name: fallback
    when: {}
    reply: { text: "规则的回答" }
"#;

/// WeChat's wait for one attempt, and the time between attempts.
const WECHAT_WAIT: Duration = Duration::from_secs(5);

fn text(user: &str, msg_id: u64, content: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>\
         <CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

fn state(scratch: &Scratch, store: Store) -> AppState {
    let config = dedup::Config {
        store,
        ..dedup::Config::default()
    };
    state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options::default(),
        Some(config),
    )
}

fn scratch(tag: &str, backend: &Backend) -> Scratch {
    let scratch = Scratch::new(tag);
    scratch.write(
        "rules.yaml",
        &RULES.replace("{BASE}", &format!("http://{}", backend.addr)),
    );
    scratch
}

/// Tries `body` as WeChat does, on `apps` in turn (one app: every attempt on it): up to
/// three attempts 5 s apart, each dropped at 5 s. The answer of the attempt that got one
/// in time (its number, 1-based), if any.
async fn wechat_tries<S>(apps: &[&S], body: &str) -> Option<(usize, String)>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let start = tokio::time::Instant::now();
    for attempt in 0..3 {
        let app = apps[attempt % apps.len()];
        let at = start + WECHAT_WAIT * u32::try_from(attempt).unwrap();
        tokio::time::sleep_until(at).await;
        let query = signed_query();
        match tokio::time::timeout(WECHAT_WAIT, post(app, &query, body.to_owned())).await {
            Ok((200, answer)) => return Some((attempt + 1, answer)),
            Ok((status, answer)) => panic!("attempt {attempt}: {status} {answer}"),
            Err(_) => {}
        }
    }
    None
}

fn content(xml: &str) -> String {
    let start = xml.find("<Content><![CDATA[").map(|i| i + 18).unwrap_or(0);
    let end = xml[start..]
        .find("]]></Content>")
        .map_or(xml.len(), |e| start + e);
    xml[start..end].to_owned()
}

#[actix_web::test]
async fn a_slow_answer_reaches_the_user_once_whatever_the_backend_takes() {
    let backend = Backend::start();
    let scratch = scratch("slow-retries", &backend);
    let app = app(state(&scratch, Store::Memory)).await;
    let started = Instant::now();
    // Four users, four backends' speeds, at once.
    let apps = [&app];
    let bodies = [
        text("u1", 1, "问 1000"),
        text("u7", 7, "问 7000"),
        text("u12", 12, "问 12000"),
        text("u25", 25, "问 25000"),
    ];
    let (one, seven, twelve, late) = tokio::join!(
        wechat_tries(&apps, &bodies[0]),
        wechat_tries(&apps, &bodies[1]),
        wechat_tries(&apps, &bodies[2]),
        wechat_tries(&apps, &bodies[3]),
    );
    let (attempt, answer) = one.unwrap();
    assert_eq!((attempt, content(&answer).as_str()), (1, "答案：想好了"));
    let (attempt, answer) = seven.unwrap();
    assert_eq!(
        (attempt, content(&answer).as_str()),
        (2, "答案：想好了"),
        "the second attempt carries it"
    );
    let (attempt, answer) = twelve.unwrap();
    assert_eq!(
        (attempt, content(&answer).as_str()),
        (3, "答案：想好了"),
        "the third attempt carries it"
    );
    let (attempt, answer) = late.unwrap();
    assert_eq!(
        (attempt, content(&answer).as_str()),
        (3, "正在思考，回复 1 查看结果"),
        "the last attempt gets the holding reply"
    );
    // Each call made once, however many attempts joined it.
    for ms in ["1000", "7000", "12000", "25000"] {
        let calls = backend
            .received()
            .iter()
            .filter(|r| r.target == format!("/slow/{ms}"))
            .count();
        assert_eq!(calls, 1, "the backend is asked once for /slow/{ms}");
    }
    // The 25 s answer is kept: a message that is not a pickup word gets the rules' answer,
    // `1` gets the kept answer, once.
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        started + Duration::from_secs(26),
    ))
    .await;
    let (_, other) = post(&app, &signed_query(), text("u25", 100, "你好")).await;
    assert_eq!(content(&other), "规则的回答");
    let (_, kept) = post(&app, &signed_query(), text("u25", 101, "1")).await;
    assert_eq!(content(&kept), "答案：想好了");
    let (_, again) = post(&app, &signed_query(), text("u25", 102, "1")).await;
    assert_eq!(content(&again), "规则的回答", "given once");
    // The users whose answer came in time have nothing kept.
    let (_, none) = post(&app, &signed_query(), text("u7", 103, "1")).await;
    assert_eq!(content(&none), "规则的回答");
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "wxrules_kept_answers_total{outcome=\"kept\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "wxrules_kept_answers_total{outcome=\"given\"}"),
        Some(1.0)
    );
}

#[actix_web::test]
async fn attempts_on_two_instances_join_one_call_through_redis() {
    let redis = RedisServer::start();
    let backend = Backend::start();
    let scratch = scratch("slow-redis", &backend);
    let store = || redis.url().parse::<Store>().unwrap();
    let (one, two) = (state(&scratch, store()), state(&scratch, store()));
    // As `serve` does at start: Redis reached before the first push.
    assert!(one.dedup.connect().await && two.dedup.connect().await);
    let (one, two) = (app(one).await, app(two).await);
    let started = Instant::now();
    // Attempts alternate: 1 on one, 2 on two, 3 on one.
    let apps = [&one, &two];
    let bodies = [text("r7", 207, "问 7000"), text("r25", 225, "问 17000")];
    let (seven, late) = tokio::join!(
        wechat_tries(&apps, &bodies[0]),
        wechat_tries(&apps, &bodies[1]),
    );
    let (attempt, answer) = seven.unwrap();
    assert_eq!(
        (attempt, content(&answer).as_str()),
        (2, "答案：想好了"),
        "the attempt on the other instance gets the answer of the call made on the first"
    );
    let (attempt, answer) = late.unwrap();
    assert_eq!(
        (attempt, content(&answer).as_str()),
        (3, "正在思考，回复 1 查看结果")
    );
    for ms in ["7000", "17000"] {
        let calls = backend
            .received()
            .iter()
            .filter(|r| r.target == format!("/slow/{ms}"))
            .count();
        assert_eq!(calls, 1, "one call for /slow/{ms} across both instances");
    }
    // Kept by the instance that made the call, given by the other.
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        started + Duration::from_secs(18),
    ))
    .await;
    let (_, kept) = post(&two, &signed_query(), text("r25", 300, "结果")).await;
    assert_eq!(content(&kept), "答案：想好了");
    let (_, again) = post(&one, &signed_query(), text("r25", 301, "结果")).await;
    assert_eq!(
        content(&again),
        "规则的回答",
        "given once, by either instance"
    );
}

/// The parts of a long text, as the user reads them: each within WeChat's 2048 bytes, the
/// marker removed from all but the last.
fn joined_parts(parts: &[String], marker: &str) -> String {
    for part in parts {
        assert!(part.len() <= 2048, "a part of {} bytes", part.len());
    }
    let (last, rest) = parts.split_last().unwrap();
    let mut text = String::new();
    for part in rest {
        text.push_str(
            part.strip_suffix(marker)
                .expect("every part but the last says how to go on"),
        );
    }
    text.push_str(last);
    text
}

#[actix_web::test]
async fn a_long_answer_goes_one_part_a_message_without_the_customer_service_api() {
    let backend = Backend::start();
    let scratch = scratch("slow-long", &backend);
    let app = app(state(&scratch, Store::Memory)).await;
    let (_, first) = post(&app, &signed_query(), text("l1", 400, "长")).await;
    let mut parts = vec![content(&first)];
    for i in 0..5 {
        let (_, next) = post(&app, &signed_query(), text("l1", 401 + i, "继续")).await;
        let next = content(&next);
        if next == "规则的回答" {
            break;
        }
        parts.push(next);
    }
    assert!(
        parts.len() >= 3,
        "5,000 bytes take three parts or more: {}",
        parts.len()
    );
    let marker = wxrules::server::slow::NEXT_MARKER;
    assert_eq!(joined_parts(&parts, marker), common::backend::long_answer());
    assert_eq!(backend.count(), 1);
}

/// The account has the customer-service API (a fake WeChat on 127.0.0.1).
fn sending_state(scratch: &Scratch, fake: &FakeWechat) -> (AppState, Senders) {
    let mut state = state(scratch, Store::Memory);
    let senders = sending_through(&mut state, fake);
    (state, senders)
}

async fn delivered(fake: &FakeWechat, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    while fake.delivered_count() < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.delivered()
        .iter()
        .map(|m| m["text"]["content"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[actix_web::test]
async fn with_the_api_parts_go_in_order_and_the_quota_keeps_the_rest() {
    let backend = Backend::start();
    let fake = FakeWechat::start();
    let scratch = scratch("slow-quota", &backend);
    let rules = RULES.replace("{BASE}", &format!("http://{}", backend.addr)).replace(
        "  - name: fallback",
        "  - name: long-now\n    when: { keyword: 长文 }\n    call: { url: \"http://{BASE}/long\" }\n    reply: { text: \"{{call.text}}\" }\n  - name: six\n    when: { keyword: 六条 }\n    reply: { text: 马上发送 }\n    send: [ { text: m1 }, { text: m2 }, { text: m3 }, { text: m4 }, { text: m5 }, { text: m6 } ]\n  - name: fallback",
    ).replace("{BASE}", &backend.addr.to_string());
    scratch.write("rules.yaml", &rules);
    let (state, _senders) = sending_state(&scratch, &fake);
    let app = app(state).await;
    // A long answer: the first part passive, the rest through the API, in order, no marker.
    let (_, first) = post(&app, &signed_query(), text("q1", 500, "长文")).await;
    let mut parts = vec![content(&first)];
    let sent = delivered(&fake, 2).await;
    assert!(!sent.is_empty());
    parts.extend(sent);
    assert_eq!(parts.concat(), common::backend::long_answer());
    // Six messages for one push: WeChat allows five; the sixth waits for the next message.
    let (_, now) = post(&app, &signed_query(), text("q2", 501, "六条")).await;
    assert_eq!(content(&now), "马上发送");
    let before = fake.delivered_count();
    let sent = delivered(&fake, before + 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.delivered_count(), before + 5, "never past the quota");
    assert_eq!(&sent[before..], ["m1", "m2", "m3", "m4", "m5"]);
    let (_, next) = post(&app, &signed_query(), text("q2", 502, "你好")).await;
    assert_eq!(
        content(&next),
        "m6",
        "the sixth, kept, is the next message's reply"
    );
}

/// Five messages for one push, within our own count of the quota.
const FIVE: &str = "  - name: five
    when: { keyword: 五条 }
    reply: { text: 马上发送 }
    send: [ { text: m1 }, { text: m2 }, { text: m3 }, { text: m4 }, { text: m5 } ]
";

/// The value of `series` in `/metrics` once it is `want`, within 10 s (what an outbox
/// task counts comes a moment after WeChat's answer).
async fn metric_becomes<S>(app: &S, series: &str, want: f64) -> Option<f64>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let got = sample(&scrape(app).await, series);
        if got == Some(want) || Instant::now() > until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// WeChat's count of a user's customer-service quota is ahead of ours (another system sent
/// them messages, or a restart forgot our count): it takes two of the five a push queues
/// and answers the third with 45047. The third and the two behind it, never tried, are
/// the user's next messages' replies, one a message; nothing is lost or sent twice, and
/// nothing is tried through the API again until the user's next action opens a window.
async fn wechats_45047_keeps_the_rest_for_the_next_message(store: Store, tag: &str) {
    let backend = Backend::start();
    let fake = FakeWechat::start();
    let scratch = scratch(tag, &backend);
    let rules = RULES
        .replace("{BASE}", &format!("http://{}", backend.addr))
        .replace("  - name: fallback", &format!("{FIVE}  - name: fallback"));
    scratch.write("rules.yaml", &rules);
    let mut state = state(&scratch, store);
    if state.dedup.redis().is_some() {
        // As `serve` does at start: Redis reached before the first push.
        assert!(state.dedup.connect().await);
    }
    let _senders = sending_through(&mut state, &fake);
    let app = app(state).await;
    let sent_to = |user: &str| -> Vec<String> {
        fake.delivered()
            .iter()
            .filter(|m| m["touser"] == user)
            .map(|m| m["text"]["content"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    fake.limit_user("k1", 2);
    let (_, now) = post(&app, &signed_query(), text("k1", 900, "五条")).await;
    assert_eq!(content(&now), "马上发送");
    let kept = r#"wxrules_outbox_results_total{outcome="kept"}"#;
    assert_eq!(metric_becomes(&app, kept, 3.0).await, Some(3.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent_to("k1"), ["m1", "m2"]);
    assert_eq!(
        fake.attempts_to("k1"),
        3,
        "the two behind the refused one are not tried"
    );
    // The user's next message gets the first kept, `继续` each of the others, once.
    let mut given = Vec::new();
    for (msg_id, word) in [(901, "你好"), (902, "继续"), (903, "继续"), (904, "继续")] {
        let (_, reply) = post(&app, &signed_query(), text("k1", msg_id, word)).await;
        given.push(content(&reply));
    }
    assert_eq!(given, ["m3", "m4", "m5", "规则的回答"]);
    assert_eq!(fake.attempts_to("k1"), 3, "nothing tried meanwhile");
    // A new action opens a new window, at WeChat's and in our count: all five go.
    fake.limit_user("k1", 5);
    let (_, now) = post(&app, &signed_query(), text("k1", 910, "五条")).await;
    assert_eq!(content(&now), "马上发送");
    fake.wait_delivered(7).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sent_to("k1"),
        ["m1", "m2", "m1", "m2", "m3", "m4", "m5"],
        "each once, in order"
    );
    let metrics = scrape(&app).await;
    for (series, want) in [
        (r#"wxrules_outbox_results_total{outcome="sent"}"#, 7.0),
        (r#"wxrules_outbox_results_total{outcome="kept"}"#, 3.0),
        (r#"wxrules_outbox_results_total{outcome="failed"}"#, 0.0),
        (r#"wxrules_kept_answers_total{outcome="kept"}"#, 1.0),
        (r#"wxrules_kept_answers_total{outcome="given"}"#, 3.0),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series}");
    }
}

#[actix_web::test]
async fn wechats_45047_keeps_the_rest_for_the_users_next_messages() {
    wechats_45047_keeps_the_rest_for_the_next_message(Store::Memory, "slow-45047").await;
}

#[actix_web::test]
async fn wechats_45047_keeps_the_rest_through_redis_and_leaves_no_entry() {
    let redis = RedisServer::start();
    let store = redis.url().parse::<Store>().unwrap();
    wechats_45047_keeps_the_rest_for_the_next_message(store, "slow-45047-redis").await;
    // Every entry of the outbox's streams was acknowledged: the kept ones too.
    let until = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left: usize = (0..8)
            .map(|i| redis.xlen(&format!("wxrules:outbox:{APPID}:{i}")))
            .sum();
        if left == 0 || Instant::now() > until {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(left, 0);
}

#[actix_web::test]
async fn format_plain_makes_a_backends_markdown_chat_text() {
    let backend = Backend::start();
    let scratch = scratch("slow-markdown", &backend);
    let app = app(state(&scratch, Store::Memory)).await;
    let (_, answer) = post(&app, &signed_query(), text("m1", 600, "md")).await;
    let answer = content(&answer);
    assert!(answer.starts_with("【标题】"), "{answer}");
    assert!(
        !answer.contains("**") && !answer.contains("## "),
        "{answer}"
    );
    assert!(answer.contains("• 第一"), "{answer}");
}

/// Posts `body` to `path` of the App (a delivery URL's path).
async fn deliver<S>(app: &S, path: &str, body: &str) -> u16
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let request = actix_web::test::TestRequest::post()
        .uri(path)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
        .to_request();
    actix_web::test::call_service(app, request)
        .await
        .status()
        .as_u16()
}

#[actix_web::test]
async fn a_service_may_answer_202_and_deliver_its_answer_once_to_a_signed_url() {
    let backend = Backend::start();
    let scratch = scratch("slow-deliver", &backend);
    let mut state = state(&scratch, Store::Memory);
    let mut slow = wxrules::server::slow::SlowAnswers::new(state.clock.clone(), None);
    slow.deliver_base = Some("http://127.0.0.1:9".into());
    state.slow = std::sync::Arc::new(slow);
    let app = app(state).await;
    let (body, query) = (text("d1", 700, "延迟"), signed_query());
    let (push, path) = tokio::join!(post(&app, &query, body), async {
        // The service got the URL with the call, answered 202, and delivers a second later.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let received = backend.received();
        let call = received.iter().find(|r| r.target == "/deferred").unwrap();
        let url = call.header("x-wxrules-deliver").unwrap().to_owned();
        let path = url.strip_prefix("http://127.0.0.1:9").unwrap().to_owned();
        assert_eq!(deliver(&app, &path, r#"{"answer": "好了"}"#).await, 200);
        path
    });
    assert_eq!(
        content(&push.1),
        "送达：好了",
        "the push answered from the delivery"
    );
    assert_eq!(backend.count(), 1);
    // Once only; a URL wxrules did not sign; an account that is not there.
    assert_eq!(deliver(&app, &path, r#"{"answer": "again"}"#).await, 410);
    let mut forged = path.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(deliver(&app, &forged, r#"{"answer": "x"}"#).await, 403);
    let elsewhere = path.replacen("/default/", "/nobody/", 1);
    assert_eq!(deliver(&app, &elsewhere, r#"{"answer": "x"}"#).await, 404);
    assert_eq!(deliver(&app, &path, "not json").await, 400);
}

#[actix_web::test]
async fn with_the_customer_service_api_a_slow_answer_follows_the_holding_reply_once() {
    let backend = Backend::start();
    let fake = FakeWechat::start();
    let scratch = scratch("slow-service", &backend);
    let (state, _senders) = sending_state(&scratch, &fake);
    let app = app(state).await;
    let started = Instant::now();
    let apps = [&app];
    let bodies = [
        text("s1", 801, "问 1000"),
        text("s7", 807, "问 7000"),
        text("s12", 812, "问 12000"),
        text("s25", 825, "问 25000"),
    ];
    let (one, seven, twelve, late) = tokio::join!(
        wechat_tries(&apps, &bodies[0]),
        wechat_tries(&apps, &bodies[1]),
        wechat_tries(&apps, &bodies[2]),
        wechat_tries(&apps, &bodies[3]),
    );
    let (attempt, answer) = one.unwrap();
    assert_eq!((attempt, content(&answer).as_str()), (1, "答案：想好了"));
    // The others get the holding reply at `late.after` (3 s), on WeChat's first attempt.
    for (got, user) in [(seven, "s7"), (twelve, "s12"), (late, "s25")] {
        let (attempt, answer) = got.unwrap();
        assert_eq!(
            (attempt, content(&answer).as_str()),
            (1, "正在思考，回复 1 查看结果"),
            "{user}"
        );
    }
    // Then the answer through the customer-service API, once each.
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        started + Duration::from_secs(25),
    ))
    .await;
    let sent = delivered(&fake, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to = |user: &str| {
        fake.delivered()
            .iter()
            .filter(|m| m["touser"] == user)
            .count()
    };
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.iter().all(|s| s == "答案：想好了"), "{sent:?}");
    for user in ["s7", "s12", "s25"] {
        assert_eq!(to(user), 1, "{user} gets the answer once");
    }
    assert_eq!(to("s1"), 0, "the passive reply was the answer");
    for ms in ["1000", "7000", "12000", "25000"] {
        let calls = backend
            .received()
            .iter()
            .filter(|r| r.target == format!("/slow/{ms}"))
            .count();
        assert_eq!(calls, 1, "/slow/{ms}");
    }
}
