//! `wxrules import`: the MP console's auto-replies as a rules file and a cases file.

use super::EXIT_CONFIG;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["export", "from_wechat"])))]
pub(super) struct ImportArgs {
    /// The export: the JSON WeChat answers to get_current_autoreply_info.
    pub(super) export: Option<PathBuf>,
    /// Fetch it from WeChat's API instead, with WXRULES_APPID and WXRULES_APPSECRET.
    #[arg(long)]
    pub(super) from_wechat: bool,
    /// WeChat's API (or a whitelisted proxy), for `--from-wechat`.
    #[arg(long, env = "WXRULES_WECHAT_API", default_value = crate::wechat_api::DEFAULT_BASE, value_name = "URL")]
    pub(super) wechat_api: String,
    /// Write the rules here (a new file); default: print them.
    #[arg(long, value_name = "FILE")]
    pub(super) rules_out: Option<PathBuf>,
    /// Write the cases here (a new file).
    #[arg(long, value_name = "FILE")]
    pub(super) tests_out: Option<PathBuf>,
}

/// `wxrules import`: the console's auto-replies as rules and cases, written only when the
/// whole export imports and the files are new.
pub(super) fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let json = match &args.export {
        Some(path) => crate::rules::read_text(path, crate::rules::MAX_RULES_FILE)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let credentials = crate::accounts::SecretSources::environment()
                .credentials()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .context("--from-wechat needs WXRULES_APPID and WXRULES_APPSECRET")?;
            let api = crate::wechat_api::Api::new(
                &args.wechat_api,
                Some(credentials),
                crate::telemetry::metrics::Metrics::new(),
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
