//! `wxrules check` (the rules of one account or of every account of a config file) and
//! `wxrules test` (ops-written cases run against the rules).

use std::path::Path;
use std::process::ExitCode;

use super::{load_or_report, report, SourceArgs, EXIT_CONFIG, NOTES_SHOWN};
use crate::rules::{self, Sources};

/// `check`: the rules of --rules/--templates, or of every account of --config (each
/// reported, all errors of all accounts), or of the one named by --account.
pub(super) fn check_accounts(args: &SourceArgs, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config() else {
        return check(
            &args.sources(),
            deny_warnings,
            args.customer_service.unwrap_or(true),
        );
    };
    let config = match config {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    if args.account.is_some() {
        return match args.one() {
            Ok((sources, spec)) => check(
                &sources,
                deny_warnings,
                spec.is_none_or(|spec| spec.customer_service),
            ),
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
        let code = check(&spec.sources, deny_warnings, spec.customer_service)?;
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

/// Checks one account's rules; `customer_service` says whether it has WeChat's
/// customer-service API (`send:` is an error without it).
pub(super) fn check(
    sources: &Sources,
    deny_warnings: bool,
    customer_service: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = match load_or_report(sources) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut errors = rules::compile_regexes(&loaded.rules, &sources.rules);
    errors.extend(rules::account_fit(
        &loaded.rules,
        &sources.rules,
        customer_service,
    ));
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
    for rule in rules.off() {
        eprintln!(
            "note: {}:{}: rule `{}` is off (`enabled: false`): it never matches",
            sources.rules.display(),
            rule.line(),
            rule.name()
        );
    }
    let off = match rules.off().len() {
        0 => String::new(),
        n => format!(" (and {n} off)"),
    };
    println!(
        "ok: {} rules{off}, {} templates, digest {} ({})",
        rules.rules().len(),
        rules.template_count(),
        rules.digest(),
        sources.rules.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn test(sources: &Sources, cases_path: &Path) -> anyhow::Result<ExitCode> {
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
