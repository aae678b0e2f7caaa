//! `wxrules menu diff|apply|pull`: the account's `menu.yaml` against the live menu, through
//! WeChat's API with the account's AppID and AppSecret. `apply` calls nothing when they
//! are already equal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{SourceArgs, EXIT_CONFIG};
use crate::menu::{self, Menu};
use crate::wechat_api::Api;

#[derive(Debug, clap::Args)]
pub(super) struct MenuArgs {
    #[command(subcommand)]
    action: MenuAction,
}

#[derive(Debug, clap::Subcommand)]
enum MenuAction {
    /// Compare the menu file with the live menu; exit 0 when equal, 1 when they differ
    /// (the diff is printed, live first), 78 for a bad file.
    Diff(MenuTarget),
    /// Make the live menu the file's (`menu/create`, and `menu/addconditional` for each
    /// conditional menu); no call when they are already equal. Exit 0 when applied or
    /// equal, 78 for a bad file.
    Apply(MenuTarget),
    /// Write the live menu as YAML to the menu file (a new file, unless --force).
    Pull {
        #[command(flatten)]
        target: MenuTarget,
        /// Replace the menu file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
struct MenuTarget {
    #[command(flatten)]
    sources: SourceArgs,
    /// The menu file [default: the account's `menu:`, or `menu.yaml` beside the rules].
    #[arg(long, value_name = "FILE")]
    menu: Option<PathBuf>,
    /// WeChat's API (or a whitelisted proxy).
    #[arg(long, env = "WXRULES_WECHAT_API", default_value = crate::wechat_api::DEFAULT_BASE, value_name = "URL")]
    wechat_api: String,
}

impl MenuTarget {
    /// The menu file and an API client with the account's credentials.
    fn open(&self) -> anyhow::Result<Result<(PathBuf, Api), ExitCode>> {
        let (sources, spec) = match self.sources.one() {
            Ok(one) => one,
            Err(code) => return Ok(Err(code)),
        };
        let path = match (&self.menu, &spec) {
            (Some(path), _) => path.clone(),
            (None, Some(spec)) => spec.menu.clone().with_context(|| {
                format!(
                    "account `{}` has no `menu:` in the config file (or pass --menu FILE)",
                    spec.name
                )
            })?,
            (None, None) => sources.rules.with_file_name("menu.yaml"),
        };
        let secrets = match &spec {
            Some(spec) => spec.secrets.clone(),
            None => crate::accounts::SecretSources::environment(),
        };
        let credentials = secrets
            .credentials()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .context("the menu is set through WeChat's API: it needs the account's AppID and AppSecret (WXRULES_APPID, WXRULES_APPSECRET)")?;
        let api = Api::new(
            &self.wechat_api,
            Some(credentials),
            crate::telemetry::metrics::Metrics::new(),
        )
        .context("the WeChat API client")?;
        Ok(Ok((path, api)))
    }
}

/// Runs `wxrules menu …`.
pub(super) fn menu(args: &MenuArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP client")?;
    match &args.action {
        MenuAction::Diff(target) => runtime.block_on(diff(target)),
        MenuAction::Apply(target) => runtime.block_on(apply(target)),
        MenuAction::Pull { target, force } => runtime.block_on(pull(target, *force)),
    }
}

/// The file's menu, or its errors printed (exit 78).
fn load(path: &std::path::Path) -> Result<Menu, ExitCode> {
    menu::load(path).map(|m| m.menu).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        eprintln!("{}: {} error(s)", path.display(), errors.0.len());
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The live menu (empty when the account has none).
async fn live(api: &Api) -> anyhow::Result<Menu> {
    let Some(answer) = api.menu_get().await.context("menu/get")? else {
        return Ok(Menu::default());
    };
    menu::from_wechat(&answer).map_err(|e| anyhow::anyhow!("the live menu: {e}"))
}

/// The menu file, read and checked, the API, and the live menu; the exit code when the
/// file is bad (then nothing is called).
async fn both(target: &MenuTarget) -> anyhow::Result<Result<(PathBuf, Api, Menu, Menu), ExitCode>> {
    let (path, api) = match target.open()? {
        Ok(opened) => opened,
        Err(code) => return Ok(Err(code)),
    };
    let file = match load(&path) {
        Ok(file) => file,
        Err(code) => return Ok(Err(code)),
    };
    let live = live(&api).await?;
    Ok(Ok((path, api, file, live)))
}

async fn diff(target: &MenuTarget) -> anyhow::Result<ExitCode> {
    let (path, _, file, live) = match both(target).await? {
        Ok(both) => both,
        Err(code) => return Ok(code),
    };
    if live == file {
        println!("equal: the live menu is {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        crate::edit::diff(
            &live.to_yaml(),
            &file.to_yaml(),
            &path.display().to_string()
        )
    );
    Ok(ExitCode::FAILURE)
}

async fn apply(target: &MenuTarget) -> anyhow::Result<ExitCode> {
    let (path, api, file, live) = match both(target).await? {
        Ok(both) => both,
        Err(code) => return Ok(code),
    };
    if live == file {
        println!("unchanged: the live menu is already {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    // `menu/create` replaces the default menu only; conditional menus that differ are
    // replaced as a whole: `menu/delete` takes them all, then each is added again.
    let conditional_changed = live.conditional != file.conditional;
    if conditional_changed && !live.conditional.is_empty() {
        api.menu_delete().await.context("menu/delete")?;
    }
    if live.button != file.button || conditional_changed {
        api.menu_create(&file.create_body())
            .await
            .context("menu/create")?;
    }
    if conditional_changed {
        for (i, conditional) in file.conditional.iter().enumerate() {
            let body = serde_json::to_value(conditional).context("a conditional menu")?;
            let id = api
                .menu_addconditional(&body)
                .await
                .with_context(|| format!("menu/addconditional (conditional menu {})", i + 1))?;
            println!("conditional menu {} added: menuid {id}", i + 1);
        }
    }
    println!(
        "applied: {} ({} conditional menus)",
        path.display(),
        file.conditional.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn pull(target: &MenuTarget, force: bool) -> anyhow::Result<ExitCode> {
    let (path, api) = match target.open()? {
        Ok(opened) => opened,
        Err(code) => return Ok(code),
    };
    let live = live(&api).await?;
    if live.button.is_empty() {
        eprintln!("error: the account has no menu: nothing written");
        return Ok(ExitCode::FAILURE);
    }
    let yaml = live.to_yaml();
    // What is written must load: a live menu outside the file's limits is said so.
    if let Err(errors) = menu::load_str(&yaml, &path) {
        for e in &errors.0 {
            eprintln!("warning: {e}");
        }
    }
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&path).with_context(|| {
        format!(
            "cannot write {} (it exists? --force replaces it)",
            path.display()
        )
    })?;
    file.write_all(yaml.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "written: {} ({} buttons with an action, {} conditional menus)",
        path.display(),
        live.leaves().len(),
        live.conditional.len()
    );
    Ok(ExitCode::SUCCESS)
}
