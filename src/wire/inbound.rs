//! Parses a pushed message into fields named as WeChat names them.
//!
//! The body is read once into a flat list of its elements (names and texts in one buffer):
//! the fields a request reads (`MsgType`, `Content`, `EventKey`, …) are found there without
//! building anything. Templates see the message as a JSON object, built from that list on
//! first use: a leaf element is a string, an element with children is an object, a repeated
//! element (or a container of `<item>`s, as in `PicList`) is a list. Nothing is dropped, so
//! unknown message kinds stay routable. The flat list itself, and the errors of reading
//! one, are `document`'s. No crypto: a safe-mode body's `Encrypt` is found and handed on.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::document::{is_xml_space, Document, Shape, Slot, WireError};

/// The top-level fields every request reads (the signature of the message, routing,
/// dedup, the log line), found in one pass at parse time. The accessors below read them
/// by index.
pub(super) const COMMON: [&str; 10] = [
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
    // Whitespace around the value is the XML's layout (`<Encrypt> <![CDATA[…]]> </Encrypt>`),
    // trimmed as the parser trims it, so that both find the same text.
    let mut raw = &body[start..start + len];
    while let [first, rest @ ..] = raw {
        if !is_xml_space(char::from(*first)) {
            break;
        }
        raw = rest;
    }
    while let [rest @ .., last] = raw {
        if !is_xml_space(char::from(*last)) {
            break;
        }
        raw = rest;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MAX_DEPTH;

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

    /// Before, only the subscribe_msg_* `<List>` were lists whatever their count: one
    /// published article (`article_detail.item`), one refused one (`fail_idx`) or one device
    /// nearby (`AroundBeacon`) was an object or a text, and `{{#each}}` over it failed.
    #[test]
    fn every_repeatable_element_of_one_is_still_a_list() {
        let read = |file: &str| {
            let path = format!("{}/tests/data/messages/{file}", env!("CARGO_MANIFEST_DIR"));
            Message::parse(&std::fs::read(&path).unwrap()).unwrap()
        };
        for (file, path, count) in [
            (
                "event_publishjobfinish.xml",
                "PublishEventInfo.article_detail.item",
                1,
            ),
            (
                "event_publishjobfinish_fail_one.xml",
                "PublishEventInfo.fail_idx",
                1,
            ),
            (
                "event_publishjobfinish_fail.xml",
                "PublishEventInfo.fail_idx",
                2,
            ),
            (
                "event_shakearound_user_shake_one.xml",
                "AroundBeacons.AroundBeacon",
                1,
            ),
            (
                "event_shakearound_user_shake.xml",
                "AroundBeacons.AroundBeacon",
                2,
            ),
        ] {
            let message = read(file);
            let Some(FieldRef::Json(Value::Array(list))) = message.get(path.split('.')) else {
                panic!(
                    "{file}: {path} is not a list: {:?}",
                    message.get(path.split('.'))
                );
            };
            assert_eq!(list.len(), count, "{file}");
        }
        let published = read("event_publishjobfinish.xml");
        assert_eq!(
            published.lookup("PublishEventInfo.article_detail.item.0.article_url"),
            Some("ARTICLE_URL")
        );
        assert_eq!(
            published.lookup("PublishEventInfo.article_detail.count"),
            Some("1")
        );
        assert_eq!(
            read("event_publishjobfinish_fail_one.xml").lookup("PublishEventInfo.fail_idx.0"),
            Some("1")
        );
        let shake = read("event_shakearound_user_shake_one.xml");
        assert_eq!(
            shake.lookup("AroundBeacons.AroundBeacon.0.Distance"),
            Some("166.816")
        );
        // The chosen beacon is one object, as WeChat sends one.
        assert_eq!(shake.lookup("ChosenBeacon.Distance"), Some("0.057"));
    }

    #[test]
    fn a_single_item_is_still_a_list() {
        let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>\
            <CreateTime>1</CreateTime><MsgType>event</MsgType>\
            <PicList><item><PicMd5Sum>x</PicMd5Sum></item></PicList></xml>";
        let m = Message::parse(xml.as_bytes()).unwrap();
        assert!(m.fields()["PicList"].is_array());
    }

    /// Several SDKs' fixtures and hand-made tools write a space or a line break between a
    /// tag and its CDATA section. That whitespace was kept: `MsgType` was ` event `, no
    /// `msg_type: event` rule matched, and the reply went to ` oZI8Fj… `. Peers' parsers
    /// (xmltodict, under wechatpy and WeRoBot) trim it; CDATA's own text stays as sent.
    #[test]
    fn whitespace_around_cdata_is_the_layout_not_the_value() {
        let xml = "<xml>\n  <ToUserName> <![CDATA[gh_1]]> </ToUserName>\n              <FromUserName>\n    <![CDATA[oZI8Fj040-be6rlDohc6gkoPOQTQ]]>\n  </FromUserName>\n              <CreateTime> 1348831860 </CreateTime>\n  <MsgType>\t<![CDATA[event]]>\r\n</MsgType>\n              <Event> <![CDATA[CLICK]]> </Event>\n  <EventKey>  MENU_1  </EventKey>\n              <Keep> <![CDATA[ spaces inside stay ]]> </Keep>\n              <Mixed> a <![CDATA[ b ]]> c </Mixed>\n  <Wide>\u{3000}全角\u{3000}</Wide>\n</xml>";
        let m = Message::parse(xml.as_bytes()).unwrap();
        assert_eq!(m.to_user(), "gh_1");
        assert_eq!(m.from_user(), "oZI8Fj040-be6rlDohc6gkoPOQTQ");
        assert_eq!(m.create_time(), 1348831860);
        assert_eq!(m.msg_type(), "event");
        assert_eq!(m.event(), Some("CLICK"));
        assert_eq!(m.text("EventKey"), Some("MENU_1"));
        assert_eq!(m.text("Keep"), Some(" spaces inside stay "));
        assert_eq!(m.text("Mixed"), Some("a  b  c"));
        // Only XML's whitespace is layout: a full-width space is text.
        assert_eq!(m.text("Wide"), Some("\u{3000}全角\u{3000}"));
        // The JSON object templates see agrees.
        assert_eq!(m.fields()["MsgType"], "event");
        assert_eq!(m.fields()["Keep"], " spaces inside stay ");
        // The safe-mode envelope, searched and parsed, finds the same payload.
        let safe =
            b"<xml><ToUserName>gh</ToUserName>\n<Encrypt>\n  <![CDATA[abc=]]>\n</Encrypt></xml>";
        assert_eq!(find_encrypt(safe), "abc=");
        assert_eq!(parse_encrypted(safe).unwrap(), "abc=");
        let plain = b"<xml><Encrypt> abc= </Encrypt></xml>";
        assert_eq!(find_encrypt(plain), "abc=");
        assert_eq!(parse_encrypted(plain).unwrap(), "abc=");
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
