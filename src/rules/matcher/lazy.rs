//! `LazyRegex`: a rule's regex, checked and sized at load, compiled on first use. At load
//! only its syntax is parsed: the literals every match contains (for the index), and the
//! size of its compiled program, estimated (`size::program`) and counted by the budgets
//! (`rules::budget`). Compiled, a light regex takes the regex crate's full form; a heavy
//! one (`\w{12}` is some 250 KiB) a lean form of its forward program alone. Pure: no IO.

use std::sync::OnceLock;

use regex_automata::meta::{self, BuildError, Regex};
use regex_automata::util::syntax;
use regex_syntax::hir::{Hir, HirKind};

use super::size;

/// The longest regex pattern accepted, in bytes. A megabyte-long alternation took a second
/// to refuse at the size limit, at every load.
pub const MAX_REGEX_LEN: usize = 16 * 1024;

/// The size limit of one compiled regex's program (the regex crate's `size_limit`).
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Regexes whose estimated program is past this are compiled once at load, exactly, to
/// hold them to `REGEX_SIZE_LIMIT` (the estimate is generous: one near the limit may fit).
const EXACT_ABOVE: u64 = (REGEX_SIZE_LIMIT as u64) * 3 / 4;

/// Regexes whose program is past this take the lean form.
const LEAN_ABOVE: u64 = 64 << 10;

/// What a compiled regex takes for each byte of its forward program, by form: the full
/// form adds the reverse program (for the lazy DFA), some 2.2 times the forward one for a
/// class of every script, and more for a prefilter and a one-pass DFA (`FULL_EXTRA`); the
/// lean form has the forward program alone. Measured: `^re12-(\d+)$` 40 KiB full (2 KiB
/// of forward program), `^订单\s*(?P<order>\d{6,20})$` 104 KiB (26 KiB), `\w{12}` 657 KiB
/// full and 207 KiB lean.
const FULL_FACTOR: u64 = 4;
const FULL_EXTRA: u64 = 40 << 10;
const LEAN_FACTOR: u64 = 1;

/// The lazy DFA's cache of the full form, per search thread (the regex crate's default).
const DFA_CACHE: usize = 2 << 20;

/// At most this many literals per regex (case-insensitive letters multiply them).
const MAX_LITERALS: usize = 64;
/// Shorter literals would make a regex a candidate for too many messages.
const MIN_LITERAL: usize = 2;
/// The most parts of a concatenation tried for the literals further in.
const MAX_PARTS: usize = 16;

/// A regex whose syntax was checked at load, and its size estimated; compiled on first use.
///
/// Compiling costs from 0.1 ms and tens of KiB (`^订单(\d+)$`) to milliseconds and hundreds
/// of KiB (`^\w{12}z17\d{1,3}$`) per regex; a rule set of thousands would spend seconds
/// and gigabytes at every load on regexes that may never be tried. Keyword regexes are
/// found through the index, so a regex is only compiled once a message could match it
/// (for its captures). `wxrules check` compiles those that the estimate does not settle.
#[derive(Debug)]
pub(crate) struct LazyRegex {
    pattern: String,
    case_insensitive: bool,
    /// Literals one of which every match contains (starts with, or has further in: `z17`
    /// in `^\w{12}z17\d{1,3}$`), when there are few and none is short: the index finds
    /// such a regex with one automaton over all of them instead of asking a `RegexSet`.
    pub(super) literals: Option<Box<[Box<[u8]>]>>,
    /// Its forward program's size in bytes: estimated, or measured when it was compiled at
    /// load.
    program: u64,
    /// Whether `program` was measured (the regex compiled once at load).
    measured: bool,
    compiled: OnceLock<Option<Regex>>,
}

/// The form a regex is compiled in, by its program's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The regex crate's: lazy DFA, one-pass DFA, backtracker, PikeVM.
    Full,
    /// The forward program alone, searched by the backtracker or the PikeVM: a regex that
    /// only confirms a candidate the index found, and reads its captures, needs no more.
    Lean,
}

impl LazyRegex {
    /// Checks the syntax now; the error says what is wrong. `indexed`: the regex is a
    /// keyword's, found through the index, which needs the literals its matches contain.
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
        let mut lazy = LazyRegex {
            pattern: pattern.to_owned(),
            case_insensitive,
            literals: if indexed {
                required_literals(&hir)
            } else {
                None
            },
            program: size::program(&hir),
            measured: false,
            compiled: OnceLock::new(),
        };
        // One that may be near the size limit is compiled now, under the limit, so that one
        // too big is a load error (start-up, reload and `check` alike) rather than a worker
        // blocked on its first use and a rule that never matches. It is not kept: what a
        // load holds is the rules, not their compiled regexes.
        if lazy.program > EXACT_ABOVE {
            let compiled = lazy.build()?;
            lazy.program = compiled.memory_usage() as u64;
            lazy.measured = true;
        }
        Ok(lazy)
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the index finds it by literals (else it goes to a `RegexSet`).
    pub(crate) fn has_literals(&self) -> bool {
        self.literals.is_some()
    }

    /// The forward program's size, in bytes (estimated, or measured).
    pub(crate) fn program(&self) -> u64 {
        self.program
    }

    /// What the regex takes once compiled, in bytes: what the budgets count.
    pub(crate) fn cost(&self) -> u64 {
        match self.form() {
            Form::Full => self
                .program
                .saturating_mul(FULL_FACTOR)
                .saturating_add(FULL_EXTRA),
            Form::Lean => self.program.saturating_mul(LEAN_FACTOR),
        }
    }

    fn form(&self) -> Form {
        if self.program > LEAN_ABOVE {
            Form::Lean
        } else {
            Form::Full
        }
    }

    /// Compiles now, for `check`, unless the load already settled it (compiled near the
    /// limit, or estimated far below it): the error a later first use would meet.
    pub(crate) fn compile(&self) -> Result<(), String> {
        if self.measured || self.program <= EXACT_ABOVE {
            return Ok(());
        }
        self.build().map(drop)
    }

    fn build(&self) -> Result<Regex, String> {
        // The regex crate's own configuration (`RegexBuilder`), but for the size limit.
        let config = meta::Config::new()
            .match_kind(regex_automata::MatchKind::LeftmostFirst)
            .utf8_empty(true)
            .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
            .hybrid_cache_capacity(DFA_CACHE);
        let config = match self.form() {
            Form::Full => config,
            Form::Lean => config.hybrid(false).dfa(false).onepass(false),
        };
        meta::Builder::new()
            .configure(config)
            .syntax(
                syntax::Config::new()
                    .case_insensitive(self.case_insensitive)
                    .utf8(true),
            )
            .build(&self.pattern)
            .map_err(|e| build_error(&e))
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

    #[cfg(test)]
    pub(super) fn is_compiled(&self) -> bool {
        self.compiled.get().is_some()
    }
}

/// A build error in the regex crate's words (`Compiled regex exceeds size limit of …`).
fn build_error(error: &BuildError) -> String {
    match error.size_limit() {
        Some(limit) => format!("Compiled regex exceeds size limit of {limit} bytes."),
        None => last_line(&error.to_string()),
    }
}

/// regex errors draw the pattern over several lines; the last line says what is wrong.
pub(crate) fn last_line(text: &str) -> String {
    let last = text.lines().last().unwrap_or(text);
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

/// Literals one of which every match of `hir` contains, if usable for the index: those
/// every match starts with, else those of a part further in. `^\w{12}z17\d{1,3}$` starts
/// with any letter, but every match has `z17` in it.
fn required_literals(hir: &Hir) -> Option<Box<[Box<[u8]>]>> {
    let literals = prefixes(hir).or_else(|| inner(hir))?;
    Some(literals.into_iter().map(Vec::into_boxed_slice).collect())
}

/// The literals every match of `hir` starts with (regex-syntax's prefix extractor, the one
/// the regex crate's own prefilters use), if usable for the index.
fn prefixes(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    // Classes of more than a few characters (`[0-9]`, `\d`) are not expanded: after a
    // literal they only multiply it (`订单` followed by `\d{6}` would be a hundred
    // literals, past `MAX_LITERALS`, leaving the regex to a `RegexSet` compiled at load,
    // some 2 KB a regex), while the literal before them already picks out the candidates.
    // Case pairs (`[aA]`, two) are still expanded.
    let seq = regex_syntax::hir::literal::Extractor::new()
        .limit_class(4)
        .extract(hir);
    // `None`: some match can start with anything.
    let literals = seq.literals()?;
    let usable = !literals.is_empty()
        && literals.len() <= MAX_LITERALS
        && literals.iter().all(|l| l.as_bytes().len() >= MIN_LITERAL);
    usable.then(|| literals.iter().map(|l| l.as_bytes().to_vec()).collect())
}

/// The literals of a part of `hir` every match goes through, when its start has none: in a
/// concatenation, those every match of a later part starts with (the longest); through a
/// group, a repetition of at least one, or every branch of an alternation.
fn inner(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Capture(capture) => required(&capture.sub),
        HirKind::Repetition(rep) if rep.min > 0 => required(&rep.sub),
        HirKind::Concat(parts) => (1..parts.len().min(MAX_PARTS))
            .filter_map(|k| {
                let rest = parts.get(k..)?;
                prefixes(&Hir::concat(rest.to_vec())).or_else(|| inner(rest.first()?))
            })
            .max_by_key(|literals| {
                let shortest = literals.iter().map(Vec::len).min().unwrap_or(0);
                (shortest, std::cmp::Reverse(literals.len()))
            }),
        HirKind::Alternation(branches) => {
            let mut all = Vec::new();
            for branch in branches {
                all.extend(required(branch)?);
                if all.len() > MAX_LITERALS {
                    return None;
                }
            }
            Some(all)
        }
        _ => None,
    }
}

fn required(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    prefixes(hir).or_else(|| inner(hir))
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
        // Everyday regexes, and heavy ones that fit, stay lazy: nothing is compiled, and
        // nothing kept, until a message needs one.
        for pattern in [
            r"^订单\s*(?P<order>\d{6,20})$",
            r"^re12-(\d+)$",
            r"(?i)[a-z]{1,100}",
            r"\w{3}",
            r"^\w{17}z17\d{1,3}$",
        ] {
            let lazy = LazyRegex::new(pattern, true, true).unwrap();
            assert!(!lazy.is_compiled(), "{pattern}");
            assert_eq!(lazy.compile(), Ok(()), "{pattern}");
        }
        assert!(LazyRegex::new(r"\w{60}", true, false).is_err());
    }

    /// Light regexes take the regex crate's form, heavy ones the lean one; both find the
    /// same matches and captures.
    #[test]
    fn heavy_regexes_compile_lean_and_match_alike() {
        let light = LazyRegex::new(r"^订单\s*(?P<order>\d{6,20})$", true, true).unwrap();
        assert_eq!(light.form(), Form::Full);
        assert!(light.cost() < 256 << 10, "{}", light.cost());
        let heavy = LazyRegex::new(r"^\w{12}z(?P<n>\d{1,3})$", true, true).unwrap();
        assert_eq!(heavy.form(), Form::Lean);
        let re = heavy.get().unwrap();
        let mut caps = re.create_captures();
        re.captures("订单abcdefghijZ42", &mut caps);
        assert_eq!(caps.get_group_by_name("n").map(|s| s.range()), Some(17..19));
        assert!(!re.is_match("abcdefghijkz42"));
        // The program measured is within the estimate.
        assert!(
            re.memory_usage() as u64 <= heavy.cost() * 2,
            "{} vs {}",
            re.memory_usage(),
            heavy.cost()
        );
    }

    fn literals(pattern: &str) -> Option<Vec<String>> {
        LazyRegex::new(pattern, true, true)
            .unwrap()
            .literals
            .map(|p| {
                let mut all: Vec<String> = p
                    .iter()
                    .map(|l| String::from_utf8(l.to_vec()).unwrap())
                    .collect();
                all.sort();
                all
            })
    }

    #[test]
    fn regexes_with_long_enough_required_prefixes_get_them() {
        // Case-insensitive: every casing, including the Kelvin sign for `k`.
        assert_eq!(
            literals("^k1-(?P<n>\\d+)$"),
            Some(vec!["K1-".into(), "k1-".into(), "\u{212A}1-".into()])
        );
        assert_eq!(
            literals("订单|价格"),
            Some(vec!["价格".into(), "订单".into()])
        );
        // Too short, or no required part at all: left to the regex sets.
        assert_eq!(literals("^a"), None);
        assert_eq!(literals("\\d+"), None);
        assert_eq!(
            literals(".*ab"),
            Some(vec!["AB".into(), "Ab".into(), "aB".into(), "ab".into()])
        );
        assert_eq!(literals(".*a"), None);
        // An optional part: both starts, in every casing.
        let both = literals("(ab)?cd").unwrap();
        assert_eq!(both.len(), 20);
        assert!(both.contains(&"abcd".to_owned()) && both.contains(&"cD".to_owned()));
    }

    /// `^\w{12}z17\d{1,3}$` starts with any letter of any script: it went to a `RegexSet`
    /// compiled at load (a thousand such regexes took 7 s and 1.5 GB). Every match has
    /// `z17` in it, which the index now finds it by.
    #[test]
    fn regexes_without_a_prefix_are_found_by_a_literal_further_in() {
        assert_eq!(
            literals("^\\w{12}z17\\d{1,3}$"),
            Some(vec!["Z17".into(), "z17".into()])
        );
        assert_eq!(
            literals("(\\d+)-(订单|价格)\\s*(\\d+)"),
            Some(vec!["-价格".into(), "-订单".into()])
        );
        assert_eq!(
            literals("\\w+(订单\\d+)?x1"),
            Some(vec!["X1".into(), "x1".into()])
        );
        assert_eq!(literals("\\d+(ab|x\\d)"), None);
        assert_eq!(
            literals("(\\w+价格|\\d+订单)"),
            Some(vec!["价格".into(), "订单".into()])
        );
    }
}
