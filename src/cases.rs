//! `wxrules test`: ops-written cases for the rules. Parses `CASES.yaml`, builds each case's
//! message, runs it through `answer` exactly as the server would, and reports what differed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::answer::{after_call, Decision, Outcome};
use crate::rules::RuleSet;
use crate::wire::{write_fields, Message};

/// Why the cases file cannot be used (as opposed to a case that fails).
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    cases: Vec<Case>,
}

/// One case: a message, and what the rules must do with it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// A text message with this `Content`.
    #[serde(default)]
    text: Option<String>,
    /// An event with this `Event`.
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    event_key: Option<String>,
    /// A message file, relative to the cases file.
    #[serde(default)]
    xml: Option<PathBuf>,
    /// Any other fields (`MsgType`, `Status`, `ScanCodeInfo.ScanType`, …), added to or
    /// replacing those above; dotted names become nested elements.
    #[serde(default)]
    fields: BTreeMap<String, String>,
    /// The rule that must decide (`null`: no rule may match).
    #[serde(default, deserialize_with = "some")]
    rule: Option<Option<String>>,
    /// The reply XML must contain this text.
    #[serde(default)]
    reply_contains: Option<String>,
    /// The reply's MsgType (`text`, `news`, …).
    #[serde(default)]
    reply_type: Option<String>,
    /// `true`: the answer must be `success`; `false`: it must be a reply.
    #[serde(default)]
    ignore: Option<bool>,
    /// For a rule with a `call`: the service's JSON answer to use (no call is made).
    #[serde(default)]
    call_response: Option<serde_json::Value>,
    /// For a rule with a `call`: answer as if the call had failed for this reason.
    #[serde(default)]
    call_error: Option<String>,
    /// The moment the rules' `active` windows are evaluated at (RFC 3339); default now.
    #[serde(default)]
    at: Option<String>,
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The result of running every case.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    /// `(case name, what differed)`.
    pub failed: Vec<(String, String)>,
}

/// Reads and parses a cases file.
pub fn read(path: &Path) -> Result<Vec<Case>, CasesError> {
    let text = crate::rules::read_text(path, crate::rules::MAX_RULES_FILE).map_err(|source| {
        CasesError::Read {
            path: path.to_owned(),
            source,
        }
    })?;
    parse(&text, path)
}

/// Parses the text of a cases file (`path` for its errors).
pub fn parse(text: &str, path: &Path) -> Result<Vec<Case>, CasesError> {
    if let Some((line, column)) = crate::rules::too_deep(text) {
        return Err(CasesError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: format!(
                "nested more than {} levels deep",
                crate::rules::MAX_YAML_DEPTH
            ),
        });
    }
    serde_yaml::from_str::<CasesFile>(text)
        .map(|f| f.cases)
        .map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            // A file that is not cases (a secret's, `/etc/passwd`) is never quoted whole.
            let message = match crate::rules::excerpt::root_kind(message, "CasesFile") {
                Some(kind) => format!("not a cases file: a YAML mapping with `cases:` was expected, and this is {kind} (its text is not shown)"),
                None => crate::rules::excerpt::serde_message(message),
            };
            CasesError::Parse {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        })
}

/// Runs `cases` (read from a file in `base`) against `rules`. Replies are dated with the
/// message's own CreateTime, so that reports are stable.
pub fn run(rules: &RuleSet, cases: &[Case], base: &Path) -> Report {
    let mut report = Report::default();
    for case in cases {
        match check(rules, case, base) {
            Ok(()) => report.passed += 1,
            Err(why) => report.failed.push((case.name.clone(), why)),
        }
    }
    report
}

/// What the rules do with a case's message: the rule that decides, and the answer.
pub struct Observed {
    /// The rule that decided; `None`: none matched.
    pub rule: Option<String>,
    /// The reply's MsgType (`text`, `news`, …); `None`: `success`.
    pub msg_type: Option<String>,
    /// A text reply's content.
    pub text: Option<String>,
}

/// What `rules` do with `case`'s message (its expectations are not looked at).
pub fn observe(rules: &RuleSet, case: &Case, base: &Path) -> Result<Observed, String> {
    let outcome = outcome_of(rules, case, base)?;
    let (msg_type, text) = match &outcome {
        Outcome::Replied { reply, .. } => (
            Some(reply.msg_type().to_owned()),
            match reply {
                crate::wire::Reply::Text { content } => Some(content.clone()),
                _ => None,
            },
        ),
        _ => (None, None),
    };
    Ok(Observed {
        rule: outcome.rule().map(str::to_owned),
        msg_type,
        text,
    })
}

fn check(rules: &RuleSet, case: &Case, base: &Path) -> Result<(), String> {
    if case.rule.is_none()
        && case.reply_contains.is_none()
        && case.reply_type.is_none()
        && case.ignore.is_none()
    {
        return Err(
            "no expectation: give `rule`, `reply_contains`, `reply_type` or `ignore`".into(),
        );
    }
    let outcome = outcome_of(rules, case, base)?;
    let decided = outcome.rule().map(str::to_owned);
    let shown = |r: &Option<String>| {
        r.as_deref()
            .map_or("no rule".to_owned(), |r| format!("rule `{r}`"))
    };
    let mut problems = Vec::new();
    if let Some(expected) = &case.rule {
        if *expected != decided {
            problems.push(format!(
                "expected {}, got {}",
                shown(expected),
                shown(&decided)
            ));
        }
    }
    if let Outcome::Failed { error, .. } = &outcome {
        problems.push(format!("the reply failed to render: {error}"));
    }
    let replied = matches!(outcome, Outcome::Replied { .. });
    match case.ignore {
        Some(true) if replied => problems.push(format!(
            "expected `success`, got a reply: {}",
            outcome.body()
        )),
        Some(false) if !replied => problems.push("expected a reply, got `success`".to_owned()),
        _ => {}
    }
    if let Some(part) = &case.reply_contains {
        if !replied {
            problems.push(format!(
                "expected a reply containing {part:?}, got `success`"
            ));
        } else if !outcome.body().contains(part.as_str()) {
            problems.push(format!(
                "expected the reply to contain {part:?}, got: {}",
                outcome.body()
            ));
        }
    }
    if let (Some(kind), Outcome::Replied { reply, .. }) = (&case.reply_type, &outcome) {
        if reply.msg_type() != kind {
            problems.push(format!(
                "expected a {kind} reply, got a {} reply",
                reply.msg_type()
            ));
        }
    } else if let Some(kind) = &case.reply_type {
        problems.push(format!("expected a {kind} reply, got `success`"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The outcome of `case`'s message on `rules`.
fn outcome_of(rules: &RuleSet, case: &Case, base: &Path) -> Result<Outcome, String> {
    let xml = build_message(case, base)?;
    let message =
        Message::parse(xml.as_bytes()).map_err(|e| format!("the message is invalid: {e}"))?;
    if case.call_response.is_some() && case.call_error.is_some() {
        return Err("give `call_response` or `call_error`, not both".into());
    }
    let now = message.create_time();
    let at = match &case.at {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("`at` is an RFC 3339 time (`2026-11-30T20:00:00+08:00`): {e}"))
            .and_then(|t| {
                u64::try_from(t.as_second()).map_err(|_| "`at` is before 1970".to_owned())
            })?,
        None => crate::clock::Clock::now(&crate::clock::SystemClock),
    };
    let stub = crate::act::call::stub(case.call_response.as_ref(), case.call_error.as_deref());
    let found = rules.find(&crate::rules::Subject::at(&message, at));
    let outcome = match crate::answer::decide_found(rules, &message, found, now) {
        Decision::Done(outcome) => outcome,
        Decision::Call(found) => {
            let Some(result) = &stub else {
                return Err(format!(
                    "rule `{}` calls a service: give `call_response:` (its JSON answer) or `call_error:` (a reason), as no call is made in tests",
                    found.rule.name()
                ));
            };
            after_call(rules, &message, &found, result, now)
        }
    };
    Ok(outcome)
}

/// The message XML a case describes.
fn build_message(case: &Case, base: &Path) -> Result<String, String> {
    let given = [
        case.text.is_some(),
        case.event.is_some(),
        case.xml.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err("give one of `text`, `event` and `xml`".into());
    }
    if let Some(file) = &case.xml {
        if !case.fields.is_empty() {
            return Err("`fields` cannot be combined with `xml`".into());
        }
        let path = base.join(file);
        return crate::rules::read_text(&path, crate::rules::MAX_TEMPLATE_FILE)
            .map_err(|e| format!("cannot read {}: {e}", path.display()));
    }
    let mut fields: Vec<(String, String)> = vec![
        ("ToUserName".into(), "gh_wxrules_test".into()),
        ("FromUserName".into(), "o_wxrules_test_user".into()),
        ("CreateTime".into(), "1700000000".into()),
    ];
    if let Some(text) = &case.text {
        fields.push(("MsgType".into(), "text".into()));
        fields.push(("Content".into(), text.clone()));
        fields.push(("MsgId".into(), "1".into()));
    } else if let Some(event) = &case.event {
        fields.push(("MsgType".into(), "event".into()));
        fields.push(("Event".into(), event.clone()));
    }
    if let Some(key) = &case.event_key {
        fields.push(("EventKey".into(), key.clone()));
    }
    for (name, value) in &case.fields {
        fields.retain(|(n, _)| n != name);
        fields.push((name.clone(), value.clone()));
    }
    // What WeChat always sends with this kind of push (a SCAN's Ticket, a LOCATION's
    // coordinates), unless the case gives it: a case fails only where production would.
    let given = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if let Some(kind) =
        given("MsgType").and_then(|t| crate::wire::catalog::kind(&t, given("Event").as_deref()))
    {
        let event_key = given("EventKey");
        for (name, value) in crate::wire::catalog::sample_fields_for(kind, event_key.as_deref()) {
            if !fields.iter().any(|(n, _)| *n == name) {
                fields.push((name, value));
            }
        }
    }
    if !fields.iter().any(|(n, _)| n == "MsgType") {
        return Err("no message: give `text`, `event`, `xml`, or `fields` with a `MsgType`".into());
    }
    Ok(write_fields(&fields))
}
