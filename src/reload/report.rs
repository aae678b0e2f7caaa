//! What a reload says: `Reloaded` (one account's load, as the loop sees it), `ReloadReport`
//! (one account's line, as `POST /-/reload` answers a fleet of one), `FleetReport` (every
//! account's line and the config file's errors), the log lines of each, and `Health`, what
//! `/healthz` shows. No IO beyond logging.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::accounts::{AccountHealth, AccountState, Live, ReloadOutcome};
use crate::rules::{LoadError, RuleSet};

/// How one account's reload went.
#[derive(Debug)]
pub enum Reloaded {
    /// The new rules are live.
    Applied {
        rules: usize,
        changes: Changes,
        /// The version replaced. Requests in flight may still hold it; the reload thread
        /// frees it once they are done (`release`), since freeing 100,000 rules takes a
        /// tenth of a second that no request should wait.
        replaced: Arc<Live>,
    },
    /// The files have errors; the old rules keep serving.
    Rejected(LoadError),
    /// The load did not finish in time (a hung file system): the old rules keep serving,
    /// and whatever the load gives if it ever finishes is thrown away.
    TimedOut { after: Duration },
    /// Thrown away: a newer reload is live, or this one had already timed out.
    Superseded,
}

impl Reloaded {
    pub fn outcome(&self) -> ReloadOutcome {
        match self {
            Reloaded::Applied { .. } => ReloadOutcome::Applied,
            Reloaded::Rejected(_) => ReloadOutcome::Rejected,
            Reloaded::TimedOut { .. } => ReloadOutcome::TimedOut,
            Reloaded::Superseded => ReloadOutcome::Superseded,
        }
    }

    /// The errors to show, each as `file:line:col: …`.
    pub fn errors(&self) -> Vec<String> {
        match self {
            Reloaded::Rejected(errors) => errors.0.iter().map(ToString::to_string).collect(),
            Reloaded::TimedOut { after } => vec![format!(
                "the reload did not finish within {} s (a file that cannot be read?); the previous rules keep serving",
                after.as_secs()
            )],
            Reloaded::Applied { .. } | Reloaded::Superseded => Vec::new(),
        }
    }
}

/// One account's reload as `POST /-/reload` answers it: what changed, or every error as
/// `file:line:col: …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub outcome: ReloadOutcome,
    /// The rules serving after it, and their digest.
    pub rules: usize,
    pub digest: String,
    #[serde(flatten)]
    pub changes: Changes,
    pub errors: Vec<String>,
}

impl ReloadReport {
    /// `outcome` on `live` (the account as it serves after it).
    pub fn new(live: &Live, outcome: ReloadOutcome, changes: Changes, errors: Vec<String>) -> Self {
        ReloadReport {
            outcome,
            rules: live.rules.rules().len(),
            digest: live.rules.digest().to_owned(),
            changes,
            errors,
        }
    }

    /// The report of `reloaded` on `live`.
    pub fn of(live: &Live, reloaded: &Reloaded) -> ReloadReport {
        let changes = match reloaded {
            Reloaded::Applied { changes, .. } => changes.clone(),
            _ => Changes::default(),
        };
        ReloadReport::new(live, reloaded.outcome(), changes, reloaded.errors())
    }

    /// Whether the new rules are live.
    pub fn applied(&self) -> bool {
        self.outcome == ReloadOutcome::Applied
    }
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
    pub fn between(old: &RuleSet, new: &RuleSet) -> Changes {
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

/// A reload of the accounts, as `POST /-/reload` answers it with a config file.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// `applied` (every account that changed took its new files), `unchanged`, `rejected`
    /// (none did), `partial` (some did), `skipped` (an earlier reload is still stuck) or
    /// `failed`.
    pub outcome: ReloadOutcome,
    /// Errors of the config file itself (then no account was added or removed), or why the
    /// reload could not run.
    pub config_errors: Vec<String>,
    /// One line per account that changed or failed; unchanged accounts are left out.
    pub accounts: Vec<AccountReport>,
    /// Accounts whose files did not change (and so were not loaded again).
    pub unchanged: usize,
}

/// One account's part of a fleet reload: its name, and its own report beside it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountReport {
    pub account: String,
    #[serde(flatten)]
    pub report: ReloadReport,
}

impl AccountReport {
    pub fn new(account: &str, report: ReloadReport) -> AccountReport {
        AccountReport {
            account: account.to_owned(),
            report,
        }
    }

    /// `outcome` for an account built or removed: its rules as they serve.
    pub fn of_live(live: &Live, outcome: ReloadOutcome) -> AccountReport {
        AccountReport::new(
            live.name(),
            ReloadReport::new(live, outcome, Changes::default(), Vec::new()),
        )
    }

    /// An account whose new version was refused: `serving`, its previous version, keeps
    /// serving (the report gives its rules), or nothing of it serves.
    pub fn refused(account: &str, serving: Option<&Live>, errors: Vec<String>) -> AccountReport {
        match serving {
            Some(live) => AccountReport::new(
                account,
                ReloadReport::new(live, ReloadOutcome::Rejected, Changes::default(), errors),
            ),
            None => AccountReport::failed(account, errors),
        }
    }

    /// An account that could not be (re)built: nothing of it serves from this reload.
    pub fn failed(account: &str, errors: Vec<String>) -> AccountReport {
        AccountReport::new(
            account,
            ReloadReport {
                outcome: ReloadOutcome::Rejected,
                rules: 0,
                digest: String::new(),
                changes: Changes::default(),
                errors,
            },
        )
    }
}

impl FleetReport {
    pub fn empty() -> FleetReport {
        FleetReport {
            outcome: ReloadOutcome::Applied,
            config_errors: Vec::new(),
            accounts: Vec::new(),
            unchanged: 0,
        }
    }

    /// Whether every account that changed took its new files (and the config file read).
    pub fn applied(&self) -> bool {
        matches!(
            self.outcome,
            ReloadOutcome::Applied | ReloadOutcome::Unchanged
        )
    }

    /// A reload that could not run (`outcome`: failed or skipped), and why.
    pub fn not_run(outcome: ReloadOutcome, why: String) -> FleetReport {
        FleetReport {
            outcome,
            config_errors: vec![why],
            ..FleetReport::empty()
        }
    }

    /// The outcome of the whole from its lines.
    pub fn settle(mut self) -> FleetReport {
        let bad = |a: &AccountReport| {
            !matches!(
                a.report.outcome,
                ReloadOutcome::Applied | ReloadOutcome::Added | ReloadOutcome::Removed
            )
        };
        let failed = self.accounts.iter().filter(|a| bad(a)).count();
        let good = self.accounts.len() - failed;
        self.outcome = match (good, failed + self.config_errors.len()) {
            (0, 0) => ReloadOutcome::Unchanged,
            (_, 0) => ReloadOutcome::Applied,
            (0, _) => ReloadOutcome::Rejected,
            _ => ReloadOutcome::Partial,
        };
        self
    }

    /// The report of a fleet of one, as Part 1's `/-/reload` answered it: its account's
    /// line, or (when the reload could not run) the account as it serves with the reason.
    pub fn single(&self, live: &Live) -> ReloadReport {
        match self.accounts.first() {
            Some(line) => line.report.clone(),
            None => ReloadReport::new(
                live,
                self.outcome,
                Changes::default(),
                self.config_errors.clone(),
            ),
        }
    }
}

/// What `/healthz` shows: `status`, then what is served.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, or with a config file `degraded` when an account's last reload or the config
    /// file's was refused.
    pub status: &'static str,
    #[serde(flatten)]
    pub served: Served,
}

/// The accounts of `/healthz`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Served {
    /// A fleet of one: its account's fields, at the top as in Part 1.
    One(AccountState),
    /// The accounts of a config file, each under its name; those that cannot be served;
    /// and the last reload of them all.
    Many {
        accounts: BTreeMap<String, AccountHealth>,
        unserved: BTreeMap<String, UnservedHealth>,
        last_reload: Option<FleetReport>,
    },
}

/// How much of the errors `/healthz` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// How many, and the outcomes: for anyone.
    Counts,
    /// Their texts too: for a request with the admin token.
    Errors,
}

impl Served {
    /// Takes out every error's text, keeping the counts.
    pub(super) fn redact(&mut self) {
        match self {
            Served::One(state) => redact_last(&mut state.last_reload),
            Served::Many {
                accounts,
                last_reload,
                ..
            } => {
                for health in accounts.values_mut() {
                    redact_last(&mut health.state.last_reload);
                }
                if let Some(report) = last_reload {
                    report.redact();
                }
            }
        }
    }
}

fn redact_last(last: &mut Option<crate::accounts::LastReload>) {
    if let Some(last) = last {
        last.errors.clear();
    }
}

impl FleetReport {
    /// Takes out every error's text: the config file's and each account's.
    fn redact(&mut self) {
        let count = self.config_errors.len();
        self.config_errors.clear();
        if count > 0 {
            self.config_errors.push(format!(
                "{count} error(s) in the config file (the log has them)"
            ));
        }
        for line in &mut self.accounts {
            let count = line.report.errors.len();
            line.report.errors.clear();
            if count > 0 {
                line.report
                    .errors
                    .push(format!("{count} error(s) (the log has them)"));
            }
        }
    }
}

/// What `/healthz` shows of an account that cannot be served: how many errors, not what
/// they say (the log and the dashboard, behind its token, have them).
#[derive(Debug, Serialize)]
pub struct UnservedHealth {
    pub outcome: ReloadOutcome,
    pub error_count: usize,
    /// When it was last refused; shown as RFC 3339.
    #[serde(serialize_with = "crate::clock::rfc3339")]
    pub at: u64,
}

/// Logs one account's reload with stable event names; `account` (with a config file) is a
/// field of each line.
pub(super) fn log_reloaded(live: &Live, reloaded: &Reloaded) {
    let account = live.account.log_name();
    let path = live.account.sources().rules.display().to_string();
    match reloaded {
        Reloaded::Applied { rules, changes, .. } => {
            tracing::info!(
                event = "rules_reloaded",
                account,
                rules,
                path,
                digest = live.rules.digest(),
                added = ?changes.added,
                removed = ?changes.removed,
                changed = ?changes.changed,
                templates_changed = changes.templates_changed,
            );
        }
        Reloaded::Rejected(errors) => {
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
        Reloaded::TimedOut { after } => tracing::error!(
            event = "rules_reload_timed_out",
            account,
            path,
            seconds = after.as_secs(),
            "the reload did not finish in time (a file that cannot be read?); the previous rules keep serving"
        ),
        Reloaded::Superseded => {
            tracing::info!(event = "rules_reload_superseded", account, path, "a late reload's result was thrown away");
        }
    }
}

/// Rules with `send:` or `late:` on an account that cannot send: warned at start-up and
/// after each reload that applies, naming the account and what it lacks (with a config
/// file, its `appid_*`/`appsecret_*`; alone, `WXRULES_APPID`/`WXRULES_APPSECRET`); each
/// such message is counted (`unsendable`) when it comes.
pub fn warn_unsendable(live: &Live) {
    if live.sends() {
        return;
    }
    let account = live.account.log_name();
    let rules = live.rules.rules();
    let sends: Vec<&str> = rules
        .iter()
        .filter(|r| !r.send().is_empty())
        .map(|r| r.name())
        .collect();
    let late: Vec<&str> = rules
        .iter()
        .filter(|r| r.call().is_some_and(|c| c.late().is_some()))
        .map(|r| r.name())
        .collect();
    let files = live.rules.media_files();
    if sends.is_empty() && late.is_empty() && files.is_empty() {
        return;
    }
    let needs = missing_credentials(live);
    if !files.is_empty() {
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        tracing::warn!(
            event = "media_unconfigured",
            account,
            files = ?names,
            "replies that name a `file` need {needs} to upload it; until then they answer `success`"
        );
    }
    if !sends.is_empty() {
        tracing::warn!(
            event = "sends_unconfigured",
            account,
            rules = ?sends,
            "rules with `send:` need {needs}; their passive replies go out, their `send:` messages do not"
        );
    }
    if !late.is_empty() {
        tracing::warn!(
            event = "late_replies_unconfigured",
            account,
            rules = ?late,
            "rules with `late:` need {needs}; a call that answers after `late.after` has its reply dropped"
        );
    }
}

/// What an account that cannot send lacks, in the words of where its secrets come from.
/// It lacks the AppSecret (an AppSecret without an AppID does not build), and maybe the
/// AppID too.
fn missing_credentials(live: &Live) -> String {
    use crate::accounts::SecretSource;
    if live.account.log_name().is_none() {
        return "WXRULES_APPID and WXRULES_APPSECRET".into();
    }
    let secrets = &live.account.spec().secrets;
    let named = |source: &Option<SecretSource>, key: &str| match source {
        None => format!("no `{key}_env` or `{key}_file`"),
        Some(SecretSource::Env(name)) => format!("`{key}_env: {name}`, which is unset or empty"),
        Some(SecretSource::File(path)) => {
            format!("`{key}_file: {}`, which is empty", path.display())
        }
    };
    let secret = named(&secrets.appsecret, "appsecret");
    match &secrets.appid {
        Some(_) => format!(
            "the AppSecret of account `{}` (it has {secret})",
            live.name()
        ),
        None => format!(
            "the AppID and AppSecret of account `{}` (it has {} and {secret})",
            live.name(),
            named(&secrets.appid, "appid")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::compile_yaml;

    const RULES: &str = "rules:
  - name: today
    when: { keyword: 今天 }
    reply: { text: 好 }
  - name: help
    when: { keyword: 帮助 }
    reply: { text: 帮助 }
";

    /// Comments, blank lines, the order of a rule's keys, quoting and moved lines change
    /// no rule; a changed reply changes its rule alone. Before the fix the comment-only
    /// edit reported `changed: today` (the comments fell in its text).
    #[test]
    fn a_rule_is_changed_only_when_what_it_does_changed() {
        let before = compile_yaml(RULES).unwrap();
        let commented = "# the shop's rules
rules:
  # what today is
  - name: today   # the first rule

    reply: { text: \"好\" }
    when:
      keyword: 今天
  # ---- help ----

  - name: help
    when: { keyword: 帮助 }
    reply: { text: 帮助 }
# the end
";
        let after = compile_yaml(commented).unwrap();
        assert_eq!(Changes::between(&before, &after), Changes::default());
        let edited = compile_yaml(&commented.replace("\"好\"", "很好")).unwrap();
        let changes = Changes::between(&after, &edited);
        assert_eq!(changes.changed, ["today"]);
        assert!(changes.added.is_empty() && changes.removed.is_empty());
    }
}
