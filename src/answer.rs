//! The whole decision for one parsed message: find the rule, render its reply, write the
//! reply XML. Shared by the server, `explain` and `test`, so they cannot disagree.

use std::sync::Arc;

use crate::act::call::{CallFailure, CallResult, Decided};
use crate::render::{self, RenderError};
use crate::rules::{Action, Match, ReplySpec, RuleSet, Subject};
use crate::wire::{self, Message, Reply, ReplyHeader};

/// What the rules say about one message.
#[derive(Debug)]
pub enum Outcome {
    /// Answer with `xml`, a passive reply rendered by `rule`; then send `sends` (the rule's
    /// `send:` list, rendered, each one or its render error) through the customer-service API.
    Replied {
        rule: Arc<str>,
        reply: Reply,
        xml: String,
        sends: Vec<Result<Reply, RenderError>>,
        /// The rule's reply names a media file whose upload has not finished
        /// (`render::MEDIA_PENDING`): this is its `on_error` in its place.
        media_pending: bool,
    },
    /// Answer `success`: `rule` says to ignore the message, or no rule matched (`None`).
    Ignored { rule: Option<Arc<str>> },
    /// Answer `success`: `rule` matched but its template failed at render time.
    Failed { rule: Arc<str>, error: RenderError },
}

impl Outcome {
    /// The name of the rule that decided, if any.
    pub fn rule(&self) -> Option<&str> {
        self.shared_rule().map(|rule| &**rule)
    }

    /// The same name, shared with the rule set.
    pub fn shared_rule(&self) -> Option<&Arc<str>> {
        match self {
            Outcome::Replied { rule, .. } | Outcome::Failed { rule, .. } => Some(rule),
            Outcome::Ignored { rule } => rule.as_ref(),
        }
    }

    /// Whether the rule's reply waited for a media file's upload (`render::MEDIA_PENDING`):
    /// answered `success`, or by its `on_error` in its place.
    pub fn media_pending(&self) -> bool {
        match self {
            Outcome::Replied { media_pending, .. } => *media_pending,
            Outcome::Failed { error, .. } => error.reason == render::MEDIA_PENDING,
            Outcome::Ignored { .. } => false,
        }
    }

    /// The body WeChat gets in plaintext mode: the reply XML, or `success`.
    pub fn body(&self) -> &str {
        match self {
            Outcome::Replied { xml, .. } => xml,
            _ => "success",
        }
    }
}

/// What the rules say before any call: the outcome, or the rule whose service must be asked.
#[derive(Debug)]
pub enum Decision<'r> {
    Done(Outcome),
    /// The rule has a `call`: make it, then `after_call` (or `holding`, if it is late).
    Call(Match<'r>),
}

/// Runs `rules` on `message` up to a call. `now` is the reply's `CreateTime` (unix seconds).
pub fn decide<'r>(rules: &'r RuleSet, message: &Message, now: u64) -> Decision<'r> {
    decide_found(rules, message, rules.find(&Subject::at(message, now)), now)
}

/// `decide`, with the rule already found (the server passes over rules cooling down).
pub fn decide_found<'r>(
    rules: &'r RuleSet,
    message: &Message,
    found: Option<Match<'r>>,
    now: u64,
) -> Decision<'r> {
    let Some(found) = found else {
        return Decision::Done(Outcome::Ignored { rule: None });
    };
    if found.rule.call().is_some() {
        return Decision::Call(found);
    }
    Decision::Done(respond(rules, message, &found, None, now))
}

/// Runs `rules` on `message` where no call can be made: a rule with a `call` answers as if
/// its call had failed (its `on_error`, or `success`). For benchmarks and embedders; the
/// server, `explain` and `test` use `decide` and `after_call`.
pub fn answer(rules: &RuleSet, message: &Message, now: u64) -> Outcome {
    match decide(rules, message, now) {
        Decision::Done(outcome) => outcome,
        Decision::Call(found) => after_call(
            rules,
            message,
            &found,
            &CallResult::Failed(CallFailure::Stubbed("no call is made here".into())),
            now,
        ),
    }
}

/// The outcome once `found`'s call has ended with `result`: the service's own reply or
/// `ignore`; else the rule's reply rendered with `call`; on failure its `on_error`. A reply
/// that names a media file whose upload has not finished answers as the call's failure
/// would: its `on_error` (marked `media_pending`), or `success`.
pub fn after_call(
    rules: &RuleSet,
    message: &Message,
    found: &Match<'_>,
    result: &CallResult,
    now: u64,
) -> Outcome {
    let rule = Arc::clone(&found.rule.name);
    match result {
        CallResult::Answered(answered) => match &answered.decided {
            Some(Decided::Ignore) => Outcome::Ignored { rule: Some(rule) },
            Some(Decided::Reply(reply)) => {
                let scope = scope_of(message, &rule, found, Some(&answered.value));
                let sends = render_sends(rules, found, &scope);
                let plain = found.rule.plain;
                replied_as(rule, reply.clone(), message, now, sends, plain)
            }
            None => {
                let outcome = respond(rules, message, found, Some(&answered.value), now);
                if outcome.media_pending() {
                    on_error_for_pending(rules, message, found, outcome, now)
                } else {
                    outcome
                }
            }
        },
        CallResult::Failed(_) => {
            let on_error = found.rule.call().and_then(|call| call.on_error());
            render_alone(rules, message, found, on_error, now)
        }
    }
}

/// In place of `pending` (a reply that waits for its media file's upload), the rule's
/// `on_error`, marked `media_pending`; `pending` itself (`success`) without one, or when
/// it cannot be made either.
fn on_error_for_pending(
    rules: &RuleSet,
    message: &Message,
    found: &Match<'_>,
    pending: Outcome,
    now: u64,
) -> Outcome {
    let on_error = found.rule.call().and_then(|call| call.on_error());
    match render_alone(rules, message, found, on_error, now) {
        Outcome::Replied {
            rule,
            reply,
            xml,
            sends,
            ..
        } => Outcome::Replied {
            rule,
            reply,
            xml,
            sends,
            media_pending: true,
        },
        _ => pending,
    }
}

/// The answer of a push whose call has not returned by `late.after`: the holding reply, or
/// `success`.
pub fn holding(rules: &RuleSet, message: &Message, found: &Match<'_>, now: u64) -> Outcome {
    let reply = found
        .rule
        .call()
        .and_then(|call| call.late())
        .and_then(|late| late.reply());
    render_alone(rules, message, found, reply, now)
}

/// `spec` rendered without `call` and without the rule's `send:`; `None` is `success`.
fn render_alone(
    rules: &RuleSet,
    message: &Message,
    found: &Match<'_>,
    spec: Option<&ReplySpec>,
    now: u64,
) -> Outcome {
    let rule = Arc::clone(&found.rule.name);
    let Some(spec) = spec else {
        return Outcome::Ignored { rule: Some(rule) };
    };
    let scope = scope_of(message, &rule, found, None);
    match render::render_reply(rules, spec, &scope) {
        Ok(reply) => replied(rule, reply, message, now, Vec::new()),
        Err(error) => Outcome::Failed { rule, error },
    }
}

fn scope_of<'a>(
    message: &'a Message,
    rule: &'a str,
    found: &'a Match<'_>,
    call: Option<&'a serde_json::Value>,
) -> render::Scope<'a> {
    render::Scope {
        message,
        rule,
        captures: &found.captures,
        call,
        state: found.state.as_deref(),
    }
}

/// The rule's reply (and `send:` list) rendered for `message`, with `call` when it has one.
fn respond(
    rules: &RuleSet,
    message: &Message,
    found: &Match<'_>,
    call: Option<&serde_json::Value>,
    now: u64,
) -> Outcome {
    let rule = Arc::clone(&found.rule.name);
    let spec = match found.rule.action() {
        Action::Ignore => return Outcome::Ignored { rule: Some(rule) },
        Action::Reply(spec) => spec,
    };
    let scope = scope_of(message, &rule, found, call);
    match render::render_reply(rules, spec, &scope) {
        Ok(reply) => {
            // Rendered now, with the same context, so that they say what the passive
            // reply saw; sent later by the outbox. A rule without `send:` pays nothing.
            let sends = render_sends(rules, found, &scope);
            replied_as(rule, reply, message, now, sends, found.rule.plain)
        }
        Err(error) => Outcome::Failed { rule, error },
    }
}

fn render_sends(
    rules: &RuleSet,
    found: &Match<'_>,
    scope: &render::Scope<'_>,
) -> Vec<Result<Reply, RenderError>> {
    found
        .rule
        .send()
        .iter()
        .map(|spec| render::render_reply(rules, spec, scope))
        .collect()
}

/// `reply` as the answer to `message`; an empty text says nothing instead (it would show
/// as a blank bubble or an error).
/// `reply` written as `rule`'s passive answer to `message`.
pub fn replied_with(rule: Arc<str>, reply: Reply, message: &Message, now: u64) -> Outcome {
    replied(rule, reply, message, now, Vec::new())
}

fn replied(
    rule: Arc<str>,
    reply: Reply,
    message: &Message,
    now: u64,
    sends: Vec<Result<Reply, RenderError>>,
) -> Outcome {
    replied_as(rule, reply, message, now, sends, false)
}

/// `replied`, with a text's Markdown made WeChat text when the rule says `format: plain`.
fn replied_as(
    rule: Arc<str>,
    reply: Reply,
    message: &Message,
    now: u64,
    sends: Vec<Result<Reply, RenderError>>,
    plain: bool,
) -> Outcome {
    let reply = match reply {
        Reply::Text { content } if plain => Reply::Text {
            content: crate::parts::markdown_to_plain(&content),
        },
        reply => reply,
    };
    if let Reply::Text { content } = &reply {
        if content.trim().is_empty() {
            return Outcome::Ignored { rule: Some(rule) };
        }
    }
    let header = ReplyHeader {
        to_user: message.from_user(),
        from_user: message.to_user(),
        create_time: now,
    };
    let xml = wire::write_reply(&header, &reply);
    Outcome::Replied {
        rule,
        reply,
        xml,
        sends,
        media_pending: false,
    }
}
