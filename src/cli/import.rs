//! `wxrules import`: the MP console's auto-replies as a rules file and a cases file, and
//! with `--download-media` the export's media fetched into files the rules name.

use super::EXIT_CONFIG;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::import::{Downloaded, Downloads, ExportMedia};
use crate::wechat_api::ApiError;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["export", "from_wechat"])))]
pub(super) struct ImportArgs {
    /// The export: the JSON WeChat answers to get_current_autoreply_info.
    pub(super) export: Option<PathBuf>,
    /// Fetch it from WeChat's API instead, with WXRULES_APPID and WXRULES_APPSECRET.
    #[arg(long)]
    pub(super) from_wechat: bool,
    /// WeChat's API (or a whitelisted proxy), for `--from-wechat` and `--download-media`.
    #[arg(long, env = "WXRULES_WECHAT_API", default_value = crate::wechat_api::DEFAULT_BASE, value_name = "URL")]
    pub(super) wechat_api: String,
    /// Write the rules here (a new file); default: print them.
    #[arg(long, value_name = "FILE")]
    pub(super) rules_out: Option<PathBuf>,
    /// Write the cases here (a new file).
    #[arg(long, value_name = "FILE")]
    pub(super) tests_out: Option<PathBuf>,
    /// Fetch the export's images, voices and videos through WeChat's API (with
    /// WXRULES_APPID and WXRULES_APPSECRET) into DIR/media/, each named by its content, and
    /// name those files in the rules instead of the temporary media ids (the server uploads
    /// them as permanent material). DIR is the templates directory (default: templates).
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "templates"
    )]
    pub(super) download_media: Option<PathBuf>,
}

/// Where `--download-media` puts the files, under the templates directory.
const MEDIA_DIR: &str = "media";

/// `wxrules import`: the console's auto-replies as rules and cases, written only when the
/// whole export imports and the files are new.
pub(super) fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    // The API client, when the export or its media come from WeChat.
    let wechat = if args.from_wechat || args.download_media.is_some() {
        let credentials = crate::accounts::SecretSources::environment()
            .credentials()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_context(|| {
                let flag = if args.from_wechat {
                    "--from-wechat"
                } else {
                    "--download-media"
                };
                format!("{flag} needs WXRULES_APPID and WXRULES_APPSECRET")
            })?;
        let api = crate::wechat_api::Api::new(
            &args.wechat_api,
            Some(credentials),
            crate::telemetry::metrics::Metrics::new(),
        )
        .context("the WeChat API client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the HTTP client")?;
        Some((api, runtime))
    } else {
        None
    };
    let json = match (&args.export, &wechat) {
        (Some(path), _) => crate::rules::read_text(path, crate::rules::MAX_RULES_FILE)
            .with_context(|| format!("cannot read {}", path.display()))?,
        (None, Some((api, runtime))) => runtime
            .block_on(api.current_autoreply_info())
            .context("fetching the auto-replies from WeChat")?,
        (None, None) => anyhow::bail!("no export: name its file, or --from-wechat"),
    };
    let mut imported = match crate::import::import(&json) {
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
    if let (Some(dir), Some((api, runtime))) = (&args.download_media, &wechat) {
        if !imported.media.is_empty() {
            let downloads = runtime.block_on(download_all(api, &imported.media, dir));
            imported = match crate::import::import_with(&json, &downloads) {
                Ok(imported) => imported,
                Err(e) => {
                    eprintln!("error: {e}");
                    eprintln!("nothing written");
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            };
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

/// Fetches each of `media` through `api` into `dir` (the templates directory), one at a
/// time, and says on stderr what became of each: a failure leaves that media's reply as
/// it was (its temporary media id, with `expires:`), never the import.
async fn download_all(
    api: &crate::wechat_api::Api,
    media: &[ExportMedia],
    dir: &Path,
) -> Downloads {
    let mut downloads = Downloads::default();
    let mut fetched = 0;
    for item in media {
        let what = if item.is_link() {
            format!("{} link {}", item.kind, item.content)
        } else {
            format!("{} media id `{}`", item.kind, item.content)
        };
        let result = download(api, item, dir).await;
        match &result {
            Ok(file) => {
                fetched += 1;
                eprintln!(
                    "downloaded {what} to {}",
                    dir.join(&file.file).display()
                );
            }
            Err(why) => eprintln!(
                "warning: {what} not downloaded ({why}): its reply keeps it, temporary (`check` warns)"
            ),
        }
        downloads.insert(item.clone(), result);
    }
    eprintln!(
        "downloaded {fetched} of {} media into {}",
        media.len(),
        dir.join(MEDIA_DIR).display()
    );
    downloads
}

/// Fetches `media` (temporary media, else permanent material, or a video's link) within
/// WeChat's limits for its kind, and keeps it in `dir` as `media/SHA256PREFIX.EXT`.
async fn download(
    api: &crate::wechat_api::Api,
    media: &ExportMedia,
    dir: &Path,
) -> Result<Downloaded, String> {
    let kind = media.kind;
    let (formats, cap) = crate::rules::media_limits(kind);
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    let fetched = if media.is_link() {
        api.download(&media.content, limit).await
    } else {
        match api.media_get(&media.content, limit).await {
            // No such temporary media: it may be permanent material.
            Err(ApiError::Wechat { errcode: 40007, .. }) => {
                api.material_get(&media.content, limit).await
            }
            other => other,
        }
    };
    let file = fetched.map_err(|e| match e {
        ApiError::TooLarge(_) => format!(
            "over WeChat's {} MB for {kind} material",
            cap / (1024 * 1024)
        ),
        e => e.to_string(),
    })?;
    let extension = crate::import::media_extension(
        kind,
        &file.content_type,
        file.filename.as_deref(),
        &file.bytes,
    )
    .ok_or_else(|| {
        format!(
            "WeChat gave it as `{}`, and {kind} material is {}",
            crate::rules::excerpt::cut(&file.content_type, 40),
            formats.join(", ")
        )
    })?;
    let hash = crate::rules::sha256_hex(&file.bytes);
    let name = format!("{MEDIA_DIR}/{}.{extension}", &hash[..16]);
    keep(&dir.join(&name), &file.bytes, cap)?;
    Ok(Downloaded {
        file: name,
        video: file.video,
    })
}

/// Writes `bytes` to `path`, a new file; one already there with the same bytes (the same
/// media, imported before) is kept.
fn keep(path: &Path, bytes: &[u8], cap: u64) -> Result<(), String> {
    use std::io::Write as _;
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => file.write_all(bytes).map_err(|e| {
            let _ = std::fs::remove_file(path);
            failed(e)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            match crate::rules::read_bytes(path, cap) {
                Ok(existing) if existing == bytes => Ok(()),
                _ => Err(format!("{} exists with other content", path.display())),
            }
        }
        Err(e) => Err(failed(e)),
    }
}
