//! `wxrules serve` (the default command): settings from flags, the environment and the
//! config file; the accounts loaded; the public and admin servers; signals, reloads and a
//! graceful stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use super::run::run_server;
use super::settled::{Settled, Signals};
use super::{SourceArgs, EXIT_CONFIG};
use crate::accounts::build::{prepare_all, Builder, Prepared, Unprepared};
use crate::accounts::{AccountSpec, Config};
use crate::clock::{Clock, SystemClock};
use crate::reload::{Fleet, Source};
use crate::server::{AppState, Options};
use crate::store::dedup::{self, Dedup};
use crate::telemetry::logline::{LineFormat, Lines};

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
    /// The URL a `late` call's service uses to deliver its answer later (it gets
    /// `X-Wxrules-Deliver: URL/-/deliver/…` with each call, and may answer 202) [default:
    /// http:// and the listen address, 127.0.0.1 for an unspecified one; none with port 0].
    #[arg(long, env = "WXRULES_DELIVER_URL", value_name = "URL")]
    pub(super) deliver_url: Option<String>,
    /// Users in a conversation state (`set:`) per account at most; past it the one set
    /// least recently is put out of its state (counted in `wxrules_states_evicted_total`).
    #[arg(long, env = "WXRULES_MAX_STATES", default_value_t = crate::store::conversation::PER_ACCOUNT, value_parser = clap::value_parser!(usize))]
    pub(super) max_states: usize,
    /// Serve `/healthz`, `/metrics` and `POST /-/reload` on this address instead of the
    /// public port (e.g. 127.0.0.1:9180). An address other than loopback needs
    /// WXRULES_ADMIN_TOKEN, sent by clients as `Authorization: Bearer …`.
    #[arg(long, env = "WXRULES_ADMIN_LISTEN", value_name = "ADDR")]
    pub(super) admin_listen: Option<SocketAddr>,
    /// The rule tests a change made in the page must pass (without --config; with it, each
    /// account's `tests:`) [default: tests.yaml beside the rules file, when it exists].
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub(super) tests: Option<PathBuf>,
    /// A host name the admin port answers to besides loopback ones (with a token, also any
    /// IP address), e.g. the name a reverse proxy passes on; may be given several times.
    /// Other `Host`s are refused, so that a web page pointing its own name at the port (DNS
    /// rebinding) cannot read it.
    #[arg(
        long = "admin-host",
        env = "WXRULES_ADMIN_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub(super) admin_hosts: Vec<String>,
    /// Reload when the rules file or a template changes (after 250 ms of quiet), as
    /// SIGHUP does: for Kubernetes ConfigMaps and other setups where no one sends signals.
    #[arg(long)]
    pub(super) watch: bool,
    /// With --config, start only if every account loads (exit 78 otherwise). Without it,
    /// the accounts that load start and the others are reported until a reload mends them.
    #[arg(long)]
    pub(super) strict: bool,
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
) -> anyhow::Result<crate::telemetry::logsink::FlushGuard<std::io::Stderr>> {
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
    let (writer, guard) = crate::telemetry::logsink::batched(std::io::stderr(), "wxrules-log")
        .context("starting the log writer thread")?;
    tracing_subscriber::registry()
        .with(filter)
        .with(Lines::new(format, writer))
        .try_init()
        .context("installing the logger")?;
    Ok(guard)
}

/// The settings of `args` and `config`, or the exit code after saying what is wrong.
fn settle(args: &ServeArgs, config: Option<Config>) -> Result<Settled, ExitCode> {
    let file = config.as_ref();
    // Read here rather than by clap, whose error would repeat the value, password and all.
    let store_text = args
        .dedup
        .clone()
        .or_else(|| file.and_then(|c| c.store.clone()))
        .unwrap_or_else(|| "memory".into());
    let store: crate::store::Store = match store_text.parse() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: invalid value for '--store' (WXRULES_STORE, or the config file's `store`): {e}");
            return Err(ExitCode::from(2));
        }
    };
    let listen = args
        .listen
        .or_else(|| file.and_then(|c| c.listen))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    Ok(Settled {
        listen,
        max_states: args.max_states.max(1),
        deliver_base: args
            .deliver_url
            .clone()
            .map(|url| url.trim_end_matches('/').to_owned())
            .or_else(|| deliver_base_of(listen)),
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
        strict: args.strict,
        source: match config {
            Some(config) => Source::Config(config.path),
            None => {
                let mut spec = AccountSpec::single(args.sources.sources());
                spec.customer_service = args.sources.customer_service.unwrap_or(true);
                // The page shows it when it is there.
                spec.menu = Some(spec.sources.rules.with_file_name("menu.yaml"));
                spec.tests = Some(
                    args.tests
                        .clone()
                        .unwrap_or_else(|| spec.sources.rules.with_file_name("tests.yaml")),
                );
                Source::Single(Box::new(spec))
            }
        },
        workers: args.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        ),
        max_connections: args.max_connections,
        watch: args.watch,
        pid_file: args.pid_file.clone(),
        admin_hosts: args.admin_hosts.clone(),
    })
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
    let settled = match settle(args, config) {
        Ok(settled) => settled,
        Err(code) => return Ok(code),
    };
    // A fleet of one reads its secrets from WXRULES_* before anything starts: a missing
    // one is a one-line error, as in Part 1. A config file's accounts read theirs when
    // each is built.
    if let Source::Single(spec) = &settled.source {
        if let Err(e) = spec.secrets.resolve() {
            bail!("{e}");
        }
    }
    let admin_token = match admin_token(settled.admin_listen) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let _log_guard = init_tracing(args.log_format)?;
    actix_web::rt::System::new().block_on(async {
        // Before the first load: a SIGHUP during it is a reload, not a kill.
        let signals = Signals::install()?;
        let state = match assemble(&settled, admin_token).await? {
            Ok(state) => state,
            Err(code) => return Ok(code),
        };
        run_server(state, &settled, signals).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The server's state: every account loaded and made to serve, the stores, the callers.
/// The one way the server is put together, whether it has one account or many. An
/// account that cannot be served stops the start (its errors printed, exit 78).
async fn assemble(
    settled: &Settled,
    admin_token: Option<Arc<str>>,
) -> anyhow::Result<Result<AppState, ExitCode>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = crate::telemetry::metrics::Metrics::new();
    let dedup = Dedup::new(
        dedup::Config {
            store: settled.store.clone(),
            ..dedup::Config::default()
        },
        metrics.clone(),
    );
    let mut slow = crate::server::slow::SlowAnswers::new(Arc::clone(&clock), dedup.redis());
    slow.deliver_base = settled.deliver_base.clone();
    let slow = Arc::new(slow);
    let builder = Builder {
        clock: Arc::clone(&clock),
        wechat_api: settled.wechat_api.clone(),
        redis: dedup.redis(),
        outbox: crate::act::outbox::Config::default(),
        http: crate::wechat_api::http_client().context("the WeChat API client")?,
        mode: settled.source.mode(),
        metrics: metrics.clone(),
        // What WeChat refuses with 45047 is kept for the user's next message.
        over_quota: Some(Arc::clone(&slow) as Arc<dyn crate::act::outbox::OverQuota>),
    };
    let (prepared, unserved) = match prepare(&settled.source, settled.strict).await? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(Err(code)),
    };
    let editors = match &settled.source {
        Source::Config(path) => crate::accounts::read_config(path)
            .map(|c| c.editors)
            .unwrap_or_default(),
        Source::Single(_) => Vec::new(),
    };
    let fleet = match Fleet::new(builder, settled.source.clone(), prepared)
        .with_editors(&editors, admin_token.clone())
    {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Err(ExitCode::from(EXIT_CONFIG)));
        }
    };
    fleet.note_unserved(unserved);
    let fleet = Arc::new(fleet);
    for live in fleet.accounts.table().accounts() {
        crate::reload::warn_unsendable(live);
    }
    let cooldowns = crate::store::cooldown::Cooldowns::new(Arc::clone(&clock), dedup.redis());
    let replays = crate::store::replay::Replays::new(dedup.redis());
    let conversations =
        crate::store::conversation::Conversations::new(Arc::clone(&clock), dedup.redis())
            .bounded(settled.max_states);
    // The outbox in Redis is only as durable as Redis: say so at start when it is not.
    if let Some(redis) = dedup.redis() {
        if fleet.accounts.table().accounts().iter().any(|a| a.sends()) {
            crate::store::outbox::check_durability(&redis).await;
        }
    }
    Ok(Ok(AppState {
        fleet,
        metrics,
        clock,
        options: Options {
            max_age: settled.max_age,
            health_routes: settled.admin_listen.is_none(),
            ..Options::default()
        },
        dedup: Arc::new(dedup),
        caller: crate::act::call::Caller::new().context("the HTTP client of calls")?,
        late_calls: Arc::default(),
        cooldowns: Arc::new(cooldowns),
        replays: Arc::new(replays),
        slow,
        conversations: Arc::new(conversations),
        // The dashboard is served with the admin port; without it nothing is kept.
        recent: settled
            .admin_listen
            .map(|_| Arc::new(crate::telemetry::recent::Recent::new(SystemClock.now()))),
    }))
}

/// Every account of `source` read and loaded, on every core, and those that cannot be
/// served, each with its errors. A fleet of one that cannot be served, a config file none
/// of whose accounts can be, or (`--strict`) any account that cannot be, stops the start:
/// the errors printed, exit 78. Otherwise the others start and the broken ones are
/// reported (the log, `/healthz` degraded, the dashboard) until a reload mends them.
async fn prepare(
    source: &Source,
    strict: bool,
) -> anyhow::Result<Result<(Vec<Prepared>, Vec<Unprepared>), ExitCode>> {
    let specs = match source {
        Source::Single(spec) => {
            tracing::info!(event = "rules_loading", path = %spec.sources.rules.display());
            vec![(**spec).clone()]
        }
        Source::Config(path) => {
            let config = match crate::accounts::read_config(path) {
                Ok(config) => config,
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("error: {e}");
                    }
                    return Ok(Err(ExitCode::from(EXIT_CONFIG)));
                }
            };
            tracing::info!(event = "accounts_loading", path = %path.display(), accounts = config.accounts.len());
            config.accounts
        }
    };
    let count = specs.len();
    let loaded = tokio::task::spawn_blocking(move || prepare_all(&specs))
        .await
        .context("loading the accounts")?;
    let (ready, failed): (Vec<_>, Vec<_>) = loaded.into_iter().partition(Result::is_ok);
    let ready: Vec<Prepared> = ready.into_iter().filter_map(Result::ok).collect();
    let failed: Vec<Unprepared> = failed.into_iter().filter_map(Result::err).collect();
    let stop = match source {
        Source::Single(spec) => failed.first().map(|e| {
            // As `check` reports a file: each error, then how many.
            super::report_lines(&e.errors, "error");
            format!(
                "{}: {} error{}",
                spec.sources.rules.display(),
                e.errors.len(),
                if e.errors.len() == 1 { "" } else { "s" }
            )
        }),
        Source::Config(path) if !failed.is_empty() && (ready.is_empty() || strict) => {
            for e in &failed {
                super::report_lines(&e.errors, "error");
            }
            Some(if ready.is_empty() {
                format!(
                    "{}: none of the {count} account(s) can be served; nothing was started",
                    path.display()
                )
            } else {
                format!(
                    "{}: {} account(s) cannot be served; nothing was started (--strict)",
                    path.display(),
                    failed.len()
                )
            })
        }
        Source::Config(_) => None,
    };
    if let Some(why) = stop {
        eprintln!("{why}");
        return Ok(Err(ExitCode::from(EXIT_CONFIG)));
    }
    for e in &failed {
        for error in &e.errors {
            tracing::error!(event = "account_unserved", account = %e.account, error = %error);
        }
        tracing::error!(
            event = "account_unserved",
            account = %e.account,
            errors = e.errors.len(),
            "this account cannot be served; the others start without it (a reload that mends its files adds it)"
        );
    }
    let single = matches!(source, Source::Single(_));
    for p in &ready {
        for w in p.warnings() {
            if single {
                tracing::warn!(event = "rules_warning", warning = %w);
            } else {
                tracing::warn!(event = "rules_warning", account = p.name(), warning = %w);
            }
        }
    }
    Ok(Ok((ready, failed)))
}

/// WXRULES_ADMIN_TOKEN, required when the admin port is not on loopback: 16 to 512 visible
/// ASCII characters (a space, a line break or a character a header cannot carry would
/// never match what a client sends). Errors name the variable, never the token.
/// The listener as the services on this machine reach it: `http://` and its address (an
/// unspecified one as loopback); none for port 0, which is known only once bound.
fn deliver_base_of(listen: SocketAddr) -> Option<String> {
    if listen.port() == 0 {
        return None;
    }
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Some(format!("http://{}", SocketAddr::new(ip, listen.port())))
}

pub(super) fn admin_token(listen: Option<SocketAddr>) -> Result<Option<Arc<str>>, String> {
    let token = std::env::var("WXRULES_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if let Some(token) = &token {
        crate::accounts::editors::check_shape(token)
            .map_err(|why| format!("WXRULES_ADMIN_TOKEN {why}"))?;
    }
    match listen {
        Some(addr) if !addr.ip().is_loopback() && token.is_none() => Err(format!(
            "--admin-listen {addr} is not a loopback address: set WXRULES_ADMIN_TOKEN, which admin clients send as `Authorization: Bearer …`"
        )),
        _ => Ok(token.map(Arc::from)),
    }
}
