//! WeChat's HTTP API, the part wxrules calls: the access token (`stable_token`),
//! customer-service messages (`message/custom/send`), in `menu` the custom menu and
//! permanent material, and in `media` downloads of media and material. It knows nothing
//! of rules: it sends the messages it is handed. The AppSecret and access tokens never
//! leave this module, in errors or logs.
//!
//! The HTTP client is reqwest (rustls, ring): tokio-based, so its futures run on any of
//! the server's runtimes and are `Send` (awc's are not, and tie a connection pool to one
//! actix worker); it keeps connections alive, bounds every call in time and every answer
//! in size (`MAX_ANSWER`), and follows no redirect (a request carries the AppSecret or an
//! access token, which must never reach another origin).

mod custom;
mod media;
mod menu;
mod token;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use custom::{CustomMessage, Unsendable};
pub use media::{Media, DOWNLOAD_TIMEOUT};
pub use menu::Material;

use token::usable;

use crate::store::token::{Lock, TokenStore};

use crate::telemetry::metrics::Metrics;

/// WeChat's API host; `--wechat-api` points elsewhere (a proxy, or a test's fake).
pub const DEFAULT_BASE: &str = "https://api.weixin.qq.com";
/// How long one API call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from WeChat's API; past it the call fails (`TooLarge`) without
/// reading the rest. WeChat's JSON answers are small: a token or an errcode is under 200
/// bytes; the largest wxrules reads or will read are the console's auto-replies (at most
/// 200 keyword rules, a few hundred KiB), the custom menu with its conditional menus (a
/// few KiB each) and a page of permanent media (20 items of images, voice or video, a few
/// KiB). Only a page of news material carries whole articles (each under 1 MB): such a
/// call asks for few items per page or passes its own limit.
pub const MAX_ANSWER: usize = 1024 * 1024;

/// The account's AppID and AppSecret. `Debug` shows the AppID only.
#[derive(Clone)]
pub struct Credentials {
    pub appid: String,
    secret: Arc<str>,
}

impl Credentials {
    pub fn new(appid: &str, secret: &str) -> Credentials {
        Credentials {
            appid: appid.to_owned(),
            secret: secret.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("appid", &self.appid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why an API call failed. The messages quote WeChat's errcode and errmsg, never a token
/// or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No AppSecret: nothing can be sent.
    #[error("no AppSecret configured (WXRULES_APPSECRET)")]
    NoCredentials,
    /// The call did not get an answer: connection refused, reset, timed out.
    #[error("network: {0}")]
    Network(String),
    /// An HTTP status other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// A redirect (3xx): not followed, since the request carries the AppSecret or an
    /// access token.
    #[error("HTTP status {0}: a redirect, not followed (the request carries credentials)")]
    Redirected(u16),
    /// An answer longer than the limit (`MAX_ANSWER`): the rest is not read.
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
    /// WeChat answered with an error code.
    #[error("errcode {errcode}: {errmsg}")]
    Wechat { errcode: i64, errmsg: String },
    /// An answer that is not the JSON WeChat documents.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again later: the network, a 5xx, an answer that is not WeChat's JSON (a proxy's
    /// page), errcode -1 (system busy), a token that could not be had (it may come back: an IP added to the whitelist, a secret corrected).
    Retry,
    /// Never try again: the user cannot receive it (45015: silent for 48 h; 43004: not a
    /// follower), it is refused for good (40003: not this account's user), or WeChat says
    /// the request itself is wrong.
    Final,
    /// Not now, nor until the user's next action: WeChat's customer-service quota for the
    /// user is spent (45047, "out of response count limit"). The outbox hands the message,
    /// and the user's messages behind it, to be kept for that next action
    /// (`act::outbox::OverQuota`).
    QuotaSpent,
}

/// WeChat's "out of response count limit": the user's customer-service quota is spent.
pub const QUOTA_SPENT: i64 = 45047;

impl ApiError {
    pub fn disposition(&self) -> Disposition {
        match self {
            ApiError::NoCredentials => Disposition::Final,
            // Not WeChat's JSON: a proxy's error page, most likely; it may come back.
            ApiError::Network(_) | ApiError::Answer(_) | ApiError::TooLarge(_) => {
                Disposition::Retry
            }
            // A proxy or a hijacked name pointing elsewhere: an operator must look.
            ApiError::Redirected(_) => Disposition::Final,
            ApiError::Status(status) if *status >= 500 || *status == 429 => Disposition::Retry,
            ApiError::Status(_) => Disposition::Final,
            ApiError::Wechat { errcode, .. } => match *errcode {
                -1 | 45009 => Disposition::Retry,
                QUOTA_SPENT => Disposition::QuotaSpent,
                // Token errors outlive one refresh only when the credentials or the
                // whitelist are wrong; an operator can fix those.
                40001 | 40014 | 42001 | 40125 | 40164 | 40013 | 41002 | 41004 => Disposition::Retry,
                _ => Disposition::Final,
            },
        }
    }

    /// The errcode, for logs and metrics.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::Wechat { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// A short stable name for the `outcome` label of `wxrules_wechat_api_calls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::NoCredentials => "no_credentials",
            ApiError::Network(_) => "network",
            ApiError::Status(_) | ApiError::Redirected(_) => "http_status",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Wechat { .. } => "errcode",
            ApiError::Answer(_) => "bad_answer",
        }
    }
}

/// WeChat's "invalid media_id": the material a message names is gone.
const INVALID_MEDIA: i64 = 40007;

/// What gives a new media id for one WeChat says is no good (40007): the uploads of the
/// account's reply files (`act::media`), which upload the file again.
pub trait MediaRefresh: Send + Sync + fmt::Debug {
    /// A new id in place of `media_id`, if it is one of the account's files' and the file
    /// could be uploaded again.
    fn refresh<'a>(
        &'a self,
        media_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>>;
}

/// The errcodes that mean "this access token is no good": refresh it, retry the call once.
const TOKEN_INVALID: [i64; 3] = [40001, 40014, 42001];

/// WeChat's error answer (and the `errcode: 0` of a success).
#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// The API client of one account.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    /// The access token: in process, and with `--store redis://…` shared by every instance.
    token: TokenStore,
    /// Held by the one caller that fetches; the others wait, then use what it got.
    refreshing: tokio::sync::Mutex<()>,
    metrics: Metrics,
    /// Replaces a media id WeChat refuses (40007); weak, as it holds this client.
    media: std::sync::OnceLock<std::sync::Weak<dyn MediaRefresh>>,
}

/// The HTTP client of WeChat's API: its timeouts, pool and user agent. Clone it to share
/// it (the clones share one pool).
pub fn http_client() -> Result<reqwest::Client, ApiError> {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(60))
        // A 307 or 308 would post the AppSecret again, to wherever `Location` says.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wxrules/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ApiError::Network(format!("cannot build the HTTP client: {e}")))
}

impl Api {
    /// A client for `base` (`DEFAULT_BASE` in production). Without credentials every call
    /// fails with `ApiError::NoCredentials`.
    pub fn new(
        base: &str,
        credentials: Option<Credentials>,
        metrics: Metrics,
    ) -> Result<Api, ApiError> {
        Ok(Api::with_http(base, credentials, metrics, http_client()?))
    }

    /// `new`, on an HTTP client shared with other accounts' (`http_client`): a client
    /// holds its TLS settings and connection pool, some 50 KB, and one per account of a
    /// thousand would be 50 MB for the same connections to the same host.
    pub fn with_http(
        base: &str,
        credentials: Option<Credentials>,
        metrics: Metrics,
        http: reqwest::Client,
    ) -> Api {
        Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credentials,
            token: TokenStore::default(),
            refreshing: tokio::sync::Mutex::default(),
            metrics,
            media: std::sync::OnceLock::new(),
        }
    }

    /// Shares the access token through `redis` with every instance of the account: one
    /// fetch for all of them. Without credentials there is nothing to share.
    pub fn share_tokens(mut self, redis: Arc<crate::store::Link>) -> Api {
        if let Some(credentials) = &self.credentials {
            self.token = TokenStore::shared(redis, &credentials.appid);
        }
        self
    }

    /// Whether an AppSecret is configured.
    pub fn can_send(&self) -> bool {
        self.credentials.is_some()
    }

    /// The base URL calls go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one customer-service message. An answer that says the token is no good
    /// refreshes it and retries the call once. A media id WeChat refuses (40007) is
    /// replaced through `set_media_refresh`'s uploads (the file uploaded again) and the
    /// message sent once more.
    pub async fn send_custom(&self, message: &CustomMessage) -> Result<(), ApiError> {
        let sent = self
            .authorized(
                move |token: Arc<str>| async move { self.post_custom(&token, message).await },
            )
            .await;
        let (Err(ApiError::Wechat { errcode, .. }), Some(old)) = (&sent, message.media_id()) else {
            return sent;
        };
        let refresh = self.media.get().and_then(std::sync::Weak::upgrade);
        let (INVALID_MEDIA, Some(refresh)) = (*errcode, refresh) else {
            return sent;
        };
        let Some(fresh) = refresh.refresh(old).await else {
            return sent;
        };
        tracing::warn!(
            event = "media_replaced",
            account = self.metrics.account(),
            "WeChat refused a media id (40007): its file was uploaded again, and the message is sent again"
        );
        let again = message.with_media_id(&fresh);
        let again = &again;
        self.authorized(move |token: Arc<str>| async move { self.post_custom(&token, again).await })
            .await
    }

    /// What replaces a media id WeChat refuses (40007) in `send_custom`; set once.
    pub fn set_media_refresh(&self, refresh: std::sync::Weak<dyn MediaRefresh>) {
        let _ = self.media.set(refresh);
    }

    /// The MP console's auto-replies (`GET /cgi-bin/get_current_autoreply_info`), as the
    /// JSON text WeChat answered; a token WeChat says is no good is refreshed once.
    pub async fn current_autoreply_info(&self) -> Result<String, ApiError> {
        let url = format!("{}/cgi-bin/get_current_autoreply_info", self.base);
        let url = url.as_str();
        self.authorized(move |token: Arc<str>| async move {
            self.json_call(
                "get_current_autoreply_info",
                self.http.get(url).query(&[("access_token", &*token)]),
            )
            .await
        })
        .await
        .map(|value| value.to_string())
    }

    async fn post_custom(&self, token: &str, message: &CustomMessage) -> Result<(), ApiError> {
        let url = format!("{}/cgi-bin/message/custom/send", self.base);
        let result = self
            .call::<Status>(
                self.http
                    .post(url)
                    .query(&[("access_token", token)])
                    .json(message),
            )
            .await
            .and_then(|status| match status.errcode {
                0 => Ok(()),
                errcode => Err(ApiError::Wechat {
                    errcode,
                    errmsg: status.errmsg,
                }),
            });
        self.metrics
            .observe_api_call("custom_send", outcome(&result));
        result
    }

    /// The cached access token, fetched when there is none or it is about to expire.
    pub async fn access_token(&self) -> Result<Arc<str>, ApiError> {
        if let Some(token) = self.token.current() {
            return Ok(token);
        }
        self.refresh_token(None).await
    }

    /// Fetches a token, one fetch at a time: a caller that waited for another's fetch uses
    /// its result. `rejected`: the token WeChat just refused; a fetch that gives it back
    /// again is repeated with `force_refresh`.
    async fn refresh_token(&self, rejected: Option<&str>) -> Result<Arc<str>, ApiError> {
        let credentials = self.credentials.as_ref().ok_or(ApiError::NoCredentials)?;
        let _one = self.refreshing.lock().await;
        if let Some(token) = self.token.current() {
            if rejected != Some(&*token) {
                return Ok(token);
            }
        }
        // Another instance may have fetched one (or be fetching it now).
        if let Some(token) = self.token.find_shared(rejected).await {
            return Ok(token);
        }
        let mut locked = false;
        match self.token.lock().await {
            Lock::Taken => locked = true,
            Lock::HeldByOther => {
                if let Some(token) = self.token.wait(rejected).await {
                    return Ok(token);
                }
                // The other fetch did not deliver in time: fetch here (`stable_token`
                // gives every caller the same token, so this costs nobody theirs).
            }
            // No Redis, or Redis is away: fetch here at once.
            Lock::Here => {}
        }
        let mut fetched = self.fetch_token(credentials, false).await;
        if let (Ok((token, _)), Some(rejected)) = (&fetched, rejected) {
            if **token == *rejected {
                fetched = self.fetch_token(credentials, true).await;
            }
        }
        match fetched {
            Ok((token, expires_in)) => {
                self.token.put(&token, usable(expires_in)).await;
                tracing::info!(
                    event = "token_refreshed",
                    account = self.metrics.account(),
                    expires_in = expires_in.as_secs()
                );
                Ok(token)
            }
            Err(e) => {
                self.token.clear();
                if locked {
                    self.token.unlock().await;
                }
                tracing::error!(
                    event = "token_failed",
                    account = self.metrics.account(),
                    errcode = e.errcode(),
                    error = %e,
                    "{}",
                    match self.metrics.account() {
                        None => "cannot get an access token; check WXRULES_APPID, WXRULES_APPSECRET and the IP whitelist (40164)",
                        Some(_) => "cannot get an access token; check the account's appid and appsecret and the IP whitelist (40164)",
                    }
                );
                Err(e)
            }
        }
    }

    async fn fetch_token(
        &self,
        credentials: &Credentials,
        force: bool,
    ) -> Result<(Arc<str>, Duration), ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
            #[serde(default)]
            errcode: i64,
            #[serde(default)]
            errmsg: String,
        }
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": credentials.appid,
            "secret": &*credentials.secret,
            "force_refresh": force,
        });
        let url = format!("{}/cgi-bin/stable_token", self.base);
        let result = self
            .call::<Answer>(self.http.post(url).json(&body))
            .await
            .and_then(|answer| match (answer.errcode, answer.access_token) {
                (0, Some(token)) if !token.is_empty() => Ok((
                    Arc::<str>::from(token),
                    // WeChat says 7,200; an answer that says more is not believed.
                    Duration::from_secs(answer.expires_in.unwrap_or(7200).min(7200)),
                )),
                (0, _) => Err(ApiError::Answer("no access_token in the answer".into())),
                (errcode, _) => Err(ApiError::Wechat {
                    errcode,
                    errmsg: answer.errmsg,
                }),
            });
        self.metrics
            .observe_api_call("stable_token", outcome(&result));
        result
    }

    /// Sends a request and reads its JSON answer, `MAX_ANSWER` bytes at most. Errors never
    /// carry the URL (its query holds the access token).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Network(describe(&e)))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ApiError::Redirected(status.as_u16()));
        }
        if !status.is_success() {
            return Err(ApiError::Status(status.as_u16()));
        }
        let bytes = read_capped(response, MAX_ANSWER).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Answer(format!("not JSON: {e}")))
    }
}

/// The body of `response`, refused once it passes `limit` bytes: by its `Content-Length`
/// before anything is read, or as it arrives, chunk by chunk.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = response.content_length().unwrap_or(0);
    if declared > limit as u64 {
        return Err(ApiError::TooLarge(limit));
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ApiError::Network(describe(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn outcome<T>(result: &Result<T, ApiError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    }
}

/// A reqwest error without its URL (which may carry the access token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wechat(errcode: i64) -> Disposition {
        ApiError::Wechat {
            errcode,
            errmsg: String::new(),
        }
        .disposition()
    }

    #[test]
    fn errcodes_say_what_becomes_of_a_message() {
        assert_eq!(wechat(-1), Disposition::Retry);
        assert_eq!(wechat(42001), Disposition::Retry);
        assert_eq!(wechat(45015), Disposition::Final);
        assert_eq!(wechat(43004), Disposition::Final);
        assert_eq!(wechat(QUOTA_SPENT), Disposition::QuotaSpent);
        assert_eq!(ApiError::Status(502).disposition(), Disposition::Retry);
        assert_eq!(ApiError::Redirected(307).disposition(), Disposition::Final);
    }
}
