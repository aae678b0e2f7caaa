//! Shared test helpers: the real App built through `server::configure`, WeChat-style
//! signing, and the fixtures under `tests/data`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod backend;
pub mod fake_wechat;
pub mod redis_server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, App};
use wxrules::accounts::build::Builder;
use wxrules::accounts::{Account, AccountParts, Live, Mode, Secrets};
use wxrules::act::outbox::Outbox;
use wxrules::clock::FixedClock;
use wxrules::reload::Fleet;
use wxrules::rules::{self, Sources};
use wxrules::server::{self, AppState, Options};
use wxrules::store::dedup::{self, Dedup};
use wxrules::telemetry::metrics::Metrics;

pub const TOKEN: &str = "test-token";
/// The fixed "now" of every test: 2026-11-27T00:00:00Z.
pub const NOW: u64 = 1_795_737_600;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A frozen copy of the shipped `rules/` and `templates/` (`tests/data/shipped`): tests
/// expect its replies, so that ops editing the shipped files the README's way cannot break
/// `cargo test`. The shipped files themselves are checked by `tests/cli.rs` (they load,
/// their commented examples too) and `tests/schema.rs`, for validity only.
pub fn shipped() -> Sources {
    Sources {
        rules: root().join("tests/data/shipped/rules.yaml"),
        templates: root().join("tests/data/shipped/templates"),
    }
}

pub fn fixture(name: &str) -> String {
    let path = root()
        .join("tests/data/messages")
        .join(format!("{name}.xml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// WeChat's signature over (token, timestamp, nonce[, encrypt]).
pub fn sign(parts: &[&str]) -> String {
    use sha1::{Digest, Sha1};
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let digest = Sha1::digest(sorted.concat().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The query string WeChat would append for a plaintext push at `NOW`, with a nonce of its
/// own (`1320562132` and a count): a signed query carries one body (`store::replay`).
pub fn signed_query() -> String {
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ts = NOW.to_string();
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nonce = &format!("1320562132{n}");
    format!(
        "timestamp={ts}&nonce={nonce}&signature={}&openid=oUser",
        sign(&[TOKEN, &ts, nonce])
    )
}

/// A state without dedup: these tests send one fixture (one MsgId) many times and count
/// every answer. `tests/dedup.rs` builds its states with `state_with_dedup`.
pub fn state_for(sources: Sources, secrets: Secrets, options: Options) -> AppState {
    state_with_dedup(sources, secrets, options, None)
}

/// A state whose retries are deduplicated as `config` says (`None`: no dedup at all).
pub fn state_with_dedup(
    sources: Sources,
    secrets: Secrets,
    options: Options,
    config: Option<dedup::Config>,
) -> AppState {
    let clock = Arc::new(FixedClock(NOW));
    let metrics = Metrics::new();
    let dedup = match config {
        Some(config) => Dedup::new(config, metrics.clone()),
        None => Dedup::off(metrics.clone()),
    };
    let slow = Arc::new(wxrules::server::slow::SlowAnswers::new(
        clock.clone(),
        dedup.redis(),
    ));
    let builder = Builder {
        clock: clock.clone(),
        // Nothing listens on port 9 (discard); without an AppSecret nothing is sent anyway.
        wechat_api: "http://127.0.0.1:9".into(),
        redis: dedup.redis(),
        outbox: wxrules::act::outbox::Config::default(),
        http: wxrules::wechat_api::http_client().unwrap(),
        mode: Mode::Single,
        metrics: metrics.clone(),
        over_quota: Some(slow.clone()),
    };
    let fleet = Fleet::of_one(builder, sources, secrets)
        .unwrap_or_else(|e| panic!("rules do not load:\n{e}"));
    let cooldowns = wxrules::store::cooldown::Cooldowns::new(clock.clone(), dedup.redis());
    let replays = wxrules::store::replay::Replays::new(dedup.redis());
    let conversations =
        wxrules::store::conversation::Conversations::new(clock.clone(), dedup.redis());
    AppState {
        fleet: Arc::new(fleet),
        metrics,
        clock,
        options,
        dedup: Arc::new(dedup),
        caller: wxrules::act::call::Caller::new().unwrap(),
        late_calls: Arc::default(),
        cooldowns: Arc::new(cooldowns),
        replays: Arc::new(replays),
        slow,
        conversations: Arc::new(conversations),
        recent: None,
    }
}

/// `state` with its one account's outbox replaced (one that sends, to a fake WeChat); as
/// the server's, it hands what WeChat refuses with 45047 to `state.slow`.
pub fn with_outbox(state: &mut AppState, outbox: Outbox) {
    let live = state.account().unwrap();
    outbox.keep_over_quota(state.slow.clone(), live.account.scope());
    let account = Account::new(
        live.account.spec(),
        &Mode::Single,
        AccountParts {
            metrics: live.metrics().clone(),
            outbox: Arc::new(outbox),
            senders: None,
            secrets_fingerprint: 0,
        },
    );
    let rules = rules::load(live.account.sources()).unwrap().rules;
    state.accounts().put(Arc::new(Live {
        rules,
        loaded_at: NOW,
        secrets: Arc::clone(&live.secrets),
        account: Arc::new(account),
    }));
}

/// `state`'s one account made able to send: an outbox through the fake WeChat API at
/// `fake` (with its AppID and AppSecret), in Redis' streams when the state's store is
/// Redis (as `Builder::outbox_for` makes it). The senders run until dropped.
pub fn sending_through(
    state: &mut AppState,
    fake: &fake_wechat::FakeWechat,
) -> wxrules::act::outbox::Senders {
    let metrics = state.metrics.clone();
    let credentials =
        wxrules::wechat_api::Credentials::new(fake_wechat::APPID, fake_wechat::SECRET);
    let api =
        wxrules::wechat_api::Api::new(&fake.base(), Some(credentials), metrics.clone()).unwrap();
    let api = Arc::new(api);
    let config = wxrules::act::outbox::Config::default();
    let (outbox, senders) = match state.dedup.redis() {
        Some(redis) => Outbox::start_shared(&api, config, &metrics, &redis, fake_wechat::APPID),
        None => Outbox::start(&api, config, metrics),
    };
    with_outbox(state, outbox);
    senders
}

pub fn plain_state(sources: Sources) -> AppState {
    state_for(
        sources,
        Secrets::new(TOKEN, None).unwrap(),
        Options::default(),
    )
}

/// The real App, as `main` builds it.
pub async fn app(
    state: AppState,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    test::init_service(App::new().configure(move |cfg| server::configure(cfg, state))).await
}

/// Posts `body` to `/wechat?{query}`; returns status and body text.
pub async fn post<S>(app: &S, query: &str, body: impl Into<Vec<u8>>) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = test::TestRequest::post()
        .uri(&format!("/wechat?{query}"))
        .insert_header(("content-type", "text/xml"))
        .set_payload(body.into())
        .to_request();
    let resp = test::call_service(app, req).await;
    let status = resp.status().as_u16();
    let body = test::read_body(resp).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A directory with its own copy of rules and templates, for tests that write them.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "wxrules-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        Scratch { dir }
    }

    pub fn write(&self, rel: &str, text: &str) -> &Scratch {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
        self
    }

    pub fn sources(&self) -> Sources {
        Sources {
            rules: self.dir.join("rules.yaml"),
            templates: self.dir.join("templates"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// `GET /metrics` of `app`, as text.
pub async fn scrape<S>(app: &S) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = test::TestRequest::get().uri("/metrics").to_request();
    String::from_utf8(test::call_and_read_body(app, req).await.to_vec()).unwrap()
}

/// The value of the Prometheus sample whose name and labels are exactly `series`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
