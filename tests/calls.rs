//! Rules that ask the account's own services (`call`, `on_error`, `late`), through the real
//! App, against a real HTTP service on 127.0.0.1 (`common::backend`) and, for late replies,
//! the fake WeChat API on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::backend::{closed_port, Backend};
use common::fake_wechat::FakeWechat;
use common::*;
use wxrules::accounts::Secrets;
use wxrules::act::outbox::Senders;
use wxrules::server::{AppState, Options};
use wxrules::store::dedup;

/// The rules of these tests, the service at `base` (`{BASE}`) and a closed port (`{CLOSED}`).
const RULES: &str = r#"rules:
  - name: order
    when: { keyword: { regex: '^订单\s*(?P<order>\d{4,20})$' } }
    call: { url: "{BASE}/orders/{{captures.order}}" }
    reply: { text: "订单 {{captures.order}}：{{call.status}}" }
    on_error: { text: "查询暂时不可用" }
  - name: lookup
    when: { keyword: { regex: '^查\s*(?P<q>.+)$' } }
    call: { url: "{BASE}/orders/{{captures.q}}", method: GET, headers: { Authorization: "Bearer ${WXRULES_TEST_CALL_TOKEN}", X-Account: gh_test } }
    reply: { text: "{{call.order}}" }
  - name: failing
    when: { keyword: { regex: '^fail (?P<kind>[a-z-]+) (?P<arg>\d+)$' } }
    call: { url: "{BASE}/{{captures.kind}}/{{captures.arg}}", timeout: 300ms }
    reply: { text: "never {{call.status}}" }
    on_error: { text: "on_error for {{captures.kind}} {{captures.arg}}" }
  - name: closed
    when: { keyword: closed }
    call: { url: "http://{CLOSED}/x" }
    reply: { text: "never" }
    on_error: { text: "on_error: closed" }
  - name: silent-failure
    when: { keyword: silent }
    call: { url: "{BASE}/status/503" }
    reply: { text: "never" }
  - name: decides
    when: { keyword: decide }
    call: { url: "{BASE}/decide" }
    reply: { text: "the rule's own reply" }
  - name: ignores
    when: { keyword: ignore }
    call: { url: "{BASE}/ignore" }
    reply: { text: "the rule's own reply" }
  - name: slowish
    when: { keyword: slowish }
    call: { url: "{BASE}/slow/400", concurrency: 1 }
    reply: { text: "{{call.answer}}" }
    on_error: { text: "busy" }
  - name: agent
    when: { keyword: { regex: '^问(?P<ms>\d+)$' } }
    call: { url: "{BASE}/slow/{{captures.ms}}", timeout: 5s }
    late:
      after: 1s
      reply: { text: "正在思考，请稍候…" }
    reply: { text: "答：{{call.answer}}" }
    send: [ { text: "还有问题请再问" } ]
  - name: agent-fails-late
    when: { keyword: { prefix: 难 } }
    call: { url: "{BASE}/slow/3000", timeout: 2s }
    late: { after: 500ms }
    reply: { text: "never" }
    on_error: { text: "抱歉，没想出来" }
"#;

const USER: &str = "oUserCall";

fn scratch(tag: &str, backend: &Backend) -> Scratch {
    std::env::set_var("WXRULES_TEST_CALL_TOKEN", "t0ken-for-tests");
    let scratch = Scratch::new(tag);
    let rules = RULES
        .replace("{BASE}", &backend.base())
        .replace("{CLOSED}", &closed_port().to_string());
    scratch.write("rules.yaml", &rules);
    scratch
}

/// The server's state with the in-process dedup store; without an outbox unless `fake`.
fn state(scratch: &Scratch, fake: Option<&FakeWechat>) -> (AppState, Option<Senders>) {
    let mut state = state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options::default(),
        Some(dedup::Config::default()),
    );
    let senders = fake.map(|fake| sending_through(&mut state, fake));
    (state, senders)
}

fn push(content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName>\
         <FromUserName><![CDATA[{USER}]]></FromUserName><CreateTime>{NOW}</CreateTime>\
         <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>\
         <MsgId>{msg_id}</MsgId></xml>"
    )
}

fn content(body: &str) -> String {
    let start = body.find("<Content><![CDATA[").map(|i| i + 18);
    let end = body.rfind("]]></Content>");
    match (start, end) {
        (Some(s), Some(e)) => body[s..e].to_owned(),
        _ => body.to_owned(),
    }
}

fn metric(state: &AppState, series: &str) -> f64 {
    sample(&state.metrics.render(), series).unwrap_or(0.0)
}

#[actix_web::test]
async fn a_fast_answer_fills_the_template_and_the_post_carries_the_message() {
    let backend = Backend::start();
    let scratch = scratch("call-fast", &backend);
    let (state, _) = state(&scratch, None);
    let app = app(state.clone()).await;
    let (status, body) = post(&app, &signed_query(), push("订单 20261130", 1)).await;
    assert_eq!(status, 200);
    assert_eq!(content(&body), "订单 20261130：已发货");
    let received = backend.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/orders/20261130");
    assert_eq!(request.header("content-type"), Some("application/json"));
    // The body: every message field under its WeChat name, the captures and the rule.
    let sent = request.json();
    assert_eq!(sent["FromUserName"], USER);
    assert_eq!(sent["ToUserName"], "gh_account");
    assert_eq!(sent["MsgType"], "text");
    assert_eq!(sent["Content"], "订单 20261130");
    assert_eq!(sent["MsgId"], "1");
    assert_eq!(sent["CreateTime"], NOW.to_string());
    assert_eq!(sent["captures"]["order"], "20261130");
    assert_eq!(sent["rule"], "order");
    assert!(sent.get("call").is_none());
    assert_eq!(
        metric(&state, r#"wxrules_calls_total{outcome="ok",rule="order"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            r#"wxrules_call_duration_seconds_count{rule="order"}"#
        ),
        1.0
    );
}

#[actix_web::test]
async fn values_in_the_url_are_percent_encoded_and_get_sends_headers_without_a_body() {
    let backend = Backend::start();
    let scratch = scratch("call-encode", &backend);
    let (state, _) = state(&scratch, None);
    let app = app(state).await;
    let (status, body) = post(&app, &signed_query(), push("查 a/b?c=1#d%2F 价", 2)).await;
    assert_eq!(status, 200);
    let received = backend.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    // `/`, `?`, `#` and `%` cannot add a segment, a query or a fragment.
    assert_eq!(request.target, "/orders/a%2Fb%3Fc%3D1%23d%252F%20%E4%BB%B7");
    // The service decoded it back to the capture, whole.
    assert_eq!(content(&body), "a/b?c=1#d%2F 价");
    assert_eq!(request.method, "GET");
    assert!(request.body.is_empty());
    assert_eq!(
        request.header("authorization"),
        Some("Bearer t0ken-for-tests")
    );
    assert_eq!(request.header("x-account"), Some("gh_test"));

    // A value that is only dots would move the call up a path segment: refused, no call.
    for (i, dots) in ["..", "."].iter().enumerate() {
        let (status, body) = post(
            &app,
            &signed_query(),
            push(&format!("查 {dots}"), 3 + i as u64),
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "success"), "{dots}");
    }
    assert_eq!(backend.count(), 1);
}

#[actix_web::test]
async fn every_kind_of_failure_answers_on_error_and_is_counted_by_kind() {
    let backend = Backend::start();
    let scratch = scratch("call-fail", &backend);
    let (state, _) = state(&scratch, None);
    let app = app(state.clone()).await;
    let cases = [
        ("fail status 500", "status"),
        ("fail status 404", "status"),
        ("fail not-json 0", "invalid"),
        ("fail array 0", "invalid"),
        ("fail too-large 0", "too_large"),
        ("fail too-large-chunked 0", "too_large"),
        ("fail slow 2000", "timeout"),
    ];
    for (i, (text, outcome)) in cases.iter().enumerate() {
        let (status, body) = post(&app, &signed_query(), push(text, 10 + i as u64)).await;
        assert_eq!(status, 200, "{text}");
        let what = text.strip_prefix("fail ").unwrap();
        assert_eq!(content(&body), format!("on_error for {what}"), "{text}");
        assert!(
            metric(
                &state,
                &format!(r#"wxrules_calls_total{{outcome="{outcome}",rule="failing"}}"#)
            ) >= 1.0,
            "{text}"
        );
    }
    assert_eq!(
        metric(
            &state,
            r#"wxrules_calls_total{outcome="status",rule="failing"}"#
        ),
        2.0
    );
    let (_, body) = post(&app, &signed_query(), push("closed", 20)).await;
    assert_eq!(content(&body), "on_error: closed");
    assert_eq!(
        metric(
            &state,
            r#"wxrules_calls_total{outcome="connect",rule="closed"}"#
        ),
        1.0
    );
    // Without `on_error`, a failure answers `success`.
    let (status, body) = post(&app, &signed_query(), push("silent", 21)).await;
    assert_eq!((status, body.as_str()), (200, "success"));
    // The request is counted as answered by its rule.
    assert_eq!(
        metric(&state, r#"wxrules_rule_hits_total{rule="silent-failure"}"#),
        1.0
    );
}

#[actix_web::test]
async fn a_service_can_decide_the_reply_and_its_text_is_kept_as_sent() {
    let backend = Backend::start();
    let scratch = scratch("call-decide", &backend);
    let (state, _) = state(&scratch, None);
    let app = app(state).await;
    let (_, body) = post(&app, &signed_query(), push("decide", 30)).await;
    // Not rendered as a template, and CDATA-safe.
    assert!(
        body.contains("<Content><![CDATA[a ]]]]><![CDATA[> b {{FromUserName}}]]></Content>"),
        "{body}"
    );
    let (status, body) = post(&app, &signed_query(), push("ignore", 31)).await;
    assert_eq!((status, body.as_str()), (200, "success"));
}

#[actix_web::test]
async fn a_late_call_gets_the_holding_reply_in_time_and_its_reply_goes_out_later() {
    let backend = Backend::start();
    let fake = FakeWechat::start();
    let scratch = scratch("call-late", &backend);
    let (state, senders) = state(&scratch, Some(&fake));
    let app = app(state.clone()).await;

    // The service takes 2.5 s; `late.after` is 1 s.
    let started = Instant::now();
    let (status, body) = post(&app, &signed_query(), push("问2500", 40)).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(content(&body), "正在思考，请稍候…");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let delivered = fake.wait_delivered(2).await;
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(delivered[0]["touser"], USER);
    assert_eq!(delivered[0]["text"]["content"], "答：想好了");
    assert_eq!(delivered[1]["text"]["content"], "还有问题请再问");
    assert_eq!(
        metric(
            &state,
            r#"wxrules_calls_total{outcome="late",rule="agent"}"#
        ),
        1.0
    );

    // A call that answers before `after` is answered passively, and nothing is sent.
    let (_, body) = post(&app, &signed_query(), push("问100", 41)).await;
    assert_eq!(content(&body), "答：想好了");
    assert_eq!(
        metric(&state, r#"wxrules_calls_total{outcome="ok",rule="agent"}"#),
        1.0
    );

    // A late failure sends `on_error` the same way; without a holding reply, `success`.
    let started = Instant::now();
    let (status, body) = post(&app, &signed_query(), push("难题", 42)).await;
    assert_eq!((status, body.as_str()), (200, "success"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let delivered = fake.wait_delivered(4).await;
    // The passive `send:` of the fast answer, then the late failure's `on_error`.
    assert_eq!(delivered.len(), 4, "{delivered:?}");
    assert_eq!(delivered[2]["text"]["content"], "还有问题请再问");
    assert_eq!(delivered[3]["text"]["content"], "抱歉，没想出来");
    assert_eq!(
        metric(
            &state,
            r#"wxrules_calls_total{outcome="timeout",rule="agent-fails-late"}"#
        ),
        1.0
    );
    if let Some(senders) = senders {
        assert_eq!(senders.drain(Duration::from_secs(5)).await, 0);
    }
}

#[actix_web::test]
async fn wechats_retries_of_one_push_call_the_service_once() {
    let backend = Backend::start();
    let fake = FakeWechat::start();
    let scratch = scratch("call-retries", &backend);
    let (state, _senders) = state(&scratch, Some(&fake));
    let app = app(state).await;
    // The first attempt and two retries while the service is still thinking (1.5 s, past
    // `after`), then a third retry after the answer.
    let query = signed_query();
    let body = push("问1500", 50);
    let (first, second, third) = tokio::join!(
        post(&app, &query, body.clone()),
        async {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            post(&app, &query, body.clone()).await
        },
        async {
            actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
            post(&app, &query, body.clone()).await
        },
    );
    let fourth = post(&app, &query, body.clone()).await;
    for answer in [&first, &second, &third, &fourth] {
        assert_eq!(answer.0, 200);
        assert_eq!(content(&answer.1), "正在思考，请稍候…");
    }
    // One late reply for all four.
    let delivered = fake.wait_delivered(2).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.count(), 1, "{:?}", backend.received());
    assert_eq!(fake.delivered_count(), 2, "{delivered:?}");

    // The same without `late`: retries wait for the first attempt's answer. Another push,
    // another signed query (a signed query carries one body).
    let query = signed_query();
    let body = push("订单 1234", 51);
    let (a, b, c) = tokio::join!(
        post(&app, &query, body.clone()),
        post(&app, &query, body.clone()),
        post(&app, &query, body.clone())
    );
    for answer in [&a, &b, &c] {
        assert_eq!(content(&answer.1), "订单 1234：已发货");
    }
    assert_eq!(backend.count(), 2);
}

#[actix_web::test]
async fn past_its_concurrency_a_rule_answers_on_error_at_once_and_counts_busy() {
    let backend = Backend::start();
    let scratch = scratch("call-busy", &backend);
    let (state, _) = state(&scratch, None);
    let app = app(state.clone()).await;
    // Two pushes, each with its own signed query (a signed query carries one body).
    let (one, two) = (signed_query(), signed_query());
    let (a, b) = tokio::join!(post(&app, &one, push("slowish", 60)), async {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        post(&app, &two, push("slowish", 61)).await
    });
    assert_eq!(content(&a.1), "想好了");
    assert_eq!(content(&b.1), "busy");
    assert_eq!(
        metric(
            &state,
            r#"wxrules_calls_total{outcome="busy",rule="slowish"}"#
        ),
        1.0
    );
    assert_eq!(backend.count(), 1);
}

/// With the holding reply at or past the 3 s deadline (`late.after` up to 4.5 s), its copy
/// for retries still reaches Redis: a retry on another instance gets it, and the service
/// is called once.
#[actix_web::test]
async fn a_late_holding_reply_past_the_deadline_is_stored_for_retries_on_other_instances() {
    let redis = common::redis_server::RedisServer::start();
    let backend = Backend::start();
    let scratch = Scratch::new("call-late-redis");
    scratch.write(
        "rules.yaml",
        &format!(
            "rules:\n  - name: agent\n    when: {{ keyword: {{ regex: '^问(?P<ms>\\d+)$' }} }}\n    call: {{ url: \"{}/slow/{{{{captures.ms}}}}\", timeout: 10s }}\n    late: {{ after: 3200ms, via: customer_service, reply: {{ text: 稍候 }} }}\n    reply: {{ text: \"{{{{call.answer}}}}\" }}\n",
            backend.base()
        ),
    );
    let instance = || {
        state_with_dedup(
            scratch.sources(),
            Secrets::new(TOKEN, None).unwrap(),
            Options::default(),
            Some(dedup::Config {
                store: redis.url().parse().unwrap(),
                ..dedup::Config::default()
            }),
        )
    };
    let (a, b) = (instance(), instance());
    a.dedup.connect().await;
    b.dedup.connect().await;
    let (a, b) = (app(a).await, app(b).await);
    let body = push("问5000", 70);
    let (status, first) = post(&a, &signed_query(), body.clone()).await;
    assert_eq!((status, content(&first).as_str()), (200, "稍候"));
    // WeChat's retry, on the other instance.
    let (status, retry) = post(&b, &signed_query(), body).await;
    assert_eq!(status, 200);
    assert_eq!(retry, first);
    assert_eq!(backend.count(), 1);
}
