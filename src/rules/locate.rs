//! Line and column of every key and value of a YAML document, by path
//! (`rules[3].when.keyword.regex`). serde_yaml has no spans, so semantic errors found
//! after parsing are located through this index, built from yaml-rust2's marked events.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based line and column.
pub(crate) type Position = (usize, usize);

/// The deepest nesting of mappings and sequences a rules or cases file may have. A rule
/// needs six levels; yaml-rust2's and libyaml's scanners both take time in the square of
/// the depth, which is negligible up to here.
pub const MAX_YAML_DEPTH: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Positions {
    keys: HashMap<String, Position>,
    values: HashMap<String, Position>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        /// No key seen yet: the parser marks a block mapping at its first `:`, so the
        /// mapping's position is taken from its first key instead.
        first: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    positions: Positions,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Walker {
    /// Where the next node goes: its path, or `None` when it is a mapping key.
    fn place(&mut self, mark: Marker, scalar: Option<&str>) -> Option<String> {
        let at = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.positions.values.entry(p.clone()).or_insert(at);
                Some(p)
            }
            Some(Frame::Map { path, key, first }) => match key.take() {
                None => {
                    if std::mem::take(first) {
                        self.positions.values.insert(path.clone(), at);
                    }
                    let k = scalar.unwrap_or("?");
                    let p = join(path, k);
                    self.positions.keys.entry(p).or_insert(at);
                    *key = Some(k.to_owned());
                    None
                }
                Some(k) => {
                    let p = join(path, &k);
                    self.positions.values.entry(p.clone()).or_insert(at);
                    Some(p)
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                self.place(mark, Some(&value));
            }
            Event::Alias(_) => {
                self.place(mark, Some("*"));
            }
            Event::MappingStart(..) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                let path = self.place(mark, None).unwrap_or_default();
                if is_key {
                    // A complex key: give it a value slot so the stack stays in step.
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("?".into());
                    }
                }
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    first: true,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.place(mark, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// One pass over the document: where each item of the top-level `rules:` list starts (its
/// first key), and whether the file is plain enough for its rules to be typed apart.
#[derive(Default)]
struct Outline {
    depth: usize,
    /// Depth 2 is inside the `rules:` sequence; a mapping there is a rule. Set while the
    /// first key of such a mapping is awaited, with the mapping's own mark.
    pending: Option<Position>,
    starts: Vec<Position>,
    /// No longer plain, which is one document, a top-level mapping with the one key
    /// `rules`, a list of mappings under it, and no anchor, alias or tag anywhere.
    tangled: bool,
    documents: usize,
    /// Nodes seen directly in the top-level mapping: keys and values alternate.
    top_nodes: usize,
    /// The last top-level key seen.
    top_key: Option<String>,
    /// The top-level `timezone:`, when it is a plain scalar.
    timezone: Option<String>,
}

impl Outline {
    /// Checks a node's place against the plain shape.
    fn node(&mut self, mapping: bool, sequence: bool, key: Option<&str>) {
        let fits = match self.depth {
            0 => mapping,
            // `rules:` (a sequence) and `timezone:` (a scalar), each once, in either order.
            1 => {
                self.top_nodes += 1;
                if self.top_nodes % 2 == 1 {
                    let fresh = self.top_key.as_deref() != key;
                    self.top_key = key.map(str::to_owned);
                    fresh && matches!(key, Some("rules" | "timezone")) && self.top_nodes <= 3
                } else {
                    match self.top_key.as_deref() {
                        Some("rules") => sequence,
                        // Recorded; the file is then typed whole rather than in pieces
                        // (the pieces are cut for a file of `rules:` alone).
                        Some("timezone") => {
                            if !mapping && !sequence {
                                self.timezone = key.map(str::to_owned);
                            }
                            false
                        }
                        _ => false,
                    }
                }
            }
            2 => mapping,
            _ => true,
        };
        self.tangled |= !fits;
    }

    /// A node that is a whole rule (not a mapping), or the first key of a rule mapping,
    /// marks where that rule starts.
    fn item_node(&mut self, at: Position) {
        if self.depth == 2 || (self.depth == 3 && self.pending.take().is_some()) {
            self.starts.push(at);
        }
    }
}

impl MarkedEventReceiver for Outline {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let at = (mark.line(), mark.col() + 1);
        match event {
            Event::DocumentStart => self.documents += 1,
            Event::MappingStart(anchor, ref tag) | Event::SequenceStart(anchor, ref tag) => {
                let mapping = matches!(event, Event::MappingStart(..));
                self.tangled |= anchor != 0 || tag.is_some();
                self.node(mapping, !mapping, None);
                if self.depth == 2 && mapping {
                    // A block mapping is marked at its first `:`; take its first key instead.
                    self.pending = Some(at);
                } else {
                    self.item_node(at);
                }
                self.depth += 1;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.depth = self.depth.saturating_sub(1);
                // An empty mapping (`- {}`) has no first key: it starts at its own mark.
                if self.depth == 2 {
                    if let Some(own) = self.pending.take() {
                        self.starts.push(own);
                    }
                }
            }
            Event::Scalar(ref value, _, anchor, ref tag) => {
                self.tangled |= anchor != 0 || tag.is_some();
                self.node(false, false, Some(value));
                self.item_node(at);
            }
            Event::Alias(_) => {
                self.tangled = true;
                self.item_node(at);
            }
            _ => {}
        }
    }
}

/// Positions for one load: the start of every rule at once (every load needs them), and
/// the full index of every path only when an error needs it.
pub(crate) struct LazyPositions<'a> {
    source: &'a str,
    rules: Vec<Position>,
    /// The file is plain (see `plain_rule_starts`).
    plain: bool,
    too_deep: Option<Position>,
    full: std::cell::OnceCell<Positions>,
    /// The top-level `timezone:`, if the file gives one as a plain scalar.
    timezone: Option<String>,
}

impl<'a> LazyPositions<'a> {
    pub(crate) fn new(source: &'a str) -> LazyPositions<'a> {
        // yaml-rust2 does not skip a byte-order mark; editors do not count it as a column.
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let mut outline = Outline::default();
        let mut parser = Parser::new_from_str(source);
        // Every document, so that a second one (which serde_yaml refuses) is seen. The
        // events are pulled one by one rather than through `load`, so that the pass can stop
        // at the first node nested too deep.
        let mut too_deep = None;
        let read = loop {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) => break true,
                Ok((event, mark)) => {
                    outline.on_event(event, mark);
                    if outline.depth > MAX_YAML_DEPTH {
                        too_deep = Some((mark.line(), mark.col() + 1));
                        break false;
                    }
                }
                // The scanner reads ahead of the events, and refuses flow nesting past 255
                // levels on its own (a `u8` counter) before the events get that deep.
                Err(e) if e.info() == "recursion limit exceeded" => {
                    let mark = e.marker();
                    too_deep = Some((mark.line(), mark.col() + 1));
                    break false;
                }
                Err(_) => break false,
            }
        };
        let (rules, plain) = if read {
            (outline.starts, !outline.tangled && outline.documents == 1)
        } else {
            (Vec::new(), false)
        };
        LazyPositions {
            source,
            rules,
            plain,
            too_deep,
            full: std::cell::OnceCell::new(),
            timezone: outline.timezone,
        }
    }

    /// Positions read from the lines (`split::guess`) instead of by the outline pass: where
    /// the rules start and the time zone, the file plain and not too deep. Where values
    /// and keys are (for errors) is still indexed from the source when first asked.
    pub(crate) fn assumed(
        source: &'a str,
        rules: Vec<Position>,
        timezone: Option<String>,
    ) -> LazyPositions<'a> {
        LazyPositions {
            source,
            rules,
            plain: true,
            too_deep: None,
            full: std::cell::OnceCell::new(),
            timezone,
        }
    }

    /// The file's top-level `timezone:`, if it gives one.
    pub(crate) fn timezone(&self) -> Option<&str> {
        named_zone(self.timezone.as_deref())
    }

    /// Where the document first nests deeper than `MAX_YAML_DEPTH`, if it does. Such a file
    /// must not reach serde_yaml, whose scanner takes time in the square of the depth
    /// (64,000 nested `[` take half a minute).
    pub(crate) fn too_deep(&self) -> Option<Position> {
        self.too_deep
    }

    /// Where each rule starts, when the file is plain: one document whose only key is
    /// `rules`, a list of mappings, and no anchor, alias or tag (which could tie one rule
    /// to another). Such a file's rules can be typed apart.
    pub(crate) fn plain_rule_starts(&self) -> Option<&[Position]> {
        self.plain.then_some(&self.rules[..])
    }

    /// Where rule `i` starts.
    pub(crate) fn rule(&self, i: usize) -> Option<Position> {
        self.rules.get(i).copied()
    }

    /// The 1-based line where each rule starts, in order (the tests read the outline so).
    #[cfg(test)]
    pub(crate) fn rule_lines(&self) -> impl Iterator<Item = usize> + '_ {
        self.rules.iter().map(|(line, _)| *line)
    }

    fn full(&self) -> &Positions {
        self.full.get_or_init(|| Positions::index(self.source))
    }

    pub(crate) fn value(&self, path: &str) -> Option<Position> {
        self.full().value(path)
    }

    pub(crate) fn key(&self, path: &str) -> Option<Position> {
        self.full().key(path)
    }
}

/// A top-level `timezone:` value as a time zone's name: YAML's null (`~`, `null`, nothing)
/// is no time zone, as serde reads it.
fn named_zone(timezone: Option<&str>) -> Option<&str> {
    timezone.filter(|tz| !matches!(tz.trim(), "" | "~" | "null" | "Null" | "NULL"))
}

impl Positions {
    /// Indexes `source`; a document that does not parse gives an empty index (the YAML
    /// error itself is reported by serde_yaml, with its own position).
    pub(crate) fn index(source: &str) -> Positions {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(source);
        match parser.load(&mut walker, false) {
            Ok(()) => walker.positions,
            Err(_) => Positions::default(),
        }
    }

    /// The position of the value at `path`, or of the nearest ancestor that has one.
    pub(crate) fn value(&self, path: &str) -> Option<Position> {
        self.nearest(path, &self.values)
    }

    /// The position of the key that names `path` (for "unknown field" errors), else of the
    /// nearest ancestor.
    pub(crate) fn key(&self, path: &str) -> Option<Position> {
        self.keys
            .get(path)
            .copied()
            .or_else(|| self.nearest(path, &self.values))
    }

    fn nearest(&self, path: &str, map: &HashMap<String, Position>) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(at) = map.get(path) {
                return Some(*at);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
rules:
  - name: a
    when: { keyword: [x, y] }
  - name: b
    when:
      keyword:
        regex: '(('
";

    #[test]
    fn finds_keys_and_values_by_path() {
        let p = Positions::index(DOC);
        assert_eq!(p.value("rules[0]"), Some((2, 5)));
        assert_eq!(p.key("rules[0].name"), Some((2, 5)));
        assert_eq!(p.value("rules[0].name"), Some((2, 11)));
        assert_eq!(p.value("rules[0].when.keyword[1]"), Some((3, 26)));
        assert_eq!(p.value("rules[1].when.keyword.regex"), Some((7, 16)));
        assert_eq!(p.key("rules[1].when.keyword.regex"), Some((7, 9)));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let p = Positions::index(DOC);
        assert_eq!(p.value("rules[1].when.keyword.regex[3]"), Some((7, 16)));
        assert_eq!(p.key("rules[1].when.nothing"), Some((6, 7)));
        assert_eq!(p.value("rules[0].when"), Some((3, 13)));
        assert_eq!(p.value("elsewhere"), None);
    }

    #[test]
    fn rule_starts_agree_with_the_full_index() {
        let doc = format!("{DOC}  - plain\n  - [a, b]\n");
        let lazy = LazyPositions::new(&doc);
        let full = Positions::index(&doc);
        for i in 0..4 {
            assert_eq!(lazy.rule(i), full.value(&format!("rules[{i}]")), "rule {i}");
        }
        assert_eq!(lazy.rule(4), None);
        assert_eq!(lazy.rule_lines().collect::<Vec<_>>(), [2, 4, 8, 9]);
    }

    #[test]
    fn an_empty_rule_starts_at_its_braces() {
        let lazy = LazyPositions::new("rules:\n  - {}\n  - name: b\n");
        assert_eq!(lazy.rule_lines().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(lazy.rule(0), Some((2, 5)));
    }

    #[test]
    fn only_a_plain_file_may_be_typed_apart() {
        let plain =
            "# comment\nrules:\n  - name: a\n    when: { keyword: [x, '1'] }\n  - { name: b }\n";
        assert_eq!(
            LazyPositions::new(plain).plain_rule_starts(),
            Some(&[(3, 5), (5, 7)][..])
        );
        assert_eq!(
            LazyPositions::new("---\nrules: []\n...\n").plain_rule_starts(),
            Some(&[][..])
        );
        for tangled in [
            // Anchors, aliases and tags can tie one rule to another.
            "rules:\n  - &a { name: a }\n",
            "rules:\n  - { name: a, when: &w { keyword: x } }\n  - { name: b, when: *w }\n",
            "rules:\n  - { name: !!str a }\n",
            "rules: !!seq\n  - { name: a }\n",
            // Another shape than one `rules:` list of mappings.
            "rules:\n  - { name: a }\nversion: 2\n",
            "version: 2\nrules:\n  - { name: a }\n",
            "rules:\n  - plain\n",
            "rules:\n  - [a]\n",
            "rules: { a: 1 }\n",
            "- rules\n",
            "rules:\n  - { name: a }\n---\nrules:\n  - { name: b }\n",
            // Not YAML.
            "rules: [",
        ] {
            assert_eq!(
                LazyPositions::new(tangled).plain_rule_starts(),
                None,
                "{tangled}"
            );
        }
    }

    #[test]
    fn broken_yaml_gives_an_empty_index() {
        assert_eq!(Positions::index("a: [").value("a"), None);
    }
}
