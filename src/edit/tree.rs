//! The rules file as a tree of nodes, each with the byte span of its text, built from
//! yaml-rust2's marked events. The events give where a node starts; where it ends is read
//! here from the text (a quoted scalar's closing quote, a plain scalar's folded lines, a block
//! scalar's indented lines, a flow collection's bracket). No YAML is written here.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use super::text::{column, line_end, line_start, next_line};

/// A node of the document and where its text is.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// The first byte of the node's text (a block mapping: its first key; a block scalar:
    /// its `|` or `>`; a block sequence: its first `-`).
    pub(super) start: usize,
    /// Past the last byte of the node's text (not of a comment after it).
    pub(super) end: usize,
    pub(super) kind: Kind,
    /// An anchor or an alias on this node or inside it: such a node is not edited.
    pub(super) tangled: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// A scalar or an alias; `empty` is a value left out (`key:` and nothing).
    Scalar {
        value: String,
        empty: bool,
    },
    Map {
        flow: bool,
        entries: Vec<Entry>,
    },
    Seq {
        flow: bool,
        items: Vec<Node>,
    },
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) key: Node,
    pub(super) value: Node,
    /// The `:` after the key (`None` for an explicit `? key`, which is never edited).
    pub(super) colon: Option<usize>,
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub(super) fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar {
                value,
                empty: false,
            } => Some(value),
            _ => None,
        }
    }

    pub(super) fn entries(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map { entries, .. } => Some(entries),
            _ => None,
        }
    }

    /// The entry of this mapping whose key is `key`.
    pub(super) fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key.scalar() == Some(key))
    }

    /// Whether this is a flow collection (`{…}`, `[…]`).
    pub(super) fn is_flow(&self) -> bool {
        matches!(
            self.kind,
            Kind::Map { flow: true, .. } | Kind::Seq { flow: true, .. }
        )
    }

    /// Whether this is a block mapping or sequence.
    pub(super) fn is_block_collection(&self) -> bool {
        matches!(
            self.kind,
            Kind::Map { flow: false, .. } | Kind::Seq { flow: false, .. }
        )
    }

    pub(super) fn is_empty_value(&self) -> bool {
        matches!(self.kind, Kind::Scalar { empty: true, .. })
    }
}

/// Why the text could not be read as one YAML document.
#[derive(Debug)]
pub(super) struct Unreadable(pub(super) String);

/// Reads `text` into its tree: the root node of its one document (`None` for an empty one).
pub(super) fn parse(text: &str) -> Result<Option<Node>, Unreadable> {
    if let Some((line, column)) = crate::rules::too_deep(text) {
        return Err(Unreadable(format!(
            "line {line}, column {column}: nested deeper than {} levels",
            crate::rules::MAX_YAML_DEPTH
        )));
    }
    // yaml-rust2 does not skip a byte-order mark, and counts its markers in characters.
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let body = &text[bom..];
    let mut builder = Builder {
        text,
        stack: Vec::new(),
        root: None,
        cursor: bom,
        documents: 0,
        marks: Marks::new(body),
    };
    let mut parser = Parser::new_from_str(body);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((event, mark)) => {
                let at = bom + builder.marks.byte(mark.line(), mark.col());
                builder.on(event, at)?;
            }
            Err(e) => {
                let mark = e.marker();
                return Err(Unreadable(format!(
                    "line {}, column {}: {}",
                    mark.line(),
                    mark.col() + 1,
                    e.info()
                )));
            }
        }
    }
    if builder.documents > 1 {
        return Err(Unreadable("more than one YAML document".into()));
    }
    Ok(builder.root)
}

/// A marker's line and column to a byte offset. yaml-rust2's character index drifts after a
/// block scalar holding characters outside ASCII (`|-` then `退款`); its line (from 1) and
/// column (in characters, from 0) do not.
struct Marks<'t> {
    text: &'t str,
    /// Where each line starts.
    lines: Vec<usize>,
}

impl<'t> Marks<'t> {
    fn new(text: &'t str) -> Marks<'t> {
        let lines = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Marks { text, lines }
    }

    fn byte(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.lines.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = self.text.get(start..).unwrap_or("");
        start
            + rest
                .char_indices()
                .nth(column)
                .map_or(rest.len(), |(i, _)| i)
    }
}

enum Frame {
    Map {
        node: Node,
        entries: Vec<Entry>,
        key: Option<Node>,
    },
    Seq {
        node: Node,
        items: Vec<Node>,
    },
}

struct Builder<'t> {
    text: &'t str,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Past the last node completed: where the text of the next one is looked for.
    cursor: usize,
    documents: usize,
    marks: Marks<'t>,
}

impl Builder<'_> {
    fn on(&mut self, event: Event, at: usize) -> Result<(), Unreadable> {
        match event {
            Event::DocumentStart => self.documents += 1,
            Event::Scalar(value, style, anchor, _) => {
                let node = self.scalar(value, style, at, anchor != 0)?;
                self.complete(node);
            }
            Event::Alias(_) => {
                let end = at
                    + 1
                    + self.text[at + 1..]
                        .find(|c: char| c.is_whitespace() || ",[]{}".contains(c))
                        .unwrap_or(self.text.len() - at - 1);
                let value = self.text[at..end].to_owned();
                self.complete(Node {
                    start: at,
                    end,
                    kind: Kind::Scalar {
                        value,
                        empty: false,
                    },
                    tangled: true,
                });
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let mapping = matches!(event, Event::MappingStart(..));
                let (start, flow) = self.collection_start(at, mapping);
                let kind = if mapping {
                    Kind::Map {
                        flow,
                        entries: Vec::new(),
                    }
                } else {
                    Kind::Seq {
                        flow,
                        items: Vec::new(),
                    }
                };
                let node = Node {
                    start,
                    end: start,
                    kind,
                    tangled: anchor != 0,
                };
                if flow {
                    self.cursor = start + 1;
                }
                self.stack.push(if mapping {
                    Frame::Map {
                        node,
                        entries: Vec::new(),
                        key: None,
                    }
                } else {
                    Frame::Seq {
                        node,
                        items: Vec::new(),
                    }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let node = self.close(at)?;
                self.complete(node);
            }
            _ => {}
        }
        Ok(())
    }

    /// Where a collection marked at `at` starts, and whether it may be a flow one (`close`
    /// decides). A block mapping is marked at its first `:`, its start set from its first key
    /// instead; a sequence not indented under its key (`rules:\n- a`) is marked at its first
    /// item, its start moved back to that item's `-`.
    fn collection_start(&self, at: usize, mapping: bool) -> (usize, bool) {
        let rest = &self.text[at..];
        let skipped = skip_properties(rest);
        match rest[skipped..].chars().next() {
            Some('{') if mapping => return (at + skipped, true),
            Some('[') if !mapping => return (at + skipped, true),
            _ => {}
        }
        let before = self.text[..at].trim_end_matches(' ');
        match before.strip_suffix('-') {
            Some(dash) if !mapping && !self.text[at..].starts_with('-') => (dash.len(), false),
            _ => (at, false),
        }
    }

    fn close(&mut self, at: usize) -> Result<Node, Unreadable> {
        let Some(frame) = self.stack.pop() else {
            return Err(Unreadable("unbalanced YAML events".into()));
        };
        let (mut node, last_end, first_start) = match frame {
            Frame::Map {
                mut node, entries, ..
            } => {
                let last = entries.last().map(|e| e.value.end);
                let first = entries.first().map(|e| e.key.start);
                node.tangled |= entries.iter().any(|e| e.key.tangled || e.value.tangled);
                node.kind = match node.kind {
                    Kind::Map { flow, .. } => Kind::Map { flow, entries },
                    kind => kind,
                };
                (node, last, first)
            }
            Frame::Seq { mut node, items } => {
                let last = items.last().map(|n| n.end);
                node.tangled |= items.iter().any(|n| n.tangled);
                node.kind = match node.kind {
                    Kind::Seq { flow, .. } => Kind::Seq { flow, items },
                    kind => kind,
                };
                (node, last, None)
            }
        };
        // A flow collection ends at its bracket. A block sequence whose first item is a flow
        // collection was marked at that item's bracket: its end marker is no bracket.
        let closing = if matches!(node.kind, Kind::Map { .. }) {
            b'}'
        } else {
            b']'
        };
        if node.is_flow() && self.text.as_bytes().get(at) != Some(&closing) {
            node.kind = match node.kind {
                Kind::Map { entries, .. } => Kind::Map {
                    flow: false,
                    entries,
                },
                Kind::Seq { items, .. } => Kind::Seq { flow: false, items },
                kind => kind,
            };
            let before = self.text[..node.start].trim_end_matches(' ');
            if let Some(dash) = before.strip_suffix('-') {
                node.start = dash.len();
            }
        }
        if node.is_flow() {
            node.end = at + 1;
        } else {
            if let (Kind::Map { .. }, Some(first)) = (&node.kind, first_start) {
                node.start = first;
            }
            node.end = last_end.unwrap_or(node.start);
        }
        Ok(node)
    }

    /// Places a finished node in its parent (or as the root).
    fn complete(&mut self, node: Node) {
        self.cursor = self.cursor.max(node.end);
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let colon = colon_after(self.text, k.end);
                    entries.push(Entry {
                        key: k,
                        value: node,
                        colon,
                    });
                }
            },
        }
    }

    fn scalar(
        &self,
        value: String,
        style: TScalarStyle,
        at: usize,
        anchored: bool,
    ) -> Result<Node, Unreadable> {
        let text = self.text;
        let fail = || {
            Unreadable(format!(
                "line {}: cannot find the end of a scalar",
                super::text::line_number(text, at)
            ))
        };
        let (start, end, empty) = match style {
            TScalarStyle::Plain if value.is_empty() => {
                // A value left out: the parser marks it at the next token; it sits right
                // after its key's `:` (or, in a sequence, where the last node ended).
                let here = match self.stack.last() {
                    Some(Frame::Map { key: Some(k), .. }) => {
                        colon_after(text, k.end).map_or(self.cursor, |c| c + 1)
                    }
                    _ => self.cursor,
                };
                (here, here, true)
            }
            TScalarStyle::Plain => (at, plain_end(text, at, &value).ok_or_else(fail)?, false),
            TScalarStyle::SingleQuoted => {
                (at, quoted_end(text, at, b'\'').ok_or_else(fail)?, false)
            }
            TScalarStyle::DoubleQuoted => (at, quoted_end(text, at, b'"').ok_or_else(fail)?, false),
            TScalarStyle::Literal | TScalarStyle::Folded => {
                let header = self.cursor + text[self.cursor..].find(['|', '>']).ok_or_else(fail)?;
                (header, self.block_scalar_end(header), false)
            }
        };
        Ok(Node {
            start,
            end,
            kind: Kind::Scalar { value, empty },
            tangled: anchored,
        })
    }

    /// The end of the block scalar whose header is at `header`: its last line indented
    /// deeper than its parent (blank lines at its end are not counted).
    fn block_scalar_end(&self, header: usize) -> usize {
        let text = self.text;
        let parent = match self.stack.last() {
            Some(Frame::Map { key: Some(k), .. }) => column(text, k.start),
            Some(Frame::Seq { node, .. }) if !node.is_flow() => column(text, node.start),
            _ => super::text::indent(text, line_start(text, header)),
        };
        let mut end = line_end(text, header);
        let mut line = next_line(text, header);
        while line < text.len() {
            let l = &text[line..line_end(text, line)];
            let blank = l.trim_matches(' ').is_empty();
            if !blank {
                if super::text::indent(text, line) <= parent {
                    break;
                }
                end = line_end(text, line);
            }
            line = next_line(text, line);
        }
        end
    }
}

/// The `:` after a key ending at `end`, past spaces and tabs.
fn colon_after(text: &str, end: usize) -> Option<usize> {
    let rest = &text[end..];
    let skipped = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    (rest[skipped..].starts_with(':')).then_some(end + skipped)
}

/// The length of the anchors and tags (`&a !!map `) that start `rest`.
fn skip_properties(rest: &str) -> usize {
    let mut at = 0;
    while let Some(c) = rest[at..].chars().next() {
        if c == '&' || c == '!' {
            at += rest[at..]
                .find([' ', '\t', '\r', '\n'])
                .unwrap_or(rest.len() - at);
        } else if c == ' ' || c == '\t' {
            at += 1;
        } else {
            break;
        }
    }
    at
}

/// Past the closing quote of the quoted scalar opening at `start`.
fn quoted_end(text: &str, start: usize, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Past the last character of the plain scalar at `start` whose value is `value`: its text
/// is the value, but for line breaks, which fold (one break is a space, n breaks n−1
/// newlines) and drop the blanks around them.
fn plain_end(text: &str, start: usize, value: &str) -> Option<usize> {
    let src = text.as_bytes();
    let val = value.as_bytes();
    let (mut i, mut j) = (start, 0);
    while j < val.len() {
        let blank = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        if i < src.len() && blank(src[i]) {
            let run_start = i;
            while i < src.len() && blank(src[i]) {
                i += 1;
            }
            let run = &src[run_start..i];
            let breaks = run.iter().filter(|&&b| b == b'\n').count();
            let folded: Vec<u8> = match breaks {
                0 => run.to_vec(),
                1 => vec![b' '],
                n => vec![b'\n'; n - 1],
            };
            if !val[j..].starts_with(&folded) {
                return None;
            }
            j += folded.len();
        } else if i < src.len() && src[i] == val[j] {
            i += 1;
            j += 1;
        } else {
            return None;
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap().unwrap()
    }

    fn span<'t>(text: &'t str, node: &Node) -> &'t str {
        &text[node.start..node.end]
    }

    #[test]
    fn spans_of_every_scalar_style() {
        let text = "\u{feff}a: plain  # c\nb: 'it''s'\nc: \"q\\\"x\"\nd: |-\n  one\n   two\n\n  # x\ne: two\n  lines\nf:\ng: 中文 值\n";
        let r = root(text);
        let spans: Vec<(&str, &str)> = r
            .entries()
            .unwrap()
            .iter()
            .map(|e| (span(text, &e.key), span(text, &e.value)))
            .collect();
        assert_eq!(
            spans,
            [
                ("a", "plain"),
                ("b", "'it''s'"),
                ("c", "\"q\\\"x\""),
                ("d", "|-\n  one\n   two\n\n  # x"),
                ("e", "two\n  lines"),
                ("f", ""),
                ("g", "中文 值"),
            ]
        );
        let f = r.entry("f").unwrap();
        assert!(f.value.is_empty_value());
        assert_eq!(f.value.start, f.colon.unwrap() + 1);
        assert_eq!((r.start, r.end), (3, text.len() - 1));
    }

    #[test]
    fn spans_of_collections() {
        let text =
            "rules:\n  - name: a\n    when: { keyword: [x, \"y\"] }   # c\n  - { name: b }\n";
        let r = root(text);
        let rules = &r.entry("rules").unwrap().value;
        assert!(!rules.is_flow());
        let Kind::Seq { items, .. } = &rules.kind else {
            panic!()
        };
        assert_eq!(
            span(text, &items[0]),
            "name: a\n    when: { keyword: [x, \"y\"] }"
        );
        assert_eq!(span(text, &items[1]), "{ name: b }");
        assert!(items[1].is_flow());
        let when = &items[0].entry("when").unwrap().value;
        assert_eq!(span(text, when), "{ keyword: [x, \"y\"] }");
        assert_eq!(
            span(text, &when.entry("keyword").unwrap().value),
            "[x, \"y\"]"
        );
    }

    #[test]
    fn spans_after_block_scalars_of_chinese_text() {
        // yaml-rust2's character index drifts past these; its lines and columns do not.
        let text =
            "a:\n  t: |-\n    退款\n    y\nb: { c: 价格 }\nd: >\n  退款退款\n\n  退款\ne: 价\n";
        let r = root(text);
        let spans: Vec<(&str, &str)> = r
            .entries()
            .unwrap()
            .iter()
            .map(|e| (span(text, &e.key), span(text, &e.value)))
            .collect();
        assert_eq!(
            spans,
            [
                ("a", "t: |-\n    退款\n    y"),
                ("b", "{ c: 价格 }"),
                ("d", ">\n  退款退款\n\n  退款"),
                ("e", "价"),
            ]
        );
    }

    #[test]
    fn anchors_and_aliases_tangle_their_nodes() {
        let r = root("a: &x { k: 1 }\nb: [*x]\nc: plain\n");
        let e = r.entries().unwrap();
        assert!(e[0].value.tangled && e[1].value.tangled && !e[2].value.tangled);
    }

    #[test]
    fn refuses_what_is_not_one_document() {
        assert!(parse("a: [").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert!(parse(&"[".repeat(100)).is_err());
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn crlf_spans() {
        let text = "rules:\r\n  - name: a\r\n    reply: |\r\n      hi\r\n  - name: b\r\n";
        let r = root(text);
        let Kind::Seq { items, .. } = &r.entry("rules").unwrap().value.kind else {
            panic!()
        };
        assert_eq!(span(text, &items[0]), "name: a\r\n    reply: |\r\n      hi");
        assert_eq!(span(text, &items[1]), "name: b");
    }
}
