//! One message explained: which rule answers it and why (each criterion held or not, the
//! captures), the reply as sent, what a `call` would ask and what `send:` would send. The
//! one code behind `wxrules explain` and the dashboard's "try a message"; no IO, no call is
//! ever made (a call's answer is stubbed or taken as failed).

use std::path::Path;

use serde_json::{json, Value};

use crate::act::call::{CallFailure, CallResult, Caller};
use crate::answer::{after_call, decide_found, holding, Decision, Outcome};
use crate::converse::After;
use crate::rules::conversation::UserState;
use crate::rules::{Match, RuleSet, Subject, Words};
use crate::wire::{Message, Reply};

/// The rule found, as shown.
#[derive(Debug)]
pub struct Found {
    pub name: String,
    pub line: usize,
    /// Each criterion with the message's value (`keyword = "价格"`), and whether it held.
    pub criteria: Vec<(String, bool)>,
    /// Each criterion as the dashboard's list of rules words it, in English and Chinese
    /// (`keyword is 价格 or price`, `关键词 是 价格 或 price`), in the order of `criteria`.
    pub criteria_words: Vec<(String, String)>,
    pub captures: Vec<(String, String)>,
}

/// A rule's call, as shown: the request it would make and what a late push would get.
#[derive(Debug)]
pub struct CallShown {
    /// Method, URL, header names (never values), timeout, JSON body.
    pub request: Value,
    /// The holding reply of a `late` call.
    pub holding: Option<Outcome>,
    /// Whether the call's answer was given (`--call-response`/`--call-error`); otherwise
    /// the outcome is the rule's answer to a failed call.
    pub stubbed: bool,
}

/// What the rules do with one message.
#[derive(Debug)]
pub struct Explanation {
    pub found: Option<Found>,
    pub outcome: Outcome,
    pub call: Option<CallShown>,
    /// For rules that converse: the user's state before (as given) and after the message.
    pub state: Option<StateShown>,
}

/// A user's conversation state around one message.
#[derive(Debug)]
pub struct StateShown {
    pub before: Option<UserState>,
    /// The state after: `None` when the user is in none.
    pub after: Option<UserState>,
}

/// Explains `message` against `rules`, with `active` windows evaluated at `at` and replies
/// stamped `now`. A rule's call is not made: `stub` stands for its answer, or it fails.
/// `state`: the user's conversation state to start from (`--state`, the page's try).
pub fn explain(
    rules: &RuleSet,
    message: &Message,
    at: u64,
    now: u64,
    caller: &Caller,
    stub: Option<&CallResult>,
    state: Option<&UserState>,
) -> Explanation {
    let before = state.map(|s| {
        std::sync::Arc::new(UserState {
            tries: s
                .tries
                .saturating_add(u32::from(crate::converse::counts(message))),
            ..s.clone()
        })
    });
    let subject = Subject::at(message, at);
    let subject = match &before {
        Some(user) => subject.in_state(Some(&user.name), user.tries),
        None => subject,
    };
    let first = rules.find(&subject).map(|mut m| {
        m.state.clone_from(&before);
        m
    });
    let converses = rules.converses() || before.is_some();
    let moved = converses.then(|| {
        crate::converse::after_answer(rules, message, first.as_ref(), before.as_deref(), at, false)
    });
    let found = first.as_ref().map(|m| {
        let criteria = m.rule.describe(&subject);
        let criteria_words = m
            .rule
            .criteria_words(Words::En)
            .into_iter()
            .zip(m.rule.criteria_words(Words::Zh))
            .collect();
        Found {
            name: m.rule.name().to_owned(),
            line: m.rule.line(),
            criteria,
            criteria_words,
            captures: m
                .captures
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    });
    let mut by_call = None;
    let (outcome, call) = match decide_found(rules, message, first, now) {
        Decision::Done(outcome) => (outcome, None),
        Decision::Call(m) => {
            let not_made =
                CallResult::Failed(CallFailure::Stubbed("no call is made by explain".into()));
            let result = stub.unwrap_or(&not_made);
            let outcome = after_call(rules, message, &m, result, now);
            if m.rule.transition().is_some() {
                by_call = Some(crate::converse::after_call(rules, message, &m, result, at));
            }
            let holding = m
                .rule
                .call()
                .and_then(|c| c.late())
                .map(|_| holding(rules, message, &m, now));
            let request = describe_request(caller, &m, message);
            (
                outcome,
                Some(CallShown {
                    request,
                    holding,
                    stubbed: stub.is_some(),
                }),
            )
        }
    };
    let state = moved.map(|moved| {
        let became = match (by_call, &outcome) {
            (Some(after), _) => after,
            (None, Outcome::Failed { .. }) => {
                crate::converse::after_answer(rules, message, None, before.as_deref(), at, true)
            }
            (None, _) => moved,
        };
        let after = match became {
            After::Keep => before.as_deref().cloned(),
            After::Put(record) => Some(UserState {
                name: record.state,
                vars: record.vars,
                tries: record.tries,
                rule: record.rule,
                expires: record.expires,
            }),
            After::Clear => None,
        };
        StateShown {
            before: state.cloned(),
            after,
        }
    });
    Explanation {
        found,
        outcome,
        call,
        state,
    }
}

impl Explanation {
    /// As `explain --json` prints it; `file` is the rules file's path as shown.
    pub fn to_json(&self, file: &Path) -> Value {
        let file = file.display().to_string();
        json!({
            "rule": self.found.as_ref().map(|f| json!({
                "name": f.name,
                "file": file,
                "line": f.line,
                "criteria": f.criteria.iter().enumerate()
                    .map(|(i, (c, held))| json!({
                        "criterion": c,
                        "held": held,
                        "when": f.criteria_words.get(i).map(|(en, zh)| json!({"en": en, "zh": zh})),
                    }))
                    .collect::<Vec<_>>(),
                "captures": f.captures.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<serde_json::Map<_, _>>(),
            })),
            "outcome": match &self.outcome {
                Outcome::Replied { .. } => "replied",
                Outcome::Ignored { .. } => "ignored",
                Outcome::Failed { .. } => "error",
            },
            "error": match &self.outcome {
                Outcome::Failed { error, .. } => Some(error.to_string()),
                _ => None,
            },
            "reply": match &self.outcome {
                Outcome::Replied { reply, .. } => reply_json(reply),
                _ => Value::Null,
            },
            "body": self.outcome.body(),
            "call": self.call.as_ref().map(|c| json!({
                "request": c.request,
                "stubbed": c.stubbed,
                "holding_body": c.holding.as_ref().map(Outcome::body),
            })),
            "sends": self.sends_json(),
            "state": self.state.as_ref().map(|s| json!({
                "before": s.before.as_ref().map(state_json),
                "after": s.after.as_ref().map(state_json),
            })),
        })
    }

    /// The `send:` messages, as the customer-service API would get them (to a made-up
    /// user), or why one cannot be sent.
    pub fn sends_json(&self) -> Vec<Value> {
        match &self.outcome {
            Outcome::Replied { sends, .. } => sends
                .iter()
                .map(|send| match send {
                    Ok(reply) => crate::wechat_api::CustomMessage::new(EXPLAIN_USER, reply.clone())
                        .ok()
                        .and_then(|m| serde_json::to_value(m).ok())
                        .unwrap_or(Value::Null),
                    Err(e) => json!({"error": e.to_string()}),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn state_json(state: &UserState) -> Value {
    json!({"name": state.name, "vars": state.vars, "tries": state.tries})
}

/// Why a pasted push cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the message does not parse: {0}")]
    Parse(String),
    #[error("an encrypted message needs the account's AES key and AppID")]
    NoKey,
    #[error("the encrypted message does not decrypt: {0}")]
    Decrypt(String),
    #[error("the decrypted message does not parse: {0}")]
    DecryptedParse(String),
}

/// A push as pasted: plain, or a safe-mode body (`<Encrypt>`) decrypted with `cipher`. A
/// compatible-mode body (plain fields and `<Encrypt>`) is read from its encrypted copy when
/// there is a key, as the server reads it. No signature is checked: there is no query.
pub fn read_push(xml: &[u8], cipher: Option<&crate::crypto::Cipher>) -> Result<Message, PushError> {
    let plain = Message::parse(xml);
    let Ok(encrypt) = crate::wire::parse_encrypted(xml) else {
        return plain.map_err(|e| PushError::Parse(e.to_string()));
    };
    let Some(cipher) = cipher else {
        return plain.map_err(|_| PushError::NoKey);
    };
    let inner = cipher
        .decrypt(&encrypt)
        .map_err(|e| PushError::Decrypt(e.to_string()))?;
    Message::parse(&inner).map_err(|e| PushError::DecryptedParse(e.to_string()))
}

/// The OpenID of the made-up user of `explain` and the dashboard.
pub const EXPLAIN_USER: &str = "o_explain_user";

/// A reply as the dashboard draws it: its kind and fields.
pub fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Text { content } => json!({"kind": "text", "content": content}),
        Reply::Image { media_id } => json!({"kind": "image", "media_id": media_id}),
        Reply::Voice { media_id } => json!({"kind": "voice", "media_id": media_id}),
        Reply::Video {
            media_id,
            title,
            description,
        } => {
            json!({"kind": "video", "media_id": media_id, "title": title, "description": description})
        }
        Reply::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => json!({"kind": "music", "title": title, "description": description,
            "music_url": music_url, "hq_music_url": hq_music_url, "thumb_media_id": thumb_media_id}),
        Reply::News { articles } => {
            json!({"kind": "news", "articles": articles.iter().map(|a| json!({
            "title": a.title, "description": a.description, "pic_url": a.pic_url, "url": a.url,
        })).collect::<Vec<_>>()})
        }
        Reply::TransferCustomerService { kf_account } => {
            json!({"kind": "transfer_customer_service", "kf_account": kf_account})
        }
    }
}

/// The request a rule's call would make for `message`: method, URL (its values
/// percent-encoded), the header names (never their values) and the JSON body; or why it
/// cannot be built.
pub fn describe_request(caller: &Caller, found: &Match<'_>, message: &Message) -> Value {
    let Some(call) = found.rule.call() else {
        return Value::Null;
    };
    let scope = crate::render::Scope {
        message,
        rule: found.rule.name(),
        captures: &found.captures,
        call: None,
        state: found.state.as_deref(),
    };
    let request = match caller.request(call, &scope) {
        Ok(request) => request,
        Err(e) => return json!({"error": format!("the call's request cannot be built: {e}")}),
    };
    let body = request
        .body()
        .and_then(|b| b.as_bytes())
        .and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let mut described = json!({
        "method": call.method().as_str(),
        "url": request.url().as_str(),
        "headers": call.header_names().collect::<Vec<_>>(),
        "timeout_ms": u64::try_from(call.timeout().as_millis()).unwrap_or(u64::MAX),
    });
    if let Some(late) = call.late() {
        described["late_after_ms"] = u64::try_from(late.after().as_millis())
            .unwrap_or(u64::MAX)
            .into();
    }
    if let Some(body) = body {
        described["body"] = body;
    }
    described
}

/// A made-up push from `from` to `to`: the envelope, `kind`'s fields, and the fields WeChat
/// always sends with that kind of push (`wire::catalog::sample_fields`) where `kind` does
/// not give them.
pub fn made_up(to: &str, from: &str, kind: &[(&str, &str)], now: u64) -> String {
    let now = now.to_string();
    let mut fields: Vec<(String, String)> = [
        ("ToUserName", to),
        ("FromUserName", from),
        ("CreateTime", now.as_str()),
    ]
    .iter()
    .chain(kind)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let field = |name: &str| kind.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if let Some(found) =
        field("MsgType").and_then(|t| crate::wire::catalog::kind(t, field("Event")))
    {
        for (name, value) in crate::wire::catalog::sample_fields_for(found, field("EventKey")) {
            if !fields.iter().any(|(k, _)| *k == name) {
                fields.push((name, value));
            }
        }
    }
    crate::wire::write_fields(&fields)
}

/// A message for `explain --text` / `--event` and the dashboard, as WeChat would send it.
pub fn synthetic(kind: &[(&str, &str)], now: u64) -> String {
    made_up("gh_explain", EXPLAIN_USER, kind, now)
}
