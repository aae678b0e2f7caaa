//! The command line: `serve` (the default), `check`, `explain` and `test`. Errors get
//! their context here and are printed once, with their causes; exit codes follow sysexits
//! (78 = the rules are invalid).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};

use crate::answer::Outcome;
use crate::clock::{Clock, SystemClock};
use crate::dedup::{self, Dedup};
use crate::logline::{LineFormat, Lines};
use crate::reload::{self, Control, Live};
use crate::rules::{self, Loaded, RuleError, Sources};
use crate::server::{self, AppState, Options};
use crate::settings::Secrets;
use crate::wire::Message;

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

/// File descriptors kept back from connections: the listener, the log, Redis, reloads.
const RESERVED_FILES: u64 = 256;

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

/// Where `wxrules reload` finds the admin port by default: the address the docs use.
const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9180";

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

/// How many rules `check` names whose templates it could not hold to WeChat's fields.
const NOTES_SHOWN: usize = 10;

/// Exit code for invalid rules (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// The most HTTP workers `--workers` accepts: each is a thread with its own event loop, and
/// past a few per core they only add memory and context switches.
const MAX_WORKERS: i64 = 256;

/// Answers WeChat Official Account pushes from a YAML rules file.
#[derive(Debug, Parser)]
#[command(name = "wxrules", version, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the rules over HTTP (the default). Secrets come from WXRULES_TOKEN, and for
    /// safe mode WXRULES_APPID and WXRULES_AES_KEY.
    Serve(ServeArgs),
    /// Check the rules and templates; exit 0 when valid, 78 with every error otherwise.
    Check {
        #[command(flatten)]
        sources: SourceArgs,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Show which rule answers a message, why, and the reply XML.
    Explain(ExplainArgs),
    /// Print the JSON Schema of the rules file (shipped as rules/rules.schema.json).
    Schema,
    /// Send a signed push to a running server, as WeChat would, and print its answer
    /// (decrypted in safe mode); exit 1 on a status other than 200. Signs with
    /// WXRULES_TOKEN; `--safe` encrypts with WXRULES_AES_KEY and WXRULES_APPID.
    Send(SendArgs),
    /// Turn the MP console's auto-replies (the JSON of get_current_autoreply_info) into a
    /// commented rules file and a cases file. Writes nothing when the export is not right.
    Import(ImportArgs),
    /// Reload a running server's rules through its admin port (`--admin-listen`) and print
    /// the outcome; exit 0 when the new rules are live, 1 when they were refused.
    Reload {
        /// The admin port's URL.
        #[arg(long, env = "WXRULES_ADMIN_URL", default_value = DEFAULT_ADMIN_URL, value_name = "URL")]
        admin: String,
    },
    /// Run ops-written cases (CASES.yaml) against the rules; exit 1 if any fails.
    Test {
        #[command(flatten)]
        sources: SourceArgs,
        /// The cases file: a top-level `cases:` list.
        cases: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["message", "text", "event"])))]
struct SendArgs {
    /// The server's push URL [default: http://127.0.0.1:8080/wechat, or with --config the
    /// account's path on the file's `listen`].
    #[arg(long)]
    url: Option<String>,
    /// Sign with the secrets of an account of this config file (and --account).
    #[arg(long, env = "WXRULES_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The account of --config to sign as (may be left out when the file has one).
    #[arg(long, value_name = "NAME", requires = "config")]
    account: Option<String>,
    /// A message XML file to send (its own fields, as written).
    message: Option<PathBuf>,
    /// A text message with this content.
    #[arg(long)]
    text: Option<String>,
    /// An event with this name (subscribe, CLICK, SCAN, …).
    #[arg(long)]
    event: Option<String>,
    /// The event's EventKey.
    #[arg(long, requires = "event")]
    event_key: Option<String>,
    /// The sender's OpenID (FromUserName) of a made-up message.
    #[arg(long, default_value = "o_wxrules_send_user")]
    from: String,
    /// The account (ToUserName) of a made-up message.
    #[arg(long, default_value = "gh_wxrules_send")]
    to: String,
    /// Encrypt the push as in safe mode (安全模式), and decrypt the answer.
    #[arg(long)]
    safe: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["export", "from_wechat"])))]
struct ImportArgs {
    /// The export: the JSON WeChat answers to get_current_autoreply_info.
    export: Option<PathBuf>,
    /// Fetch it from WeChat's API instead, with WXRULES_APPID and WXRULES_APPSECRET.
    #[arg(long)]
    from_wechat: bool,
    /// WeChat's API (or a whitelisted proxy), for `--from-wechat`.
    #[arg(long, env = "WXRULES_WECHAT_API", default_value = crate::wechat_api::DEFAULT_BASE, value_name = "URL")]
    wechat_api: String,
    /// Write the rules here (a new file); default: print them.
    #[arg(long, value_name = "FILE")]
    rules_out: Option<PathBuf>,
    /// Write the cases here (a new file).
    #[arg(long, value_name = "FILE")]
    tests_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// The rules file.
    #[arg(long, default_value = "rules/rules.yaml")]
    rules: PathBuf,
    /// The directory of `NAME.hbs` templates.
    #[arg(long, default_value = "templates")]
    templates: PathBuf,
    /// A config file of several accounts (`accounts:`), instead of --rules/--templates.
    #[arg(long, env = "WXRULES_CONFIG", value_name = "FILE", conflicts_with_all = ["rules", "templates"])]
    config: Option<PathBuf>,
    /// With --config: the account to use (`check` without it checks every account).
    #[arg(long, value_name = "NAME", requires = "config")]
    account: Option<String>,
}

impl SourceArgs {
    fn sources(&self) -> Sources {
        Sources {
            rules: self.rules.clone(),
            templates: self.templates.clone(),
        }
    }

    /// The config file read, or every error printed and exit 78.
    fn config(&self) -> Option<Result<crate::accounts::Config, ExitCode>> {
        self.config.as_ref().map(|path| read_config_or_report(path))
    }

    /// The one account to use: --rules/--templates (`None` for its secrets: the
    /// environment's), or with --config the account named by --account (which may be left
    /// out when the file has one).
    fn one(&self) -> Result<(Sources, Option<crate::accounts::AccountSpec>), ExitCode> {
        let Some(config) = self.config() else {
            return Ok((self.sources(), None));
        };
        let config = config?;
        let spec = match (&self.account, config.accounts.as_slice()) {
            (Some(name), _) => config.account(name).cloned(),
            (None, [only]) => Some(only.clone()),
            (None, _) => {
                eprintln!(
                    "error: {} has several accounts: name one with --account ({})",
                    config.path.display(),
                    config.names()
                );
                return Err(ExitCode::from(2));
            }
        };
        match spec {
            Some(spec) => Ok((spec.sources.clone(), Some(spec))),
            None => {
                eprintln!(
                    "error: {} has no account `{}` (it has: {})",
                    config.path.display(),
                    self.account.as_deref().unwrap_or_default(),
                    config.names()
                );
                Err(ExitCode::from(2))
            }
        }
    }
}

/// Reads a `--config` file; its errors are printed, each as `file:line:col: …`.
fn read_config_or_report(path: &Path) -> Result<crate::accounts::Config, ExitCode> {
    crate::accounts::read_config(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        eprintln!("{}: {} error(s)", path.display(), errors.0.len());
        ExitCode::from(EXIT_CONFIG)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's `listen`].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Refuse requests whose timestamp is more than this many seconds from now (0 = off)
    /// [default: 300, or the config file's `max_age`].
    #[arg(long)]
    max_age: Option<u64>,
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
    dedup: Option<String>,
    /// Log lines as text or JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Open connections at most, over all workers; past it new connections wait in the
    /// listen queue. Lowered to fit the open-file limit, which is raised at start to fit it
    /// (up to the hard limit).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// WeChat's API, for customer-service messages (`send:`): the real one, or an
    /// IP-whitelisted proxy in front of it. Credentials come from WXRULES_APPID and
    /// WXRULES_APPSECRET.
    #[arg(long, env = "WXRULES_WECHAT_API", value_name = "URL")]
    wechat_api: Option<String>,
    /// HTTP worker threads (default: one per core), 1 to 256.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS))]
    workers: Option<u16>,
    /// Serve `/healthz`, `/metrics` and `POST /-/reload` on this address instead of the
    /// public port (e.g. 127.0.0.1:9180). An address other than loopback needs
    /// WXRULES_ADMIN_TOKEN, sent by clients as `Authorization: Bearer …`.
    #[arg(long, env = "WXRULES_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Reload when the rules file or a template changes (after 250 ms of quiet), as
    /// SIGHUP does: for Kubernetes ConfigMaps and other setups where no one sends signals.
    #[arg(long)]
    watch: bool,
    /// Write the process id to this file once listening (for `kill -HUP "$(cat FILE)"`);
    /// removed at exit.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["message", "text", "event"])))]
struct ExplainArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// A message XML file, as WeChat posts it.
    message: Option<PathBuf>,
    /// A text message with this content.
    #[arg(long)]
    text: Option<String>,
    /// An event with this name (subscribe, CLICK, SCAN, …).
    #[arg(long)]
    event: Option<String>,
    /// The event's EventKey.
    #[arg(long, requires = "event")]
    event_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// For a rule with a `call`: the service's answer (a JSON file) to use; no call is made.
    #[arg(long, value_name = "FILE", conflicts_with = "call_error")]
    call_response: Option<PathBuf>,
    /// For a rule with a `call`: answer as if the call had failed for this reason.
    #[arg(long, value_name = "REASON")]
    call_error: Option<String>,
    /// Evaluate the rules' `active` windows at this moment (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<jiff::Timestamp>,
}

/// Runs the command and returns the process exit code; prints errors with their causes.
pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        None => serve(&args.serve),
        Some(Command::Serve(serve_args)) => serve(&serve_args),
        Some(Command::Check {
            sources,
            deny_warnings,
        }) => check_accounts(&sources, deny_warnings),
        Some(Command::Explain(explain_args)) => explain(&explain_args),
        Some(Command::Reload { admin }) => reload_remote(&admin),
        Some(Command::Send(send_args)) => send(&send_args),
        Some(Command::Import(import_args)) => import(&import_args),
        Some(Command::Test { sources, cases }) => match sources.one() {
            Ok((sources, _)) => test(&sources, &cases),
            Err(code) => Ok(code),
        },
        Some(Command::Schema) => {
            print!("{}", rules::json_schema());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr in batches written by a background thread (`logsink`), so a request
/// does not wait on a write(2) unless stderr falls 1 MiB behind; the returned guard writes
/// what is pending when it is dropped, at exit. Nothing is dropped: an operator must never
/// miss a reload error.
fn init_tracing(format: LogFormat) -> anyhow::Result<crate::logsink::FlushGuard<std::io::Stderr>> {
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

/// Prints each error (and warning) on its own line to stderr.
fn report(errors: &[RuleError], label: &str) {
    for e in errors {
        eprintln!("{label}: {e}");
    }
}

fn load_or_report(sources: &Sources) -> Result<Loaded, ExitCode> {
    rules::load(sources).map_err(|e| {
        report(&e.0, "error");
        eprintln!(
            "{}: {} error{}",
            sources.rules.display(),
            e.0.len(),
            if e.0.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `check`: the rules of --rules/--templates, or of every account of --config (each
/// reported, all errors of all accounts), or of the one named by --account.
fn check_accounts(args: &SourceArgs, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config() else {
        return check(&args.sources(), deny_warnings);
    };
    let config = match config {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    if args.account.is_some() {
        return match args.one() {
            Ok((sources, _)) => check(&sources, deny_warnings),
            Err(code) => Ok(code),
        };
    }
    let mut failed = Vec::new();
    for spec in &config.accounts {
        println!("account {} ({}):", spec.name, spec.path);
        // The secrets where `serve` will look: a warning here (they may be set only where
        // the server runs), an error there. Never their values.
        let secrets = spec.secrets.resolve().err();
        if let Some(e) = &secrets {
            eprintln!(
                "warning: {}:{}: account `{}`: {e}; `serve` would refuse to start",
                config.path.display(),
                spec.line,
                spec.name
            );
        }
        let code = check(&spec.sources, deny_warnings)?;
        if code != ExitCode::SUCCESS || (deny_warnings && secrets.is_some()) {
            failed.push(spec.name.as_str());
        }
    }
    if failed.is_empty() {
        println!(
            "ok: {} accounts ({})",
            config.accounts.len(),
            config.path.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{}: {} of {} accounts have errors: {}",
            config.path.display(),
            failed.len(),
            config.accounts.len(),
            failed.join(", ")
        );
        Ok(ExitCode::from(EXIT_CONFIG))
    }
}

fn check(sources: &Sources, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let loaded = match load_or_report(sources) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let errors = rules::compile_regexes(&loaded.rules, &sources.rules);
    if !errors.is_empty() {
        report(&errors, "error");
        eprintln!("{}: {} error(s)", sources.rules.display(), errors.len());
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let mut warnings = loaded.warnings;
    warnings.extend(rules::lint(&loaded.rules, &sources.rules));
    report(&warnings, "warning");
    let rules = &loaded.rules;
    if deny_warnings && !warnings.is_empty() {
        eprintln!(
            "{}: {} warning(s), denied by --deny-warnings",
            sources.rules.display(),
            warnings.len()
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    // Not a warning: a rule on an event the catalog lacks is fine, only less checked.
    let unchecked = rules::unchecked_rules(rules);
    for rule in unchecked.iter().take(NOTES_SHOWN) {
        eprintln!(
            "note: {}:{}: rule `{}`: its templates are not checked against WeChat's fields: it can match a message type or event that wxrules' catalog does not know",
            sources.rules.display(),
            rule.line(),
            rule.name()
        );
    }
    if unchecked.len() > NOTES_SHOWN {
        eprintln!(
            "note: and {} more rules like these",
            unchecked.len() - NOTES_SHOWN
        );
    }
    println!(
        "ok: {} rules, {} templates, digest {} ({})",
        rules.rules().len(),
        rules.template_count(),
        rules.digest(),
        sources.rules.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn test(sources: &Sources, cases_path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match load_or_report(sources) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let cases = crate::cases::read(cases_path)?;
    let base = cases_path.parent().unwrap_or(Path::new("."));
    let report = crate::cases::run(&loaded.rules, &cases, base);
    for (name, why) in &report.failed {
        println!("FAIL {name}: {why}");
    }
    println!("{} passed, {} failed", report.passed, report.failed.len());
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `serve`'s settings once flags, the environment and the config file are put together:
/// a flag (or its environment variable) wins over the file, the file over the default.
struct Settled {
    listen: SocketAddr,
    max_age: u64,
    store: dedup::Store,
    wechat_api: String,
    admin_listen: Option<SocketAddr>,
    config: Option<crate::accounts::Config>,
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
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
const MIN_ADMIN_TOKEN: usize = 16;

/// WXRULES_ADMIN_TOKEN, required when the admin port is not on loopback. Errors never
/// show the token.
fn admin_token(listen: Option<SocketAddr>) -> Result<Option<Arc<str>>, String> {
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

/// `wxrules import`: the console's auto-replies as rules and cases, written only when the
/// whole export imports and the files are new.
fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let json = match &args.export {
        Some(path) => crate::rules::read_text(path, crate::rules::MAX_RULES_FILE)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let credentials = crate::settings::api_credentials()?
                .context("--from-wechat needs WXRULES_APPID and WXRULES_APPSECRET")?;
            let api = crate::wechat_api::Api::new(
                &args.wechat_api,
                Some(credentials),
                crate::metrics::Metrics::new(),
            )
            .context("the WeChat API client")?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the HTTP client")?
                .block_on(api.current_autoreply_info())
                .context("fetching the auto-replies from WeChat")?
        }
    };
    let imported = match crate::import::import(&json) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing written");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    if args.rules_out.is_some() && args.rules_out == args.tests_out {
        eprintln!("error: --rules-out and --tests-out are the same file");
        eprintln!("nothing written");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    for path in [&args.rules_out, &args.tests_out].into_iter().flatten() {
        if path.exists() {
            eprintln!(
                "error: {} exists: remove it or choose another file",
                path.display()
            );
            eprintln!("nothing written");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    }
    // New files only, even if one appeared since the check above.
    let write_new = |path: &Path, text: &str| -> anyhow::Result<()> {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))
    };
    match &args.rules_out {
        Some(path) => write_new(path, &imported.rules)?,
        None => print!("{}", imported.rules),
    }
    if let Some(path) = &args.tests_out {
        write_new(path, &imported.cases)?;
    }
    eprintln!(
        "imported {} rules ({} switched off in the console, commented out)",
        imported.rule_count, imported.disabled
    );
    Ok(ExitCode::SUCCESS)
}

/// `wxrules send`: a push signed (and in safe mode encrypted) as WeChat signs it, posted to
/// `--url`; prints the status and the answer, decrypted.
fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let source = SourceArgs {
        rules: PathBuf::new(),
        templates: PathBuf::new(),
        config: args.config.clone(),
        account: args.account.clone(),
    };
    let (_, spec) = match source.one() {
        Ok(one) => one,
        Err(code) => return Ok(code),
    };
    let listen = match &args.config {
        Some(path) => crate::accounts::read_config(path)
            .ok()
            .and_then(|c| c.listen),
        None => None,
    };
    let target = match (&args.url, &spec) {
        (Some(url), _) => url.clone(),
        (None, Some(spec)) => format!(
            "http://{}{}",
            listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            spec.path
        ),
        (None, None) => "http://127.0.0.1:8080/wechat".to_owned(),
    };
    let secrets = secrets_of(spec.as_ref()).context("signing the push")?;
    let cipher = match (args.safe, secrets.cipher()) {
        (true, Some(cipher)) => Some(cipher),
        (true, None) if spec.is_none() => bail!("--safe needs WXRULES_AES_KEY and WXRULES_APPID"),
        (true, None) => bail!("--safe needs the account's aes_key and appid"),
        (false, _) => None,
    };
    let now = SystemClock.now();
    let message_id = now.to_string() + &format!("{:04}", rand::random::<u16>() % 10_000);
    let xml = match (&args.message, &args.text, &args.event) {
        (Some(path), _, _) => read_message(path)?,
        (_, Some(text), _) => made_up(
            args,
            &[
                ("MsgType", "text"),
                ("Content", text),
                ("MsgId", &message_id),
            ],
            now,
        ),
        (_, _, Some(event)) => {
            let mut kind = vec![("MsgType", "event"), ("Event", event.as_str())];
            kind.extend(args.event_key.as_deref().map(|k| ("EventKey", k)));
            made_up(args, &kind, now)
        }
        _ => bail!("give a message file, --text or --event"),
    };
    let timestamp = now.to_string();
    let nonce = rand::random::<u32>().to_string();
    let signature = crate::crypto::sign(&[secrets.token(), &timestamp, &nonce]);
    let openid = Message::parse(xml.as_bytes())
        .map(|m| m.from_user().to_owned())
        .unwrap_or_else(|_| args.from.clone());
    let mut query: Vec<(&str, String)> = vec![
        ("signature", signature),
        ("timestamp", timestamp.clone()),
        ("nonce", nonce.clone()),
        ("openid", openid),
    ];
    let body = match cipher {
        None => xml,
        Some(cipher) => {
            let encrypt = cipher.encrypt(xml.as_bytes());
            let msg_signature =
                crate::crypto::sign(&[secrets.token(), &timestamp, &nonce, &encrypt]);
            query.push(("encrypt_type", "aes".into()));
            query.push(("msg_signature", msg_signature));
            let to = Message::parse(xml.as_bytes())
                .map_or_else(|_| args.to.clone(), |m| m.to_user().to_owned());
            crate::wire::write_fields(&[("ToUserName".into(), to), ("Encrypt".into(), encrypt)])
        }
    };
    let mut url = reqwest::Url::parse(&target).with_context(|| format!("--url {target}"))?;
    url.query_pairs_mut().extend_pairs(query);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP client")?;
    let (status, answer) = runtime
        .block_on(async {
            let response = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?
                .post(url)
                .header("Content-Type", "text/xml")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .map_err(|e| anyhow::anyhow!("cannot send to {target}: {}", e.without_url()))?;
    let shown = match (
        cipher,
        crate::wire::parse_encrypted_reply(answer.as_bytes()),
    ) {
        (Some(cipher), Ok(reply)) => {
            // The answer's own signature first, as WeChat checks it.
            let expected = crate::crypto::sign(&[
                secrets.token(),
                &reply.timestamp,
                &reply.nonce,
                &reply.encrypt,
            ]);
            if reply.msg_signature != expected {
                bail!("the answer's MsgSignature does not match: {answer}");
            }
            let plain = cipher
                .decrypt(&reply.encrypt)
                .context("the answer does not decrypt")?;
            String::from_utf8_lossy(&plain).into_owned()
        }
        _ => answer,
    };
    if status != reqwest::StatusCode::OK {
        println!("{status}");
        println!("{shown}");
        return Ok(ExitCode::from(1));
    }
    println!("{shown}");
    Ok(ExitCode::SUCCESS)
}

/// The XML of a made-up push from `--from` to `--to`.
fn made_up(args: &SendArgs, kind: &[(&str, &str)], now: u64) -> String {
    crate::explain::made_up(&args.to, &args.from, kind, now)
}

/// `wxrules reload`: `POST /-/reload` on the admin port; prints the outcome.
fn reload_remote(admin: &str) -> anyhow::Result<ExitCode> {
    let url = format!("{}/-/reload", admin.trim_end_matches('/'));
    let token = std::env::var("WXRULES_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP client")?;
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(crate::reload::RELOAD_TIMEOUT + std::time::Duration::from_secs(10))
            .build()?;
        let mut request = client.post(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!(
                "error: cannot reach the admin port at {admin}: {}",
                e.without_url()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let Ok(report) = serde_json::from_str::<serde_json::Value>(&body) else {
        eprintln!("error: {url} answered {status}, not a reload report");
        return Ok(ExitCode::from(2));
    };
    if report.get("accounts").is_some() {
        return Ok(print_fleet_report(&report, status));
    }
    let list = |key: &str| strings(&report[key]);
    let outcome = report["outcome"].as_str().unwrap_or("unknown");
    match outcome {
        "applied" => {
            println!(
                "applied: {} rules, digest {}",
                report["rules"],
                report["digest"].as_str().unwrap_or("")
            );
            for key in ["added", "removed", "changed"] {
                let names = list(key);
                if !names.is_empty() {
                    println!("  {key}: {}", names.join(", "));
                }
            }
            if report["templates_changed"] == serde_json::Value::Bool(true) {
                println!("  templates changed");
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let errors = list("errors");
            println!("{outcome}: the previous rules keep serving");
            for e in &errors {
                println!("error: {e}");
            }
            if status == reqwest::StatusCode::UNAUTHORIZED {
                println!("error: set WXRULES_ADMIN_TOKEN to the server's admin token");
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// The strings of a JSON list (none if it is not one).
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Prints the reload report of a server of several accounts: one line per account that
/// changed or failed, its errors, and the config file's own; exit 0 when nothing was
/// refused.
fn print_fleet_report(report: &serde_json::Value, status: reqwest::StatusCode) -> ExitCode {
    let outcome = report["outcome"].as_str().unwrap_or("unknown");
    println!(
        "{outcome}: {} account(s) unchanged",
        report["unchanged"].as_u64().unwrap_or(0)
    );
    for e in strings(&report["config_errors"]) {
        println!("error: {e}");
    }
    for account in report["accounts"].as_array().into_iter().flatten() {
        let name = account["account"].as_str().unwrap_or("?");
        let shown = account["outcome"].as_str().unwrap_or("?");
        println!(
            "  {name}: {shown}, {} rules{}",
            account["rules"],
            if shown == "rejected" {
                " (the previous rules keep serving)"
            } else {
                ""
            }
        );
        for key in ["added", "removed", "changed"] {
            let names = strings(&account[key]);
            if !names.is_empty() {
                println!("    {key}: {}", names.join(", "));
            }
        }
        for e in strings(&account["errors"]) {
            println!("    error: {e}");
        }
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        println!("error: set WXRULES_ADMIN_TOKEN to the server's admin token");
    }
    if matches!(outcome, "applied" | "unchanged") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Signal streams, installed before anything else. A SIGHUP that arrives before its
/// handler takes the default action and kills the process, so they come before the first
/// load (which can take a second with 100,000 rules): a SIGHUP then is a reload once the
/// server runs. `server_started`, which ops and tests wait for, comes later still.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
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
enum Reloader {
    Single(Arc<Live>),
    Fleet(Arc<crate::accounts::fleet::Fleet>),
}

async fn serve_on(
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

async fn run_server(
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

fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let (sources, spec) = match args.sources.one() {
        Ok(one) => one,
        Err(code) => return Ok(code),
    };
    let loaded = match load_or_report(&sources) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let now = SystemClock.now();
    let xml = match (&args.message, &args.text, &args.event) {
        (Some(path), _, _) => read_message(path)?,
        (_, Some(text), _) => crate::explain::synthetic(
            &[("MsgType", "text"), ("Content", text), ("MsgId", "1")],
            now,
        ),
        (_, _, Some(event)) => {
            let mut kind = vec![("MsgType", "event"), ("Event", event.as_str())];
            kind.extend(args.event_key.as_deref().map(|k| ("EventKey", k)));
            crate::explain::synthetic(&kind, now)
        }
        _ => bail!("give a message file, --text or --event"),
    };
    let message = parse_for_explain(&xml, spec.as_ref())?;
    let rules = &loaded.rules;
    let at = match args.at {
        Some(at) => u64::try_from(at.as_second()).context("--at is before 1970")?,
        None => now,
    };
    let stub_value = match &args.call_response {
        Some(path) => {
            let text = crate::rules::read_text(path, crate::call::MAX_ANSWER as u64)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?,
            )
        }
        None => None,
    };
    let stub = crate::call::stub(stub_value.as_ref(), args.call_error.as_deref());
    let caller = crate::call::Caller::new().context("the HTTP client of calls")?;
    let explained = crate::explain::explain(rules, &message, at, now, &caller, stub.as_ref());
    if args.json {
        let value = explained.to_json(&sources.rules);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rules_path = sources.rules.display().to_string();
    match &explained.found {
        None => println!("no rule matched"),
        Some(found) => {
            println!("rule: {} ({}:{})", found.name, rules_path, found.line);
            if found.criteria.is_empty() {
                println!("  (no criteria: matches every message)");
            }
            for (criterion, held) in &found.criteria {
                println!("  {} {criterion}", if *held { "✓" } else { "✗" });
            }
            if !found.captures.is_empty() {
                println!("captures:");
                for (k, v) in &found.captures {
                    println!("  {k} = {v:?}");
                }
            }
        }
    }
    if let Some(call) = &explained.call {
        let request = &call.request;
        if let Some(error) = request.get("error").and_then(|e| e.as_str()) {
            bail!("{error}");
        }
        let text = |key: &str| request.get(key).and_then(|v| v.as_str()).unwrap_or("");
        println!("call: {} {}", text("method"), text("url"));
        println!("  timeout: {} ms", request["timeout_ms"]);
        if let Some(body) = request.get("body") {
            println!("  body: {body}");
        }
        if let Some(holding) = &call.holding {
            println!(
                "late: a push the call has not answered within {} ms gets:",
                request["late_after_ms"]
            );
            println!("  {}", holding.body());
            println!("  and the reply below goes out through the customer-service API");
        }
        if !call.stubbed {
            println!(
                "no call made: the reply below is the rule's answer when the call fails; pass --call-response FILE (the service's JSON answer) to see the other"
            );
        }
    }
    let outcome = &explained.outcome;
    match outcome {
        Outcome::Replied {
            reply, xml, sends, ..
        } => {
            println!("reply ({}):", reply.msg_type());
            println!("{xml}");
            if !sends.is_empty() {
                println!("then sent through the customer-service API, in order:");
            }
            for (i, send) in sends.iter().enumerate() {
                match send
                    .as_ref()
                    .map_err(ToString::to_string)
                    .and_then(|reply| {
                        crate::wechat_api::CustomMessage::new("o_explain_user", reply.clone())
                            .map_err(|e| e.to_string())
                            .and_then(|m| serde_json::to_string(&m).map_err(|e| e.to_string()))
                    }) {
                    Ok(json) => println!("  {}. {json}", i + 1),
                    Err(error) => println!("  {}. not sent: {error}", i + 1),
                }
            }
        }
        Outcome::Ignored { rule: Some(rule) } => {
            println!("ignored by rule `{rule}`: answers `success`");
        }
        Outcome::Ignored { rule: None } => println!("ignored (no rule): answers `success`"),
        Outcome::Failed { error, .. } => {
            println!("render error: {error}");
            println!("answers `success`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A plain message, or a safe-mode body (`<Encrypt>` only), decrypted with the key and
/// AppID of `WXRULES_AES_KEY` and `WXRULES_APPID`. No signature is checked: there is no query.
fn parse_for_explain(
    xml: &str,
    account: Option<&crate::accounts::AccountSpec>,
) -> anyhow::Result<Message> {
    // The secrets are read only for an encrypted message, and only when a key is set.
    let encrypted = crate::wire::parse_encrypted(xml.as_bytes()).is_ok();
    let keyed = match account {
        Some(spec) => spec.secrets.aes_key.is_some(),
        None => std::env::var_os("WXRULES_AES_KEY").is_some(),
    };
    let secrets = if encrypted && keyed {
        Some(secrets_of(account).context("decrypting an encrypted message")?)
    } else {
        None
    };
    let cipher = secrets.as_ref().and_then(Secrets::cipher);
    crate::explain::read_push(xml.as_bytes(), cipher).map_err(|e| match e {
        crate::explain::PushError::NoKey => anyhow::anyhow!(
            "an encrypted message needs an AES key and AppID (WXRULES_AES_KEY and WXRULES_APPID, or the account's)"
        ),
        e => anyhow::Error::new(e),
    })
}

/// The secrets of `--account`'s account, or of the environment (WXRULES_*).
fn secrets_of(account: Option<&crate::accounts::AccountSpec>) -> anyhow::Result<Secrets> {
    match account {
        Some(spec) => spec
            .secrets
            .resolve()
            .map(|r| r.secrets)
            .map_err(|e| anyhow::anyhow!("account `{}`: {e}", spec.name)),
        None => Ok(Secrets::from_env()?),
    }
}

fn read_message(path: &Path) -> anyhow::Result<String> {
    rules::read_text(path, rules::MAX_TEMPLATE_FILE)
        .with_context(|| format!("cannot read {}", path.display()))
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
