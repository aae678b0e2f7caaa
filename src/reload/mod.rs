//! Reloads: one control loop for a fleet of any size. `Control::Reload` (SIGHUP,
//! `POST /-/reload`, `--watch`) becomes one reload of the accounts (`Fleet`), its blocking
//! part on a thread of its own, awaited for `RELOAD_TIMEOUT`; several controls in a burst
//! are one reload. Each account's reload is all-or-nothing and off the request path.

mod fleet;
mod report;
pub mod watch;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use fleet::{Fleet, Source, Unserved};
pub use report::{
    warn_unsendable, AccountReport, Changes, FleetReport, Health, ReloadReport, Reloaded, Served,
    Shown, UnservedHealth,
};

use crate::accounts::{Live, ReloadOutcome};
use crate::rules::{self, LoadError, Sources};

/// What the control loop is asked to do.
#[derive(Debug)]
pub enum Control {
    /// Load the accounts' files again; swap in each account's that are valid. The sender,
    /// if any, gets the report (`POST /-/reload` waits for it; SIGHUP and `--watch` do not).
    Reload(Option<oneshot::Sender<FleetReport>>),
    /// End the loop (the server is stopping).
    Stop,
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
pub async fn run(fleet: Arc<Fleet>, mut controls: mpsc::Receiver<Control>, timeout: Duration) {
    while let Some(burst) = next_burst(&mut controls).await {
        let report = reload_once(&fleet, timeout).await;
        if fleet.accounts.is_many() {
            tracing::info!(
                event = "accounts_reloaded",
                outcome = %report.outcome,
                changed = report.accounts.len(),
                unchanged = report.unchanged,
                config_errors = report.config_errors.len()
            );
        }
        *fleet.last.lock() = Some(report.clone());
        for reply in burst.waiting {
            let _ = reply.send(report.clone());
        }
        if burst.stop {
            break;
        }
    }
}

/// Controls that came together: one reload answers them all.
struct Burst {
    /// Callers waiting for the reload's report.
    waiting: Vec<oneshot::Sender<FleetReport>>,
    /// A stop came with them: the loop ends after this reload.
    stop: bool,
}

/// Waits for the next control, then takes every one queued behind it: several SIGHUPs in a
/// burst need one load of the newest files, not one each, and each caller waiting for an
/// answer gets that load's. `None` once the channel closes or a stop comes first.
async fn next_burst(controls: &mut mpsc::Receiver<Control>) -> Option<Burst> {
    let mut burst = Burst {
        waiting: Vec::new(),
        stop: false,
    };
    let take = |control: Control, burst: &mut Burst| match control {
        Control::Stop => burst.stop = true,
        Control::Reload(reply) => burst.waiting.extend(reply),
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

/// One reload of the accounts: its blocking part on a thread of its own, awaited for
/// `timeout` at most. The loop runs it for each burst of controls.
pub async fn reload_once(fleet: &Arc<Fleet>, timeout: Duration) -> FleetReport {
    // A load abandoned earlier is still stuck in a read: another would only get stuck
    // behind it (and one thread per SIGHUP would pile up). Say so, and wait for it.
    if fleet.running.swap(true, Ordering::SeqCst) {
        tracing::error!(
            event = "rules_reload_skipped",
            "an earlier reload is still stuck reading files; not starting another"
        );
        return FleetReport::not_run(
            ReloadOutcome::Skipped,
            "an earlier reload is still stuck reading files".into(),
        );
    }
    fleet.abandoned.store(false, Ordering::SeqCst);
    let worker = Arc::clone(fleet);
    let (done, finished) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("wxrules-reload".into())
        .spawn(move || {
            // Cleared however the plan ends, a panic included, and before the plan is
            // handed over: the next reload may come as soon as this one is answered.
            let mut plan = {
                let _running = Cleared(&worker.running);
                worker.plan()
            };
            let replaced = std::mem::take(&mut plan.replaced);
            // Nobody waits any more if it timed out; its accounts' outcomes are logged.
            let _ = done.send(plan);
            release(replaced);
        });
    if let Err(e) = spawned {
        fleet.running.store(false, Ordering::SeqCst);
        tracing::error!(event = "rules_reload_failed", error = %e);
        return FleetReport::not_run(
            ReloadOutcome::Failed,
            format!("the reload thread could not start: {e}"),
        );
    }
    match tokio::time::timeout(timeout, finished).await {
        Ok(Ok(plan)) => fleet.apply(plan),
        // The thread ended without saying how: it panicked.
        Ok(Err(_)) => {
            tracing::error!(
                event = "rules_reload_failed",
                "the reload ended without an outcome; the previous rules keep serving"
            );
            FleetReport::not_run(
                ReloadOutcome::Failed,
                "the reload ended without an outcome".into(),
            )
        }
        Err(_) => timed_out(fleet, timeout),
    }
}

/// A reload past `timeout`: the accounts it already reloaded stay reloaded (each
/// all-or-nothing, and logged); it loads no more, and accounts it prepared are not added.
/// The one it is stuck on is reported as timed out (its `/healthz` says so), and its load
/// changes nothing should it ever finish.
fn timed_out(fleet: &Fleet, timeout: Duration) -> FleetReport {
    fleet.abandoned.store(true, Ordering::SeqCst);
    let mut report = FleetReport::not_run(
        ReloadOutcome::Failed,
        format!(
            "the reload did not finish in {} s (a file that cannot be read?); accounts not reloaded by then keep their rules",
            timeout.as_secs()
        ),
    );
    let stuck = fleet.loading.lock().take();
    if let Some((live, verdict)) = stuck {
        if let Some(reloaded) = fleet.time_out(&live, &verdict, timeout) {
            report::log_reloaded(&live, &reloaded);
            report.accounts.push(AccountReport::new(
                live.name(),
                ReloadReport::of(&live, &reloaded),
            ));
        }
    }
    if fleet.accounts.is_many() {
        tracing::error!(
            event = "accounts_reload_timed_out",
            seconds = timeout.as_secs(),
            "the reload did not finish in time (a file that cannot be read?); the accounts not reloaded yet keep their rules"
        );
    }
    report
}

/// Clears its flag when dropped.
struct Cleared<'a>(&'a AtomicBool);

impl Drop for Cleared<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Which side has the last word on one account's reload: the load, when it reaches its
/// outcome, or the control loop, when it gives up waiting. Whichever comes first wins; the
/// other then reports nothing, so a reload is never both applied and timed out.
#[derive(Debug, Default)]
pub struct Verdict(AtomicU8);

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

/// How long `release` waits for requests to let go of replaced rules: past the request
/// deadline (3 s), with room.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Frees replaced versions on this (blocking) thread: waits, for `RELEASE_WAIT` at most in
/// all, for the requests still using them to finish, so that the last of them, on a
/// worker, does not pay for freeing their rules.
fn release(replaced: Vec<Arc<Live>>) {
    let until = std::time::Instant::now() + RELEASE_WAIT;
    for live in replaced {
        while Arc::strong_count(&live) > 1 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::build::Builder;
    use crate::accounts::{Mode, Secrets, HEALTH_ERRORS};
    use crate::clock::FixedClock;

    /// A scratch rules file of `n` rules.
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

    /// A fleet of one serving `sources`.
    fn fleet_of(sources: &Sources) -> Arc<Fleet> {
        let builder = Builder {
            clock: Arc::new(FixedClock(1)),
            wechat_api: "http://127.0.0.1:9".into(),
            redis: None,
            outbox: crate::act::outbox::Config::default(),
            http: crate::wechat_api::http_client().unwrap(),
            mode: Mode::Single,
            metrics: crate::telemetry::metrics::Metrics::new(),
            over_quota: None,
        };
        let secrets = Secrets::new("t", None).unwrap();
        Arc::new(Fleet::of_one(builder, sources.clone(), secrets).unwrap())
    }

    fn live(fleet: &Fleet) -> Arc<Live> {
        fleet.accounts.first().unwrap()
    }

    /// A reload that outlives its timeout is reported as timed out, keeps the old rules,
    /// and is thrown away when it finishes; the next reload applies as usual.
    #[tokio::test]
    async fn a_reload_past_its_timeout_is_abandoned_and_the_next_one_applies() {
        let (dir, sources) = scratch("timeout", 3);
        let fleet = fleet_of(&sources);
        let before = live(&fleet).rules.digest().to_owned();
        // 20,000 rules take far longer than a millisecond to load.
        let (_, bigger) = scratch("timeout", 20_000);
        assert_eq!(bigger, sources);

        // 50 ms: time for the reload's thread to reach the account (a timeout before it
        // has is a reload that loaded nothing, and says so), not to load 20,000 rules.
        let (controls, receiver) = mpsc::channel(4);
        controls.send(Control::Reload(None)).await.unwrap();
        controls.send(Control::Stop).await.unwrap();
        run(Arc::clone(&fleet), receiver, Duration::from_millis(50)).await;
        let health = live(&fleet).health().state;
        let last = health.last_reload.unwrap();
        assert_eq!(last.outcome, ReloadOutcome::TimedOut);
        assert!(
            last.errors[0].contains("did not finish within"),
            "{:?}",
            last.errors
        );
        assert_eq!(health.reloads_rejected, 1);
        assert_eq!(live(&fleet).rules.digest(), before);

        // The abandoned load finishes on its own thread and changes nothing.
        let waited = std::time::Instant::now();
        while (live(&fleet).account.reloads.running() > 0 || fleet.running.load(Ordering::SeqCst))
            && waited.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let health = live(&fleet).health().state;
        assert_eq!(health.reloads_running, 0);
        assert_eq!(live(&fleet).rules.digest(), before);
        assert_eq!(health.reloads_applied, 0);
        assert_eq!(health.last_reload.unwrap().outcome, ReloadOutcome::TimedOut);

        let (controls, receiver) = mpsc::channel(4);
        controls.send(Control::Reload(None)).await.unwrap();
        controls.send(Control::Stop).await.unwrap();
        run(Arc::clone(&fleet), receiver, RELOAD_TIMEOUT).await;
        let health = live(&fleet).health().state;
        assert_eq!(health.last_reload.unwrap().outcome, ReloadOutcome::Applied);
        assert_eq!(live(&fleet).rules.rules().len(), 20_000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn health_lists_the_first_errors_and_counts_them_all() {
        let (dir, sources) = scratch("many-errors", 1);
        let fleet = fleet_of(&sources);
        let mut yaml = String::from("rules:\n");
        for i in 0..500 {
            yaml.push_str(&format!(
                "  - name: r{i}\n    when: {{ keyword: k }}\n    ignroe: true\n"
            ));
        }
        std::fs::write(&sources.rules, yaml).unwrap();
        let report = reload_once(&fleet, RELOAD_TIMEOUT).await;
        assert_eq!(report.accounts[0].report.outcome, ReloadOutcome::Rejected);
        assert_eq!(report.accounts[0].report.errors.len(), 500);
        let last = live(&fleet).health().state.last_reload.unwrap();
        assert_eq!(last.error_count, 500);
        assert_eq!(last.errors.len(), HEALTH_ERRORS);
        let _ = std::fs::remove_dir_all(dir);
    }
}
