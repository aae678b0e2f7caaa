//! Parses a pushed message into fields named as WeChat names them.
//!
//! The body is read once into a flat list of its elements (names and texts in one buffer):
//! the fields a request reads (`MsgType`, `Content`, `EventKey`, …) are found there without
//! building anything. Templates see the message as a JSON object, built from that list on
//! first use: a leaf element is a string, an element with children is an object, a repeated
//! element (or a container of `<item>`s, as in `PicList`) is a list. Nothing is dropped, so
//! unknown message kinds stay routable.

use std::ops::Range;
use std::sync::OnceLock;

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

/// The top-level fields every request reads (the signature of the message, routing,
/// dedup, the log line), found in one pass at parse time. The accessors below read them
/// by index.
const COMMON: [&str; 10] = [
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Event",
    "EventKey",
    "MsgId",
    "MsgID",
    "Content",
    "Recognition",
];
const TO_USER: usize = 0;
const FROM_USER: usize = 1;
const MSG_TYPE: usize = 3;
const EVENT: usize = 4;
const MSG_ID: usize = 6;
const MSG_ID_UPPER: usize = 7;
const CONTENT: usize = 8;
const RECOGNITION: usize = 9;

/// A field found by `Message::get`: a leaf's text, or its value in the JSON object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    Text(&'a str),
    Json(&'a Value),
}

/// One pushed message or event, with every field reachable by its WeChat name.
#[derive(Debug, Clone)]
pub struct Message {
    document: Document,
    /// What each of `COMMON` is, in that order.
    common: [Slot; COMMON.len()],
    create_time: u64,
    /// The fields as a JSON object, built on first use (templates, nested paths).
    tree: OnceLock<Map<String, Value>>,
}

/// Two messages are equal when their fields are.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.create_time == other.create_time && self.fields() == other.fields()
    }
}

impl Message {
    /// Parses the XML body WeChat posts (`<xml>…</xml>`).
    ///
    /// Fails on anything that is not one well-formed element tree with the common fields
    /// (`ToUserName`, `FromUserName`, `CreateTime`, `MsgType`), each once and as text;
    /// `CreateTime` and a `MsgId`/`MsgID`, when present, must be unsigned 64-bit numbers,
    /// and they and `Event` may appear only once.
    pub fn parse(body: &[u8]) -> Result<Message, WireError> {
        let document = Document::parse(body)?;
        let message = Message {
            common: document.slots(&COMMON),
            document,
            create_time: 0,
            tree: OnceLock::new(),
        };
        for name in ["ToUserName", "FromUserName", "MsgType"] {
            if message.leaf(name)?.is_none() {
                return Err(WireError::Missing(name));
            }
        }
        message.leaf("Event")?;
        let create_time = message
            .number("CreateTime")?
            .ok_or(WireError::Missing("CreateTime"))?;
        message.number("MsgId")?;
        message.number("MsgID")?;
        Ok(Message {
            create_time,
            ..message
        })
    }

    /// The text of a field that must be a single leaf when present.
    fn leaf(&self, field: &'static str) -> Result<Option<&str>, WireError> {
        self.shape(field).leaf(field)
    }

    /// What the top-level field `name` is; from the parse-time pass for a common field.
    fn shape(&self, name: &str) -> Shape<&str> {
        match COMMON.iter().position(|&c| c == name) {
            Some(at) => self.document.shape(&self.common[at]),
            None => self.document.field(name),
        }
    }

    fn number(&self, field: &'static str) -> Result<Option<u64>, WireError> {
        let Some(text) = self.leaf(field)? else {
            return Ok(None);
        };
        text.trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| WireError::NotANumber {
                field,
                value: text.chars().take(40).collect(),
            })
    }

    /// The string value of a top-level field, if it is present and a leaf.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.shape(name) {
            Shape::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The string value at a dotted path (`ScanCodeInfo.ScanResult`, `PicList.0.PicMd5Sum`).
    pub fn lookup(&self, path: &str) -> Option<&str> {
        match self.get(path.split('.'))? {
            FieldRef::Text(text) => Some(text),
            FieldRef::Json(value) => value.as_str(),
        }
    }

    /// The field at a path of names and list indexes, as templates see it. A top-level
    /// leaf (or a missing field) is read without building the JSON object.
    pub fn get<'p>(&self, path: impl IntoIterator<Item = &'p str>) -> Option<FieldRef<'_>> {
        let mut parts = path.into_iter().peekable();
        let first = parts.next()?;
        match self.shape(first) {
            Shape::Absent => return None,
            Shape::Text(text) if parts.peek().is_none() => return Some(FieldRef::Text(text)),
            _ => {}
        }
        let mut value = self.fields().get(first)?;
        for part in parts {
            value = match value {
                Value::Object(map) => map.get(part)?,
                Value::Array(list) => list.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(FieldRef::Json(value))
    }

    /// The text of `COMMON[at]`, straight from the parse-time pass.
    fn common_text(&self, at: usize) -> Option<&str> {
        match self.document.shape(self.common.get(at)?) {
            Shape::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The account the message was sent to (`ToUserName`, a `gh_…` id).
    pub fn to_user(&self) -> &str {
        self.common_text(TO_USER).unwrap_or_default()
    }

    /// The user who sent it (`FromUserName`, an OpenID).
    pub fn from_user(&self) -> &str {
        self.common_text(FROM_USER).unwrap_or_default()
    }

    /// `MsgType` as sent (`text`, `event`, …).
    pub fn msg_type(&self) -> &str {
        self.common_text(MSG_TYPE).unwrap_or_default()
    }

    /// `Event`, for `MsgType` event.
    pub fn event(&self) -> Option<&str> {
        self.common_text(EVENT)
    }

    /// `CreateTime`, unix seconds.
    pub fn create_time(&self) -> u64 {
        self.create_time
    }

    /// `MsgId` of a normal message (`MsgID` in some events), as sent.
    pub fn msg_id(&self) -> Option<&str> {
        self.common_text(MSG_ID)
            .or_else(|| self.common_text(MSG_ID_UPPER))
    }

    /// The text keyword rules read: a text message's `Content`, else a voice message's
    /// `Recognition`.
    pub fn keyword_text(&self) -> Option<&str> {
        self.common_text(CONTENT)
            .or_else(|| self.common_text(RECOGNITION))
    }

    /// All fields as a JSON object, for templates; built on the first call.
    pub fn fields(&self) -> &Map<String, Value> {
        self.tree.get_or_init(|| self.document.tree())
    }

    /// All fields as a JSON object of its own (the one `fields` keeps, copied, if built).
    pub fn to_fields(&self) -> Map<String, Value> {
        match self.tree.get() {
            Some(tree) => tree.clone(),
            None => self.document.tree(),
        }
    }
}

/// Reads the `<Encrypt>` payload of a safe- or compatible-mode body.
/// The text of the first `<Encrypt>…</Encrypt>` in `body` (a CDATA section's content when it
/// is one), found without parsing: what a safe-mode push's `msg_signature` is checked over
/// before anything else of the body is trusted or logged. `""` when there is none. A
/// verified push is then parsed in full (`parse_encrypted`), which must find the same text.
pub fn find_encrypt(body: &[u8]) -> &str {
    const OPEN: &[u8] = b"<Encrypt>";
    const CLOSE: &[u8] = b"</Encrypt>";
    let Some(start) = memchr::memmem::find(body, OPEN).map(|i| i + OPEN.len()) else {
        return "";
    };
    let Some(len) = memchr::memmem::find(&body[start..], CLOSE) else {
        return "";
    };
    let raw = &body[start..start + len];
    let text = raw
        .strip_prefix(b"<![CDATA[")
        .and_then(|t| t.strip_suffix(b"]]>"))
        .unwrap_or(raw);
    std::str::from_utf8(text).unwrap_or("")
}

pub fn parse_encrypted(body: &[u8]) -> Result<String, WireError> {
    match Document::parse(body)?.field("Encrypt").leaf("Encrypt")? {
        Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
        _ => Err(WireError::Missing("Encrypt")),
    }
}

/// An encrypted passive reply (`Encrypt`, `MsgSignature`, `TimeStamp`, `Nonce`), as a
/// safe-mode server answers: what `wxrules send --safe` checks and decrypts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedReply {
    pub encrypt: String,
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
}

pub fn parse_encrypted_reply(body: &[u8]) -> Result<EncryptedReply, WireError> {
    let document = Document::parse(body)?;
    let text = |name: &'static str| -> Result<String, WireError> {
        match document.field(name).leaf(name)? {
            Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
            _ => Err(WireError::Missing(name)),
        }
    };
    Ok(EncryptedReply {
        encrypt: text("Encrypt")?,
        msg_signature: text("MsgSignature")?,
        timestamp: text("TimeStamp")?,
        nonce: text("Nonce")?,
    })
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

/// A body read into a flat list: every element below the root, in document order.
#[derive(Debug, Clone)]
struct Document {
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
enum Shape<T> {
    Absent,
    Text(T),
    /// Repeated, or a container of `<item>`s.
    List,
    Object,
}

type Slot = Shape<Range<usize>>;

impl<'a> Shape<&'a str> {
    /// The text of a field that must be one leaf when present.
    fn leaf(self, field: &'static str) -> Result<Option<&'a str>, WireError> {
        match self {
            Shape::Absent => Ok(None),
            Shape::Text(text) => Ok(Some(text)),
            Shape::List => Err(WireError::Duplicate(field)),
            Shape::Object => Err(WireError::NotText(field)),
        }
    }
}

impl Document {
    fn parse(body: &[u8]) -> Result<Document, WireError> {
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
                    } else if !root_done {
                        root_done = true;
                        doc.empty_root = true;
                    } else {
                        return Err(malformed("content after the root element"));
                    }
                }
                Event::End(_) => {
                    if let Some(at) = open.pop() {
                        doc.nodes[at].end = doc.nodes.len();
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
                        doc.push_text(open.last().copied(), &text);
                    } else if !text.trim().is_empty() {
                        return Err(malformed("text outside the root element"));
                    }
                }
                Event::CData(data) => {
                    if !root_open {
                        return Err(malformed("CDATA outside the root element"));
                    }
                    let text = std::str::from_utf8(&data).map_err(malformed)?;
                    doc.push_text(open.last().copied(), text);
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

    /// Adds text to the open element `at`, while it has no children (after that its text
    /// is not used) and is not the root (whose text is not used either).
    fn push_text(&mut self, at: Option<usize>, text: &str) {
        let Some(at) = at else { return };
        if at + 1 == self.nodes.len() {
            self.buf.push_str(text);
            self.nodes[at].text.end = self.buf.len();
        }
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
    fn field(&self, name: &str) -> Shape<&str> {
        let [slot] = self.slots(&[name]);
        self.shape(&slot)
    }

    /// What each top-level field of `names` is, in one pass over the fields.
    fn slots<const N: usize>(&self, names: &[&str; N]) -> [Slot; N] {
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

    fn shape(&self, slot: &Slot) -> Shape<&str> {
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
    fn tree(&self) -> Map<String, Value> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
        <FromUserName><![CDATA[fromUser]]></FromUserName><CreateTime>1348831860</CreateTime>\
        <MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content>\
        <MsgId>1234567890123456</MsgId></xml>";

    #[test]
    fn common_field_indexes_name_their_fields() {
        let named = [
            (TO_USER, "ToUserName"),
            (FROM_USER, "FromUserName"),
            (MSG_TYPE, "MsgType"),
            (EVENT, "Event"),
            (MSG_ID, "MsgId"),
            (MSG_ID_UPPER, "MsgID"),
            (CONTENT, "Content"),
            (RECOGNITION, "Recognition"),
        ];
        for (at, name) in named {
            assert_eq!(COMMON[at], name);
        }
    }

    #[test]
    fn parses_common_fields() {
        let m = Message::parse(TEXT.as_bytes()).unwrap();
        assert_eq!(m.to_user(), "toUser");
        assert_eq!(m.from_user(), "fromUser");
        assert_eq!(m.create_time(), 1348831860);
        assert_eq!(m.msg_type(), "text");
        assert_eq!(m.keyword_text(), Some("this is a test"));
        assert_eq!(m.msg_id(), Some("1234567890123456"));
    }

    #[test]
    fn msg_id_keeps_all_64_bits() {
        let xml = TEXT.replace("1234567890123456", "18446744073709551615");
        let m = Message::parse(xml.as_bytes()).unwrap();
        assert_eq!(m.msg_id(), Some("18446744073709551615"));
    }

    #[test]
    fn nested_and_repeated_elements() {
        let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>\
            <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>pic_weixin</Event>\
            <SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum>x</PicMd5Sum></item>\
            <item><PicMd5Sum>y</PicMd5Sum></item></PicList></SendPicsInfo>\
            <Tag>1</Tag><Tag>2</Tag><Empty/><Blank></Blank></xml>";
        let m = Message::parse(xml.as_bytes()).unwrap();
        assert_eq!(m.lookup("SendPicsInfo.Count"), Some("2"));
        assert_eq!(m.lookup("SendPicsInfo.PicList.1.PicMd5Sum"), Some("y"));
        assert_eq!(m.lookup("Tag.0"), Some("1"));
        assert_eq!(m.text("Empty"), Some(""));
        assert_eq!(m.text("Blank"), Some(""));
        assert_eq!(m.lookup("SendPicsInfo.Missing"), None);
    }

    #[test]
    fn a_subscribe_msg_list_of_one_is_still_a_list() {
        for (file, event, count) in [
            ("event_subscribe_msg_sent.xml", "SubscribeMsgSentEvent", 1),
            (
                "event_subscribe_msg_change.xml",
                "SubscribeMsgChangeEvent",
                1,
            ),
            ("event_subscribe_msg_popup.xml", "SubscribeMsgPopupEvent", 2),
        ] {
            let path = format!("{}/tests/data/messages/{file}", env!("CARGO_MANIFEST_DIR"));
            let xml = std::fs::read(&path).unwrap();
            let message = Message::parse(&xml).unwrap();
            let list = &message.fields()[event]["List"];
            assert_eq!(list.as_array().map(Vec::len), Some(count), "{file}: {list}");
            assert_eq!(
                message.lookup(&format!("{event}.List.0.TemplateId")),
                Some("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc")
            );
        }
        // Another element named `List` elsewhere is as the XML has it.
        let xml = b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>\
            <MsgType>event</MsgType><Event>x</Event><Other><List>1</List></Other></xml>";
        let message = Message::parse(xml).unwrap();
        assert_eq!(message.fields()["Other"]["List"], "1");
    }

    #[test]
    fn a_single_item_is_still_a_list() {
        let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>\
            <CreateTime>1</CreateTime><MsgType>event</MsgType>\
            <PicList><item><PicMd5Sum>x</PicMd5Sum></item></PicList></xml>";
        let m = Message::parse(xml.as_bytes()).unwrap();
        assert!(m.fields()["PicList"].is_array());
    }

    #[test]
    fn entities_and_mixed_cdata_are_decoded() {
        let xml = TEXT.replace("<![CDATA[this is a test]]>", "a &lt; b &amp; <![CDATA[]]>c");
        let m = Message::parse(xml.as_bytes()).unwrap();
        assert_eq!(m.keyword_text(), Some("a < b & c"));
    }

    fn err(xml: &str) -> String {
        Message::parse(xml.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn rejects_bad_bodies_with_a_reason() {
        assert_eq!(err(""), "empty body");
        assert_eq!(err("  \n"), "empty body");
        assert!(err("<xml><a></b></xml>").starts_with("malformed XML"));
        assert!(err("<xml><a>").starts_with("malformed XML"));
        assert!(err("not xml at all").starts_with("malformed XML"));
        assert_eq!(
            err("<!DOCTYPE x [<!ENTITY a \"b\">]><xml><a>&a;</a></xml>"),
            "DOCTYPE declarations are not accepted"
        );
        assert!(err("<xml><a>&unknown;</a></xml>").starts_with("malformed XML"));
        assert_eq!(
            err(&TEXT.replace("<MsgType><![CDATA[text]]></MsgType>", "")),
            "missing required field `MsgType`"
        );
        assert_eq!(
            err(&TEXT.replace("1348831860", "soon")),
            "field `CreateTime` is not a number: `soon`"
        );
        assert_eq!(
            err(&TEXT.replace("1234567890123456", "-1")),
            "field `MsgId` is not a number: `-1`"
        );
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(
            err(&deep),
            format!("elements nested deeper than {MAX_DEPTH} levels")
        );
        assert!(err("<xml><a>1</a></xml><xml></xml>").starts_with("malformed XML"));
    }

    #[test]
    fn common_fields_must_be_single_leaves() {
        let twice = TEXT.replace("<MsgId>", "<MsgId>1</MsgId><MsgId>");
        assert_eq!(err(&twice), "field `MsgId` appears more than once");
        let twice = TEXT.replace("<ToUserName>", "<ToUserName>a</ToUserName><ToUserName>");
        assert_eq!(err(&twice), "field `ToUserName` appears more than once");
        let nested = TEXT.replace("<![CDATA[text]]>", "<a>text</a>");
        assert_eq!(
            err(&nested),
            "field `MsgType` has child elements, expected text"
        );
        let events = TEXT.replace("<MsgId>", "<Event>a</Event><Event>b</Event><MsgId>");
        assert_eq!(err(&events), "field `Event` appears more than once");
        // Other fields may repeat: they become lists.
        let tags = TEXT.replace("<MsgId>", "<Tag>1</Tag><Tag>2</Tag><MsgId>");
        assert!(Message::parse(tags.as_bytes()).is_ok());
        assert_eq!(
            parse_encrypted(b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>")
                .unwrap_err()
                .to_string(),
            "field `Encrypt` appears more than once"
        );
    }

    #[test]
    fn encrypted_envelope() {
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>";
        assert_eq!(parse_encrypted(xml.as_bytes()).unwrap(), "abc=");
        assert_eq!(
            parse_encrypted(b"<xml><ToUserName>x</ToUserName></xml>")
                .unwrap_err()
                .to_string(),
            "missing required field `Encrypt`"
        );
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let mut body = TEXT.as_bytes().to_vec();
        let at = TEXT.find("this").unwrap();
        body[at] = 0xff;
        assert!(Message::parse(&body).is_err());
    }
}

/// The parser this module had before the flat `Document`: it built the JSON tree directly.
/// Kept as the reference the property test holds `Document` to.
#[cfg(test)]
mod reference {
    use super::*;

    /// An element being read: its name, its children so far and its text so far.
    struct Open {
        name: String,
        children: Vec<(String, Value)>,
        text: String,
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
                        text: String::new(),
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
                    let value = close(&open.name, open.children, open.text);
                    match stack.last_mut() {
                        Some(parent) => parent.children.push((open.name, value)),
                        None => root = Some(value),
                    }
                }
                Event::Text(text) => {
                    let text = text.unescape().map_err(malformed)?;
                    match stack.last_mut() {
                        Some(open) => open.text.push_str(&text),
                        None if text.trim().is_empty() => {}
                        None => return Err(malformed("text outside the root element")),
                    }
                }
                Event::CData(data) => {
                    let Some(open) = stack.last_mut() else {
                        return Err(malformed("CDATA outside the root element"));
                    };
                    let text = std::str::from_utf8(&data).map_err(malformed)?;
                    open.text.push_str(text);
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
