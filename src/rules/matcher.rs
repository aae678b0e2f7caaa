//! Finds the first rule, in file order, whose criteria all hold for a message. Pure: no IO,
//! no allocation beyond lower-casing and the captures. The `Index` narrows the rules to try
//! by exact keyword, event key, event and message type, but the answer is always the one
//! that trying every rule in order would give.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::Regex;

use super::{Rule, RuleSet};
use crate::wire::Message;

/// Which value of the message a criterion reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    MsgType,
    Event,
    EventKey,
    /// Text `Content`, else voice `Recognition`; trimmed.
    Keyword,
    Status,
    /// Any field by dotted path.
    Path(String),
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
            Field::Path(p) => format!("fields.{p}").into(),
        }
    }
}

/// One alternative of a string matcher. Strings are stored case-folded when the field
/// folds case; regexes are then compiled case-insensitive.
#[derive(Debug)]
pub(crate) enum Pattern {
    Exact(String),
    Prefix(String),
    Contains(String),
    Regex(Regex),
}

/// Any-of a list of patterns.
#[derive(Debug)]
pub(crate) struct StrMatcher {
    pub(crate) patterns: Vec<Pattern>,
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
    pub(crate) tests: Vec<Test>,
}

/// The values of a message that criteria read, prepared once per message.
#[derive(Debug)]
pub struct Subject<'m> {
    message: &'m Message,
    msg_type: Cow<'m, str>,
    event: Option<Cow<'m, str>>,
    keyword: Option<&'m str>,
    keyword_folded: Option<Cow<'m, str>>,
}

fn fold(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl<'m> Subject<'m> {
    pub fn new(message: &'m Message) -> Subject<'m> {
        let keyword = message.keyword_text().map(str::trim);
        Subject {
            message,
            msg_type: fold(message.msg_type()),
            event: message.event().map(fold),
            keyword,
            keyword_folded: keyword.map(fold),
        }
    }

    pub fn message(&self) -> &'m Message {
        self.message
    }

    /// The raw value and, for case-folding fields, the folded one.
    fn value(&self, field: &Field) -> Option<(&str, &str)> {
        match field {
            Field::MsgType => Some((self.message.msg_type(), &self.msg_type)),
            Field::Event => Some((self.message.event()?, self.event.as_deref()?)),
            Field::Keyword => Some((self.keyword?, self.keyword_folded.as_deref()?)),
            Field::EventKey => self.message.text("EventKey").map(|v| (v, v)),
            Field::Status => self.message.text("Status").map(|v| (v, v)),
            Field::Path(p) => self.message.lookup(p).map(|v| (v, v)),
        }
    }
}

/// Regex captures: numbered groups by their number, named groups also by name.
pub type Captures = Vec<(String, String)>;

impl StrMatcher {
    /// Whether `raw`/`folded` match; a matching regex adds its groups to `captures`.
    fn matches(&self, raw: &str, folded: &str, captures: &mut Captures) -> bool {
        self.patterns.iter().any(|p| match p {
            Pattern::Exact(s) => folded == s,
            Pattern::Prefix(s) => folded.starts_with(s.as_str()),
            Pattern::Contains(s) => folded.contains(s.as_str()),
            Pattern::Regex(re) => match re.captures(raw) {
                Some(caps) => {
                    for (i, name) in re.capture_names().enumerate() {
                        if let Some(m) = caps.get(i) {
                            captures.push((i.to_string(), m.as_str().to_owned()));
                            if let Some(name) = name {
                                captures.push((name.to_owned(), m.as_str().to_owned()));
                            }
                        }
                    }
                    true
                }
                None => false,
            },
        })
    }

    /// The exact strings, when this matcher has nothing but exact patterns.
    fn exact_only(&self) -> Option<Vec<&str>> {
        self.patterns
            .iter()
            .map(|p| match p {
                Pattern::Exact(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl Criteria {
    fn matches(&self, subject: &Subject<'_>, captures: &mut Captures) -> bool {
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

    pub(crate) fn describe(&self, subject: &Subject<'_>) -> Vec<(String, bool)> {
        self.tests
            .iter()
            .map(|t| {
                let value = subject.value(&t.field);
                let held = value
                    .is_some_and(|(raw, folded)| t.matcher.matches(raw, folded, &mut Vec::new()));
                let shown = value.map_or("(absent)".to_owned(), |(raw, _)| format!("{raw:?}"));
                (format!("{} = {shown}", t.field.label()), held)
            })
            .collect()
    }
}

/// The rule that answers a message, and the captures of its regexes.
#[derive(Debug)]
pub struct Match<'r> {
    pub rule: &'r Rule,
    pub index: usize,
    pub captures: Captures,
}

/// Which rules can match, keyed by exact values. A rule sits in exactly one place: under
/// the most selective criterion that only has exact patterns, or in `rest`.
#[derive(Debug, Default)]
pub(crate) struct Index {
    keyword: HashMap<String, Vec<u32>>,
    event_key: HashMap<String, Vec<u32>>,
    event: HashMap<String, Vec<u32>>,
    msg_type: HashMap<String, Vec<u32>>,
    rest: Vec<u32>,
}

impl Index {
    pub(crate) fn build(rules: &[Rule]) -> Index {
        let mut index = Index::default();
        for (i, rule) in rules.iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            let anchor = [
                Field::Keyword,
                Field::EventKey,
                Field::Event,
                Field::MsgType,
            ]
            .into_iter()
            .find_map(|field| {
                let test = rule.when.tests.iter().find(|t| t.field == field)?;
                Some((field, test.matcher.exact_only()?))
            });
            let Some((field, keys)) = anchor else {
                index.rest.push(id);
                continue;
            };
            let map = match field {
                Field::Keyword => &mut index.keyword,
                Field::EventKey => &mut index.event_key,
                Field::Event => &mut index.event,
                _ => &mut index.msg_type,
            };
            for key in keys {
                let ids = map.entry(key.to_owned()).or_default();
                if ids.last() != Some(&id) {
                    ids.push(id);
                }
            }
        }
        index
    }

    /// The rules that may match, as ascending lists; every other rule cannot match.
    fn candidates<'a>(&'a self, subject: &Subject<'_>) -> [&'a [u32]; 5] {
        let get = |map: &'a HashMap<String, Vec<u32>>, key: Option<&str>| {
            key.and_then(|k| map.get(k)).map_or(&[][..], Vec::as_slice)
        };
        [
            get(&self.keyword, subject.keyword_folded.as_deref()),
            get(&self.event_key, subject.message.text("EventKey")),
            get(&self.event, subject.event.as_deref()),
            get(&self.msg_type, Some(&subject.msg_type)),
            &self.rest,
        ]
    }
}

impl RuleSet {
    /// The first rule in file order whose criteria all hold, with its captures.
    pub fn find(&self, subject: &Subject<'_>) -> Option<Match<'_>> {
        let mut lists = self.index.candidates(subject);
        let mut captures = Vec::new();
        // Merge the ascending candidate lists, trying rules in file order.
        loop {
            let (slot, id) = lists
                .iter()
                .enumerate()
                .filter_map(|(slot, list)| list.first().map(|&id| (slot, id)))
                .min_by_key(|&(_, id)| id)?;
            lists[slot] = &lists[slot][1..];
            let index = id as usize;
            let rule = self.rules.get(index)?;
            if rule.when.matches(subject, &mut captures) {
                return Some(Match {
                    rule,
                    index,
                    captures,
                });
            }
        }
    }

    /// The same answer as `find`, by trying every rule in order; the reference the index is
    /// tested against.
    pub fn find_linear(&self, subject: &Subject<'_>) -> Option<Match<'_>> {
        let mut captures = Vec::new();
        self.rules.iter().enumerate().find_map(|(index, rule)| {
            rule.when.matches(subject, &mut captures).then(|| Match {
                rule,
                index,
                captures: std::mem::take(&mut captures),
            })
        })
    }
}
