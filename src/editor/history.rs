//! The history of changes made in the page: who, when, which rules, the diff, the digests
//! before and after, and the files as they were before each change (what a rollback
//! restores). In a git work tree each change is a commit of the files it touched alone,
//! authored by the editor, described by trailers (`Wxrules-Account: shop`); elsewhere a
//! bounded history directory beside the rules file (`.wxrules-history/`). Runs `git` with
//! a time limit; no shell.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Changes a history directory keeps; the oldest go first.
pub const MAX_CHANGES: usize = 200;
/// Changes `list` gives at most.
pub const LISTED: usize = 200;
/// How long one `git` command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The history directory's name, beside the rules file (a dot name: neither `--watch` nor
/// a templates walk looks at it).
pub const DIR: &str = ".wxrules-history";

/// One applied change, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// A git commit's hash, or the history directory's number for it.
    pub id: String,
    pub account: String,
    pub editor: String,
    /// When, RFC 3339.
    pub at: String,
    /// The rules it changed (added, removed or edited), by name.
    pub rules: Vec<String>,
    pub digest_before: String,
    pub digest_after: String,
    /// The files it wrote, relative to the rules file's directory.
    pub files: Vec<String>,
    /// A rollback's: the change it went back to before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
}

/// A file as a change found it and as it left it (`None`: not there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the rules file's directory.
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history: {0}")]
    Io(String),
    #[error("git: {0}")]
    Git(String),
    #[error("no change `{0}` in the history")]
    Unknown(String),
}

/// Where an account's history is kept.
#[derive(Debug, Clone)]
pub enum History {
    /// The rules file is in a git work tree: `root` is the tree's top, `base` the rules
    /// file's directory.
    Git { root: PathBuf, base: PathBuf },
    /// A history directory.
    Dir { dir: PathBuf, base: PathBuf },
}

impl History {
    /// The history of the account whose rules file is `rules`: git when its directory is
    /// in a work tree (and `git` runs), else the directory beside it.
    pub fn of(rules: &Path) -> History {
        let base = match rules.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        match git(&base, &["rev-parse", "--show-toplevel"], None) {
            Ok(top) if !top.trim().is_empty() => History::Git {
                root: PathBuf::from(top.trim()),
                base,
            },
            _ => History::Dir {
                dir: base.join(DIR),
                base,
            },
        }
    }

    /// Whether changes are commits.
    pub fn is_git(&self) -> bool {
        matches!(self, History::Git { .. })
    }

    /// Records a change whose files are already written: a commit of exactly those files,
    /// or a numbered entry of the directory. Its id.
    pub fn record(&self, entry: &Entry, files: &[FileChange]) -> Result<String, HistoryError> {
        match self {
            History::Git { root, base } => record_git(root, base, entry, files),
            History::Dir { dir, .. } => record_dir(dir, entry, files),
        }
    }

    /// The changes of `account`, newest first.
    pub fn list(&self, account: &str) -> Result<Vec<Entry>, HistoryError> {
        match self {
            History::Git { root, base } => list_git(root, base, account),
            History::Dir { dir, .. } => Ok(read_index(dir)?
                .into_iter()
                .rev()
                .filter(|e| e.account == account)
                .take(LISTED)
                .collect()),
        }
    }

    /// Change `id` of `account`, and the files as it found them: what rolling back to
    /// before it restores.
    pub fn before(
        &self,
        account: &str,
        id: &str,
    ) -> Result<(Entry, Vec<FileChange>), HistoryError> {
        let entry = self
            .list(account)?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| HistoryError::Unknown(id.chars().take(40).collect()))?;
        let files = match self {
            History::Git { root, base } => entry
                .files
                .iter()
                .map(|path| {
                    let in_tree = tree_path(root, &base.join(path))?;
                    Ok(FileChange {
                        path: path.clone(),
                        before: git(root, &["show", &format!("{id}^:{in_tree}")], None).ok(),
                        after: git(root, &["show", &format!("{id}:{in_tree}")], None).ok(),
                    })
                })
                .collect::<Result<Vec<_>, HistoryError>>()?,
            History::Dir { dir, .. } => read_files(&dir.join(&entry.id))?,
        };
        Ok((entry, files))
    }
}

/// Runs `git ARGS` in `dir` (with `input` on its stdin), within `GIT_TIMEOUT`: its stdout.
fn git(dir: &Path, args: &[&str], input: Option<&str>) -> Result<String, HistoryError> {
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(args)
        // No pager, no prompts, no editor, no config of the user's templates.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PAGER", "cat")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HistoryError::Git(format!("cannot run git: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write as _;
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| HistoryError::Git(e.to_string()))?;
    }
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < GIT_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HistoryError::Git(format!(
                    "`git {}` took more than {} s",
                    args.first().unwrap_or(&""),
                    GIT_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(HistoryError::Git(e.to_string())),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| HistoryError::Git(e.to_string()))?;
    if !out.status.success() {
        let why: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(HistoryError::Git(format!(
            "`git {}` failed: {why}",
            args.first().unwrap_or(&"")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `path` relative to the work tree's top, with `/`s, as `git show REV:PATH` takes it.
fn tree_path(root: &Path, path: &Path) -> Result<String, HistoryError> {
    let absolute = match path.parent().and_then(|p| std::fs::canonicalize(p).ok()) {
        Some(dir) => dir.join(path.file_name().unwrap_or_default()),
        None => path.to_owned(),
    };
    absolute
        .strip_prefix(root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .map_err(|_| HistoryError::Git(format!("{} is outside the work tree", path.display())))
}

/// The trailers that describe a change in its commit message.
const TRAILERS: [&str; 6] = [
    "Wxrules-Account",
    "Wxrules-Rules",
    "Wxrules-Digest-Before",
    "Wxrules-Digest-After",
    "Wxrules-Files",
    "Wxrules-Rollback-Of",
];

fn record_git(
    root: &Path,
    base: &Path,
    entry: &Entry,
    files: &[FileChange],
) -> Result<String, HistoryError> {
    let paths: Vec<String> = files
        .iter()
        .map(|f| tree_path(root, &base.join(&f.path)))
        .collect::<Result<_, _>>()?;
    let subject = if let Some(of) = &entry.rollback_of {
        format!(
            "wxrules: {} rolled back {} to before {of}",
            entry.editor, entry.account
        )
    } else {
        format!(
            "wxrules: {} changed {} of {}",
            entry.editor,
            if entry.rules.is_empty() {
                "templates".to_owned()
            } else {
                entry.rules.join(", ")
            },
            entry.account
        )
    };
    let mut message = format!("{subject}\n\n");
    for (key, value) in TRAILERS.iter().zip([
        entry.account.clone(),
        entry.rules.join(","),
        entry.digest_before.clone(),
        entry.digest_after.clone(),
        entry.files.join(","),
        entry.rollback_of.clone().unwrap_or_default(),
    ]) {
        if !value.is_empty() {
            message.push_str(&format!("{key}: {value}\n"));
        }
    }
    // The editor is the author; the committer is wxrules, which made the commit.
    let author = format!(
        "{} <{}@wxrules.invalid>",
        entry.editor,
        author_email(&entry.editor)
    );
    let mut add = vec!["add", "--"];
    add.extend(paths.iter().map(String::as_str));
    git(root, &add, None)?;
    let mut commit = vec![
        "-c",
        "user.name=wxrules",
        "-c",
        "user.email=wxrules@localhost",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "--quiet",
        "--no-verify",
        "--author",
        &author,
        "--file",
        "-",
        "--",
    ];
    // Only these paths: whatever else is staged stays staged, and uncommitted.
    commit.extend(paths.iter().map(String::as_str));
    git(root, &commit, Some(&message))?;
    Ok(git(root, &["rev-parse", "--short=12", "HEAD"], None)?
        .trim()
        .to_owned())
}

/// An e-mail-safe form of an editor's name (names may be 小王): hex of its bytes.
fn author_email(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_owned()
    } else {
        name.bytes().map(|b| format!("{b:02x}")).collect()
    }
}

fn list_git(root: &Path, base: &Path, account: &str) -> Result<Vec<Entry>, HistoryError> {
    let limit = LISTED.to_string();
    let grep = format!("--grep=^Wxrules-Account: {}$", regex::escape(account));
    let rules_dir = tree_path(root, &base.join("x"))?;
    let rules_dir = rules_dir.trim_end_matches('x').trim_end_matches('/');
    let mut args = vec![
        "log",
        "-n",
        &limit,
        &grep,
        "--format=%h%x1f%an%x1f%aI%x1f%B%x1e",
        "--",
    ];
    if !rules_dir.is_empty() {
        args.push(rules_dir);
    }
    let out = git(root, &args, None)?;
    Ok(out
        .split('\u{1e}')
        .filter_map(|record| parse_commit(record.trim_start_matches('\n')))
        .filter(|e| e.account == account)
        .collect())
}

/// A commit of `git log`'s format above as an entry, when it is one of wxrules'.
fn parse_commit(record: &str) -> Option<Entry> {
    let mut parts = record.splitn(4, '\u{1f}');
    let (id, editor, at, body) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let trailer = |key: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .map(str::to_owned)
    };
    let list = |v: Option<String>| -> Vec<String> {
        v.map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    Some(Entry {
        id: id.trim().to_owned(),
        account: trailer("Wxrules-Account")?,
        editor: editor.to_owned(),
        at: at.to_owned(),
        rules: list(trailer("Wxrules-Rules")),
        digest_before: trailer("Wxrules-Digest-Before").unwrap_or_default(),
        digest_after: trailer("Wxrules-Digest-After").unwrap_or_default(),
        files: list(trailer("Wxrules-Files")),
        rollback_of: trailer("Wxrules-Rollback-Of"),
    })
}

// The history directory: `index.jsonl`, one entry a line, oldest first; and for each
// change a directory of its number holding `before/PATH` (files that existed) and
// `after/PATH`.

#[expect(
    clippy::needless_pass_by_value,
    reason = "a `map_err` function: it takes the error as `map_err` hands it over"
)]
fn io(e: std::io::Error) -> HistoryError {
    HistoryError::Io(e.to_string())
}

fn read_index(dir: &Path) -> Result<Vec<Entry>, HistoryError> {
    let text = match std::fs::read_to_string(dir.join("index.jsonl")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    // A line that does not read (cut short by a crash) is left out, not fatal.
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn record_dir(dir: &Path, entry: &Entry, files: &[FileChange]) -> Result<String, HistoryError> {
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut index = read_index(dir)?;
    let next = index
        .iter()
        .filter_map(|e| e.id.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1);
    let id = format!("{next:06}");
    let change = dir.join(&id);
    for f in files {
        if let Some(before) = &f.before {
            write_new(&change.join("before").join(&f.path), before)?;
        }
        if let Some(after) = &f.after {
            write_new(&change.join("after").join(&f.path), after)?;
        }
    }
    // The paths, whether a side is there or not, so that a file a change removed is known.
    let paths: String = files.iter().map(|f| format!("{}\n", f.path)).collect();
    write_new(&change.join("paths"), &paths)?;
    let mut entry = entry.clone();
    entry.id.clone_from(&id);
    index.push(entry);
    // Bounded: the oldest changes go, with their files.
    let excess = index.len().saturating_sub(MAX_CHANGES);
    for old in index.drain(..excess) {
        let _ = std::fs::remove_dir_all(dir.join(&old.id));
    }
    let mut text = String::new();
    for e in &index {
        text.push_str(&serde_json::to_string(e).map_err(|e| HistoryError::Io(e.to_string()))?);
        text.push('\n');
    }
    super::write::atomically(&dir.join("index.jsonl"), &text).map_err(io)?;
    Ok(id)
}

fn write_new(path: &Path, text: &str) -> Result<(), HistoryError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

fn read_files(change: &Path) -> Result<Vec<FileChange>, HistoryError> {
    let paths = std::fs::read_to_string(change.join("paths")).map_err(io)?;
    Ok(paths
        .lines()
        .filter(|p| !p.is_empty())
        .map(|rel| FileChange {
            before: std::fs::read_to_string(change.join("before").join(rel)).ok(),
            after: std::fs::read_to_string(change.join("after").join(rel)).ok(),
            path: rel.to_owned(),
        })
        .collect())
}
