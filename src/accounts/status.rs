//! What an account keeps of its reloads, for `/healthz` and the dashboard: the last one's
//! outcome and first errors, counts of applied and refused ones, and the loads running now.
//! `ReloadOutcome` names every outcome a reload report uses, as they are written.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Live;

/// How a reload (of one account, or of them all) ended, as reports and `/healthz` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new files are live.
    Applied,
    /// The files have errors: the previous rules keep serving.
    Rejected,
    /// The load did not finish in time (a file that cannot be read?).
    TimedOut,
    /// Thrown away: a newer reload is live, or this one had already timed out.
    Superseded,
    /// Not started: an earlier reload is still stuck reading files.
    Skipped,
    /// The reload could not run, or ended without an outcome.
    Failed,
    /// An account the config file added (a fleet reload's line).
    Added,
    /// An account the config file no longer has.
    Removed,
    /// Of a fleet: nothing changed, so nothing was loaded again.
    Unchanged,
    /// Of a fleet: some accounts took their new files, others were refused.
    Partial,
}

impl ReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Rejected => "rejected",
            ReloadOutcome::TimedOut => "timed_out",
            ReloadOutcome::Superseded => "superseded",
            ReloadOutcome::Skipped => "skipped",
            ReloadOutcome::Failed => "failed",
            ReloadOutcome::Added => "added",
            ReloadOutcome::Removed => "removed",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Partial => "partial",
        }
    }
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last reload, for `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// `applied`, `rejected` or `timed_out`.
    pub outcome: ReloadOutcome,
    /// When, in unix seconds; shown as RFC 3339.
    #[serde(serialize_with = "crate::clock::rfc3339")]
    pub at: u64,
    /// How many errors the reload had.
    pub error_count: usize,
    /// The first `HEALTH_ERRORS` of them, as `file:line:col: …`.
    pub errors: Vec<String>,
}

/// `/healthz` lists this many of a rejected reload's errors (the log has them all): a file
/// with 50,000 broken rules must not make the health check megabytes long.
pub const HEALTH_ERRORS: usize = 20;

/// What `/healthz` shows of one account.
#[derive(Debug, Serialize)]
pub struct AccountHealth {
    pub status: &'static str,
    #[serde(flatten)]
    pub state: AccountState,
}

/// The rules an account serves and how its reloads went.
#[derive(Debug, Serialize)]
pub struct AccountState {
    pub rules: usize,
    pub templates: usize,
    pub digest: String,
    /// When the serving rules were loaded, in unix seconds; shown as RFC 3339.
    #[serde(serialize_with = "crate::clock::rfc3339")]
    pub loaded_at: u64,
    pub last_reload: Option<LastReload>,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// Reloads reading files now; one that stays is stuck (it timed out, and is ignored).
    pub reloads_running: u64,
}

/// The record of one account's reloads.
#[derive(Debug, Default)]
pub struct ReloadRecord {
    last: Mutex<Option<LastReload>>,
    applied: AtomicU64,
    rejected: AtomicU64,
    /// Loads running now: more than one, or one for long, is a load stuck on a file.
    running: AtomicU64,
}

impl ReloadRecord {
    /// Keeps the outcome of a reload that ended at `at` with `errors` (all of them,
    /// `count`; the first `HEALTH_ERRORS` are kept). Only applied, rejected and timed-out
    /// reloads are recorded.
    pub fn record(&self, outcome: ReloadOutcome, at: u64, count: usize, errors: Vec<String>) {
        match outcome {
            ReloadOutcome::Applied => self.applied.fetch_add(1, Ordering::Relaxed),
            ReloadOutcome::Rejected | ReloadOutcome::TimedOut => {
                self.rejected.fetch_add(1, Ordering::Relaxed)
            }
            _ => return,
        };
        let mut errors = errors;
        errors.truncate(HEALTH_ERRORS);
        *self.last.lock() = Some(LastReload {
            outcome,
            at,
            error_count: count.max(errors.len()),
            errors,
        });
    }

    /// The last reload's outcome, if there was one.
    pub fn last_outcome(&self) -> Option<ReloadOutcome> {
        self.last.lock().as_ref().map(|last| last.outcome)
    }

    /// One load in `running` while the returned guard lives (a panic included).
    pub fn enter(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(&self.running)
    }

    /// Loads running now.
    pub fn running(&self) -> u64 {
        self.running.load(Ordering::SeqCst)
    }

    /// `/healthz`'s view of `live`, whose record this is.
    pub fn state(&self, live: &Live) -> AccountState {
        AccountState {
            rules: live.rules.rules().len(),
            templates: live.rules.template_count(),
            digest: live.rules.digest().to_owned(),
            loaded_at: live.loaded_at,
            last_reload: self.last.lock().clone(),
            reloads_applied: self.applied.load(Ordering::Relaxed),
            reloads_rejected: self.rejected.load(Ordering::Relaxed),
            reloads_running: self.running(),
        }
    }
}

/// One load in `ReloadRecord::running` while it lives.
pub struct Running<'a>(&'a AtomicU64);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
