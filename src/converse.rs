//! A user's conversation state across messages: what the rules and templates see of it
//! (`seen`), the `on_expire` reply of one that ended (`expired_reply`), and what it
//! becomes once a rule has answered (`after_answer`) or its call has ended (`after_call`).
//! Pure; the server keeps the records in `store::conversation`, `wxrules test` and
//! `explain` in a variable.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::act::call::CallResult;
use crate::answer::{self, Outcome};
use crate::render;
use crate::rules::conversation::{bounded_var, Transition, UserState, MAX_VARS};
use crate::rules::{Match, RuleSet};
use crate::store::conversation::Record;
use crate::wire::Message;

/// Whether `message` counts as an answer in a state (`state.tries`): a user's message, not
/// an event (a location report, a menu's view) that comes without them answering.
pub fn counts(message: &Message) -> bool {
    !message.msg_type().eq_ignore_ascii_case("event")
}

/// The state as the rules see it during `message`: its tries with this message counted.
pub fn seen(record: &Record, message: &Message) -> UserState {
    UserState {
        name: record.state.clone(),
        vars: record.vars.clone(),
        tries: record.tries.saturating_add(u32::from(counts(message))),
        rule: record.rule.clone(),
        expires: record.expires,
    }
}

/// The record of a state as seen (`seen`), to be kept.
pub fn record_of(state: &UserState) -> Record {
    Record {
        state: state.name.clone(),
        vars: state.vars.clone(),
        tries: state.tries,
        rule: state.rule.clone(),
        expires: state.expires,
    }
}

/// The answer to a user's first message after `ended` expired: the `on_expire` of the
/// rule that set it, if it still has one (rendered with the old state), for a message
/// (not an event).
pub fn expired_reply(
    rules: &RuleSet,
    message: &Message,
    ended: &Record,
    now: u64,
) -> Option<Outcome> {
    if !counts(message) {
        return None;
    }
    let set = rules.set_by(&ended.rule)?;
    let spec = set.on_expire.as_ref()?;
    let state = UserState {
        tries: ended.tries,
        ..seen(ended, message)
    };
    let rule: Arc<str> = Arc::from(ended.rule.as_str());
    let captures = Vec::new();
    let scope = render::Scope {
        message,
        rule: &rule,
        captures: &captures,
        call: None,
        state: Some(&state),
    };
    Some(match render::render_reply(rules, spec, &scope) {
        Ok(reply) => answer::replied_with(rule, reply, message, now),
        Err(error) => Outcome::Failed { rule, error },
    })
}

/// What becomes of the user's state (`after_answer`, `after_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Nothing to write.
    Keep,
    /// The user is now in this state (a new one, or the same with one more try).
    Put(Record),
    /// The user is in no state.
    Clear,
}

/// The state after `found` (or no rule) answered `message`, for a user who was in
/// `before` (as seen). `applies`: whether the rule's `set:`/`clear:` takes effect (it
/// answered; for a rule with a call, its service answered); when it does not, a user in a
/// state has one more try. A new state keeps the vars of the one it replaces that it does
/// not set itself.
fn after(
    rules: &RuleSet,
    message: &Message,
    found: Option<&Match<'_>>,
    before: Option<&UserState>,
    call: Option<&Value>,
    now: u64,
    applies: bool,
) -> After {
    let transition = found
        .filter(|_| applies)
        .and_then(|found| found.rule.transition().map(|t| (found, t)));
    match transition {
        Some((_, Transition::Clear)) => After::Clear,
        Some((found, Transition::Set(set))) => {
            let mut vars = before.map(|b| b.vars.clone()).unwrap_or_default();
            let scope = render::Scope {
                message,
                rule: found.rule.name(),
                captures: &found.captures,
                call,
                state: before,
            };
            for (key, tpl) in &set.vars {
                if vars.len() >= MAX_VARS && !vars.contains_key(key) {
                    continue;
                }
                // A var whose template fails (a field the message lacks) is empty.
                let value = render::render_text(rules, tpl, &scope).unwrap_or_default();
                vars.insert(key.clone(), bounded_var(value));
            }
            After::Put(Record {
                state: set.name.to_string(),
                vars,
                tries: 0,
                rule: found.rule.name().to_owned(),
                expires: now.saturating_add(ttl_secs(set.ttl)),
            })
        }
        None => match before {
            Some(state) if counts(message) => After::Put(record_of(state)),
            _ => After::Keep,
        },
    }
}

/// The state after a push answered without a call of its own deciding it: `found` (or no
/// rule) answered, its reply `failed` to render or not. A rule with a call and a
/// `set:`/`clear:` leaves it to the call's end (`Keep` here: its `after` comes with the
/// service's answer); any other rule with a call counts a try.
pub fn after_answer(
    rules: &RuleSet,
    message: &Message,
    found: Option<&Match<'_>>,
    before: Option<&UserState>,
    now: u64,
    failed: bool,
) -> After {
    match found {
        Some(m) if m.rule.call().is_some() && m.rule.transition().is_some() => After::Keep,
        Some(m) if m.rule.call().is_none() => {
            after(rules, message, Some(m), before, None, now, !failed)
        }
        _ => after(rules, message, None, before, None, now, false),
    }
}

/// The state once `found`'s call has ended, for a rule with a `set:`/`clear:`: moved when
/// its service answered (its JSON is `call.…` for the vars), else one more try.
pub fn after_call(
    rules: &RuleSet,
    message: &Message,
    found: &Match<'_>,
    result: &CallResult,
    now: u64,
) -> After {
    let (call, applies) = match result {
        CallResult::Answered(answered) => (Some(&answered.value), true),
        CallResult::Failed(_) => (None, false),
    };
    let before = found.state.as_deref();
    after(rules, message, Some(found), before, call, now, applies)
}

fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}
