//! Rules: load `rules.yaml` and `templates/`, compile them into a `RuleSet`, and find the
//! rule that answers a message. The only module that knows the YAML schema. `load` is the
//! one entry point used by start-up, reload, `check`, `explain` and `test`. It reaches
//! nothing above it: the template language is its own (`tpl`, which `render` evaluates),
//! WeChat's deadline is `wire`'s; no HTTP, and no IO but `read`'s.

pub mod active;
pub mod budget;
pub(crate) mod compile;
pub mod conversation;
pub(crate) mod excerpt;
mod fields;
pub(crate) mod fold;
mod lint;
mod locate;
mod matcher;
mod media;
#[cfg(test)]
mod proptests;
mod read;
mod registry;
mod rule;
pub(crate) mod schema;
mod split;
mod templates;
pub(crate) mod tpl;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use compile::{
    files_digest, load, load_draft, load_str, read_sources, SourceFiles, MAX_ARTICLES,
};
pub use lint::{account_fit, compile_regexes, lint};
pub(crate) use locate::Positions;
pub use locate::MAX_YAML_DEPTH;
pub(crate) use media::expiry_day;
pub use media::{limits as media_limits, sha256_hex, MediaFile, MediaIds};
pub(crate) use read::{read_bytes, read_text, walk_templates};
pub use read::{
    MAX_RULES_FILE, MAX_TEMPLATES_TOTAL, MAX_TEMPLATE_DEPTH, MAX_TEMPLATE_FILE, MAX_TEMPLATE_FILES,
};
pub(crate) use rule::Extras;
pub use rule::{
    Action, ArticleSpec, Call, CallMethod, Late, MusicSpec, ReplySpec, Rule, Tpl, Via, VideoSpec,
};
pub use templates::{MAX_RENDER_DEPTH, MAX_TEMPLATE_NESTING};
pub use tpl::Simple;

/// Where `yaml` first nests deeper than `MAX_YAML_DEPTH`, if it does: to be checked before
/// serde_yaml reads any other YAML file (cases), as `load` does for the rules.
pub(crate) fn too_deep(yaml: &str) -> Option<(usize, usize)> {
    locate::LazyPositions::new(yaml).too_deep()
}

/// The rules whose templates `load` could not hold to WeChat's fields (beyond typos of the
/// fields every push carries), because their criteria do not pin them to kinds the catalog
/// knows: `check` says so.
pub fn unchecked_rules(rules: &RuleSet) -> Vec<&Rule> {
    rules
        .rules
        .iter()
        .filter(|rule| fields::matchable(&rule.when).is_none())
        .filter(|rule| {
            let mut tpls = Vec::new();
            for spec in rule.specs() {
                compile::collect_tpls(spec, &mut tpls);
            }
            // Templates that read nothing of the message (`{{state.tries}}`,
            // `{{captures.x}}`) need no fields checked.
            tpls.iter().any(|t| match t {
                Tpl::Literal(_) | Tpl::Media(_) => false,
                Tpl::Simple(simple) => simple
                    .roots()
                    .any(|r| !matches!(r, "rule" | "call" | "captures" | "state")),
                Tpl::Template(_) => true,
            })
        })
        .collect()
}

/// The JSON Schema of `rules.yaml`, generated from the types that parse it.
pub fn json_schema() -> String {
    schema::json_schema()
}
pub use matcher::{Captures, Match, Subject, Words, MAX_REGEX_LEN};

pub(crate) use matcher::Criteria;

/// Where the rules come from: the rules file and the templates directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub rules: PathBuf,
    pub templates: PathBuf,
}

/// A compiled, valid rule set: the rules in file order, their indexes and their templates.
/// Immutable; a reload builds a new one.
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    /// The rules written with `enabled: false`, in file order: checked, never matched.
    pub(crate) off: Vec<Rule>,
    pub(crate) index: matcher::Index,
    pub(crate) templates: registry::Registry,
    pub(crate) digest: String,
    pub(crate) templates_digest: String,
    pub(crate) template_count: usize,
    /// The share of the process's regex budget its regexes hold (`budget`), given back
    /// when the set is dropped.
    pub(crate) regex_budget: budget::Reservation,
    /// Whether a rule has a `call` or `send:`, whose answer may be kept for the user's next
    /// message (too late, long, or past WeChat's quota): only then does any push look for a
    /// kept answer (otherwise only `继续`, for the rest of a long reply).
    pub(crate) keeps: bool,
    /// Whether a rule reads (`when: { state }`) or writes (`set:`, `clear:`) a user's
    /// conversation state: only then does a push look its user's state up.
    pub(crate) converses: bool,
    /// The names of the states rules `set:`, in file order, each once.
    pub(crate) states: Vec<Arc<str>>,
    /// The media ids of its replies' files, as the uploader finds or makes them: the
    /// account's, shared by the sets it loads (`use_media_ids`).
    pub(crate) media_ids: Arc<MediaIds>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("templates", &self.template_count)
            .field("digest", &self.digest)
            .field("regex_bytes", &self.regex_budget.bytes())
            .finish()
    }
}

impl RuleSet {
    /// Whether a rule reads or writes a user's conversation state (`when: { state }`,
    /// `set:`, `clear:`): only then is a push's user's state looked up.
    pub fn converses(&self) -> bool {
        self.converses
    }

    /// The states rules `set:`, in file order.
    pub fn states(&self) -> &[Arc<str>] {
        &self.states
    }

    /// The `set:` of the rule named `rule` (on or off), for its `on_expire`.
    pub fn set_by(&self, rule: &str) -> Option<&conversation::SetState> {
        self.rules
            .iter()
            .chain(&self.off)
            .find(|r| r.name() == rule)
            .and_then(|r| match r.transition() {
                Some(conversation::Transition::Set(set)) => Some(set),
                _ => None,
            })
    }

    /// Whether a push of this account may find an answer kept for its user (a rule has a
    /// `call` or `send:`).
    pub fn keeps(&self) -> bool {
        self.keeps
    }

    /// The rules in file order (those that are on).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules written with `enabled: false`, in file order.
    pub fn off(&self) -> &[Rule] {
        &self.off
    }

    /// A hash of the rules file and every template, to tell versions apart.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// A hash of the template files alone.
    pub fn templates_digest(&self) -> &str {
        &self.templates_digest
    }

    /// How many template files were loaded.
    pub fn template_count(&self) -> usize {
        self.template_count
    }

    /// The media files its replies name (`file:`), each once, in file order.
    pub fn media_files(&self) -> Vec<Arc<MediaFile>> {
        let mut files: Vec<Arc<MediaFile>> = Vec::new();
        for rule in self.rules.iter().chain(&self.off) {
            let mut tpls = Vec::new();
            for spec in rule.specs() {
                compile::collect_tpls(spec, &mut tpls);
            }
            for tpl in tpls {
                if let Tpl::Media(file) = tpl {
                    if !files.iter().any(|f| f == file) {
                        files.push(Arc::clone(file));
                    }
                }
            }
        }
        files
    }

    /// Shares `ids` (the account's) as this set's media ids: a reload's new set knows what
    /// the old one's uploads found.
    pub fn use_media_ids(&mut self, ids: Arc<MediaIds>) {
        self.media_ids = ids;
    }

    /// The media ids of its replies' files found so far.
    pub fn media_ids(&self) -> &Arc<MediaIds> {
        &self.media_ids
    }

    /// The compiled templates, for rendering.
    pub(crate) fn templates(&self) -> &registry::Registry {
        &self.templates
    }

    /// Whether `self` and `other` hold one compiled copy of their template files (they
    /// do when the files are the same, and one of them was loaded while the other lived).
    pub fn shares_templates_with(&self, other: &RuleSet) -> bool {
        self.templates.shares_files_with(&other.templates)
    }

    /// Gives each rule the last hit of the rule of the same name in `old` (the set a reload
    /// replaces), so that the dashboard's "last hit" outlives reloads.
    pub fn carry_last_hits(&self, old: &RuleSet) {
        let hit: std::collections::HashMap<&str, u64> = old
            .rules
            .iter()
            .filter_map(|r| Some((r.name(), r.last_hit()?)))
            .collect();
        if hit.is_empty() {
            return;
        }
        for rule in &self.rules {
            if let Some(&at) = hit.get(rule.name()) {
                rule.mark_hit(at);
            }
        }
    }
}

/// A place in a file, 1-based; line and column are 0 when only the file is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub(crate) fn new(path: &Path, at: Option<(usize, usize)>) -> Location {
        let (line, column) = at.unwrap_or((0, 0));
        Location {
            path: path.to_owned(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        Ok(())
    }
}

/// One problem in the rules or templates: where, which rule, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {}{message}", rule.as_ref().map(|r| format!("rule `{r}`: ")).unwrap_or_default())]
pub struct RuleError {
    pub location: Location,
    pub rule: Option<String>,
    pub message: String,
}

/// Every error found while loading; the rule set was not built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub Vec<RuleError>);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.0)
    }
}

/// Errors one per line, as `LoadError` and `accounts::ConfigErrors` show them.
pub(crate) fn write_lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl std::error::Error for LoadError {}

/// A loaded rule set and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub rules: RuleSet,
    pub warnings: Vec<RuleError>,
}
