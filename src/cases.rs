//! `wxrules test`: ops-written cases for the rules. Parses `CASES.yaml`, builds each case's
//! message, runs it through `answer` exactly as the server would, and reports what differed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::answer::{after_call, Decision, Outcome};
use crate::converse;
use crate::rules::RuleSet;
use crate::store::conversation::{Record, GRACE};
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
    cases: Vec<Step>,
}

/// The cases' names alone: read again, for the position of a case without one.
#[derive(Debug, Deserialize)]
struct NamesFile {
    #[allow(dead_code)]
    cases: Vec<NameOnly>,
}

#[derive(Debug, Deserialize)]
struct NameOnly {
    #[allow(dead_code)]
    name: String,
}

/// One case: a message and what the rules must do with it, or a `conversation` of such
/// steps from one user, in order.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    step: Step,
    /// The steps of a conversation; empty for a case of one message (`step`).
    conversation: Vec<Step>,
}

impl Case {
    /// Whether the case is a conversation of several steps.
    pub fn is_conversation(&self) -> bool {
        !self.conversation.is_empty()
    }

    fn steps(&self) -> &[Step] {
        if self.conversation.is_empty() {
            std::slice::from_ref(&self.step)
        } else {
            &self.conversation
        }
    }
}

/// One message of a case, and what the rules must do with it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The case's name (a step's, shown when it fails).
    #[serde(default)]
    name: Option<String>,
    /// The steps of a conversation case: messages from one user, in order.
    #[serde(default)]
    conversation: Vec<Step>,
    /// A text message with this `Content`.
    #[serde(default)]
    text: Option<String>,
    /// A tap on a reply's choice: a text message carrying `bizmsgmenuid` (with `text`,
    /// the choice's text).
    #[serde(default)]
    choice: Option<String>,
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
    /// When the message comes: an RFC 3339 time, or `+DURATION` after the step before
    /// (`+11m`); default now, or the step before's time. The rules' `active` windows and
    /// states' `ttl` are held to it.
    #[serde(default)]
    at: Option<String>,
    /// The user's conversation state after the message: a state's name, or `none`.
    #[serde(default)]
    state: Option<String>,
    /// Vars the state must hold after the message (others may be there too).
    #[serde(default)]
    vars: BTreeMap<String, String>,
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
    let steps = serde_yaml::from_str::<CasesFile>(text)
        .map(|f| f.cases)
        .map_err(|e| parse_error(&e, path))?;
    let mut cases = Vec::with_capacity(steps.len());
    for (i, mut step) in steps.into_iter().enumerate() {
        let Some(name) = step.name.take() else {
            // Read again for the place serde_yaml names.
            let e = serde_yaml::from_str::<NamesFile>(text).err();
            return Err(match e {
                Some(e) => parse_error(&e, path),
                None => CasesError::Parse {
                    path: path.to_owned(),
                    line: 0,
                    column: 0,
                    message: format!("cases[{i}]: a case needs a `name`"),
                },
            });
        };
        let conversation = std::mem::take(&mut step.conversation);
        let nested = conversation.iter().position(|s| !s.conversation.is_empty());
        let mixed = !conversation.is_empty() && step.says_anything();
        if nested.is_some() || mixed {
            return Err(CasesError::Parse {
                path: path.to_owned(),
                line: 0,
                column: 0,
                message: format!(
                    "case `{name}`: a `conversation` case has its messages and expectations in its steps (none nested)"
                ),
            });
        }
        cases.push(Case {
            name,
            step,
            conversation,
        });
    }
    Ok(cases)
}

/// A cases file's YAML error, at its place.
fn parse_error(e: &serde_yaml::Error, path: &Path) -> CasesError {
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

/// What `rules` do with `case`'s message (its expectations are not looked at). A
/// conversation's expectations are its steps', which are not taken whole.
pub fn observe(rules: &RuleSet, case: &Case, base: &Path) -> Result<Observed, String> {
    if case.is_conversation() {
        return Err(format!(
            "case `{}` is a conversation: change its steps' expectations in the tests file",
            case.name
        ));
    }
    let mut user = User::default();
    let outcome = user.answer(rules, &case.step, base)?;
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
    let mut user = User::default();
    let steps = case.steps();
    for (i, step) in steps.iter().enumerate() {
        let checked = check_step(rules, &mut user, step, base);
        match checked {
            Ok(()) => {}
            Err(why) if !case.is_conversation() => return Err(why),
            Err(why) => {
                let said = step
                    .name
                    .as_deref()
                    .or(step.text.as_deref())
                    .or(step.event.as_deref())
                    .map(|t| format!(" ({})", crate::rules::excerpt::excerpt(t)))
                    .unwrap_or_default();
                return Err(format!("step {} of {}{said}: {why}", i + 1, steps.len()));
            }
        }
    }
    Ok(())
}

fn check_step(rules: &RuleSet, user: &mut User, step: &Step, base: &Path) -> Result<(), String> {
    if step.rule.is_none()
        && step.reply_contains.is_none()
        && step.reply_type.is_none()
        && step.ignore.is_none()
        && step.state.is_none()
        && step.vars.is_empty()
    {
        return Err(
            "no expectation: give `rule`, `reply_contains`, `reply_type`, `ignore` or `state`"
                .into(),
        );
    }
    let outcome = user.answer(rules, step, base)?;
    let decided = outcome.rule().map(str::to_owned);
    let shown = |r: &Option<String>| {
        r.as_deref()
            .map_or("no rule".to_owned(), |r| format!("rule `{r}`"))
    };
    let mut problems = Vec::new();
    if let Some(expected) = &step.rule {
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
    match step.ignore {
        Some(true) if replied => problems.push(format!(
            "expected `success`, got a reply: {}",
            outcome.body()
        )),
        Some(false) if !replied => problems.push("expected a reply, got `success`".to_owned()),
        _ => {}
    }
    if let Some(part) = &step.reply_contains {
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
    if let (Some(kind), Outcome::Replied { reply, .. }) = (&step.reply_type, &outcome) {
        if reply.msg_type() != kind {
            problems.push(format!(
                "expected a {kind} reply, got a {} reply",
                reply.msg_type()
            ));
        }
    } else if let Some(kind) = &step.reply_type {
        problems.push(format!("expected a {kind} reply, got `success`"));
    }
    let now_in = user.state_name();
    if let Some(expected) = step.state.as_deref().map(str::trim) {
        let got = now_in.unwrap_or("none");
        if expected != got {
            problems.push(format!("expected state {expected}, got state {got}"));
        }
    }
    for (key, expected) in &step.vars {
        let got = user.var(key);
        if got != Some(expected.as_str()) {
            let got = got.map_or("none".to_owned(), |v| format!("{v:?}"));
            problems.push(format!("expected var `{key}` = {expected:?}, got {got}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

impl Step {
    /// Whether the step gives a message or an expectation.
    fn says_anything(&self) -> bool {
        self.text.is_some()
            || self.choice.is_some()
            || self.event.is_some()
            || self.event_key.is_some()
            || self.xml.is_some()
            || !self.fields.is_empty()
            || self.rule.is_some()
            || self.reply_contains.is_some()
            || self.reply_type.is_some()
            || self.ignore.is_some()
            || self.call_response.is_some()
            || self.call_error.is_some()
            || self.at.is_some()
            || self.state.is_some()
            || !self.vars.is_empty()
    }
}

/// The one user of a case: their conversation state, and the time of their last message.
#[derive(Debug, Default)]
struct User {
    record: Option<Record>,
    at: Option<u64>,
}

impl User {
    fn state_name(&self) -> Option<&str> {
        let at = self.at.unwrap_or(0);
        self.record
            .as_ref()
            .filter(|r| r.expires > at)
            .map(|r| r.state.as_str())
    }

    fn var(&self, key: &str) -> Option<&str> {
        let at = self.at.unwrap_or(0);
        self.record
            .as_ref()
            .filter(|r| r.expires > at)
            .and_then(|r| r.vars.get(key))
            .map(String::as_str)
    }

    /// When `step`'s message comes (unix seconds).
    fn time_of(&self, step: &Step) -> Result<u64, String> {
        let now = || crate::clock::Clock::now(&crate::clock::SystemClock);
        let Some(text) = step.at.as_deref().map(str::trim) else {
            return Ok(self.at.unwrap_or_else(now));
        };
        if let Some(after) = text.strip_prefix('+') {
            let d = humantime::parse_duration(after.trim()).map_err(|e| {
                format!("`at: +…` is a duration after the step before (`+11m`): {e}")
            })?;
            return Ok(self.at.unwrap_or_else(now).saturating_add(d.as_secs()));
        }
        text.parse::<jiff::Timestamp>()
            .map_err(|e| {
                format!(
                    "`at` is an RFC 3339 time (`2026-11-30T20:00:00+08:00`) or `+DURATION`: {e}"
                )
            })
            .and_then(|t| {
                u64::try_from(t.as_second()).map_err(|_| "`at` is before 1970".to_owned())
            })
    }

    /// The outcome of `step`'s message on `rules`, as the server would answer this user;
    /// their state moved on as the server would move it.
    fn answer(&mut self, rules: &RuleSet, step: &Step, base: &Path) -> Result<Outcome, String> {
        let xml = build_message(step, base)?;
        let message =
            Message::parse(xml.as_bytes()).map_err(|e| format!("the message is invalid: {e}"))?;
        if step.call_response.is_some() && step.call_error.is_some() {
            return Err("give `call_response` or `call_error`, not both".into());
        }
        let now = message.create_time();
        let at = self.time_of(step)?;
        self.at = Some(at);
        let (before, ended) = match self.record.take() {
            Some(record) if record.expires > at => (
                Some(std::sync::Arc::new(converse::seen(&record, &message))),
                None,
            ),
            Some(record) if record.expires.saturating_add(GRACE.as_secs()) > at => {
                (None, Some(record))
            }
            _ => (None, None),
        };
        if let Some(ended) = &ended {
            if let Some(outcome) = converse::expired_reply(rules, &message, ended, now) {
                return Ok(outcome);
            }
            // An event leaves the ended state to be told at the next message.
            if !converse::counts(&message) {
                self.record = Some(ended.clone());
            }
        }
        let subject = crate::rules::Subject::at(&message, at);
        let subject = match &before {
            Some(user) => subject.in_state(Some(&user.name), user.tries),
            None => subject,
        };
        let found = rules.find(&subject).map(|mut m| {
            m.state.clone_from(&before);
            m
        });
        let stub = crate::act::call::stub(step.call_response.as_ref(), step.call_error.as_deref());
        let before_state = before.as_deref();
        let moved =
            converse::after_answer(rules, &message, found.as_ref(), before_state, at, false);
        let (outcome, after) = match crate::answer::decide_found(rules, &message, found, now) {
            Decision::Done(outcome) => {
                let after = match outcome {
                    Outcome::Failed { .. } => {
                        converse::after_answer(rules, &message, None, before_state, at, true)
                    }
                    _ => moved,
                };
                (outcome, after)
            }
            Decision::Call(m) => {
                let Some(result) = &stub else {
                    return Err(format!(
                        "rule `{}` calls a service: give `call_response:` (its JSON answer) or `call_error:` (a reason), as no call is made in tests",
                        m.rule.name()
                    ));
                };
                let outcome = after_call(rules, &message, &m, result, now);
                let after = match m.rule.transition() {
                    Some(_) => converse::after_call(rules, &message, &m, result, at),
                    None => moved,
                };
                (outcome, after)
            }
        };
        match after {
            converse::After::Keep => {
                if self.record.is_none() {
                    self.record = before.as_deref().map(converse::record_of);
                }
            }
            converse::After::Put(record) => self.record = Some(record),
            converse::After::Clear => self.record = None,
        }
        Ok(outcome)
    }
}

/// The message XML a step describes.
fn build_message(case: &Step, base: &Path) -> Result<String, String> {
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
        if let Some(choice) = &case.choice {
            fields.push(("bizmsgmenuid".into(), choice.clone()));
        }
    } else if case.choice.is_some() {
        return Err("a `choice` is tapped on a text: give its `text` too".into());
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
