//! What a regex's forward program takes compiled, estimated from its syntax tree at load
//! without compiling the regex: regex-automata's Thompson automaton (the regex crate's)
//! has a state per literal byte and per group, split or look-around, a class is the UTF-8
//! automaton of its ranges, and a bounded repetition is that many copies of what it
//! repeats. A class of many ranges (`\w`, `\d`, `\pL`: all of Unicode's) is measured
//! instead, compiled alone once per process (`\w` is some 18 KiB). Generous by design: the
//! test holds the estimate above what the compiler makes, on regexes of every shape.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;
use regex_automata::nfa::thompson;
use regex_syntax::hir::{Class, ClassUnicode, Hir, HirKind};

/// Bytes per automaton state (the state and its slot in the state list).
const STATE: u64 = 32;
/// Bytes per transition of a state (a byte range and its target).
const TRANSITION: u64 = 8;
/// What every program has besides its states: the start states, the byte classes, the
/// unanchored prefix `(?s-u:.)*?`, the group names.
const BASE: u64 = 2 << 10;
/// A measured class is counted this much bigger than it compiled alone (in eighths): its
/// copies in a repetition compile a little differently.
const MEASURED_MARGIN: u64 = 10;

/// Classes of more ranges than this are measured rather than counted.
const MEASURED_RANGES: usize = 8;
/// The most classes measured and remembered by a process (each a few bytes): past it, a
/// new class is counted.
const MEASURED_KEPT: usize = 4096;

/// The estimated size in bytes of `hir`'s forward program.
pub(super) fn program(hir: &Hir) -> u64 {
    BASE.saturating_add(bytes(hir))
}

fn bytes(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => STATE,
        HirKind::Literal(literal) => (literal.0.len() as u64).saturating_mul(STATE + TRANSITION),
        HirKind::Class(Class::Bytes(class)) => {
            STATE + (class.ranges().len() as u64).saturating_mul(TRANSITION)
        }
        HirKind::Class(Class::Unicode(class)) if class.ranges().len() > MEASURED_RANGES => {
            measured(class)
        }
        HirKind::Class(Class::Unicode(class)) => counted(class),
        HirKind::Repetition(rep) => {
            // `{m,n}` is n copies (the last n - m optional, each behind a split); `{m,}` is
            // m copies and a loop.
            let copies = u64::from(rep.max.unwrap_or(rep.min).max(rep.min)) + 1;
            bytes(&rep.sub).saturating_add(STATE).saturating_mul(copies)
        }
        HirKind::Capture(capture) => bytes(&capture.sub).saturating_add(2 * STATE),
        HirKind::Concat(subs) => subs.iter().map(bytes).fold(0, u64::saturating_add),
        HirKind::Alternation(subs) => subs
            .iter()
            .map(|sub| bytes(sub).saturating_add(TRANSITION))
            .fold(STATE, u64::saturating_add),
    }
}

/// A class of few ranges: each range as the UTF-8 byte sequences that spell it, a state and
/// a transition for each byte range of each (more than the compiler makes, which shares
/// common suffixes).
fn counted(class: &ClassUnicode) -> u64 {
    let mut units = 1u64;
    for range in class.ranges() {
        for sequence in regex_syntax::utf8::Utf8Sequences::new(range.start(), range.end()) {
            units = units.saturating_add(sequence.len() as u64);
        }
    }
    units.saturating_mul(STATE + TRANSITION)
}

/// A class of many ranges, compiled alone and measured, once per process: counted, `\w`
/// would be 6 times what it compiles to.
fn measured(class: &ClassUnicode) -> u64 {
    static MEASURED: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);
    let key = {
        let mut h = std::hash::DefaultHasher::new();
        for range in class.ranges() {
            (range.start(), range.end()).hash(&mut h);
        }
        h.finish()
    };
    {
        let guard = MEASURED.lock();
        let kept = guard.as_ref();
        if let Some(&known) = kept.and_then(|m| m.get(&key)) {
            return known;
        }
        // Past the classes a process remembers (a file of thousands of made-up classes),
        // counting costs no compile and only errs high.
        if kept.is_some_and(|m| m.len() >= MEASURED_KEPT) {
            return counted(class);
        }
    }
    let compile = |hir: &Hir| {
        thompson::Compiler::new()
            .configure(thompson::Config::new().nfa_size_limit(Some(16 << 20)))
            .build_from_hir(hir)
            .map(|nfa| nfa.memory_usage() as u64)
            .ok()
    };
    let alone = compile(&Hir::class(Class::Unicode(class.clone())));
    let empty = compile(&Hir::empty()).unwrap_or(0);
    let size = match alone {
        Some(alone) => alone.saturating_sub(empty).saturating_mul(MEASURED_MARGIN) / 8,
        // Too big to compile alone: as counted, which is bigger still.
        None => counted(class),
    };
    let mut guard = MEASURED.lock();
    let kept = guard.get_or_insert_with(HashMap::new);
    if kept.len() < MEASURED_KEPT {
        kept.insert(key, size);
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate against the program regex-automata compiles (case-insensitive, as
    /// keyword regexes are): never below it, and within a few times it, so that the budgets
    /// neither let a big regex through nor refuse a fair rules file.
    #[test]
    fn the_estimate_is_above_the_compiled_program_and_near_it() {
        let words: Vec<String> = (0..300).map(|i| format!("word{i}")).collect();
        let alternation = words.join("|");
        for pattern in [
            r"\w",
            r"\w{12}",
            r"^\w{17}z17\d{1,3}$",
            r"\d{1,3}",
            r"\pL",
            r"\pL{5}",
            r"[\p{Han}]{2,10}",
            r"[a-z]{100}",
            r"(?s).*",
            r"^订单\s*(?P<order>\d{6,20})$",
            r"^re12-(\d+)$",
            r"(a{100}){10}",
            r"\S+@\S+",
            r"hello world",
            alternation.as_str(),
            r"\w+",
            r"\w*x\w*",
            r"(\w|\d){10}",
            r"\bfoo\b",
            r"[^a]{20}",
        ] {
            let hir = regex_syntax::ParserBuilder::new()
                .case_insensitive(true)
                .build()
                .parse(pattern)
                .unwrap();
            let estimate = program(&hir);
            let compiled = thompson::Compiler::new()
                .build_from_hir(&hir)
                .unwrap()
                .memory_usage() as u64;
            assert!(
                // A list of words compiles to a trie, which shares their starts.
                estimate >= compiled && estimate <= compiled * 8 + 8192,
                "{pattern}: estimate {estimate}, compiled {compiled}"
            );
        }
    }
}
