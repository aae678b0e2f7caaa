//! `wxrules check` (the rules of one account or of every account of a config file) and
//! `wxrules test` (ops-written cases run against the rules).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{load_or_report, report, SourceArgs, EXIT_CONFIG, NOTES_SHOWN};
use crate::accounts::AccountSpec;
use crate::rules::{self, Sources};

/// `check`: the rules of --rules/--templates, or of every account of --config (each
/// reported, all errors of all accounts), or of the one named by --account.
pub(super) fn check_accounts(args: &SourceArgs, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config() else {
        let sources = args.sources();
        let menu = menu_of(&sources, None);
        return check(
            &sources,
            menu.as_deref(),
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
                menu_of(&sources, spec.as_ref()).as_deref(),
                deny_warnings,
                spec.as_ref().is_none_or(|spec| spec.customer_service),
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
        let code = check(
            &spec.sources,
            spec.menu.as_deref(),
            deny_warnings,
            spec.customer_service,
        )?;
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

/// The menu file of an account: its `menu:` in the config file, or for one account
/// without one `menu.yaml` beside the rules when it exists.
pub(super) fn menu_of(sources: &Sources, spec: Option<&AccountSpec>) -> Option<PathBuf> {
    match spec {
        Some(spec) => spec.menu.clone(),
        None => {
            let beside = sources.rules.with_file_name("menu.yaml");
            beside.is_file().then_some(beside)
        }
    }
}

/// `check` of one account: its rules and templates, and its menu (`menu`) when it has
/// one, held against the rules; `customer_service` says whether it has WeChat's
/// customer-service API (`send:` is an error without it).
pub(super) fn check(
    sources: &Sources,
    menu: Option<&Path>,
    deny_warnings: bool,
    customer_service: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = match load_or_report(sources) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let menu = match menu.map(crate::menu::load) {
        None => None,
        Some(Ok(menu)) => Some(menu),
        Some(Err(errors)) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{}: {} error(s)",
                menu.unwrap_or(Path::new("menu.yaml")).display(),
                errors.0.len()
            );
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
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
    let crossed = menu
        .as_ref()
        .map(|menu| crate::menu::cross_check(menu, rules))
        .unwrap_or_default();
    for w in &crossed.warnings {
        eprintln!("warning: {w}");
    }
    let count = warnings.len() + crossed.warnings.len();
    if deny_warnings && count > 0 {
        eprintln!(
            "{}: {count} warning(s), denied by --deny-warnings",
            sources.rules.display(),
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    for note in &crossed.notes {
        eprintln!("note: {}: {note}", sources.rules.display());
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
    if let Some(menu) = &menu {
        println!(
            "ok: menu, {} buttons with an action, {} conditional menus",
            menu.menu.leaves().len(),
            menu.menu.conditional.len()
        );
    }
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
