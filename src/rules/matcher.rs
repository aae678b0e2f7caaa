//! Finds the first rule, in file order, whose criteria all hold for a message. Pure: no IO,
//! no allocation beyond lower-casing and the captures. The `Index` narrows the rules to try
//! by exact keyword, event key, event and message type, but the answer is always the one
//! that trying every rule in order would give.

use std::borrow::Cow;
use std::collections::HashMap as StdHashMap;

/// The index's maps. Their keys come from the rules file, not from requests: a request only
/// looks up, and cannot lengthen the probe chains of a map it does not fill, so a fast hash
/// (randomly seeded) is safe.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

use aho_corasick::AhoCorasick;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

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
    Exact(String),
    Prefix(String),
    Contains(String),
    Regex(Box<LazyRegex>),
}

/// A regex whose syntax was checked at load, compiled on first use.
///
/// Compiling costs about 0.1 ms and tens of KiB per regex; a rule set with thousands of
/// regexes would spend seconds and hundreds of MiB at every load on regexes that may never
/// be tried. Keyword regexes are found through the index's `RegexSet`, so a regex is only
/// compiled once a message could match it (for its captures). `wxrules check` compiles
/// them all.
#[derive(Debug)]
pub(crate) struct LazyRegex {
    pattern: String,
    case_insensitive: bool,
    /// Literals one of which every match starts with, when there are few and none is
    /// short: the index finds such a regex with one automaton over all of them instead of
    /// asking a `RegexSet`.
    prefixes: Option<Box<[Box<[u8]>]>>,
    compiled: OnceLock<Option<Regex>>,
}

/// At most this many prefix literals per regex (case-insensitive letters multiply them).
const MAX_PREFIXES: usize = 64;
/// Shorter prefixes would make a regex a candidate for too many messages.
const MIN_PREFIX: usize = 2;

/// The literals every match of `hir` starts with (regex-syntax's prefix extractor, the one
/// the regex crate's own prefilters use), if usable for the index.
fn required_prefixes(hir: &regex_syntax::hir::Hir) -> Option<Box<[Box<[u8]>]>> {
    // Classes of more than a few characters (`[0-9]`, `\d`) are not expanded: after a
    // literal they only multiply it (`订单` followed by `\d{6}` would be a hundred
    // literals, past `MAX_PREFIXES`, leaving the regex to a `RegexSet` compiled at load, some
    // 2 KB a regex), while the literal before them already picks out the candidates. Case
    // pairs (`[aA]`, two) are still expanded.
    let seq = regex_syntax::hir::literal::Extractor::new()
        .limit_class(4)
        .extract(hir);
    // `None`: some match can start with anything.
    let literals = seq.literals()?;
    let usable = !literals.is_empty()
        && literals.len() <= MAX_PREFIXES
        && literals.iter().all(|l| l.as_bytes().len() >= MIN_PREFIX);
    usable.then(|| literals.iter().map(|l| l.as_bytes().into()).collect())
}

/// The longest regex pattern accepted, in bytes. A megabyte-long alternation took a second
/// to refuse at the size limit, at every load.
pub const MAX_REGEX_LEN: usize = 16 * 1024;

/// Regexes heavier than this (`weight`) are compiled at load. Everyday keyword regexes
/// (`^订单\s*(\d{6,20})$`, 1,509) stay lazy; `(a{1000}){1000}` (two million) does not.
/// Measured, a unit of weight compiles to 30-odd bytes (`\w{40}`, 32,800, is over the
/// 1 MiB limit); below this bound a lazy regex is far from the limit.
const EAGER_WEIGHT: u64 = 2_000;

/// A rough, generous measure of what `hir` compiles to: literal bytes, class ranges, each
/// bounded repetition counted as many times as it can repeat. Cheap: one walk of the HIR.
fn weight(hir: &regex_syntax::hir::Hir) -> u64 {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 1,
        HirKind::Literal(literal) => literal.0.len() as u64,
        HirKind::Class(Class::Unicode(class)) => class.ranges().len() as u64,
        HirKind::Class(Class::Bytes(class)) => class.ranges().len() as u64,
        HirKind::Repetition(rep) => {
            let copies = u64::from(rep.max.unwrap_or(rep.min).max(rep.min)) + 1;
            weight(&rep.sub).saturating_mul(copies)
        }
        HirKind::Capture(capture) => weight(&capture.sub),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().map(weight).fold(0, u64::saturating_add)
        }
    }
}

/// The size limit of one compiled regex.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl LazyRegex {
    /// The pattern as written.
    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }
    /// Checks the syntax now; the error says what is wrong. `indexed`: the regex is a
    /// keyword's, found through the index, which needs its required prefixes.
    pub(crate) fn new(
        pattern: &str,
        case_insensitive: bool,
        indexed: bool,
    ) -> Result<LazyRegex, String> {
        if pattern.len() > MAX_REGEX_LEN {
            return Err(format!(
                "the pattern is {} bytes, over the limit of {MAX_REGEX_LEN}; a long list of words is a keyword list, not a regex",
                pattern.len()
            ));
        }
        let hir = regex_syntax::ParserBuilder::new()
            .case_insensitive(case_insensitive)
            .build()
            .parse(pattern)
            .map_err(|e| last_line(&e.to_string()))?;
        let lazy = LazyRegex {
            pattern: pattern.to_owned(),
            case_insensitive,
            prefixes: if indexed {
                required_prefixes(&hir)
            } else {
                None
            },
            compiled: OnceLock::new(),
        };
        // A regex that may be big is compiled now, under the size limit, so that one too big
        // is a load error (start-up, reload and `check` alike) rather than a worker blocked
        // on its first use and a rule that never matches. The rest stay lazy.
        if weight(&hir) > EAGER_WEIGHT {
            let compiled = lazy.build()?;
            let _ = lazy.compiled.set(Some(compiled));
        }
        Ok(lazy)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Compiles now, for `check`: the error a later first use would meet.
    pub(crate) fn compile(&self) -> Result<(), String> {
        self.build().map(drop)
    }

    fn build(&self) -> Result<Regex, String> {
        RegexBuilder::new(&self.pattern)
            .case_insensitive(self.case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| last_line(&e.to_string()))
    }

    /// The compiled regex; `None` (never matching) if it is too big to compile, which
    /// `check` reports and the log says once.
    pub(crate) fn get(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| match self.build() {
                Ok(re) => Some(re),
                Err(error) => {
                    tracing::error!(event = "regex_compile_failed", pattern = %self.pattern, %error);
                    None
                }
            })
            .as_ref()
    }
}

/// regex errors draw the pattern over several lines; the last line says what is wrong.
pub(crate) fn last_line(text: &str) -> String {
    let last = text.lines().last().unwrap_or(text);
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
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
    /// The keyword text (`Content`, else `Recognition`) folded but for case
    /// (`rules::fold::normal`): what regexes see.
    keyword: Option<Cow<'m, str>>,
    /// The same, ASCII-lowercased: what literal keywords are compared with.
    keyword_folded: Option<Cow<'m, str>>,
    /// The moment rules' `active` windows are evaluated at (unix seconds).
    now: u64,
}

fn fold(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl<'m> Subject<'m> {
    /// The subject of `message` now, by the system's clock.
    pub fn new(message: &'m Message) -> Subject<'m> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Subject::at(message, now)
    }

    /// The subject of `message` at `now` (unix seconds): the server's injected clock,
    /// `explain --at`, a test case's `at:`.
    pub fn at(message: &'m Message, now: u64) -> Subject<'m> {
        let keyword = message.keyword_text().map(super::fold::normal);
        let keyword_folded = keyword.as_deref().map(|k| match fold(k) {
            Cow::Borrowed(_) => match &keyword {
                // Nothing to lowercase: share the normal form (borrowed from the message
                // when that is borrowed too).
                Some(Cow::Borrowed(b)) => Cow::Borrowed(*b),
                _ => Cow::Owned(k.to_owned()),
            },
            Cow::Owned(lower) => Cow::Owned(lower),
        });
        Subject {
            message,
            msg_type: fold(message.msg_type()),
            event: message.event().map(fold),
            keyword,
            keyword_folded,
            now,
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
            Field::Keyword => Some((self.keyword.as_deref()?, self.keyword_folded.as_deref()?)),
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
            Pattern::Regex(lazy) => match lazy.get().and_then(|re| Some((re, re.captures(raw)?))) {
                Some((re, caps)) => {
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

    /// Each criterion in words, without a message: `keyword is 价格 or price`,
    /// `event_key matches /^qrscene_(.+)$/`; in Chinese with `Words::Zh`
    /// (`关键词 是 价格 或 price`).
    pub(crate) fn words(&self, lang: Words) -> Vec<String> {
        self.tests
            .iter()
            .map(|t| {
                // `is 价格 or price or starts with 订单`: a verb once for a run of its kind.
                let mut alternatives: Vec<String> = Vec::new();
                let mut last_verb = "";
                for p in &t.matcher.patterns {
                    let (verb, value) = match p {
                        Pattern::Exact(v) => (lang.pick("is", "是"), v.clone()),
                        Pattern::Prefix(v) => (lang.pick("starts with", "开头是"), v.clone()),
                        Pattern::Contains(v) => (lang.pick("contains", "包含"), v.clone()),
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
                    (Words::Zh, Field::Path(p)) => format!("字段 {p}").into(),
                };
                format!("{field} {}", alternatives.join(lang.pick(" or ", " 或 ")))
            })
            .collect()
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

/// Which rules can match a message, so that `find` only tries those.
///
/// A rule with a `keyword` criterion is filed under each of its keyword patterns: exact ones
/// in a hash map, prefixes and substrings in one Aho-Corasick automaton, regexes in small
/// `RegexSet`. Any other rule is filed under its most selective criterion that has only
/// exact patterns (event key, event, message type), or in `rest`. A rule can only match
/// a message that finds it through one of these, so the candidates, tried in file order,
/// give the same first match as trying every rule.
#[derive(Debug, Default)]
pub(crate) struct Index {
    keyword: HashMap<String, Vec<u32>>,
    /// Prefix and substring keywords (case-folded), each literal once, with its rules.
    partial: Literals<(u32, PartialKind)>,
    /// The required prefixes of keyword regexes. A rule found is a candidate: its regex
    /// decides.
    prefixes: Literals<u32>,
    /// The other keyword regexes, in sets of `REGEX_CHUNK`: pattern j of set k belongs to
    /// rule `regex_rules[k * REGEX_CHUNK + j]`.
    regexes: Vec<RegexSet>,
    regex_rules: Vec<u32>,
    event_key: HashMap<String, Vec<u32>>,
    event: HashMap<String, Vec<u32>>,
    msg_type: HashMap<String, Vec<u32>>,
    rest: Vec<u32>,
}

/// Keyword regexes per `RegexSet`.
const REGEX_CHUNK: usize = 64;

/// Literals searched with one Aho-Corasick automaton, each literal once, with what it
/// belongs to. Rules often share a literal (`contains: 优惠` in many rules, or regexes all
/// starting `^价格`): one pattern per rule would report every occurrence once per rule, and
/// a message repeating the literal would cost occurrences × rules.
#[derive(Debug)]
struct Literals<T> {
    automaton: Option<AhoCorasick>,
    /// Literal i belongs to `owners[starts[i]..starts[i + 1]]`, in file order.
    starts: Vec<usize>,
    owners: Vec<T>,
}

impl<T> Default for Literals<T> {
    fn default() -> Self {
        Literals {
            automaton: None,
            starts: Vec::new(),
            owners: Vec::new(),
        }
    }
}

impl<T: Copy> Literals<T> {
    /// One automaton over the distinct literals of `entries`. `Err` gives back every owner
    /// when the automaton cannot be built (too many patterns).
    fn build(entries: Vec<(&[u8], T)>) -> Result<Literals<T>, Vec<T>> {
        if entries.is_empty() {
            return Ok(Literals::default());
        }
        let mut ids: HashMap<&[u8], usize> = HashMap::default();
        let mut patterns: Vec<&[u8]> = Vec::new();
        let mut owned: Vec<(usize, T)> = Vec::with_capacity(entries.len());
        for (literal, owner) in entries {
            let id = *ids.entry(literal).or_insert_with(|| {
                patterns.push(literal);
                patterns.len() - 1
            });
            owned.push((id, owner));
        }
        // Stable: each literal's owners stay in file order.
        owned.sort_by_key(|&(id, _)| id);
        let mut starts = Vec::with_capacity(patterns.len() + 1);
        for (at, &(id, _)) in owned.iter().enumerate() {
            while starts.len() <= id {
                starts.push(at);
            }
        }
        starts.push(owned.len());
        let owners: Vec<T> = owned.into_iter().map(|(_, owner)| owner).collect();
        match AhoCorasick::new(&patterns) {
            Ok(automaton) => Ok(Literals {
                automaton: Some(automaton),
                starts,
                owners,
            }),
            Err(_) => Err(owners),
        }
    }

    fn owners_of(&self, literal: usize) -> &[T] {
        match (self.starts.get(literal), self.starts.get(literal + 1)) {
            (Some(&from), Some(&to)) => self.owners.get(from..to).unwrap_or_default(),
            _ => &[],
        }
    }

    /// The literals found in `haystack`, each once, with whether it was found at the
    /// start: an overlapping search reports every occurrence, kept bounded here.
    fn found_in(&self, haystack: &str) -> Vec<(usize, bool)> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let mut hits: Vec<(usize, bool)> = Vec::new();
        let mut compact_at = 1024;
        for m in automaton.find_overlapping_iter(haystack) {
            hits.push((m.pattern().as_usize(), m.start() == 0));
            if hits.len() >= compact_at {
                hits.sort_unstable();
                hits.dedup();
                compact_at = (hits.len() * 2).max(1024);
            }
        }
        hits.sort_unstable();
        hits.dedup();
        hits
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartialKind {
    Prefix,
    Contains,
}

/// The candidates of one message: sorted rule ids from each part of the index.
pub(crate) struct Candidates<'a> {
    lists: [&'a [u32]; 5],
    /// Rules found by the automaton and the regex set, sorted and unique.
    found: Vec<u32>,
    next_found: usize,
}

impl Index {
    pub(crate) fn build(rules: &[Rule]) -> Index {
        let mut index = Index::default();
        let mut partial_patterns: Vec<(&[u8], (u32, PartialKind))> = Vec::new();
        let mut regex_patterns: Vec<&str> = Vec::new();
        let mut prefix_patterns: Vec<(&[u8], u32)> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(test) = rule.when.tests.iter().find(|t| t.field == Field::Keyword) {
                // An empty prefix matches everything: such a rule is tried for every message.
                let empty = test.matcher.patterns.iter().any(
                    |p| matches!(p, Pattern::Prefix(s) | Pattern::Contains(s) if s.is_empty()),
                );
                if !empty {
                    for pattern in &test.matcher.patterns {
                        match pattern {
                            Pattern::Exact(s) => {
                                push_unique(index.keyword.entry(s.clone()).or_default(), id)
                            }
                            Pattern::Prefix(s) => {
                                partial_patterns.push((s.as_bytes(), (id, PartialKind::Prefix)));
                            }
                            Pattern::Contains(s) => {
                                partial_patterns.push((s.as_bytes(), (id, PartialKind::Contains)));
                            }
                            Pattern::Regex(re) => match &re.prefixes {
                                Some(prefixes) => {
                                    for prefix in prefixes.iter() {
                                        prefix_patterns.push((prefix, id));
                                    }
                                }
                                None => {
                                    regex_patterns.push(re.as_str());
                                    index.regex_rules.push(id);
                                }
                            },
                        }
                    }
                    continue;
                }
            }
            let anchor = [Field::EventKey, Field::Event, Field::MsgType]
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
                Field::EventKey => &mut index.event_key,
                Field::Event => &mut index.event,
                _ => &mut index.msg_type,
            };
            for key in keys {
                push_unique(map.entry(key.to_owned()).or_default(), id);
            }
        }
        match Literals::build(partial_patterns) {
            Ok(partial) => index.partial = partial,
            Err(owners) => index.unindex(owners.into_iter().map(|(id, _)| id).collect()),
        }
        match Literals::build(prefix_patterns) {
            Ok(prefixes) => index.prefixes = prefixes,
            Err(owners) => index.unindex(owners),
        }
        // Keyword regexes are compiled case-insensitive; the sets must agree. One set of
        // thousands of patterns outgrows its lazy DFA and falls back to the PikeVM (tens of
        // µs per message); small sets stay on the DFA, and `is_match` on each is ~100 ns.
        let sets: Result<Vec<RegexSet>, _> = regex_patterns
            .chunks(REGEX_CHUNK)
            .map(|chunk| {
                RegexSetBuilder::new(chunk)
                    .case_insensitive(true)
                    .size_limit(64 << 20)
                    .build()
            })
            .collect();
        match sets {
            Ok(sets) => index.regexes = sets,
            Err(_) => index.unindex_regexes(),
        }
        index
    }

    fn unindex_regexes(&mut self) {
        let ids = std::mem::take(&mut self.regex_rules);
        self.unindex(ids);
    }

    /// Too many patterns for one automaton: those rules are tried for every message.
    fn unindex(&mut self, ids: Vec<u32>) {
        self.rest.extend(ids);
        self.rest.sort_unstable();
        self.rest.dedup();
    }

    /// The earlier rules that may answer some message `rule` matches: those filed under
    /// one of its exact values, and those filed under none. Sorted and unique.
    pub(crate) fn coverers(&self, rule: &Rule) -> Vec<usize> {
        let mut ids: Vec<u32> = self.rest.clone();
        // Prefix, substring and regex keyword rules can cover exact or narrower keywords.
        ids.extend(self.partial.owners.iter().map(|(id, _)| *id));
        ids.extend(self.regex_rules.iter().copied());
        ids.extend(self.prefixes.owners.iter().copied());
        for test in &rule.when.tests {
            let map = match test.field {
                Field::Keyword => &self.keyword,
                Field::EventKey => &self.event_key,
                Field::Event => &self.event,
                Field::MsgType => &self.msg_type,
                _ => continue,
            };
            for key in test.matcher.exact_only().unwrap_or_default() {
                ids.extend(map.get(key).into_iter().flatten());
            }
        }
        // A rule filed under msg_type covers rules that only imply their type.
        if !rule.when.tests.iter().any(|t| t.field == Field::MsgType) {
            for ty in ["text", "voice", "event"] {
                ids.extend(self.msg_type.get(ty).into_iter().flatten());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|i| i as usize).collect()
    }

    /// The rules that may match `subject`; every other rule cannot match it.
    fn candidates<'a>(&'a self, subject: &Subject<'_>) -> Candidates<'a> {
        let get = |map: &'a HashMap<String, Vec<u32>>, key: Option<&str>| {
            key.and_then(|k| map.get(k)).map_or(&[][..], Vec::as_slice)
        };
        let mut found = Vec::new();
        if let Some(folded) = subject.keyword_folded.as_deref() {
            for (literal, at_start) in self.partial.found_in(folded) {
                for &(id, kind) in self.partial.owners_of(literal) {
                    if kind == PartialKind::Contains || at_start {
                        found.push(id);
                    }
                }
            }
        }
        if let Some(raw) = subject.keyword.as_deref() {
            for (literal, _) in self.prefixes.found_in(raw) {
                found.extend_from_slice(self.prefixes.owners_of(literal));
            }
        }
        if let Some(raw) = subject.keyword.as_deref() {
            for (k, set) in self.regexes.iter().enumerate() {
                if set.is_match(raw) {
                    found.extend(
                        set.matches(raw)
                            .into_iter()
                            .filter_map(|j| self.regex_rules.get(k * REGEX_CHUNK + j).copied()),
                    );
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        Candidates {
            lists: [
                get(&self.keyword, subject.keyword_folded.as_deref()),
                get(&self.event_key, subject.message.text("EventKey")),
                get(&self.event, subject.event.as_deref()),
                get(&self.msg_type, Some(&subject.msg_type)),
                &self.rest,
            ],
            found,
            next_found: 0,
        }
    }
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}

impl Iterator for Candidates<'_> {
    type Item = u32;

    /// The next candidate in file order: the smallest head of the sorted lists. A keyword
    /// rule with exact and partial patterns can be both listed and found; it comes once.
    fn next(&mut self) -> Option<u32> {
        let found = self.found.get(self.next_found).copied();
        let listed = self
            .lists
            .iter()
            .enumerate()
            .filter_map(|(slot, list)| list.first().map(|&id| (slot, id)))
            .min_by_key(|&(_, id)| id);
        match (found, listed) {
            (Some(f), Some((_, l))) if f < l => {
                self.next_found += 1;
                Some(f)
            }
            (Some(f), None) => {
                self.next_found += 1;
                Some(f)
            }
            (f, Some((slot, l))) => {
                self.lists[slot] = &self.lists[slot][1..];
                if f == Some(l) {
                    self.next_found += 1;
                }
                Some(l)
            }
            (None, None) => None,
        }
    }
}

impl RuleSet {
    /// The first rule in file order whose criteria all hold, with its captures.
    pub fn find(&self, subject: &Subject<'_>) -> Option<Match<'_>> {
        self.find_skipping(subject, &[])
    }

    /// `find`, passing over the rules at `skip` (indexes): those cooling down for this user.
    pub fn find_skipping(&self, subject: &Subject<'_>, skip: &[usize]) -> Option<Match<'_>> {
        let mut captures = Vec::new();
        for id in self.index.candidates(subject) {
            let index = id as usize;
            if skip.contains(&index) {
                continue;
            }
            let rule = self.rules.get(index)?;
            if rule.active.as_ref().is_some_and(|a| !a.holds(subject.now)) {
                continue;
            }
            if rule.when.matches(subject, &mut captures) {
                return Some(Match {
                    rule,
                    index,
                    captures,
                });
            }
        }
        None
    }

    /// The same answer as `find`, by trying every rule in order; the reference the index is
    /// tested against.
    pub fn find_linear(&self, subject: &Subject<'_>) -> Option<Match<'_>> {
        let mut captures = Vec::new();
        self.rules.iter().enumerate().find_map(|(index, rule)| {
            let live = rule.active.as_ref().is_none_or(|a| a.holds(subject.now));
            (live && rule.when.matches(subject, &mut captures)).then(|| Match {
                rule,
                index,
                captures: std::mem::take(&mut captures),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    /// `(a{1000}){1000}` or a megabyte alternation went live on SIGHUP (only the syntax was
    /// checked): RSS grew by up to 210 MB, the first matching push blocked a worker for a
    /// second, and the rule never matched. The loader now refuses them as `check` does.
    #[test]
    fn regexes_too_big_to_compile_are_refused_at_load() {
        use super::LazyRegex;
        let err = LazyRegex::new("(a{1000}){1000}", true, true).unwrap_err();
        assert_eq!(err, "Compiled regex exceeds size limit of 1048576 bytes.");
        let err = LazyRegex::new(r"\w{1000}\w{1000}", true, false).unwrap_err();
        assert_eq!(err, "Compiled regex exceeds size limit of 1048576 bytes.");
        let words: Vec<String> = (0..100_000).map(|i| format!("word{i}")).collect();
        let err = LazyRegex::new(&words.join("|"), true, true).unwrap_err();
        assert!(
            err.starts_with("the pattern is 988889 bytes, over the limit of 16384"),
            "{err}"
        );
        // Everyday regexes stay lazy: nothing compiled until a message needs one.
        for pattern in [
            r"^订单\s*(?P<order>\d{6,20})$",
            r"^re12-(\d+)$",
            r"(?i)[a-z]{1,100}",
        ] {
            let lazy = LazyRegex::new(pattern, true, true).unwrap();
            assert!(lazy.compiled.get().is_none(), "{pattern}");
        }
        // A heavy one that fits is compiled once, at load; one that does not is an error.
        let heavy = LazyRegex::new(r"\w{3}", true, false).unwrap();
        assert!(matches!(heavy.compiled.get(), Some(Some(_))));
        assert!(LazyRegex::new(r"\w{40}", true, false).is_err());
    }

    #[test]
    fn shared_literals_are_searched_once_and_report_each_owner_once() {
        let entries: Vec<(&[u8], u32)> = (0..2000)
            .map(|id| ("订单".as_bytes(), id))
            .chain([("价格".as_bytes(), 7)])
            .collect();
        let literals = Literals::build(entries).unwrap();
        assert_eq!(literals.owners_of(0).len(), 2000);
        assert_eq!(literals.owners_of(1), &[7]);
        // 20,000 occurrences: one hit anywhere and one at the start, not 20,000 × 2,000.
        let hits = literals.found_in(&"订单".repeat(20_000));
        assert_eq!(hits, vec![(0, false), (0, true)]);
        assert_eq!(literals.found_in("x价格"), vec![(1, false)]);
        assert!(literals.found_in("nothing").is_empty());
    }

    #[test]
    fn regexes_with_long_enough_required_prefixes_get_them() {
        let prefixes = |pattern: &str| {
            LazyRegex::new(pattern, true, true)
                .unwrap()
                .prefixes
                .map(|p| {
                    let mut all: Vec<String> = p
                        .iter()
                        .map(|l| String::from_utf8(l.to_vec()).unwrap())
                        .collect();
                    all.sort();
                    all
                })
        };
        // Case-insensitive: every casing, including the Kelvin sign for `k`.
        assert_eq!(
            prefixes("^k1-(?P<n>\\d+)$"),
            Some(vec!["K1-".into(), "k1-".into(), "\u{212A}1-".into()])
        );
        assert_eq!(
            prefixes("订单|价格"),
            Some(vec!["价格".into(), "订单".into()])
        );
        // Too short, or no required start at all: left to the regex sets.
        assert_eq!(prefixes("^a"), None);
        assert_eq!(prefixes("\\d+"), None);
        assert_eq!(prefixes(".*ab"), None);
        // An optional part: both starts, in every casing.
        let both = prefixes("(ab)?cd").unwrap();
        assert_eq!(both.len(), 20);
        assert!(both.contains(&"abcd".to_owned()) && both.contains(&"cD".to_owned()));
    }

    use super::*;
    use crate::rules::compile::compile_yaml;

    fn text(content: &str) -> String {
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>text</MsgType>\
             <Content><![CDATA[{content}]]></Content><MsgId>1</MsgId></xml>"
        )
    }

    fn event(name: &str, extra: &str) -> String {
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>{name}</Event>{extra}</xml>"
        )
    }

    /// Compiles `when` (one rule named `r`, behind a rule that never matches so that file
    /// order is exercised too) and checks whether `xml` matches it, and with which captures.
    fn check(when: &str, xml: &str, expect: Option<&[(&str, &str)]>) {
        let yaml = format!(
            "rules:\n  - name: never\n    when: {{ msg_type: never }}\n    ignore: true\n  \
             - name: r\n    when: {when}\n    ignore: true\n"
        );
        let rules = compile_yaml(&yaml).unwrap_or_else(|e| panic!("{when}: {e}"));
        let message = Message::parse(xml.as_bytes()).unwrap();
        let subject = Subject::new(&message);
        let found = rules.find(&subject);
        let linear = rules.find_linear(&subject);
        assert_eq!(
            found.as_ref().map(|m| (m.index, &m.captures)),
            linear.as_ref().map(|m| (m.index, &m.captures)),
            "index and linear scan disagree for {when}"
        );
        let got = found.map(|m| {
            assert_eq!(m.rule.name(), "r");
            m.captures
        });
        let expect = expect.map(|caps| {
            caps.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, expect, "when: {when}\nxml: {xml}");
    }

    const HIT: Option<&[(&str, &str)]> = Some(&[]);

    #[test]
    fn exact_keyword_is_trimmed_and_ignores_ascii_case() {
        check("{ keyword: price }", &text("price"), HIT);
        check("{ keyword: price }", &text("  PRICE\n"), HIT);
        check("{ keyword: Price }", &text("price"), HIT);
        check("{ keyword: price }", &text("prices"), None);
        check("{ keyword: 价格 }", &text("价格"), HIT);
        check("{ keyword: \" 价格 \" }", &text("价格"), HIT);
        check("{ keyword: { exact: [a, b] } }", &text("B"), HIT);
    }

    #[test]
    fn a_list_is_any_of() {
        check("{ keyword: [价格, price] }", &text("price"), HIT);
        check("{ keyword: [价格, price] }", &text("价格"), HIT);
        check("{ keyword: [价格, price] }", &text("cost"), None);
        check("{ keyword: [a, { prefix: x }] }", &text("xyz"), HIT);
    }

    #[test]
    fn prefix_and_contains() {
        check("{ keyword: { prefix: 订单 } }", &text("订单 123"), HIT);
        check("{ keyword: { prefix: 订单 } }", &text("我的订单"), None);
        check(
            "{ keyword: { contains: [优惠, 折扣] } }",
            &text("有折扣吗"),
            HIT,
        );
        check(
            "{ keyword: { contains: COUPON } }",
            &text("any coupon?"),
            HIT,
        );
        check("{ keyword: { contains: 优惠 } }", &text("价格"), None);
        check(
            "{ event_key: { prefix: qrscene_ } }",
            &event("subscribe", "<EventKey>qrscene_7</EventKey>"),
            HIT,
        );
        check(
            "{ event_key: { prefix: qrscene_ } }",
            &event("subscribe", "<EventKey>last_trade_no_1</EventKey>"),
            None,
        );
    }

    #[test]
    fn regex_searches_unless_anchored_and_captures() {
        check(
            "{ keyword: { regex: '^订单\\s*(?P<order>\\d{6,20})$' } }",
            &text("订单 123456"),
            Some(&[("0", "订单 123456"), ("1", "123456"), ("order", "123456")]),
        );
        check(
            "{ keyword: { regex: '^订单\\s*(\\d{6,20})$' } }",
            &text("我的订单 123456"),
            None,
        );
        check(
            "{ keyword: { regex: '\\d{3}' } }",
            &text("ab 123 cd"),
            Some(&[("0", "123")]),
        );
        check(
            "{ keyword: { regex: '^hello$' } }",
            &text("HELLO"),
            Some(&[("0", "HELLO")]),
        );
        check(
            "{ keyword: { regex: ['^x(\\d)$', '^y(\\d)$'] } }",
            &text("y7"),
            Some(&[("0", "y7"), ("1", "7")]),
        );
        // An optional group that did not take part is absent, not empty.
        check(
            "{ keyword: { regex: '^a(b)?$' } }",
            &text("a"),
            Some(&[("0", "a")]),
        );
    }

    #[test]
    fn msg_type_and_event_ignore_case_event_key_and_status_do_not() {
        check("{ msg_type: TEXT }", &text("x"), HIT);
        check("{ msg_type: [image, text] }", &text("x"), HIT);
        check("{ event: scan }", &event("SCAN", ""), HIT);
        check("{ event: SUBSCRIBE }", &event("subscribe", ""), HIT);
        check(
            "{ event_key: contact_us }",
            &event("CLICK", "<EventKey>CONTACT_US</EventKey>"),
            None,
        );
        check(
            "{ event_key: CONTACT_US }",
            &event("CLICK", "<EventKey>CONTACT_US</EventKey>"),
            HIT,
        );
        check(
            "{ status: \"failed:user block\" }",
            &event(
                "TEMPLATESENDJOBFINISH",
                "<Status>failed:user block</Status>",
            ),
            HIT,
        );
        check(
            "{ status: \"failed: system failed\" }",
            &event(
                "TEMPLATESENDJOBFINISH",
                "<Status>failed:user block</Status>",
            ),
            None,
        );
        check(
            "{ status: success }",
            &event("TEMPLATESENDJOBFINISH", "<Status>Success</Status>"),
            None,
        );
    }

    #[test]
    fn yaml_numbers_match_as_text() {
        check(
            "{ event_key: 123 }",
            &event("SCAN", "<EventKey>123</EventKey>"),
            HIT,
        );
        check("{ keyword: [1, 2.5, true] }", &text("2.5"), HIT);
    }

    #[test]
    fn keyword_reads_voice_recognition_and_nothing_else() {
        let voice = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>voice</MsgType><MediaId>m</MediaId>\
             <Recognition><![CDATA[价格]]></Recognition></xml>";
        check("{ keyword: 价格 }", voice, HIT);
        check(
            "{ keyword: { regex: '.*' } }",
            &event("subscribe", ""),
            None,
        );
        check(
            "{ msg_type: event, keyword: { prefix: '' } }",
            &event("subscribe", ""),
            None,
        );
    }

    #[test]
    fn fields_reach_nested_and_listed_values() {
        let scan = event(
            "scancode_waitmsg",
            "<ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>https://x</ScanResult></ScanCodeInfo>\
             <SendPicsInfo><PicList><item><PicMd5Sum>abc</PicMd5Sum></item></PicList></SendPicsInfo>",
        );
        check("{ fields: { ScanCodeInfo.ScanType: qrcode } }", &scan, HIT);
        check(
            "{ fields: { ScanCodeInfo.ScanResult: { prefix: 'https://' } } }",
            &scan,
            HIT,
        );
        check(
            "{ fields: { SendPicsInfo.PicList.0.PicMd5Sum: abc } }",
            &scan,
            HIT,
        );
        check("{ fields: { ScanCodeInfo.Missing: x } }", &scan, None);
        check("{ fields: { ScanCodeInfo: x } }", &scan, None);
        // Field values keep their case.
        check("{ fields: { ScanCodeInfo.ScanType: QRCODE } }", &scan, None);
    }

    #[test]
    fn all_criteria_must_hold() {
        let sub = event("subscribe", "<EventKey>qrscene_9</EventKey>");
        check(
            "{ event: subscribe, event_key: { prefix: qrscene_ } }",
            &sub,
            HIT,
        );
        check(
            "{ event: SCAN, event_key: { prefix: qrscene_ } }",
            &sub,
            None,
        );
        check("{ event: subscribe, event_key: other }", &sub, None);
        check("{}", &sub, HIT);
    }

    #[test]
    fn first_rule_in_file_order_wins_across_index_buckets() {
        let yaml = "rules:\n\
            - { name: catch-text, when: { msg_type: text }, ignore: true }\n\
            - { name: exact, when: { keyword: price }, ignore: true }\n\
            - { name: any, when: {}, ignore: true }\n";
        let rules = compile_yaml(yaml).unwrap();
        let xml = text("price");
        let message = Message::parse(xml.as_bytes()).unwrap();
        let found = rules.find(&Subject::new(&message)).unwrap();
        assert_eq!(found.rule.name(), "catch-text");
        let xml = event("CLICK", "");
        let message = Message::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            rules.find(&Subject::new(&message)).unwrap().rule.name(),
            "any"
        );
    }

    #[test]
    fn index_finds_exact_keywords_among_thousands() {
        let mut yaml = String::from("rules:\n");
        for i in 0..5000 {
            yaml.push_str(&format!(
                "  - {{ name: k{i}, when: {{ keyword: kw{i} }}, ignore: true }}\n"
            ));
        }
        yaml.push_str("  - { name: tail, when: { keyword: { contains: kw } }, ignore: true }\n");
        let rules = compile_yaml(&yaml).unwrap();
        for (content, rule) in [
            ("kw0", "k0"),
            ("KW4999", "k4999"),
            ("kw5000", "tail"),
            ("x", ""),
        ] {
            let xml = text(content);
            let message = Message::parse(xml.as_bytes()).unwrap();
            let subject = Subject::new(&message);
            let found = rules.find(&subject).map(|m| m.rule.name().to_owned());
            assert_eq!(found.as_deref().unwrap_or(""), rule);
            assert_eq!(
                found,
                rules
                    .find_linear(&subject)
                    .map(|m| m.rule.name().to_owned())
            );
        }
    }
}
