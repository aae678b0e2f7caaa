//! Refused requests: counted on their account's metrics (or the process's), and logged at
//! most `REFUSALS_PER_SECOND` times a second, so that unsigned requests sent as fast as the
//! network allows cannot flood the log.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use actix_web::HttpRequest;

use super::{AppState, ServiceError};
use crate::accounts::Live;
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
    REFUSALS.log(account.and_then(|a| a.account.log_name()), e);
    match account {
        Some(account) => account.metrics().observe_refused(refused_as(e)),
        None => state.metrics.observe_refused(refused_as(e)),
    }
}

/// Logs a refused URL check, within the rate limit (its metric is the account's).
pub(super) fn log_url_check(account: Option<&str>, e: &ServiceError) {
    REFUSALS.log_url_check(account, e);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
