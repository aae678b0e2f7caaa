//! The handlers: URL check, message push, health. Thin: extract, call the library, map the
//! error. A request takes one rules snapshot and keeps it to the end.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use rand::distributions::{Alphanumeric, DistString};

use super::{body, AppState, ServiceError};
use crate::accounts::Account;
use crate::answer::{after_call, decide_found, holding, Decision, Outcome};
use crate::call::{CallFailure, CallResult};
use crate::crypto::{sign, verify_signature, SignatureError};
use crate::dedup::{Answer, Claim, Key};
use crate::metrics::RequestOutcome;
use crate::outbox::Outbox;
use crate::reload::Snapshot;
use crate::render;
use crate::rules::Match;
use crate::wechat_api::CustomMessage;
use crate::wire::{self, Message};

/// The query WeChat appends to the server URL; the values borrow from it unless they
/// are percent-encoded. Other parameters (`openid`, …) are ignored.
#[derive(Debug, Default)]
pub(crate) struct WechatQuery<'a> {
    signature: Option<Cow<'a, str>>,
    timestamp: Option<Cow<'a, str>>,
    nonce: Option<Cow<'a, str>>,
    echostr: Option<Cow<'a, str>>,
    encrypt_type: Option<Cow<'a, str>>,
    msg_signature: Option<Cow<'a, str>>,
}

impl<'a> WechatQuery<'a> {
    /// Reads a query string (`application/x-www-form-urlencoded`); a parameter given twice
    /// is refused, since which one was signed cannot be told.
    pub(crate) fn parse(query: &'a str) -> Result<WechatQuery<'a>, ServiceError> {
        let mut q = WechatQuery::default();
        for (key, value) in query_pairs(query) {
            let slot = match key.as_ref() {
                "signature" => &mut q.signature,
                "timestamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                "echostr" => &mut q.echostr,
                "encrypt_type" => &mut q.encrypt_type,
                "msg_signature" => &mut q.msg_signature,
                _ => continue,
            };
            if slot.is_some() {
                return Err(ServiceError::Query(format!(
                    "parameter `{}` given more than once",
                    key.chars().take(20).collect::<String>()
                )));
            }
            *slot = Some(value);
        }
        Ok(q)
    }
}

/// The query's `(name, value)` pairs, decoded as `application/x-www-form-urlencoded`.
/// WeChat's query has nothing to decode (hex, digits, letters), and such a query is split
/// in place; one with `%` or `+` goes through `form_urlencoded`.
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let plain = memchr::memchr2(b'%', b'+', query.as_bytes()).is_none();
    let split = plain.then(|| {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(key), Cow::Borrowed(value))
            })
    });
    let decoded = (!plain).then(|| form_urlencoded::parse(query.as_bytes()));
    split
        .into_iter()
        .flatten()
        .chain(decoded.into_iter().flatten())
}

fn required<'a>(
    v: &'a Option<Cow<'_, str>>,
    name: &'static str,
) -> Result<&'a str, SignatureError> {
    v.as_deref().ok_or(SignatureError::Missing(name))
}

impl AppState {
    /// Checks `signature` over (token, timestamp, nonce) and the replay window.
    fn verify_plain(&self, account: &Account, q: &WechatQuery) -> Result<(), ServiceError> {
        let timestamp = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        let signature = required(&q.signature, "signature")?;
        verify_signature(signature, &[account.secrets.token(), timestamp, nonce])?;
        self.check_fresh(timestamp)
    }

    fn check_fresh(&self, timestamp: &str) -> Result<(), ServiceError> {
        let max_age = self.options.max_age;
        if max_age == 0 {
            return Ok(());
        }
        let stale = || ServiceError::Stale(timestamp.chars().take(20).collect());
        let sent: u64 = timestamp.parse().map_err(|_| stale())?;
        if self.clock.now().abs_diff(sent) > max_age {
            return Err(stale());
        }
        Ok(())
    }
}

/// `GET /wechat` (or an account's path): the URL check of the MP console; answers
/// `echostr` when signed with the account's token.
pub(crate) async fn verify_url(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ServiceError> {
    let account = state
        .accounts
        .route(req.match_info().as_str())
        .filter(|_| req.method() == actix_web::http::Method::GET);
    let Some(account) = account else {
        count_unrouted(&state, &req);
        return Ok(HttpResponse::NotFound().finish());
    };
    let checked = WechatQuery::parse(req.query_string()).and_then(|query| {
        state.verify_plain(&account, &query)?;
        Ok(query.echostr.map(Cow::into_owned).unwrap_or_default())
    });
    let echostr = match checked {
        Ok(echostr) => echostr,
        Err(e) => {
            account.live.metrics().observe_url_check(false);
            REFUSALS.log_url_check(account.log_name(), &e);
            return Err(e);
        }
    };
    account.live.metrics().observe_url_check(true);
    tracing::info!(event = "url_check_passed", account = account.log_name());
    Ok(HttpResponse::Ok().content_type(PLAIN_TEXT).body(echostr))
}

/// Counts and logs (within the rate limit) a request to a path no account serves: a
/// server URL mistyped in an MP console shows here.
fn count_unrouted(state: &AppState, req: &HttpRequest) {
    state.metrics.observe_unrouted();
    if let Some(suppressed) = REFUSALS.admit() {
        let path: String = req.path().chars().take(80).collect();
        tracing::warn!(
            event = "request_unrouted",
            path,
            suppressed,
            "no account is served at this path"
        );
    }
}

/// Counts a refused request (on its account's metrics when it has one), and logs it
/// within the rate limit.
pub(crate) fn count_refused(state: &AppState, account: Option<&Account>, e: &ServiceError) {
    REFUSALS.log(account.and_then(Account::log_name), e);
    match account {
        Some(account) => account.live.metrics().observe_refused(refused_as(e)),
        None => state.metrics.observe_refused(refused_as(e)),
    }
}

/// How a refused request is counted.
fn refused_as(e: &ServiceError) -> RequestOutcome {
    match e {
        ServiceError::Signature(_) | ServiceError::Stale(_) => RequestOutcome::BadSignature,
        ServiceError::BodyTimeout => RequestOutcome::Timeout,
        _ => RequestOutcome::BadRequest,
    }
}

/// The log lines of refused requests, rate-limited: anyone can send unsigned requests, as
/// fast as the network allows, and one line each would let them flood the log (and stall
/// valid pushes behind a slow log sink). The metrics count every refusal.
static REFUSALS: RefusalLog = RefusalLog::new();

/// Refused requests logged per second, at most; the first line after a quiet spell says
/// how many were left out.
const REFUSALS_PER_SECOND: u32 = 20;

struct RefusalLog {
    /// The second (since the Unix epoch) that `logged` counts.
    second: AtomicU64,
    logged: AtomicU32,
    suppressed: AtomicU64,
}

impl RefusalLog {
    const fn new() -> RefusalLog {
        RefusalLog {
            second: AtomicU64::new(0),
            logged: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this refusal gets a line, and if so how many were left out before it. Races
    /// between threads at a second's turn may let a few more lines through; none is lost
    /// from the count.
    fn admit(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let second = self.second.load(Ordering::Relaxed);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.logged.store(0, Ordering::Relaxed);
        }
        if self.logged.fetch_add(1, Ordering::Relaxed) < REFUSALS_PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn log(&self, account: Option<&str>, e: &ServiceError) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(event = "request_refused", account, kind = e.kind(), reason = %e, suppressed);
        }
    }

    fn log_url_check(&self, account: Option<&str>, e: &ServiceError) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(event = "url_check_refused", account, reason = %e, suppressed);
        }
    }
}

/// The content types of answers: a reply, or `success`.
const XML: &str = "text/xml";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// Whether the query's `signature` (and timestamp) was checked before the body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryCheck {
    Done,
    /// A safe-mode push without `signature`: only `msg_signature`, over the body, can tell.
    Pending,
}

/// How the request came, and so how the answer goes back.
enum Mode {
    Plain,
    Safe,
}

/// `POST /wechat`: verify, decrypt if needed, parse, dedup, answer.
pub(crate) async fn receive(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let started = Instant::now();
    // The account is the path's: `/wechat` alone without `--config`, `/wechat/NAME` (or
    // the account's own `path`) with. A path no account serves is 404, its body unread.
    // The path as routed (percent-decoded as actix decodes it for matching).
    let Some(account) = state.accounts.route(req.match_info().as_str()) else {
        count_unrouted(&state, &req);
        return Ok(body::refuse_unread(&ServiceError::NoAccount, &req, payload));
    };
    let account = &*account;
    let metrics = account.live.metrics();
    // The query's signature is checked before the body is read whenever the query has one
    // (always in plaintext mode; WeChat adds it in safe mode too): a client that cannot
    // sign is answered 403 at once, and cannot hold the connection by sending its body
    // slowly. Safe mode's `msg_signature` covers the body, so is checked after it.
    let checked = WechatQuery::parse(req.query_string()).and_then(|query| {
        let checked = if query.signature.is_some() || query.encrypt_type.as_deref() != Some("aes") {
            state.verify_plain(account, &query)?;
            QueryCheck::Done
        } else {
            QueryCheck::Pending
        };
        Ok((query, checked))
    });
    let (query, checked) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            count_refused(&state, Some(account), &e);
            return Ok(body::refuse_unread(&e, &req, payload));
        }
    };
    let mut payload = payload;
    let body = match body::read(&state, &req, &mut payload, started).await {
        Ok(body) => body,
        Err(e) => {
            // Over the size limit (413), too slow (408), or a broken upload (400).
            count_refused(&state, Some(account), &e);
            return Ok(body::refuse_unread(&e, &req, payload));
        }
    };
    let decoded = decode(&state, account, &query, checked, &body);
    let (message, mode) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            count_refused(&state, Some(account), &e);
            return Err(e.into());
        }
    };

    // A WeChat retry of a push already answered gets that answer again, and one arriving
    // while the first attempt is still being answered waits for it. The wait (and a slow
    // Redis) is bounded by the deadline, so the answer still leaves within WeChat's 5 s.
    let deadline = tokio::time::Instant::from_std(started + state.options.deadline);
    let key = Key::for_message_in(account.scope(), &message);
    let ticket = match tokio::time::timeout_at(deadline, state.dedup.claim(&key)).await {
        Ok(Claim::First(ticket)) => ticket,
        Ok(Claim::Answered { answer, store }) => {
            let elapsed = started.elapsed();
            metrics.observe_request(RequestOutcome::Retry, None, elapsed.as_secs_f64());
            if let Some(recent) = &state.recent {
                let rule = answer.rule.as_ref();
                recent.record(
                    account.shared_name(),
                    &message,
                    rule,
                    "retry",
                    state.clock.now(),
                    micros(elapsed),
                );
            }
            tracing::info!(
                event = "retry_answered",
                account = account.log_name(),
                store = store.as_str(),
                rule = answer.rule.as_deref().unwrap_or(""),
                msg_type = message.msg_type(),
                wx_event = message.event().unwrap_or(""),
                msg_id = message.msg_id().unwrap_or(""),
                us = micros(elapsed)
            );
            return Ok(HttpResponse::Ok()
                .content_type(&*answer.content_type)
                .body(answer.body.clone()));
        }
        Err(_) => {
            let elapsed = started.elapsed();
            metrics.observe_request(RequestOutcome::Deadline, None, elapsed.as_secs_f64());
            if let Some(recent) = &state.recent {
                recent.record(
                    account.shared_name(),
                    &message,
                    None,
                    "deadline",
                    state.clock.now(),
                    micros(elapsed),
                );
            }
            tracing::warn!(
                event = "deadline_exceeded",
                account = account.log_name(),
                stage = "dedup",
                msg_type = message.msg_type(),
                msg_id = message.msg_id().unwrap_or(""),
                us = micros(elapsed),
                "an earlier attempt at this push did not answer in time; answering `success`"
            );
            return Ok(HttpResponse::Ok().content_type(PLAIN_TEXT).body("success"));
        }
    };

    // One snapshot for the whole request: a reload landing now cannot mix two rule sets.
    let snapshot = account.live.snapshot();
    let now = state.clock.now();
    let found = find_unless_cooling(&state, account, &snapshot.rules, &message).await;
    let found_at = found.as_ref().map(|m| m.index);
    // A rule with a cooldown claimed it when it was found; it keeps the claim if it answers.
    let claimed = found
        .as_ref()
        .filter(|m| m.rule.cooldown().is_some())
        .map(|m| {
            let late = m.rule.call().is_some_and(|c| c.late().is_some());
            (m.rule.shared_name(), late)
        });
    let mut outcome = match decide_found(&snapshot.rules, &message, found, now) {
        Decision::Done(outcome) => outcome,
        // Boxed: the call's state (request, task handle) would otherwise be part of every
        // push's future, making it several hundred bytes larger for rules that never call.
        Decision::Call(found) => {
            Box::pin(ask_service(
                &state, account, &snapshot, &message, found, now, started, deadline,
            ))
            .await
        }
    };
    if let Outcome::Replied { rule, sends, .. } = &mut outcome {
        if !sends.is_empty() {
            queue_sends(&account.outbox, rule, &message, std::mem::take(sends)).await;
        }
    }
    // A rule that claimed its cooldown and did not answer gives it back; one whose late
    // call may still answer through the outbox keeps it.
    if let Some((rule, late)) = claimed {
        if !late && !matches!(outcome, Outcome::Replied { .. }) {
            state
                .cooldowns
                .release(
                    &cooldown_account(account, &message),
                    &rule,
                    message.from_user(),
                )
                .await;
        }
    }

    let body = match (&mut outcome, mode) {
        (Outcome::Replied { xml, .. }, Mode::Safe) => encrypt_reply(account, xml, now),
        // The XML is not needed past this point: move it rather than copy it.
        (Outcome::Replied { xml, .. }, Mode::Plain) => std::mem::take(xml),
        _ => "success".to_owned(),
    };
    let (counted, content_type) = match outcome {
        Outcome::Replied { .. } => (RequestOutcome::Replied, XML),
        Outcome::Ignored { .. } => (RequestOutcome::Ignored, PLAIN_TEXT),
        Outcome::Failed { .. } => (RequestOutcome::Error, PLAIN_TEXT),
    };
    // The exact bytes are stored, encrypted ones in safe mode: a retry gets this very body.
    let stored = Arc::new(Answer {
        content_type: content_type.into(),
        body: body.into(),
        rule: outcome.shared_rule().cloned(),
    });
    // A late call's holding reply comes at `late.after`, which may be past the deadline:
    // its copy for retries still gets the time of one store (Redis included).
    let store_by = deadline.max(tokio::time::Instant::now() + STORE_AT_LEAST);
    if tokio::time::timeout_at(store_by, ticket.complete(Arc::clone(&stored)))
        .await
        .is_err()
    {
        // The answer is ready: send it; only its copy for retries is missing.
        tracing::warn!(
            event = "deadline_exceeded",
            account = account.log_name(),
            stage = "dedup_store",
            msg_id = message.msg_id().unwrap_or("")
        );
    }
    let elapsed = started.elapsed();
    metrics.observe_request(counted, outcome.rule(), elapsed.as_secs_f64());
    if let Some(recent) = &state.recent {
        let shown = match &outcome {
            Outcome::Replied { .. } => "replied",
            Outcome::Ignored { rule: Some(_) } => "ignored",
            Outcome::Ignored { rule: None } => "no_match",
            Outcome::Failed { .. } => "error",
        };
        if outcome.rule().is_some() {
            if let Some(rule) = found_at.and_then(|i| snapshot.rules.rules().get(i)) {
                rule.mark_hit(now);
            }
        }
        recent.record(
            account.shared_name(),
            &message,
            outcome.shared_rule(),
            shown,
            now,
            micros(elapsed),
        );
    }
    log_outcome(account, &message, &outcome, elapsed);
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .body(stored.body.clone()))
}

/// The least time an answer's copy for retries gets to be stored, deadline or not: one
/// Redis command's bound (250 ms) and some.
const STORE_AT_LEAST: Duration = Duration::from_millis(300);

/// Verifies the request and turns its body into a message.
fn decode(
    state: &AppState,
    account: &Account,
    q: &WechatQuery,
    checked: QueryCheck,
    body: &[u8],
) -> Result<(Message, Mode), ServiceError> {
    let verify_plain = || match checked {
        QueryCheck::Done => Ok(()),
        QueryCheck::Pending => state.verify_plain(account, q),
    };
    let safe = q.encrypt_type.as_deref() == Some("aes");
    let cipher = match (safe, account.secrets.cipher()) {
        (false, _) => None,
        (true, Some(cipher)) => Some(cipher),
        (true, None) => {
            // Compatible mode also carries the plain fields: answer those plainly rather
            // than lose the message; a safe-mode-only body cannot be read.
            verify_plain()?;
            return match Message::parse(body) {
                Ok(m) => {
                    tracing::warn!(event = "encrypted_without_key", "answering the plain fields of a compatible-mode push; set WXRULES_AES_KEY to answer encrypted");
                    Ok((m, Mode::Plain))
                }
                Err(_) => Err(ServiceError::NoKey),
            };
        }
    };
    let Some(cipher) = cipher else {
        verify_plain()?;
        return Ok((Message::parse(body)?, Mode::Plain));
    };
    let timestamp = required(&q.timestamp, "timestamp")?;
    let nonce = required(&q.nonce, "nonce")?;
    let msg_signature = required(&q.msg_signature, "msg_signature")?;
    // The signature first, over the `Encrypt` text found by a plain search: nothing of an
    // unsigned body is parsed, and so nothing of it reaches an error or the log.
    let signed = wire::find_encrypt(body);
    verify_signature(
        msg_signature,
        &[account.secrets.token(), timestamp, nonce, signed],
    )?;
    state.check_fresh(timestamp)?;
    let encrypt = wire::parse_encrypted(body)?;
    if encrypt != signed {
        return Err(wire::WireError::EncryptMismatch.into());
    }
    let inner = cipher.decrypt(&encrypt)?;
    let message = Message::parse(&inner)?;
    Ok((message, Mode::Safe))
}

/// The first rule for `message` that is not cooling down for its sender. Rules without a
/// `cooldown` cost one comparison; a rule with one, a lookup (in process, or one Redis
/// command).
async fn find_unless_cooling<'r>(
    state: &AppState,
    account: &Account,
    rules: &'r crate::rules::RuleSet,
    message: &Message,
) -> Option<Match<'r>> {
    let subject = crate::rules::Subject::at(message, state.clock.now());
    let mut skip = Vec::new();
    loop {
        let found = rules.find_skipping(&subject, &skip)?;
        let Some(cooldown) = found.rule.cooldown() else {
            return Some(found);
        };
        if state
            .cooldowns
            .try_claim(
                &cooldown_account(account, message),
                found.rule.name(),
                message.from_user(),
                cooldown.as_secs(),
            )
            .await
        {
            return Some(found);
        }
        skip.push(found.index);
    }
}

/// Whose cooldowns these are: the account's ToUserName, behind the account's name when
/// the server has several.
fn cooldown_account<'m>(account: &Account, message: &'m Message) -> Cow<'m, str> {
    match account.scope() {
        "" => Cow::Borrowed(message.to_user()),
        scope => Cow::Owned(format!("{scope}{}", message.to_user())),
    }
}

/// Asks `found`'s service and answers from what it says. Without `late` the push waits for
/// the call up to the deadline. With `late` it waits `late.after`; a call still running
/// then goes on in its own task, the push gets the holding reply, and the reply the call
/// leads to goes out through the outbox.
#[allow(clippy::too_many_arguments)]
async fn ask_service(
    state: &AppState,
    account: &Account,
    snapshot: &Arc<Snapshot>,
    message: &Message,
    found: Match<'_>,
    now: u64,
    started: Instant,
    deadline: tokio::time::Instant,
) -> Outcome {
    let rules = &snapshot.rules;
    let Some(call) = found.rule.call() else {
        return Outcome::Ignored { rule: None };
    };
    let rule = found.rule.shared_name();
    let scope = render::Scope {
        message,
        rule: &rule,
        captures: &found.captures,
        call: None,
    };
    let late = call.late();
    let budget = match late {
        Some(_) => call.timeout(),
        None => deadline.saturating_duration_since(tokio::time::Instant::now()),
    };
    let metrics = Some((account.live.metrics().call_metrics(), Arc::clone(&rule)));
    let pending = match state.caller.prepare(call, &scope, budget, metrics) {
        Ok(pending) => pending,
        Err(failure) => {
            let result = CallResult::Failed(failure);
            log_call(account.log_name(), &rule, message, &result, false);
            return after_call(rules, message, &found, &result, now);
        }
    };
    let Some(late) = late else {
        let result = pending.run().await;
        log_call(account.log_name(), &rule, message, &result, false);
        return after_call(rules, message, &found, &result, now);
    };
    // The call, and what follows it if it is late, run as one task on the server's main
    // thread (the system arbiter), which outlives the workers: at a stop, the server waits
    // for late calls a little (`LateCalls`) before the outbox drains. The push waits for
    // the result on `handed` until `late.after`; once it stops waiting the task knows the
    // call is late, and sends its reply itself.
    let (hand, mut handed) = tokio::sync::oneshot::channel::<CallResult>();
    let passive_by = tokio::time::Instant::from_std(started + late.after());
    let late_call = LateCall {
        outbox: Arc::clone(&account.outbox),
        snapshot: Arc::clone(snapshot),
        message: message.clone(),
        index: found.index,
        captures: found.captures.clone(),
        now,
        metrics: account.live.metrics().call_metrics(),
        rule: Arc::clone(&rule),
        account: account.log_name().map(Arc::from),
        _running: (state.late_calls.enter(), account.late_calls.enter()),
    };
    let task = async move {
        let started = Instant::now();
        let result = pending.uncounted().run().await;
        let took = started.elapsed();
        let on_time = late_call.label(&result, false);
        match hand.send(result) {
            Ok(()) => late_call.metrics.observe(&late_call.rule, on_time, took),
            Err(result) => {
                let late = late_call.label(&result, true);
                late_call.metrics.observe(&late_call.rule, late, took);
                late_call.finish(result).await;
            }
        }
    };
    actix_web::rt::System::current().arbiter().spawn(task);
    let result = match tokio::time::timeout_at(passive_by, &mut handed).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(_)) => Some(CallResult::Failed(CallFailure::Network(
            "the call was stopped (the server is stopping)".into(),
        ))),
        Err(_) => {
            // Closed first: a result sent from now on goes back to the task, which sends
            // it late; one that came in the same instant is still answered passively.
            handed.close();
            handed.try_recv().ok()
        }
    };
    match result {
        Some(result) => {
            log_call(account.log_name(), &rule, message, &result, false);
            after_call(rules, message, &found, &result, now)
        }
        None => {
            tracing::info!(
                event = "call_late",
                account = account.log_name(),
                rule = &*rule,
                msg_id = message.msg_id().unwrap_or(""),
                after_ms = u64::try_from(late.after().as_millis()).unwrap_or(u64::MAX),
                "the call has not answered: holding reply now, its reply through the customer-service API"
            );
            holding(rules, message, &found, now)
        }
    }
}

/// What a late call's task needs once the push has been answered without it.
struct LateCall {
    outbox: Arc<Outbox>,
    snapshot: Arc<Snapshot>,
    message: Message,
    index: usize,
    captures: crate::rules::Captures,
    now: u64,
    metrics: crate::call::CallMetrics,
    rule: Arc<str>,
    /// The account's name in log lines (`Account::log_name`).
    account: Option<Arc<str>>,
    /// Counted in `AppState::late_calls` and in its account's while the task lives.
    _running: (crate::call::Running, crate::call::Running),
}

impl LateCall {
    /// The call's outcome label: `late` when it answered after the push had its holding
    /// reply.
    fn label(&self, result: &CallResult, late: bool) -> &'static str {
        match result {
            CallResult::Answered(_) if late => "late",
            CallResult::Answered(_) => "ok",
            CallResult::Failed(failure) => failure.outcome(),
        }
    }

    /// Queues the reply the late call leads to (with the rule's `send:`), or its
    /// `on_error` when it failed; `success` outcomes send nothing.
    async fn finish(self, result: CallResult) {
        let LateCall {
            outbox,
            snapshot,
            message,
            index,
            captures,
            now,
            rule: name,
            account,
            ..
        } = self;
        let Some(rule) = snapshot.rules.rules().get(index) else {
            return;
        };
        log_call(account.as_deref(), &name, &message, &result, true);
        let found = Match {
            rule,
            index,
            captures,
        };
        match after_call(&snapshot.rules, &message, &found, &result, now) {
            Outcome::Replied { reply, sends, .. } => {
                let mut messages = Vec::with_capacity(1 + sends.len());
                messages.push(Ok(reply));
                messages.extend(sends);
                tracing::info!(
                    event = "late_reply_queued",
                    rule = &*name,
                    msg_id = message.msg_id().unwrap_or(""),
                    messages = messages.len()
                );
                queue_sends(&outbox, &name, &message, messages).await;
            }
            Outcome::Ignored { .. } => tracing::info!(
                event = "late_reply_none",
                rule = &*name,
                msg_id = message.msg_id().unwrap_or(""),
                "nothing to send: the service said to ignore, or the call failed and the rule has no `on_error`"
            ),
            Outcome::Failed { error, .. } => tracing::error!(
                event = "render_failed",
                rule = &*name,
                msg_id = message.msg_id().unwrap_or(""),
                late = true,
                %error
            ),
        }
    }
}

/// Logs a call that failed, with its rule and reason (never the service's answer).
fn log_call(account: Option<&str>, rule: &str, message: &Message, result: &CallResult, late: bool) {
    if let CallResult::Failed(failure) = result {
        tracing::warn!(
            event = "call_failed",
            account,
            rule,
            msg_id = message.msg_id().unwrap_or(""),
            outcome = failure.outcome(),
            late,
            reason = %failure
        );
    }
}

/// Queues a rule's rendered `send:` messages; what cannot be queued is logged (and counted
/// by the outbox). Never waits: the network is the outbox's business.
async fn queue_sends(
    outbox: &Outbox,
    rule: &Arc<str>,
    message: &Message,
    sends: Vec<Result<wire::Reply, crate::render::RenderError>>,
) {
    let mut messages = Vec::with_capacity(sends.len());
    for send in sends {
        let built = send.map_err(|e| e.to_string()).and_then(|reply| {
            CustomMessage::new(message.from_user(), reply).map_err(|e| e.to_string())
        });
        match built {
            Ok(m) => messages.push(m),
            Err(error) => tracing::error!(
                event = "send_render_failed",
                rule = &**rule,
                msg_id = message.msg_id().unwrap_or(""),
                %error
            ),
        }
    }
    let count = messages.len();
    if let Err(why) = outbox.enqueue(rule, messages).await {
        tracing::warn!(
            event = "outbox_refused",
            rule = &**rule,
            messages = count,
            msg_id = message.msg_id().unwrap_or(""),
            reason = %why
        );
    }
}

/// Encrypts a reply for safe mode with fresh random bytes, signed with a fresh nonce.
fn encrypt_reply(account: &Account, xml: &str, now: u64) -> String {
    let Some(cipher) = account.secrets.cipher() else {
        return "success".to_owned();
    };
    let encrypt = cipher.encrypt(xml.as_bytes());
    let nonce = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
    let signature = sign(&[account.secrets.token(), &now.to_string(), &nonce, &encrypt]);
    wire::write_encrypted(&encrypt, &signature, now, &nonce)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

fn log_outcome(account: &Account, message: &Message, outcome: &Outcome, elapsed: Duration) {
    let account = account.log_name();
    let micros = micros(elapsed);
    let msg_type = message.msg_type();
    let event = message.event().unwrap_or("");
    let msg_id = message.msg_id().unwrap_or("");
    let rule = outcome.rule().unwrap_or("");
    tracing::debug!(from_user = message.from_user(), msg_id, "message_received");
    match outcome {
        Outcome::Replied { reply, .. } => tracing::info!(
            event = "message_handled",
            account,
            outcome = "replied",
            rule,
            msg_type,
            wx_event = event,
            msg_id,
            reply = reply.msg_type(),
            us = micros
        ),
        Outcome::Ignored { .. } => tracing::info!(
            event = "message_handled",
            account,
            outcome = "ignored",
            rule,
            msg_type,
            wx_event = event,
            msg_id,
            us = micros
        ),
        Outcome::Failed { error, .. } => tracing::error!(
            event = "render_failed", account, outcome = "error", rule, msg_type, wx_event = event,
            msg_id, error = %error, us = micros
        ),
    }
}

/// `GET /metrics`: Prometheus text format. With several accounts, each series carries
/// `account="NAME"`, except the process's own (the dedup store, the log).
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (answers, bytes) = state.dedup.stored();
    state.metrics.set_dedup_stored(answers, bytes);
    let text = if state.accounts.is_many() {
        let table = state.accounts.table();
        crate::metrics::Metrics::render_accounts(
            &state.metrics,
            table.accounts().iter().map(|a| a.live.metrics()),
        )
    } else {
        state.metrics.render()
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// `GET /healthz`: which rules are live and how the last reload went; with several
/// accounts, that of each (`accounts.NAME`), and `status` `ok` only when every account's
/// last reload applied.
pub(crate) async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if !state.accounts.is_many() {
        return match state.account() {
            Some(account) => HttpResponse::Ok().json(account.live.health()),
            None => HttpResponse::ServiceUnavailable().finish(),
        };
    }
    HttpResponse::Ok().json(crate::accounts::fleet::health(&state.accounts))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Split in place or decoded, the pairs are those `form_urlencoded` reads.
        #[test]
        fn query_pairs_are_those_of_form_urlencoded(query in "[ab=&%+2Fé]{0,24}") {
            let ours: Vec<_> = query_pairs(&query).collect();
            let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn refusals_are_logged_twenty_a_second_and_the_rest_counted() {
        let log = RefusalLog::new();
        let admitted: Vec<Option<u64>> = (0..25).map(|_| log.admit()).collect();
        assert!(admitted[..20].iter().all(|a| *a == Some(0)), "{admitted:?}");
        assert!(admitted[20..].iter().all(Option::is_none), "{admitted:?}");
        // The next second's first line says how many were left out.
        log.second.store(0, Ordering::Relaxed);
        assert_eq!(log.admit(), Some(5));
        assert_eq!(log.admit(), Some(0));
    }

    #[test]
    fn wechat_query_is_read_in_place() {
        let q = WechatQuery::parse(
            "signature=0f9d&timestamp=1409304348&nonce=xxxxxx&openid=o1&encrypt_type=aes&msg_signature=ab",
        )
        .unwrap();
        assert!(matches!(q.signature, Some(Cow::Borrowed("0f9d"))));
        assert!(matches!(q.nonce, Some(Cow::Borrowed("xxxxxx"))));
        assert!(matches!(q.encrypt_type, Some(Cow::Borrowed("aes"))));
        assert!(q.echostr.is_none());
        let q = WechatQuery::parse("echostr=a%2Bb+c&nonce=").unwrap();
        assert_eq!(q.echostr.as_deref(), Some("a+b c"));
        assert_eq!(q.nonce.as_deref(), Some(""));
        assert!(WechatQuery::parse("nonce=1&nonce=2").is_err());
    }
}
