//! WeChat retries through the real App: a retry gets the first answer's bytes and the
//! rules run once, in process (`--dedup memory`) and across instances sharing a real
//! `redis-server` that these tests start on a free loopback port; Redis dying mid-run and
//! coming back; the deadline. `redis-server` must be installed (`.ci/run` installs it).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::redis_server::{touching, Monitor, RedisServer};
use common::*;
use wxrules::accounts::Secrets;
use wxrules::server::{AppState, Options};
use wxrules::store::dedup::{self, Claim, Key};
use wxrules::wire::Message;

const ACCOUNT: &str = "gh_dedup_test";
const USER: &str = "oDedupUser";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

/// A rule whose every run picks one of 32 replies: two runs of the rules would (almost
/// always) answer differently, so identical answers mean one run.
fn lucky_rules() -> Scratch {
    let replies: Vec<String> = (0..32)
        .map(|i| format!("{{ text: \"lucky {i}\" }}"))
        .collect();
    let scratch = Scratch::new("dedup");
    scratch.write(
        "rules.yaml",
        &format!(
            "rules:\n  - name: lucky\n    when: {{ keyword: lucky }}\n    reply: {{ one_of: [ {} ] }}\n  - name: clicked\n    when: {{ event: CLICK }}\n    reply: {{ one_of: [ {} ] }}\n",
            replies.join(", "),
            replies.join(", ")
        ),
    );
    scratch
}

fn text(msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{USER}]]></FromUserName><CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[lucky]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

fn click(create_time: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{USER}]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[K1]]></EventKey></xml>"
    )
}

fn query_with_nonce(nonce: &str) -> String {
    let ts = NOW.to_string();
    format!(
        "timestamp={ts}&nonce={nonce}&signature={}",
        sign(&[TOKEN, &ts, nonce])
    )
}

fn config(store: &str) -> dedup::Config {
    dedup::Config {
        store: store.parse().unwrap(),
        // Tests wait for Redis to be tried again: keep that short.
        retry_after: Duration::from_millis(50),
        ..dedup::Config::default()
    }
}

fn state(scratch: &Scratch, store: &str) -> AppState {
    state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options::default(),
        Some(config(store)),
    )
}

/// The value of the sample named exactly `series` (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    common::sample(text, series).unwrap_or(0.0)
}

const LUCKY_HITS: &str = "wxrules_rule_hits_total{rule=\"lucky\"}";
const CLICKED_HITS: &str = "wxrules_rule_hits_total{rule=\"clicked\"}";
const RETRIES: &str = "wxrules_requests_total{outcome=\"retry\"}";
const MEMORY_HITS: &str = "wxrules_dedup_hits_total{store=\"memory\"}";
const REDIS_HITS: &str = "wxrules_dedup_hits_total{store=\"redis\"}";
const FALLBACKS: &str = "wxrules_dedup_fallbacks_total";

#[actix_web::test]
async fn in_memory_a_retry_gets_the_same_bytes_and_the_rule_runs_once() {
    let scratch = lucky_rules();
    let app = app(state(&scratch, "memory")).await;

    let (status, first) = post(&app, &signed_query(), text(1)).await;
    assert_eq!(status, 200);
    assert!(first.contains("lucky "), "{first}");
    // The retry as WeChat sends it, and one signed with another nonce: the same push.
    for query in [signed_query(), query_with_nonce("99")] {
        let (status, retry) = post(&app, &query, text(1)).await;
        assert_eq!((status, retry.as_str()), (200, first.as_str()));
    }
    // Another MsgId is another message: the rules run.
    let (status, _) = post(&app, &signed_query(), text(2)).await;
    assert_eq!(status, 200);

    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, LUCKY_HITS), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, RETRIES), 2.0);
    assert_eq!(sample(&metrics, MEMORY_HITS), 2.0);
    assert_eq!(
        sample(&metrics, "wxrules_requests_total{outcome=\"replied\"}"),
        2.0
    );
}

#[actix_web::test]
async fn events_dedup_by_sender_and_create_time() {
    let scratch = lucky_rules();
    let app = app(state(&scratch, "memory")).await;
    let (_, first) = post(&app, &signed_query(), click(NOW)).await;
    let (_, retry) = post(&app, &signed_query(), click(NOW)).await;
    assert_eq!(first, retry);
    // The same click a second later is a new event.
    let (status, _) = post(&app, &signed_query(), click(NOW + 1)).await;
    assert_eq!(status, 200);
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, CLICKED_HITS), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, RETRIES), 1.0);
}

#[actix_web::test]
async fn refused_requests_are_not_stored() {
    let scratch = lucky_rules();
    let app = app(state(&scratch, "memory")).await;
    let forged = "timestamp=1&nonce=2&signature=0000";
    let (status, _) = post(&app, forged, text(7)).await;
    assert_eq!(status, 403);
    let (status, body) = post(&app, &signed_query(), text(7)).await;
    assert_eq!(status, 200);
    assert!(body.contains("lucky "), "{body}");
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, RETRIES), 0.0);
    assert_eq!(sample(&metrics, LUCKY_HITS), 1.0);
}

/// Posts over a real socket (HTTP/1.1, one request per connection).
fn http_post(addr: std::net::SocketAddr, query: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /wechat?{query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap();
    (status, body)
}

/// Fires `copies` copies of each message at once, from as many threads, at real servers
/// (several workers each): every copy of a message must get the same bytes.
async fn fire_concurrently(
    addrs: Vec<std::net::SocketAddr>,
    messages: Vec<String>,
    copies: usize,
) -> Vec<Vec<(u16, String)>> {
    tokio::task::spawn_blocking(move || {
        messages
            .iter()
            .map(|xml| {
                let barrier = Arc::new(Barrier::new(copies));
                let threads: Vec<_> = (0..copies)
                    .map(|i| {
                        let barrier = Arc::clone(&barrier);
                        let xml = xml.clone();
                        let addr = addrs[i % addrs.len()];
                        std::thread::spawn(move || {
                            barrier.wait();
                            http_post(addr, &signed_query(), &xml)
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Starts `state` on a real server with 4 workers on a free loopback port.
fn serve(state: AppState) -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
    let server = actix_web::HttpServer::new(move || {
        let state = state.clone();
        actix_web::App::new().configure(move |cfg| wxrules::server::configure(cfg, state))
    })
    .workers(4)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (addr, handle)
}

fn assert_all_identical(rounds: &[Vec<(u16, String)>]) {
    for answers in rounds {
        let (status, first) = &answers[0];
        assert_eq!(*status, 200, "{first}");
        assert!(first.contains("lucky "), "{first}");
        for (status, body) in answers {
            assert_eq!((*status, body), (200, first), "copies answered differently");
        }
    }
}

#[actix_web::test]
async fn concurrent_retries_wait_for_the_first_answer_in_memory() {
    let scratch = lucky_rules();
    let state = state(&scratch, "memory");
    let metrics = state.metrics.clone();
    let (addr, handle) = serve(state);
    let messages: Vec<String> = (100..120).map(text).collect();
    let rounds = fire_concurrently(vec![addr], messages, 16).await;
    assert_all_identical(&rounds);
    let text = metrics.render();
    assert_eq!(sample(&text, LUCKY_HITS), 20.0, "{text}");
    assert_eq!(sample(&text, RETRIES), 20.0 * 15.0);
    handle.stop(false).await;
}

#[actix_web::test]
async fn two_instances_sharing_redis_answer_a_retry_identically_with_one_rule_hit() {
    let redis = RedisServer::start();
    let scratch = lucky_rules();
    let a = app(state(&scratch, &redis.url())).await;
    let b = app(state(&scratch, &redis.url())).await;

    let (status, first) = post(&a, &signed_query(), text(1)).await;
    assert_eq!(status, 200);
    let (status, retry) = post(&b, &signed_query(), text(1)).await;
    assert_eq!((status, retry.as_str()), (200, first.as_str()));
    // And a second retry back at the first instance.
    let (_, again) = post(&a, &signed_query(), text(1)).await;
    assert_eq!(again, first);

    // The shared copy: prefixed, namespaced by account, the exact body.
    let stored = redis
        .get(&format!("wxrules:dedup:{ACCOUNT}:msg:1"))
        .expect("the answer is in Redis");
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["body"], first.as_str());
    assert_eq!(stored["rule"], "lucky");

    let (ma, mb) = (scrape(&a).await, scrape(&b).await);
    assert_eq!(sample(&ma, LUCKY_HITS) + sample(&mb, LUCKY_HITS), 1.0);
    assert_eq!(sample(&ma, LUCKY_HITS), 1.0);
    assert_eq!(sample(&mb, RETRIES), 1.0);
    assert_eq!(sample(&mb, REDIS_HITS), 1.0);
    // A's own retry came from its in-process copy.
    assert_eq!(sample(&ma, MEMORY_HITS), 1.0);
    assert_eq!(sample(&ma, FALLBACKS) + sample(&mb, FALLBACKS), 0.0);

    // The same push reaching both at once: one runs the rules, the other waits for it.
    for id in 10..30 {
        let query = signed_query();
        let (ra, rb) = tokio::join!(post(&a, &query, text(id)), post(&b, &query, text(id)));
        assert_eq!(ra.0, 200);
        assert_eq!(ra, rb, "message {id}");
    }
    let (ma, mb) = (scrape(&a).await, scrape(&b).await);
    assert_eq!(sample(&ma, LUCKY_HITS) + sample(&mb, LUCKY_HITS), 21.0);
    assert_eq!(sample(&ma, RETRIES) + sample(&mb, RETRIES), 22.0);
}

#[actix_web::test]
async fn two_real_servers_sharing_redis_under_concurrent_retries() {
    let redis = RedisServer::start();
    let scratch = lucky_rules();
    let (sa, sb) = (state(&scratch, &redis.url()), state(&scratch, &redis.url()));
    // Connected before the first push, as `serve` connects at start: the pushes' first
    // Redis command (the replay check, before the dedup claim) meets a made link.
    assert!(sa.dedup.connect().await && sb.dedup.connect().await);
    let (ma, mb) = (sa.metrics.clone(), sb.metrics.clone());
    let (addr_a, handle_a) = serve(sa);
    let (addr_b, handle_b) = serve(sb);
    let messages: Vec<String> = (200..215).map(text).collect();
    let rounds = fire_concurrently(vec![addr_a, addr_b], messages, 8).await;
    assert_all_identical(&rounds);
    let (ta, tb) = (ma.render(), mb.render());
    assert_eq!(
        sample(&ta, LUCKY_HITS) + sample(&tb, LUCKY_HITS),
        15.0,
        "{ta}\n{tb}"
    );
    assert_eq!(sample(&ta, FALLBACKS) + sample(&tb, FALLBACKS), 0.0);
    handle_a.stop(false).await;
    handle_b.stop(false).await;
}

/// Collects this thread's log lines (the test App runs on the test's own thread).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn count(&self, event: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.matches(&format!("event=\"{event}\"")).count()
    }
}

#[actix_web::test]
async fn with_redis_killed_mid_run_the_server_keeps_answering_and_recovers() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let mut redis = RedisServer::start();
    let scratch = lucky_rules();
    let (sa, sb) = (state(&scratch, &redis.url()), state(&scratch, &redis.url()));
    let (dedup_a, dedup_b) = (Arc::clone(&sa.dedup), Arc::clone(&sb.dedup));
    let (a, b) = (app(sa).await, app(sb).await);

    let (_, first) = post(&a, &signed_query(), text(1)).await;
    let (_, retry) = post(&b, &signed_query(), text(1)).await;
    assert_eq!(first, retry);

    redis.kill();
    let started = Instant::now();
    let mut during = Vec::new();
    for id in 2..12 {
        let (status, body) = post(&a, &signed_query(), text(id)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("lucky "), "{body}");
        during.push(body);
    }
    // Dedup goes on in process: a retry to the same instance still gets the same bytes.
    let (status, retry) = post(&a, &signed_query(), text(11)).await;
    assert_eq!((status, retry.as_str()), (200, during[9].as_str()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answers slowed down: {:?}",
        started.elapsed()
    );
    assert!(dedup_a.redis_down());
    let metrics = scrape(&a).await;
    assert!(sample(&metrics, FALLBACKS) >= 10.0, "{metrics}");
    assert_eq!(sample(&metrics, LUCKY_HITS), 11.0);

    // Redis is back on the same port: after the retry interval the next push uses it.
    redis.spawn();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, answered) = post(&a, &signed_query(), text(50)).await;
    assert_eq!(status, 200);
    assert!(!dedup_a.redis_down());
    assert!(redis
        .get(&format!("wxrules:dedup:{ACCOUNT}:msg:50"))
        .is_some());
    // B's connection died with the old Redis; it reconnects and answers from Redis.
    let (status, retry) = post(&b, &signed_query(), text(50)).await;
    assert_eq!((status, retry.as_str()), (200, answered.as_str()));
    assert!(!dedup_b.redis_down());
    let metrics_b = scrape(&b).await;
    assert_eq!(sample(&metrics_b, REDIS_HITS), 2.0, "{metrics_b}");
    assert_eq!(sample(&metrics_b, LUCKY_HITS), 0.0);
    // One warning for the whole outage, however many pushes fell back; one recovery.
    assert_eq!(logs.count("store_redis_down"), 1);
    assert_eq!(logs.count("store_redis_recovered"), 1);
}

#[actix_web::test]
async fn redis_down_from_the_start_falls_back_without_failing() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = lucky_rules();
    let state = state(&scratch, &format!("redis://127.0.0.1:{port}"));
    let app = app(state).await;
    let (status, first) = post(&app, &signed_query(), text(1)).await;
    assert_eq!(status, 200);
    let (_, retry) = post(&app, &signed_query(), text(1)).await;
    assert_eq!(first, retry);
    let metrics = scrape(&app).await;
    // The first push fell back; its retry was answered in process before Redis was needed.
    assert_eq!(sample(&metrics, FALLBACKS), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, MEMORY_HITS), 1.0);
}

#[actix_web::test]
async fn a_redis_that_never_answers_does_not_hold_the_answer() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(16) {
            held.push(stream);
        }
    });
    let scratch = lucky_rules();
    let config = dedup::Config {
        retry_after: wxrules::store::link::DEFAULT_RETRY_AFTER,
        ..config(&format!("redis://127.0.0.1:{port}"))
    };
    let state = state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options::default(),
        Some(config),
    );
    let app = app(state).await;
    let started = Instant::now();
    let (status, body) = post(&app, &signed_query(), text(1)).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(body.contains("lucky "), "{body}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    eprintln!("first answer with a silent Redis: {took:?}");
    // Redis is down now: until it is tried again, pushes do not wait for it at all.
    let started = Instant::now();
    let (status, _) = post(&app, &signed_query(), text(2)).await;
    assert_eq!(status, 200);
    let took = started.elapsed();
    eprintln!("next answer: {took:?}");
    assert!(took < Duration::from_millis(200), "took {took:?}");
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, FALLBACKS), 2.0, "{metrics}");
}

#[actix_web::test]
async fn a_retry_waiting_past_the_deadline_answers_success() {
    let scratch = lucky_rules();
    let state = state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options {
            deadline: Duration::from_millis(200),
            ..Options::default()
        },
        Some(config("memory")),
    );
    let dedup = Arc::clone(&state.dedup);
    let app = app(state).await;
    // A first attempt that is still being answered, and stays so.
    let key = Key::for_message(&Message::parse(text(1).as_bytes()).unwrap());
    let Claim::First(stuck) = dedup.claim(&key).await else {
        panic!("the key is free");
    };
    let started = Instant::now();
    let (status, body) = post(&app, &signed_query(), text(1)).await;
    let took = started.elapsed();
    assert_eq!((status, body.as_str()), (200, "success"));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(1),
        "{took:?}"
    );
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "wxrules_requests_total{outcome=\"deadline\"}"),
        1.0
    );
    assert_eq!(sample(&metrics, LUCKY_HITS), 0.0);
    // The first attempt gives up without answering: the next retry runs the rules.
    drop(stuck);
    let (status, body) = post(&app, &signed_query(), text(1)).await;
    assert_eq!(status, 200);
    assert!(body.contains("lucky "), "{body}");
}

#[actix_web::test]
async fn a_safe_mode_retry_gets_the_same_encrypted_bytes() {
    let scratch = lucky_rules();
    let state = state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, Some((AES_KEY, APP_ID))).unwrap(),
        Options::default(),
        Some(config("memory")),
    );
    let app = app(state).await;
    let sealer = Secrets::new(TOKEN, Some((AES_KEY, APP_ID))).unwrap();
    let encrypt = sealer.cipher().unwrap().encrypt(text(1).as_bytes());
    let body = format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    let query = |nonce: &str| {
        let ts = NOW.to_string();
        format!(
            "signature={}&timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
            sign(&[TOKEN, &ts, nonce]),
            sign(&[TOKEN, &ts, nonce, &encrypt])
        )
    };
    let (status, first) = post(&app, &query("n1"), body.clone()).await;
    assert_eq!(status, 200);
    assert!(first.contains("<Encrypt>"), "{first}");
    // Each fresh answer is sealed with fresh random bytes and nonce: only a stored one
    // can match byte for byte.
    for nonce in ["n1", "n2"] {
        let (status, retry) = post(&app, &query(nonce), body.clone()).await;
        assert_eq!((status, retry.as_str()), (200, first.as_str()));
    }
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, LUCKY_HITS), 1.0);
    assert_eq!(sample(&metrics, RETRIES), 2.0);
}

#[test]
fn a_bad_dedup_flag_is_a_one_line_error_naming_it() {
    // The last one has a password: the error must not repeat the value.
    for bad in [
        "memcached://x",
        "redis://host:notaport",
        "rediss://:s3cret-pw@host:6379",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .args(["serve", "--dedup", bad])
            .env("WXRULES_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("s3cret"), "{stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value") && first.contains("--store"),
            "{stderr}"
        );
    }
}

#[test]
fn the_server_starts_with_redis_down_and_says_so() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/3");
    let lines = first_lines(Command::new(env!("CARGO_BIN_EXE_wxrules")).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dedup",
        &url,
    ]));
    assert!(lines.contains("store_redis_down"), "{lines}");
    assert!(lines.contains(&url), "{lines}");
}

/// A Redis URL with a password is taken from WXRULES_STORE (the command line shows in
/// `ps`), and the password shows nowhere in the log.
#[test]
fn the_store_url_with_its_password_comes_from_the_environment() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lines = first_lines(
        Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env(
                "WXRULES_STORE",
                format!("redis://:s3cret-pw@127.0.0.1:{port}/2"),
            ),
    );
    assert!(lines.contains("store_redis_down"), "{lines}");
    assert!(lines.contains(&format!("127.0.0.1:{port}/2")), "{lines}");
    assert!(!lines.contains("s3cret-pw"), "{lines}");
}

/// Runs the server until it logs `server_started` (20 s at most); its log lines.
fn first_lines(command: &mut Command) -> String {
    let mut child = command
        .current_dir(root())
        .env("WXRULES_TOKEN", TOKEN)
        .env("WXRULES_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let done = line.contains("server_started");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let started = Instant::now();
    while !lines.is_finished() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.join().unwrap().join("\n");
    assert!(lines.contains("server_started"), "{lines}");
    lines
}

/// Plaintext replay across instances: a signed query seen by one instance carries the same
/// body to another (a retry, answered from the dedup store) but no other body (403,
/// `replayed`). Before the fix, every instance took any body under it.
#[actix_web::test]
async fn two_instances_sharing_redis_refuse_a_replayed_query_with_another_body() {
    let redis = RedisServer::start();
    let scratch = lucky_rules();
    let a = app(state(&scratch, &redis.url())).await;
    let b = app(state(&scratch, &redis.url())).await;
    let captured = signed_query();
    let (status, first) = post(&a, &captured, text(1)).await;
    assert_eq!(status, 200);
    let (status, retry) = post(&b, &captured, text(1)).await;
    assert_eq!((status, retry.as_str()), (200, first.as_str()));
    for (app, id) in [(&a, 2), (&b, 3), (&b, 4)] {
        let (status, body) = post(app, &captured, text(id)).await;
        assert_eq!((status, body.as_str()), (403, ""), "message {id}");
    }
    let replayed = "wxrules_requests_total{outcome=\"replayed\"}";
    let (ma, mb) = (scrape(&a).await, scrape(&b).await);
    assert_eq!((sample(&ma, replayed), sample(&mb, replayed)), (1.0, 2.0));
    assert_eq!(sample(&ma, LUCKY_HITS) + sample(&mb, LUCKY_HITS), 1.0);
    let key = format!(
        "wxrules:replay:{NOW}:{}",
        captured
            .split("nonce=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
    );
    assert_eq!(redis.get(&key).map(|hash| hash.len()), Some(32), "{key}");
}

/// The commands of `seen` other than scripts that name a cooldown's key.
fn cooldown_commands(seen: &[String]) -> usize {
    touching(seen, "wxrules:cooldown:")
        .iter()
        .filter(|l| !l.contains("\"EVALSHA\""))
        .count()
}

#[actix_web::test]
async fn with_redis_a_push_that_needs_no_call_claims_and_stores_in_one_round_trip() {
    let redis = RedisServer::start();
    let scratch = lucky_rules();
    let (sa, sb) = (state(&scratch, &redis.url()), state(&scratch, &redis.url()));
    assert!(sa.dedup.connect().await && sb.dedup.connect().await);
    let (a, b) = (app(sa).await, app(sb).await);
    // The first push loads the script (`NOSCRIPT`, `SCRIPT LOAD`, `EVALSHA` again).
    let (status, _) = post(&a, &signed_query(), text(1)).await;
    assert_eq!(status, 200);
    let monitor = Monitor::start(&redis);
    let _ = monitor.take();

    let (status, first) = post(&a, &signed_query(), text(2)).await;
    assert_eq!(status, 200);
    let seen = monitor.take();
    // One command in all: the script claims the MsgId, stores the answer and makes the
    // plaintext push's replay check (before: `SET` of the replay key, `SET NX` of the
    // claim, `SET` of the answer, three round trips).
    let ours = touching(&seen, "wxrules:");
    assert_eq!(ours.len(), 1, "one command: {seen:#?}");
    assert!(ours[0].contains("\"EVALSHA\""), "{seen:#?}");
    assert!(ours[0].contains("\"wxrules:replay:"), "{seen:#?}");
    let stored: serde_json::Value = serde_json::from_str(
        &redis
            .get(&format!("wxrules:dedup:{ACCOUNT}:msg:2"))
            .expect("the answer is in Redis"),
    )
    .unwrap();
    assert_eq!(stored["body"], first.as_str());
    let _ = monitor.take();

    // A retry at the other instance: one command finds the answer.
    let (status, retry) = post(&b, &signed_query(), text(2)).await;
    assert_eq!((status, retry.as_str()), (200, first.as_str()));
    let seen = monitor.take();
    assert_eq!(touching(&seen, "wxrules:").len(), 1, "{seen:#?}");
    let metrics = scrape(&b).await;
    assert_eq!(sample(&metrics, REDIS_HITS), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, LUCKY_HITS), 0.0);
    assert_eq!(sample(&scrape(&a).await, LUCKY_HITS), 2.0);
}

#[actix_web::test]
async fn with_redis_a_push_decided_first_still_waits_for_an_attempt_in_flight_elsewhere() {
    let redis = RedisServer::start();
    let scratch = lucky_rules();
    let (sa, sb) = (state(&scratch, &redis.url()), state(&scratch, &redis.url()));
    let other = Arc::clone(&sb.dedup);
    let a = app(sa).await;
    // Another instance is answering this push (its pending mark is in Redis).
    let key = Key::for_message(&Message::parse(text(5).as_bytes()).unwrap());
    let Claim::First(in_flight) = other.claim(&key).await else {
        panic!("the key is free");
    };
    let push = actix_web::rt::spawn(async move {
        let (status, body) = post(&a, &signed_query(), text(5)).await;
        let metrics = scrape(&a).await;
        (status, body, metrics)
    });
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !push.is_finished(),
        "the push must wait for the first attempt"
    );
    let theirs = Arc::new(dedup::Answer {
        content_type: "text/xml".into(),
        body: "<xml>theirs</xml>".into(),
        rule: Some("lucky".into()),
        joined: false,
    });
    in_flight.complete(theirs).await;
    let (status, body, metrics) = push.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "<xml>theirs</xml>"));
    assert_eq!(sample(&metrics, RETRIES), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, LUCKY_HITS), 0.0);
}

/// A rule with a cooldown acts beyond its reply: the push is claimed before the rule
/// answers, with the cooldown in the same round trip; the answer is stored after.
#[actix_web::test]
async fn with_redis_a_cooldown_is_claimed_with_the_push_in_one_round_trip() {
    let redis = RedisServer::start();
    let scratch = Scratch::new("dedup-cooldown");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: greet\n    when: { keyword: hi }\n    cooldown: 60s\n    reply: { text: hello }\n  - name: rest\n    reply: { text: again }\n",
    );
    let sa = state(&scratch, &redis.url());
    assert!(sa.dedup.connect().await);
    let a = app(sa).await;
    let hi = |id: u64| text(id).replace("lucky", "hi");
    let (_, warm) = post(&a, &signed_query(), hi(1)).await;
    assert!(warm.contains("hello"), "{warm}");
    let monitor = Monitor::start(&redis);
    let _ = monitor.take();

    // Cooling down now: the claim says so in its round trip, and the next rule answers
    // (decided after the claim: stored with one more command).
    let (_, second) = post(&a, &signed_query(), hi(2)).await;
    assert!(second.contains("again"), "{second}");
    let seen = monitor.take();
    assert_eq!(cooldown_commands(&seen), 0, "{seen:#?}");
    let dedup = touching(&seen, "wxrules:dedup:");
    assert_eq!(dedup.len(), 2, "{seen:#?}");
    assert!(dedup[0].contains("\"EVALSHA\"") && dedup[0].contains("wxrules:cooldown:"));
    assert!(dedup[1].contains("\"SET\""), "{seen:#?}");
    // A retry of it gets the same answer, and claims no cooldown.
    let (_, retry) = post(&a, &signed_query(), hi(2)).await;
    assert_eq!(retry, second);

    // Another user: the cooldown is free, taken in the claim's round trip.
    let other = hi(3).replace(USER, "oSomeoneElse");
    let (_, third) = post(&a, &signed_query(), other).await;
    assert!(third.contains("hello"), "{third}");
    let seen = monitor.take();
    assert_eq!(cooldown_commands(&seen), 0, "{seen:#?}");
    assert_eq!(
        redis
            .get(&format!("wxrules:cooldown:{ACCOUNT}:greet:oSomeoneElse"))
            .as_deref(),
        Some("1")
    );
}
