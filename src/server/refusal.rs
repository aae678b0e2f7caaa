//! Refused requests: counted on their account's metrics (or the process's), and logged at
//! most 20 times a second (`telemetry::limit`), so that unsigned requests sent as fast as
//! the network allows cannot flood the log. Messages the outbox refuses (full, stopping,
//! or no AppSecret) are logged under a limit of their own: a full outbox refuses every
//! push until it drains.

use actix_web::HttpRequest;

use super::{AppState, ServiceError};
use crate::accounts::Live;
use crate::telemetry::limit::{LogLimit, PER_SECOND};
use crate::telemetry::metrics::RequestOutcome;

/// Counts and logs (within the rate limit) a request to a path no account serves: a
/// server URL mistyped in an MP console shows here.
pub(super) fn count_unrouted(state: &AppState, req: &HttpRequest) {
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
pub(crate) fn count_refused(state: &AppState, account: Option<&Live>, e: &ServiceError) {
    if let Some(suppressed) = REFUSALS.admit() {
        let account = account.and_then(|a| a.account.log_name());
        tracing::warn!(event = "request_refused", account, kind = e.kind(), reason = %e, suppressed);
    }
    match account {
        Some(account) => account.metrics().observe_refused(refused_as(e)),
        None => state.metrics.observe_refused(refused_as(e)),
    }
}

/// Logs a refused URL check, within the rate limit (its metric is the account's).
pub(super) fn log_url_check(account: Option<&str>, e: &ServiceError) {
    if let Some(suppressed) = REFUSALS.admit() {
        tracing::warn!(event = "url_check_refused", account, reason = %e, suppressed);
    }
}

/// Logs a refused delivery of a slow call's answer (`server::deliver`), within the
/// refusals' rate limit.
pub(super) fn log_delivery_refused(account: Option<&str>, reason: &str) {
    if let Some(suppressed) = REFUSALS.admit() {
        tracing::warn!(event = "delivery_refused", account, reason, suppressed);
    }
}

/// Logs (within its own rate limit) the messages of a push the outbox refused; the outbox
/// counts every one. Before, a full outbox in process logged a line for each push: 379k
/// lines in 8 s.
pub(super) fn log_outbox_refused(
    account: Option<&str>,
    rule: &str,
    messages: usize,
    msg_id: Option<&str>,
    why: &crate::act::outbox::Refused,
) {
    if let Some(suppressed) = OUTBOX_REFUSALS.admit() {
        tracing::warn!(
            event = "outbox_refused",
            account,
            rule,
            messages,
            msg_id = msg_id.unwrap_or(""),
            reason = %why,
            suppressed
        );
    }
}

/// How a refused request is counted.
fn refused_as(e: &ServiceError) -> RequestOutcome {
    match e {
        ServiceError::Signature(_) | ServiceError::Stale(_) => RequestOutcome::BadSignature,
        ServiceError::Replayed => RequestOutcome::Replayed,
        ServiceError::BodyTimeout => RequestOutcome::Timeout,
        _ => RequestOutcome::BadRequest,
    }
}

/// The log lines of refused requests, rate-limited: anyone can send unsigned requests, as
/// fast as the network allows, and one line each would let them flood the log (and stall
/// valid pushes behind a slow log sink). The metrics count every refusal.
static REFUSALS: LogLimit = LogLimit::new(PER_SECOND);
/// The log lines of pushes whose messages the outbox refused, rate-limited likewise.
static OUTBOX_REFUSALS: LogLimit = LogLimit::new(PER_SECOND);
