//! The `--config` file: global settings and `accounts:`, read and checked, every error with
//! its `file:line:col` (at its own field, block or flow style alike). Paths in it are
//! relative to the file's directory. Secrets are named here, never held: each account says
//! where its own come from (`secrets::SecretSources`). No HTTP, no rules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::editors::{EditorSpec, RawEditor};
use super::secrets::{SecretSource, SecretSources};
use crate::rules::excerpt;
use crate::rules::{Location, Sources};

/// Paths an account cannot take: the public port serves these itself.
const RESERVED_PATHS: [&str; 2] = ["/healthz", "/metrics"];
/// The largest config file read: 1,000 accounts take about 300 KB.
const MAX_CONFIG_FILE: u64 = 16 * 1024 * 1024;

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
    #[serde(default)]
    editors: Vec<RawEditor>,
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
    /// The account's rule tests: the cases a change made in the page must pass.
    tests: Option<PathBuf>,
    /// Whether the account has WeChat's customer-service API (default true; unverified
    /// subscription accounts do not).
    customer_service: Option<bool>,
    /// The account's custom menu (`menu.yaml`), for `check` and `wxrules menu`.
    menu: Option<PathBuf>,
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
    /// Who may change the replies in the page.
    pub editors: Vec<EditorSpec>,
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
    /// Its rule tests (`tests:`; for a fleet of one `--tests`, or `rules/tests.yaml` beside
    /// the rules when it exists): the cases a change made in the page must pass.
    pub tests: Option<PathBuf>,
    /// Whether the account has WeChat's customer-service API (`customer_service:`,
    /// `--customer-service`; default true). Without it `send:` is refused and `late`
    /// answers go through WeChat's retries and the next message.
    pub customer_service: bool,
    /// Its custom menu (`menu:`; for a fleet of one, `menu.yaml` beside the rules when it
    /// exists).
    pub menu: Option<PathBuf>,
}

impl AccountSpec {
    /// The one account of a server without `--config` (a fleet of one): `default`, at
    /// `/wechat`, its secrets from the `WXRULES_*` variables.
    pub fn single(sources: Sources) -> AccountSpec {
        AccountSpec {
            name: super::DEFAULT_ACCOUNT.to_owned(),
            path: super::SINGLE_PATH.to_owned(),
            sources,
            secrets: SecretSources::environment(),
            line: 0,
            tests: None,
            customer_service: true,
            menu: None,
        }
    }
}

/// Reads and checks a `--config` file; every error, each with its `file:line:col`.
pub fn read_config(path: &Path) -> Result<Config, ConfigErrors> {
    let fail = |at: Option<(usize, usize)>, message: String| ConfigError {
        location: Location::new(path, at),
        account: None,
        message: excerpt::cut(&message, excerpt::MESSAGE_CHARS),
    };
    let text = crate::rules::read_text(path, MAX_CONFIG_FILE)
        .map_err(|e| ConfigErrors(vec![fail(None, format!("cannot read: {e}"))]))?;
    let raw: RawConfig = serde_yaml::from_str(&text).map_err(|e| {
        let at = e.location().map(|l| (l.line(), l.column()));
        ConfigErrors(vec![fail(at, yaml_message(&e.to_string()))])
    })?;
    let mut reading = Reading {
        path,
        base: match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        },
        positions: crate::rules::Positions::index(&text),
        errors: Vec::new(),
        by_name: HashMap::new(),
        by_path: HashMap::new(),
        editor_names: Vec::new(),
    };
    if raw.accounts.is_empty() {
        reading.errors.push(fail(
            Some((1, 1)),
            "no `accounts:`: a config file serves one account or more".into(),
        ));
    }
    let accounts: Vec<AccountSpec> = raw
        .accounts
        .into_iter()
        .enumerate()
        .map(|(i, a)| reading.account(i, a))
        .collect();
    let editors: Vec<EditorSpec> = raw
        .editors
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| reading.editor(i, e, &accounts))
        .collect();
    if !reading.errors.is_empty() {
        return Err(ConfigErrors(reading.errors));
    }
    Ok(Config {
        path: path.to_owned(),
        listen: raw.listen,
        store: raw.store,
        max_age: raw.max_age,
        wechat_api: raw.wechat_api,
        admin_listen: raw.admin_listen,
        accounts,
        editors,
    })
}

/// serde_yaml's message about the file, as an error may show it: a file that is not a
/// mapping (a secret's file, `/etc/passwd`) said to be so without a word of it; any other
/// message with what it quotes cut to an excerpt; the position, given apart, left out.
fn yaml_message(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    match excerpt::root_kind(message, "RawConfig") {
        Some(kind) => format!(
            "not a config file: a YAML mapping with `accounts:` was expected, and this is {kind} (its text is not shown)"
        ),
        None => excerpt::serde_message(message),
    }
}

/// A config file being read: where it is, its YAML positions, and what it said so far.
struct Reading<'a> {
    path: &'a Path,
    /// The file's directory, which relative paths start from.
    base: PathBuf,
    positions: crate::rules::Positions,
    errors: Vec<ConfigError>,
    by_name: HashMap<String, usize>,
    by_path: HashMap<String, String>,
    editor_names: Vec<String>,
}

impl Reading<'_> {
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// An error of `account`, whose name (as written, maybe not a valid one) and the
    /// message are bounded: both come from the file.
    fn problem(&mut self, at: Option<(usize, usize)>, account: &str, message: &str) {
        self.errors.push(ConfigError {
            location: Location::new(self.path, at),
            account: Some(excerpt::cut(account, excerpt::NAME_CHARS)),
            message: excerpt::cut(message, excerpt::MESSAGE_CHARS),
        });
    }

    /// The `i`th account, checked: its errors are kept, each at its own field (block or
    /// flow style alike), else at the account.
    fn account(&mut self, i: usize, a: RawAccount) -> AccountSpec {
        let at = self.positions.value(&format!("accounts[{i}].name"));
        let line = at.map_or(0, |(line, _)| line);
        if !valid_name(&a.name) {
            self.problem(
                at,
                &a.name,
                "a name is 1 to 64 of a-z, 0-9, `-` and `_` (it is a URL path and a metric label)",
            );
        }
        if self.by_name.insert(a.name.clone(), i).is_some() {
            self.problem(at, &a.name, "a second account of this name");
        }
        let path = a
            .path
            .clone()
            .unwrap_or_else(|| format!("/wechat/{}", a.name));
        let path_at = if a.path.is_some() {
            self.positions.value(&format!("accounts[{i}].path"))
        } else {
            at
        };
        if let Some(why) = self.path_problem(&path, &a.name) {
            self.problem(path_at, &a.name, &why);
        }
        let secrets = self.secrets(i, &a);
        let rules = self.resolve(&a.rules);
        // A rules file that is one of the account's secret files would be read, and its
        // errors shown, as rules: refused here, by name only.
        for (key, file) in [
            ("token_file", &secrets.token),
            ("appid_file", &secrets.appid),
            ("aes_key_file", &secrets.aes_key),
            ("appsecret_file", &secrets.appsecret),
        ] {
            if matches!(file, Some(SecretSource::File(f)) if *f == rules) {
                let at = self.positions.value(&format!("accounts[{i}].rules"));
                self.problem(
                    at,
                    &a.name,
                    &format!("`rules` is the account's `{key}`: a secret is never read as rules"),
                );
            }
        }
        AccountSpec {
            path,
            sources: Sources {
                rules,
                templates: self.resolve(&a.templates),
            },
            secrets,
            line,
            tests: a.tests.as_deref().map(|t| self.resolve(t)),
            customer_service: a.customer_service.unwrap_or(true),
            menu: a.menu.as_deref().map(|m| self.resolve(m)),
            name: a.name,
        }
    }

    /// What is wrong with `path` as `name`'s push path, if anything.
    fn path_problem(&mut self, path: &str, name: &str) -> Option<String> {
        if !valid_path(path) {
            Some(format!(
                "path `{}` must start with `/` and hold only letters, digits and `/-_.~`",
                excerpt::excerpt(path)
            ))
        } else if RESERVED_PATHS.contains(&path) || path.starts_with("/-/") {
            Some(format!("path `{path}` is the server's own"))
        } else {
            self.by_path
                .insert(path.to_owned(), name.to_owned())
                .map(|other| format!("path `{path}` is also account `{other}`'s"))
        }
    }

    /// The `i`th editor, checked: a name (shown in the page and the history), its token by
    /// variable or file, and the accounts it names, which must be the file's.
    fn editor(&mut self, i: usize, e: RawEditor, accounts: &[AccountSpec]) -> Option<EditorSpec> {
        match self.check_editor(e, accounts) {
            Ok(spec) => Some(spec),
            Err((name, message)) => {
                let at = self.positions.value(&format!("editors[{i}].name"));
                self.errors.push(ConfigError {
                    location: Location::new(self.path, at),
                    account: None,
                    message: format!("editor `{name}`: {message}"),
                });
                None
            }
        }
    }

    /// `e` as a spec, or its name (cut short) and what is wrong with it.
    fn check_editor(
        &mut self,
        e: RawEditor,
        accounts: &[AccountSpec],
    ) -> Result<EditorSpec, (String, String)> {
        let shown: String = e.name.chars().take(64).collect();
        let fail = |message: &str| Err((shown.clone(), message.to_owned()));
        if e.name.trim().is_empty()
            || e.name.chars().count() > 64
            || e.name.chars().any(char::is_control)
        {
            return fail("a name is 1 to 64 characters, none of them control characters");
        }
        if self.editor_names.contains(&e.name) {
            return fail("a second editor of this name");
        }
        self.editor_names.push(e.name.clone());
        let token = match (&e.token_env, &e.token_file) {
            (Some(_), Some(_)) => return fail("give token_env or token_file, not both"),
            (Some(var), None) if !var.is_empty() => SecretSource::Env(var.clone()),
            (None, Some(file)) => SecretSource::File(self.resolve(file)),
            _ => return fail("no token_env or token_file: every editor needs a token"),
        };
        if let Some(missing) = e
            .accounts
            .iter()
            .flatten()
            .find(|name| !accounts.iter().any(|a| &a.name == *name))
        {
            let missing: String = missing.chars().take(64).collect();
            return Err((shown, format!("no account `{missing}` in this file")));
        }
        Ok(EditorSpec {
            name: e.name,
            token,
            role: e.role,
            accounts: e.accounts,
        })
    }

    /// Where the `i`th account's secrets come from: each `*_env` or `*_file`, not both.
    fn secrets(&mut self, i: usize, a: &RawAccount) -> SecretSources {
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
            let picked = match (env, file) {
                (Some(_), Some(_)) => Err(format!("give {key}_env or {key}_file, not both")),
                (Some(name), None) if name.is_empty() => Err(format!("{key}_env is empty")),
                (Some(name), None) => Ok(Some(SecretSource::Env(name.clone()))),
                (None, Some(file)) => Ok(Some(SecretSource::File(self.resolve(file)))),
                (None, None) => Ok(None),
            };
            match picked {
                Ok(source) => *slot = source,
                // At the `_file` key when both are given, at the `_env` one when it is empty.
                Err(message) => {
                    let field = if file.is_some() { "file" } else { "env" };
                    let at = self.positions.key(&format!("accounts[{i}].{key}_{field}"));
                    self.problem(at, &a.name, &message);
                }
            }
        }
        if a.token_env.is_none() && a.token_file.is_none() {
            let at = self.positions.value(&format!("accounts[{i}]"));
            self.problem(
                at,
                &a.name,
                "no token_env or token_file: every account needs its Token",
            );
        }
        secrets
    }
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

    /// `--config` pointed at a secret's file, or at `/etc/passwd`, printed it:
    /// `invalid type: string "newstoken2"`. A file that is not a mapping is said to be so
    /// without a word of it, and a value serde quotes is cut to 40 characters.
    #[test]
    fn a_file_that_is_not_a_config_is_never_quoted() {
        for (tag, text) in [
            ("token", "newstoken2\n".to_owned()),
            ("passwd", "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n".to_owned()),
            ("line", "s3cr3t".repeat(2 << 20)),
        ] {
            let errors = config(tag, &text).unwrap_err().to_string();
            assert!(
                errors.ends_with("wxrules.yaml:1:1: not a config file: a YAML mapping with `accounts:` was expected, and this is a text (its text is not shown)"),
                "{tag}: {}",
                excerpt::cut(&errors, 300)
            );
        }
        let long = format!("s3cr3t{}", "A".repeat(10_000));
        let errors = config("value", &format!("max_age: \"{long}\"\naccounts: []\n")).unwrap_err();
        let text = errors.to_string();
        assert!(text.len() < 300, "{text}");
        assert!(
            text.contains(&format!("\"s3cr3t{}…\"", "A".repeat(34))),
            "{text}"
        );
        let errors = config(
            "name",
            &format!("accounts:\n  - name: \"{long}\"\n    rules: r.yaml\n    templates: t\n    token_env: T\n"),
        )
        .unwrap_err();
        assert!(errors.to_string().len() < 1_000, "{errors}");
    }

    /// An account whose `rules:` is its token file answered `invalid type: string
    /// "newstoken2"` in the log, the reload answer, the page and `/healthz`.
    #[test]
    fn a_rules_file_that_is_a_secrets_file_is_refused_by_name() {
        let errors = config(
            "rules-token",
            "accounts:\n  - name: news\n    rules: news.token\n    templates: t\n    token_file: news.token\n",
        )
        .unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(
            errors.0[0]
                .to_string()
                .ends_with("wxrules.yaml:3:12: account `news`: `rules` is the account's `token_file`: a secret is never read as rules"),
            "{errors}"
        );
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let errors = config("syntax", "accounts:\n  - name: a\n    rulez: x\n").unwrap_err();
        let e = &errors.0[0];
        assert_eq!(e.location.line, 3, "{e}");
        assert!(e.to_string().contains("unknown field `rulez`"), "{e}");
    }
}
