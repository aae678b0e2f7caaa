//! What a rule's `when` compiles to, and whether it holds for a message: `Criteria`, a
//! list of `Test`s (a `Field` and the `StrMatcher` of its patterns; a regex is a
//! `LazyRegex`). Pure: no IO; what to try is the index's business, not this file's.

use std::borrow::Cow;

use regex_automata::PatternID;

use super::lazy::LazyRegex;
use super::{Captures, Subject};
use crate::rules::conversation::StateWhen;

/// Which value of the message a criterion reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    MsgType,
    Event,
    EventKey,
    /// Text `Content`, else voice `Recognition`; trimmed.
    Keyword,
    Status,
    /// The tapped choice's id (`bizmsgmenuid`).
    Choice,
    /// Any field by dotted path. Boxed twice, as few rules have one: `Field` is then 16
    /// bytes and a `Test` 32, the allocator's next size down from 48.
    Path(Box<Box<str>>),
}

impl Field {
    /// `msg_type`, `event` and `keyword` compare without ASCII case.
    pub(crate) fn folds_case(&self) -> bool {
        matches!(self, Field::MsgType | Field::Event | Field::Keyword)
    }

    pub(crate) fn label(&self) -> Cow<'_, str> {
        match self {
            Field::MsgType => "msg_type".into(),
            Field::Event => "event".into(),
            Field::EventKey => "event_key".into(),
            Field::Keyword => "keyword".into(),
            Field::Status => "status".into(),
            Field::Choice => "choice".into(),
            Field::Path(p) => format!("fields.{p}").into(),
        }
    }
}

/// The language of `Criteria::words`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Words {
    En,
    Zh,
}

impl Words {
    pub(crate) fn pick(self, en: &'static str, zh: &'static str) -> &'static str {
        match self {
            Words::En => en,
            Words::Zh => zh,
        }
    }
}

/// One alternative of a string matcher. Strings are stored case-folded when the field
/// folds case; regexes are then compiled case-insensitive.
#[derive(Debug)]
pub(crate) enum Pattern {
    // Boxed strings and slices here and below, exactly as long as they need: every rule
    // holds a few (at 1,000 accounts × 200 rules, 16 bytes a string is 5 MB).
    Exact(Box<str>),
    Prefix(Box<str>),
    Contains(Box<str>),
    Regex(Box<LazyRegex>),
}

/// Any-of a list of patterns.
#[derive(Debug)]
pub(crate) struct StrMatcher {
    pub(crate) patterns: Box<[Pattern]>,
}

/// One criterion: a field and what it must match.
#[derive(Debug)]
pub(crate) struct Test {
    pub(crate) field: Field,
    pub(crate) matcher: StrMatcher,
}

/// All criteria of a rule; every one must hold. No criteria match everything.
#[derive(Debug, Default)]
pub(crate) struct Criteria {
    pub(crate) tests: Box<[Test]>,
    /// `state:` (and `tries_below:`); boxed, as most rules have none.
    pub(crate) state: Option<Box<StateTest>>,
}

/// A rule's `when: { state, tries_below }`.
#[derive(Debug)]
pub(crate) struct StateTest {
    pub(crate) when: StateWhen,
    pub(crate) tries_below: Option<u32>,
}

impl StateTest {
    fn holds(&self, subject: &Subject<'_>) -> bool {
        self.when.holds(subject.state) && self.tries_below.is_none_or(|below| subject.tries < below)
    }

    fn words(&self, lang: Words) -> String {
        let state = match (&self.when, lang) {
            (StateWhen::None, Words::En) => "in no state".to_owned(),
            (StateWhen::None, Words::Zh) => "不在任何对话状态".to_owned(),
            (StateWhen::Any, Words::En) => "in any state".to_owned(),
            (StateWhen::Any, Words::Zh) => "在任一对话状态".to_owned(),
            (StateWhen::Named(name), Words::En) => format!("state is {name}"),
            (StateWhen::Named(name), Words::Zh) => format!("对话状态是 {name}"),
        };
        match (self.tries_below, lang) {
            (None, _) => state,
            (Some(n), Words::En) => format!("{state}, answered fewer than {n} times"),
            (Some(n), Words::Zh) => format!("{state}，回答少于 {n} 次"),
        }
    }
}

impl StrMatcher {
    /// Whether `raw`/`folded` match; a matching regex adds its groups to `captures`.
    fn matches(&self, raw: &str, folded: &str, captures: &mut Captures) -> bool {
        self.patterns.iter().any(|p| match p {
            Pattern::Exact(s) => folded == &**s,
            Pattern::Prefix(s) => folded.starts_with(&**s),
            Pattern::Contains(s) => folded.contains(&**s),
            Pattern::Regex(lazy) => {
                let Some(re) = lazy.get() else { return false };
                let mut caps = re.create_captures();
                re.captures(raw, &mut caps);
                if !caps.is_match() {
                    return false;
                }
                let names = re.group_info().pattern_names(PatternID::ZERO);
                for (i, name) in names.enumerate() {
                    let Some(text) = caps.get_group(i).and_then(|span| raw.get(span.range()))
                    else {
                        continue;
                    };
                    captures.push((i.to_string(), text.to_owned()));
                    if let Some(name) = name {
                        captures.push((name.to_owned(), text.to_owned()));
                    }
                }
                true
            }
        })
    }

    /// The exact strings, when this matcher has nothing but exact patterns.
    pub(crate) fn exact_only(&self) -> Option<Vec<&str>> {
        self.patterns
            .iter()
            .map(|p| match p {
                Pattern::Exact(s) => Some(&**s),
                _ => None,
            })
            .collect()
    }
}

impl Criteria {
    pub(super) fn matches(&self, subject: &Subject<'_>, captures: &mut Captures) -> bool {
        if self.state.as_ref().is_some_and(|s| !s.holds(subject)) {
            return false;
        }
        let start = captures.len();
        let all = self.tests.iter().all(|t| {
            subject
                .value(&t.field)
                .is_some_and(|(raw, folded)| t.matcher.matches(raw, folded, captures))
        });
        if !all {
            captures.truncate(start);
        }
        all
    }

    /// Each criterion in words, without a message: `keyword is 价格 or price`,
    /// `event_key matches /^qrscene_(.+)$/`; in Chinese with `Words::Zh`
    /// (`关键词 是 价格 或 price`).
    pub(crate) fn words(&self, lang: Words) -> Vec<String> {
        let state = self.state.as_ref().map(|s| s.words(lang));
        self.tests
            .iter()
            .map(|t| {
                // `is 价格 or price or starts with 订单`: a verb once for a run of its kind.
                let mut alternatives: Vec<String> = Vec::new();
                let mut last_verb = "";
                for p in &t.matcher.patterns {
                    let (verb, value) = match p {
                        Pattern::Exact(v) => (lang.pick("is", "是"), v.to_string()),
                        Pattern::Prefix(v) => (lang.pick("starts with", "开头是"), v.to_string()),
                        Pattern::Contains(v) => (lang.pick("contains", "包含"), v.to_string()),
                        Pattern::Regex(r) => {
                            (lang.pick("matches", "匹配"), format!("/{}/", r.as_str()))
                        }
                    };
                    if verb == last_verb {
                        alternatives.push(value);
                    } else {
                        alternatives.push(format!("{verb} {value}"));
                        last_verb = verb;
                    }
                }
                let field = match (lang, &t.field) {
                    (Words::En, field) => field.label(),
                    (Words::Zh, Field::MsgType) => "消息类型".into(),
                    (Words::Zh, Field::Event) => "事件".into(),
                    (Words::Zh, Field::EventKey) => "事件 KEY".into(),
                    (Words::Zh, Field::Keyword) => "关键词".into(),
                    (Words::Zh, Field::Status) => "状态".into(),
                    (Words::Zh, Field::Choice) => "选项".into(),
                    (Words::Zh, Field::Path(p)) => format!("字段 {p}").into(),
                };
                format!("{field} {}", alternatives.join(lang.pick(" or ", " 或 ")))
            })
            .chain(state)
            .collect()
    }

    pub(crate) fn describe(&self, subject: &Subject<'_>) -> Vec<(String, bool)> {
        let state = self.state.as_ref().map(|s| {
            let shown = match subject.state {
                Some(name) => format!("state = {name:?}, tries = {}", subject.tries),
                None => "state = (none)".to_owned(),
            };
            (shown, s.holds(subject))
        });
        self.tests
            .iter()
            .map(|t| {
                let value = subject.value(&t.field);
                let held = value
                    .is_some_and(|(raw, folded)| t.matcher.matches(raw, folded, &mut Vec::new()));
                let shown = value.map_or("(absent)".to_owned(), |(raw, _)| format!("{raw:?}"));
                (format!("{} = {shown}", t.field.label()), held)
            })
            .chain(state)
            .collect()
    }
}
