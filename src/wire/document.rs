//! A pushed body read once into a flat list of its elements (`Document`: names and texts in
//! one buffer, each element with the index past its descendants), and the JSON object built
//! from that list on demand; `WireError`, why a body is not a usable message. XML and the
//! shape of WeChat's lists only: which fields a message must have is `inbound`'s to say.

use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Value};

/// The deepest element nesting accepted; WeChat's deepest push is 4 levels.
pub const MAX_DEPTH: usize = 16;

/// Why a body is not a usable WeChat message. Every variant is a client error (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty body")]
    Empty,
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A field that must be one leaf appears twice, which would hide it from rules and
    /// dedup (a list has no single value) while the push still looked valid.
    #[error("field `{0}` appears more than once")]
    Duplicate(&'static str),
    #[error("field `{0}` has child elements, expected text")]
    NotText(&'static str),
    #[error("field `{field}` is not a number: `{value}`")]
    NotANumber { field: &'static str, value: String },
    /// The signed `Encrypt` (found by a plain search) is not the one the XML holds.
    #[error("the signed `Encrypt` is not the element the XML holds")]
    EncryptMismatch,
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

/// A body read into a flat list: every element below the root, in document order.
#[derive(Debug, Clone)]
pub(super) struct Document {
    /// Element names and texts, back to back.
    buf: String,
    nodes: Vec<Node>,
    /// The root was written `<xml/>`: no fields, but a valid (empty) object.
    empty_root: bool,
}

#[derive(Debug, Clone)]
struct Node {
    name: Range<usize>,
    /// The element's text (kept whole for a leaf; an element with children has none).
    text: Range<usize>,
    /// The index after its last descendant: `end == index + 1` for a leaf.
    end: usize,
}

/// What a top-level field is in the JSON object of the message: its text is a `&str`,
/// or, kept apart from its document (`Slot`), a range of the document's buffer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shape<T> {
    Absent,
    Text(T),
    /// Repeated, or a container of `<item>`s.
    List,
    Object,
}

pub(super) type Slot = Shape<Range<usize>>;

impl<'a> Shape<&'a str> {
    /// The text of a field that must be one leaf when present.
    pub(super) fn leaf(self, field: &'static str) -> Result<Option<&'a str>, WireError> {
        match self {
            Shape::Absent => Ok(None),
            Shape::Text(text) => Ok(Some(text)),
            Shape::List => Err(WireError::Duplicate(field)),
            Shape::Object => Err(WireError::NotText(field)),
        }
    }
}

impl Document {
    pub(super) fn parse(body: &[u8]) -> Result<Document, WireError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(WireError::Empty);
        }
        let mut reader = Reader::from_reader(body);
        reader.config_mut().check_end_names = true;
        let mut doc = Document {
            buf: String::with_capacity(body.len()),
            nodes: Vec::with_capacity(16),
            empty_root: false,
        };
        // The elements open below the root, by index; and the root's own state.
        let mut open: Vec<usize> = Vec::with_capacity(MAX_DEPTH);
        let (mut root_open, mut root_done) = (false, false);
        // Where the last CDATA section of the element being read ends in `buf`: its text is
        // trimmed of the whitespace around it, but never into a CDATA section.
        let mut cdata_end: Option<usize> = None;
        loop {
            let event = reader.read_event().map_err(malformed)?;
            match event {
                Event::Start(start) => {
                    if root_done {
                        return Err(malformed("content after the root element"));
                    }
                    if open.len() + usize::from(root_open) >= MAX_DEPTH {
                        return Err(WireError::TooDeep);
                    }
                    let qname = start.name();
                    let name = element_name(qname.as_ref())?;
                    if root_open {
                        open.push(doc.push(name));
                        cdata_end = None;
                    } else {
                        root_open = true;
                    }
                }
                Event::Empty(start) => {
                    let qname = start.name();
                    let name = element_name(qname.as_ref())?;
                    if root_open {
                        let at = doc.push(name);
                        doc.nodes[at].end = at + 1;
                        cdata_end = None;
                    } else if !root_done {
                        root_done = true;
                        doc.empty_root = true;
                    } else {
                        return Err(malformed("content after the root element"));
                    }
                }
                Event::End(_) => {
                    if let Some(at) = open.pop() {
                        doc.close(at, cdata_end.take());
                    } else if root_open {
                        root_open = false;
                        root_done = true;
                    } else {
                        return Err(malformed("unexpected end tag"));
                    }
                }
                Event::Text(text) => {
                    let text = text.unescape().map_err(malformed)?;
                    if root_open {
                        doc.push_text(open.last().copied(), &text, cdata_end.is_some());
                    } else if !text.trim().is_empty() {
                        return Err(malformed("text outside the root element"));
                    }
                }
                Event::CData(data) => {
                    if !root_open {
                        return Err(malformed("CDATA outside the root element"));
                    }
                    let text = std::str::from_utf8(&data).map_err(malformed)?;
                    if doc.push_cdata(open.last().copied(), text) {
                        cdata_end = Some(doc.buf.len());
                    }
                }
                Event::DocType(_) => return Err(WireError::Doctype),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if root_open {
            return Err(malformed("unexpected end of document"));
        }
        if !root_done {
            return Err(malformed("no root element"));
        }
        // The root must read as an object: not a bare text, not a list of `<item>`s.
        let mut top = doc.top().peekable();
        if !doc.empty_root && (top.peek().is_none() || top.all(|i| doc.name(i) == "item")) {
            return Err(malformed("the root element has no child elements"));
        }
        Ok(doc)
    }

    /// Adds an element, open (its `end` is set when it closes).
    fn push(&mut self, name: &str) -> usize {
        let start = self.buf.len();
        self.buf.push_str(name);
        let end = self.buf.len();
        self.nodes.push(Node {
            name: start..end,
            text: end..end,
            end: 0,
        });
        self.nodes.len() - 1
    }

    /// Adds text (not CDATA) to the open element `at`, while it has no children (after that
    /// its text is not used) and is not the root (whose text is not used either). Text that
    /// starts the element's value, before any CDATA section, is trimmed of its leading
    /// whitespace: `<MsgType> <![CDATA[event]]> </MsgType>` is `event`, as peers read it.
    fn push_text(&mut self, at: Option<usize>, text: &str, after_cdata: bool) {
        let Some(at) = at else { return };
        if at + 1 == self.nodes.len() {
            let node = &self.nodes[at];
            let text = if after_cdata || node.text.start != node.text.end {
                text
            } else {
                text.trim_start_matches(is_xml_space)
            };
            self.buf.push_str(text);
            self.nodes[at].text.end = self.buf.len();
        }
    }

    /// Adds a CDATA section's text, exactly as sent, as `push_text` adds text; whether it
    /// was added.
    fn push_cdata(&mut self, at: Option<usize>, text: &str) -> bool {
        let Some(at) = at else { return false };
        if at + 1 != self.nodes.len() {
            return false;
        }
        self.buf.push_str(text);
        self.nodes[at].text.end = self.buf.len();
        true
    }

    /// Closes element `at`. A leaf's text, the last thing in the buffer, loses its trailing
    /// whitespace, down to the end of its last CDATA section (`cdata_end`) at most.
    fn close(&mut self, at: usize, cdata_end: Option<usize>) {
        self.nodes[at].end = self.nodes.len();
        if at + 1 != self.nodes.len() {
            return;
        }
        let text = self.nodes[at].text.clone();
        let keep = cdata_end.unwrap_or(text.start).max(text.start);
        let tail = self.buf.get(keep..text.end).unwrap_or_default();
        let end = keep + tail.trim_end_matches(is_xml_space).len();
        self.buf.truncate(end);
        self.nodes[at].text.end = end;
    }

    fn name(&self, at: usize) -> &str {
        self.buf
            .get(self.nodes[at].name.clone())
            .unwrap_or_default()
    }

    fn text(&self, at: usize) -> &str {
        self.buf
            .get(self.nodes[at].text.clone())
            .unwrap_or_default()
    }

    /// The children of the root, in order.
    fn top(&self) -> Children<'_> {
        Children {
            nodes: &self.nodes,
            next: 0,
            end: self.nodes.len(),
        }
    }

    /// The children of element `at`, in order.
    fn children(&self, at: usize) -> Children<'_> {
        Children {
            nodes: &self.nodes,
            next: at + 1,
            end: self.nodes[at].end,
        }
    }

    /// What the top-level field `name` is in the message's JSON object.
    pub(super) fn field(&self, name: &str) -> Shape<&str> {
        let [slot] = self.slots(&[name]);
        self.shape(&slot)
    }

    /// What each top-level field of `names` is, in one pass over the fields.
    pub(super) fn slots<const N: usize>(&self, names: &[&str; N]) -> [Slot; N] {
        // Per name: how many fields have it, and the first.
        let mut found = [(0usize, 0usize); N];
        for i in self.top() {
            let name = self.name(i);
            if let Some(at) = names.iter().position(|&n| n == name) {
                let (count, first) = &mut found[at];
                if *count == 0 {
                    *first = i;
                }
                *count += 1;
            }
        }
        found.map(|(count, at)| match count {
            0 => Shape::Absent,
            1 => {
                let mut children = self.children(at).peekable();
                if children.peek().is_none() {
                    Shape::Text(self.nodes[at].text.clone())
                } else if children.all(|i| self.name(i) == "item") {
                    Shape::List
                } else {
                    Shape::Object
                }
            }
            _ => Shape::List,
        })
    }

    pub(super) fn shape(&self, slot: &Slot) -> Shape<&str> {
        match slot {
            Shape::Absent => Shape::Absent,
            Shape::Text(text) => Shape::Text(self.buf.get(text.clone()).unwrap_or_default()),
            Shape::List => Shape::List,
            Shape::Object => Shape::Object,
        }
    }

    /// The JSON value of element `at`.
    fn value(&self, at: usize) -> Value {
        let children = self
            .children(at)
            .map(|i| (self.name(i).to_owned(), self.value(i)))
            .collect();
        close(self.name(at), children, self.text(at).to_owned())
    }

    /// The message as a JSON object.
    pub(super) fn tree(&self) -> Map<String, Value> {
        let children = self
            .top()
            .map(|i| (self.name(i).to_owned(), self.value(i)))
            .collect();
        match close("xml", children, String::new()) {
            Value::Object(map) => map,
            // `parse` refused any other root.
            _ => Map::new(),
        }
    }
}

/// The children of one element: the nodes one level below it, skipping their descendants.
struct Children<'a> {
    nodes: &'a [Node],
    next: usize,
    end: usize,
}

impl Iterator for Children<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next >= self.end {
            return None;
        }
        let at = self.next;
        self.next = self.nodes.get(at).map_or(self.end, |n| n.end.max(at + 1));
        Some(at)
    }
}

/// XML's whitespace (`S` in the XML 1.0 grammar): what the layout of a document adds
/// around values, unlike the full-width space or NBSP, which are text.
pub(super) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn element_name(raw: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(raw).map_err(malformed)
}

/// Turns a closed element `name` into its value: text for a leaf, a list for a container
/// of `<item>`s, otherwise an object whose repeated names become lists, as do the names the
/// catalog says can repeat (`SubscribeMsgSentEvent`'s `List`) even when one comes.
fn close(name: &str, children: Vec<(String, Value)>, text: String) -> Value {
    if children.is_empty() {
        return Value::String(text);
    }
    if children.iter().all(|(name, _)| name == "item") {
        return Value::Array(children.into_iter().map(|(_, v)| v).collect());
    }
    let name_of_parent = name;
    let mut map = Map::with_capacity(children.len());
    for (name, value) in children {
        match map.get_mut(&name) {
            Some(Value::Array(list)) => list.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None if super::catalog::always_list(name_of_parent, &name) => {
                map.insert(name, Value::Array(vec![value]));
            }
            None => {
                map.insert(name, value);
            }
        }
    }
    Value::Object(map)
}

/// The parser this module had before the flat `Document`: it built the JSON tree directly.
/// Kept as the reference the property test holds `Document` to.
#[cfg(test)]
mod reference {
    use super::*;

    /// An element being read: its name, its children so far and its text so far, in
    /// pieces (whether each is a CDATA section's).
    struct Open {
        name: String,
        children: Vec<(String, Value)>,
        pieces: Vec<(String, bool)>,
    }

    /// An element's text from its pieces: the text before the first CDATA section trimmed
    /// at its start, the text after the last one at its end (all of it both ways when
    /// there is no CDATA); CDATA sections as they are.
    fn joined(pieces: &[(String, bool)]) -> String {
        let first = pieces.iter().position(|(_, cdata)| *cdata);
        let last = pieces.iter().rposition(|(_, cdata)| *cdata);
        let concat = |range: &[(String, bool)]| -> String {
            range.iter().map(|(text, _)| text.as_str()).collect()
        };
        match (first, last) {
            (Some(first), Some(last)) => {
                let before = concat(&pieces[..first]);
                let after = concat(&pieces[last + 1..]);
                format!(
                    "{}{}{}",
                    before.trim_start_matches(is_xml_space),
                    concat(&pieces[first..=last]),
                    after.trim_end_matches(is_xml_space)
                )
            }
            _ => concat(pieces).trim_matches(is_xml_space).to_owned(),
        }
    }

    pub(super) fn parse_tree(body: &[u8]) -> Result<Map<String, Value>, WireError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(WireError::Empty);
        }
        let mut reader = Reader::from_reader(body);
        reader.config_mut().check_end_names = true;
        let mut stack: Vec<Open> = Vec::new();
        let mut root: Option<Value> = None;
        loop {
            let event = reader.read_event().map_err(malformed)?;
            match event {
                Event::Start(start) => {
                    if root.is_some() {
                        return Err(malformed("content after the root element"));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(WireError::TooDeep);
                    }
                    stack.push(Open {
                        name: element_name(start.name().as_ref())?.to_owned(),
                        children: Vec::new(),
                        pieces: Vec::new(),
                    });
                }
                Event::Empty(start) => {
                    let name = element_name(start.name().as_ref())?.to_owned();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push((name, Value::String(String::new()))),
                        None if root.is_none() => root = Some(Value::Object(Map::new())),
                        None => return Err(malformed("content after the root element")),
                    }
                }
                Event::End(_) => {
                    let Some(open) = stack.pop() else {
                        return Err(malformed("unexpected end tag"));
                    };
                    let value = close(&open.name, open.children, joined(&open.pieces));
                    match stack.last_mut() {
                        Some(parent) => parent.children.push((open.name, value)),
                        None => root = Some(value),
                    }
                }
                Event::Text(text) => {
                    let text = text.unescape().map_err(malformed)?;
                    match stack.last_mut() {
                        Some(open) => open.pieces.push((text.into_owned(), false)),
                        None if text.trim().is_empty() => {}
                        None => return Err(malformed("text outside the root element")),
                    }
                }
                Event::CData(data) => {
                    let Some(open) = stack.last_mut() else {
                        return Err(malformed("CDATA outside the root element"));
                    };
                    let text = std::str::from_utf8(&data).map_err(malformed)?;
                    open.pieces.push((text.to_owned(), true));
                }
                Event::DocType(_) => return Err(WireError::Doctype),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err(malformed("unexpected end of document"));
        }
        match root {
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(malformed("the root element has no child elements")),
            None => Err(malformed("no root element")),
        }
    }
}

#[cfg(test)]
mod equivalence {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::inbound::COMMON;

    const NAMES: &[&str] = &[
        "ToUserName",
        "FromUserName",
        "CreateTime",
        "MsgType",
        "Event",
        "MsgId",
        "Content",
        "Encrypt",
        "item",
        "Tag",
        "A",
    ];
    const TEXTS: &[&str] = &[
        "",
        " ",
        "x",
        "1348831860",
        "a &lt; b &amp; c",
        "价格",
        "\n  ",
        " x ",
        "\t价格\n",
    ];

    #[derive(Debug, Clone)]
    enum Xml {
        Element(&'static str, Vec<Xml>),
        Empty(&'static str),
        Text(&'static str),
        CData(&'static str),
    }

    impl Xml {
        fn write(&self, out: &mut String) {
            match self {
                Xml::Element(name, children) => {
                    out.push_str(&format!("<{name}>"));
                    for child in children {
                        child.write(out);
                    }
                    out.push_str(&format!("</{name}>"));
                }
                Xml::Empty(name) => out.push_str(&format!("<{name}/>")),
                Xml::Text(text) => out.push_str(text),
                Xml::CData(text) => out.push_str(&format!("<![CDATA[{text}]]>")),
            }
        }
    }

    fn xml() -> impl Strategy<Value = Xml> {
        let leaf = prop_oneof![
            prop::sample::select(NAMES).prop_map(Xml::Empty),
            prop::sample::select(TEXTS).prop_map(Xml::Text),
            prop::sample::select(TEXTS).prop_map(Xml::CData),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            (
                prop::sample::select(NAMES),
                prop::collection::vec(inner, 0..6),
            )
                .prop_map(|(name, children)| Xml::Element(name, children))
        })
    }

    /// What `field` tells, in the terms of the reference's JSON object.
    fn shape_as_json(shape: &Shape<&str>) -> Option<&'static str> {
        match shape {
            Shape::Absent => None,
            Shape::Text(_) => Some("string"),
            Shape::List => Some("array"),
            Shape::Object => Some("object"),
        }
    }

    fn json_kind(value: Option<&Value>) -> Option<&'static str> {
        value.map(|v| match v {
            Value::String(_) => "string",
            Value::Array(_) => "array",
            _ => "object",
        })
    }

    #[test]
    fn an_unknown_entity_is_refused_alike() {
        let body = b"<xml><ToUserName>&bad;</ToUserName></xml>";
        let old = reference::parse_tree(body).unwrap_err().to_string();
        let new = Document::parse(body).unwrap_err().to_string();
        assert_eq!(old, new);
        assert!(new.starts_with("malformed XML"), "{new}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The flat document accepts and refuses exactly what the tree parser did, with the
        /// same reason, and gives the same JSON object and the same top-level fields.
        #[test]
        fn document_reads_bodies_as_the_tree_parser_did(
            before in prop_oneof![
                6 => prop::sample::select(&["", "<?xml version=\"1.0\"?>", " \n", "<!-- c -->"][..]),
                1 => prop::sample::select(&["junk", "<![CDATA[x]]>", "</x>"][..]),
            ],
            children in prop::collection::vec(xml(), 0..8),
            bare_root in any::<bool>(),
            after in prop_oneof![
                6 => prop::sample::select(&["", "\n", "<!-- c -->"][..]),
                1 => prop::sample::select(&["junk", "<xml/>", "<a></a>", "</x>"][..]),
            ],
        ) {
            let mut body = String::from(before);
            if bare_root && children.is_empty() {
                body.push_str("<xml/>");
            } else {
                Xml::Element("xml", children).write(&mut body);
            }
            body.push_str(after);
            let old = reference::parse_tree(body.as_bytes());
            let new = Document::parse(body.as_bytes());
            match (old, new) {
                (Err(old), Err(new)) => prop_assert_eq!(old.to_string(), new.to_string(), "{}", body),
                (Ok(old), Ok(new)) => {
                    prop_assert_eq!(&new.tree(), &old, "{}", body);
                    // All common fields in one pass, as `Message` reads them.
                    let common = new.slots(&COMMON);
                    for (slot, name) in common.iter().zip(COMMON) {
                        prop_assert_eq!(shape_as_json(&new.shape(slot)), json_kind(old.get(name)), "{} in {}", name, body);
                    }
                    for name in NAMES {
                        prop_assert_eq!(shape_as_json(&new.field(name)), json_kind(old.get(*name)), "{} in {}", name, body);
                        if let (Shape::Text(text), Some(Value::String(old))) = (new.field(name), old.get(*name)) {
                            prop_assert_eq!(text, old.as_str());
                        }
                    }
                }
                (old, new) => prop_assert!(false, "{body}: old {old:?}, new {new:?}"),
            }
        }
    }
}
