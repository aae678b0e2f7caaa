//! `--watch`: a reload when the rules file or a template changes, for deployments where no
//! one sends signals (a Kubernetes ConfigMap). Changes are noticed by the OS's file events
//! (inotify, through the `notify` crate), gathered for a quiet spell, and turned into the
//! same `Control::Reload` as SIGHUP: the reload is as all-or-nothing as ever.
//!
//! The OS watches a directory by its inode, not its name: a directory replaced by `mv`, a
//! `current -> releases/N` link above it switched, or a directory deleted and made again
//! would leave the watch on the old one, and changes unseen. So the watched names are
//! resolved again every `RECHECK`; when one no longer leads where it did, the watch is
//! lost (`watch_lost`), made again on the names (`watch_restored`), and a reload follows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::reload::Control;
use crate::rules::Sources;

/// How long the files must be quiet before the reload: an editor's save, a `git pull` or a
/// ConfigMap swap is several events within milliseconds.
pub const QUIET: Duration = Duration::from_millis(250);

/// How often the watched names are resolved again, to notice a directory replaced under
/// them (a few `stat`s each time).
pub const RECHECK: Duration = Duration::from_secs(1);

/// The watching, for as long as it is kept: dropping it stops the watch.
pub struct Watching {
    _watcher: Arc<Mutex<Option<RecommendedWatcher>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one of `sources` watches: the rules file's directory (its file by name) and the
/// templates directory, as absolute names.
#[derive(Debug, Clone)]
struct Watched {
    rules_dir: PathBuf,
    rules_name: Option<std::ffi::OsString>,
    templates: PathBuf,
}

/// Where a watched name leads now: its resolved path, device, inode and birth time (where
/// the file system keeps one), or nothing (it is gone). An inode number alone is not enough:
/// a directory deleted and made again at once often gets the number it had.
type Identity = Option<(PathBuf, u64, u64, Option<std::time::SystemTime>)>;

fn identity(path: &Path) -> Identity {
    use std::os::unix::fs::MetadataExt;
    let resolved = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&resolved).ok()?;
    Some((resolved, meta.dev(), meta.ino(), meta.created().ok()))
}

/// Watches each of `sources` (with several accounts, also the config file and everything
/// under its directory, given as one more `Sources`: an account added there later is seen
/// too); keep the returned `Watching` alive for as long as changes should reload.
pub fn start(
    sources: &[Sources],
    controls: mpsc::Sender<Control>,
) -> Result<Watching, notify::Error> {
    // Events name absolute paths: compare with absolute ones.
    let mut watched = Vec::new();
    for s in sources {
        watched.push(Watched {
            rules_dir: std::path::absolute(parent(&s.rules))?,
            rules_name: s.rules.file_name().map(|n| n.to_os_string()),
            templates: std::path::absolute(&s.templates)?,
        });
    }
    // One slot: while a change waits for the quiet spell, more changes add nothing.
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let roots = roots(&watched);
    // Set by the watcher when a watched directory itself is removed, moved or made: the
    // names are then watched again at the next check, whatever its identity says.
    let stale = Arc::new(AtomicBool::new(false));
    let watcher = Arc::new(Mutex::new(Some(watch(
        &watched,
        &roots,
        changed.clone(),
        &stale,
    )?)));
    let mut seen: Vec<Identity> = roots.iter().map(|(p, _)| identity(p)).collect();
    let rewatch = Arc::clone(&watcher);
    let task = tokio::spawn(async move {
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => {
                    if change.is_none() {
                        break;
                    }
                    // Wait until the files have been quiet for `QUIET`.
                    loop {
                        tokio::time::sleep(QUIET).await;
                        if changes.try_recv().is_err() {
                            break;
                        }
                    }
                    tracing::info!(event = "reload_requested", by = "watch");
                    if controls.send(Control::Reload(None)).await.is_err() {
                        break;
                    }
                }
                _ = recheck.tick() => {
                    let now: Vec<Identity> = roots.iter().map(|(p, _)| identity(p)).collect();
                    let touched = stale.swap(false, Ordering::AcqRel);
                    if now == seen && !touched {
                        continue;
                    }
                    if rewatched(&rewatch, &watched, &roots, &seen, &now, &changed, &stale) {
                        seen = now;
                        // Whatever changed while nothing watched it is read now.
                        let _ = changed.try_send(());
                    }
                }
            }
        }
    });
    Ok(Watching {
        _watcher: watcher,
        task,
    })
}

/// The directories to watch, each once, and how: every templates directory, recursively
/// (where one does not exist yet, the directory above it, where it would appear), and each
/// rules file's directory on its own.
fn roots(watched: &[Watched]) -> Vec<(PathBuf, RecursiveMode)> {
    let mut roots: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    let mut add = |path: PathBuf, mode: RecursiveMode| {
        if !roots.iter().any(|(p, _)| *p == path) {
            roots.push((path, mode));
        }
    };
    for w in watched {
        if w.templates.is_dir() {
            add(w.templates.clone(), RecursiveMode::Recursive);
        } else if let Some(above) = w.templates.parent().filter(|p| p.is_dir()) {
            add(above.to_owned(), RecursiveMode::NonRecursive);
        }
        if w.rules_dir != w.templates {
            add(w.rules_dir.clone(), RecursiveMode::NonRecursive);
        }
    }
    roots
}

/// A watcher on `roots`, whose events that matter send on `changed`; an event on a root
/// itself (removed, moved, made) sets `stale`.
fn watch(
    watched: &[Watched],
    roots: &[(PathBuf, RecursiveMode)],
    changed: mpsc::Sender<()>,
    stale: &Arc<AtomicBool>,
) -> Result<RecommendedWatcher, notify::Error> {
    let root_paths: Vec<PathBuf> = roots.iter().map(|(p, _)| p.clone()).collect();
    let stale = Arc::clone(stale);
    let templates: Vec<PathBuf> = watched.iter().map(|w| w.templates.clone()).collect();
    let mut rule_names: Vec<std::ffi::OsString> = watched
        .iter()
        .filter_map(|w| w.rules_name.clone())
        .collect();
    rule_names.sort();
    rule_names.dedup();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(event = "watch_failed", error = %e, "a file event was lost; reloading to be sure");
                let _ = changed.try_send(());
                return;
            }
        };
        if touches_root(&event, &root_paths) {
            stale.store(true, Ordering::Release);
        }
        // The OS dropped events (its queue overflowed): something may have changed.
        if event.need_rescan() || matters(&event, &rule_names, &templates) {
            let _ = changed.try_send(());
        }
    })?;
    for (root, mode) in roots {
        // A root that is gone now is watched again once it is back (`rewatched`).
        if root.exists() {
            watcher.watch(root, *mode)?;
        }
    }
    Ok(watcher)
}

/// The watch made again on the names, after some of them came to lead elsewhere (or
/// nowhere): logged as lost, then as restored. `false` when it could not be made again
/// (tried again at the next check).
fn rewatched(
    current: &Mutex<Option<RecommendedWatcher>>,
    watched: &[Watched],
    roots: &[(PathBuf, RecursiveMode)],
    seen: &[Identity],
    now: &[Identity],
    changed: &mpsc::Sender<()>,
    stale: &Arc<AtomicBool>,
) -> bool {
    let mut named = false;
    for (((root, _), before), after) in roots.iter().zip(seen).zip(now) {
        if before != after {
            named = true;
            tracing::warn!(
                event = "watch_lost",
                path = %root.display(),
                gone = after.is_none(),
                "a watched directory was replaced, moved or deleted; watching its name again"
            );
        }
    }
    if !named {
        tracing::warn!(
            event = "watch_lost",
            gone = false,
            "a watched directory was removed or made again; watching its names again"
        );
    }
    // The old watcher goes first: its inotify watches are on what is gone.
    *current.lock() = None;
    match watch(watched, roots, changed.clone(), stale) {
        Ok(watcher) => {
            *current.lock() = Some(watcher);
            tracing::info!(event = "watch_restored", directories = roots.len());
            true
        }
        Err(e) => {
            tracing::error!(event = "watch_failed", error = %e, "cannot watch the files again; trying again in a second");
            false
        }
    }
}

/// Whether `event` removes, moves or makes one of the watched directories themselves.
fn touches_root(event: &notify::Event, roots: &[PathBuf]) -> bool {
    use notify::EventKind;
    let structural = matches!(
        event.kind,
        EventKind::Remove(_)
            | EventKind::Create(_)
            | EventKind::Modify(notify::event::ModifyKind::Name(_))
    );
    structural && event.paths.iter().any(|p| roots.iter().any(|r| r == p))
}

fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event can change what a load reads: the rules file (by name, in its
/// directory), anything under the templates directory, or a Kubernetes ConfigMap's swap of
/// its `..data` link. Editors' swap and backup files (`.name.swp`, `name~`) do not count.
fn matters(
    event: &notify::Event,
    rule_names: &[std::ffi::OsString],
    templates: &[PathBuf],
) -> bool {
    if event.kind.is_access() {
        return false;
    }
    event.paths.iter().any(|path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.starts_with("..data") {
            return true;
        }
        if name.starts_with('.') || name.ends_with('~') {
            return false;
        }
        templates.iter().any(|t| path.starts_with(t))
            || path
                .file_name()
                .is_some_and(|n| rule_names.iter().any(|r| r.as_os_str() == n))
    })
}
