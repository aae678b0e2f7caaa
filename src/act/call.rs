//! A rule's `call`: the HTTP request to one of the account's own services, bounded in time,
//! size and concurrency, and its answer read as a JSON object. `prepare` builds the request
//! (no IO); `Pending::run` makes it and never takes longer than its budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use crate::render::Scope;
use crate::rules::{Call, CallMethod};
pub use crate::telemetry::metrics::CallMetrics;
use crate::wire::Reply;

use super::service_reply::kind;

/// The largest answer read from a service, as the one delivered later (a reply is a few
/// KiB): the delivery owns the figure, which a call reads.
pub const MAX_ANSWER: usize = super::deliver::MAX_BODY;
/// The longest a connection to a service may take to open, within the call's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per service host, for reuse (HTTP/1.1 keep-alive).
const IDLE_PER_HOST: usize = 256;

/// How a call ended.
#[derive(Debug)]
pub enum CallResult {
    /// A 2xx answer holding a JSON object.
    Answered(Answered),
    Failed(CallFailure),
}

/// A service's answer: the object templates see as `call`, and what it decided, if it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub value: Value,
    pub decided: Option<Decided>,
}

/// The service's own decision, which the rule's `reply` does not override.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// `"ignore": true`: answer `success`.
    Ignore,
    /// `"reply": {…}`: this reply, its strings used as they are.
    Reply(Reply),
}

impl Answered {
    /// Reads a service's answer: a JSON object, whose `reply` or `ignore`, if given, decide.
    pub fn from_value(value: Value) -> Result<Answered, CallFailure> {
        let Value::Object(object) = &value else {
            return Err(CallFailure::NotJson(format!(
                "a JSON {}, not an object",
                kind(&value)
            )));
        };
        let decided = match (object.get("ignore"), object.get("reply")) {
            (Some(Value::Bool(true)), _) => Some(Decided::Ignore),
            (Some(Value::Bool(false)) | None, None) => None,
            (Some(Value::Bool(false)) | None, Some(reply)) => Some(Decided::Reply(
                super::service_reply::read(reply).map_err(CallFailure::BadReply)?,
            )),
            (Some(_), _) => {
                return Err(CallFailure::BadReply("`ignore` is true or false".into()));
            }
        };
        Ok(Answered { value, decided })
    }
}

/// What `explain` and `test` use in place of a call: the service's JSON answer, or a failure
/// (its text says why). `None` when neither is given.
pub fn stub(response: Option<&Value>, error: Option<&str>) -> Option<CallResult> {
    match (response, error) {
        (_, Some(why)) => Some(CallResult::Failed(CallFailure::Stubbed(why.to_owned()))),
        (Some(value), None) => Some(match Answered::from_value(value.clone()) {
            Ok(answered) => CallResult::Answered(answered),
            Err(failure) => CallResult::Failed(failure),
        }),
        (None, None) => None,
    }
}

/// Why a call gave no usable answer. The text never holds the service's body, nor the URL
/// (which may carry an OpenID).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("{0} calls of this rule are already running (its `concurrency`)")]
    Busy(u32),
    #[error("the URL cannot be built: {0}")]
    Url(String),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the request failed: {0}")]
    Network(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the answer is over {} KiB", MAX_ANSWER / 1024)]
    TooLarge,
    #[error("the answer is not a JSON object: {0}")]
    NotJson(String),
    #[error("the answer's `reply` is not a reply: {0}")]
    BadReply(String),
    /// A test case's or `explain`'s stand-in for a failure.
    #[error("{0}")]
    Stubbed(String),
}

impl CallFailure {
    /// The `outcome` label of `wxrules_calls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallFailure::Busy(_) => "busy",
            CallFailure::Url(_) => "bad_url",
            CallFailure::Timeout(_) => "timeout",
            CallFailure::Connect(_) => "connect",
            CallFailure::Network(_) => "network",
            CallFailure::Status(_) => "status",
            CallFailure::TooLarge => "too_large",
            CallFailure::NotJson(_) | CallFailure::BadReply(_) => "invalid",
            CallFailure::Stubbed(_) => "stubbed",
        }
    }
}

/// The HTTP client of every rule's calls: one connection pool, HTTP/1.1 with keep-alive,
/// no redirects (a service's answer is its answer; a redirect could lead anywhere).
#[derive(Debug, Clone)]
pub struct Caller {
    client: reqwest::Client,
}

/// Late calls running now (`late:` rules whose call runs on after the push may have been
/// answered): at a stop the server waits for them a little, then says how many it left.
#[derive(Debug, Default)]
pub struct LateCalls {
    running: Arc<std::sync::atomic::AtomicUsize>,
}

/// One late call in `LateCalls` while it lives.
#[derive(Debug)]
pub struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl LateCalls {
    pub fn enter(&self) -> Running {
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(Arc::clone(&self.running))
    }

    pub fn count(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until none runs, or `at_most`; how many still run.
    pub async fn settle(&self, at_most: Duration) -> usize {
        let until = tokio::time::Instant::now() + at_most;
        while self.count() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count()
    }
}

impl Caller {
    pub fn new() -> Result<Caller, reqwest::Error> {
        let client = reqwest::Client::builder()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .tcp_nodelay(true)
            .user_agent(concat!("wxrules/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Caller { client })
    }

    /// Builds `call`'s request for `scope` and takes a place in the rule's concurrency
    /// limit; no IO. `budget` bounds the whole call (at most the call's `timeout`).
    pub fn prepare(
        &self,
        call: &Call,
        scope: &Scope<'_>,
        budget: Duration,
        metrics: Option<(CallMetrics, Arc<str>)>,
    ) -> Result<Pending, CallFailure> {
        let observe_failure = |failure: CallFailure| {
            if let Some((m, rule)) = &metrics {
                m.calls.with_label_values(&[rule, failure.outcome()]).inc();
            }
            failure
        };
        let permit = Arc::clone(&call.limit)
            .try_acquire_owned()
            .map_err(|_| observe_failure(CallFailure::Busy(call.concurrency)))?;
        let request = self
            .request(call, scope)
            .map_err(|e| observe_failure(CallFailure::Url(e)))?;
        Ok(Pending {
            client: self.client.clone(),
            request,
            budget: budget.min(call.timeout),
            metrics,
            delivery: None,
            _permit: permit,
        })
    }

    /// The request `call` makes for `scope`: its URL rendered (each value percent-encoded),
    /// its headers, and for a POST the message as JSON.
    pub fn request(&self, call: &Call, scope: &Scope<'_>) -> Result<reqwest::Request, String> {
        let url = call.url.render_url(scope).map_err(|e| e.reason)?;
        refuse_dot_segments(&url)?;
        let url = reqwest::Url::parse(&url).map_err(|e| e.to_string())?;
        let method = match call.method {
            CallMethod::Post => reqwest::Method::POST,
            CallMethod::Get => reqwest::Method::GET,
        };
        let mut request = reqwest::Request::new(method, url);
        let headers = request.headers_mut();
        for (name, value) in &call.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.entry(reqwest::header::ACCEPT).or_insert(
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        if call.method == CallMethod::Post {
            headers.entry(reqwest::header::CONTENT_TYPE).or_insert(
                reqwest::header::HeaderValue::from_static("application/json"),
            );
            let body = serde_json::to_vec(&scope.request_body()).map_err(|e| e.to_string())?;
            *request.body_mut() = Some(body.into());
        }
        Ok(request)
    }
}

/// Refuses a URL whose path has a `.` or `..` segment, written plainly or percent-encoded:
/// a URL parser resolves them (`/orders/../admin` is `/admin`), so a value that is only dots
/// (`订单 ..`) would move the call to another path. Values are encoded, so `/` cannot come
/// from one; a whole segment can.
fn refuse_dot_segments(url: &str) -> Result<(), String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |at| &after_scheme[at..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    for segment in path.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err(format!(
                "a value made the path segment `{decoded}`, which would move the call to another path"
            ));
        }
    }
    Ok(())
}

/// A call ready to be made, holding its place in the rule's concurrency limit until it ends.
#[derive(Debug)]
pub struct Pending {
    client: reqwest::Client,
    request: reqwest::Request,
    budget: Duration,
    metrics: Option<(CallMetrics, Arc<str>)>,
    /// Where a `202 Accepted` call's answer arrives (`deliver`), when it was given a URL.
    delivery: Option<super::deliver::Waiting>,
    _permit: OwnedSemaphorePermit,
}

impl Pending {
    /// The same call, not counted when it ends: its caller counts it (a late call's
    /// outcome depends on whether the push still waited for it).
    pub fn uncounted(mut self) -> Pending {
        self.metrics = None;
        self
    }

    /// Tells the service where it may deliver its answer later (`X-Wxrules-Deliver: url`):
    /// a `202 Accepted` then waits, within the call's budget, for that delivery.
    pub fn deliver_to(mut self, url: &str, arrives: super::deliver::Waiting) -> Pending {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(url) {
            self.request
                .headers_mut()
                .insert(super::deliver::HEADER, value);
            self.delivery = Some(arrives);
        }
        self
    }

    /// Makes the call; ends within its budget, whatever the service does. Counted in the
    /// metrics when it ends (a call that outlives its push is counted too).
    pub async fn run(self) -> CallResult {
        let started = Instant::now();
        let Pending {
            client,
            request,
            budget,
            metrics,
            delivery,
            _permit,
        } = self;
        let answered = async move {
            match exchange(&client, request, delivery.is_some()).await? {
                Exchanged::Answered(answered) => Ok(answered),
                Exchanged::Accepted => match delivery {
                    Some(delivery) => match delivery.arrived().await {
                        Some(value) => Answered::from_value(value),
                        None => Err(CallFailure::Network(
                            "the call's delivery URL was let go".into(),
                        )),
                    },
                    None => Err(CallFailure::Status(202)),
                },
            }
        };
        let result = match tokio::time::timeout(budget, answered).await {
            Ok(Ok(answered)) => CallResult::Answered(answered),
            Ok(Err(failure)) => CallResult::Failed(failure),
            Err(_) => CallResult::Failed(CallFailure::Timeout(budget)),
        };
        let took = started.elapsed();
        if let Some((m, rule)) = &metrics {
            let outcome = match &result {
                CallResult::Answered(_) => "ok",
                CallResult::Failed(failure) => failure.outcome(),
            };
            m.observe(rule, outcome, took);
        }
        result
    }
}

/// What the service said: its answer, or (given a delivery URL) that it will deliver it.
enum Exchanged {
    Answered(Answered),
    Accepted,
}

/// Sends the request and reads the answer: 2xx, at most `MAX_ANSWER` bytes, a JSON object;
/// or `202 Accepted` when the call has a delivery URL.
async fn exchange(
    client: &reqwest::Client,
    request: reqwest::Request,
    deliverable: bool,
) -> Result<Exchanged, CallFailure> {
    let mut response = client.execute(request).await.map_err(failure_of)?;
    let status = response.status();
    if status == reqwest::StatusCode::ACCEPTED && deliverable {
        return Ok(Exchanged::Accepted);
    }
    if !status.is_success() {
        return Err(CallFailure::Status(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_ANSWER as u64)
    {
        return Err(CallFailure::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failure_of)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(CallFailure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    // serde_json's messages name a line and column, never the text.
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| CallFailure::NotJson(e.to_string()))?;
    Answered::from_value(value).map(Exchanged::Answered)
}

/// A reqwest error as a failure, with its causes (reqwest's own text is generic: "error
/// sending request") and without its URL.
fn failure_of(e: reqwest::Error) -> CallFailure {
    let connect = e.is_connect();
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if connect {
        CallFailure::Connect(text)
    } else if timeout {
        CallFailure::Network(format!("timed out: {text}"))
    } else {
        CallFailure::Network(text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::Article;

    fn read(value: Value) -> Result<Option<Decided>, String> {
        Answered::from_value(value)
            .map(|a| a.decided)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_service_decides_with_reply_or_ignore_and_its_strings_are_kept() {
        assert_eq!(read(json!({"status": "shipped"})), Ok(None));
        assert_eq!(read(json!({"ignore": true})), Ok(Some(Decided::Ignore)));
        assert_eq!(read(json!({"ignore": false, "x": 1})), Ok(None));
        assert_eq!(
            read(json!({"reply": {"text": "a ]]> b {{FromUserName}}"}})),
            Ok(Some(Decided::Reply(Reply::Text {
                content: "a ]]> b {{FromUserName}}".into()
            })))
        );
        assert_eq!(
            read(json!({"reply": {"news": [{"title": "t", "url": "http://127.0.0.1/a"}]}})),
            Ok(Some(Decided::Reply(Reply::News {
                articles: vec![Article {
                    title: "t".into(),
                    description: String::new(),
                    pic_url: String::new(),
                    url: "http://127.0.0.1/a".into(),
                }]
            })))
        );
        assert_eq!(
            read(json!({"reply": {"one_of": [{"image": {"media_id": "M"}}]}})),
            Ok(Some(Decided::Reply(Reply::Image {
                media_id: "M".into()
            })))
        );
        assert_eq!(
            read(json!({"reply": {"transfer_customer_service": null}})),
            Ok(Some(Decided::Reply(Reply::TransferCustomerService {
                kf_account: None
            })))
        );
    }

    #[test]
    fn dot_segments_from_values_are_refused() {
        for url in [
            "http://h/orders/../admin",
            "http://h/orders/./x",
            "http://h/orders/%2e%2E",
            "http://h/orders/.%2e/x?q=1",
            "http://h/..",
        ] {
            assert!(refuse_dot_segments(url).is_err(), "{url}");
        }
        for url in [
            "http://h/orders/...",
            "http://h/orders/a.b",
            "http://h/orders/x?q=..",
            "http://h/orders/x#..",
            "http://h",
        ] {
            assert_eq!(refuse_dot_segments(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn a_bad_answer_names_what_is_wrong_and_where() {
        for (answer, says) in [
            (json!([1]), "the answer is not a JSON object: a JSON array, not an object"),
            (json!("x"), "the answer is not a JSON object: a JSON string, not an object"),
            (json!({"ignore": "yes"}), "the answer's `reply` is not a reply: `ignore` is true or false"),
            (json!({"reply": "hi"}), "the answer's `reply` is not a reply: `reply` is a string, not an object"),
            (json!({"reply": {}}), "the answer's `reply` is not a reply: `reply` takes exactly one of `text`, `image`, `voice`, `video`, `music`, `news`, `transfer_customer_service`, `one_of`; 0 given"),
            (json!({"reply": {"text": 5}}), "the answer's `reply` is not a reply: `reply.text` is a number, not a string"),
            (json!({"reply": {"image": {}}}), "the answer's `reply` is not a reply: `reply.image.media_id` is missing"),
            (json!({"reply": {"news": []}}), "the answer's `reply` is not a reply: `reply.news` has 1 to 8 articles, not 0"),
            (json!({"reply": {"news": [{"title": 1}]}}), "the answer's `reply` is not a reply: `reply.news[0].title` is a number, not a string"),
            (json!({"reply": {"gif": {}}}), "the answer's `reply` is not a reply: `reply` has a key that is not a reply kind (`text`, `image`, `voice`, `video`, `music`, `news`, `transfer_customer_service`, `one_of`)"),
            (json!({"reply": {"one_of": []}}), "the answer's `reply` is not a reply: `reply.one_of` needs at least one reply"),
        ] {
            assert_eq!(read(answer.clone()), Err(says.to_owned()), "{answer}");
        }
        let mut deep = json!({"text": "x"});
        for _ in 0..20 {
            deep = json!({"one_of": [deep]});
        }
        assert!(read(json!({"reply": deep}))
            .unwrap_err()
            .contains("nests `one_of` more than 8 deep"));
    }
}
