//! The command line: `serve` (the default), `check`, `test`, `explain`, `send`, `import`,
//! `menu`, `reload` and `schema`, a file per command. Errors get their context here and are printed
//! once, with their causes; exit codes follow sysexits (78 = the rules are invalid).

mod check;
mod explain;
mod import;
mod menu;
mod remote;
mod run;
mod send;
mod serve;
mod settled;

use check::{check_accounts, test};
use explain::{explain, ExplainArgs};
use import::{import, ImportArgs};
use menu::{menu, MenuArgs};
use remote::{reload_remote, DEFAULT_ADMIN_URL};
use send::{send, SendArgs};
use serve::{serve, ServeArgs};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::accounts::Secrets;
use crate::rules::{self, Loaded, RuleError, Sources};

/// How many rules `check` names whose templates it could not hold to WeChat's fields.
const NOTES_SHOWN: usize = 10;

/// Exit code for invalid rules (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

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
    /// Print the JSON Schema of the rules file (shipped as rules/rules.schema.json), or
    /// with --menu of the menu file (rules/menu.schema.json).
    Schema {
        /// The menu file's schema.
        #[arg(long)]
        menu: bool,
    },
    /// Send a signed push to a running server, as WeChat would, and print its answer
    /// (decrypted in safe mode); exit 1 on a status other than 200. Signs with
    /// WXRULES_TOKEN; `--safe` encrypts with WXRULES_AES_KEY and WXRULES_APPID.
    Send(SendArgs),
    /// Turn the MP console's auto-replies (the JSON of get_current_autoreply_info) into a
    /// commented rules file and a cases file. Writes nothing when the export is not right.
    Import(ImportArgs),
    /// The custom menu: `diff` the menu file with the live menu, `apply` it, or `pull`
    /// the live menu into the file. Needs the account's AppID and AppSecret.
    Menu(MenuArgs),
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
    /// Whether the account (without --config) has WeChat's customer-service API; `false`
    /// for an unverified subscription account: `send:` is then refused, and `late` answers
    /// go out through WeChat's retries and the user's next message. With --config, each
    /// account's `customer_service:`.
    #[arg(
        long,
        env = "WXRULES_CUSTOMER_SERVICE",
        value_name = "BOOL",
        conflicts_with = "config"
    )]
    customer_service: Option<bool>,
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
        Some(Command::Menu(menu_args)) => menu(&menu_args),
        Some(Command::Test { sources, cases }) => match sources.one() {
            Ok((sources, _)) => test(&sources, &cases),
            Err(code) => Ok(code),
        },
        Some(Command::Schema { menu }) => {
            if menu {
                print!("{}", crate::menu::json_schema());
            } else {
                print!("{}", rules::json_schema());
            }
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

/// Prints each line on its own line to stderr, after `label`.
fn report_lines(lines: &[String], label: &str) {
    for line in lines {
        eprintln!("{label}: {line}");
    }
}

/// Prints each error (and warning) on its own line to stderr.
fn report(errors: &[RuleError], label: &str) {
    for e in errors {
        eprintln!("{label}: {e}");
    }
}

/// The rules as `check`, `test` and `explain` see them, or every error printed and exit
/// 78. Only the server uploads media files: here a file's reply carries a stand-in media
/// id, `file:NAME`, so that it renders as it will once uploaded.
fn load_or_report(sources: &Sources) -> Result<Loaded, ExitCode> {
    let loaded = load_reporting(sources)?;
    for file in loaded.rules.media_files() {
        let stand_in = format!("file:{}", file.name);
        loaded.rules.media_ids().put(&file, &stand_in);
    }
    Ok(loaded)
}

fn load_reporting(sources: &Sources) -> Result<Loaded, ExitCode> {
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

/// The secrets of `--account`'s account, or of the environment (WXRULES_*).
fn secrets_of(account: Option<&crate::accounts::AccountSpec>) -> anyhow::Result<Secrets> {
    match account {
        Some(spec) => spec
            .secrets
            .resolve()
            .map(|r| r.secrets)
            .map_err(|e| anyhow::anyhow!("account `{}`: {e}", spec.name)),
        None => crate::accounts::SecretSources::environment()
            .resolve()
            .map(|r| r.secrets)
            .map_err(|e| anyhow::anyhow!("{e}")),
    }
}

fn read_message(path: &Path) -> anyhow::Result<String> {
    rules::read_text(path, rules::MAX_TEMPLATE_FILE)
        .with_context(|| format!("cannot read {}", path.display()))
}
