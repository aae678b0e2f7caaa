//! `--watch`: a reload when the rules file or a template changes, for deployments where no
//! one sends signals (a Kubernetes ConfigMap). Changes are noticed by the OS's file events
//! (inotify, through the `notify` crate), gathered for a quiet spell, and turned into the
//! same `Control::Reload` as SIGHUP: the reload is as all-or-nothing as ever.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::reload::Control;
use crate::rules::Sources;

/// How long the files must be quiet before the reload: an editor's save, a `git pull` or a
/// ConfigMap swap is several events within milliseconds.
pub const QUIET: Duration = Duration::from_millis(250);

/// Watches each of `sources` (with several accounts, also the config file and everything
/// under its directory, given as one more `Sources`: an account added there later is seen
/// too); keep the returned watcher alive for as long as changes should reload.
pub fn start(
    sources: &[Sources],
    controls: mpsc::Sender<Control>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    // Events name absolute paths: compare with absolute ones.
    let mut watched: Vec<(PathBuf, Option<std::ffi::OsString>, PathBuf)> = Vec::new();
    for s in sources {
        watched.push((
            std::path::absolute(parent(&s.rules))?,
            s.rules.file_name().map(|n| n.to_os_string()),
            std::path::absolute(&s.templates)?,
        ));
    }
    // One slot: while a change waits for the quiet spell, more changes add nothing.
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let templates: Vec<PathBuf> = watched.iter().map(|(_, _, t)| t.clone()).collect();
    let mut rule_names: Vec<std::ffi::OsString> =
        watched.iter().filter_map(|(_, n, _)| n.clone()).collect();
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
        // The OS dropped events (its queue overflowed): something may have changed.
        if event.need_rescan() || matters(&event, &rule_names, &templates) {
            let _ = changed.try_send(());
        }
    })?;
    let mut seen = std::collections::HashSet::new();
    for (rules_dir, _, templates_dir) in &watched {
        // A templates directory that does not exist (yet) loads as none: watch where it
        // would appear instead.
        if templates_dir.is_dir() {
            if seen.insert(templates_dir.clone()) {
                watcher.watch(templates_dir, RecursiveMode::Recursive)?;
            }
        } else if let Some(above) = templates_dir.parent().filter(|p| p.is_dir()) {
            if seen.insert(above.to_owned()) {
                watcher.watch(above, RecursiveMode::NonRecursive)?;
            }
        }
        if rules_dir != templates_dir && seen.insert(rules_dir.clone()) {
            watcher.watch(rules_dir, RecursiveMode::NonRecursive)?;
        }
    }
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
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
    });
    Ok(watcher)
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
