//! Customer-service messages end to end: a rule's `send:` through the real App, the
//! in-process outbox and the API client, to a fake of WeChat's API on 127.0.0.1
//! (`common::fake_wechat`). Tokens, token errors, final and retried errcodes, the API down
//! for a while, order per user, and WeChat's retries of a push.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_wechat::{FakeWechat, Misbehave, Scripted, APPID, SECRET};
use common::*;
use serde_json::Value;
use wxrules::accounts::Secrets;
use wxrules::act::outbox::{self, Outbox, Senders};
use wxrules::server::{AppState, Options};
use wxrules::store::dedup;
use wxrules::wechat_api::{Api, Credentials};

const RULES: &str = r#"rules:
  - name: stores
    when: { keyword: 门店 }
    reply: { text: "静安店" }
    send:
      - { text: "第一条 to {{FromUserName}}" }
      - { image: { media_id: MEDIA_1 } }
      - news: [ { title: 门店, description: 地址, url: "http://127.0.0.1/a", pic_url: "http://127.0.0.1/a.jpg" } ]
  - name: one
    when: { keyword: one }
    reply: { text: passive }
    send: [ { text: "one more" } ]
"#;

/// Retries a few milliseconds apart, so that the tests stay short.
fn quick() -> outbox::Config {
    outbox::Config {
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        give_up_after: Duration::from_secs(30),
        ..outbox::Config::default()
    }
}

/// A link to `redis` as the server makes one (250 ms a command), trying a Redis that is
/// down again after `retry`.
fn link_to(
    redis: &common::redis_server::RedisServer,
    retry: Duration,
) -> Arc<wxrules::store::Link> {
    Arc::new(wxrules::store::Link::new(
        ::redis::Client::open(redis.url()).unwrap(),
        "test".into(),
        Duration::from_millis(250),
        retry,
    ))
}

/// The server's state, its outbox sending to `base` with the fake's credentials.
fn state(scratch: &Scratch, base: &str, config: outbox::Config) -> (AppState, Senders) {
    let mut state = state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options::default(),
        Some(dedup::Config::default()),
    );
    let metrics = state.metrics.clone();
    let api = Api::new(base, Some(Credentials::new(APPID, SECRET)), metrics.clone()).unwrap();
    let (outbox, senders) = Outbox::start(&Arc::new(api), config, metrics);
    with_outbox(&mut state, outbox);
    (state, senders)
}

fn scratch(tag: &str) -> Scratch {
    let scratch = Scratch::new(tag);
    scratch.write("rules.yaml", RULES);
    scratch
}

/// A text push from `user`, with its own MsgId.
fn push(user: &str, content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName>\
         <FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{NOW}</CreateTime>\
         <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>\
         <MsgId>{msg_id}</MsgId></xml>"
    )
}

fn texts(delivered: &[Value]) -> Vec<String> {
    delivered
        .iter()
        .map(|m| match m["msgtype"].as_str().unwrap() {
            "text" => m["text"]["content"].as_str().unwrap().to_owned(),
            kind => kind.to_owned(),
        })
        .collect()
}

fn metric(state: &AppState, series: &str) -> f64 {
    sample(&state.metrics.render(), series).unwrap_or(0.0)
}

#[actix_web::test]
async fn a_rules_send_list_goes_out_after_the_passive_reply_in_order_with_one_token() {
    let fake = FakeWechat::start();
    let scratch = scratch("send-order");
    let (state, senders) = state(&scratch, &fake.base(), quick());
    let app = app(state.clone()).await;
    let (status, body) = post(&app, &signed_query(), push("oUserA", "门店", 1)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<Content><![CDATA[静安店]]></Content>"),
        "{body}"
    );
    // Many pushes, one token.
    for i in 0..20 {
        post(
            &app,
            &signed_query(),
            push(&format!("oUser{i}"), "one", 100 + i),
        )
        .await;
    }
    let delivered = fake.wait_delivered(23).await;
    assert_eq!(delivered.len(), 23);
    let a: Vec<&Value> = delivered
        .iter()
        .filter(|m| m["touser"] == "oUserA")
        .collect();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["text"]["content"], "第一条 to oUserA");
    assert_eq!(a[1]["image"]["media_id"], "MEDIA_1");
    assert_eq!(
        a[2]["news"]["articles"][0]["picurl"],
        "http://127.0.0.1/a.jpg"
    );
    // Drained first: a message is counted once its answer is read, after the fake has it.
    assert_eq!(senders.drain(Duration::from_secs(5)).await, 0);
    assert_eq!(fake.token_calls(), 1);
    assert_eq!(
        metric(&state, r#"wxrules_outbox_results_total{outcome="sent"}"#),
        23.0
    );
    assert_eq!(
        metric(
            &state,
            r#"wxrules_wechat_api_calls_total{api="stable_token",outcome="ok"}"#
        ),
        1.0
    );
}

#[actix_web::test]
async fn an_expired_token_is_refreshed_and_the_call_retried_once() {
    let fake = FakeWechat::start();
    let scratch = scratch("expired");
    let (state, senders) = state(&scratch, &fake.base(), quick());
    let app = app(state.clone()).await;
    post(&app, &signed_query(), push("oUserA", "one", 1)).await;
    assert_eq!(fake.wait_delivered(1).await.len(), 1);
    fake.expire_token();
    post(&app, &signed_query(), push("oUserA", "one", 2)).await;
    assert_eq!(fake.wait_delivered(2).await.len(), 2);
    assert_eq!(senders.drain(Duration::from_secs(5)).await, 0);
    // The second send was refused (42001), the token fetched again, the send retried.
    assert_eq!(fake.token_calls(), 2);
    assert_eq!(fake.send_calls(), 3);
    assert_eq!(
        metric(&state, r#"wxrules_outbox_results_total{outcome="sent"}"#),
        2.0
    );
}

#[actix_web::test]
async fn a_final_errcode_is_one_attempt_and_a_failure() {
    let fake = FakeWechat::start();
    let scratch = scratch("final");
    let (state, senders) = state(&scratch, &fake.base(), quick());
    let app = app(state.clone()).await;
    fake.script(&[Scripted::Errcode(45015)]);
    post(&app, &signed_query(), push("oSilentUser", "one", 1)).await;
    // A later message of the same user is sent after it: the failure did not block it.
    post(&app, &signed_query(), push("oSilentUser", "one", 2)).await;
    assert_eq!(fake.wait_delivered(1).await.len(), 1);
    assert_eq!(senders.drain(Duration::from_secs(5)).await, 0);
    assert_eq!(fake.send_calls(), 2);
    assert_eq!(
        metric(&state, r#"wxrules_outbox_results_total{outcome="failed"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &state,
            r#"wxrules_wechat_api_calls_total{api="custom_send",outcome="errcode"}"#
        ),
        1.0
    );
}

#[actix_web::test]
async fn server_errors_and_errcode_minus_one_are_retried_then_delivered_once() {
    let fake = FakeWechat::start();
    let scratch = scratch("retried");
    let (state, senders) = state(&scratch, &fake.base(), quick());
    let app = app(state.clone()).await;
    fake.script(&[
        Scripted::Status(500),
        Scripted::Errcode(-1),
        Scripted::Status(503),
    ]);
    post(&app, &signed_query(), push("oUserA", "one", 1)).await;
    let delivered = fake.wait_delivered(1).await;
    assert_eq!(texts(&delivered), ["one more"]);
    assert_eq!(senders.drain(Duration::from_secs(5)).await, 0);
    assert_eq!(fake.delivered().len(), 1);
    assert_eq!(fake.send_calls(), 4);
    assert_eq!(
        metric(&state, r#"wxrules_outbox_results_total{outcome="sent"}"#),
        1.0
    );
    assert_eq!(
        metric(&state, r#"wxrules_outbox_results_total{outcome="failed"}"#),
        0.0
    );
}

#[actix_web::test]
async fn messages_wait_while_the_api_is_down_and_go_when_it_returns() {
    // A port with nothing behind it yet: every call is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let scratch = scratch("down");
    let (state, _senders) = state(&scratch, &base, quick());
    let app = app(state.clone()).await;
    post(&app, &signed_query(), push("oUserA", "门店", 1)).await;
    post(&app, &signed_query(), push("oUserA", "one", 2)).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert!(
        metric(
            &state,
            r#"wxrules_wechat_api_calls_total{api="stable_token",outcome="network"}"#
        ) >= 2.0
    );
    let fake = FakeWechat::start_on(
        std::net::TcpListener::bind(base.trim_start_matches("http://")).unwrap(),
    );
    let delivered = fake.wait_delivered(4).await;
    assert_eq!(
        texts(&delivered),
        ["第一条 to oUserA", "image", "news", "one more"]
    );
}

#[actix_web::test]
async fn each_users_messages_keep_their_order_under_concurrency() {
    let fake = FakeWechat::start();
    let scratch = scratch("per-user");
    let (state, _senders) = state(&scratch, &fake.base(), quick());
    let app = app(state.clone()).await;
    // Some failures on the way, which delay the users they hit.
    fake.script(&[
        Scripted::Status(502),
        Scripted::Errcode(-1),
        Scripted::Status(500),
    ]);
    let mut id = 1000;
    for round in 0..3 {
        for user in 0..10 {
            let content = if round == 1 { "one" } else { "门店" };
            post(
                &app,
                &signed_query(),
                push(&format!("oUser{user}"), content, id),
            )
            .await;
            id += 1;
        }
    }
    let delivered = fake.wait_delivered(70).await;
    assert_eq!(delivered.len(), 70);
    for user in 0..10 {
        let mine: Vec<Value> = delivered
            .iter()
            .filter(|m| m["touser"] == format!("oUser{user}"))
            .cloned()
            .collect();
        assert_eq!(
            texts(&mine),
            [
                &format!("第一条 to oUser{user}"),
                "image",
                "news",
                "one more",
                &format!("第一条 to oUser{user}"),
                "image",
                "news",
            ],
            "oUser{user}"
        );
    }
}

#[actix_web::test]
async fn a_wechat_retry_of_a_push_sends_nothing_twice() {
    let fake = FakeWechat::start();
    let scratch = scratch("retry");
    let (state, senders) = state(&scratch, &fake.base(), quick());
    let app = app(state.clone()).await;
    let first = post(&app, &signed_query(), push("oUserA", "门店", 77)).await;
    let again = post(&app, &signed_query(), push("oUserA", "门店", 77)).await;
    assert_eq!(first, again);
    assert_eq!(senders.drain(Duration::from_secs(5)).await, 0);
    assert_eq!(fake.delivered().len(), 3);
}

#[actix_web::test]
async fn without_an_app_secret_the_passive_reply_still_goes_and_sends_are_counted() {
    let scratch = scratch("no-secret");
    let state = state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options::default(),
        None,
    );
    let app = app(state.clone()).await;
    let (status, body) = post(&app, &signed_query(), push("oUserA", "门店", 1)).await;
    assert_eq!(status, 200);
    assert!(body.contains("静安店"), "{body}");
    assert_eq!(
        metric(
            &state,
            r#"wxrules_outbox_results_total{outcome="unsendable"}"#
        ),
        3.0
    );
}

/// With `--store redis://…`, the instances of one account share the access token: the
/// first fetches it (under a short lock), the others read it from Redis. When WeChat
/// expires it, one instance fetches the next and the others find it there.
#[actix_web::test]
async fn instances_sharing_redis_fetch_one_token_in_all() {
    use common::redis_server::RedisServer;
    use wxrules::telemetry::metrics::Metrics;
    use wxrules::wechat_api::CustomMessage;
    use wxrules::wire::Reply;

    let redis = RedisServer::start();
    let fake = FakeWechat::start();
    let instance = || {
        let link = wxrules::store::Link::new(
            ::redis::Client::open(redis.url()).unwrap(),
            "test".into(),
            Duration::from_millis(250),
            Duration::from_secs(1),
        );
        Api::new(
            &fake.base(),
            Some(Credentials::new(APPID, SECRET)),
            Metrics::new(),
        )
        .unwrap()
        .share_tokens(Arc::new(link))
    };
    let (a, b, c) = (instance(), instance(), instance());
    let (ta, tb, tc) = tokio::join!(a.access_token(), b.access_token(), c.access_token());
    let token = ta.unwrap();
    assert_eq!(tb.unwrap(), token);
    assert_eq!(tc.unwrap(), token);
    assert_eq!(fake.token_calls(), 1);
    let message = |i: usize| {
        CustomMessage::new(
            "oUserA",
            Reply::Text {
                content: format!("m{i}"),
            },
        )
        .unwrap()
    };
    for i in 0..5 {
        a.send_custom(&message(i)).await.unwrap();
        b.send_custom(&message(i)).await.unwrap();
    }
    assert_eq!(fake.token_calls(), 1);
    assert_eq!(fake.delivered().len(), 10);

    fake.expire_token();
    a.send_custom(&message(10)).await.unwrap();
    b.send_custom(&message(11)).await.unwrap();
    c.send_custom(&message(12)).await.unwrap();
    // `a` met 42001 and fetched the next token; `b` and `c` met it too and read it from
    // Redis.
    assert_eq!(fake.token_calls(), 2);
    assert_eq!(fake.delivered().len(), 13);
    assert_eq!(
        redis
            .get(&format!("wxrules:token:{APPID}"))
            .as_deref()
            .map(str::len),
        Some(14)
    );
}

/// Everything sent, through every path that logs (a token fetch, a rejected token, a
/// retry, a final failure, a bad secret), at debug level: the AppSecret and the access
/// tokens appear nowhere in the log, nor in the metrics.
#[actix_web::test]
async fn the_app_secret_and_access_tokens_never_reach_the_log_or_the_metrics() {
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Logs::default();
    let _capture = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .finish(),
    );
    let fake = FakeWechat::start();
    let scratch = scratch("secrets");
    let (state, senders) = state(&scratch, &fake.base(), quick());
    let app = app(state.clone()).await;
    post(&app, &signed_query(), push("oUserA", "one", 1)).await;
    fake.wait_delivered(1).await;
    fake.expire_token();
    fake.script(&[Scripted::Status(500), Scripted::Errcode(45015)]);
    post(&app, &signed_query(), push("oUserA", "one", 2)).await;
    assert_eq!(senders.drain(Duration::from_secs(5)).await, 0);
    // A wrong secret: the token request fails with 40125.
    let wrong = Api::new(
        &fake.base(),
        Some(Credentials::new(APPID, "not-the-secret-xyz")),
        state.metrics.clone(),
    )
    .unwrap();
    let err = wrong.access_token().await.unwrap_err();
    assert_eq!(err.errcode(), Some(40125));

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for event in [
        "token_refreshed",
        "token_rejected",
        "message_retry",
        "message_failed",
        "token_failed",
    ] {
        assert!(text.contains(event), "no {event} in:\n{text}");
    }
    let metrics = state.metrics.render();
    for secret in [SECRET, "not-the-secret-xyz", "ACCESS_TOKEN_"] {
        assert!(!text.contains(secret), "`{secret}` in the log:\n{text}");
        assert!(!metrics.contains(secret), "`{secret}` in the metrics");
        assert!(!format!("{err:?} {err}").contains(secret));
    }
    // The user is masked where a failure is logged at warning level or above.
    let failed = text.lines().find(|l| l.contains("message_failed")).unwrap();
    assert!(
        failed.contains("user=…") && !failed.contains("oUserA"),
        "{failed}"
    );
}

/// A `wxrules serve` process with the API and Redis configured; its log is read until it
/// has started.
struct Instance {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Instance {
    fn start(scratch: &Scratch, redis: &str, api: &str) -> Instance {
        Instance::launch(scratch, redis, api).0
    }

    /// Starts one, and returns the lines it logged up to `server_started`; stops it.
    fn start_lines(scratch: &Scratch, redis: &str, api: &str) -> Vec<String> {
        Instance::launch(scratch, redis, api).1
    }

    fn launch(scratch: &Scratch, redis: &str, api: &str) -> (Instance, Vec<String>) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .arg("--rules")
            .arg(scratch.path("rules.yaml"))
            .arg("--templates")
            .arg(scratch.path("templates"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--max-age",
                "0",
                "--log-format",
                "json",
            ])
            .args(["--store", redis, "--wechat-api", api])
            .env("WXRULES_TOKEN", TOKEN)
            .env("WXRULES_APPID", APPID)
            .env("WXRULES_APPSECRET", SECRET)
            .env("WXRULES_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut before = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("server_started") {
                    let _ = tx.send((line, std::mem::take(&mut before)));
                } else {
                    before.push(line);
                }
            }
        });
        let (line, before) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let started: Value = serde_json::from_str(&line).unwrap();
        let addr = started["listen"].as_str().unwrap().parse().unwrap();
        (Instance { child, addr }, before)
    }

    /// Posts a signed push; its status.
    fn push(&self, body: &str) -> u16 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!(
            "POST /wechat?{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            signed_query(),
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn kill(&mut self) {
        // SIGKILL: no drain, no goodbye.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// With `--store redis://…` the outbox is a Redis Stream: messages queued by an instance
/// that is then killed (SIGKILL) are delivered by another, once each and in order.
#[test]
fn messages_queued_by_a_killed_instance_are_delivered_by_another() {
    let redis = common::redis_server::RedisServer::start();
    let fake = FakeWechat::start();
    // WeChat fails every send for now: the first instance can only keep retrying.
    fake.script(&[Scripted::Status(500); 100_000]);
    let scratch = scratch("killed");
    let mut first = Instance::start(&scratch, &redis.url(), &fake.base());
    assert_eq!(first.push(&push("oUserKilled", "门店", 9001)), 200);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while fake.send_calls() == 0 {
        assert!(
            std::time::Instant::now() < until,
            "the first instance never tried"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill();
    fake.clear_script();
    let _second = Instance::start(&scratch, &redis.url(), &fake.base());
    // The second takes the shard once the dead one's lease lapses.
    let until = std::time::Instant::now() + wxrules::act::outbox::LEASE + Duration::from_secs(20);
    while fake.delivered_count() < 3 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let delivered = fake.delivered();
    assert_eq!(
        texts(&delivered),
        ["第一条 to oUserKilled", "image", "news"],
        "{delivered:?}"
    );
}

/// Waits (up to `within`) until the fake has more than `before` messages; how long that
/// took, polled every millisecond.
fn delivered_after(fake: &FakeWechat, before: usize, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    while fake.delivered_count() <= before {
        assert!(
            started.elapsed() < within,
            "nothing delivered in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

/// With `--store redis://…` the outbox delivers at once: a lone instance takes its free
/// shards at start (no lease to wait for), and its senders read their streams with a
/// blocking read, so a `send:` message reaches the API right after its push rather than
/// at the next poll. Prints the figures (`benches/outbox-latency.sh` runs this test for
/// BENCHMARKS.md); asserts only generous bounds, not the performance.
#[test]
fn the_redis_outbox_delivers_at_once_after_start_and_after_each_push() {
    let redis = common::redis_server::RedisServer::start();
    let fake = FakeWechat::start();
    let scratch = scratch("latency");
    let launched = std::time::Instant::now();
    let instance = Instance::start(&scratch, &redis.url(), &fake.base());
    let up = launched.elapsed();
    assert_eq!(instance.push(&push("oUserFirst", "one", 1)), 200);
    let first = delivered_after(&fake, 0, Duration::from_secs(30));
    let after_launch = launched.elapsed();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let before = fake.delivered_count();
        let pushed = std::time::Instant::now();
        assert_eq!(
            instance.push(&push(&format!("oUser{i}"), "one", 100 + i)),
            200
        );
        delivered_after(&fake, before, Duration::from_secs(30));
        latencies.push(pushed.elapsed());
    }
    // After an idle spell longer than one blocking read (2 s): still at once.
    std::thread::sleep(Duration::from_millis(2_500));
    let before = fake.delivered_count();
    let pushed = std::time::Instant::now();
    assert_eq!(instance.push(&push("oUserIdle", "one", 99)), 200);
    delivered_after(&fake, before, Duration::from_secs(30));
    let after_idle = pushed.elapsed();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "outbox_latency: started in {} ms; first push delivered {} ms after it, {} ms after launch; \
         20 pushes: median {:.1} ms, min {:.1} ms, max {:.1} ms; after 2.5 s idle {:.1} ms",
        up.as_millis(),
        first.as_millis(),
        after_launch.as_millis(),
        median.as_secs_f64() * 1e3,
        latencies[0].as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        after_idle.as_secs_f64() * 1e3,
    );
    // A lease period would be waited out by an instance that did not take its free shards.
    assert!(first < wxrules::act::outbox::LEASE, "{first:?}");
    assert!(median < Duration::from_secs(1), "{latencies:?}");
    assert!(after_idle < Duration::from_secs(1), "{after_idle:?}");
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 22, "{delivered:?}");
    assert!(texts(&delivered).iter().all(|t| t == "one more"));
}

/// `wxrules import --from-wechat` fetches the console's auto-replies with the API's token
/// (from the fake on 127.0.0.1, never WeChat) and imports them as from a file.
#[test]
fn import_from_wechat_fetches_the_export_with_a_token() {
    let fake = FakeWechat::start();
    let scratch = Scratch::new("import-from-wechat");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args([
            "import",
            "--from-wechat",
            "--wechat-api",
            &fake.base(),
            "--rules-out",
        ])
        .arg(scratch.path("rules.yaml"))
        .env("WXRULES_APPID", APPID)
        .env("WXRULES_APPSECRET", SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        "imported 7 rules (0 switched off in the console, commented out)\n"
    );
    assert!(!stderr.contains(SECRET));
    let rules = std::fs::read_to_string(scratch.path("rules.yaml")).unwrap();
    assert!(rules.contains("- name: \"autoreply-news\""), "{rules}");
    assert_eq!(fake.token_calls(), 1);
    // Without credentials it says what is missing, and fetches nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(["import", "--from-wechat", "--wechat-api", &fake.base()])
        .env_remove("WXRULES_APPID")
        .env_remove("WXRULES_APPSECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --from-wechat needs WXRULES_APPID and WXRULES_APPSECRET\n"
    );
}

/// A text message to `user`.
fn text(user: &str, content: &str) -> wxrules::wechat_api::CustomMessage {
    wxrules::wechat_api::CustomMessage::new(
        user,
        wxrules::wire::Reply::Text {
            content: content.to_owned(),
        },
    )
    .unwrap()
}

/// An API client of the fake's account, counting into `metrics`.
fn api_of(fake: &FakeWechat, metrics: &wxrules::telemetry::metrics::Metrics) -> Arc<Api> {
    Arc::new(
        Api::new(
            &fake.base(),
            Some(Credentials::new(APPID, SECRET)),
            metrics.clone(),
        )
        .unwrap(),
    )
}

/// A redirect is not followed: a 307 from `stable_token` would post the AppSecret again,
/// to whatever `Location` names (here a second fake, which must never see it). Before the
/// fix the client followed it, and the other origin issued a token.
#[actix_web::test]
async fn a_redirect_is_not_followed_so_the_app_secret_stays_home() {
    use wxrules::wechat_api::{ApiError, Disposition};
    let elsewhere = FakeWechat::start();
    let fake = FakeWechat::start();
    fake.misbehave(Misbehave::RedirectTo(format!(
        "{}/cgi-bin/stable_token",
        elsewhere.base()
    )));
    let metrics = wxrules::telemetry::metrics::Metrics::new();
    let err = api_of(&fake, &metrics).access_token().await.unwrap_err();
    assert_eq!(err, ApiError::Redirected(307));
    assert_eq!(err.disposition(), Disposition::Final);
    assert!(!err.to_string().contains(SECRET));
    assert_eq!(fake.token_calls(), 1);
    assert_eq!(elsewhere.token_calls(), 0);
}

/// An answer is read up to `MAX_ANSWER` (1 MiB) and no further: 64 MiB streamed without a
/// Content-Length are cut off early. Before the fix the client read all of it (a 750 MB
/// answer took 1.15 GB of RSS).
#[actix_web::test]
async fn an_endless_answer_is_cut_off_at_the_cap() {
    use wxrules::wechat_api::{ApiError, MAX_ANSWER};
    let fake = FakeWechat::start();
    fake.misbehave(Misbehave::Endless(64 * 1024 * 1024));
    let metrics = wxrules::telemetry::metrics::Metrics::new();
    let err = api_of(&fake, &metrics).access_token().await.unwrap_err();
    assert_eq!(err, ApiError::TooLarge(MAX_ANSWER));
    // What the fake handed over: the cap, and what the sockets' buffers held.
    assert!(fake.streamed() < 16 * MAX_ANSWER, "{}", fake.streamed());
    assert!(metrics
        .render()
        .contains(r#"wxrules_wechat_api_calls_total{api="stable_token",outcome="too_large"} 1"#));
}

/// Retries a second apart: a user stuck behind them would wait long enough to show.
fn slow_retries() -> outbox::Config {
    outbox::Config {
        backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(2),
        give_up_after: Duration::from_secs(60),
        ..outbox::Config::default()
    }
}

/// Two messages to `oStuck`, whose every send fails with -1 (retried), then two to each
/// of 40 other users: theirs all go out within a couple of seconds, in order.
async fn others_go_out_while_one_is_retried(
    fake: &FakeWechat,
    outbox: &Outbox,
) -> std::time::Duration {
    fake.fail_user("oStuck", -1);
    let rule: Arc<str> = "r".into();
    outbox
        .enqueue(&rule, vec![text("oStuck", "s1"), text("oStuck", "s2")])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Its first try has failed: the stuck user's shard has met the error.
    while fake.send_calls() == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never tried");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    for i in 0..40 {
        let user = format!("oUser{i}");
        outbox
            .enqueue(&rule, vec![text(&user, "a"), text(&user, "b")])
            .await
            .unwrap();
    }
    let delivered = fake.wait_delivered(80).await;
    let took = started.elapsed();
    assert_eq!(delivered.len(), 80, "after {took:?}");
    for i in 0..40 {
        let mine: Vec<Value> = delivered
            .iter()
            .filter(|m| m["touser"] == format!("oUser{i}"))
            .cloned()
            .collect();
        assert_eq!(texts(&mine), ["a", "b"], "oUser{i}");
    }
    assert!(took < Duration::from_secs(3), "{took:?}");
    took
}

/// Head-of-line blocking, in process: a user whose messages keep failing with a retryable
/// error waits in its own lane while its shard serves the others, and a stop leaves only
/// its messages. Before the fix it held its shard's sender for up to 15 minutes (3 of 40
/// other users undelivered after 25 s; 4 lost at the stop).
#[actix_web::test]
async fn a_user_being_retried_does_not_hold_up_the_others() {
    let fake = FakeWechat::start();
    let metrics = wxrules::telemetry::metrics::Metrics::new();
    let (outbox, senders) =
        Outbox::start(&api_of(&fake, &metrics), slow_retries(), metrics.clone());
    others_go_out_while_one_is_retried(&fake, &outbox).await;
    outbox.close();
    assert_eq!(senders.drain(Duration::from_secs(1)).await, 2);
    assert!(fake.delivered().iter().all(|m| m["touser"] != "oStuck"));
}

/// The same through the Redis streams: the stuck user's entry waits (pending) while the
/// entries behind it in the stream are read and sent; only its entry is left.
#[actix_web::test]
async fn a_user_being_retried_does_not_hold_up_the_others_in_redis() {
    let redis = common::redis_server::RedisServer::start();
    let fake = FakeWechat::start();
    let metrics = wxrules::telemetry::metrics::Metrics::new();
    let link = link_to(&redis, Duration::from_secs(1));
    let (outbox, senders) = Outbox::start_shared(
        &api_of(&fake, &metrics),
        slow_retries(),
        &metrics,
        &link,
        APPID,
    );
    others_go_out_while_one_is_retried(&fake, &outbox).await;
    outbox.close();
    senders.drain(Duration::from_secs(1)).await;
    let left: usize = (0..8)
        .map(|i| redis.xlen(&format!("wxrules:outbox:{APPID}:{i}")))
        .sum();
    assert_eq!(left, 1, "the stuck user's one entry");
}

/// Each shard's stream is capped (`capacity / shards` entries): past it a push's messages
/// are refused, counted and said, never trimmed from what waits. Before the fix the
/// stream grew without bound (94k entries in 8 s while the API hung).
#[actix_web::test]
async fn a_full_stream_refuses_and_counts_and_trims_nothing() {
    use wxrules::act::outbox::Refused;
    let redis = common::redis_server::RedisServer::start();
    let fake = FakeWechat::start();
    fake.fail_user("oStuck", -1);
    let metrics = wxrules::telemetry::metrics::Metrics::new();
    let link = link_to(&redis, Duration::from_secs(1));
    let config = outbox::Config {
        capacity: 16,
        ..slow_retries()
    };
    let (outbox, senders) =
        Outbox::start_shared(&api_of(&fake, &metrics), config, &metrics, &link, APPID);
    let rule: Arc<str> = "r".into();
    for i in 0..2 {
        let m = text("oStuck", &format!("m{i}"));
        outbox.enqueue(&rule, vec![m]).await.unwrap();
    }
    let refused = outbox.enqueue(&rule, vec![text("oStuck", "m2")]).await;
    assert_eq!(refused, Err(Refused::StreamFull(2)));
    assert!(refused.unwrap_err().to_string().contains("full"));
    assert_eq!(
        sample(
            &metrics.render(),
            r#"wxrules_outbox_results_total{outcome="refused"}"#
        ),
        Some(1.0)
    );
    let lens: usize = (0..8)
        .map(|i| redis.xlen(&format!("wxrules:outbox:{APPID}:{i}")))
        .sum();
    assert_eq!(lens, 2);
    outbox.close();
    senders.drain(Duration::from_millis(200)).await;
}

/// The outbox's streams live in Redis' memory: with AOF (`appendonly yes`) a Redis
/// restart keeps them, and what was queued goes out once the API takes it. (Without AOF
/// the same restart lost 50 of 50; `serve` warns about such a Redis at start.)
#[actix_web::test]
async fn with_aof_a_redis_restart_keeps_the_queued_messages() {
    let mut redis = common::redis_server::RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let fake = FakeWechat::start();
    let metrics = wxrules::telemetry::metrics::Metrics::new();
    let link = link_to(&redis, Duration::from_millis(100));
    // WeChat fails every send for now.
    fake.script(&[Scripted::Status(500); 100_000]);
    let (outbox, senders) =
        Outbox::start_shared(&api_of(&fake, &metrics), quick(), &metrics, &link, APPID);
    let rule: Arc<str> = "r".into();
    for i in 0..50 {
        let user = format!("oUser{i}");
        outbox.enqueue(&rule, vec![text(&user, "m")]).await.unwrap();
    }
    redis.kill();
    redis.spawn();
    fake.clear_script();
    let delivered = fake.wait_delivered(50).await;
    assert_eq!(delivered.len(), 50);
    outbox.close();
    senders.drain(Duration::from_secs(1)).await;
}

/// A read whose connection fails after Redis moved its entries to this instance's pending
/// list, but before the answer came back, leaves them pending here and unknown to the
/// process. The senders claim their own pending entries again once the reader has a new
/// connection. Before the fix such an entry waited until another instance owned the shard:
/// with one instance, forever (the CI run that found it lost 1 of 50 at a Redis restart).
#[actix_web::test]
async fn entries_a_lost_read_left_pending_are_claimed_once_the_reader_reconnects() {
    let redis = common::redis_server::RedisServer::start();
    let fake = FakeWechat::start();
    let metrics = wxrules::telemetry::metrics::Metrics::new();
    let link = link_to(&redis, Duration::from_millis(100));
    let (outbox, senders) =
        Outbox::start_shared(&api_of(&fake, &metrics), quick(), &metrics, &link, APPID);
    let rule: Arc<str> = "r".into();
    outbox
        .enqueue(&rule, vec![text("oFirst", "m")])
        .await
        .unwrap();
    assert_eq!(fake.wait_delivered(1).await.len(), 1);
    let mut conn = ::redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = (0..8)
        .map(|i| format!("wxrules:outbox:{APPID}:{i}"))
        .collect();
    // The instance's name in the group, as its reads and claims made it.
    let consumer = keys
        .iter()
        .flat_map(|key| {
            ::redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(key)
                .arg("senders")
                .query::<Vec<std::collections::HashMap<String, ::redis::Value>>>(&mut conn)
                .unwrap_or_default()
        })
        .find_map(|c| match c.get("name") {
            Some(::redis::Value::BulkString(name)) => {
                Some(String::from_utf8_lossy(name).into_owned())
            }
            _ => None,
        })
        .expect("a consumer");
    // The reader's connection goes (blocked in XREADGROUP); it waits a second to connect
    // again. Meanwhile an entry is added and read under the instance's name, as Redis
    // would for a read whose answer is lost.
    let list: String = ::redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let reader = list
        .lines()
        .find(|l| l.contains("cmd=xreadgroup"))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("the reader's blocked read")
        .to_owned();
    let _: i64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&reader)
        .query(&mut conn)
        .unwrap();
    outbox
        .enqueue(&rule, vec![text("oLost", "m")])
        .await
        .unwrap();
    let mut read = ::redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg("senders")
        .arg(&consumer)
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&keys);
    for _ in &keys {
        read.arg(">");
    }
    let taken: ::redis::streams::StreamReadReply = read.query(&mut conn).unwrap();
    let taken: usize = taken.keys.iter().map(|k| k.ids.len()).sum();
    assert_eq!(taken, 1, "the entry was read before the reader came back");
    let delivered = fake.wait_delivered(2).await;
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(delivered[1]["touser"], "oLost");
    outbox.close();
    senders.drain(Duration::from_secs(1)).await;
    let left: usize = keys.iter().map(|key| redis.xlen(key)).sum();
    assert_eq!(left, 0, "both entries acknowledged and deleted");
}

/// At start, `serve` asks whether the Redis of its outbox persists (AOF), and warns when
/// it does not, or when it cannot tell (`CONFIG` renamed away, as managed Redis do).
#[test]
fn serve_warns_at_start_when_redis_does_not_keep_the_outbox() {
    let fake = FakeWechat::start();
    let scratch = scratch("durable");
    let plain = common::redis_server::RedisServer::start();
    let lines = Instance::start_lines(&scratch, &plain.url(), &fake.base());
    let warned = lines
        .iter()
        .find(|l| l.contains("store_redis_not_durable"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(warned.contains("appendonly"), "{warned}");
    let aof = common::redis_server::RedisServer::start_with(&["--appendonly", "yes"]);
    let lines = Instance::start_lines(&scratch, &aof.url(), &fake.base());
    assert!(
        lines.iter().any(|l| l.contains("store_redis_durable")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("not_durable")),
        "{lines:#?}"
    );
    let managed = common::redis_server::RedisServer::start_with(&[
        "--rename-command",
        "CONFIG",
        "hidden-config-8f2a",
    ]);
    let lines = Instance::start_lines(&scratch, &managed.url(), &fake.base());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("store_redis_durability_unknown") && l.contains("CONFIG")),
        "{lines:#?}"
    );
    // A refused CONFIG is an answer, not an outage.
    assert!(
        !lines.iter().any(|l| l.contains("store_redis_down")),
        "{lines:#?}"
    );
}
