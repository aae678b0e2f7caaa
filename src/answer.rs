//! The whole decision for one parsed message: find the rule, render its reply, write the
//! reply XML. Shared by the server, `explain` and `test`, so they cannot disagree.

use std::sync::Arc;

use crate::render::{self, RenderError};
use crate::rules::{Action, RuleSet, Subject};
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

    /// The body WeChat gets in plaintext mode: the reply XML, or `success`.
    pub fn body(&self) -> &str {
        match self {
            Outcome::Replied { xml, .. } => xml,
            _ => "success",
        }
    }
}

/// Runs `rules` on `message`. `now` is the reply's `CreateTime` (unix seconds).
pub fn answer(rules: &RuleSet, message: &Message, now: u64) -> Outcome {
    let subject = Subject::new(message);
    let Some(found) = rules.find(&subject) else {
        return Outcome::Ignored { rule: None };
    };
    let rule = Arc::clone(&found.rule.name);
    let spec = match found.rule.action() {
        Action::Ignore => return Outcome::Ignored { rule: Some(rule) },
        Action::Reply(spec) => spec,
    };
    let scope = render::Scope {
        message,
        rule: &rule,
        captures: &found.captures,
    };
    match render::render_reply(rules, spec, &scope) {
        // An empty text would show as a blank bubble or an error; say nothing instead.
        Ok(Reply::Text { content }) if content.trim().is_empty() => {
            Outcome::Ignored { rule: Some(rule) }
        }
        Ok(reply) => {
            let header = ReplyHeader {
                to_user: message.from_user(),
                from_user: message.to_user(),
                create_time: now,
            };
            let xml = wire::write_reply(&header, &reply);
            // Rendered now, with the same context, so that they say what the passive
            // reply saw; sent later by the outbox. A rule without `send:` pays nothing.
            let sends = found
                .rule
                .send()
                .iter()
                .map(|spec| render::render_reply(rules, spec, &scope))
                .collect();
            Outcome::Replied {
                rule,
                reply,
                xml,
                sends,
            }
        }
        Err(error) => Outcome::Failed { rule, error },
    }
}
