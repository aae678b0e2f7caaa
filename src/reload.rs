//! The live rules and their reload. `Live` holds the serving `RuleSet` behind one
//! `ArcSwap`; `run` turns `Control::Reload` (SIGHUP in production, a channel send in tests)
//! into load + compile off the request path and a swap on success only.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rules::{self, LoadError, RuleSet, Sources};

/// What the control loop is asked to do.
#[derive(Debug)]
pub enum Control {
    /// Load the rules and templates again; swap them in if they are valid. The sender, if
    /// any, gets the report (`POST /-/reload` waits for it; SIGHUP and `--watch` do not).
    Reload(Option<tokio::sync::oneshot::Sender<ReloadReport>>),
    /// The same, on a server of several accounts, reported per account (`/-/reload`).
    ReloadAccounts(tokio::sync::oneshot::Sender<crate::accounts::fleet::FleetReport>),
    /// End the loop (the server is stopping).
    Stop,
}

/// A reload's outcome as `POST /-/reload` answers it: what changed, or every error as
/// `file:line:col: …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// `applied`, `rejected`, `timed_out`, `superseded`, `skipped` (an earlier reload is
    /// still stuck) or `failed` (the reload thread could not run or ended without one).
    pub outcome: &'static str,
    /// The rules serving after it, and their digest.
    pub rules: usize,
    pub digest: String,
    #[serde(flatten)]
    pub changes: Changes,
    pub errors: Vec<String>,
}

impl ReloadReport {
    pub(crate) fn new(
        live: &Live,
        outcome: &'static str,
        changes: Changes,
        errors: Vec<String>,
    ) -> Self {
        let snapshot = live.snapshot();
        ReloadReport {
            outcome,
            rules: snapshot.rules.rules().len(),
            digest: snapshot.rules.digest().to_owned(),
            changes,
            errors,
        }
    }

    /// The report of `outcome` on `live`.
    pub fn of(live: &Live, outcome: &ReloadOutcome) -> ReloadReport {
        match outcome {
            ReloadOutcome::Applied { changes, .. } => {
                ReloadReport::new(live, "applied", changes.clone(), Vec::new())
            }
            ReloadOutcome::Rejected(errors) => ReloadReport::new(
                live,
                "rejected",
                Changes::default(),
                errors.0.iter().map(ToString::to_string).collect(),
            ),
            ReloadOutcome::TimedOut { after } => ReloadReport::new(
                live,
                "timed_out",
                Changes::default(),
                vec![format!(
                    "the reload did not finish in {} s (a file that cannot be read?)",
                    after.as_secs()
                )],
            ),
            ReloadOutcome::Superseded => {
                ReloadReport::new(live, "superseded", Changes::default(), Vec::new())
            }
        }
    }

    /// Whether the new rules are live.
    pub fn applied(&self) -> bool {
        self.outcome == "applied"
    }
}

/// One version of the rules, as served.
#[derive(Debug)]
pub struct Snapshot {
    pub rules: RuleSet,
    /// Unix seconds when this version was loaded.
    pub loaded_at: u64,
}

/// How a reload went.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new rules are live.
    Applied {
        rules: usize,
        changes: Changes,
        /// The rules replaced. Requests in flight may still hold them; `run` frees them
        /// on its blocking thread once those are done (`release`), since freeing 100,000
        /// rules takes a tenth of a second that no request should wait.
        replaced: Arc<Snapshot>,
    },
    /// The files have errors; the old rules keep serving.
    Rejected(LoadError),
    /// The load did not finish in time (a hung file system): the old rules keep serving,
    /// and whatever the load gives if it ever finishes is thrown away.
    TimedOut { after: Duration },
    /// Thrown away: a newer reload is live, or this one had already timed out.
    Superseded,
}

/// Rule names added, removed and changed by a reload, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub templates_changed: bool,
}

impl Changes {
    fn between(old: &RuleSet, new: &RuleSet) -> Changes {
        let before: HashMap<&str, u64, foldhash::fast::RandomState> = old
            .rules()
            .iter()
            .map(|r| (r.name(), r.fingerprint()))
            .collect();
        let after: HashMap<&str, u64, foldhash::fast::RandomState> = new
            .rules()
            .iter()
            .map(|r| (r.name(), r.fingerprint()))
            .collect();
        let mut changes = Changes::default();
        for r in new.rules() {
            match before.get(r.name()) {
                None => changes.added.push(r.name().to_owned()),
                Some(&f) if f != r.fingerprint() => changes.changed.push(r.name().to_owned()),
                Some(_) => {}
            }
        }
        for r in old.rules() {
            if !after.contains_key(r.name()) {
                changes.removed.push(r.name().to_owned());
            }
        }
        changes.templates_changed = old.templates_digest() != new.templates_digest();
        changes
    }
}

/// The last reload, for `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// `applied` or `rejected`.
    pub outcome: &'static str,
    /// When, in unix seconds; shown as RFC 3339.
    #[serde(serialize_with = "rfc3339")]
    pub at: u64,
    /// How many errors the reload had.
    pub error_count: usize,
    /// The first `HEALTH_ERRORS` of them, as `file:line:col: …`.
    pub errors: Vec<String>,
}

/// `/healthz` lists this many of a rejected reload's errors (the log has them all): a file
/// with 50,000 broken rules must not make the health check megabytes long.
pub const HEALTH_ERRORS: usize = 20;

/// What `/healthz` shows.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub rules: usize,
    pub templates: usize,
    pub digest: String,
    /// When the serving rules were loaded, in unix seconds; shown as RFC 3339.
    #[serde(serialize_with = "rfc3339")]
    pub loaded_at: u64,
    pub last_reload: Option<LastReload>,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// Reloads reading files now; one that stays is stuck (it timed out, and is ignored).
    pub reloads_running: u64,
}

/// Unix seconds as an RFC 3339 time in UTC (`2026-11-30T06:02:43Z`).
pub(crate) fn rfc3339<S: serde::Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
    match format_rfc3339(*secs) {
        Some(at) => s.serialize_str(&at),
        None => s.serialize_u64(*secs),
    }
}

fn format_rfc3339(secs: u64) -> Option<String> {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// Unix seconds as an RFC 3339 string (the number, should it be out of range).
pub(crate) fn rfc3339_string(secs: u64) -> String {
    format_rfc3339(secs).unwrap_or_else(|| secs.to_string())
}

/// The rules being served, and where they come from.
pub struct Live {
    current: ArcSwap<Snapshot>,
    sources: Sources,
    clock: Arc<dyn Clock>,
    last: Mutex<Option<LastReload>>,
    applied: AtomicU64,
    rejected: AtomicU64,
    /// Customer-service messages can be sent (an AppSecret is configured).
    sending: std::sync::atomic::AtomicBool,
    /// Numbers each reload as it starts.
    started: AtomicU64,
    /// Loads running now: more than one, or one for long, is a load stuck on a file.
    running: AtomicU64,
    /// The number of the reload whose rules are live. Loads run unserialized (a load stuck
    /// on a hung file system must not hold up the next one); the swap happens under this
    /// lock, and only for a reload newer than the live one, so that the last one started
    /// wins and a late finisher never replaces newer rules.
    swapped: Mutex<u64>,
    metrics: Metrics,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("sources", &self.sources)
            .field("current", &self.current.load().rules)
            .finish()
    }
}

impl Live {
    pub fn new(sources: Sources, rules: RuleSet, clock: Arc<dyn Clock>) -> Live {
        Live::with_metrics(sources, rules, clock, Metrics::new())
    }

    /// `new`, counting into `metrics` (an account's of several).
    pub fn with_metrics(
        sources: Sources,
        rules: RuleSet,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Live {
        let loaded_at = clock.now();
        metrics.set_rules_loaded(rules.rules().len());
        Live {
            current: ArcSwap::from_pointee(Snapshot { rules, loaded_at }),
            sources,
            clock,
            last: Mutex::new(None),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            sending: std::sync::atomic::AtomicBool::new(false),
            started: AtomicU64::new(0),
            running: AtomicU64::new(0),
            swapped: Mutex::new(0),
            metrics,
        }
    }

    /// Says whether the server can send customer-service messages (`send:`).
    pub fn set_sending(&self, sending: bool) {
        self.sending.store(sending, Ordering::Relaxed);
    }

    pub fn sending(&self) -> bool {
        self.sending.load(Ordering::Relaxed)
    }

    /// The server's metrics; reloads are counted here.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The version to use for one whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Loads the files again and swaps the result in if it is valid. Blocking: call it off
    /// the request path. A rejected reload changes nothing that requests see.
    pub fn reload(&self) -> ReloadOutcome {
        self.reload_unless(&Verdict::default())
    }

    /// `reload`, but one whose `verdict` the control loop gave up on (it ran past its time
    /// and was reported as timed out) changes nothing, and says so.
    pub(crate) fn reload_unless(&self, verdict: &Verdict) -> ReloadOutcome {
        let loaded = {
            // Counted down however the load ends, a panic included.
            let _running = Running::enter(&self.running);
            let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            (number, load_settled(&self.sources))
        };
        let (number, loaded) = loaded;
        let now = self.clock.now();
        let outcome = match loaded {
            Ok(loaded) => {
                let mut swapped = self.swapped.lock();
                if !verdict.decide() || *swapped > number {
                    // Already reported as timed out, or a newer reload is live.
                    return ReloadOutcome::Superseded;
                }
                *swapped = number;
                let old = self.current.load_full();
                let changes = Changes::between(&old.rules, &loaded.rules);
                loaded.rules.carry_last_hits(&old.rules);
                let count = loaded.rules.rules().len();
                self.current.store(Arc::new(Snapshot {
                    rules: loaded.rules,
                    loaded_at: now,
                }));
                drop(swapped);
                self.applied.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Applied {
                    rules: count,
                    changes,
                    replaced: old,
                }
            }
            Err(_) if !verdict.decide() => return ReloadOutcome::Superseded,
            Err(errors) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Rejected(errors)
            }
        };
        self.record(&outcome, now);
        outcome
    }

    /// Keeps the outcome for `/healthz` and counts it.
    fn record(&self, outcome: &ReloadOutcome, now: u64) {
        let (name, errors) = match outcome {
            ReloadOutcome::Applied { .. } => ("applied", &[][..]),
            ReloadOutcome::Rejected(e) => ("rejected", &e.0[..]),
            ReloadOutcome::TimedOut { .. } => ("timed_out", &[][..]),
            ReloadOutcome::Superseded => return,
        };
        let mut listed: Vec<String> = errors
            .iter()
            .take(HEALTH_ERRORS)
            .map(ToString::to_string)
            .collect();
        if let ReloadOutcome::TimedOut { after } = outcome {
            listed.push(format!(
                "the reload did not finish within {} s (a file that cannot be read?); the previous rules keep serving",
                after.as_secs()
            ));
        }
        let last = LastReload {
            outcome: name,
            at: now,
            error_count: errors.len().max(listed.len()),
            errors: listed,
        };
        *self.last.lock() = Some(last);
        self.metrics.observe_reload(
            matches!(outcome, ReloadOutcome::Applied { .. }),
            self.current.load().rules.rules().len(),
        );
    }

    /// Reports a reload that ran past `after` as timed out, and abandons its load; `None`
    /// if the load reached its outcome first (it reports that itself).
    pub(crate) fn time_out(&self, verdict: &Verdict, after: Duration) -> Option<ReloadOutcome> {
        if !verdict.abandon() {
            return None;
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let outcome = ReloadOutcome::TimedOut { after };
        self.record(&outcome, self.clock.now());
        Some(outcome)
    }

    pub fn health(&self) -> Health {
        let snapshot = self.snapshot();
        Health {
            status: "ok",
            rules: snapshot.rules.rules().len(),
            templates: snapshot.rules.template_count(),
            digest: snapshot.rules.digest().to_owned(),
            loaded_at: snapshot.loaded_at,
            last_reload: self.last.lock().clone(),
            reloads_applied: self.applied.load(Ordering::Relaxed),
            reloads_rejected: self.rejected.load(Ordering::Relaxed),
            reloads_running: self.running.load(Ordering::Relaxed),
        }
    }
}

/// Loads the rules, again if the rules file changed while it was read: an editor that
/// truncates and rewrites in place can be caught half-way, and a half-written file may
/// still parse. A file that fails is read once more after a pause before it is rejected:
/// caught between the truncate and the write, it is empty (or cut short) with a size and
/// time that do not change while it is read, and a rejection would fire the alert for a
/// file that was fine a moment later.
fn load_settled(sources: &Sources) -> Result<rules::Loaded, LoadError> {
    let result = load_unchanged(sources);
    if result.is_ok() {
        return result;
    }
    std::thread::sleep(REREAD_AFTER);
    load_unchanged(sources)
}

/// How long a failed load waits before its second read.
const REREAD_AFTER: Duration = Duration::from_millis(100);

fn load_unchanged(sources: &Sources) -> Result<rules::Loaded, LoadError> {
    let stamp = || {
        std::fs::metadata(&sources.rules)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut attempts = 0;
    loop {
        let before = stamp();
        let result = rules::load(sources);
        attempts += 1;
        if stamp() == before || attempts == 4 {
            return result;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rules with `send:` on a server that cannot send: warned at start-up and after each
/// reload that applies; each such message is counted (`unsendable`) when it comes.
pub fn warn_unsendable(live: &Live) {
    if live.sending() {
        return;
    }
    let snapshot = live.snapshot();
    let rules: Vec<&str> = snapshot
        .rules
        .rules()
        .iter()
        .filter(|r| !r.send().is_empty())
        .map(|r| r.name())
        .collect();
    if !rules.is_empty() {
        tracing::warn!(
            event = "sends_unconfigured",
            rules = ?rules,
            "rules with `send:` need WXRULES_APPID and WXRULES_APPSECRET; their passive replies go out, their `send:` messages do not"
        );
    }
    let late: Vec<&str> = snapshot
        .rules
        .rules()
        .iter()
        .filter(|r| r.call().is_some_and(|c| c.late().is_some()))
        .map(|r| r.name())
        .collect();
    if !late.is_empty() {
        tracing::warn!(
            event = "late_replies_unconfigured",
            rules = ?late,
            "rules with `late:` need WXRULES_APPID and WXRULES_APPSECRET; a call that answers after `late.after` has its reply dropped"
        );
    }
}

/// Logs a reload's outcome with stable event names; `account` (several accounts only) is
/// a field of each line.
pub fn log_outcome(live: &Live, outcome: &ReloadOutcome, account: Option<&str>) {
    let path = live.sources().rules.display().to_string();
    match outcome {
        ReloadOutcome::Applied { rules, changes, .. } => {
            warn_unsendable(live);
            tracing::info!(
            event = "rules_reloaded",
            account,
            rules,
            path,
            digest = live.snapshot().rules.digest(),
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            templates_changed = changes.templates_changed,
            );
        }
        ReloadOutcome::Rejected(errors) => {
            for e in &errors.0 {
                tracing::error!(event = "rules_reload_rejected", account, path, error = %e);
            }
            tracing::error!(
                event = "rules_reload_rejected",
                account,
                path,
                errors = errors.0.len(),
                "reload rejected; the previous rules keep serving"
            );
        }
        ReloadOutcome::TimedOut { after } => tracing::error!(
            event = "rules_reload_timed_out",
            account,
            path,
            seconds = after.as_secs(),
            "the reload did not finish in time (a file that cannot be read?); the previous rules keep serving"
        ),
        ReloadOutcome::Superseded => {
            tracing::info!(event = "rules_reload_superseded", account, path, "a late reload's result was thrown away");
        }
    }
}

/// How long `release` waits for requests to let go of replaced rules: past the request
/// deadline (3 s), with room.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Frees replaced rules on this (blocking) thread: waits, for `RELEASE_WAIT` at most, for the
/// requests still using them to finish, so that the last of them, on a worker, does not pay
/// for freeing them.
fn release(replaced: Arc<Snapshot>) {
    let until = std::time::Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(&replaced) > 1 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(replaced);
}

/// One load in `Live::running` while it lives.
struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    fn enter(count: &'a AtomicU64) -> Running<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Running(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which side has the last word on one reload: the load, when it reaches its outcome, or
/// the control loop, when it gives up waiting. Whichever comes first wins; the other then
/// reports nothing, so a reload is never both applied and timed out.
#[derive(Debug, Default)]
pub(crate) struct Verdict(AtomicU8);

impl Verdict {
    const OPEN: u8 = 0;
    const DECIDED: u8 = 1;
    const ABANDONED: u8 = 2;

    /// The load reached its outcome; false if it was abandoned first.
    fn decide(&self) -> bool {
        self.settle(Self::DECIDED)
    }

    /// The loop gives up waiting; false if the load decided first.
    fn abandon(&self) -> bool {
        self.settle(Self::ABANDONED)
    }

    fn settle(&self, to: u8) -> bool {
        self.0
            .compare_exchange(Self::OPEN, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// How long a reload may take before it is reported as timed out. Loading 100,000 rules
/// takes under a second; only a file system that hangs gets near this.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The control loop: each `Reload` loads on a thread of its own and swaps on success;
/// reloads requested while one runs are coalesced into one more. Ends on `Stop` or when
/// every sender is gone.
///
/// The load runs on a plain detached thread, not tokio's blocking pool: a load stuck in a
/// read that never returns (a hung NFS mount) is reported after `timeout` and abandoned,
/// and cannot keep the process from exiting, where the runtime would wait for its
/// blocking pool forever at shutdown.
pub async fn run(live: Arc<Live>, mut controls: mpsc::Receiver<Control>, timeout: Duration) {
    while let Some(burst) = next_burst(&mut controls).await {
        let report = reload_once(&live, timeout).await;
        for reply in burst.waiting {
            let _ = reply.send(report.clone());
        }
        // Only a server of several accounts is asked for a fleet's report; its loop is
        // `accounts::fleet::run`. (Dropped, the caller hears that no report comes.)
        drop(burst.accounts_waiting);
        if burst.stop {
            break;
        }
    }
}

/// Controls that came together: one reload answers them all.
pub(crate) struct Burst {
    /// Callers waiting for a reload's report.
    pub(crate) waiting: Vec<oneshot::Sender<ReloadReport>>,
    /// Callers waiting for a fleet reload's report.
    pub(crate) accounts_waiting: Vec<oneshot::Sender<crate::accounts::fleet::FleetReport>>,
    /// A stop came with them: the loop ends after this reload.
    pub(crate) stop: bool,
}

/// Waits for the next control, then takes every one queued behind it: several SIGHUPs in a
/// burst need one load of the newest files, not one each, and each caller waiting for an
/// answer gets that load's. `None` once the channel closes or a stop comes first.
pub(crate) async fn next_burst(controls: &mut mpsc::Receiver<Control>) -> Option<Burst> {
    let mut burst = Burst {
        waiting: Vec::new(),
        accounts_waiting: Vec::new(),
        stop: false,
    };
    let take = |control: Control, burst: &mut Burst| match control {
        Control::Stop => burst.stop = true,
        Control::Reload(reply) => burst.waiting.extend(reply),
        Control::ReloadAccounts(reply) => burst.accounts_waiting.push(reply),
    };
    take(controls.recv().await?, &mut burst);
    if burst.stop {
        return None;
    }
    while let Ok(next) = controls.try_recv() {
        take(next, &mut burst);
    }
    Some(burst)
}

/// One reload on a thread of its own, awaited for `timeout` at most; its report.
async fn reload_once(live: &Arc<Live>, timeout: Duration) -> ReloadReport {
    let failed = |why: String| ReloadReport::new(live, "failed", Changes::default(), vec![why]);
    // A load abandoned earlier is still stuck in a read: another would only get stuck
    // behind it (and one thread per SIGHUP would pile up). Say so, and wait for it.
    if live.running.load(Ordering::SeqCst) > 0 {
        tracing::error!(
            event = "rules_reload_skipped",
            "an earlier reload is still stuck reading files; not starting another"
        );
        return ReloadReport::new(
            live,
            "skipped",
            Changes::default(),
            vec!["an earlier reload is still stuck reading files".into()],
        );
    }
    let worker = Arc::clone(live);
    let verdict = Arc::new(Verdict::default());
    let (done, finished) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("wxrules-reload".into())
        .spawn({
            let verdict = Arc::clone(&verdict);
            move || {
                let outcome = worker.reload_unless(&verdict);
                log_outcome(&worker, &outcome, None);
                // Nobody waits any more if it timed out; the outcome is logged anyway.
                let _ = done.send(ReloadReport::of(&worker, &outcome));
                if let ReloadOutcome::Applied { replaced, .. } = outcome {
                    release(replaced);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(event = "rules_reload_failed", error = %e);
        return failed(format!("the reload thread could not start: {e}"));
    }
    match tokio::time::timeout(timeout, finished).await {
        Ok(Ok(report)) => report,
        // The thread ended without saying how: it panicked.
        Ok(Err(_)) => {
            tracing::error!(
                event = "rules_reload_failed",
                "the reload ended without an outcome; the previous rules keep serving"
            );
            failed("the reload ended without an outcome".into())
        }
        Err(_) => match live.time_out(&verdict, timeout) {
            Some(outcome) => {
                log_outcome(live, &outcome, None);
                ReloadReport::of(live, &outcome)
            }
            // It finished in the same instant: what it said was logged by its thread.
            None => ReloadReport::new(live, "superseded", Changes::default(), Vec::new()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    /// A scratch rules file of `n` rules, and its loaded set.
    fn scratch(tag: &str, n: usize) -> (std::path::PathBuf, Sources) {
        let dir = std::env::temp_dir().join(format!("wxrules-reload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let mut yaml = String::from("rules:\n");
        for i in 0..n {
            yaml.push_str(&format!(
                "  - name: r{i}\n    when: {{ keyword: k{i} }}\n    reply: {{ text: \"{i}\" }}\n"
            ));
        }
        std::fs::write(dir.join("rules.yaml"), yaml).unwrap();
        let sources = Sources {
            rules: dir.join("rules.yaml"),
            templates: dir.join("templates"),
        };
        (dir, sources)
    }

    /// A reload that outlives its timeout is reported as timed out, keeps the old rules,
    /// and is thrown away when it finishes; the next reload applies as usual.
    #[tokio::test]
    async fn a_reload_past_its_timeout_is_abandoned_and_the_next_one_applies() {
        let (dir, sources) = scratch("timeout", 3);
        let loaded = rules::load(&sources).unwrap();
        let live = Arc::new(Live::new(
            sources.clone(),
            loaded.rules,
            Arc::new(FixedClock(1)),
        ));
        let before = live.snapshot().rules.digest().to_owned();
        // 20,000 rules take far longer than a millisecond to load.
        let (_, bigger) = scratch("timeout", 20_000);
        assert_eq!(bigger, sources);

        let (controls, receiver) = mpsc::channel(4);
        controls.send(Control::Reload(None)).await.unwrap();
        controls.send(Control::Stop).await.unwrap();
        run(Arc::clone(&live), receiver, Duration::from_millis(1)).await;
        let health = live.health();
        let last = health.last_reload.unwrap();
        assert_eq!(last.outcome, "timed_out");
        assert!(
            last.errors[0].contains("did not finish within"),
            "{:?}",
            last.errors
        );
        assert_eq!(health.reloads_rejected, 1);
        assert_eq!(live.snapshot().rules.digest(), before);

        // The abandoned load finishes on its own thread and changes nothing.
        let waited = std::time::Instant::now();
        while live.started.load(Ordering::SeqCst) == 0 && waited.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        while live.health().reloads_running > 0 && waited.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(live.health().reloads_running, 0);
        assert_eq!(live.snapshot().rules.digest(), before);
        assert_eq!(live.health().reloads_applied, 0);
        assert_eq!(live.health().last_reload.unwrap().outcome, "timed_out");

        let (controls, receiver) = mpsc::channel(4);
        controls.send(Control::Reload(None)).await.unwrap();
        controls.send(Control::Stop).await.unwrap();
        run(Arc::clone(&live), receiver, RELOAD_TIMEOUT).await;
        assert_eq!(live.health().last_reload.unwrap().outcome, "applied");
        assert_eq!(live.snapshot().rules.rules().len(), 20_000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn health_lists_the_first_errors_and_counts_them_all() {
        let (dir, sources) = scratch("many-errors", 1);
        let loaded = rules::load(&sources).unwrap();
        let live = Live::new(sources.clone(), loaded.rules, Arc::new(FixedClock(1)));
        let mut yaml = String::from("rules:\n");
        for i in 0..500 {
            yaml.push_str(&format!(
                "  - name: r{i}\n    when: {{ keyword: k }}\n    ignroe: true\n"
            ));
        }
        std::fs::write(&sources.rules, yaml).unwrap();
        assert!(matches!(live.reload(), ReloadOutcome::Rejected(e) if e.0.len() == 500));
        let last = live.health().last_reload.unwrap();
        assert_eq!(last.error_count, 500);
        assert_eq!(last.errors.len(), HEALTH_ERRORS);
        let _ = std::fs::remove_dir_all(dir);
    }
}
