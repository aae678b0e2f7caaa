//! The accounts as a whole, from their first load to every reload: a config file's, or a
//! fleet of one (no `--config`: the flags and `WXRULES_*`). A reload reads the config file
//! again, reloads the accounts whose files changed (each all-or-nothing on its own; a
//! fleet of one's account always, as SIGHUP did in Part 1), builds the added and rebuilt
//! ones and drops the removed ones. The blocking part (`plan`) runs on the loop's thread;
//! the rest (`apply`) on the server's runtime.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::report::{
    AccountReport, FleetReport, Health, ReloadReport, Reloaded, Served, Shown, UnservedHealth,
};
use super::{load_settled, Verdict};
use crate::accounts::build::{prepare_all, stamp_with, Builder, Prepared, Unprepared};
use crate::accounts::editors::{EditorSpec, Editors};
use crate::accounts::Table;
use crate::accounts::{
    read_config, AccountSpec, Accounts, ConfigErrors, Live, Mode, ReloadOutcome, Secrets,
};
use crate::rules::{LoadError, Sources};

/// Where the accounts come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// No `--config`: this one account.
    Single(Box<AccountSpec>),
    /// The accounts of this config file.
    Config(PathBuf),
}

impl Source {
    pub fn mode(&self) -> Mode {
        match self {
            Source::Single(_) => Mode::Single,
            Source::Config(path) => Mode::Config(path.clone()),
        }
    }
}

/// The accounts served, and what reloading them needs.
pub struct Fleet {
    pub accounts: Accounts,
    source: Source,
    builder: Builder,
    /// Each account's stamp at its last load, whether it applied or not.
    stamps: Mutex<HashMap<String, u64>>,
    /// A reload's blocking part is running (one stuck on a file is not joined by another).
    pub(super) running: AtomicBool,
    /// The running reload was reported as timed out: it loads no more accounts, and what
    /// it found is not applied.
    pub(super) abandoned: AtomicBool,
    /// The account the running reload is loading now, and who has the last word on it:
    /// the load, or the timeout, which then reports that account as timed out and makes
    /// its load, should it ever finish, change nothing.
    pub(super) loading: Mutex<Option<(Arc<Live>, Arc<Verdict>)>>,
    /// The last reload of them all, for `/healthz` (with a config file).
    pub(super) last: Mutex<Option<FleetReport>>,
    /// Accounts of the config file that cannot be served (at start, or added by a reload
    /// and refused), until a reload mends them or the file drops them.
    unserved: Mutex<BTreeMap<String, Unserved>>,
    /// Who may sign in to the admin port: the config file's editors and the admin token;
    /// read again with the config file.
    editors: ArcSwap<Editors>,
    /// `WXRULES_ADMIN_TOKEN`, the editor `admin`, kept to build the editors again.
    admin_token: Option<Arc<str>>,
}

/// An account of the config file that is not served, and why.
#[derive(Debug, Clone)]
pub struct Unserved {
    /// Every error, as `file:line:col: …` (the log and the dashboard show them; `/healthz`
    /// only counts them).
    pub errors: Vec<String>,
    /// When it was last refused, unix seconds.
    pub at: u64,
}

/// What the blocking part of a reload found; the rest (building added accounts) runs on the
/// server's runtime.
pub(super) struct Plan {
    pub(super) report: FleetReport,
    build: Vec<Prepared>,
    /// Accounts the config file no longer has, by name.
    remove: Vec<String>,
    /// Versions the reload replaced, freed on the reload thread once requests let go.
    pub(super) replaced: Vec<Arc<Live>>,
}

/// How long a replaced or removed account's outbox still takes messages: requests in flight
/// when it was replaced (up to their 3 s deadline) still queue their `send:`s.
const RETIRE_AFTER: Duration = Duration::from_secs(10);

impl Fleet {
    /// The accounts of `source`, prepared already (`prepare_all`, on a blocking thread),
    /// made to serve. Runs on the server's runtime.
    pub fn new(builder: Builder, source: Source, prepared: Vec<Prepared>) -> Fleet {
        let mode = source.mode();
        let builder = Builder { mode, ..builder };
        let stamps = prepared
            .iter()
            .map(|p| (p.name().to_owned(), p.stamp()))
            .collect();
        let lives = prepared
            .into_iter()
            .map(|p| builder.build(p, None))
            .collect();
        Fleet {
            accounts: Accounts::new(builder.mode.clone(), lives),
            source,
            builder,
            stamps: Mutex::new(stamps),
            running: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            loading: Mutex::new(None),
            last: Mutex::new(None),
            unserved: Mutex::new(BTreeMap::new()),
            editors: ArcSwap::from_pointee(Editors::default()),
            admin_token: None,
        }
    }

    /// Who signs in: `specs` (a config file's editors) and `admin_token`, the editor
    /// `admin`. At start; the config file's are read again with it. Errors name the editor
    /// and its token's variable or file.
    pub fn with_editors(
        mut self,
        specs: &[EditorSpec],
        admin_token: Option<Arc<str>>,
    ) -> Result<Fleet, String> {
        let editors = Editors::resolve(specs, admin_token.as_deref())?;
        self.editors = ArcSwap::from_pointee(editors);
        self.admin_token = admin_token;
        Ok(self)
    }

    /// The editors as they are now.
    pub fn editors(&self) -> Arc<Editors> {
        self.editors.load_full()
    }

    /// The editors of a config file read again: put in place, or (an editor's token cannot
    /// be read) logged and the old ones kept.
    fn reload_editors(&self, specs: &[EditorSpec]) {
        match Editors::resolve(specs, self.admin_token.as_deref()) {
            Ok(editors) => self.editors.store(Arc::new(editors)),
            Err(e) => {
                tracing::error!(event = "editors_reload_rejected", error = %e, "the editors stay as they were")
            }
        }
    }

    /// Notes accounts that could not be made to serve, with their errors.
    pub fn note_unserved(&self, unserved: Vec<Unprepared>) {
        let at = self.builder.clock.now();
        let mut map = self.unserved.lock();
        for u in unserved {
            map.insert(
                u.account,
                Unserved {
                    errors: u.errors,
                    at,
                },
            );
        }
    }

    /// The accounts of the config file that are not served, by name.
    pub fn unserved(&self) -> BTreeMap<String, Unserved> {
        self.unserved.lock().clone()
    }

    /// Prepares every account of `source` and makes them serve, or says which cannot (and
    /// then serves none): for tools and tests that need the whole fleet or nothing.
    pub fn load(builder: Builder, source: Source) -> Result<Fleet, Vec<Unprepared>> {
        let specs = match &source {
            Source::Single(spec) => vec![(**spec).clone()],
            Source::Config(path) => {
                read_config(path)
                    .map_err(|e| {
                        vec![Unprepared {
                            account: String::new(),
                            errors: e.0.iter().map(ToString::to_string).collect(),
                        }]
                    })?
                    .accounts
            }
        };
        let (ready, failed): (Vec<_>, Vec<_>) =
            prepare_all(&specs).into_iter().partition(Result::is_ok);
        if !failed.is_empty() {
            return Err(failed.into_iter().filter_map(Result::err).collect());
        }
        let ready = ready.into_iter().filter_map(Result::ok).collect();
        Ok(Fleet::new(builder, source, ready))
    }

    /// A fleet of one whose secrets are given rather than read from `WXRULES_*` (for tests
    /// and tools): `sources` loaded and made to serve.
    pub fn of_one(
        builder: Builder,
        sources: Sources,
        secrets: Secrets,
    ) -> Result<Fleet, LoadError> {
        let spec = AccountSpec::single(sources);
        let prepared = Prepared::with_secrets(&spec, secrets)?;
        Ok(Fleet::new(
            builder,
            Source::Single(Box::new(spec)),
            vec![prepared],
        ))
    }

    /// The config file, with one.
    pub fn config_path(&self) -> Option<&Path> {
        match &self.source {
            Source::Config(path) => Some(path),
            Source::Single(_) => None,
        }
    }

    /// What `/healthz` shows: counts and outcomes, and with `errors` shown (a request that
    /// carried the admin token) the errors' texts too. Without, no text of a file reaches a
    /// client: an error quotes what it is about, and `/healthz` answers without a token.
    pub fn health(&self, errors: Shown) -> Health {
        let mut health = self.health_with_errors();
        if errors == Shown::Counts {
            health.served.redact();
        }
        health
    }

    fn health_with_errors(&self) -> Health {
        let table = self.accounts.table();
        if !self.accounts.is_many() {
            let served = match table.accounts().first() {
                Some(live) => live.account.reloads.state(live),
                None => {
                    return Health {
                        status: "degraded",
                        served: Served::Many {
                            accounts: BTreeMap::new(),
                            unserved: BTreeMap::new(),
                            last_reload: None,
                        },
                    }
                }
            };
            return Health {
                status: "ok",
                served: Served::One(served),
            };
        }
        let accounts: BTreeMap<_, _> = table
            .accounts()
            .iter()
            .map(|a| (a.name().to_owned(), a.health()))
            .collect();
        let last = self.last.lock().clone();
        let unserved: BTreeMap<_, _> = self
            .unserved
            .lock()
            .iter()
            .map(|(name, u)| {
                (
                    name.clone(),
                    UnservedHealth {
                        outcome: ReloadOutcome::Rejected,
                        error_count: u.errors.len(),
                        at: u.at,
                    },
                )
            })
            .collect();
        let degraded = !unserved.is_empty()
            || table.accounts().iter().any(|a| {
                a.account
                    .reloads
                    .last_outcome()
                    .is_some_and(|o| o != ReloadOutcome::Applied)
            })
            || last.as_ref().is_some_and(|r| !r.applied());
        Health {
            status: if degraded { "degraded" } else { "ok" },
            served: Served::Many {
                accounts,
                unserved,
                last_reload: last,
            },
        }
    }

    /// The specs to reload: the config file's, or (when it has errors, reported) the
    /// accounts as they are.
    fn specs(&self, report: &mut FleetReport) -> Vec<AccountSpec> {
        let path = match &self.source {
            Source::Single(spec) => return vec![(**spec).clone()],
            Source::Config(path) => path,
        };
        match read_config(path) {
            Ok(config) => {
                self.reload_editors(&config.editors);
                config.accounts
            }
            Err(ConfigErrors(errors)) => {
                for e in &errors {
                    tracing::error!(event = "config_reload_rejected", error = %e);
                }
                report.config_errors = errors.iter().map(ToString::to_string).collect();
                // The accounts stay as they are; each still reloads its own files.
                self.accounts
                    .table()
                    .accounts()
                    .iter()
                    .map(|a| a.account.spec().clone())
                    .collect()
            }
        }
    }

    /// The blocking part: reads the config file, reloads the accounts whose files changed
    /// (in place, each all-or-nothing), and prepares the added and rebuilt ones.
    pub(super) fn plan(&self) -> Plan {
        let table = self.accounts.table();
        let mut plan = Plan {
            report: FleetReport::empty(),
            build: Vec::new(),
            remove: Vec::new(),
            replaced: Vec::new(),
        };
        let specs = self.specs(&mut plan.report);
        let mut to_prepare = Vec::new();
        let mut dirs = HashMap::with_capacity(specs.len());
        for spec in &specs {
            let existing = table.by_name(&spec.name);
            // Published before anything of the account is read (its stamp walks its files,
            // which a hung mount can block): a timeout from here on reports this account.
            let verdict = Arc::new(Verdict::default());
            *self.loading.lock() = existing.map(|a| (Arc::clone(a), Arc::clone(&verdict)));
            if self.abandoned.load(Ordering::SeqCst) {
                // Reported as timed out already: what is left is for the next reload.
                break;
            }
            let now = stamp_with(&spec.sources, &mut dirs);
            match existing {
                Some(live) if self.same_account(live, spec) => {
                    self.reload_in_place(live, &verdict, now, &mut plan);
                }
                _ => to_prepare.push(spec.clone()),
            }
        }
        *self.loading.lock() = None;
        // Added and rebuilt accounts: their stamps are kept once they are built (`apply`).
        let prepared = if self.abandoned.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            prepare_all(&to_prepare)
        };
        for (spec, prepared) in to_prepare.iter().zip(prepared) {
            match prepared {
                Ok(prepared) => plan.build.push(prepared),
                Err(unprepared) => self.refuse(spec, &table, unprepared, &mut plan.report),
            }
        }
        if plan.report.config_errors.is_empty() {
            self.unserved
                .lock()
                .retain(|name, _| specs.iter().any(|s| &s.name == name));
            plan.remove = table
                .accounts()
                .iter()
                .filter(|a| !specs.iter().any(|s| s.name == a.name()))
                .map(|a| a.name().to_owned())
                .collect();
        }
        plan
    }

    /// An account that could not be (re)built: reported with the rules that still serve (an
    /// account rebuilt for new secrets keeps its old version), or noted as unserved (an
    /// account the config file added).
    fn refuse(
        &self,
        spec: &AccountSpec,
        table: &Table,
        unprepared: Unprepared,
        report: &mut FleetReport,
    ) {
        for e in &unprepared.errors {
            tracing::error!(event = "account_reload_rejected", account = %spec.name, error = %e);
        }
        let line = match table.by_name(&spec.name) {
            Some(live) => AccountReport::new(
                &spec.name,
                ReloadReport::new(
                    live,
                    ReloadOutcome::Rejected,
                    super::report::Changes::default(),
                    unprepared.errors,
                ),
            ),
            None => {
                self.note_unserved(vec![Unprepared {
                    account: spec.name.clone(),
                    errors: unprepared.errors.clone(),
                }]);
                AccountReport::failed(&spec.name, unprepared.errors)
            }
        };
        report.accounts.push(line);
    }

    /// Whether `live` is still the account `spec` describes (same path, files and secrets),
    /// so that a reload only loads its files again. A fleet of one always is: its secrets
    /// are read once, at start, and SIGHUP reloads its rules and templates, as in Part 1.
    fn same_account(&self, live: &Live, spec: &AccountSpec) -> bool {
        if matches!(self.source, Source::Single(_)) {
            return true;
        }
        spec.secrets
            .resolve()
            .is_ok_and(|s| live.account.built_from(spec, s.fingerprint))
    }

    /// Reloads an account built from the same spec and secrets, unless its files did not
    /// change since its last load and that load applied. A fleet of one's account is always
    /// loaded again: SIGHUP reloads its files, as in Part 1.
    fn reload_in_place(&self, live: &Arc<Live>, verdict: &Verdict, stamp: u64, plan: &mut Plan) {
        let name = live.name().to_owned();
        let refused = live
            .account
            .reloads
            .last_outcome()
            .is_some_and(|o| o != ReloadOutcome::Applied);
        let always = matches!(self.source, Source::Single(_));
        if !always && self.stamps.lock().get(&name) == Some(&stamp) && !refused {
            plan.report.unchanged += 1;
            return;
        }
        self.stamps.lock().insert(name.clone(), stamp);
        let reloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.reload_account(live, verdict)
        }));
        let Ok(reloaded) = reloaded else {
            // Nothing was recorded on the account: forget its stamp, so that the next
            // reload tries again.
            self.stamps.lock().remove(&name);
            plan.report.accounts.push(AccountReport::refused(
                &name,
                Some(live),
                vec![format!(
                    "account `{name}`: reloading it failed unexpectedly (a bug: please report it); its previous rules keep serving"
                )],
            ));
            return;
        };
        if matches!(reloaded, Reloaded::Superseded) {
            // Timed out: reported (and logged) by the control loop already.
            return;
        }
        let now = self
            .accounts
            .by_name(&name)
            .unwrap_or_else(|| Arc::clone(live));
        super::report::log_reloaded(&now, &reloaded);
        if matches!(reloaded, Reloaded::Applied { .. }) {
            super::report::warn_unsendable(&now);
        }
        plan.report
            .accounts
            .push(AccountReport::new(&name, ReloadReport::of(&now, &reloaded)));
        if let Reloaded::Applied { replaced, .. } = reloaded {
            plan.replaced.push(replaced);
        }
    }

    /// Loads `live`'s files again and puts the new version in place if they are valid.
    /// Blocking. A rejected reload changes nothing that requests see; one whose `verdict`
    /// the control loop gave up on (it was reported as timed out) changes nothing at all.
    pub(super) fn reload_account(&self, live: &Arc<Live>, verdict: &Verdict) -> Reloaded {
        let account = &live.account;
        let loaded = {
            // Counted down however the load ends, a panic included.
            let _running = account.reloads.enter();
            load_settled(account.sources())
        };
        let now = self.builder.clock.now();
        let reloaded = match loaded {
            Ok(loaded) => {
                if !verdict.decide() {
                    return Reloaded::Superseded;
                }
                let changes = super::report::Changes::between(&live.rules, &loaded.rules);
                loaded.rules.carry_last_hits(&live.rules);
                let rules = loaded.rules.rules().len();
                let mut loaded = loaded;
                if let Some(media) = &account.media {
                    media.start(&mut loaded.rules);
                }
                self.accounts.put(Arc::new(Live {
                    rules: loaded.rules,
                    loaded_at: now,
                    secrets: Arc::clone(&live.secrets),
                    account: Arc::clone(account),
                }));
                Reloaded::Applied {
                    rules,
                    changes,
                    replaced: Arc::clone(live),
                }
            }
            Err(_) if !verdict.decide() => return Reloaded::Superseded,
            Err(errors) => Reloaded::Rejected(errors),
        };
        self.record(live, &reloaded, now);
        reloaded
    }

    /// Keeps the outcome of `live`'s reload for `/healthz` and counts it.
    fn record(&self, live: &Live, reloaded: &Reloaded, now: u64) {
        let errors = reloaded.errors();
        let count = match reloaded {
            Reloaded::Rejected(e) => e.0.len(),
            _ => errors.len(),
        };
        live.account
            .reloads
            .record(reloaded.outcome(), now, count, errors);
        let rules = self
            .accounts
            .by_name(live.name())
            .map_or(live.rules.rules().len(), |now| now.rules.rules().len());
        live.metrics()
            .observe_reload(matches!(reloaded, Reloaded::Applied { .. }), rules);
    }

    /// Reports `live`'s reload, which ran past `after`, as timed out and abandons its load;
    /// `None` if the load reached its outcome first (it reports that itself).
    pub(super) fn time_out(
        &self,
        live: &Live,
        verdict: &Verdict,
        after: Duration,
    ) -> Option<Reloaded> {
        if !verdict.abandon() {
            return None;
        }
        let reloaded = Reloaded::TimedOut { after };
        self.record(live, &reloaded, self.builder.clock.now());
        Some(reloaded)
    }

    /// The part on the server's runtime: builds the prepared accounts and puts the new
    /// table in place; the accounts dropped or replaced have their outboxes drained in the
    /// background.
    pub(super) fn apply(&self, plan: Plan) -> FleetReport {
        let Plan {
            mut report,
            build,
            remove,
            replaced: _,
        } = plan;
        if build.is_empty() && remove.is_empty() {
            return report.settle();
        }
        let table = self.accounts.table();
        let (mut accounts, mut retired): (Vec<Arc<Live>>, Vec<Arc<Live>>) = table
            .accounts()
            .iter()
            .cloned()
            .partition(|a| !remove.iter().any(|r| r == a.name()));
        for live in &retired {
            tracing::info!(event = "account_removed", account = %live.name());
            report
                .accounts
                .push(AccountReport::of_live(live, ReloadOutcome::Removed));
            self.stamps.lock().remove(live.name());
        }
        for prepared in build {
            if let Some(old) = self.build_one(prepared, &mut accounts, &mut report) {
                retired.push(old);
            }
        }
        self.accounts.replace(accounts);
        for live in retired {
            self.accounts.note_retiring(&live.account);
            retire(live);
        }
        report.settle()
    }

    /// Builds one prepared account into `accounts` (in place of its previous version, which
    /// is returned, or added).
    fn build_one(
        &self,
        prepared: Prepared,
        accounts: &mut Vec<Arc<Live>>,
        report: &mut FleetReport,
    ) -> Option<Arc<Live>> {
        let name = prepared.name().to_owned();
        let path = prepared.spec().path.clone();
        // A path still held by another account (one whose own move was refused) is not
        // taken from it: two accounts never share a path.
        if let Some(holder) = accounts
            .iter()
            .find(|a| a.account.path() == path && a.name() != name)
        {
            let why = format!(
                "account `{name}`: path `{path}` is still account `{}`'s",
                holder.name()
            );
            tracing::error!(event = "account_reload_rejected", account = %name, error = %why);
            // Its previous version, if any, keeps serving at its old path: the report
            // gives the rules that still serve, not 0.
            let serving = accounts.iter().find(|a| a.name() == name);
            report.accounts.push(AccountReport::refused(
                &name,
                serving.map(|a| &**a),
                vec![why],
            ));
            return None;
        }
        let previous = accounts.iter().position(|a| a.name() == name);
        // The stamp taken before its files were read: an edit made while they were is seen
        // by the next reload. Kept only for an account that serves.
        let stamped = prepared.stamp();
        self.unserved.lock().remove(&name);
        let live = self
            .builder
            .build(prepared, previous.map(|i| &*accounts[i]));
        self.stamps.lock().insert(name.clone(), stamped);
        let (outcome, old) = match previous {
            Some(i) => (
                ReloadOutcome::Applied,
                Some(std::mem::replace(&mut accounts[i], Arc::clone(&live))),
            ),
            None => {
                accounts.push(Arc::clone(&live));
                (ReloadOutcome::Added, None)
            }
        };
        tracing::info!(event = "account_loaded", account = %name, outcome = %outcome, path = live.account.path(), rules = live.rules.rules().len());
        super::report::warn_unsendable(&live);
        report.accounts.push(AccountReport::of_live(&live, outcome));
        old
    }
}

/// An account no longer served: after `RETIRE_AFTER` (requests that took it before the swap
/// are done by then) and once its late calls have ended (each is bounded by its rule's call
/// timeout), its outbox takes no more, and what it holds gets a few seconds to go out.
fn retire(live: Arc<Live>) {
    tokio::spawn(async move {
        tokio::time::sleep(RETIRE_AFTER).await;
        let account = &live.account;
        account
            .late_calls
            .settle(crate::rules::compile::MAX_CALL_TIMEOUT)
            .await;
        account.close_outbox(Duration::from_secs(5)).await;
    });
}
