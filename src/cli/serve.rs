//! `wxrules serve` (the default command): settings from flags, the environment and the
//! config file; the accounts loaded; the public and admin servers; signals, reloads and a
//! graceful stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use super::*;
use crate::clock::{Clock, SystemClock};
use crate::dedup::{self, Dedup};
use crate::logline::{LineFormat, Lines};
use crate::reload::{self, Control, Live};
use crate::rules::Sources;
use crate::server::{self, AppState, Options};
use crate::settings::Secrets;

/// `url` without a `user:password@` part, for the log.
pub(super) fn without_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
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
pub(super) const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// File descriptors kept back from connections: the listener, the log, Redis, reloads.
pub(super) const RESERVED_FILES: u64 = 256;
/// The open-connection cap: `wanted`, lowered to what the open-file limit allows once it
/// is raised as far as the hard limit lets. Each connection holds a descriptor; running
/// out of them ("Too many open files") would fail every accept, valid pushes included,
/// where a cap only makes new connections wait.
pub(super) fn connection_cap(wanted: u32) -> usize {
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
pub(super) const OUTBOX_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the exit waits for a reload in progress.
pub(super) const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// `--pid-file`: the process id, written once listening, removed when dropped.
pub(super) struct PidFile(PathBuf);
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
/// The most HTTP workers `--workers` accepts: each is a thread with its own event loop, and
/// past a few per core they only add memory and context switches.
pub(super) const MAX_WORKERS: i64 = 256;
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum LogFormat {
    Text,
    Json,
}
#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    pub(super) sources: SourceArgs,
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's `listen`].
    #[arg(long)]
    pub(super) listen: Option<SocketAddr>,
    /// Refuse requests whose timestamp is more than this many seconds from now (0 = off)
    /// [default: 300, or the config file's `max_age`].
    #[arg(long)]
    pub(super) max_age: Option<u64>,
    /// Where answers are kept so that WeChat's retries get the same answer: `memory` (this
    /// process) or `redis://[:password@]host:port[/db]` (shared by every instance). Also
    /// `--dedup`. Give a URL with a password in WXRULES_STORE rather than on the command
    /// line, which `ps` shows.
    #[arg(
        long = "store",
        visible_alias = "dedup",
        env = "WXRULES_STORE",
        hide_env_values = true,
        value_name = "memory|redis://host:port[/db]"
    )]
    pub(super) dedup: Option<String>,
    /// Log lines as text or JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
    /// Open connections at most, over all workers; past it new connections wait in the
    /// listen queue. Lowered to fit the open-file limit, which is raised at start to fit it
    /// (up to the hard limit).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(super) max_connections: u32,
    /// WeChat's API, for customer-service messages (`send:`): the real one, or an
    /// IP-whitelisted proxy in front of it. Credentials come from WXRULES_APPID and
    /// WXRULES_APPSECRET.
    #[arg(long, env = "WXRULES_WECHAT_API", value_name = "URL")]
    pub(super) wechat_api: Option<String>,
    /// HTTP worker threads (default: one per core), 1 to 256.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS))]
    pub(super) workers: Option<u16>,
    /// Serve `/healthz`, `/metrics` and `POST /-/reload` on this address instead of the
    /// public port (e.g. 127.0.0.1:9180). An address other than loopback needs
    /// WXRULES_ADMIN_TOKEN, sent by clients as `Authorization: Bearer …`.
    #[arg(long, env = "WXRULES_ADMIN_LISTEN", value_name = "ADDR")]
    pub(super) admin_listen: Option<SocketAddr>,
    /// Reload when the rules file or a template changes (after 250 ms of quiet), as
    /// SIGHUP does: for Kubernetes ConfigMaps and other setups where no one sends signals.
    #[arg(long)]
    pub(super) watch: bool,
    /// Write the process id to this file once listening (for `kill -HUP "$(cat FILE)"`);
    /// removed at exit.
    #[arg(long, value_name = "PATH")]
    pub(super) pid_file: Option<PathBuf>,
}
/// Logs go to stderr in batches written by a background thread (`logsink`), so a request
/// does not wait on a write(2) unless stderr falls 1 MiB behind; the returned guard writes
/// what is pending when it is dropped, at exit. Nothing is dropped: an operator must never
/// miss a reload error.
pub(super) fn init_tracing(
    format: LogFormat,
) -> anyhow::Result<crate::logsink::FlushGuard<std::io::Stderr>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_env("WXRULES_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = match format {
        // Colours only on a terminal: journald and log files would keep the escape codes.
        LogFormat::Text => LineFormat::Text {
            ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        },
        LogFormat::Json => LineFormat::Json,
    };
    let (writer, guard) = crate::logsink::batched(std::io::stderr(), "wxrules-log")
        .context("starting the log writer thread")?;
    tracing_subscriber::registry()
        .with(filter)
        .with(Lines::new(format, writer))
        .try_init()
        .context("installing the logger")?;
    Ok(guard)
}
/// `serve`'s settings once flags, the environment and the config file are put together:
/// a flag (or its environment variable) wins over the file, the file over the default.
pub(super) struct Settled {
    pub(super) listen: SocketAddr,
    pub(super) max_age: u64,
    pub(super) store: dedup::Store,
    pub(super) wechat_api: String,
    pub(super) admin_listen: Option<SocketAddr>,
    pub(super) config: Option<crate::accounts::Config>,
}
pub(super) fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if args.sources.account.is_some() {
        eprintln!("error: --account is for check, explain, test and send; serve serves every account of --config");
        return Ok(ExitCode::from(2));
    }
    let config = match args.sources.config() {
        None => None,
        Some(Ok(config)) => Some(config),
        Some(Err(code)) => return Ok(code),
    };
    let file = config.as_ref();
    // Read here rather than by clap, whose error would repeat the value, password and all.
    let store_text = args
        .dedup
        .clone()
        .or_else(|| file.and_then(|c| c.store.clone()))
        .unwrap_or_else(|| "memory".into());
    let store: dedup::Store = match store_text.parse() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: invalid value for '--store' (WXRULES_STORE, or the config file's `store`): {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let settled = Settled {
        listen: args
            .listen
            .or_else(|| file.and_then(|c| c.listen))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        max_age: args
            .max_age
            .or_else(|| file.and_then(|c| c.max_age))
            .unwrap_or(300),
        store,
        wechat_api: args
            .wechat_api
            .clone()
            .or_else(|| file.and_then(|c| c.wechat_api.clone()))
            .unwrap_or_else(|| crate::wechat_api::DEFAULT_BASE.to_owned()),
        admin_listen: args
            .admin_listen
            .or_else(|| file.and_then(|c| c.admin_listen)),
        config,
    };
    // One account's secrets come from WXRULES_*; several accounts' from their own
    // variables or files, read when each is built.
    let single = match settled.config {
        Some(_) => None,
        None => Some((Secrets::from_env()?, crate::settings::api_credentials()?)),
    };
    let admin_token = match admin_token(settled.admin_listen) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let _log_guard = init_tracing(args.log_format)?;
    actix_web::rt::System::new().block_on(serve_on(args, settled, single, admin_token))
}
/// The shortest admin token accepted: a guessable one would open the admin port.
pub(super) const MIN_ADMIN_TOKEN: usize = 16;
/// WXRULES_ADMIN_TOKEN, required when the admin port is not on loopback. Errors never
/// show the token.
pub(super) fn admin_token(listen: Option<SocketAddr>) -> Result<Option<Arc<str>>, String> {
    let token = std::env::var("WXRULES_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if let Some(token) = &token {
        if token.chars().count() < MIN_ADMIN_TOKEN {
            return Err(format!(
                "WXRULES_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters"
            ));
        }
    }
    match listen {
        Some(addr) if !addr.ip().is_loopback() && token.is_none() => Err(format!(
            "--admin-listen {addr} is not a loopback address: set WXRULES_ADMIN_TOKEN, which admin clients send as `Authorization: Bearer …`"
        )),
        _ => Ok(token.map(Arc::from)),
    }
}
/// Signal streams, installed before anything else. A SIGHUP that arrives before its
/// handler takes the default action and kills the process, so they come before the first
/// load (which can take a second with 100,000 rules): a SIGHUP then is a reload once the
/// server runs. `server_started`, which ops and tests wait for, comes later still.
pub(super) struct Signals {
    pub(super) hup: tokio::signal::unix::Signal,
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
}
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }
}
/// How the rules are reloaded: one account's `Live`, or the accounts of a config file.
pub(super) enum Reloader {
    Single(Arc<Live>),
    Fleet(Arc<crate::accounts::fleet::Fleet>),
}
pub(super) async fn serve_on(
    args: &ServeArgs,
    settled: Settled,
    single: Option<(Secrets, Option<crate::wechat_api::Credentials>)>,
    admin_token: Option<Arc<str>>,
) -> anyhow::Result<ExitCode> {
    use crate::accounts::{fleet, Account, AccountParts, Accounts};
    let signals = Signals::install()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (accounts, metrics, reloader, dedup) = match (single, &settled.config) {
        (Some((secrets, credentials)), _) => {
            let sources = args.sources.sources();
            tracing::info!(event = "rules_loading", path = %sources.rules.display());
            let loaded = match load_or_report(&sources) {
                Ok(loaded) => loaded,
                Err(code) => return Ok(code),
            };
            for w in &loaded.warnings {
                tracing::warn!(event = "rules_warning", warning = %w);
            }
            let live = Arc::new(Live::new(sources, loaded.rules, Arc::clone(&clock)));
            let metrics = live.metrics().clone();
            let dedup = Dedup::new(
                dedup::Config {
                    store: settled.store.clone(),
                    ..dedup::Config::default()
                },
                metrics.clone(),
            );
            let builder = crate::accounts::fleet::Builder {
                clock: Arc::clone(&clock),
                wechat_api: settled.wechat_api.clone(),
                redis: dedup.redis(),
                outbox: crate::outbox::Config::default(),
                http: crate::wechat_api::http_client().context("the WeChat API client")?,
            };
            let (outbox, senders) = builder.outbox_for(credentials, &metrics);
            live.set_sending(senders.is_some());
            reload::warn_unsendable(&live);
            let account = Account::single(AccountParts {
                live: Arc::clone(&live),
                secrets: Arc::new(secrets),
                outbox: Arc::new(outbox),
                senders,
            });
            (
                Arc::new(Accounts::single(account)),
                metrics,
                Reloader::Single(live),
                dedup,
            )
        }
        (None, Some(config)) => {
            let metrics = crate::metrics::Metrics::new();
            let dedup = Dedup::new(
                dedup::Config {
                    store: settled.store.clone(),
                    ..dedup::Config::default()
                },
                metrics.clone(),
            );
            tracing::info!(event = "accounts_loading", path = %config.path.display(), accounts = config.accounts.len());
            let builder = fleet::Builder {
                clock: Arc::clone(&clock),
                wechat_api: settled.wechat_api.clone(),
                redis: dedup.redis(),
                outbox: crate::outbox::Config::default(),
                http: crate::wechat_api::http_client().context("the WeChat API client")?,
            };
            let specs = config.accounts.clone();
            let prepared = tokio::task::spawn_blocking(move || fleet::prepare_all(&specs))
                .await
                .context("loading the accounts")?;
            let mut ready = Vec::with_capacity(prepared.len());
            let mut failed = 0;
            for result in prepared {
                match result {
                    Ok(p) => ready.push(p),
                    Err(e) => {
                        failed += 1;
                        for line in &e.errors {
                            eprintln!("error: {line}");
                        }
                    }
                }
            }
            if failed > 0 {
                eprintln!(
                    "{}: {failed} account(s) cannot be served; nothing was started",
                    config.path.display()
                );
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            for p in &ready {
                for w in p.warnings() {
                    tracing::warn!(event = "rules_warning", account = p.name(), warning = %w);
                }
            }
            let fleet_accounts = Arc::new(Accounts::many(Vec::new()));
            let fleet = Arc::new(fleet::Fleet::new(
                Arc::clone(&fleet_accounts),
                config.path.clone(),
                builder.clone(),
            ));
            fleet.remember(&ready);
            let mut built = Vec::with_capacity(ready.len());
            for p in ready {
                match builder.build(p, None) {
                    Ok(account) => {
                        reload::warn_unsendable(&account.live);
                        built.push(account);
                    }
                    Err(e) => bail!("{}", e.errors.join("; ")),
                }
            }
            fleet_accounts.replace(built);
            (fleet_accounts, metrics, Reloader::Fleet(fleet), dedup)
        }
        (None, None) => bail!("no account to serve"),
    };
    let cooldowns = crate::cooldown::Cooldowns::new(Arc::clone(&clock), dedup.redis());
    let state = AppState {
        accounts,
        metrics,
        clock,
        options: Options {
            max_age: settled.max_age,
            health_routes: settled.admin_listen.is_none(),
            ..Options::default()
        },
        dedup: Arc::new(dedup),
        caller: crate::call::Caller::new().context("the HTTP client of calls")?,
        late_calls: Arc::default(),
        cooldowns: Arc::new(cooldowns),
        // The dashboard is served with the admin port; without it nothing is kept.
        recent: settled
            .admin_listen
            .map(|_| Arc::new(crate::recent::Recent::new(SystemClock.now()))),
    };
    run_server(state, reloader, args, &settled, signals, admin_token).await?;
    Ok(ExitCode::SUCCESS)
}
pub(super) async fn run_server(
    state: AppState,
    reloader: Reloader,
    args: &ServeArgs,
    settled: &Settled,
    signals: Signals,
    admin_token: Option<Arc<str>>,
) -> anyhow::Result<()> {
    use actix_web::{App, HttpServer};

    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
    let listen = settled.listen;
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let connections = connection_cap(args.max_connections);
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
    let bound = http
        .addrs()
        .first()
        .map_or_else(|| listen.to_string(), ToString::to_string);
    let mut http = http.run();
    let handle = http.handle();

    let (controls, receiver) = tokio::sync::mpsc::channel(16);
    let mut admin = match settled.admin_listen {
        Some(addr) => {
            let admin = server::Admin {
                controls: controls.clone(),
                token: admin_token,
            };
            let admin_state = state.clone();
            let server = HttpServer::new(move || {
                let (state, admin) = (admin_state.clone(), admin.clone());
                App::new().configure(move |cfg| server::configure_admin(cfg, state, admin))
            })
            .disable_signals()
            .shutdown_timeout(2)
            .workers(1)
            .client_request_timeout(REQUEST_HEAD_TIMEOUT)
            .bind(addr)
            .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?;
            let bound = server
                .addrs()
                .first()
                .map_or_else(|| addr.to_string(), ToString::to_string);
            Some((server.run(), bound))
        }
        None => None,
    };
    let admin_bound = admin.as_ref().map(|(_, bound)| bound.clone());

    // Watching starts before `server_started`, so that a change made after it is seen.
    let _watcher = if args.watch {
        let sources: Vec<Sources> = match &reloader {
            Reloader::Single(live) => vec![live.sources().clone()],
            Reloader::Fleet(fleet) => {
                // The config file, and its whole directory, where accounts usually live:
                // one added later is watched from the start. Accounts elsewhere are
                // watched as they were at start.
                let config = fleet.config_path().to_owned();
                let dir = match config.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                    _ => PathBuf::from("."),
                };
                // Accounts under that directory are watched with it; the others on their own.
                // Resolved (`..`, symlinks): a path that only looks under it is not.
                let under = |path: &Path| match (
                    std::fs::canonicalize(path),
                    std::fs::canonicalize(&dir),
                ) {
                    (Ok(path), Ok(dir)) => path.starts_with(dir),
                    _ => false,
                };
                let mut sources: Vec<Sources> = state
                    .accounts
                    .table()
                    .accounts()
                    .iter()
                    .map(|a| a.live.sources().clone())
                    .filter(|s| !(under(&s.rules) && under(&s.templates)))
                    .collect();
                sources.push(Sources {
                    rules: config,
                    templates: dir,
                });
                sources
            }
        };
        Some(
            crate::watch::start(&sources, controls.clone())
                .context("cannot watch the rules and templates (--watch)")?,
        )
    } else {
        None
    };
    // Written last before `server_started`, and removed when this returns, error or not.
    let _pid_file = match &args.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    // Reach Redis now, so its state shows in the log before the first push; a Redis that is
    // down is logged and retried, never fatal: the in-process store stands in.
    state.dedup.connect().await;
    match &reloader {
        Reloader::Single(live) => {
            let snapshot = live.snapshot();
            let safe_mode = state
                .account()
                .is_some_and(|a| a.secrets.cipher().is_some());
            tracing::info!(
                event = "server_started",
                listen = %bound,
                admin_listen = admin_bound.as_deref().unwrap_or(""),
                pid = std::process::id(),
                rules = snapshot.rules.rules().len(),
                digest = snapshot.rules.digest(),
                path = %live.sources().rules.display(),
                dedup = %state.dedup.store(),
                workers,
                max_connections = connections,
                safe_mode,
                wechat_api = %without_userinfo(&settled.wechat_api),
                sends = live.sending(),
                watch = args.watch,
            );
        }
        Reloader::Fleet(fleet) => {
            let table = state.accounts.table();
            let rules: usize = table
                .accounts()
                .iter()
                .map(|a| a.live.snapshot().rules.rules().len())
                .sum();
            tracing::info!(
                event = "server_started",
                listen = %bound,
                admin_listen = admin_bound.as_deref().unwrap_or(""),
                pid = std::process::id(),
                config = %fleet.config_path().display(),
                accounts = table.accounts().len(),
                rules,
                dedup = %state.dedup.store(),
                workers,
                max_connections = connections,
                wechat_api = %without_userinfo(&settled.wechat_api),
                watch = args.watch,
            );
        }
    }

    let reloader = match reloader {
        Reloader::Single(live) => {
            actix_web::rt::spawn(reload::run(live, receiver, reload::RELOAD_TIMEOUT))
        }
        Reloader::Fleet(fleet) => actix_web::rt::spawn(crate::accounts::fleet::run(
            fleet,
            receiver,
            reload::RELOAD_TIMEOUT,
        )),
    };
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
        result = &mut http => result.context("server failed")?,
        result = admin_ended => {
            result.context("admin server failed")?.context("admin server failed")?;
        }
        signal = stopper => {
            let signal = signal.unwrap_or("signal");
            tracing::info!(event = "shutting_down", signal, "answering requests in flight, then exiting");
            // `stop` sends its command at once; the server future carries it out, waiting
            // up to the shutdown timeout for connections to finish.
            let stopped = handle.stop(true);
            http.await.context("server failed")?;
            stopped.await;
        }
    }
    if let Some(admin_handle) = admin_handle {
        admin_handle.stop(true).await;
    }

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
    let table = state.accounts.table();
    let accounts: Vec<_> = table
        .accounts()
        .iter()
        .cloned()
        .chain(state.accounts.retiring())
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
    sweeper.abort();
    tracing::info!(event = "server_stopped");
    Ok(())
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
