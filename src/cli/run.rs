//! `serve` running: the public server and the admin port, `--watch`, the reload loop and
//! the signals; then the graceful stop, in order: requests in flight, late calls, the
//! reload loop, the outboxes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{App, HttpServer};
use anyhow::Context as _;

use super::settled::{Settled, Signals};
use crate::accounts::Live;
use crate::reload::{Control, Source};
use crate::rules::Sources;
use crate::server::{self, AppState};

/// `url` without a `user:password@` part, for the log.
fn without_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let authority_end = url[scheme..].find('/').map_or(url.len(), |i| scheme + i);
    match url[scheme..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme], &url[scheme + at + 1..]).into(),
        None => url.into(),
    }
}

/// How long a client has to send a request's head (line and headers).
const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Open connections to the admin port at most; more wait in the listen queue.
const ADMIN_CONNECTIONS: usize = 256;

/// File descriptors kept back from the public port's connections: the listener, the log,
/// Redis, reloads, and the admin port's connections.
const RESERVED_FILES: u64 = 256 + ADMIN_CONNECTIONS as u64;

/// The open-connection cap: `wanted`, lowered to what the open-file limit allows once it
/// is raised as far as the hard limit lets. Each connection holds a descriptor; running
/// out of them ("Too many open files") would fail every accept, valid pushes included,
/// where a cap only makes new connections wait.
fn connection_cap(wanted: u32) -> usize {
    let wanted = u64::from(wanted);
    let files = match rlimit::increase_nofile_limit(wanted + RESERVED_FILES) {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(event = "file_limit_unknown", error = %e);
            return usize::try_from(wanted).unwrap_or(usize::MAX);
        }
    };
    let cap = wanted.min(files.saturating_sub(RESERVED_FILES).max(1));
    if cap < wanted {
        tracing::warn!(
            event = "connections_capped",
            wanted,
            cap,
            open_files = files,
            "the open-file limit allows fewer connections than --max-connections"
        );
    }
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// How long the exit lets the outbox send what it holds.
const OUTBOX_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the exit waits for a reload in progress.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `--pid-file`: the process id, written once listening, removed when dropped.
struct PidFile(PathBuf);
impl PidFile {
    fn write(path: &Path) -> anyhow::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write --pid-file {}", path.display()))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: another instance may have written it since.
        if std::fs::read_to_string(&self.0)
            .is_ok_and(|pid| pid.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The public server, bound (not yet running), and the address it got.
struct Bound {
    server: actix_web::dev::Server,
    address: String,
    workers: usize,
    connections: usize,
}

/// Binds the public port: WeChat's pushes, and `/healthz` and `/metrics` without an admin
/// port.
fn bind_public(state: &AppState, settled: &Settled) -> anyhow::Result<Bound> {
    let listen = settled.listen;
    let workers = settled.workers;
    let connections = connection_cap(settled.max_connections);
    let app_state = state.clone();
    let http = HttpServer::new(move || {
        let state = app_state.clone();
        App::new().configure(move |cfg| server::configure(cfg, state))
    })
    // wxrules handles SIGINT/SIGTERM itself (graceful) and SIGHUP (reload).
    .disable_signals()
    .shutdown_timeout(10)
    .workers(workers)
    // actix's cap is per worker.
    .max_connections(connections.div_ceil(workers).max(1))
    // The request head must arrive in this time (the body has `Options::body_timeout`),
    // and a closing client gets this long to go.
    .client_request_timeout(REQUEST_HEAD_TIMEOUT)
    .client_disconnect_timeout(std::time::Duration::from_secs(1));
    let http = http
        .bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    // With port 0 the system picks the port: log the one actually bound.
    let address = http
        .addrs()
        .first()
        .map_or_else(|| listen.to_string(), ToString::to_string);
    Ok(Bound {
        server: http.run(),
        address,
        workers,
        connections,
    })
}

/// Binds the admin port (`--admin-listen`), if there is one: the server and its address.
fn bind_admin(
    state: &AppState,
    settled: &Settled,
    admin: server::Admin,
) -> anyhow::Result<Option<(actix_web::dev::Server, String)>> {
    let Some(addr) = settled.admin_listen else {
        return Ok(None);
    };
    let admin_state = state.clone();
    let server = HttpServer::new(move || {
        let (state, admin) = (admin_state.clone(), admin.clone());
        App::new().configure(move |cfg| server::configure_admin(cfg, state, admin))
    })
    .disable_signals()
    .shutdown_timeout(2)
    .workers(1)
    // Ops and probes: a few connections at a time. The cap keeps clients that stall from
    // taking the process's file descriptors (the public port's are its own).
    .max_connections(ADMIN_CONNECTIONS)
    .client_request_timeout(REQUEST_HEAD_TIMEOUT)
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .bind(addr)
    .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?;
    let bound = server
        .addrs()
        .first()
        .map_or_else(|| addr.to_string(), ToString::to_string);
    Ok(Some((server.run(), bound)))
}

/// What `--watch` watches: a fleet of one's files; or a config file, its whole directory
/// (where accounts usually live: one added later is watched from the start), and the
/// accounts outside it as they were at start.
fn watched(state: &AppState, source: &Source) -> Vec<Sources> {
    let Source::Config(config) = source else {
        return state
            .accounts()
            .table()
            .accounts()
            .iter()
            .map(|a| a.account.sources().clone())
            .collect();
    };
    let dir = match config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    // Accounts under that directory are watched with it; the others on their own.
    // Resolved (`..`, symlinks): a path that only looks under it is not.
    let under = |path: &Path| match (std::fs::canonicalize(path), std::fs::canonicalize(&dir)) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    };
    let mut sources: Vec<Sources> = state
        .accounts()
        .table()
        .accounts()
        .iter()
        .map(|a| a.account.sources().clone())
        .filter(|s| !(under(&s.rules) && under(&s.templates)))
        .collect();
    sources.push(Sources {
        rules: config.clone(),
        templates: dir,
    });
    sources
}

/// The `server_started` line: what ops and tests wait for.
fn log_started(state: &AppState, settled: &Settled, http: &Bound, admin: Option<&str>) {
    let table = state.accounts().table();
    let wechat_api = without_userinfo(&settled.wechat_api);
    match (&settled.source, table.accounts()) {
        (Source::Single(_), [live]) => {
            let live: &Live = live;
            tracing::info!(
                event = "server_started",
                listen = %http.address,
                admin_listen = admin.unwrap_or(""),
                pid = std::process::id(),
                rules = live.rules.rules().len(),
                digest = live.rules.digest(),
                path = %live.account.sources().rules.display(),
                dedup = %state.dedup.store(),
                workers = http.workers,
                max_connections = http.connections,
                safe_mode = live.secrets.cipher().is_some(),
                wechat_api = %wechat_api,
                sends = live.sends(),
                watch = settled.watch,
            );
        }
        (source, accounts) => {
            let rules: usize = accounts.iter().map(|a| a.rules.rules().len()).sum();
            let config = match source {
                Source::Config(path) => path.display().to_string(),
                Source::Single(_) => String::new(),
            };
            tracing::info!(
                event = "server_started",
                listen = %http.address,
                admin_listen = admin.unwrap_or(""),
                pid = std::process::id(),
                config,
                accounts = accounts.len(),
                rules,
                dedup = %state.dedup.store(),
                workers = http.workers,
                max_connections = http.connections,
                wechat_api = %wechat_api,
                watch = settled.watch,
            );
        }
    }
}

/// Serves until SIGTERM or SIGINT (or a server fails), then stops gracefully.
pub(super) async fn run_server(
    state: AppState,
    settled: &Settled,
    signals: Signals,
) -> anyhow::Result<()> {
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
    let mut http = bind_public(&state, settled)?;
    let handle = http.server.handle();
    let (controls, receiver) = tokio::sync::mpsc::channel(16);
    let admin = server::Admin {
        controls: controls.clone(),
        hosts: settled.admin_hosts.clone().into(),
        attempts: Arc::default(),
        editing: Arc::default(),
    };
    let mut admin = bind_admin(&state, settled, admin)?;
    let admin_bound = admin.as_ref().map(|(_, bound)| bound.clone());
    // Watching starts before `server_started`, so that a change made after it is seen.
    let _watcher = if settled.watch {
        let sources = watched(&state, &settled.source);
        Some(
            crate::reload::watch::start(&sources, controls.clone())
                .context("cannot watch the rules and templates (--watch)")?,
        )
    } else {
        None
    };
    // Written last before `server_started`, and removed when this returns, error or not.
    let _pid_file = match &settled.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    // Reach Redis now, so its state shows in the log before the first push; a Redis that is
    // down is logged and retried, never fatal: the in-process store stands in.
    state.dedup.connect().await;
    log_started(&state, settled, &http, admin_bound.as_deref());
    let reloader = actix_web::rt::spawn(crate::reload::run(
        Arc::clone(&state.fleet),
        receiver,
        crate::reload::RELOAD_TIMEOUT,
    ));
    // Expired answers already count as absent; sweeping them gives their memory back. It
    // runs here on the control thread, not on a worker.
    let sweeper = {
        let dedup = Arc::clone(&state.dedup);
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(dedup.ttl());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                dedup.sweep();
            }
        })
    };
    let stopper = {
        let controls = controls.clone();
        actix_web::rt::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        tracing::info!(event = "reload_requested", signal = "SIGHUP");
                        // A full channel already holds a pending reload.
                        let _ = controls.try_send(Control::Reload(None));
                    }
                    _ = term.recv() => break "SIGTERM",
                    _ = int.recv() => break "SIGINT",
                }
            }
        })
    };
    // The server is polled by reference: dropping it would force its workers down and cut
    // the requests in flight, so it must be driven on until the graceful stop completes.
    // The admin server runs as a task of its own: it must be polled to stop gracefully.
    let admin_handle = admin.as_ref().map(|(server, _)| server.handle());
    let mut admin_task = admin.take().map(|(server, _)| actix_web::rt::spawn(server));
    let admin_ended = async {
        match admin_task.as_mut() {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut http.server => result.context("server failed")?,
        result = admin_ended => {
            result.context("admin server failed")?.context("admin server failed")?;
        }
        signal = stopper => {
            let signal = signal.unwrap_or("signal");
            tracing::info!(event = "shutting_down", signal, "answering requests in flight, then exiting");
            // `stop` sends its command at once; the server future carries it out, waiting
            // up to the shutdown timeout for connections to finish.
            let stopped = handle.stop(true);
            (&mut http.server).await.context("server failed")?;
            stopped.await;
        }
    }
    if let Some(admin_handle) = admin_handle {
        admin_handle.stop(true).await;
    }
    stop(&state, &controls, reloader).await;
    sweeper.abort();
    tracing::info!(event = "server_stopped");
    Ok(())
}

/// The stop once no request is in flight: late calls, then the reload loop, then the
/// outboxes, each bounded in time; what is lost is said so.
async fn stop(
    state: &AppState,
    controls: &tokio::sync::mpsc::Sender<Control>,
    reloader: tokio::task::JoinHandle<()>,
) {
    // Late calls still running (on this thread, which outlives the workers) get a few
    // seconds to answer and queue their replies; the rest are lost, and said so.
    let late = state.late_calls.settle(OUTBOX_DRAIN).await;
    if late > 0 {
        tracing::warn!(
            event = "late_calls_abandoned",
            calls = late,
            "late calls still running at exit are dropped: their replies are not sent"
        );
    }
    // A reload in progress may finish, briefly, before the accounts are listed (it may add,
    // replace or remove some); one stuck on a file that never answers must not keep the
    // process from exiting (its thread is detached).
    let _ = controls.try_send(Control::Stop);
    if tokio::time::timeout(STOP_WAIT, reloader).await.is_err() {
        tracing::warn!(
            event = "reload_abandoned",
            "a reload was still running at exit"
        );
    }
    // What the outboxes hold gets a few seconds to go out; the rest is lost, and said so.
    // Accounts a reload removed or replaced whose outbox is still open are drained too.
    let table = state.accounts().table();
    let accounts: Vec<_> = table
        .accounts()
        .iter()
        .map(|live| Arc::clone(&live.account))
        .chain(state.accounts().retiring())
        .collect();
    for account in &accounts {
        account.outbox.close();
    }
    let drain_by = tokio::time::Instant::now() + OUTBOX_DRAIN;
    for account in &accounts {
        account
            .close_outbox(drain_by.saturating_duration_since(tokio::time::Instant::now()))
            .await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_logged_url_has_no_password() {
        use super::without_userinfo;
        assert_eq!(
            without_userinfo("https://api.weixin.qq.com"),
            "https://api.weixin.qq.com"
        );
        assert_eq!(
            without_userinfo("http://u:p@proxy:8080/x@y"),
            "http://***@proxy:8080/x@y"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:1/a"),
            "http://127.0.0.1:1/a"
        );
    }
}
