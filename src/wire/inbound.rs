//! Parses a pushed message into a tree of fields named as WeChat names them.
//!
//! The tree is a JSON object so that templates see it as-is: a leaf element is a string,
//! an element with children is an object, a repeated element (or a container of `<item>`s,
//! as in `PicList`) is a list. Nothing is dropped, so unknown message kinds stay routable.

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
}

/// One pushed message or event, with every field reachable by its WeChat name.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    fields: Map<String, Value>,
    create_time: u64,
}

/// An element being read: its name, its children so far and its text so far.
struct Open {
    name: String,
    children: Vec<(String, Value)>,
    text: String,
}

impl Message {
    /// Parses the XML body WeChat posts (`<xml>…</xml>`).
    ///
    /// Fails on anything that is not one well-formed element tree with the common fields
    /// (`ToUserName`, `FromUserName`, `CreateTime`, `MsgType`), each once and as text;
    /// `CreateTime` and a `MsgId`/`MsgID`, when present, must be unsigned 64-bit numbers,
    /// and they and `Event` may appear only once.
    pub fn parse(body: &[u8]) -> Result<Message, WireError> {
        let fields = parse_tree(body)?;
        let message = Message {
            create_time: 0,
            fields,
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
        match self.fields.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(Value::Array(_)) => Err(WireError::Duplicate(field)),
            Some(_) => Err(WireError::NotText(field)),
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
        self.fields.get(name).and_then(Value::as_str)
    }

    /// The string value at a dotted path (`ScanCodeInfo.ScanResult`, `PicList.0.PicMd5Sum`).
    pub fn lookup(&self, path: &str) -> Option<&str> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        let mut value = self.fields.get(first)?;
        for part in parts {
            value = match value {
                Value::Object(map) => map.get(part)?,
                Value::Array(list) => list.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        value.as_str()
    }

    /// The account the message was sent to (`ToUserName`, a `gh_…` id).
    pub fn to_user(&self) -> &str {
        self.text("ToUserName").unwrap_or_default()
    }

    /// The user who sent it (`FromUserName`, an OpenID).
    pub fn from_user(&self) -> &str {
        self.text("FromUserName").unwrap_or_default()
    }

    /// `MsgType` as sent (`text`, `event`, …).
    pub fn msg_type(&self) -> &str {
        self.text("MsgType").unwrap_or_default()
    }

    /// `Event`, for `MsgType` event.
    pub fn event(&self) -> Option<&str> {
        self.text("Event")
    }

    /// `CreateTime`, unix seconds.
    pub fn create_time(&self) -> u64 {
        self.create_time
    }

    /// `MsgId` of a normal message (`MsgID` in some events), as sent.
    pub fn msg_id(&self) -> Option<&str> {
        self.text("MsgId").or_else(|| self.text("MsgID"))
    }

    /// The text keyword rules read: a text message's `Content`, else a voice message's
    /// `Recognition`.
    pub fn keyword_text(&self) -> Option<&str> {
        self.text("Content").or_else(|| self.text("Recognition"))
    }

    /// All fields, for templates.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Gives up the fields, so a template context can be built without copying them.
    pub fn into_fields(self) -> Map<String, Value> {
        self.fields
    }
}

/// Reads the `<Encrypt>` payload of a safe- or compatible-mode body.
pub fn parse_encrypted(body: &[u8]) -> Result<String, WireError> {
    let mut fields = parse_tree(body)?;
    match fields.remove("Encrypt") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::Array(_)) => Err(WireError::Duplicate("Encrypt")),
        Some(Value::Object(_)) => Err(WireError::NotText("Encrypt")),
        _ => Err(WireError::Missing("Encrypt")),
    }
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

fn parse_tree(body: &[u8]) -> Result<Map<String, Value>, WireError> {
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
                    name: element_name(start.name().as_ref())?,
                    children: Vec::new(),
                    text: String::new(),
                });
            }
            Event::Empty(start) => {
                let name = element_name(start.name().as_ref())?;
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
                let value = close(open.children, open.text);
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

fn element_name(raw: &[u8]) -> Result<String, WireError> {
    std::str::from_utf8(raw)
        .map(str::to_owned)
        .map_err(malformed)
}

/// Turns a closed element into its value: text for a leaf, a list for a container of
/// `<item>`s, otherwise an object whose repeated names become lists.
fn close(children: Vec<(String, Value)>, text: String) -> Value {
    if children.is_empty() {
        return Value::String(text);
    }
    if children.iter().all(|(name, _)| name == "item") {
        return Value::Array(children.into_iter().map(|(_, v)| v).collect());
    }
    let mut map = Map::with_capacity(children.len());
    for (name, value) in children {
        match map.get_mut(&name) {
            Some(Value::Array(list)) => list.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
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
