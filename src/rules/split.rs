//! Types a large rules file in pieces, on every core. serde_yaml reads a whole document
//! into an event list before typing it: slow and memory-hungry at 100,000 rules. A plain
//! file's `rules:` list (see `LazyPositions::plain_rule_starts`) is cut at the lines where
//! rules start, and each piece of a thousand rules is typed as a document of its own. The
//! first piece starts at the top of the file and the last ends at its end, so serde_yaml
//! reads every byte, as it would typing the file whole; where the outline pass (yaml-rust2)
//! and serde_yaml (libyaml) could count lines differently, the file is typed whole.
//! In a file of the usual shape, `guess` reads where the rules start from the lines alone,
//! without the outline pass.

use std::num::NonZero;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::locate::{Position, MAX_YAML_DEPTH};
use super::schema::{self, RawRule};

/// Rules per piece: few enough that a piece's event list stays small, enough that
/// handing out pieces costs nothing.
const PIECE: usize = 1_000;

/// Levels a guessed rule's bound leaves aside for the root mapping, the list, the rule, a
/// key's value on its key's line, and a few to spare.
const DEPTH_MARGIN: usize = 8;

/// Below this many rules the file is typed whole: a second thread would not pay.
const MIN_RULES: usize = 2 * PIECE;

/// The byte offset where each line of a text starts.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub(crate) fn new(source: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(at, _)| at + 1));
        LineIndex {
            starts,
            len: source.len(),
        }
    }

    /// Where 1-based `line` starts; past the end, the end of the text.
    pub(crate) fn offset(&self, line: usize) -> usize {
        self.starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.len)
    }
}

/// Types the rules of a plain file in pieces, side by side; a file of fewer than
/// `MIN_RULES` rules is one piece, typed whole. `None` when a rule does not start its own
/// line after `- `, or when any piece fails to type or gives another number of rules than
/// it holds: the caller then types the file whole, rule by rule where it must, which finds
/// every error.
#[cfg(test)]
pub(crate) fn type_rules(
    source: &str,
    lines: &LineIndex,
    starts: &[Position],
) -> Option<Vec<RawRule>> {
    type_in_pieces(source, lines, starts, PIECE, MIN_RULES)
}

/// `type_rules`, each piece handed to `each` in file order, on the calling thread, with the
/// index of its first rule, as soon as it and the pieces before it are typed: the caller
/// compiles a piece and drops it while the next ones are typed, so that the raw rules of
/// the whole file are never all held at once (at 100,000 rules, most of a load's peak).
/// `None` as for `type_rules`; the pieces already handed over are then to be thrown away.
pub(crate) fn type_rules_each(
    source: &str,
    lines: &LineIndex,
    starts: &[Position],
    each: impl FnMut(usize, Vec<RawRule>),
) -> Option<()> {
    type_each_in_pieces(source, lines, starts, PIECE, MIN_RULES, each)
}

/// `type_rules` with the piece size and threshold given (tests cut small files finely).
#[cfg(test)]
fn type_in_pieces(
    source: &str,
    lines: &LineIndex,
    starts: &[Position],
    piece_rules: usize,
    min_rules: usize,
) -> Option<Vec<RawRule>> {
    let mut rules = Vec::with_capacity(starts.len());
    type_each_in_pieces(source, lines, starts, piece_rules, min_rules, |_, piece| {
        rules.extend(piece);
    })?;
    Some(rules)
}

/// `type_rules_each` with the piece size and threshold given.
fn type_each_in_pieces(
    source: &str,
    lines: &LineIndex,
    starts: &[Position],
    piece_rules: usize,
    min_rules: usize,
    mut each: impl FnMut(usize, Vec<RawRule>),
) -> Option<()> {
    if piece_rules == 0 || odd_line_breaks(source) {
        return None;
    }
    if starts.len() < min_rules {
        // Too few rules for a second thread to pay: one piece, the whole file, typed here.
        let rules = schema::parse_typed(source).filter(|rules| rules.len() == starts.len())?;
        each(0, rules);
        return Some(());
    }
    let cuts = cuts(source, lines, starts)?;
    let pieces: Vec<(&str, usize)> = cuts
        .chunks(piece_rules)
        .enumerate()
        .map(|(k, piece)| {
            // The first piece takes the head of the file (`rules:` and whatever is above it),
            // and is typed as a whole file: serde_yaml checks the head as well.
            let start = if k == 0 { 0 } else { piece[0] };
            let end = cuts
                .get((k + 1) * piece_rules)
                .copied()
                .unwrap_or(source.len());
            (source.get(start..end).unwrap_or_default(), piece.len())
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let workers = std::thread::available_parallelism()
        .map_or(1, NonZero::get)
        .min(pieces.len());
    // Typed pieces on their way to the calling thread: a few per worker, so that typing
    // runs ahead of the caller by that much and no more.
    let (typed, arrived) = std::sync::mpsc::sync_channel::<(usize, Vec<RawRule>)>(2 * workers);
    // Each worker takes the next piece until none is left or one has failed.
    let work = |typed: std::sync::mpsc::SyncSender<(usize, Vec<RawRule>)>| {
        while !failed.load(Ordering::Relaxed) {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(text, count)) = pieces.get(k) else {
                break;
            };
            let rules = if k == 0 {
                schema::parse_typed(text)
            } else {
                schema::parse_piece(text)
            };
            match rules {
                Some(rules) if rules.len() == count => {
                    if typed.send((k, rules)).is_err() {
                        break;
                    }
                }
                _ => failed.store(true, Ordering::Relaxed),
            }
        }
    };
    let mut handed = 0;
    std::thread::scope(|scope| {
        // A helper the system refuses is simply not there: the others take its pieces; with
        // none at all, this thread types them itself (below).
        let helpers: Vec<_> = (0..workers)
            .filter_map(|_| {
                let typed = typed.clone();
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || work(typed))
                    .ok()
            })
            .collect();
        drop(typed);
        if helpers.is_empty() {
            // No thread to type on: nothing arrives, and the caller types the file whole.
            failed.store(true, Ordering::Relaxed);
        }
        // Pieces arrive in any order: each is handed over once those before it have been.
        let mut early = std::collections::BTreeMap::new();
        for (k, rules) in arrived.iter() {
            early.insert(k, rules);
            while let Some(rules) = early.remove(&handed) {
                if !failed.load(Ordering::Relaxed) {
                    each(handed * piece_rules, rules);
                }
                handed += 1;
            }
        }
        for helper in helpers {
            if helper.join().is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        }
    });
    (!failed.load(Ordering::Relaxed) && handed == pieces.len()).then_some(())
}

/// Where the rules of a file in the usual shape start, and its `timezone:`, read from its
/// lines alone, without the outline pass (`LazyPositions::new`, a quarter of a large
/// load's work and a sixth of a small one's). The rules are then typed in pieces cut at
/// these starts (a small file whole); the guess holds when every piece types to as many
/// rules as it was given (see `guess`).
#[derive(Debug, PartialEq)]
pub(crate) struct Guess {
    pub(crate) starts: Vec<Position>,
    pub(crate) timezone: Option<String>,
}

/// The guess for `source`, or `None` for anything but the usual shape:
/// - at the top level, comments, a `timezone:` with a plain value (`Asia/Shanghai`) and then
///   `rules:`: nothing else, and nothing after the rules at the top level;
/// - every rule's first key on its dash's line (`- key` or `- { key`), the key a plain word,
///   every dash in one column, and no other line at or left of that column but comments;
/// - no byte-order mark, at least one rule;
/// - no rule that could nest deeper than `MAX_YAML_DEPTH`: its deepest line's leading
///   spaces and indicators (each block level needs one more) plus its brackets (`[`, `{`;
///   a `- ` starting a line inside a flow collection is a YAML error, so a rule's brackets
///   bound its flow nesting) stay within the bound, which the outline pass would check.
///
/// Why a wrong guess cannot pass: every line that could start a rule is taken as a start,
/// so no true start is missed. A taken line that is not a true start lies inside a
/// multi-line scalar or flow collection (a block scalar cannot hold a line at or left of
/// the list's column). Inside a piece, that piece then types to fewer rules than it was
/// given; at a cut, the piece before ends inside an unclosed quote or bracket and does not
/// type. The property test `pieces_cut_at_the_guess_are_the_outline_s_or_fail` checks it.
pub(crate) fn guess(source: &str) -> Option<Guess> {
    if source.starts_with('\u{feff}') {
        return None;
    }
    let mut starts = Vec::new();
    let mut timezone = None;
    let mut in_rules = false;
    let mut dash = None;
    // The current rule's brackets and deepest lead, which bound how deep it can nest.
    let (mut brackets, mut lead) = (0, 0);
    let within = |brackets: usize, lead: usize| DEPTH_MARGIN + brackets + lead <= MAX_YAML_DEPTH;
    for (k, line) in source.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let opens = line.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
        let line_lead = line.len() - line.trim_start_matches([' ', '-', '?', ':']).len();
        if indent == 0 && !body.starts_with('-') {
            if in_rules {
                return None;
            }
            if let Some(rest) = top_key(line, "rules") {
                if !(rest.is_empty() || rest.starts_with('#')) {
                    return None;
                }
                in_rules = true;
            } else if let Some(rest) = top_key(line, "timezone") {
                if timezone.is_some() {
                    return None;
                }
                timezone = Some(plain_value(rest)?.to_owned());
            } else {
                return None;
            }
            continue;
        }
        if !in_rules {
            return None;
        }
        if dash.is_some_and(|d| indent > d) {
            brackets += opens;
            lead = lead.max(line_lead);
            continue;
        }
        // A rule's first line: its dash in the list's column, its first key after it.
        if *dash.get_or_insert(indent) != indent || !within(brackets, lead) {
            return None;
        }
        let after = body.strip_prefix("- ")?.trim_start_matches(' ');
        let after = after
            .strip_prefix('{')
            .map_or(after, |a| a.trim_start_matches(' '));
        if !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        // What comes before the key is ASCII: its byte offset is its column.
        starts.push((k + 1, line.len() - after.len() + 1));
        (brackets, lead) = (opens, line_lead);
    }
    (in_rules && within(brackets, lead) && !starts.is_empty()).then_some(Guess { starts, timezone })
}

/// What follows `key:` on a top-level line, trimmed, when the line is that key.
fn top_key<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?.strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim())
}

/// A plain scalar such as a time zone's name (`Asia/Shanghai`, `UTC`, `Etc/GMT+8`), with an
/// optional comment after it.
fn plain_value(rest: &str) -> Option<&str> {
    let value = rest.split(" #").next()?.trim_end();
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'+' | b'-');
    (!value.is_empty() && !value.starts_with('-') && value.bytes().all(plain)).then_some(value)
}

/// Line breaks that libyaml counts and yaml-rust2 does not (U+0085, U+2028, U+2029), or a
/// CR without an LF, which `LineIndex` does not count: the line numbers of the outline pass
/// could then be wrong for the cut.
fn odd_line_breaks(source: &str) -> bool {
    let bytes = source.as_bytes();
    memchr::memchr_iter(b'\r', bytes).any(|at| bytes.get(at + 1) != Some(&b'\n'))
        || ["\u{85}", "\u{2028}", "\u{2029}"]
            .iter()
            .any(|ch| memchr::memmem::find(bytes, ch.as_bytes()).is_some())
}

/// The byte offset of the line each rule starts on, when every rule starts a line of its
/// own as `- key` or `- { key`, with every `-` in the same column.
fn cuts(source: &str, lines: &LineIndex, starts: &[Position]) -> Option<Vec<usize>> {
    let mut cuts = Vec::with_capacity(starts.len());
    let mut dash = None;
    let mut previous = 0;
    for &(line, column) in starts {
        if line <= previous {
            return None;
        }
        previous = line;
        let start = lines.offset(line);
        let text = source.get(start..)?;
        let before: usize = text
            .char_indices()
            .nth(column.checked_sub(1)?)
            .map(|(at, _)| at)?;
        let at = item_dash(text.get(..before)?)?;
        if *dash.get_or_insert(at) != at {
            return None;
        }
        cuts.push(start);
    }
    Some(cuts)
}

/// The column of the `-` when `prefix` (the text before a rule's first key) is spaces, a
/// `-`, spaces and at most one `{` with spaces after it.
fn item_dash(prefix: &str) -> Option<usize> {
    let rest = prefix.trim_end_matches(' ');
    let rest = rest.strip_suffix('{').unwrap_or(rest).trim_end_matches(' ');
    let indent = rest.strip_suffix('-')?;
    (indent.bytes().all(|b| b == b' ') && rest.len() < prefix.len()).then_some(indent.len())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rules::locate::LazyPositions;

    /// Rule `i` of a file that mixes every style a rule may be written in.
    fn rule(i: usize) -> String {
        match i % 6 {
            0 => format!(
                "  - {{ name: r{i}, when: {{ keyword: [k{i}, {i}] }}, reply: {{ text: \"hi {i}\" }} }}\n"
            ),
            1 => format!(
                "  - name: r{i}\n    when:\n      msg_type: event\n      event_key: {{ prefix: qrscene_{i} }}\n    reply:\n      text: |\n        - not a rule {i}\n        rules:\n\n  # a comment between rules\n"
            ),
            2 => format!(
                "  - name: r{i}\n    when: {{ keyword: {{ regex: '^a{i}-(\\d+)$' }} }}\n    reply:\n      news:\n        - title: \"t {i}\"\n          url: https://example.com/{i}\n"
            ),
            3 => format!("  - {{ name: r{i},\n      ignore: true }}\n"),
            4 => format!("  -   name: r{i}\n      ignore: true\n"),
            _ => format!(
                "  - name: \"r{i}\"  # trailing comment\n    reply: {{ voice: {{ media_id: m{i} }} }}\n    when: {{ fields: {{ ScanCodeInfo.ScanType: qrcode }} }}\n"
            ),
        }
    }

    fn file(rules: usize) -> String {
        let mut text = String::from("# wxrules\nrules:\n");
        text.extend((0..rules).map(rule));
        text.push_str("# the end\n");
        text
    }

    fn split(source: &str) -> Option<Vec<RawRule>> {
        let positions = LazyPositions::new(source);
        let starts = positions.plain_rule_starts()?;
        type_rules(source, &LineIndex::new(source), starts)
    }

    #[test]
    fn pieces_type_to_what_the_whole_file_types_to() {
        let source = file(2 * PIECE + 345);
        let pieces = split(&source).expect("a plain file is typed in pieces");
        let whole = schema::parse_typed(&source).expect("the file types");
        assert_eq!(pieces.len(), 2 * PIECE + 345);
        assert_eq!(format!("{pieces:?}"), format!("{whole:?}"));
    }

    /// Where the outline pass found each rule, plain file or not.
    fn outline_starts(outline: &LazyPositions<'_>) -> Vec<Position> {
        (0..).map_while(|i| outline.rule(i)).collect()
    }

    #[test]
    fn the_guess_from_the_lines_is_what_the_outline_finds_in_the_usual_shapes() {
        for head in [
            "",
            "timezone: Asia/Shanghai  # the office\n",
            "# top\n\ntimezone: UTC\n",
        ] {
            let source = format!("{head}{}", file(MIN_RULES + 7));
            let outline = LazyPositions::new(&source);
            let guess = guess(&source).expect("the usual shape");
            // (A file with a time zone is not plain to the outline: it types it whole.)
            assert!(guess.starts == outline_starts(&outline));
            assert_eq!(guess.timezone.as_deref(), outline.timezone());
        }
        let crlf = file(MIN_RULES).replace('\n', "\r\n");
        let guessed = guess(&crlf).expect("the usual shape").starts;
        assert!(guessed == outline_starts(&LazyPositions::new(&crlf)));
    }

    #[test]
    fn the_guess_declines_all_but_the_usual_shape() {
        let usual = file(MIN_RULES);
        assert!(guess(&usual).is_some());
        let rule = "  - { name: x, ignore: true }\n";
        let deep = |levels: usize| {
            let nested: String = (0..levels)
                .map(|level| format!("{}k{level}:\n", " ".repeat(4 + level)))
                .collect();
            format!("{usual}  - name: y\n    extra:\n{nested}")
        };
        assert!(guess(&deep(8)).is_some());
        for unusual in [
            "rules:\n".to_owned(),
            "rules: []\n".to_owned(),
            format!("\u{feff}{usual}"),
            format!("---\n{usual}"),
            format!("other: 1\n{usual}"),
            format!("{usual}rules:\n{rule}"),
            format!("{usual}timezone: UTC\n"),
            format!("timezone: UTC\ntimezone: UTC\n{usual}"),
            format!("timezone: 'UTC'\n{usual}"),
            format!("timezone: ~\n{usual}"),
            format!("timezone:\n  UTC\n{usual}"),
            format!("  x: 1\n{usual}"),
            usual.replacen("rules:\n", "rules: # ok\n", 1) + "...\n",
            usual.replacen("rules:\n", "rules: []\n", 1),
            format!("{usual} - {{ name: y, ignore: true }}\n"),
            format!("{usual}  -\n    name: y\n"),
            format!("{usual}  - # comment\n    name: y\n"),
            format!("{usual}  - {{}}\n"),
            format!("{usual}  - \"name\": y\n"),
            format!("{usual}  - &a name: y\n"),
            format!("{usual}  - ? name\n    : y\n"),
            format!("{usual}  name: y\n"),
            format!(
                "{usual}  - {{ name: y, reply: {{ text: \"{}\" }} }}\n",
                "{".repeat(MAX_YAML_DEPTH)
            ),
            deep(MAX_YAML_DEPTH),
        ] {
            assert!(
                guess(&unusual).is_none(),
                "{}",
                &unusual[unusual.len() - 80..]
            );
        }
        // Brackets up to the bound, and rules at the left edge, are usual.
        let edge = usual.replace("\n  - ", "\n- ");
        assert!(guess(&edge).is_some());
        let bracketed = format!(
            "{usual}  - {{ name: y, reply: {{ text: \"{}\" }} }}\n",
            "{".repeat(MAX_YAML_DEPTH - DEPTH_MARGIN - 6)
        );
        assert!(guess(&bracketed).is_some());
    }

    #[test]
    fn anything_unusual_leaves_the_file_to_be_typed_whole() {
        // Small: one piece, the whole file.
        let small = split(&file(MIN_RULES - 1)).expect("typed whole");
        assert_eq!(small.len(), MIN_RULES - 1);
        // A rule that does not type, far into the file.
        let broken =
            file(3 * PIECE).replace("r2499,\n      ignore: true", "r2499,\n      ignore: maybe");
        assert_ne!(broken, file(3 * PIECE));
        assert!(split(&broken).is_none());
        assert!(schema::parse_typed(&broken).is_none());
        // A flow list: rules do not start their own line after `- `.
        let mut flow = String::from("rules: [\n");
        for i in 0..MIN_RULES {
            flow.push_str(&format!("  {{ name: r{i}, ignore: true }},\n"));
        }
        flow.push_str("]\n");
        assert!(LazyPositions::new(&flow).plain_rule_starts().is_some());
        assert!(split(&flow).is_none());
        assert_eq!(schema::parse_typed(&flow).map(|r| r.len()), Some(MIN_RULES));
    }

    /// Pieces typed from `source`, cut every `piece` rules, must be what the whole file
    /// types to; declining is allowed.
    fn agrees(source: &str, piece: usize) -> Result<(), String> {
        let Some(pieces) = split_with(source, piece) else {
            return Ok(());
        };
        match schema::parse_typed(source) {
            None => Err(format!("pieces typed, the whole file did not:\n{source}")),
            Some(whole) if format!("{whole:?}") != format!("{pieces:?}") => Err(format!(
                "pieces typed otherwise than the whole file:\n{source}"
            )),
            Some(_) => Ok(()),
        }
    }

    #[test]
    fn serde_yaml_reads_the_head_and_the_tail_of_the_file_too() {
        // Found by review: text that only yaml-rust2 read (the head was not in any piece),
        // or line breaks the two parsers count differently.
        let rules: String = (0..50)
            .map(|i| format!("  - {{ name: r{i}, ignore: true }}\n"))
            .collect();
        let hidden = "  - { name: hidden, ignore: true }";
        for (head, tail) in [
            (format!("rules: # \u{85}{hidden}\n"), String::new()),
            (format!("rules:\n# note\u{2028}{hidden}\n"), String::new()),
            ("%YAML 1.3\n---\nrules:\n".into(), String::new()),
            ("%FOO bar\n---\nrules:\n".into(), String::new()),
            ("# a\u{1}b\nrules:\n".into(), String::new()),
            ("# a\u{85}extra: 1\nrules:\n".into(), String::new()),
            ("\trules:\n".into(), String::new()),
            ("rules:\n".into(), format!("# end\u{2028}{hidden}\n")),
            (
                "# a\r# b\nrules:\n".into(),
                format!("# end\u{2028}{hidden}\n"),
            ),
            ("# a\r# b\nrules:\n".into(), String::new()),
        ] {
            for piece in [1, 7, 1000] {
                agrees(&format!("{head}{rules}{tail}"), piece).unwrap();
            }
        }
        // A plain head and tail still take the fast path.
        let plain = format!("# head\n---\nrules:\n{rules}# tail\n...\n");
        assert!(split_with(&plain, 7).is_some());
        let bom = format!("\u{feff}rules:\n{rules}");
        assert_eq!(split_with(&bom, 7).map(|r| r.len()), Some(50));
        agrees(&bom, 7).unwrap();
    }

    fn split_with(source: &str, piece: usize) -> Option<Vec<RawRule>> {
        let positions = LazyPositions::new(source);
        let starts = positions.plain_rule_starts()?;
        type_in_pieces(source, &LineIndex::new(source), starts, piece, 1)
    }

    #[test]
    fn a_rule_is_cut_only_at_a_dash_of_the_list() {
        assert_eq!(item_dash("  - "), Some(2));
        assert_eq!(item_dash("- "), Some(0));
        assert_eq!(item_dash("  -   "), Some(2));
        assert_eq!(item_dash("  - { "), Some(2));
        assert_eq!(item_dash("  - {"), Some(2));
        assert_eq!(item_dash("  { "), None);
        assert_eq!(item_dash("  - - "), None);
        assert_eq!(item_dash("  - ? "), None);
        assert_eq!(item_dash("x - "), None);
        assert_eq!(item_dash("\t- "), None);
        let source = "rules:\n  - a: 1\n  - b: 2\n   - c: 3\n";
        let lines = LineIndex::new(source);
        assert_eq!(cuts(source, &lines, &[(2, 5), (3, 5)]), Some(vec![7, 16]));
        // Not in one column; two rules on one line.
        assert_eq!(cuts(source, &lines, &[(2, 5), (4, 6)]), None);
        assert_eq!(cuts(source, &lines, &[(2, 5), (2, 9)]), None);
    }

    /// Text that YAML reads in many ways: indicators, comment and document markers, quotes,
    /// a list dash, `rules:` itself, CJK and the Kelvin sign.
    const BITS: &[&str] = &[
        "a",
        "- x",
        "rules:",
        "# c",
        "'",
        "\"",
        "{",
        "}",
        ": ",
        "价格",
        "\u{212A}1",
        "---",
        "...",
        " ",
        "-",
        "?",
        "*a",
        "&b",
        "!t",
        "%",
        "@",
        "`",
        "|",
        ">",
    ];

    /// One rule in one of several styles, its strings made of `bits`.
    fn styled(i: usize, style: u8, indent: &str, bits: &[&str]) -> String {
        let text: String = bits.concat();
        let single = format!("'{}'", text.replace('\'', "''"));
        let double = format!("{:?}", text);
        let lines: Vec<&str> = bits.iter().map(|b| b.trim_end()).collect();
        let d = indent;
        // The last two styles are rare: a bare flow mapping, and a rule whose first key is on
        // the line after its dash (which is not cut: the whole file is typed).
        let style = if style >= 28 { style } else { style % 7 };
        match style {
            0 => format!("{d}- {{ name: r{i}, when: {{ keyword: [{single}, x] }}, reply: {{ text: {double} }} }}\n"),
            1 => {
                let body: String = lines.iter().map(|l| format!("{d}        {l}\n")).collect();
                format!("{d}- name: r{i}\n{d}  when:\n{d}    keyword: {single}\n{d}  reply:\n{d}    text: |\n{body}")
            }
            2 => format!("{d}- name: r{i}\n\n{d}# {text}\n{d}  ignore: true\n  # between\n\n"),
            3 => format!("{d}- {{ name: r{i},\n{d}    when: {{ event_key: {{ prefix: {single} }} }},\n{d}    ignore: true }}\n"),
            4 => format!("{d}- name: r{i}\n{d}  reply: {{ text: \"{}\n{d}    more\" }}\n", text.replace(['\\', '"'], "")),
            5 => format!("{d}- name: r{i}\n{d}  reply:\n{d}    text: plain\n{d}      continued\n"),
            6 => format!("{d}-   name: \"r{i}\"   # {text}\n{d}    reply: {{ voice: {{ media_id: {single} }} }}\n"),
            28 => format!("{d}- {{name: r{i}}}\n"),
            // A line that looks like a rule's start inside a quoted string, and inside a
            // flow collection (what a guess from the lines could take for a start).
            30 => format!(
                "{d}- name: r{i}\n{d}  reply: {{ text: \"{}\n{d}- name: fake{i}\n{d}  x\" }}\n",
                text.replace(['\\', '"'], "")
            ),
            31 => format!("{d}- name: r{i}\n{d}  reply: {{ text: [a,\n{d}- name: fake{i} ] }}\n"),
            _ => format!("{d}-\n{d}  name: r{i}\n"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Cut after every rule or every few: the pieces type to what the whole file
        /// types to, or the file is left to be typed whole.
        #[test]
        fn pieces_agree_with_the_whole_file(
            rules in prop::collection::vec(
                (0u8..32, prop::collection::vec(prop::sample::select(BITS), 0..4)),
                1..12,
            ),
            indent in prop::sample::select(&["", "  ", "    "][..]),
            piece in 1usize..4,
            crlf in any::<bool>(),
        ) {
            let mut source = String::from("# generated\nrules:\n");
            for (i, (style, bits)) in rules.iter().enumerate() {
                source.push_str(&styled(i, *style, indent, bits));
            }
            if crlf {
                source = source.replace('\n', "\r\n");
            }
            if let Err(e) = agrees(&source, piece) {
                prop_assert!(false, "{}", e);
            }
        }

        /// Cut where the lines say rules start: the pieces type to what the whole file types
        /// to, at the starts the outline pass finds, or do not type.
        #[test]
        fn pieces_cut_at_the_guess_are_the_outline_s_or_fail(
            rules in prop::collection::vec(
                (0u8..32, prop::collection::vec(prop::sample::select(BITS), 0..4)),
                1..12,
            ),
            indent in prop::sample::select(&["", "  ", "    "][..]),
            timezone in prop::sample::select(&["", "timezone: UTC\n", "timezone: null\n"][..]),
            piece in 1usize..4,
            crlf in any::<bool>(),
        ) {
            let mut source = format!("# generated\n{timezone}rules:\n");
            for (i, (style, bits)) in rules.iter().enumerate() {
                source.push_str(&styled(i, *style, indent, bits));
            }
            if crlf {
                source = source.replace('\n', "\r\n");
            }
            let Some(guess) = guess(&source) else { return Ok(()) };
            let lines = LineIndex::new(&source);
            let Some(pieces) = type_in_pieces(&source, &lines, &guess.starts, piece, 1) else {
                return Ok(());
            };
            let whole = schema::parse_typed(&source);
            prop_assert_eq!(format!("{whole:?}"), format!("{:?}", Some(&pieces)), "{}", source);
            let outline = LazyPositions::new(&source);
            prop_assert!(outline.too_deep().is_none());
            prop_assert!(outline_starts(&outline) == guess.starts, "{}", source);
            let assumed = LazyPositions::assumed(&source, Vec::new(), guess.timezone);
            prop_assert_eq!(assumed.timezone(), outline.timezone());
        }
    }
}
