//! Changing replies from the page, with the rules file staying the one source of truth: a
//! `draft` works changes out (the new texts, `check`'s errors, the account's rule tests)
//! before anything is written; `Editing::apply` writes a good draft atomically, only when
//! the files are still those the editor's view began from (else a conflict, with the other
//! change shown), and records it in the `history` (git commits, or a directory) that a
//! rollback goes back through. No HTTP here; the server reloads the account after.

pub mod draft;
pub mod expect;
pub mod history;
pub mod write;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use draft::{Draft, DraftError, FailedCase, FieldError, Target, TestReport};
pub use history::{Entry, FileChange, History, HistoryError};

/// Drafts kept at most, over all editors; the oldest go first.
pub const MAX_DRAFTS: usize = 64;
/// How long a draft is kept.
pub const DRAFT_TTL: Duration = Duration::from_secs(60 * 60);

/// Why a draft was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The files changed since the editor's view began (by hand, another editor, a `git
    /// pull`): nothing was written. `diff` is that other change, as far as it is known.
    #[error("the files changed since this draft began (digest {base} → {now})")]
    Conflict {
        base: String,
        now: String,
        diff: String,
    },
    /// The draft does not load or fails a rule test: nothing was written.
    #[error("the draft has errors or failing rule tests")]
    Rejected,
    /// Writing a file failed (what was written before it is put back).
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: String },
    #[error("{0}")]
    Read(String),
}

/// A draft applied.
#[derive(Debug)]
pub struct Applied {
    /// The files' digest after it.
    pub digest: String,
    pub digest_before: String,
    /// Its id in the history, or why it could not be recorded (the change is made).
    pub history: Result<String, HistoryError>,
}

/// The drafts being worked on, and the one apply at a time of each account.
#[derive(Debug, Default)]
pub struct Editing {
    drafts: Mutex<VecDeque<Arc<Draft>>>,
    applying: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Editing {
    /// Keeps `draft` (the oldest goes past `MAX_DRAFTS`, any past `DRAFT_TTL`).
    pub fn keep(&self, draft: Draft) -> Arc<Draft> {
        let draft = Arc::new(draft);
        let mut drafts = self.drafts.lock();
        drafts.retain(|d| d.made.elapsed() < DRAFT_TTL);
        while drafts.len() >= MAX_DRAFTS {
            drafts.pop_front();
        }
        drafts.push_back(Arc::clone(&draft));
        draft
    }

    /// The draft `id`, while it is kept.
    pub fn draft(&self, id: &str) -> Option<Arc<Draft>> {
        self.drafts
            .lock()
            .iter()
            .find(|d| d.id == id && d.made.elapsed() < DRAFT_TTL)
            .cloned()
    }

    /// Writes `draft` to `target`'s files and records it, if its files are still those
    /// it began from and it is good. One apply at a time per account: of two at once, the
    /// second finds the first's files and gets a conflict. Blocking (file and git IO).
    pub fn apply(
        &self,
        target: &Target,
        draft: &Draft,
        history: &History,
    ) -> Result<Applied, ApplyError> {
        let lock = Arc::clone(
            self.applying
                .lock()
                .entry(target.account.clone())
                .or_default(),
        );
        let _one_at_a_time = lock.lock();
        let now = crate::rules::files_digest(&target.sources).map_err(|e| {
            ApplyError::Read(e.0.first().map(ToString::to_string).unwrap_or_default())
        })?;
        if now != draft.base || now != draft.made_on {
            return Err(ApplyError::Conflict {
                diff: other_change(target, draft, history),
                base: draft.base.clone(),
                now,
            });
        }
        if !draft.is_good() {
            return Err(ApplyError::Rejected);
        }
        write_all(target, &draft.files)?;
        let digest = crate::rules::files_digest(&target.sources).map_err(|e| {
            ApplyError::Read(e.0.first().map(ToString::to_string).unwrap_or_default())
        })?;
        let entry = Entry {
            id: String::new(),
            account: target.account.clone(),
            editor: draft.editor.to_string(),
            at: crate::clock::rfc3339_string(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            rules: draft.rules_changed.clone(),
            digest_before: now.clone(),
            digest_after: digest.clone(),
            files: draft.files.iter().map(|f| f.path.clone()).collect(),
            rollback_of: draft.rollback_of.clone(),
        };
        Ok(Applied {
            history: history.record(&entry, &draft.files),
            digest,
            digest_before: now,
        })
    }
}

/// Writes every file of a change (removing those it removes); when one fails, the ones
/// written before it are put back as they were.
fn write_all(target: &Target, files: &[FileChange]) -> Result<(), ApplyError> {
    let base = target.base();
    for (i, f) in files.iter().enumerate() {
        let path = base.join(&f.path);
        let done = match &f.after {
            Some(text) => write::atomically(&path, text),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(error) = done {
            for undo in &files[..i] {
                let path = base.join(&undo.path);
                let _ = match &undo.before {
                    Some(text) => write::atomically(&path, text),
                    None => std::fs::remove_file(&path),
                };
            }
            return Err(ApplyError::Write {
                path: f.path.clone(),
                error: error.to_string(),
            });
        }
    }
    Ok(())
}

/// The change someone else made since the editor's view began: the files now against the
/// texts the draft was made on (when the editor's view and the draft began on the same
/// files), or against the version the history recorded with the view's digest.
fn other_change(target: &Target, draft: &Draft, history: &History) -> String {
    let base = target.base();
    let now = |path: &str| std::fs::read_to_string(base.join(path)).ok();
    let then: Vec<FileChange> = if draft.made_on == draft.base {
        let mut files: Vec<FileChange> = draft
            .files
            .iter()
            .filter(|f| f.path != draft.seen.0)
            .cloned()
            .collect();
        files.push(FileChange {
            path: draft.seen.0.clone(),
            before: Some(draft.seen.1.clone()),
            after: None,
        });
        files
    } else {
        history
            .list(&target.account)
            .ok()
            .and_then(|list| list.into_iter().find(|e| e.digest_after == draft.base))
            .and_then(|e| history.before(&target.account, &e.id).ok())
            .map(|(_, files)| {
                files
                    .into_iter()
                    .map(|f| FileChange {
                        before: f.after.clone(),
                        after: None,
                        path: f.path,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    then.iter()
        .filter_map(|f| {
            let known = f.before.clone()?;
            let current = now(&f.path).unwrap_or_default();
            (known != current).then(|| crate::edit::diff(&known, &current, &f.path))
        })
        .collect()
}
