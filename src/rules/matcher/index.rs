//! Which rules can match a message (`Index`), so that `find` tries those only: built once
//! per rule set, from the rules' criteria; asked once per message. It only narrows: the
//! rules it hands out, tried in file order, give the answer trying every rule would.

use std::collections::HashMap as StdHashMap;

/// The index's maps. Their keys come from the rules file, not from requests: a request only
/// looks up, and cannot lengthen the probe chains of a map it does not fill, so a fast hash
/// (randomly seeded) is safe.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// The rules filed under one value, in file order: nearly always one or two, held inline
/// (a `Vec` would be an allocation each; at 1,000 accounts, 300,000 of them).
type Ids = smallvec::SmallVec<[u32; 4]>;

/// Values (a keyword, an event key, …) and the rules filed under each.
type Filed = HashMap<Box<str>, Ids>;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex::{RegexSet, RegexSetBuilder};

use super::criteria::{Field, Pattern};
use super::Subject;
use crate::rules::Rule;

/// Which rules can match a message, so that `find` only tries those.
///
/// A rule with a `keyword` criterion is filed under each of its keyword patterns: exact ones
/// in a hash map, prefixes and substrings in one Aho-Corasick automaton, regexes by the
/// literals every match contains in a second one, and the regexes without such literals in
/// small `RegexSet`s. Any other rule is filed under its most selective criterion that has only
/// exact patterns (event key, event, message type), or in `rest`. A rule can only match
/// a message that finds it through one of these, so the candidates, tried in file order,
/// give the same first match as trying every rule.
#[derive(Debug, Default)]
pub(crate) struct Index {
    keyword: Filed,
    /// Prefix and substring keywords (case-folded), each literal once, with its rules.
    partial: Literals<(u32, PartialKind)>,
    /// The literals one of which every match of a keyword regex contains (its required
    /// prefixes, or a required part further in). A rule found is a candidate: its regex
    /// decides.
    required: Literals<u32>,
    /// The other keyword regexes, in sets of at most `REGEX_CHUNK` and `SET_PROGRAM`:
    /// pattern j of a set whose rules start at `first` belongs to rule
    /// `regex_rules[first + j]`.
    regexes: Vec<(RegexSet, usize)>,
    regex_rules: Vec<u32>,
    event_key: Filed,
    event: Filed,
    msg_type: Filed,
    rest: Vec<u32>,
}

/// Keyword regexes per `RegexSet`.
const REGEX_CHUNK: usize = 64;

/// The most program (estimated, as `LazyRegex::program`) one `RegexSet` gathers: a set of
/// heavy regexes is cut smaller, so that it stays far from the set's own size limit (past
/// which the set, and every rule in it, would fall back to being tried for every message).
const SET_PROGRAM: u64 = 4 << 20;

/// What a `RegexSet` takes compiled, for each byte of its patterns' programs: the forward
/// and the reverse automaton (its lazy DFA's cache is per search, apart).
pub(crate) const SET_FACTOR: u64 = 2;

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
        // A contiguous NFA, not the DFA the crate picks for up to 100 patterns: the DFA
        // was 23 KiB an account of 200 rules (23 MB at 1,000 accounts), for a search over
        // a keyword of a few dozen bytes. (Too many states for one: the crate's choice.)
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(&patterns)
            .or_else(|_| AhoCorasick::new(&patterns));
        match automaton {
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

/// An `Index` built as the rules are compiled, one at a time in file order: the maps of
/// exact values fill as each rule comes (at a large load, while the rest of the file is
/// still being typed on other threads); the automata and the regex sets, which need every
/// pattern at once, at `build`.
#[derive(Debug, Default)]
pub(crate) struct IndexBuilder {
    index: Index,
    /// The rules with a prefix, substring or regex keyword pattern, in file order.
    partial: Vec<u32>,
}

impl IndexBuilder {
    /// Files rule `id` (its place among the rules that are on) under its exact values.
    pub(crate) fn add(&mut self, id: usize, rule: &Rule) {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        let index = &mut self.index;
        if let Some(test) = rule.when.tests.iter().find(|t| t.field == Field::Keyword) {
            // An empty prefix matches everything: such a rule is tried for every message.
            let empty =
                test.matcher.patterns.iter().any(
                    |p| matches!(p, Pattern::Prefix(s) | Pattern::Contains(s) if s.is_empty()),
                );
            if !empty {
                let mut partial = false;
                for pattern in &test.matcher.patterns {
                    match pattern {
                        Pattern::Exact(s) => {
                            push_unique(index.keyword.entry(s.clone()).or_default(), id);
                        }
                        Pattern::Prefix(_) | Pattern::Contains(_) | Pattern::Regex(_) => {
                            partial = true;
                        }
                    }
                }
                if partial {
                    self.partial.push(id);
                }
                return;
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
            return;
        };
        let map = match field {
            Field::EventKey => &mut index.event_key,
            Field::Event => &mut index.event,
            _ => &mut index.msg_type,
        };
        for key in keys {
            push_unique(map.entry(key.into()).or_default(), id);
        }
    }

    /// The index of `rules`, every one of which was `add`ed, in order.
    pub(crate) fn build(self, rules: &[Rule]) -> Index {
        let IndexBuilder { mut index, partial } = self;
        let mut partial_patterns: Vec<(&[u8], (u32, PartialKind))> = Vec::new();
        let mut regex_patterns: Vec<(&str, u64)> = Vec::new();
        let mut required_patterns: Vec<(&[u8], u32)> = Vec::new();
        for id in partial {
            let Some(test) = rules
                .get(id as usize)
                .and_then(|rule| rule.when.tests.iter().find(|t| t.field == Field::Keyword))
            else {
                continue;
            };
            for pattern in &test.matcher.patterns {
                match pattern {
                    Pattern::Exact(_) => {}
                    Pattern::Prefix(s) => {
                        partial_patterns.push((s.as_bytes(), (id, PartialKind::Prefix)));
                    }
                    Pattern::Contains(s) => {
                        partial_patterns.push((s.as_bytes(), (id, PartialKind::Contains)));
                    }
                    Pattern::Regex(re) => match &re.literals {
                        Some(literals) => {
                            for literal in literals.iter() {
                                required_patterns.push((literal, id));
                            }
                        }
                        None => {
                            regex_patterns.push((re.as_str(), re.program()));
                            index.regex_rules.push(id);
                        }
                    },
                }
            }
        }
        match Literals::build(partial_patterns) {
            Ok(partial) => index.partial = partial,
            Err(owners) => index.unindex(owners.into_iter().map(|(id, _)| id).collect()),
        }
        match Literals::build(required_patterns) {
            Ok(required) => index.required = required,
            Err(owners) => index.unindex(owners),
        }
        // Keyword regexes are compiled case-insensitive; the sets must agree. One set of
        // thousands of patterns outgrows its lazy DFA and falls back to the PikeVM (tens of
        // µs per message); small sets stay on the DFA, and `is_match` on each is ~100 ns.
        let mut sets = Vec::new();
        let mut first = 0;
        for chunk in set_chunks(&regex_patterns) {
            let built = RegexSetBuilder::new(chunk.iter().map(|(pattern, _)| pattern))
                .case_insensitive(true)
                .size_limit(64 << 20)
                .build();
            match built {
                Ok(set) => sets.push((set, first)),
                Err(_) => {
                    index.unindex_regexes();
                    return index;
                }
            }
            first += chunk.len();
        }
        index.regexes = sets;
        index
    }
}

impl Index {
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
        ids.extend(self.required.owners.iter().copied());
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
    pub(super) fn candidates<'a>(&'a self, subject: &Subject<'_>) -> Candidates<'a> {
        let get = |map: &'a Filed, key: Option<&str>| {
            key.and_then(|k| map.get(k)).map_or(&[][..], Ids::as_slice)
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
            for (literal, _) in self.required.found_in(raw) {
                found.extend_from_slice(self.required.owners_of(literal));
            }
        }
        if let Some(raw) = subject.keyword.as_deref() {
            for (set, first) in &self.regexes {
                if set.is_match(raw) {
                    found.extend(
                        set.matches(raw)
                            .into_iter()
                            .filter_map(|j| self.regex_rules.get(first + j).copied()),
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

/// The keyword regexes without required literals, `(pattern, program)` in file order, cut
/// into the patterns of each `RegexSet`: `REGEX_CHUNK` at most, and no more program than
/// `SET_PROGRAM` (a regex heavier than that alone in its set).
fn set_chunks<'a>(regexes: &'a [(&'a str, u64)]) -> Vec<&'a [(&'a str, u64)]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut program = 0u64;
    for (i, (_, size)) in regexes.iter().enumerate() {
        let full = i - start == REGEX_CHUNK || program.saturating_add(*size) > SET_PROGRAM;
        if full && i > start {
            chunks.push(&regexes[start..i]);
            start = i;
            program = 0;
        }
        program = program.saturating_add(*size);
    }
    if start < regexes.len() {
        chunks.push(&regexes[start..]);
    }
    chunks
}

fn push_unique(ids: &mut Ids, id: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_sets_are_cut_by_count_and_by_program() {
        let light: Vec<(&str, u64)> = vec![("a", 1_000); 130];
        let sizes: Vec<usize> = set_chunks(&light).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [64, 64, 2]);
        let heavy: Vec<(&str, u64)> =
            vec![("a", 1 << 20), ("b", 3 << 20), ("c", 5 << 20), ("d", 1)];
        let sizes: Vec<usize> = set_chunks(&heavy).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 1, 1]);
        assert!(set_chunks(&[]).is_empty());
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
}
