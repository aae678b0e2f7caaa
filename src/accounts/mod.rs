//! Many accounts in one server: the `--config` file (global settings and `accounts:`), each
//! account's secrets (from environment variables or files, never from the file itself), and
//! the table of live accounts by URL path that the push handler looks up. The single-account
//! mode is the same table with one entry, `default` at `/wechat`. No HTTP here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

pub mod fleet;

use crate::outbox::{Outbox, Senders};
use crate::reload::Live;
use crate::rules::{Location, Sources};
use crate::settings::Secrets;
use crate::wechat_api::Credentials;

/// The name of the one account of the single-account mode (no `--config`).
pub const DEFAULT_ACCOUNT: &str = "default";
/// Its push path, as in Part 1.
pub const SINGLE_PATH: &str = "/wechat";
/// Paths an account cannot take: the public port serves these itself.
const RESERVED_PATHS: [&str; 2] = ["/healthz", "/metrics"];
/// The largest config file read: 1,000 accounts take about 300 KB.
const MAX_CONFIG_FILE: u64 = 16 * 1024 * 1024;
/// The largest secret file read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The `--config` file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<SocketAddr>,
    store: Option<String>,
    max_age: Option<u64>,
    wechat_api: Option<String>,
    admin_listen: Option<SocketAddr>,
    #[serde(default)]
    accounts: Vec<RawAccount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
    path: Option<String>,
    rules: PathBuf,
    templates: PathBuf,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    appid_env: Option<String>,
    appid_file: Option<PathBuf>,
    aes_key_env: Option<String>,
    aes_key_file: Option<PathBuf>,
    appsecret_env: Option<String>,
    appsecret_file: Option<PathBuf>,
}

/// A config file that cannot be used: where, which account, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {}{message}", account.as_ref().map(|a| format!("account `{a}`: ")).unwrap_or_default())]
pub struct ConfigError {
    pub location: Location,
    pub account: Option<String>,
    pub message: String,
}

/// Every error of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::rules::write_lines(f, &self.0)
    }
}

impl std::error::Error for ConfigErrors {}

/// The `--config` file, read and checked. Paths are resolved against the file's directory.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub listen: Option<SocketAddr>,
    pub store: Option<String>,
    pub max_age: Option<u64>,
    pub wechat_api: Option<String>,
    pub admin_listen: Option<SocketAddr>,
    pub accounts: Vec<AccountSpec>,
}

impl std::fmt::Debug for Config {
    // `store` may be `redis://:password@…`: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("listen", &self.listen)
            .field("store", &self.store.as_ref().map(|_| "<set>"))
            .field("max_age", &self.max_age)
            .field("wechat_api", &self.wechat_api)
            .field("admin_listen", &self.admin_listen)
            .field("accounts", &self.accounts)
            .finish()
    }
}

impl Config {
    /// The account named `name`.
    pub fn account(&self, name: &str) -> Option<&AccountSpec> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The names, for messages.
    pub fn names(&self) -> String {
        self.accounts
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One account as the config file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    pub name: String,
    /// Its push path (`/wechat/NAME` unless given).
    pub path: String,
    pub sources: Sources,
    pub secrets: SecretSources,
    /// The line of its `name:`, for messages about it.
    pub line: usize,
}

/// Where each of an account's secrets comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSources {
    pub token: Option<SecretSource>,
    pub appid: Option<SecretSource>,
    pub aes_key: Option<SecretSource>,
    pub appsecret: Option<SecretSource>,
}

/// An environment variable's name or a file's path; the value is read when the account is
/// built, and never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// The value, trimmed of surrounding whitespace (a file's last newline); an error names
    /// the variable or file, never the value.
    fn read(&self) -> Result<String, String> {
        let value = match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?,
            SecretSource::File(path) => crate::rules::read_text(path, MAX_SECRET_FILE)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{} is empty", self.describe()));
        }
        Ok(value.to_owned())
    }
}

/// An account's secrets, read: the request checks and, with an AppSecret, the API's.
pub struct ResolvedSecrets {
    pub secrets: Secrets,
    pub credentials: Option<Credentials>,
    /// A hash of the values, to tell on a reload whether they changed. Never shown.
    fingerprint: u64,
}

impl SecretSources {
    /// Reads every secret; the errors name the variables or files, never a value.
    pub fn resolve(&self) -> Result<ResolvedSecrets, String> {
        let read = |s: &Option<SecretSource>| s.as_ref().map(SecretSource::read).transpose();
        let token = read(&self.token)?.ok_or("no token_env or token_file")?;
        let appid = read(&self.appid)?;
        let aes_key = read(&self.aes_key)?;
        let appsecret = read(&self.appsecret)?;
        let cipher = match (&aes_key, &appid) {
            (Some(key), Some(appid)) => Some(
                crate::crypto::Cipher::new(key, appid).map_err(|e| format!("the AES key: {e}"))?,
            ),
            (Some(_), None) => {
                return Err("an AES key needs an AppID (appid_env or appid_file)".into())
            }
            (None, _) => None,
        };
        let credentials = match (&appid, &appsecret) {
            (Some(appid), Some(secret)) => Some(Credentials::new(appid, secret)),
            (None, Some(_)) => {
                return Err("an AppSecret needs an AppID (appid_env or appid_file)".into())
            }
            (_, None) => None,
        };
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&token, &appid, &aes_key, &appsecret).hash(&mut h);
            h.finish()
        };
        Ok(ResolvedSecrets {
            secrets: Secrets::from_parts(&token, cipher),
            credentials,
            fingerprint,
        })
    }
}

/// Reads and checks a `--config` file; every error, each with its `file:line:col`.
pub fn read_config(path: &Path) -> Result<Config, ConfigErrors> {
    let fail = |at: Option<(usize, usize)>, account: Option<&str>, message: String| ConfigError {
        location: Location::new(path, at),
        account: account.map(str::to_owned),
        message,
    };
    let text = crate::rules::read_text(path, MAX_CONFIG_FILE)
        .map_err(|e| ConfigErrors(vec![fail(None, None, format!("cannot read: {e}"))]))?;
    let raw: RawConfig = serde_yaml::from_str(&text).map_err(|e| {
        let at = e.location().map(|l| (l.line(), l.column()));
        ConfigErrors(vec![fail(at, None, e.to_string())])
    })?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let positions = crate::rules::Positions::index(&text);
    let mut errors = Vec::new();
    let mut accounts: Vec<AccountSpec> = Vec::with_capacity(raw.accounts.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut by_path: HashMap<String, String> = HashMap::new();
    if raw.accounts.is_empty() {
        errors.push(fail(
            Some((1, 1)),
            None,
            "no `accounts:`: a config file serves one account or more".into(),
        ));
    }
    for (i, a) in raw.accounts.into_iter().enumerate() {
        // Each error at its own field (block or flow style alike), else at the account.
        let field_at = |field: &str| positions.key(&format!("accounts[{i}].{field}"));
        let at = positions.value(&format!("accounts[{i}].name"));
        let line = at.map_or(0, |(line, _)| line);
        let mut problem = |at: Option<(usize, usize)>, message: String| {
            errors.push(fail(at, Some(&a.name), message))
        };
        if !valid_name(&a.name) {
            problem(
                at,
                "a name is 1 to 64 of a-z, 0-9, `-` and `_` (it is a URL path and a metric label)"
                    .into(),
            );
        }
        if by_name.insert(a.name.clone(), i).is_some() {
            problem(at, "a second account of this name".into());
        }
        let path = a
            .path
            .clone()
            .unwrap_or_else(|| format!("/wechat/{}", a.name));
        let path_at = if a.path.is_some() {
            positions.value(&format!("accounts[{i}].path"))
        } else {
            at
        };
        if !valid_path(&path) {
            problem(
                path_at,
                format!(
                    "path `{path}` must start with `/` and hold only letters, digits and `/-_.~`"
                ),
            );
        } else if RESERVED_PATHS.contains(&path.as_str()) {
            problem(path_at, format!("path `{path}` is the server's own"));
        } else if let Some(other) = by_path.insert(path.clone(), a.name.clone()) {
            problem(
                path_at,
                format!("path `{path}` is also account `{other}`'s"),
            );
        }
        let pick = |env: &Option<String>, file: &Option<PathBuf>, key: &str| match (env, file) {
            (Some(_), Some(_)) => Err(format!("give {key}_env or {key}_file, not both")),
            (Some(name), None) if name.is_empty() => Err(format!("{key}_env is empty")),
            (Some(name), None) => Ok(Some(SecretSource::Env(name.clone()))),
            (None, Some(file)) => Ok(Some(SecretSource::File(resolve(file)))),
            (None, None) => Ok(None),
        };
        let mut secrets = SecretSources::default();
        for (slot, env, file, key) in [
            (&mut secrets.token, &a.token_env, &a.token_file, "token"),
            (&mut secrets.appid, &a.appid_env, &a.appid_file, "appid"),
            (
                &mut secrets.aes_key,
                &a.aes_key_env,
                &a.aes_key_file,
                "aes_key",
            ),
            (
                &mut secrets.appsecret,
                &a.appsecret_env,
                &a.appsecret_file,
                "appsecret",
            ),
        ] {
            match pick(env, file, key) {
                Ok(source) => *slot = source,
                // At the `_file` key when both are given, at the `_env` one when it is empty.
                Err(message) => {
                    let field = if file.is_some() { "file" } else { "env" };
                    problem(field_at(&format!("{key}_{field}")), message);
                }
            }
        }
        if a.token_env.is_none() && a.token_file.is_none() {
            problem(
                positions.value(&format!("accounts[{i}]")),
                "no token_env or token_file: every account needs its Token".into(),
            );
        }
        accounts.push(AccountSpec {
            name: a.name,
            path,
            sources: Sources {
                rules: resolve(&a.rules),
                templates: resolve(&a.templates),
            },
            secrets,
            line,
        });
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        path: path.to_owned(),
        listen: raw.listen,
        store: raw.store,
        max_age: raw.max_age,
        wechat_api: raw.wechat_api,
        admin_listen: raw.admin_listen,
        accounts,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn valid_path(path: &str) -> bool {
    // Segments a proxy would fold away (`.`, `..`, an empty one, a trailing `/`) would make
    // the path one WeChat's pushes never arrive at.
    path.starts_with('/')
        && path.len() <= 256
        && path[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
}

/// One account being served: its rules, secrets and outbox, and how its keys are kept apart.
pub struct Account {
    name: Arc<str>,
    path: String,
    pub live: Arc<Live>,
    pub secrets: Arc<Secrets>,
    pub outbox: Arc<Outbox>,
    /// Put in front of the account's dedup and cooldown keys: empty in the single-account
    /// mode (its keys as in Part 1), `a=NAME:` with several.
    scope: Box<str>,
    /// The account's name in log lines: none in the single-account mode.
    log_name: Option<Arc<str>>,
    /// The outbox's senders, drained at a stop or when the account goes away. Held across
    /// the drain, so that a stop that meets a retiring account's drain waits for it.
    senders: tokio::sync::Mutex<Option<Senders>>,
    /// What the account was built from, to tell on a reload whether to build it again.
    spec: Option<AccountSpec>,
    secrets_fingerprint: u64,
    /// The account's late calls running now: a retired account's outbox closes only once
    /// they have sent their replies.
    pub late_calls: crate::call::LateCalls,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What building an account needs besides its own parts.
pub struct AccountParts {
    pub live: Arc<Live>,
    pub secrets: Arc<Secrets>,
    pub outbox: Arc<Outbox>,
    pub senders: Option<Senders>,
}

impl Account {
    /// The account of the single-account mode.
    pub fn single(parts: AccountParts) -> Account {
        Account::build(DEFAULT_ACCOUNT, SINGLE_PATH, parts, None, 0)
    }

    /// An account of a `--config` file.
    pub fn from_spec(spec: &AccountSpec, parts: AccountParts, secrets_fingerprint: u64) -> Account {
        Account::build(
            &spec.name,
            &spec.path,
            parts,
            Some(spec.clone()),
            secrets_fingerprint,
        )
    }

    fn build(
        name: &str,
        path: &str,
        parts: AccountParts,
        spec: Option<AccountSpec>,
        secrets_fingerprint: u64,
    ) -> Account {
        let many = spec.is_some();
        let name: Arc<str> = Arc::from(name);
        Account {
            path: path.to_owned(),
            live: parts.live,
            secrets: parts.secrets,
            outbox: parts.outbox,
            scope: if many {
                format!("a={name}:").into()
            } else {
                "".into()
            },
            log_name: many.then(|| Arc::clone(&name)),
            name,
            senders: tokio::sync::Mutex::new(parts.senders),
            spec,
            secrets_fingerprint,
            late_calls: crate::call::LateCalls::default(),
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

    /// The prefix of the account's dedup and cooldown keys.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The `account` field of log lines; `None` (no field) in the single-account mode.
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
        self.spec.as_ref().is_some_and(|s| {
            s.path == spec.path && s.sources == spec.sources && s.secrets == spec.secrets
        }) && self.secrets_fingerprint == fingerprint
    }
}

/// The accounts being served, by push path; replaced whole when a reload adds or removes
/// one (an account's own rules reload inside its `Live`).
pub struct Accounts {
    table: ArcSwap<Table>,
    /// The one account without `--config` (none with it): a push takes it directly, no
    /// table to look in.
    single: Option<Arc<Account>>,
    /// The last reload of the config file, for `/healthz` (several accounts only).
    last_reload: parking_lot::Mutex<Option<fleet::FleetReport>>,
    /// Accounts a reload removed or replaced whose outbox has not closed yet (it waits
    /// for their late calls): a stop drains them with the others.
    retiring: parking_lot::Mutex<Vec<std::sync::Weak<Account>>>,
}

/// One version of the account table.
#[derive(Default)]
pub struct Table {
    by_path: HashMap<String, Arc<Account>, foldhash::fast::RandomState>,
    /// In name order, for listings.
    sorted: Vec<Arc<Account>>,
}

impl Table {
    fn new(accounts: Vec<Arc<Account>>) -> Table {
        let mut sorted = accounts;
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        Table {
            by_path: sorted
                .iter()
                .map(|a| (a.path.clone(), Arc::clone(a)))
                .collect(),
            sorted,
        }
    }

    /// Every account, by name.
    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.sorted
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Account>> {
        self.sorted
            .binary_search_by(|a| (*a.name).cmp(name))
            .ok()
            .map(|i| &self.sorted[i])
    }
}

impl Accounts {
    /// The single-account mode: `account` at `/wechat`.
    pub fn single(account: Account) -> Accounts {
        let account = Arc::new(account);
        Accounts {
            table: ArcSwap::from_pointee(Table::new(vec![Arc::clone(&account)])),
            single: Some(account),
            last_reload: parking_lot::Mutex::new(None),
            retiring: parking_lot::Mutex::default(),
        }
    }

    /// Several accounts from a config file.
    pub fn many(accounts: Vec<Arc<Account>>) -> Accounts {
        Accounts {
            table: ArcSwap::from_pointee(Table::new(accounts)),
            single: None,
            last_reload: parking_lot::Mutex::new(None),
            retiring: parking_lot::Mutex::default(),
        }
    }

    /// Whether the server runs from a config file of accounts.
    pub fn is_many(&self) -> bool {
        self.single.is_none()
    }

    /// The account whose push path is `path`.
    pub fn lookup(&self, path: &str) -> Option<Arc<Account>> {
        self.table.load().by_path.get(path).cloned()
    }

    /// `lookup` for a request: without `--config`, the one account (no table to look in;
    /// measured, a borrowed account made the push's future larger and its copies cost more
    /// than the reference count saved), or one of several.
    pub fn route(&self, path: &str) -> Option<Arc<Account>> {
        match &self.single {
            Some(account) => (path == SINGLE_PATH).then(|| Arc::clone(account)),
            None => self.lookup(path),
        }
    }

    /// The table as it is now.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// The account named `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<Account>> {
        self.table.load().by_name(name).cloned()
    }

    /// The one account of the single-account mode, or the first by name.
    pub fn first(&self) -> Option<Arc<Account>> {
        self.table.load().sorted.first().cloned()
    }

    /// Puts a new table in place.
    pub fn replace(&self, accounts: Vec<Arc<Account>>) {
        self.table.store(Arc::new(Table::new(accounts)));
    }

    /// Notes `account`, no longer in the table, as retiring until it is dropped.
    pub(crate) fn note_retiring(&self, account: &Arc<Account>) {
        let mut retiring = self.retiring.lock();
        retiring.retain(|a| a.strong_count() > 0);
        retiring.push(Arc::downgrade(account));
    }

    /// The accounts a reload took out of the table whose outbox is still open.
    pub fn retiring(&self) -> Vec<Arc<Account>> {
        self.retiring
            .lock()
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tag: &str, text: &str) -> Result<Config, ConfigErrors> {
        let dir =
            std::env::temp_dir().join(format!("wxrules-accounts-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wxrules.yaml");
        std::fs::write(&path, text).unwrap();
        let read = read_config(&path);
        let _ = std::fs::remove_dir_all(&dir);
        read
    }

    #[test]
    fn paths_are_relative_to_the_file_and_default_to_wechat_name() {
        let c = config(
            "good",
            "listen: 127.0.0.1:8081\naccounts:\n  - name: shop\n    rules: shop/rules.yaml\n    templates: shop/templates\n    token_env: SHOP_TOKEN\n  - name: city-bj\n    path: /wx/bj\n    rules: /abs/rules.yaml\n    templates: /abs/t\n    token_file: bj.token\n",
        )
        .unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:8081".parse().unwrap()));
        let shop = c.account("shop").unwrap();
        assert_eq!(shop.path, "/wechat/shop");
        assert!(shop.sources.rules.ends_with("shop/rules.yaml"));
        assert!(
            shop.sources.rules.is_absolute()
                || shop.sources.rules.starts_with(std::env::temp_dir())
        );
        assert_eq!(
            shop.secrets.token,
            Some(SecretSource::Env("SHOP_TOKEN".into()))
        );
        assert_eq!(shop.line, 3);
        let bj = c.account("city-bj").unwrap();
        assert_eq!(bj.path, "/wx/bj");
        assert_eq!(bj.sources.rules, PathBuf::from("/abs/rules.yaml"));
        assert!(
            matches!(&bj.secrets.token, Some(SecretSource::File(p)) if p.ends_with("bj.token"))
        );
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let errors = config(
            "bad",
            "accounts:\n  - name: Shop\n    rules: r.yaml\n    templates: t\n  - name: b\n    path: /healthz\n    rules: r.yaml\n    templates: t\n    token_env: B\n    token_file: b.token\n  - name: b\n    rules: r.yaml\n    templates: t\n    token_env: B\n",
        )
        .unwrap_err();
        let text = errors.to_string();
        // Each at its own field: the name, the path, the secret's key; a missing token at
        // the account.
        let expected = [
            "wxrules.yaml:2:11: account `Shop`: a name is 1 to 64",
            "wxrules.yaml:2:5: account `Shop`: no token_env or token_file",
            "wxrules.yaml:6:11: account `b`: path `/healthz` is the server's own",
            "wxrules.yaml:10:5: account `b`: give token_env or token_file, not both",
            "wxrules.yaml:11:11: account `b`: a second account of this name",
        ];
        for line in expected {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(errors.0.len(), expected.len(), "{text}");
    }

    #[test]
    fn flow_style_accounts_are_located_too() {
        let errors = config(
            "flow",
            "accounts: [\n  { name: a, rules: r.yaml, templates: t, token_env: A },\n  { name: a, rules: r.yaml, templates: t,\n    token_env: B, token_file: b, path: /metrics },\n  { name: c, rules: r.yaml, templates: t, token_env: '' } ]\n",
        )
        .unwrap_err();
        let text = errors.to_string();
        for line in [
            "wxrules.yaml:3:11: account `a`: a second account of this name",
            "wxrules.yaml:4:19: account `a`: give token_env or token_file, not both",
            "wxrules.yaml:4:40: account `a`: path `/metrics` is the server's own",
            "wxrules.yaml:5:43: account `c`: token_env is empty",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let errors = config("syntax", "accounts:\n  - name: a\n    rulez: x\n").unwrap_err();
        let e = &errors.0[0];
        assert_eq!(e.location.line, 3, "{e}");
        assert!(e.to_string().contains("unknown field `rulez`"), "{e}");
    }

    #[test]
    fn secrets_come_from_files_and_their_errors_name_the_source_only() {
        let dir = std::env::temp_dir().join(format!("wxrules-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "tok-from-file\n").unwrap();
        let sources = SecretSources {
            token: Some(SecretSource::File(dir.join("token"))),
            ..SecretSources::default()
        };
        let resolved = sources.resolve().unwrap();
        assert_eq!(resolved.secrets.token(), "tok-from-file");
        let missing = SecretSources {
            token: Some(SecretSource::Env("WXRULES_TEST_UNSET_VARIABLE_42".into())),
            ..SecretSources::default()
        };
        let e = missing.resolve().err().unwrap();
        assert_eq!(
            e,
            "environment variable WXRULES_TEST_UNSET_VARIABLE_42 is not set"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
