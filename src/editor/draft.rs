//! A draft: changes to an account's rules file and templates, worked out before anything
//! is written. The rules file's new text (only the edited rules' lines differ: `crate::edit`
//! writes it), the templates' new texts, the diff, `check`'s errors at their file, line and
//! column, and the account's rule tests run against the draft's rules, which the try panel
//! also answers from. No file is written here.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::history::FileChange;
use crate::edit::{self, Change};
use crate::rules::{LoadError, RuleSet, Sources};

/// What a draft is made for: an account's files, and its rule tests.
#[derive(Debug, Clone)]
pub struct Target {
    pub account: String,
    pub sources: Sources,
    /// The account's rule tests (`tests:`), when it has them.
    pub tests: Option<PathBuf>,
}

impl Target {
    /// The directory file paths of a change are relative to: the rules file's.
    pub fn base(&self) -> PathBuf {
        match self.sources.rules.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        }
    }
}

/// One error of `check`, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Relative to the rules file's directory.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The rule it concerns, if one.
    pub rule: Option<String>,
    pub message: String,
}

/// How the account's rule tests went on the draft.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub passed: usize,
    pub failed: Vec<FailedCase>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedCase {
    pub name: String,
    pub message: String,
}

/// A change worked out: what it writes, and whether it may.
pub struct Draft {
    pub id: String,
    pub account: String,
    pub editor: Arc<str>,
    /// The digest the editor's view began from: applying it to other files is a conflict.
    pub base: String,
    /// The digest of the files the draft was made on.
    pub made_on: String,
    pub changes: Vec<Change>,
    pub files: Vec<FileChange>,
    /// The rules file's text the draft was made on (relative path, text): what a conflict
    /// diffs the file now against.
    pub seen: (String, String),
    /// The rules it adds, removes or changes, by name.
    pub rules_changed: Vec<String>,
    pub diff: String,
    pub errors: Vec<FieldError>,
    pub tests: TestReport,
    /// The draft's rules, for the try panel; `None` when they do not load.
    pub rules: Option<RuleSet>,
    /// A rollback's: the change it goes back to before.
    pub rollback_of: Option<String>,
    pub made: std::time::Instant,
}

impl std::fmt::Debug for Draft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draft")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("editor", &self.editor)
            .finish_non_exhaustive()
    }
}

impl Draft {
    /// Whether it may be applied: it loads and every rule test passes.
    pub fn is_good(&self) -> bool {
        self.errors.is_empty() && self.tests.failed.is_empty()
    }
}

/// Why a draft could not be made at all (as opposed to one with errors).
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    /// A change that cannot be made to the file (no such rule, a duplicate name, …):
    /// which of the draft's changes, and why.
    #[error("{0}")]
    Change(#[from] edit::ChangeError),
    /// A template file name that is not one.
    #[error(
        "template `{0}`: a name is letters, digits, `-`, `_` and `/` between them, without `..`"
    )]
    TemplateName(String),
    /// The account's files cannot be read.
    #[error("{0}")]
    Read(String),
    /// A rule test's expectation cannot be taken.
    #[error("{0}")]
    Tests(String),
}

/// Works out `changes` to `target`'s files as they are now.
pub fn make(
    target: &Target,
    editor: Arc<str>,
    base: String,
    changes: Vec<Change>,
    live: Option<&RuleSet>,
) -> Result<Draft, DraftError> {
    let rules_text = crate::rules::read_text(&target.sources.rules, crate::rules::MAX_RULES_FILE)
        .map_err(|e| DraftError::Read(format!("cannot read the rules file: {e}")))?;
    let mut rule_changes = Vec::new();
    // Where each of `rule_changes` is among `changes`, for an error to name it.
    let mut places = Vec::new();
    let mut templates: Vec<(String, String)> = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        match change {
            Change::SetTemplate { file, text } => {
                let name = template_name(file)?;
                templates.retain(|(n, _)| *n != name);
                templates.push((name, text.clone()));
            }
            Change::ExpectCase { case } => expected.push(case.clone()),
            other => {
                rule_changes.push(other.clone());
                places.push(i);
            }
        }
    }
    let new_rules = edit::apply_all(&rules_text, &rule_changes).map_err(|mut e| {
        e.index = places.get(e.index).copied().unwrap_or(e.index);
        e
    })?;
    let mut files = Vec::new();
    let rules_rel = relative_path(target, &target.sources.rules);
    if new_rules != rules_text {
        files.push(FileChange {
            path: rules_rel,
            before: Some(rules_text),
            after: Some(new_rules.clone()),
        });
    }
    for (name, text) in &templates {
        let path = target.sources.templates.join(format!("{name}.hbs"));
        let before = std::fs::read_to_string(&path).ok();
        // The page shows a template as a load reads it, without its last line break: the
        // file keeps the one it had (a new file gets one).
        let mut text = text.clone();
        let ending = match before.as_deref() {
            Some(b) if b.ends_with("\r\n") => "\r\n",
            Some(b) if !b.ends_with('\n') => "",
            _ => "\n",
        };
        if !text.ends_with('\n') {
            text.push_str(ending);
        }
        let text = &text;
        if before.as_deref() != Some(text.as_str()) {
            files.push(FileChange {
                path: relative_path(target, &path),
                before,
                after: Some(text.clone()),
            });
        }
    }
    if !expected.is_empty() {
        files.push(expectations(target, &new_rules, &files, &expected)?);
    }
    work_out(target, editor, base, changes, files, live)
}

/// The tests file with each of `cases` expecting what the draft's rules (`rules`, with the
/// templates of `files`) do with its message.
fn expectations(
    target: &Target,
    rules: &str,
    files: &[FileChange],
    cases: &[String],
) -> Result<FileChange, DraftError> {
    let path = target
        .tests
        .clone()
        .ok_or_else(|| DraftError::Tests("this account has no rule tests file".into()))?;
    let loaded = crate::rules::load_draft(&target.sources, rules, &templates_of(target, files))
        .map_err(|_| {
            DraftError::Tests("the draft's rules do not load: fix its errors first".into())
        })?;
    let before = crate::rules::read_text(&path, crate::rules::MAX_RULES_FILE)
        .map_err(|e| DraftError::Tests(format!("cannot read the rule tests: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut text = before.clone();
    for name in cases {
        let all =
            crate::cases::parse(&text, &path).map_err(|e| DraftError::Tests(e.to_string()))?;
        let case = all
            .iter()
            .find(|c| c.name == *name)
            .ok_or_else(|| DraftError::Tests(format!("no rule test named `{name}`")))?;
        let observed =
            crate::cases::observe(&loaded.rules, case, base).map_err(DraftError::Tests)?;
        text = super::expect::take(&text, name, &observed)
            .map_err(|e| DraftError::Tests(e.to_string()))?;
    }
    Ok(FileChange {
        path: relative_path(target, &path),
        before: Some(before),
        after: Some(text),
    })
}

/// A draft that writes `files` as they are given (a rollback: the files as a change found
/// them).
pub fn of_files(
    target: &Target,
    editor: Arc<str>,
    base: String,
    files: Vec<FileChange>,
    live: Option<&RuleSet>,
    rollback_of: String,
) -> Result<Draft, DraftError> {
    // The files as they are now are what the rollback changes.
    let files: Vec<FileChange> = files
        .into_iter()
        .map(|f| FileChange {
            before: std::fs::read_to_string(target.base().join(&f.path)).ok(),
            after: f.before,
            path: f.path,
        })
        .filter(|f| f.before != f.after)
        .collect();
    let mut draft = work_out(target, editor, base, Vec::new(), files, live)?;
    draft.rollback_of = Some(rollback_of);
    Ok(draft)
}

fn first_line(e: &LoadError) -> String {
    e.0.first().map(ToString::to_string).unwrap_or_default()
}

/// Loads the draft's files, runs the tests on them, and writes the diff.
fn work_out(
    target: &Target,
    editor: Arc<str>,
    base: String,
    changes: Vec<Change>,
    files: Vec<FileChange>,
    live: Option<&RuleSet>,
) -> Result<Draft, DraftError> {
    let made_on = crate::rules::files_digest(&target.sources)
        .map_err(|e| DraftError::Read(first_line(&e)))?;
    let seen_text = crate::rules::read_text(&target.sources.rules, crate::rules::MAX_RULES_FILE)
        .map_err(|e| DraftError::Read(format!("cannot read the rules file: {e}")))?;
    let rules_rel = relative_path(target, &target.sources.rules);
    let rules_text = files
        .iter()
        .find(|f| f.path == rules_rel)
        .and_then(|f| f.after.clone());
    let templates = templates_of(target, &files);
    let rules_now = rules_text.unwrap_or_else(|| seen_text.clone());
    let (rules, errors) = match crate::rules::load_draft(&target.sources, &rules_now, &templates) {
        Ok(loaded) => (Some(loaded.rules), Vec::new()),
        Err(e) => (None, field_errors(target, &e)),
    };
    let tests = match (&rules, &target.tests) {
        (Some(rules), Some(path)) if path.exists() => {
            // The tests file as the draft leaves it (a case that takes the new reply).
            let rel = relative_path(target, path);
            let changed = files
                .iter()
                .find(|f| f.path == rel)
                .and_then(|f| f.after.as_deref());
            run_tests(rules, path, changed)
        }
        _ => TestReport::default(),
    };
    let rules_changed = match (&rules, live) {
        (Some(after), Some(before)) => {
            let changes = crate::reload::Changes::between(before, after);
            let mut names = changes.added;
            names.extend(changes.removed);
            names.extend(changes.changed);
            names
        }
        _ => Vec::new(),
    };
    let diff = files
        .iter()
        .map(|f| {
            edit::diff(
                f.before.as_deref().unwrap_or(""),
                f.after.as_deref().unwrap_or(""),
                &f.path,
            )
        })
        .collect();
    Ok(Draft {
        id: format!("{:016x}", rand::random::<u64>()),
        account: target.account.clone(),
        editor,
        base,
        made_on,
        changes,
        files,
        seen: (rules_rel.clone(), seen_text),
        rules_changed,
        diff,
        errors,
        tests,
        rules,
        rollback_of: None,
        made: std::time::Instant::now(),
    })
}

/// The templates among `files`, by the name rules write (`price`, `menus/t1`), with their
/// new texts; a template the change removes reads as empty (the draft's check then says
/// which rule still needs it).
fn templates_of(target: &Target, files: &[FileChange]) -> Vec<(String, String)> {
    let templates_dir = relative_path(target, &target.sources.templates);
    files
        .iter()
        .filter(|f| Path::new(&f.path).extension().is_some_and(|e| e == "hbs"))
        .filter_map(|f| {
            let name = Path::new(&f.path)
                .strip_prefix(&templates_dir)
                .ok()?
                .with_extension("")
                .to_string_lossy()
                .into_owned();
            Some((name, f.after.clone().unwrap_or_default()))
        })
        .collect()
}

/// Each load error at its file (relative to the rules file's directory), line and column.
fn field_errors(target: &Target, e: &LoadError) -> Vec<FieldError> {
    e.0.iter()
        .map(|e| FieldError {
            file: relative_path(target, &e.location.path),
            line: e.location.line,
            column: e.location.column,
            rule: e.rule.clone(),
            message: e.message.clone(),
        })
        .collect()
}

/// The account's cases (the file at `path`, or `text` in its place) on the draft's rules.
fn run_tests(rules: &RuleSet, path: &Path, text: Option<&str>) -> TestReport {
    let read = match text {
        Some(text) => crate::cases::parse(text, path),
        None => crate::cases::read(path),
    };
    let cases = match read {
        Ok(cases) => cases,
        Err(e) => {
            return TestReport {
                passed: 0,
                failed: vec![FailedCase {
                    name: "(the tests file)".into(),
                    message: e.to_string(),
                }],
            }
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let report = crate::cases::run(rules, &cases, base);
    TestReport {
        passed: report.passed,
        failed: report
            .failed
            .into_iter()
            .map(|(name, message)| FailedCase { name, message })
            .collect(),
    }
}

/// `path` relative to the rules file's directory, with `/`s.
pub(super) fn relative_path(target: &Target, path: &Path) -> String {
    let base = target.base();
    path.strip_prefix(&base)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// A template's name as rules write it (`price`, `menus/price`; `.hbs` taken off): no
/// absolute path, no `..`, no dot names, only letters, digits, `-`, `_` and `/`.
fn template_name(file: &str) -> Result<String, DraftError> {
    let bad = || DraftError::TemplateName(file.chars().take(80).collect());
    let name = file.strip_suffix(".hbs").unwrap_or(file);
    let path = Path::new(name);
    let fine = !name.is_empty()
        && name.len() <= 200
        && path.components().all(|c| match c {
            Component::Normal(part) => {
                let part = part.to_string_lossy();
                !part.starts_with('.')
                    && part
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
            }
            _ => false,
        });
    if fine {
        Ok(name.to_owned())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_stay_inside_the_templates_directory() {
        assert_eq!(template_name("price").unwrap(), "price");
        assert_eq!(template_name("menus/价格.hbs").unwrap(), "menus/价格");
        for bad in [
            "",
            "../secret",
            "/etc/passwd",
            "a/../b",
            ".hidden",
            "a b",
            "a\\b",
        ] {
            assert!(template_name(bad).is_err(), "{bad}");
        }
    }
}
