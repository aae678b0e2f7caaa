//! What a rule's `when` compiles to, and whether it holds for a message: `Criteria`, a
//! list of `Test`s (a `Field` and the `StrMatcher` of its patterns), and `LazyRegex`, a
//! regex checked at load and compiled on first use. Pure: no IO; what to try is the
//! index's business, not this file's.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

use super::{Captures, Subject};

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
    pub(super) prefixes: Option<Box<[Box<[u8]>]>>,
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
    pub(super) fn exact_only(&self) -> Option<Vec<&str>> {
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
    pub(super) fn matches(&self, subject: &Subject<'_>, captures: &mut Captures) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(a{1000}){1000}` or a megabyte alternation went live on SIGHUP (only the syntax was
    /// checked): RSS grew by up to 210 MB, the first matching push blocked a worker for a
    /// second, and the rule never matched. The loader now refuses them as `check` does.
    #[test]
    fn regexes_too_big_to_compile_are_refused_at_load() {
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
}
