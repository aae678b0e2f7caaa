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

/// Watches `sources`; keep the returned watcher alive for as long as changes should reload.
pub fn start(
    sources: &Sources,
    controls: mpsc::Sender<Control>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let rules_dir = parent(&sources.rules);
    let rules_name = sources.rules.file_name().map(|n| n.to_os_string());
    let templates = sources.templates.clone();
    // One slot: while a change waits for the quiet spell, more changes add nothing.
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matters(&event, rules_name.as_deref(), &templates) {
            let _ = changed.try_send(());
        }
    })?;
    watcher.watch(&sources.templates, RecursiveMode::Recursive)?;
    if rules_dir != sources.templates {
        watcher.watch(&rules_dir, RecursiveMode::NonRecursive)?;
    }
    actix_web::rt::spawn(async move {
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
fn matters(event: &notify::Event, rules_name: Option<&std::ffi::OsStr>, templates: &Path) -> bool {
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
        path.starts_with(templates) || rules_name.is_some_and(|r| path.file_name() == Some(r))
    })
}
