//! What a rule says about a conversation, compiled: the state its `when` asks for
//! (`StateWhen`), the state it sets or clears once it has answered (`Transition`), and a
//! text reply's tap-to-answer `choices`. The user's state itself lives in `store`; the
//! server reads it before matching and writes the transition after answering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{ReplySpec, Tpl};

/// A user's conversation state as templates and criteria see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub name: String,
    pub vars: BTreeMap<String, String>,
    /// The user's messages in the state, this one included.
    pub tries: u32,
    /// The rule that set it.
    pub rule: String,
    /// The unix second it ends.
    pub expires: u64,
}

/// `when: { state: … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWhen {
    /// `none`: the user is in no state.
    None,
    /// `any`: the user is in some state.
    Any,
    /// A state by name.
    Named(Arc<str>),
}

impl StateWhen {
    /// Whether a user in `state` (`None`: in none) is matched.
    pub fn holds(&self, state: Option<&str>) -> bool {
        match (self, state) {
            (StateWhen::None, None) | (StateWhen::Any, Some(_)) => true,
            (StateWhen::Named(want), Some(have)) => &**want == have,
            _ => false,
        }
    }

    /// As written: `none`, `any`, or the name.
    pub fn as_str(&self) -> &str {
        match self {
            StateWhen::None => "none",
            StateWhen::Any => "any",
            StateWhen::Named(name) => name,
        }
    }
}

/// What a rule does to its user's state once it has answered.
#[derive(Debug)]
pub enum Transition {
    /// `set:`: the user is now in this state.
    Set(SetState),
    /// `clear: true`: the user is in no state.
    Clear,
}

/// A rule's `set:`.
#[derive(Debug)]
pub struct SetState {
    pub name: Arc<str>,
    /// How long the state lasts from when it is set (`ttl:`, default `DEFAULT_TTL`).
    pub ttl: Duration,
    /// `vars:`, each a template rendered as the reply is (captures, fields, `call.…`).
    pub vars: Vec<(String, Tpl)>,
    /// The reply given on the user's first message after the state expired.
    pub on_expire: Option<ReplySpec>,
}

/// One tap-to-answer choice of a text reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub id: String,
    pub text: String,
}

/// A text reply with its `choices`, appended as WeChat's `weixin://bizmsgmenu` links.
#[derive(Debug)]
pub struct ChoiceText {
    pub text: Tpl,
    pub choices: Vec<Choice>,
}

impl ChoiceText {
    /// `text` followed by a link per choice, each on its own line; tapping one sends its
    /// text back as a message carrying `bizmsgmenuid` (the choice's id).
    pub fn append_links(&self, text: &mut String) {
        for choice in &self.choices {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str("<a href=\"weixin://bizmsgmenu?msgmenucontent=");
            text.push_str(&choice.text);
            text.push_str("&msgmenuid=");
            text.push_str(&choice.id);
            text.push_str("\">");
            text.push_str(&choice.text);
            text.push_str("</a>");
        }
    }
}

/// A state lasts this long unless its `set:` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// The longest `ttl:`.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most `vars:` a state holds (a later `set:` keeps the earlier ones).
pub const MAX_VARS: usize = 32;
/// The longest value of a var, in bytes (a longer one is cut at a character's end).
pub const MAX_VAR_BYTES: usize = 1024;
/// The longest state name, in bytes.
pub const MAX_STATE_NAME: usize = 64;
/// The most choices of a reply (WeChat's message menus take 10).
pub const MAX_CHOICES: usize = 10;
/// The longest choice id (WeChat's: 64 bytes) and choice text (128 bytes).
pub const MAX_CHOICE_ID: usize = 64;
pub const MAX_CHOICE_TEXT: usize = 128;

/// Why `name` cannot be a state's name: letters, digits, `_` and `-`, not `none` or `any`.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a state's name is empty".into());
    }
    if matches!(name, "none" | "any") {
        return Some(format!(
            "`{name}` is not a state's name: `state: {name}` in `when` means {}",
            if name == "none" {
                "no state"
            } else {
                "any state"
            }
        ));
    }
    if name.len() > MAX_STATE_NAME {
        return Some(format!("a state's name is at most {MAX_STATE_NAME} bytes"));
    }
    if !name
        .chars()
        .all(|ch| ch.is_alphanumeric() || ch == '_' || ch == '-')
    {
        return Some(format!(
            "`{}` is not a state's name: letters, digits, `_` and `-`",
            super::excerpt::excerpt(name)
        ));
    }
    None
}

/// A var's value cut to `MAX_VAR_BYTES` at a character's end.
pub fn bounded_var(mut value: String) -> String {
    if value.len() > MAX_VAR_BYTES {
        let mut end = MAX_VAR_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_criteria_hold_as_named() {
        let named = StateWhen::Named("bind".into());
        assert!(named.holds(Some("bind")));
        assert!(!named.holds(Some("other")));
        assert!(!named.holds(None));
        assert!(StateWhen::None.holds(None));
        assert!(!StateWhen::None.holds(Some("bind")));
        assert!(StateWhen::Any.holds(Some("bind")));
        assert!(!StateWhen::Any.holds(None));
    }

    #[test]
    fn choices_are_appended_as_wechat_links() {
        let spec = ChoiceText {
            text: Tpl::Literal(String::new()),
            choices: vec![
                Choice {
                    id: "1".into(),
                    text: "是".into(),
                },
                Choice {
                    id: "2".into(),
                    text: "否".into(),
                },
            ],
        };
        let mut text = "确认绑定？".to_owned();
        spec.append_links(&mut text);
        assert_eq!(
            text,
            "确认绑定？\n<a href=\"weixin://bizmsgmenu?msgmenucontent=是&msgmenuid=1\">是</a>\n<a href=\"weixin://bizmsgmenu?msgmenucontent=否&msgmenuid=2\">否</a>"
        );
    }

    #[test]
    fn names_and_vars_are_bounded() {
        assert!(name_problem("bind_phone").is_none());
        assert!(name_problem("绑定").is_none());
        assert!(name_problem("none").is_some());
        assert!(name_problem("a b").is_some());
        assert!(name_problem(&"x".repeat(65)).is_some());
        let cut = bounded_var("号".repeat(400));
        assert!(cut.len() <= MAX_VAR_BYTES && cut.chars().all(|c| c == '号'));
    }
}
