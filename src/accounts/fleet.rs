//! Building and reloading the accounts of a `--config` file. At start every account loads
//! on every core at once; a reload (SIGHUP, `/-/reload`, `--watch`) reads the config file
//! again, reloads only the accounts whose files changed (each all-or-nothing on its own),
//! builds the added ones and drops the removed ones. No per-account thread or task beyond
//! its outbox's senders.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::{read_config, Account, AccountParts, AccountSpec, Accounts, ConfigErrors};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::reload::{Changes, Control, Health, Live, ReloadOutcome, ReloadReport};
use crate::rules::{self, Sources};

/// What building an account needs besides its own spec.
#[derive(Clone)]
pub struct Builder {
    pub clock: Arc<dyn Clock>,
    /// WeChat's API (`--wechat-api`).
    pub wechat_api: String,
    /// Shared access tokens and outboxes, with `--store redis://…`.
    pub redis: Option<Arc<crate::store::Redis>>,
    pub outbox: crate::outbox::Config,
    /// WeChat's API's HTTP client, one for every account (`wechat_api::http_client`).
    pub http: reqwest::Client,
}

/// An account read and loaded, not yet serving: what a blocking thread can make.
pub struct Prepared {
    spec: AccountSpec,
    secrets: super::ResolvedSecrets,
    loaded: rules::Loaded,
    stamp: u64,
}

impl Prepared {
    /// The warnings its rules had.
    pub fn warnings(&self) -> &[rules::RuleError] {
        &self.loaded.warnings
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Why an account could not be prepared: its secrets, or its rules (each as
/// `file:line:col: …`).
#[derive(Debug)]
pub struct Unprepared {
    pub account: String,
    pub errors: Vec<String>,
}

/// Reads the secrets and loads the rules of `spec`.
pub fn prepare(spec: &AccountSpec) -> Result<Prepared, Unprepared> {
    let fail = |errors: Vec<String>| Unprepared {
        account: spec.name.clone(),
        errors,
    };
    let stamp = stamp(&spec.sources);
    let secrets = spec
        .secrets
        .resolve()
        .map_err(|e| fail(vec![format!("account `{}`: {e}", spec.name)]))?;
    let loaded = rules::load(&spec.sources)
        .map_err(|e| fail(e.0.iter().map(ToString::to_string).collect()))?;
    Ok(Prepared {
        spec: spec.clone(),
        secrets,
        loaded,
        stamp,
    })
}

/// `prepare` for every spec, on every core: 1,000 accounts of 200 rules each load in about a
/// second on two. In the order given.
pub fn prepare_all(specs: &[AccountSpec]) -> Vec<Result<Prepared, Unprepared>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(specs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<Prepared, Unprepared>)>> =
        Mutex::new(Vec::with_capacity(specs.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                // A panic while loading one account is that account's failure, not the
                // reload's (nor, at start, the process's).
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    prepare(spec)
                }))
                .unwrap_or_else(|_| {
                    Err(Unprepared {
                        account: spec.name.clone(),
                        errors: vec![format!(
                            "account `{}`: loading it failed unexpectedly (a bug: please report it)",
                            spec.name
                        )],
                    })
                });
                done.lock()
                    .push((i, result));
            });
        }
    });
    let mut done = done.into_inner();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

impl Builder {
    /// Makes a prepared account serve: its live rules, metrics (labelled with its name),
    /// API client and outbox. Runs on the server's runtime (the outbox spawns its senders).
    /// An account rebuilt (its secrets or path changed) keeps the metrics and last hits of
    /// the one it replaces, `previous`.
    pub fn build(
        &self,
        prepared: Prepared,
        previous: Option<&Account>,
    ) -> Result<Arc<Account>, Unprepared> {
        let Prepared {
            spec,
            secrets,
            loaded,
            stamp: _,
        } = prepared;
        let metrics = match previous {
            Some(previous) => {
                loaded
                    .rules
                    .carry_last_hits(&previous.live.snapshot().rules);
                previous.live.metrics().clone()
            }
            None => Metrics::for_account(&spec.name),
        };
        let live = Arc::new(Live::with_metrics(
            spec.sources.clone(),
            loaded.rules,
            Arc::clone(&self.clock),
            metrics.clone(),
        ));
        let (outbox, senders) = self.outbox_for(secrets.credentials, &metrics);
        live.set_sending(senders.is_some());
        let fingerprint = secrets.fingerprint;
        let parts = AccountParts {
            live,
            secrets: Arc::new(secrets.secrets),
            outbox: Arc::new(outbox),
            senders,
        };
        Ok(Arc::new(Account::from_spec(&spec, parts, fingerprint)))
    }
}

impl Builder {
    /// An account's outbox and its senders, through WeChat's API with `credentials`
    /// (shared through Redis when there is one); without an AppSecret, an outbox that
    /// refuses (and counts) what it is given. The one-account server builds its own here.
    pub fn outbox_for(
        &self,
        credentials: Option<crate::wechat_api::Credentials>,
        metrics: &Metrics,
    ) -> (Outbox, Option<crate::outbox::Senders>) {
        let appid = credentials.as_ref().map(|c| c.appid.clone());
        let mut api = crate::wechat_api::Api::with_http(
            &self.wechat_api,
            credentials,
            metrics.clone(),
            self.http.clone(),
        );
        // With Redis, the access token is shared: one fetch for every instance.
        if let Some(redis) = &self.redis {
            api = api.share_tokens(Arc::clone(redis));
        }
        if !api.can_send() {
            return (Outbox::disabled(metrics.clone()), None);
        }
        let api = Arc::new(api);
        let (outbox, senders) = match (&self.redis, appid) {
            // With Redis the outbox is shared by the instances, and survives them.
            (Some(redis), Some(appid)) => {
                Outbox::start_shared(&api, self.outbox, metrics, redis, &appid)
            }
            _ => Outbox::start(&api, self.outbox, metrics.clone()),
        };
        (outbox, Some(senders))
    }
}

/// A fingerprint of what a load reads: the rules file and every directory and file under
/// the templates directory, walked as a load walks it (`rules::walk_templates`): size,
/// times, inode. A reload skips an account whose stamp did not change. Times include the
/// change time, which no tool sets back.
pub fn stamp(sources: &Sources) -> u64 {
    stamp_with(sources, &mut HashMap::new())
}

/// `stamp`, taking the stamps of templates directories walked already in this pass from
/// `dirs`: accounts that share one directory walk it once per reload.
fn stamp_with<'a>(sources: &'a Sources, dirs: &mut HashMap<&'a Path, u64>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::metadata(&sources.rules) {
        Ok(m) => hash_meta(&m, &mut h),
        Err(e) => e.kind().hash(&mut h),
    }
    dirs.entry(sources.templates.as_path())
        .or_insert_with(|| templates_stamp(&sources.templates))
        .hash(&mut h);
    h.finish()
}

/// The stamp of a templates directory: itself and everything under it, walked as a load
/// walks it.
fn templates_stamp(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match std::fs::metadata(dir) {
        Ok(m) => hash_meta(&m, &mut h),
        Err(e) => e.kind().hash(&mut h),
    }
    let walked = rules::walk_templates(dir, |path, m| {
        path.hash(&mut h);
        hash_meta(m, &mut h);
        Ok(())
    });
    // A walk that fails (a file that vanished, a loop too deep) changes the stamp too: the
    // load will say what is wrong.
    if let Err(e) = walked {
        e.error.kind().hash(&mut h);
    }
    h.finish()
}

fn hash_meta(m: &std::fs::Metadata, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
        m.dev(),
    )
        .hash(h);
}

/// The accounts of a config file, as served, and what reloading them needs.
pub struct Fleet {
    pub accounts: Arc<Accounts>,
    config: PathBuf,
    builder: Builder,
    /// Each account's stamp at its last load, whether it applied or not.
    stamps: Mutex<HashMap<String, u64>>,
    /// A reload's blocking part is running (one stuck on a file is not joined by another).
    running: AtomicBool,
    /// The running reload was reported as timed out: it loads no more accounts, and what it
    /// found is not applied.
    abandoned: AtomicBool,
    /// The account the running reload is loading now, and who has the last word on it: the
    /// load, or the timeout, which then reports that account as timed out and makes its
    /// load, should it ever finish, change nothing.
    loading: Mutex<Option<(Arc<Account>, Arc<crate::reload::Verdict>)>>,
}

/// A fleet reload's outcome, as `POST /-/reload` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// `applied` (every account that changed took its new files), `unchanged`, `rejected`
    /// (none did), `partial` (some did), or `failed`.
    pub outcome: &'static str,
    /// Errors of the config file itself (then no account was added or removed).
    pub config_errors: Vec<String>,
    /// One line per account that changed or failed; unchanged accounts are left out.
    pub accounts: Vec<AccountReport>,
    /// Accounts whose files did not change (and so were not loaded again).
    pub unchanged: usize,
}

/// One account's part of a fleet reload: its name, and the report its reload makes on its
/// own (`reload::ReloadReport`), flattened beside it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountReport {
    pub account: String,
    #[serde(flatten)]
    pub report: ReloadReport,
}

impl AccountReport {
    fn from_report(account: &str, report: ReloadReport) -> AccountReport {
        AccountReport {
            account: account.to_owned(),
            report,
        }
    }

    /// `outcome` for an account built or removed: its rules as they serve.
    fn of_account(account: &Account, outcome: &'static str) -> AccountReport {
        let snapshot = account.live.snapshot();
        AccountReport::from_report(
            account.name(),
            ReloadReport {
                outcome,
                rules: snapshot.rules.rules().len(),
                digest: snapshot.rules.digest().to_owned(),
                changes: Changes::default(),
                errors: Vec::new(),
            },
        )
    }

    /// An account that could not be (re)built: nothing of it serves from this reload.
    fn failed(account: &str, errors: Vec<String>) -> AccountReport {
        AccountReport::from_report(
            account,
            ReloadReport {
                outcome: "rejected",
                rules: 0,
                digest: String::new(),
                changes: Changes::default(),
                errors,
            },
        )
    }
}

impl FleetReport {
    /// Whether every account that changed took its new files (and the config file read).
    pub fn applied(&self) -> bool {
        matches!(self.outcome, "applied" | "unchanged")
    }

    fn failed(why: String) -> FleetReport {
        FleetReport {
            outcome: "failed",
            config_errors: vec![why],
            accounts: Vec::new(),
            unchanged: 0,
        }
    }

    fn settle(mut self) -> FleetReport {
        let bad = |a: &AccountReport| !matches!(a.report.outcome, "applied" | "added" | "removed");
        let failed = self.accounts.iter().filter(|a| bad(a)).count();
        let good = self.accounts.len() - failed;
        self.outcome = match (good, failed + self.config_errors.len()) {
            (0, 0) => "unchanged",
            (_, 0) => "applied",
            (0, _) => "rejected",
            _ => "partial",
        };
        self
    }
}

/// What the blocking part of a reload found; the rest (building added accounts) runs on the
/// server's runtime.
struct Plan {
    report: FleetReport,
    build: Vec<Prepared>,
    /// Accounts the config file no longer has, by name.
    remove: Vec<String>,
}

impl Fleet {
    pub fn new(accounts: Arc<Accounts>, config: PathBuf, builder: Builder) -> Fleet {
        let mut dirs = HashMap::new();
        let stamps = accounts
            .table()
            .accounts()
            .iter()
            .filter_map(|a| a.spec.as_ref())
            .map(|s| (s.name.clone(), stamp_with(&s.sources, &mut dirs)))
            .collect();
        Fleet {
            accounts,
            config,
            builder,
            stamps: Mutex::new(stamps),
            running: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            loading: Mutex::new(None),
        }
    }

    /// Remembers the stamps the first load saw (taken before it read the files).
    pub fn remember(&self, prepared: &[Prepared]) {
        let mut stamps = self.stamps.lock();
        for p in prepared {
            stamps.insert(p.spec.name.clone(), p.stamp);
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The blocking part: reads the config file, reloads the accounts whose files changed
    /// (in place, each all-or-nothing), and prepares the added and rebuilt ones.
    fn plan(&self) -> Plan {
        let table = self.accounts.table();
        let mut report = FleetReport {
            outcome: "applied",
            config_errors: Vec::new(),
            accounts: Vec::new(),
            unchanged: 0,
        };
        let specs: Vec<AccountSpec> = match read_config(&self.config) {
            Ok(config) => config.accounts,
            Err(ConfigErrors(errors)) => {
                for e in &errors {
                    tracing::error!(event = "config_reload_rejected", error = %e);
                }
                report.config_errors = errors.iter().map(ToString::to_string).collect();
                // The accounts stay as they are; each still reloads its own files.
                table
                    .accounts()
                    .iter()
                    .filter_map(|a| a.spec.clone())
                    .collect()
            }
        };
        let mut build = Vec::new();
        let mut to_prepare = Vec::new();
        let mut dirs = HashMap::with_capacity(specs.len());
        for spec in &specs {
            let existing = table.by_name(&spec.name);
            // Published before anything of the account is read (its stamp walks its files,
            // which a hung mount can block): a timeout from here on reports this account.
            let verdict = Arc::new(crate::reload::Verdict::default());
            self.set_loading(existing.map(|a| (Arc::clone(a), Arc::clone(&verdict))));
            if self.abandoned.load(Ordering::SeqCst) {
                // Reported as timed out already: what is left is for the next reload.
                break;
            }
            let now = stamp_with(&spec.sources, &mut dirs);
            let fingerprint = spec.secrets.resolve().map(|s| s.fingerprint);
            match (existing, fingerprint) {
                (Some(account), Ok(fp)) if account.built_from(spec, fp) => {
                    // Files unchanged since the last load are not read again, unless that
                    // load was refused: a reload retries it (a read error may have passed).
                    let refused = account
                        .live
                        .health()
                        .last_reload
                        .is_some_and(|last| last.outcome != "applied");
                    if self.stamp_of(&spec.name) == Some(now) && !refused {
                        report.unchanged += 1;
                        continue;
                    }
                    self.set_stamp(&spec.name, now);
                    let reloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        account.live.reload_unless(&verdict)
                    }));
                    if matches!(reloaded, Ok(ReloadOutcome::Superseded)) {
                        // Timed out: reported (and logged) by the control loop already.
                        continue;
                    }
                    let Ok(outcome) = reloaded else {
                        // Nothing was recorded on the account: forget its stamp, so that the
                        // next reload tries again.
                        self.forget_stamp(&spec.name);
                        report.accounts.push(AccountReport::failed(
                            &spec.name,
                            vec![format!(
                                "account `{}`: reloading it failed unexpectedly (a bug: please report it); its previous rules keep serving",
                                spec.name
                            )],
                        ));
                        continue;
                    };
                    crate::reload::log_outcome(&account.live, &outcome, account.log_name());
                    report.accounts.push(AccountReport::from_report(
                        account.name(),
                        ReloadReport::of(&account.live, &outcome),
                    ));
                    if let ReloadOutcome::Applied { replaced, .. } = outcome {
                        // Requests may still hold the old rules: freed when they let go.
                        drop(replaced);
                    }
                }
                _ => to_prepare.push(spec.clone()),
            }
        }
        self.set_loading(None);
        // Added and rebuilt accounts: their stamps are kept once they are built (`apply`).
        let prepared = if self.abandoned.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            prepare_all(&to_prepare)
        };
        for (spec, prepared) in to_prepare.iter().zip(prepared) {
            match prepared {
                Ok(prepared) => build.push(prepared),
                Err(unprepared) => {
                    for e in &unprepared.errors {
                        tracing::error!(event = "account_reload_rejected", account = %spec.name, error = %e);
                    }
                    report
                        .accounts
                        .push(AccountReport::failed(&spec.name, unprepared.errors));
                }
            }
        }
        let remove = if report.config_errors.is_empty() {
            table
                .accounts()
                .iter()
                .filter(|a| !specs.iter().any(|s| s.name == a.name()))
                .map(|a| a.name().to_owned())
                .collect()
        } else {
            Vec::new()
        };
        Plan {
            report,
            build,
            remove,
        }
    }

    fn stamp_of(&self, name: &str) -> Option<u64> {
        self.stamps.lock().get(name).copied()
    }

    fn forget_stamp(&self, name: &str) {
        self.stamps.lock().remove(name);
    }

    fn set_loading(&self, loading: Option<(Arc<Account>, Arc<crate::reload::Verdict>)>) {
        *self.loading.lock() = loading;
    }

    fn set_stamp(&self, name: &str, stamp: u64) {
        self.stamps.lock().insert(name.to_owned(), stamp);
    }

    /// The part on the server's runtime: builds the prepared accounts and puts the new table
    /// in place; the accounts dropped or replaced have their outboxes drained in the
    /// background.
    fn apply(&self, plan: Plan) -> FleetReport {
        let Plan {
            mut report,
            build,
            remove,
        } = plan;
        if build.is_empty() && remove.is_empty() {
            return report.settle();
        }
        let table = self.accounts.table();
        let mut accounts: Vec<Arc<Account>> = table
            .accounts()
            .iter()
            .filter(|a| !remove.iter().any(|r| r == a.name()))
            .cloned()
            .collect();
        let mut retired: Vec<Arc<Account>> = table
            .accounts()
            .iter()
            .filter(|a| remove.iter().any(|r| r == a.name()))
            .cloned()
            .collect();
        for name in &remove {
            tracing::info!(event = "account_removed", account = %name);
            if let Some(account) = table.by_name(name) {
                report
                    .accounts
                    .push(AccountReport::of_account(account, "removed"));
            }
            self.stamps.lock().remove(name);
        }
        for prepared in build {
            let name = prepared.spec.name.clone();
            // A path still held by another account (one whose own move was refused) is
            // not taken from it: two accounts never share a path.
            if let Some(holder) = accounts
                .iter()
                .find(|a| a.path() == prepared.spec.path && a.name() != name)
            {
                let why = format!(
                    "account `{name}`: path `{}` is still account `{}`'s",
                    prepared.spec.path,
                    holder.name()
                );
                tracing::error!(event = "account_reload_rejected", account = %name, error = %why);
                report
                    .accounts
                    .push(AccountReport::failed(&name, vec![why]));
                continue;
            }
            let previous = accounts.iter().find(|a| a.name() == name).cloned();
            // The stamp taken before its files were read: an edit made while they were is
            // seen by the next reload. Kept only for an account that serves.
            let stamped = prepared.stamp;
            match self.builder.build(prepared, previous.as_deref()) {
                Ok(account) => {
                    self.set_stamp(&name, stamped);
                    let replaced = accounts.iter().position(|a| a.name() == name);
                    let outcome = match replaced {
                        Some(i) => {
                            retired.push(std::mem::replace(&mut accounts[i], Arc::clone(&account)));
                            "applied"
                        }
                        None => {
                            accounts.push(Arc::clone(&account));
                            "added"
                        }
                    };
                    tracing::info!(event = "account_loaded", account = %name, outcome, path = account.path(), rules = account.live.snapshot().rules.rules().len());
                    crate::reload::warn_unsendable(&account.live);
                    report
                        .accounts
                        .push(AccountReport::of_account(&account, outcome));
                }
                Err(e) => report.accounts.push(AccountReport::failed(&name, e.errors)),
            }
        }
        self.accounts.replace(accounts);
        for account in retired {
            self.accounts.note_retiring(&account);
            retire(account);
        }
        report.settle()
    }
}

/// How long a replaced or removed account's outbox still takes messages: requests in flight
/// when it was replaced (up to their 3 s deadline) still queue their `send:`s.
const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// An account no longer served: after `RETIRE_AFTER` (requests that took it before the swap
/// are done by then) and once its late calls have ended (each is bounded by its rule's call
/// timeout), its outbox takes no more, and what it holds gets a few seconds to go out.
fn retire(account: Arc<Account>) {
    tokio::spawn(async move {
        tokio::time::sleep(RETIRE_AFTER).await;
        account
            .late_calls
            .settle(crate::rules::compile::MAX_CALL_TIMEOUT)
            .await;
        account.close_outbox(Duration::from_secs(5)).await;
    });
}

/// The control loop of a server of several accounts: as `reload::run`, each `Reload` (bursts
/// coalesced) is one fleet reload; its blocking part runs on a thread of its own, awaited
/// for `timeout`.
pub async fn run(fleet: Arc<Fleet>, mut controls: mpsc::Receiver<Control>, timeout: Duration) {
    while let Some(burst) = crate::reload::next_burst(&mut controls).await {
        let report = reload_once(&fleet, timeout).await;
        tracing::info!(
            event = "accounts_reloaded",
            outcome = report.outcome,
            changed = report.accounts.len(),
            unchanged = report.unchanged,
            config_errors = report.config_errors.len()
        );
        *fleet.accounts.last_reload.lock() = Some(report.clone());
        for reply in burst.waiting {
            // A caller that asked for one account's report (single-account shape) gets the
            // first account's line; `/-/reload` asks for the fleet's.
            let single = report.accounts.first().map(|a| a.report.clone());
            if let Some(single) = single {
                let _ = reply.send(single);
            }
        }
        for reply in burst.accounts_waiting {
            let _ = reply.send(report.clone());
        }
        if burst.stop {
            break;
        }
    }
}

async fn reload_once(fleet: &Arc<Fleet>, timeout: Duration) -> FleetReport {
    if fleet.running.swap(true, Ordering::SeqCst) {
        return FleetReport::failed("an earlier reload is still stuck reading files".into());
    }
    fleet.abandoned.store(false, Ordering::SeqCst);
    let worker = Arc::clone(fleet);
    let (done, finished) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("wxrules-reload".into())
        .spawn(move || {
            // Cleared however the plan ends, a panic included, and before the plan is
            // handed over: the next reload may come as soon as this one is answered.
            let plan = {
                let _running = Cleared(&worker.running);
                worker.plan()
            };
            let _ = done.send(plan);
        });
    if let Err(e) = spawned {
        fleet.running.store(false, Ordering::SeqCst);
        return FleetReport::failed(format!("the reload thread could not start: {e}"));
    }
    match tokio::time::timeout(timeout, finished).await {
        Ok(Ok(plan)) => fleet.apply(plan),
        Ok(Err(_)) => FleetReport::failed("the reload ended without an outcome".into()),
        Err(_) => {
            // The accounts it already reloaded stay reloaded (each all-or-nothing, and
            // logged); it loads no more, and accounts it prepared are not added. The one it
            // is stuck on is reported as timed out (its `/healthz` says so), and its load
            // changes nothing should it ever finish.
            fleet.abandoned.store(true, Ordering::SeqCst);
            let stuck = fleet.loading.lock().take();
            if let Some((account, verdict)) = stuck {
                if let Some(outcome) = account.live.time_out(&verdict, timeout) {
                    crate::reload::log_outcome(&account.live, &outcome, account.log_name());
                }
            }
            tracing::error!(
                event = "accounts_reload_timed_out",
                seconds = timeout.as_secs(),
                "the reload did not finish in time (a file that cannot be read?); the accounts not reloaded yet keep their rules"
            );
            FleetReport::failed(format!(
                "the reload did not finish in {} s (a file that cannot be read?); accounts not reloaded by then keep their rules",
                timeout.as_secs()
            ))
        }
    }
}

/// Clears its flag when dropped.
struct Cleared<'a>(&'a AtomicBool);

impl Drop for Cleared<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// `/healthz` of a server of several accounts.
#[derive(Debug, Serialize)]
pub struct FleetHealth {
    /// `ok`, or `degraded` when an account's last reload or the config file's was refused.
    pub status: &'static str,
    pub accounts: std::collections::BTreeMap<String, Health>,
    pub last_reload: Option<FleetReport>,
}

/// The health of each account, and of the last fleet reload.
pub fn health(accounts: &Accounts) -> FleetHealth {
    let table = accounts.table();
    let map: std::collections::BTreeMap<String, Health> = table
        .accounts()
        .iter()
        .map(|a| (a.name().to_owned(), a.live.health()))
        .collect();
    let last = accounts.last_reload.lock().clone();
    let degraded = map.values().any(|h| {
        h.last_reload
            .as_ref()
            .is_some_and(|r| r.outcome != "applied")
    }) || last.as_ref().is_some_and(|r| !r.applied());
    FleetHealth {
        status: if degraded { "degraded" } else { "ok" },
        accounts: map,
        last_reload: last,
    }
}
