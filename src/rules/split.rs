//! Types a large rules file in pieces, on every core. serde_yaml reads a whole document
//! into an event list before typing it: slow and memory-hungry at 100,000 rules. A plain
//! file's `rules:` list (see `LazyPositions::plain_rule_starts`) is cut at the lines where
//! rules start, and each piece of a thousand rules is typed as a document of its own. The
//! first piece starts at the top of the file and the last ends at its end, so serde_yaml
//! reads every byte, as it would typing the file whole; where the outline pass (yaml-rust2)
//! and serde_yaml (libyaml) could count lines differently, the file is typed whole.

use std::num::NonZero;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::locate::Position;
use super::schema::{self, RawRule};

/// Rules per piece: few enough that a piece's event list stays small, enough that
/// handing out pieces costs nothing.
const PIECE: usize = 1_000;

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

/// Types the rules of a plain file in pieces, side by side. `None` when the file is small,
/// when a rule does not start its own line after `- `, or when any piece fails to type or
/// gives another number of rules than it holds: the caller then types the file whole,
/// which also finds every error.
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
    if starts.len() < min_rules || piece_rules == 0 || odd_line_breaks(source) {
        return None;
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

    #[test]
    fn anything_unusual_leaves_the_file_to_be_typed_whole() {
        // Small.
        assert!(split(&file(MIN_RULES - 1)).is_none());
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
                (0u8..30, prop::collection::vec(prop::sample::select(BITS), 0..4)),
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
    }
}
