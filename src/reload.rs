//! The live rules and their reload. `Live` holds the serving `RuleSet` behind one
//! `ArcSwap`; `run` turns `Control::Reload` (SIGHUP in production, a channel send in tests)
//! into load + compile off the request path and a swap on success only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rules::{self, LoadError, RuleSet, Sources};

/// What the control loop is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Load the rules and templates again; swap them in if they are valid.
    Reload,
    /// End the loop (the server is stopping).
    Stop,
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
    pub at: u64,
    /// The errors of a rejected reload, as `file:line:col: …`.
    pub errors: Vec<String>,
}

/// What `/healthz` shows.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub rules: usize,
    pub templates: usize,
    pub digest: String,
    pub loaded_at: u64,
    pub last_reload: Option<LastReload>,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
}

/// The rules being served, and where they come from.
pub struct Live {
    current: ArcSwap<Snapshot>,
    sources: Sources,
    clock: Arc<dyn Clock>,
    last: Mutex<Option<LastReload>>,
    applied: AtomicU64,
    rejected: AtomicU64,
    /// Serializes reloads, so that the last one started is the last one swapped in.
    reloading: Mutex<()>,
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
        let loaded_at = clock.now();
        let metrics = Metrics::new();
        metrics.set_rules_loaded(rules.rules().len());
        Live {
            current: ArcSwap::from_pointee(Snapshot { rules, loaded_at }),
            sources,
            clock,
            last: Mutex::new(None),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            reloading: Mutex::new(()),
            metrics,
        }
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
        let _serial = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let outcome = match load_settled(&self.sources) {
            Ok(loaded) => {
                let old = self.current.load_full();
                let changes = Changes::between(&old.rules, &loaded.rules);
                let count = loaded.rules.rules().len();
                self.current.store(Arc::new(Snapshot {
                    rules: loaded.rules,
                    loaded_at: now,
                }));
                self.applied.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Applied {
                    rules: count,
                    changes,
                    replaced: old,
                }
            }
            Err(errors) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                ReloadOutcome::Rejected(errors)
            }
        };
        let last = match &outcome {
            ReloadOutcome::Applied { .. } => LastReload {
                outcome: "applied",
                at: now,
                errors: Vec::new(),
            },
            ReloadOutcome::Rejected(e) => LastReload {
                outcome: "rejected",
                at: now,
                errors: e.0.iter().map(ToString::to_string).collect(),
            },
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
        self.metrics.observe_reload(
            matches!(outcome, ReloadOutcome::Applied { .. }),
            self.current.load().rules.rules().len(),
        );
        outcome
    }

    pub fn health(&self) -> Health {
        let snapshot = self.snapshot();
        Health {
            status: "ok",
            rules: snapshot.rules.rules().len(),
            templates: snapshot.rules.template_count(),
            digest: snapshot.rules.digest().to_owned(),
            loaded_at: snapshot.loaded_at,
            last_reload: self.last.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            reloads_applied: self.applied.load(Ordering::Relaxed),
            reloads_rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Loads the rules, again if the rules file changed while it was read: an editor that
/// truncates and rewrites in place can be caught half-way, and a half-written file may
/// still parse.
fn load_settled(sources: &Sources) -> Result<rules::Loaded, LoadError> {
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
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Logs a reload's outcome with stable event names.
pub fn log_outcome(live: &Live, outcome: &ReloadOutcome) {
    let path = live.sources().rules.display().to_string();
    match outcome {
        ReloadOutcome::Applied { rules, changes, .. } => tracing::info!(
            event = "rules_reloaded",
            rules,
            path,
            digest = live.snapshot().rules.digest(),
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed,
            templates_changed = changes.templates_changed,
        ),
        ReloadOutcome::Rejected(errors) => {
            for e in &errors.0 {
                tracing::error!(event = "rules_reload_rejected", path, error = %e);
            }
            tracing::error!(
                event = "rules_reload_rejected",
                path,
                errors = errors.0.len(),
                "reload rejected; the previous rules keep serving"
            );
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

/// The control loop: each `Reload` loads off the async workers and swaps on success;
/// reloads requested while one runs are coalesced into one more. Ends on `Stop` or when
/// every sender is gone.
pub async fn run(live: Arc<Live>, mut controls: mpsc::Receiver<Control>) {
    while let Some(control) = controls.recv().await {
        if control == Control::Stop {
            break;
        }
        // Several SIGHUPs in a burst need one load of the newest files, not one each.
        let mut stop = false;
        while let Ok(next) = controls.try_recv() {
            stop |= next == Control::Stop;
        }
        let worker = Arc::clone(&live);
        match tokio::task::spawn_blocking(move || {
            let outcome = worker.reload();
            log_outcome(&worker, &outcome);
            if let ReloadOutcome::Applied { replaced, .. } = outcome {
                release(replaced);
            }
        })
        .await
        {
            Ok(()) => {}
            Err(e) => tracing::error!(event = "rules_reload_failed", error = %e),
        }
        if stop {
            break;
        }
    }
}
