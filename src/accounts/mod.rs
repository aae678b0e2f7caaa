//! The accounts served, and what a push reads of one. Each account is a [`Live`]: one
//! immutable value holding its rules, its secrets' derived keys, its label and what it may
//! send, found by push path in one table ([`Accounts`]) with one atomic load. A reload
//! puts a new `Live` in the table; nothing a push reads changes under it. A server without
//! `--config` is a fleet of one: the account `default` at `/wechat`, its secrets from
//! `WXRULES_*`. No HTTP here, and nothing of how accounts are reloaded (`crate::reload`).

pub mod build;
pub mod config;
pub mod editors;
pub mod secrets;
mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use config::{read_config, AccountSpec, Config, ConfigError, ConfigErrors};
pub use secrets::{SecretSource, SecretSources, Secrets};
pub use status::{
    AccountHealth, AccountState, LastReload, ReloadOutcome, ReloadRecord, HEALTH_ERRORS,
};

use crate::act::call::LateCalls;
use crate::act::outbox::{Outbox, Senders};
use crate::rules::{RuleSet, Sources};
use crate::telemetry::metrics::Metrics;

/// The name of the one account of a server without `--config`.
pub const DEFAULT_ACCOUNT: &str = "default";
/// Its push path, as in Part 1.
pub const SINGLE_PATH: &str = "/wechat";

/// How the server was told its accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No `--config`: one account from the flags and `WXRULES_*`, served at `/wechat` with
    /// Part 1's keys, metric names and log lines (no `account` label or field).
    Single,
    /// The accounts of this config file, each labelled with its name.
    Config(PathBuf),
}

/// One account as served now: everything a push reads, in one value that never changes.
#[derive(Debug)]
pub struct Live {
    pub rules: RuleSet,
    /// Unix seconds when these rules were loaded.
    pub loaded_at: u64,
    pub secrets: Arc<Secrets>,
    /// What the account keeps across reloads of its rules.
    pub account: Arc<Account>,
}

impl Live {
    pub fn name(&self) -> &str {
        &self.account.name
    }

    /// The account's metrics (unlabelled for a fleet of one).
    pub fn metrics(&self) -> &Metrics {
        &self.account.metrics
    }

    /// Whether it can send customer-service messages (it has an AppSecret).
    pub fn sends(&self) -> bool {
        self.account.outbox.can_send()
    }

    /// `/healthz`'s view of it.
    pub fn health(&self) -> AccountHealth {
        let refused = self
            .account
            .reloads
            .last_outcome()
            .is_some_and(|o| o != ReloadOutcome::Applied);
        AccountHealth {
            status: if refused { "degraded" } else { "ok" },
            state: self.account.reloads.state(self),
        }
    }
}

/// What an account keeps across reloads of its rules: its identity and label, its metrics,
/// its outbox, the late calls it is running and the record of its reloads. Built again
/// only when its path or secrets change.
pub struct Account {
    name: Arc<str>,
    path: Arc<str>,
    /// Put in front of the account's dedup and cooldown keys: empty for a fleet of one
    /// (the keys of Part 1), `a=NAME:` with `--config`.
    scope: Box<str>,
    /// The `account` field of log lines: none for a fleet of one.
    log_name: Option<Arc<str>>,
    sources: Sources,
    metrics: Metrics,
    pub outbox: Arc<Outbox>,
    /// The outbox's senders, drained at a stop or when the account goes away. Held across
    /// the drain, so that a stop that meets a retiring account's drain waits for it.
    senders: tokio::sync::Mutex<Option<Senders>>,
    /// The account's late calls running now: a retired account's outbox closes only once
    /// they have sent their replies.
    pub late_calls: LateCalls,
    /// How its reloads went, for `/healthz`.
    pub reloads: ReloadRecord,
    /// What it was built from, to tell on a reload whether to build it again.
    spec: AccountSpec,
    secrets_fingerprint: u64,
    /// Its replies' media files uploaded as permanent material (with an AppSecret).
    pub media: Option<std::sync::Arc<crate::act::media::Uploads>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What building an account takes besides its spec.
pub struct AccountParts {
    pub metrics: Metrics,
    pub outbox: Arc<Outbox>,
    pub senders: Option<Senders>,
    pub secrets_fingerprint: u64,
}

impl Account {
    /// The account `spec` describes, served as `mode` says.
    pub fn new(spec: &AccountSpec, mode: &Mode, parts: AccountParts) -> Account {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let single = *mode == Mode::Single;
        Account {
            path: Arc::from(spec.path.as_str()),
            scope: if single {
                "".into()
            } else {
                format!("a={name}:").into()
            },
            log_name: (!single).then(|| Arc::clone(&name)),
            name,
            sources: spec.sources.clone(),
            metrics: parts.metrics,
            outbox: parts.outbox,
            senders: tokio::sync::Mutex::new(parts.senders),
            late_calls: LateCalls::default(),
            reloads: ReloadRecord::default(),
            spec: spec.clone(),
            secrets_fingerprint: parts.secrets_fingerprint,
            media: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared rather than copied.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where its rules and templates are read from.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    pub fn spec(&self) -> &AccountSpec {
        &self.spec
    }

    /// Whether it can send customer-service messages: it has the API
    /// (`customer_service`) and an AppSecret to call it with.
    pub fn customer_service(&self) -> bool {
        self.spec.customer_service && self.outbox.can_send()
    }

    /// The prefix of the account's dedup and cooldown keys.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The `account` field of log lines; `None` (no field) for a fleet of one.
    pub fn log_name(&self) -> Option<&str> {
        self.log_name.as_deref()
    }

    /// Closes its outbox and gives what it holds `within` to go out; what is left is lost,
    /// and logged (`outbox_abandoned`). At a stop, and for an account a reload removed or
    /// replaced.
    pub async fn close_outbox(&self, within: std::time::Duration) {
        self.outbox.close();
        // Another close (a retiring account's, met by a stop) drains it now: wait for it,
        // as long as this one would have waited.
        let until = tokio::time::Instant::now() + within;
        let Ok(mut held) = tokio::time::timeout_at(until, self.senders.lock()).await else {
            return;
        };
        let Some(senders) = held.take() else {
            return;
        };
        let left = senders
            .drain(until.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        if left > 0 {
            tracing::warn!(
                event = "outbox_abandoned",
                account = self.log_name(),
                messages = left,
                "customer-service messages still queued when the outbox closed are lost"
            );
        }
    }

    /// Whether `spec` and `fingerprint` describe this account as it was built.
    pub fn built_from(&self, spec: &AccountSpec, fingerprint: u64) -> bool {
        self.spec.path == spec.path
            && self.spec.sources == spec.sources
            && self.spec.secrets == spec.secrets
            && self.spec.customer_service == spec.customer_service
            && self.secrets_fingerprint == fingerprint
    }
}

/// The accounts being served, by push path. Replaced whole, one account's new version or a
/// new list at a time.
pub struct Accounts {
    table: ArcSwap<Table>,
    mode: Mode,
    /// Held by whoever puts a new table in place, so that two writers cannot lose each
    /// other's change. Requests never take it.
    writing: Mutex<()>,
    /// Accounts a reload removed or replaced whose outbox has not closed yet (it waits
    /// for their late calls): a stop drains them with the others.
    retiring: Mutex<Vec<Weak<Account>>>,
}

/// One version of the account table.
#[derive(Default)]
pub struct Table {
    by_path: HashMap<Arc<str>, Arc<Live>, foldhash::fast::RandomState>,
    /// In name order, for listings.
    sorted: Vec<Arc<Live>>,
}

impl Table {
    fn new(accounts: Vec<Arc<Live>>) -> Table {
        let mut sorted = accounts;
        sorted.sort_by(|a, b| a.account.name.cmp(&b.account.name));
        Table {
            by_path: sorted
                .iter()
                .map(|a| (Arc::clone(&a.account.path), Arc::clone(a)))
                .collect(),
            sorted,
        }
    }

    /// Every account, by name.
    pub fn accounts(&self) -> &[Arc<Live>] {
        &self.sorted
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Live>> {
        self.sorted
            .binary_search_by(|a| (*a.account.name).cmp(name))
            .ok()
            .map(|i| &self.sorted[i])
    }
}

impl Accounts {
    /// `accounts`, served as `mode` says.
    pub fn new(mode: Mode, accounts: Vec<Arc<Live>>) -> Accounts {
        Accounts {
            table: ArcSwap::from_pointee(Table::new(accounts)),
            mode,
            writing: Mutex::new(()),
            retiring: Mutex::default(),
        }
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Whether the server runs from a config file of accounts.
    pub fn is_many(&self) -> bool {
        self.mode != Mode::Single
    }

    /// The account whose push path is `path`, as it is now: one load of the table. A
    /// fleet of one compares its one path instead of hashing.
    pub fn route(&self, path: &str) -> Option<Arc<Live>> {
        let table = self.table.load();
        match (&self.mode, table.sorted.as_slice()) {
            (Mode::Single, [only]) => (*only.account.path == *path).then(|| Arc::clone(only)),
            _ => table.by_path.get(path).cloned(),
        }
    }

    /// The table as it is now.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// The account named `name`, as it is now.
    pub fn by_name(&self, name: &str) -> Option<Arc<Live>> {
        self.table.load().by_name(name).cloned()
    }

    /// The one account of a fleet of one, or the first by name.
    pub fn first(&self) -> Option<Arc<Live>> {
        self.table.load().sorted.first().cloned()
    }

    /// Puts `live` in place of the account of the same name (or adds it).
    pub fn put(&self, live: Arc<Live>) {
        let _one_writer = self.writing.lock();
        let table = self.table.load();
        let mut accounts: Vec<Arc<Live>> = table
            .sorted
            .iter()
            .filter(|a| a.account.name != live.account.name)
            .cloned()
            .collect();
        accounts.push(live);
        self.table.store(Arc::new(Table::new(accounts)));
    }

    /// Puts a new list of accounts in place.
    pub fn replace(&self, accounts: Vec<Arc<Live>>) {
        let _one_writer = self.writing.lock();
        self.table.store(Arc::new(Table::new(accounts)));
    }

    /// Notes `account`, no longer in the table, as retiring until it is dropped.
    pub fn note_retiring(&self, account: &Arc<Account>) {
        let mut retiring = self.retiring.lock();
        retiring.retain(|a| a.strong_count() > 0);
        retiring.push(Arc::downgrade(account));
    }

    /// The accounts a reload took out of the table whose outbox is still open.
    pub fn retiring(&self) -> Vec<Arc<Account>> {
        self.retiring
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}
