//! Many accounts in one server (`--config`): three accounts through the real App, built the
//! way `serve` builds them (config file, secrets from files and variables, `Builder`):
//! routing by path, each account's own signature and safe mode, 404, dedup kept apart,
//! metrics labelled by account, `/healthz` per account, and reloads where one account is
//! broken, one is added and one removed. The CLI's `--config`/`--account` at the end.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test as actix_test, App};
use common::{sample, sign, Scratch, NOW};
use wxrules::accounts::build::Builder;
use wxrules::accounts::{read_config, Mode, ReloadOutcome};
use wxrules::clock::FixedClock;
use wxrules::crypto::Cipher;
use wxrules::reload::{self as fleet, Control, Fleet, FleetReport, Source};
use wxrules::server::{self, AppState, Options};
use wxrules::store::dedup::{self, Dedup};
use wxrules::telemetry::metrics::Metrics;

const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

/// The shop's token comes from this variable (set by every test that needs it, to the same
/// value); the others' from files.
const SHOP_TOKEN_VAR: &str = "WXRULES_TEST_ACCOUNTS_SHOP_TOKEN";
const SHOP_TOKEN: &str = "shop-token-1";
const NEWS_TOKEN: &str = "news-token-2";
const CITY_TOKEN: &str = "city-token-3";

fn rules(reply: &str) -> String {
    format!(
        "rules:\n  - name: hello\n    when: {{ keyword: hi }}\n    reply: {{ text: \"{reply}\" }}\n  - name: echo\n    when: {{ keyword: {{ regex: '^echo (?P<w>.+)$' }} }}\n    reply: {{ text: \"{reply}: {{{{captures.w}}}}\" }}\n"
    )
}

const CONFIG: &str = r#"# three accounts of one agency
listen: 127.0.0.1:0
accounts:
  - name: shop
    rules: shop/rules.yaml
    templates: shop/templates
    token_env: WXRULES_TEST_ACCOUNTS_SHOP_TOKEN
  - name: news
    rules: news/rules.yaml
    templates: news/templates
    token_file: secrets/news.token
  - name: city
    path: /wx/city
    rules: city/rules.yaml
    templates: city/templates
    token_file: secrets/city.token
    appid_file: secrets/city.appid
    aes_key_file: secrets/city.aes
"#;

/// A scratch directory with the config file, three accounts' rules and their secrets.
fn agency(tag: &str) -> Scratch {
    std::env::set_var(SHOP_TOKEN_VAR, SHOP_TOKEN);
    let scratch = Scratch::new(tag);
    scratch
        .write("wxrules.yaml", CONFIG)
        .write("shop/rules.yaml", &rules("shop v1"))
        .write("news/rules.yaml", &rules("news v1"))
        .write("city/rules.yaml", &rules("city v1"))
        .write("secrets/news.token", &format!("{NEWS_TOKEN}\n"))
        .write("secrets/city.token", CITY_TOKEN)
        .write("secrets/city.appid", APP_ID)
        .write("secrets/city.aes", AES_KEY);
    for account in ["shop", "news", "city"] {
        std::fs::create_dir_all(scratch.path(&format!("{account}/templates"))).unwrap();
    }
    scratch
}

/// The server's state for the config file of `scratch`, built as `serve` builds it.
fn state(scratch: &Scratch) -> (AppState, Arc<Fleet>) {
    // Nothing listens on port 9 (discard): no test here sends through the API but one,
    // which passes its fake.
    state_with_api(scratch, "http://127.0.0.1:9")
}

/// `state`, with the WeChat API at `wechat_api`.
fn state_with_api(scratch: &Scratch, wechat_api: &str) -> (AppState, Arc<Fleet>) {
    let config = read_config(&scratch.path("wxrules.yaml")).unwrap();
    let clock = Arc::new(FixedClock(NOW));
    let metrics = Metrics::new();
    let dedup = Dedup::new(dedup::Config::default(), metrics.clone());
    // As `serve` does: the accounts' outboxes keep what WeChat refuses with 45047 there.
    let slow = Arc::new(wxrules::server::slow::SlowAnswers::new(clock.clone(), None));
    let builder = Builder {
        clock: clock.clone(),
        wechat_api: wechat_api.into(),
        redis: None,
        outbox: wxrules::act::outbox::Config::default(),
        http: wxrules::wechat_api::http_client().unwrap(),
        mode: Mode::Config(config.path.clone()),
        metrics: metrics.clone(),
        over_quota: Some(slow.clone()),
    };
    let fleet = Arc::new(
        Fleet::load(builder, Source::Config(config.path.clone()))
            .unwrap_or_else(|e| panic!("{e:?}")),
    );
    let cooldowns = wxrules::store::cooldown::Cooldowns::new(clock.clone(), None);
    let state = AppState {
        fleet: Arc::clone(&fleet),
        metrics,
        clock: clock.clone(),
        options: Options::default(),
        dedup: Arc::new(dedup),
        caller: wxrules::act::call::Caller::new().unwrap(),
        late_calls: Arc::default(),
        cooldowns: Arc::new(cooldowns),
        replays: Arc::new(wxrules::store::replay::Replays::new(None)),
        slow,
        conversations: Arc::new(wxrules::store::conversation::Conversations::new(
            clock.clone(),
            None,
        )),
        recent: None,
    };
    (state, fleet)
}

async fn app(
    state: AppState,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    actix_test::init_service(App::new().configure(move |cfg| server::configure(cfg, state))).await
}

fn text(to: &str, content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

/// A signed query with a nonce of its own: a signed query carries one body.
fn signed(token: &str) -> String {
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (ts, nonce) = (NOW.to_string(), &format!("4242{n}"));
    format!(
        "timestamp={ts}&nonce={nonce}&signature={}",
        sign(&[token, &ts, nonce])
    )
}

async fn post<S>(app: &S, uri: &str, body: String) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = actix_test::TestRequest::post()
        .uri(uri)
        .insert_header(("content-type", "text/xml"))
        .set_payload(body)
        .to_request();
    let resp = actix_test::call_service(app, req).await;
    let status = resp.status().as_u16();
    let body = actix_test::read_body(resp).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A text message `content` to the account `account` at `/wechat/NAME`, signed with `token`.
async fn say<S>(app: &S, account: &str, token: &str, content: &str, msg_id: u64) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let uri = format!("/wechat/{account}?{}", signed(token));
    post(app, &uri, text(&format!("gh_{account}"), content, msg_id)).await
}

async fn get<S>(app: &S, uri: &str) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let resp =
        actix_test::call_service(app, actix_test::TestRequest::get().uri(uri).to_request()).await;
    let status = resp.status().as_u16();
    let body = actix_test::read_body(resp).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn content(xml: &str) -> &str {
    xml.split("<Content><![CDATA[")
        .nth(1)
        .and_then(|r| r.split("]]>").next())
        .unwrap_or("")
}

/// A safe-mode push to `city`, encrypted and signed with its key and token.
fn encrypted(content_text: &str, msg_id: u64) -> (String, String) {
    let cipher = Cipher::new(AES_KEY, APP_ID).unwrap();
    let encrypt = cipher.encrypt(text("gh_city", content_text, msg_id).as_bytes());
    let (ts, nonce) = (NOW.to_string(), "777");
    let query = format!(
        "timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
        sign(&[CITY_TOKEN, &ts, nonce, &encrypt])
    );
    let body = format!("<xml><ToUserName><![CDATA[gh_city]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
    (query, body)
}

fn decrypt_reply(xml: &str) -> String {
    let cipher = Cipher::new(AES_KEY, APP_ID).unwrap();
    let encrypt = xml
        .split("<Encrypt><![CDATA[")
        .nth(1)
        .and_then(|r| r.split("]]>").next())
        .unwrap();
    String::from_utf8(cipher.decrypt(encrypt).unwrap()).unwrap()
}

#[actix_web::test]
async fn each_account_answers_at_its_path_with_its_own_secrets() {
    let scratch = agency("routing");
    let (state, _fleet) = state(&scratch);
    let app = app(state).await;

    let (status, body) = say(&app, "shop", SHOP_TOKEN, "hi", 1).await;
    assert_eq!((status, content(&body)), (200, "shop v1"), "{body}");
    let (status, body) = say(&app, "news", NEWS_TOKEN, "echo 早上好", 2).await;
    assert_eq!((status, content(&body)), (200, "news v1: 早上好"), "{body}");

    // One account's token does not open another's door.
    let (status, body) = say(&app, "news", SHOP_TOKEN, "hi", 3).await;
    assert_eq!((status, body.as_str()), (403, ""));
    // The URL check is per account too.
    let (status, body) = get(
        &app,
        &format!("/wechat/shop?{}&echostr=e1", signed(SHOP_TOKEN)),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "e1"));
    let (status, _) = get(&app, &format!("/wx/city?{}&echostr=e1", signed(SHOP_TOKEN))).await;
    assert_eq!(status, 403);

    // Safe mode on the account with a key, at its own path, answered encrypted.
    let (query, body) = encrypted("hi", 4);
    let (status, reply) = post(&app, &format!("/wx/city?{query}"), body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("<Encrypt>"), "{reply}");
    assert_eq!(content(&decrypt_reply(&reply)), "city v1");

    // A path no account serves is 404, however well signed: `/wechat` alone is not an
    // account here, nor is an account's default path once it has its own.
    for path in [
        "/wechat/nobody",
        "/wechat",
        "/wechat/city",
        "/wechat/shop/x",
    ] {
        let (status, body) = post(
            &app,
            &format!("{path}?{}", signed(SHOP_TOKEN)),
            text("gh_shop", "hi", 5),
        )
        .await;
        assert_eq!((status, body.as_str()), (404, ""), "{path}");
    }
    let (status, _) = get(
        &app,
        &format!("/wechat/nobody?{}&echostr=e1", signed(SHOP_TOKEN)),
    )
    .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn dedup_and_metrics_are_per_account() {
    let scratch = agency("dedup");
    let (state, _fleet) = state(&scratch);
    let app = app(state).await;

    // The same MsgId (and the same ToUserName) on two accounts: two pushes, not a retry.
    let shop = format!("/wechat/shop?{}", signed(SHOP_TOKEN));
    let news = format!("/wechat/news?{}", signed(NEWS_TOKEN));
    let (_, a) = post(&app, &shop, text("gh_same", "hi", 42)).await;
    let (_, b) = post(&app, &news, text("gh_same", "hi", 42)).await;
    assert_eq!((content(&a), content(&b)), ("shop v1", "news v1"));
    // Sent again to the shop, it is the shop's retry.
    let (_, again) = post(&app, &shop, text("gh_same", "hi", 42)).await;
    assert_eq!(again, a);

    let (status, metrics) = get(&app, "/metrics").await;
    assert_eq!(status, 200);
    for (series, value) in [
        (
            r#"wxrules_requests_total{account="shop",outcome="replied"}"#,
            1.0,
        ),
        (
            r#"wxrules_requests_total{account="shop",outcome="retry"}"#,
            1.0,
        ),
        (
            r#"wxrules_requests_total{account="news",outcome="replied"}"#,
            1.0,
        ),
        (
            r#"wxrules_requests_total{account="news",outcome="retry"}"#,
            0.0,
        ),
        (
            r#"wxrules_requests_total{account="city",outcome="replied"}"#,
            0.0,
        ),
        (
            r#"wxrules_rule_hits_total{account="shop",rule="hello"}"#,
            1.0,
        ),
        (r#"wxrules_rules_loaded{account="city"}"#, 2.0),
        (r#"wxrules_dedup_hits_total{store="memory"}"#, 1.0),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    // Each family once, whatever the number of accounts.
    assert_eq!(metrics.matches("# TYPE wxrules_requests_total ").count(), 1);

    let (status, health) = get(&app, "/healthz").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    for account in ["shop", "news", "city"] {
        assert_eq!(health["accounts"][account]["rules"], 2, "{health}");
    }
}

async fn reload(controls: &tokio::sync::mpsc::Sender<Control>) -> FleetReport {
    let (reply, report) = tokio::sync::oneshot::channel();
    controls.send(Control::Reload(Some(reply))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), report)
        .await
        .unwrap()
        .unwrap()
}

#[actix_web::test]
async fn a_broken_account_keeps_its_rules_while_the_others_reload() {
    let scratch = agency("reload");
    let (state, fleet) = state(&scratch);
    let served = Arc::clone(&state.fleet);
    let app = app(state).await;
    let (controls, receiver) = tokio::sync::mpsc::channel(4);
    let looping = actix_web::rt::spawn(fleet::run(fleet, receiver, Duration::from_secs(30)));

    // Nothing changed: nothing is loaded again.
    let report = reload(&controls).await;
    assert_eq!(
        (report.outcome, report.unchanged),
        (ReloadOutcome::Unchanged, 3),
        "{report:?}"
    );

    // The shop takes its new rules; the news account's file is broken and keeps serving.
    scratch.write("shop/rules.yaml", &rules("shop v2"));
    scratch.write(
        "news/rules.yaml",
        "rules:\n  - name: hello\n    when: { keyword: hi }\n    reply: { txet: x }\n",
    );
    let report = reload(&controls).await;
    assert_eq!(report.outcome, ReloadOutcome::Partial, "{report:?}");
    assert_eq!(report.unchanged, 1);
    let by = |name: &str| report.accounts.iter().find(|a| a.account == name).unwrap();
    assert_eq!(by("shop").report.outcome, ReloadOutcome::Applied);
    assert_eq!(by("news").report.outcome, ReloadOutcome::Rejected);
    let error = &by("news").report.errors[0];
    assert!(error.contains("news/rules.yaml:4:"), "{error}");
    let (_, shop) = say(&app, "shop", SHOP_TOKEN, "hi", 10).await;
    let (_, news) = say(&app, "news", NEWS_TOKEN, "hi", 11).await;
    assert_eq!((content(&shop), content(&news)), ("shop v2", "news v1"));
    let (_, health) = get(&app, "/healthz").await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        health["accounts"]["news"]["last_reload"]["outcome"],
        "rejected"
    );
    assert_eq!(
        health["accounts"]["shop"]["last_reload"]["outcome"],
        "applied"
    );
    // Reloaded again with nothing changed, the broken account is still reported, errors and
    // all, until it is mended; the others are not loaded again.
    let report = reload(&controls).await;
    assert_eq!(
        (report.outcome, report.unchanged),
        (ReloadOutcome::Rejected, 2),
        "{report:?}"
    );
    assert!(report.accounts[0].report.errors[0].contains("news/rules.yaml:4:"));

    // The config file adds an account and drops one; a broken config file changes nothing.
    let config = std::fs::read_to_string(scratch.path("wxrules.yaml")).unwrap();
    let without_city = config.split("  - name: city").next().unwrap().to_owned();
    scratch
        .write("extra/rules.yaml", &rules("extra v1"))
        .write("secrets/extra.token", "extra-token-4")
        .write("wxrules.yaml", &format!("{without_city}  - name: extra\n    rules: extra/rules.yaml\n    templates: extra/templates\n    token_file: secrets/extra.token\n  - name: oops\n    rules: extra/rules.yaml\n    templates: extra/templates\n    tokn_file: x\n"));
    let report = reload(&controls).await;
    assert_eq!(report.outcome, ReloadOutcome::Rejected, "{report:?}");
    assert!(
        report.config_errors[0].contains("wxrules.yaml:"),
        "{:?}",
        report.config_errors
    );
    assert!(served.accounts.by_name("city").is_some());
    scratch.write("wxrules.yaml", &format!("{without_city}  - name: extra\n    rules: extra/rules.yaml\n    templates: extra/templates\n    token_file: secrets/extra.token\n"));
    let report = reload(&controls).await;
    let by = |name: &str| {
        report
            .accounts
            .iter()
            .find(|a| a.account == name)
            .map(|a| a.report.outcome)
    };
    assert_eq!(
        (by("extra"), by("city")),
        (Some(ReloadOutcome::Added), Some(ReloadOutcome::Removed)),
        "{report:?}"
    );
    assert!(served.accounts.by_name("city").is_none());
    let (_, extra) = say(&app, "extra", "extra-token-4", "hi", 12).await;
    assert_eq!(content(&extra), "extra v1");
    let (query, body) = encrypted("hi", 13);
    let (status, _) = post(&app, &format!("/wx/city?{query}"), body).await;
    assert_eq!(status, 404);

    // The news account mended: it reloads, and the health is whole again.
    scratch.write("news/rules.yaml", &rules("news v2"));
    let report = reload(&controls).await;
    assert_eq!(report.outcome, ReloadOutcome::Applied, "{report:?}");
    let (_, news) = say(&app, "news", NEWS_TOKEN, "hi", 14).await;
    assert_eq!(content(&news), "news v2");

    controls.send(Control::Stop).await.unwrap();
    looping.await.unwrap();
}

/// An account removed from the config file while one of its late calls runs: its outbox
/// stays open until the call has sent its reply (past the 10 s the retired account is kept
/// for requests still holding it).
#[actix_web::test]
async fn a_removed_account_still_sends_the_reply_of_its_late_call() {
    let backend = common::backend::Backend::start();
    let fake = common::fake_wechat::FakeWechat::start();
    let (scratch, with_secret, without_news) = late_agency("late-removed", &backend, 11000);
    let (state, fleet) = state_with_api(&scratch, &fake.base());
    let served = Arc::clone(&state.fleet);
    let app = app(state).await;
    let (controls, receiver) = tokio::sync::mpsc::channel(4);
    let looping = actix_web::rt::spawn(fleet::run(fleet, receiver, Duration::from_secs(30)));

    let (status, body) = say(&app, "news", NEWS_TOKEN, "slow", 20).await;
    assert_eq!((status, content(&body)), (200, "稍候"));
    assert_ne!(without_news, with_secret);
    scratch.write("wxrules.yaml", &without_news);
    let report = reload(&controls).await;
    assert_eq!(
        report.accounts[0].report.outcome,
        ReloadOutcome::Removed,
        "{report:?}"
    );
    assert!(served.accounts.by_name("news").is_none());

    // The call answers 11 s after the push; the reply goes out then.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while fake.delivered_count() == 0 && std::time::Instant::now() < until {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["text"]["content"], "答：想好了");
    assert_eq!(delivered[0]["touser"], "oUser");

    controls.send(Control::Stop).await.unwrap();
    looping.await.unwrap();
}

/// The agency with the news account's one rule a late call (`/slow/CALL_MS`, answered
/// after 300 ms with 稍候) and an AppID and AppSecret the fake API takes; the config file
/// with the news account, and without it.
fn late_agency(
    tag: &str,
    backend: &common::backend::Backend,
    call_ms: u64,
) -> (Scratch, String, String) {
    let scratch = agency(tag);
    scratch
        .write(
            "news/rules.yaml",
            &format!(
                "rules:\n  - name: agent\n    when: {{ keyword: slow }}\n    call: {{ url: \"{}/slow/{call_ms}\", timeout: 20s }}\n    late: {{ after: 300ms, reply: {{ text: 稍候 }} }}\n    reply: {{ text: \"答：{{{{call.answer}}}}\" }}\n",
                backend.base()
            ),
        )
        .write("secrets/news.appid", common::fake_wechat::APPID)
        .write("secrets/news.secret", common::fake_wechat::SECRET);
    let config = std::fs::read_to_string(scratch.path("wxrules.yaml")).unwrap();
    let news = "  - name: news\n    rules: news/rules.yaml\n    templates: news/templates\n    token_file: secrets/news.token\n";
    let with_secret = config.replace(
        news,
        &format!(
            "{news}    appid_file: secrets/news.appid\n    appsecret_file: secrets/news.secret\n"
        ),
    );
    let without_news = config.replace(news, "");
    scratch.write("wxrules.yaml", &with_secret);
    (scratch, with_secret, without_news)
}

/// The binary stopped (SIGTERM) just after a reload removed an account whose late call
/// runs: the stop waits for the call and drains that account's outbox with the others.
#[test]
fn a_stop_drains_the_outbox_of_an_account_a_reload_removed() {
    let backend = common::backend::Backend::start();
    let fake = common::fake_wechat::FakeWechat::start();
    // WeChat is busy at the first try: the reply waits in the outbox for its retry.
    fake.script(&[common::fake_wechat::Scripted::Errcode(-1)]);
    let (scratch, _, without_news) = late_agency("late-stop", &backend, 2500);
    let config = scratch.path("wxrules.yaml");
    let mut served = Served::start_with_api(&config, &fake.base());
    let (code, out, err) = served.send(
        "news",
        "/wechat/news",
        config.to_str().unwrap(),
        &["--text", "slow"],
    );
    assert_eq!((code, content(&out)), (0, "稍候"), "{out}{err}");
    scratch.write("wxrules.yaml", &without_news);
    served.wait_for("account_removed", |e| e["account"] == "news");
    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = served.child.wait().unwrap();
    assert!(exited.success(), "{exited:?}");
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["text"]["content"], "答：想好了");
    assert!(!served
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "outbox_abandoned" || e["event"] == "late_calls_abandoned"));
}

fn wxrules(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(args)
        .env(SHOP_TOKEN_VAR, SHOP_TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_explain_and_test_take_config_and_account() {
    let scratch = agency("cli");
    let config = scratch.path("wxrules.yaml");
    let config = config.to_str().unwrap();

    let (code, out, err) = wxrules(&["check", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("account shop (/wechat/shop):"), "{out}");
    assert!(out.contains("account city (/wx/city):"), "{out}");
    assert!(out.contains("ok: 3 accounts"), "{out}");

    // Every broken account is reported, each error with its file:line:col.
    scratch.write(
        "news/rules.yaml",
        "rules:\n  - name: a\n    when: { keyword: hi }\n    reply: { txet: x }\n",
    );
    scratch.write(
        "city/rules.yaml",
        "rules:\n  - name: b\n    when: { keyword: { regex: '(' } }\n    reply: { text: x }\n",
    );
    let (code, _, err) = wxrules(&["check", "--config", config]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("news/rules.yaml:4:"), "{err}");
    assert!(err.contains("city/rules.yaml:3:"), "{err}");
    assert!(
        err.contains("2 of 3 accounts have errors: news, city"),
        "{err}"
    );
    let (code, out, err) = wxrules(&["check", "--config", config, "--account", "shop"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = wxrules(&[
        "explain",
        "--config",
        config,
        "--account",
        "shop",
        "--text",
        "echo 你好",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rule: echo ("), "{out}");
    assert!(out.contains("shop v1: 你好"), "{out}");
    let (code, _, err) = wxrules(&["explain", "--config", config, "--text", "hi"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("has several accounts: name one with --account (shop, news, city)"),
        "{err}"
    );
    let (code, _, err) = wxrules(&[
        "explain",
        "--config",
        config,
        "--account",
        "nobody",
        "--text",
        "hi",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("has no account `nobody`"), "{err}");

    scratch.write(
        "cases.yaml",
        "cases:\n  - name: hello\n    text: hi\n    rule: hello\n    reply_contains: shop v1\n",
    );
    let cases = scratch.path("cases.yaml");
    let (code, out, err) = wxrules(&[
        "test",
        "--config",
        config,
        "--account",
        "shop",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");

    // A config file with errors: every one, located.
    scratch.write("wxrules.yaml", "accounts:\n  - name: Shop\n    rules: r\n    templates: t\n    token_env: X\n  - name: b\n    rules: r\n    templates: t\n");
    let (code, _, err) = wxrules(&["check", "--config", config]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("wxrules.yaml:2:11: account `Shop`: a name is"),
        "{err}"
    );
    assert!(
        err.contains("wxrules.yaml:6:5: account `b`: no token_env or token_file"),
        "{err}"
    );
}

/// The real binary serving the agency's config file, its log lines gathered.
struct Served {
    child: std::process::Child,
    public: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    events: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Served {
    fn start(config: &std::path::Path) -> Served {
        // Nothing listens on port 9 (discard).
        Served::start_with_api(config, "http://127.0.0.1:9")
    }

    fn start_with_api(config: &std::path::Path, wechat_api: &str) -> Served {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json", "--watch"])
            .env(SHOP_TOKEN_VAR, SHOP_TOKEN)
            .env("WXRULES_WECHAT_API", wechat_api)
            .env_remove("WXRULES_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let gathered = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    gathered.lock().unwrap().push(event);
                }
            }
        });
        let mut served = Served {
            child,
            public: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:1".parse().unwrap(),
            events,
        };
        let started = served.wait_for("server_started", |_| true);
        served.public = started["listen"].as_str().unwrap().parse().unwrap();
        served.admin = started["admin_listen"].as_str().unwrap().parse().unwrap();
        served
    }

    /// The first log event named `name` for which `also` holds.
    fn wait_for(&self, name: &str, also: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|e| e["event"] == name && also(e))
            {
                return e.clone();
            }
            assert!(
                std::time::Instant::now() < until,
                "no `{name}` in {:#?}",
                self.events.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(
        &self,
        account: &str,
        path: &str,
        config: &str,
        extra: &[&str],
    ) -> (i32, String, String) {
        let url = format!("http://{}{path}", self.public);
        let mut args = vec![
            "send",
            "--config",
            config,
            "--account",
            account,
            "--url",
            &url,
        ];
        args.extend_from_slice(extra);
        wxrules(&args)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_binary_serves_a_config_file_and_reloads_each_account() {
    let scratch = agency("binary");
    let config = scratch.path("wxrules.yaml");
    let config_text = config.to_str().unwrap();
    let served = Served::start(&config);
    assert_eq!(served.wait_for("server_started", |_| true)["accounts"], 3);

    // `send` signs with each account's own secrets (the city's in safe mode).
    let (code, out, err) = served.send("shop", "/wechat/shop", config_text, &["--text", "hi"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(content(&out), "shop v1", "{out}");
    let (code, out, err) =
        served.send("city", "/wx/city", config_text, &["--safe", "--text", "hi"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(content(&out), "city v1", "{out}");
    // Signed as the shop, posted to the news account's path: refused.
    let (code, out, _) = served.send("shop", "/wechat/news", config_text, &["--text", "hi"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("403"), "{out}");
    let handled = served.wait_for("message_handled", |e| e["account"] == "city");
    assert_eq!(handled["rule"], "hello");

    // --watch: an edit of one account reloads it alone.
    scratch.write("news/rules.yaml", &rules("news v2"));
    let reloaded = served.wait_for("rules_reloaded", |e| e["account"] == "news");
    let changed = reloaded["changed"].as_str().unwrap_or_default();
    assert!(
        changed.contains("hello") && changed.contains("echo"),
        "{reloaded}"
    );
    let (_, out, _) = served.send("news", "/wechat/news", config_text, &["--text", "hi"]);
    assert_eq!(content(&out), "news v2", "{out}");
    assert!(!served
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "rules_reloaded" && e["account"] != "news"));

    // An account added to the config file (under its directory) serves once it is saved.
    scratch
        .write("extra/rules.yaml", &rules("extra v1"))
        .write("secrets/extra.token", "extra-token-4");
    std::fs::create_dir_all(scratch.path("extra/templates")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    scratch.write(
        "wxrules.yaml",
        &format!("{text}  - name: extra\n    rules: extra/rules.yaml\n    templates: extra/templates\n    token_file: secrets/extra.token\n"),
    );
    served.wait_for("account_loaded", |e| e["account"] == "extra");
    let (code, out, err) = served.send("extra", "/wechat/extra", config_text, &["--text", "hi"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(content(&out), "extra v1");

    // `wxrules reload` through the admin port: per account, exit 1 when one is refused.
    scratch.write(
        "shop/rules.yaml",
        "rules:\n  - name: hello\n    when: { keyword: hi }\n    reply: { txet: x }\n",
    );
    let admin = format!("http://{}", served.admin);
    let (code, out, _) = wxrules(&["reload", "--admin", &admin]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("  shop: rejected"), "{out}");
    assert!(out.contains("shop/rules.yaml:4:"), "{out}");
    let (_, out, _) = served.send("shop", "/wechat/shop", config_text, &["--text", "hi"]);
    assert_eq!(content(&out), "shop v1", "the shop keeps its rules");

    // The admin port's metrics carry the account.
    let metrics = http_get(served.admin, "/metrics");
    for series in [
        r#"wxrules_requests_total{account="city",outcome="replied"} 1"#,
        r#"wxrules_requests_total{account="news",outcome="bad_signature"} 1"#,
        r#"wxrules_requests_total{account="extra",outcome="replied"} 1"#,
        r#"wxrules_reloads_total{account="shop",outcome="rejected"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    let health: serde_json::Value = serde_json::from_str(
        http_get(served.admin, "/healthz")
            .split("\r\n\r\n")
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        health["accounts"]["shop"]["last_reload"]["outcome"],
        "rejected"
    );
}

/// A GET over a plain TCP connection: the whole answer, head and body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[actix_web::test]
async fn a_reload_past_its_time_reports_the_account_it_was_loading() {
    let scratch = agency("timeout");
    let (state, fleet) = state(&scratch);
    let served = Arc::clone(&state.fleet);
    let app = app(state).await;
    // 20,000 rules take far longer to load than the 50 ms the loop waits (reading the config
    // file and stamping three accounts, far less).
    let mut big = rules("shop v2");
    for i in 0..20_000 {
        big.push_str(&format!(
            "  - name: r{i}\n    when: {{ keyword: k{i} }}\n    reply: {{ text: \"{i}\" }}\n"
        ));
    }
    scratch.write("shop/rules.yaml", &big);
    let (controls, receiver) = tokio::sync::mpsc::channel(4);
    let looping = actix_web::rt::spawn(fleet::run(
        Arc::clone(&fleet),
        receiver,
        Duration::from_millis(50),
    ));
    let report = reload(&controls).await;
    assert_eq!(report.outcome, ReloadOutcome::Failed, "{report:?}");
    assert!(
        report.config_errors[0].contains("did not finish"),
        "{report:?}"
    );
    // The shop is reported as timed out, keeps its rules, and the late load changes nothing.
    let shop = || served.accounts.by_name("shop").unwrap();
    let last = shop().health().state.last_reload.unwrap();
    assert_eq!(last.outcome, ReloadOutcome::TimedOut);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while shop().health().state.reloads_running > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(shop().rules.rules().len(), 2);
    let (_, body) = say(&app, "shop", SHOP_TOKEN, "hi", 30).await;
    assert_eq!(content(&body), "shop v1");
    controls.send(Control::Stop).await.unwrap();
    looping.await.unwrap();

    // With time enough, the next reload takes it.
    let (controls, receiver) = tokio::sync::mpsc::channel(4);
    let looping = actix_web::rt::spawn(fleet::run(fleet, receiver, Duration::from_secs(60)));
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = reload(&controls).await;
        // The abandoned load may still be finishing on its thread.
        let stuck = matches!(
            report.outcome,
            ReloadOutcome::Failed | ReloadOutcome::Skipped
        );
        if !stuck || std::time::Instant::now() > until {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(report.outcome, ReloadOutcome::Applied, "{report:?}");
    assert_eq!(shop().rules.rules().len(), 20_002);
    controls.send(Control::Stop).await.unwrap();
    looping.await.unwrap();
}

/// Hardening 2: one broken account used to stop them all at start-up (`1 account(s) cannot
/// be served; nothing was started`, exit 78), so a file broken on disk since the last
/// reload kept the healthy accounts down at the next restart. Now the others start, the
/// broken one is reported (the log, `/healthz` degraded, counted not quoted) and a reload
/// that mends it adds it; `--strict` keeps the old behaviour; none loading is still exit 78.
#[test]
fn a_broken_account_at_start_leaves_the_others_serving() {
    let scratch = agency("start-broken");
    let config = scratch.path("wxrules.yaml");
    let config_text = config.to_str().unwrap();
    scratch.write(
        "news/rules.yaml",
        "rules:\n  - name: hello\n    when: { keyword: hi }\n    reply: { txet: x }\n",
    );
    let served = Served::start(&config);
    let started = served.wait_for("server_started", |_| true);
    assert_eq!(started["accounts"], 2, "{started}");
    let unserved = served.wait_for("account_unserved", |e| e["errors"] == 1);
    assert_eq!(unserved["account"], "news");
    let (code, out, err) = served.send("shop", "/wechat/shop", config_text, &["--text", "hi"]);
    assert_eq!((code, content(&out)), (0, "shop v1"), "{out}{err}");
    let health = http_get(served.admin, "/healthz");
    let body = health.split("\r\n\r\n").nth(1).unwrap();
    let health: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["unserved"]["news"]["outcome"], "rejected",
        "{health}"
    );
    assert_eq!(health["unserved"]["news"]["error_count"], 1, "{health}");
    // Counted, not quoted: the errors are in the log and the dashboard.
    assert!(!body.contains("txet"), "{body}");

    // Mended on disk: --watch reloads, the account is added and serves.
    scratch.write("news/rules.yaml", &rules("news v2"));
    served.wait_for("account_loaded", |e| e["account"] == "news");
    let (code, out, _) = served.send("news", "/wechat/news", config_text, &["--text", "hi"]);
    assert_eq!((code, content(&out)), (0, "news v2"), "{out}");
    let health = http_get(served.admin, "/healthz");
    assert!(health.contains(r#""status":"ok""#), "{health}");
    drop(served);

    // --strict: today's behaviour before this change, for those who want it.
    scratch.write("news/rules.yaml", "rules: [ {");
    let (code, _, err) = wxrules(&[
        "--config",
        config_text,
        "--listen",
        "127.0.0.1:0",
        "--strict",
    ]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("1 account(s) cannot be served; nothing was started (--strict)"),
        "{err}"
    );
    assert!(err.contains("news/rules.yaml:2:1:"), "{err}");
    // None loads: exit 78 whatever the flags.
    scratch.write("shop/rules.yaml", "rules: [ {");
    scratch.write("city/rules.yaml", "rules: [ {");
    let (code, _, err) = wxrules(&["--config", config_text, "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("none of the 3 account(s) can be served; nothing was started"),
        "{err}"
    );
}

/// Log lines captured from the current thread (the test's runtime, where the outbox and
/// late calls run too), as tracing-subscriber's `fmt` writes them.
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

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .with_writer(move || logs.clone())
                .finish(),
        )
    }

    /// The first line with `event`, and every one of `fields` in it.
    fn line_with(&self, event: &str, fields: &[&str]) -> String {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| {
                l.contains(&format!("event=\"{event}\"")) || l.contains(&format!("event={event} "))
            })
            .unwrap_or_else(|| panic!("no {event} in:\n{text}"))
            .to_owned();
        for field in fields {
            assert!(line.contains(field), "no {field} in {line}");
        }
        line
    }
}

/// An account that cannot send is named in the unconfigured warnings, with what it lacks
/// in the config file (its `appsecret_*`, and its `appid_*` when that is missing too), not
/// the `WXRULES_*` variables of a server without one. Before the fix the warnings named
/// `WXRULES_APPID and WXRULES_APPSECRET` and no account.
#[actix_web::test]
async fn an_account_that_cannot_send_is_named_with_what_it_lacks() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let backend = common::backend::Backend::start();
    let (scratch, _, _) = late_agency("unconfigured", &backend, 600);
    scratch
        .write(
            "shop/rules.yaml",
            "rules:\n  - name: agent\n    when: { keyword: order }\n    reply: { text: 查询中 }\n    send: [ { text: 详情 } ]\n",
        )
        .write(
            "city/rules.yaml",
            &std::fs::read_to_string(scratch.path("news/rules.yaml")).unwrap(),
        );
    let (_, fleet) = state(&scratch);
    for live in fleet.accounts.table().accounts() {
        wxrules::reload::warn_unsendable(live);
    }
    let shop = logs.line_with(
        "sends_unconfigured",
        &[
            "account=\"shop\"",
            "agent",
            "`shop`",
            "no `appsecret_env` or `appsecret_file`",
            "no `appid_env`",
        ],
    );
    assert!(!shop.contains("WXRULES_"), "{shop}");
    // The city account has an AppID (for safe mode) and no AppSecret.
    let city = logs.line_with(
        "late_replies_unconfigured",
        &[
            "account=\"city\"",
            "the AppSecret of account `city`",
            "appsecret_file",
        ],
    );
    assert!(!city.contains("appid_env"), "{city}");
}

/// Two accounts with rules of the same name tell their lines apart: the outbox's, the
/// token's and a late reply's lines carry `account=`. Before the fix none of them named
/// the account.
#[actix_web::test]
async fn lines_about_sends_tokens_and_late_replies_name_their_account() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let backend = common::backend::Backend::start();
    let fake = common::fake_wechat::FakeWechat::start();
    let (scratch, _, _) = late_agency("lines", &backend, 600);
    scratch.write(
        "shop/rules.yaml",
        "rules:\n  - name: agent\n    when: { keyword: order }\n    reply: { text: 查询中 }\n    send: [ { text: 详情 } ]\n",
    );
    let (state, _fleet) = state_with_api(&scratch, &fake.base());
    let app = app(state).await;
    let (status, _) = say(&app, "shop", SHOP_TOKEN, "order", 30).await;
    assert_eq!(status, 200);
    let (status, body) = say(&app, "news", NEWS_TOKEN, "slow", 31).await;
    assert_eq!((status, content(&body)), (200, "稍候"));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while fake.delivered_count() == 0 && std::time::Instant::now() < until {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.delivered_count(), 1);
    let (shop, news) = ("account=\"shop\"", "account=\"news\"");
    logs.line_with("outbox_refused", &[shop, "rule=\"agent\""]);
    logs.line_with("late_reply_queued", &[news, "rule=\"agent\""]);
    logs.line_with("token_refreshed", &[news]);
    logs.line_with("message_sent", &[news, "rule=\"agent\""]);
}

/// A holding reply is "replied" on the dashboard; what then became of its late answer
/// shows beside it: queued, then failed with WeChat's errcode (48001). Before the fix the
/// push showed 已回复 alone.
#[actix_web::test]
async fn a_late_answer_that_failed_shows_beside_its_push() {
    use wxrules::telemetry::recent::{Late, Recent};
    let backend = common::backend::Backend::start();
    let fake = common::fake_wechat::FakeWechat::start();
    fake.fail_user("oUser", 48001);
    let (scratch, _, _) = late_agency("late-shown", &backend, 600);
    let (mut state, _fleet) = state_with_api(&scratch, &fake.base());
    let recent = Arc::new(Recent::new(NOW));
    state.recent = Some(Arc::clone(&recent));
    let app = app(state).await;
    let (status, body) = say(&app, "news", NEWS_TOKEN, "slow", 40).await;
    assert_eq!((status, content(&body)), (200, "稍候"));
    let pushes = recent.pushes(Some("news"));
    let after = pushes[0]
        .after
        .as_ref()
        .expect("a late call is followed")
        .get();
    assert_eq!(after.late, Some(Late::Waiting));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while recent.pushes(None)[0].after.as_ref().unwrap().get().failed == 0
        && std::time::Instant::now() < until
    {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let shown = serde_json::to_value(&recent.pushes(None)[0]).unwrap();
    assert_eq!(shown["outcome"], "replied");
    assert_eq!(
        shown["after"],
        serde_json::json!({"late": "queued", "queued": 0, "sent": 0, "failed": 1, "refused": 0,
            "errcode": 48001}),
        "{shown}"
    );
}

/// A move refused because another account still holds the path (its own move was refused)
/// reports the rules that keep serving at the old path, not 0. Before the fix the report
/// said `rules: 0` for an account whose two rules kept serving.
#[actix_web::test]
async fn a_refused_move_reports_the_rules_that_keep_serving() {
    let scratch = agency("refused-move");
    let (state, fleet) = state(&scratch);
    let app = app(state).await;
    let (controls, receiver) = tokio::sync::mpsc::channel(4);
    let looping = actix_web::rt::spawn(fleet::run(fleet, receiver, Duration::from_secs(30)));
    // The shop would move to /x but its rules are broken; the news account would take the
    // shop's path, which the shop still holds.
    let config = CONFIG
        .replace(
            "    rules: shop/rules.yaml\n",
            "    path: /x\n    rules: shop/rules.yaml\n",
        )
        .replace(
            "    rules: news/rules.yaml\n",
            "    path: /wechat/shop\n    rules: news/rules.yaml\n",
        );
    scratch.write("wxrules.yaml", &config).write(
        "shop/rules.yaml",
        "rules:\n  - name: hello\n    reply: { txet: x }\n",
    );
    let report = reload(&controls).await;
    let by = |name: &str| {
        report
            .accounts
            .iter()
            .find(|a| a.account == name)
            .unwrap_or_else(|| panic!("no {name} in {report:?}"))
    };
    let news = &by("news").report;
    assert_eq!(news.outcome, ReloadOutcome::Rejected, "{report:?}");
    assert!(
        news.errors[0].contains("still account `shop`'s"),
        "{news:?}"
    );
    assert_eq!(news.rules, 2, "{news:?}");
    assert!(!news.digest.is_empty(), "{news:?}");
    // It does keep serving, at its old path.
    let (_, answer) = say(&app, "news", NEWS_TOKEN, "hi", 50).await;
    assert_eq!(content(&answer), "news v1");
    controls.send(Control::Stop).await.unwrap();
    looping.await.unwrap();
}
