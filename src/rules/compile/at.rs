//! Where in the rules file a step of compiling is: a rule (its index and name) and the path
//! of keys and list indexes within it. Each key of a rule is named once (`Key`), each key
//! below one where the step that reads it enters it. A place is borrowed, built as compile
//! walks a rule, and written out (`rules[3].when.keyword[1]`, a path `rules::locate`
//! indexes) only when an error needs its position: naming one allocates nothing.

use std::fmt;

/// A key of a rule, where the rule's own parts are (and `late.reply`, which is both compiled
/// with the call and checked with the rule's other replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Name,
    When,
    Reply,
    Send,
    Call,
    OnError,
    Late,
    LateReply,
    Cooldown,
    Active,
    Format,
    Set,
    Clear,
}

impl Key {
    /// The key as the rules file writes it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Key::Name => "name",
            Key::When => "when",
            Key::Reply => "reply",
            Key::Send => "send",
            Key::Call => "call",
            Key::OnError => "on_error",
            Key::Late => "late",
            Key::LateReply => "late.reply",
            Key::Cooldown => "cooldown",
            Key::Active => "active",
            Key::Format => "format",
            Key::Set => "set",
            Key::Clear => "clear",
        }
    }
}

/// A place in a rule: the rule, or a key or list item within it.
#[derive(Debug, Clone, Copy)]
pub(super) struct At<'a> {
    /// The rule's name, which every error about it gives.
    rule: &'a str,
    step: Step<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    /// `rules[i]`, or one of its keys: `rules[i].when`.
    Rule(usize, Option<Key>),
    /// `.key` below a place; a key may hold dots (`image.media_id`, a field path).
    Key(&'a At<'a>, &'a str),
    /// `[i]` below a place.
    Index(&'a At<'a>, usize),
}

impl<'a> At<'a> {
    /// Rule `index` of the file, named `name`.
    pub(super) fn rule(index: usize, name: &'a str) -> At<'a> {
        At {
            rule: name,
            step: Step::Rule(index, None),
        }
    }

    /// The key `key` of this place's rule.
    pub(super) fn field(&self, key: Key) -> At<'a> {
        let index = match self.step {
            Step::Rule(index, _) => index,
            Step::Key(parent, _) | Step::Index(parent, _) => return parent.field(key),
        };
        At {
            rule: self.rule,
            step: Step::Rule(index, Some(key)),
        }
    }

    /// The value of `key` below this place.
    pub(super) fn key(&'a self, key: &'a str) -> At<'a> {
        At {
            rule: self.rule,
            step: Step::Key(self, key),
        }
    }

    /// Item `i` of the list at this place.
    pub(super) fn index(&'a self, i: usize) -> At<'a> {
        At {
            rule: self.rule,
            step: Step::Index(self, i),
        }
    }

    /// The name of the rule this place is in.
    pub(super) fn rule_name(&self) -> &'a str {
        self.rule
    }

    /// The last key of the path, as an error names it (`timeout` of `rules[0].call.timeout`).
    pub(super) fn last_key(&self) -> &'a str {
        let key = match self.step {
            Step::Rule(_, key) => key.map_or("", Key::as_str),
            Step::Key(_, key) => key,
            Step::Index(parent, _) => return parent.last_key(),
        };
        key.rsplit('.').next().unwrap_or(key)
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Step::Rule(index, None) => write!(f, "rules[{index}]"),
            Step::Rule(index, Some(key)) => write!(f, "rules[{index}].{}", key.as_str()),
            Step::Key(parent, key) => write!(f, "{parent}.{key}"),
            Step::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_written_as_locate_indexes_it() {
        let rule = At::rule(3, "r");
        assert_eq!(rule.to_string(), "rules[3]");
        let when = rule.field(Key::When);
        let keyword = when.key("keyword");
        let second = keyword.index(1);
        let regex = second.key("regex");
        assert_eq!(regex.to_string(), "rules[3].when.keyword[1].regex");
        assert_eq!(
            regex.field(Key::LateReply).to_string(),
            "rules[3].late.reply"
        );
        let image = rule.field(Key::Reply);
        let media = image.key("image.media_id");
        assert_eq!(media.to_string(), "rules[3].reply.image.media_id");
        assert_eq!(media.last_key(), "media_id");
        assert_eq!(rule.field(Key::Cooldown).last_key(), "cooldown");
        assert_eq!(second.last_key(), "keyword");
        assert_eq!(regex.rule_name(), "r");
    }
}
