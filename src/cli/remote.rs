//! `wxrules reload`: a running server's reload through its admin port, its report printed.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::accounts::ReloadOutcome;

/// Where `wxrules reload` finds the admin port by default: the address the docs use.
pub(super) const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9180";

/// `wxrules reload`: `POST /-/reload` on the admin port; prints the outcome.
pub(super) fn reload_remote(admin: &str) -> anyhow::Result<ExitCode> {
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
    let shown = report["outcome"].as_str().unwrap_or("unknown");
    match outcome_of(&report) {
        Some(ReloadOutcome::Applied) => {
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
            println!("{shown}: the previous rules keep serving");
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

/// The `outcome` of a report, if it is one this version knows.
fn outcome_of(report: &serde_json::Value) -> Option<ReloadOutcome> {
    serde_json::from_value(report["outcome"].clone()).ok()
}

/// The strings of a JSON list (none if it is not one).
pub(super) fn strings(v: &serde_json::Value) -> Vec<String> {
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
pub(super) fn print_fleet_report(
    report: &serde_json::Value,
    status: reqwest::StatusCode,
) -> ExitCode {
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
            if outcome_of(account) == Some(ReloadOutcome::Rejected) {
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
    if matches!(
        outcome_of(report),
        Some(ReloadOutcome::Applied | ReloadOutcome::Unchanged)
    ) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
