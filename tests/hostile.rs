//! Hostile input through the real App: one row per input, with the status and the start
//! of the body it must get. Entities, deep nesting, huge and lying bodies, broken UTF-8,
//! truncated and non-XML bodies, wrong numbers, odd-but-legal XML, and safe-mode garbage.
//! After the table the same server must still answer a good push.
//!
//! The App has a safe-mode key, so one server takes both plaintext and encrypted rows.
//! A last test speaks raw HTTP/1.1 to a real listener on 127.0.0.1, for the framing that
//! `TestRequest` cannot fake (chunked bodies, a Content-Length that lies).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::test::{call_service, read_body, TestRequest};
use actix_web::{App, HttpServer};
use common::*;
use wxrules::accounts::Secrets;
use wxrules::crypto::Cipher;
use wxrules::server::{self, AppState, Options, DEFAULT_BODY_LIMIT};
use wxrules::wire::MAX_DEPTH;

/// The official samples' EncodingAESKey and AppID.
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";
const NONCE: &str = "1320562132";
/// Any one request of the table must be answered within this, even in a debug build on a
/// busy machine; the slowest real row takes milliseconds.
const QUICKLY: Duration = Duration::from_secs(5);

const DOCTYPE: &str = "DOCTYPE declarations are not accepted";
const MALFORMED: &str = "malformed XML";
const REPLY: &str = "<xml><ToUserName>";
const ENCRYPTED_REPLY: &str = "<xml><Encrypt>";

fn safe_state() -> AppState {
    let secrets = Secrets::new(TOKEN, Some((AES_KEY, APP_ID))).unwrap();
    state_for(shipped(), secrets, Options::default())
}

/// A fresh MsgId for every message, so that no row is answered as a retry of another.
fn msg_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(7_000_000_000_000_000_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A text push with `content` as the raw inner XML of `<Content>`.
fn text_with(content: &str) -> String {
    message(&format!("<Content>{content}</Content>"))
}

/// A text push with `extra` (raw XML) after the common fields and a fresh MsgId.
fn message(extra: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName>\
         <FromUserName><![CDATA[oHostileUser]]></FromUserName>\
         <CreateTime>1795737600</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         {extra}<MsgId>{}</MsgId></xml>",
        msg_id()
    )
}

/// The text push with `field`'s whole element replaced by `element`.
fn with_field(field: &str, element: &str) -> String {
    let xml = message("<Content>hello</Content>");
    let start = xml.find(&format!("<{field}>")).unwrap();
    let end_tag = format!("</{field}>");
    let end = xml.find(&end_tag).unwrap() + end_tag.len();
    format!("{}{element}{}", &xml[..start], &xml[end..])
}

fn bytes_with(prefix: &str, raw: &[u8], suffix: &str) -> Vec<u8> {
    let mut body = prefix.as_bytes().to_vec();
    body.extend_from_slice(raw);
    body.extend_from_slice(suffix.as_bytes());
    body
}

/// A deterministic stream of bytes (xorshift64*), so "random" bodies are the same on
/// every run.
struct Noise(u64);

impl Noise {
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }
}

/// One hostile request and what it must get.
struct Row {
    name: String,
    query: String,
    /// Headers set after the payload, so they may replace the true Content-Length.
    headers: Vec<(&'static str, String)>,
    /// Send without Content-Length, as a chunked upload.
    chunked: bool,
    body: Vec<u8>,
    status: u16,
    says: String,
}

fn row(name: impl Into<String>, body: impl Into<Vec<u8>>, status: u16, says: &str) -> Row {
    Row {
        name: name.into(),
        query: signed_query(),
        headers: Vec::new(),
        chunked: false,
        body: body.into(),
        status,
        says: says.to_owned(),
    }
}

fn safe_query(encrypt: &str) -> String {
    let ts = NOW.to_string();
    format!(
        "timestamp={ts}&nonce={NONCE}&encrypt_type=aes&msg_signature={}",
        sign(&[TOKEN, &ts, NONCE, encrypt])
    )
}

/// A safe-mode push whose `Encrypt` is `encrypt`, correctly signed: whatever is wrong
/// is inside the payload.
fn safe_row(name: &str, encrypt: &str, status: u16, says: &str) -> Row {
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName>\
         <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    Row {
        query: safe_query(encrypt),
        ..row(name, body, status, says)
    }
}

/// A safe-mode push carrying `inner`, sealed with the account's key and `app_id`.
fn sealed_row(name: &str, inner: &[u8], app_id: &str, status: u16, says: &str) -> Row {
    let encrypt = Cipher::new(AES_KEY, app_id)
        .unwrap()
        .encrypt_with(inner, [9; 16]);
    safe_row(name, &encrypt, status, says)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Row {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Row {
        self.headers.push((name, value.into()));
        self
    }

    fn chunked(mut self) -> Row {
        self.chunked = true;
        self
    }

    fn query(mut self, query: String) -> Row {
        self.query = query;
        self
    }
}

async fn send<S>(app: &S, row: &Row) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut req = TestRequest::post()
        .uri(&format!("/wechat?{}", row.query))
        .insert_header(("content-type", "text/xml"))
        .set_payload(row.body.clone());
    for (name, value) in &row.headers {
        req = req.insert_header((*name, value.as_str()));
    }
    let mut req = req.to_request();
    if row.chunked {
        req.headers_mut().remove(CONTENT_LENGTH);
        req.headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    let resp = call_service(app, req).await;
    let status = resp.status().as_u16();
    let body = read_body(resp).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn entity_rows() -> Vec<Row> {
    let mut laughs = String::from("<!DOCTYPE xml [<!ENTITY lol \"lol\">");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    laughs.push_str("]>");
    let msg = |content: &str| text_with(content);
    vec![
        row(
            "billion laughs",
            format!("{laughs}{}", msg("&lol9;")),
            400,
            DOCTYPE,
        ),
        row(
            "external entity SYSTEM file:///etc/passwd",
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
                msg("&xxe;")
            ),
            400,
            DOCTYPE,
        ),
        row(
            "external entity PUBLIC over http",
            format!(
                "<!DOCTYPE xml PUBLIC \"-//X//EN\" \"http://127.0.0.1:9/x.dtd\">{}",
                msg("hi")
            ),
            400,
            DOCTYPE,
        ),
        row(
            "parameter entities",
            format!(
                "<!DOCTYPE xml [<!ENTITY % p SYSTEM \"file:///etc/passwd\"><!ENTITY % q \"<!ENTITY x '%p;'>\">%q;]>{}",
                msg("&x;")
            ),
            400,
            DOCTYPE,
        ),
        row(
            "bare DOCTYPE, no entities",
            format!("<!DOCTYPE xml>{}", msg("hi")),
            400,
            DOCTYPE,
        ),
        row(
            "lower-case doctype",
            format!("<!doctype xml>{}", msg("hi")),
            400,
            DOCTYPE,
        ),
        row(
            "DOCTYPE after the root",
            format!("{}<!DOCTYPE xml>", msg("hi")),
            400,
            DOCTYPE,
        ),
        row("undefined entity", msg("&lol9;"), 400, MALFORMED),
        row("entity with no name", msg("&;"), 400, MALFORMED),
        row("unterminated entity", msg("&amp"), 400, MALFORMED),
        row("predefined entities", msg("a &lt; b &amp;&amp; c &gt; d &quot;&apos;"), 200, REPLY),
        row("character references 价格", msg("&#20215;&#x683C;"), 200, REPLY),
        row("character reference to NUL", msg("&#0;"), 400, MALFORMED),
        row("character reference to a surrogate", msg("&#xD800;"), 400, MALFORMED),
        row("character reference past U+10FFFF", msg("&#x110000;"), 400, MALFORMED),
        row(
            "character reference past u64",
            msg("&#99999999999999999999999;"),
            400,
            MALFORMED,
        ),
        row("empty character reference", msg("&#;"), 400, MALFORMED),
    ]
}

fn depth_rows() -> Vec<Row> {
    // The root counts as one level.
    let nested = |levels: usize| {
        message(&format!(
            "<Deep>{}x{}</Deep>",
            "<a>".repeat(levels - 2),
            "</a>".repeat(levels - 2)
        ))
    };
    let too_deep = format!("elements nested deeper than {MAX_DEPTH} levels");
    let opening = |levels: usize| format!("<xml>{}", "<a>".repeat(levels));
    vec![
        row(format!("{MAX_DEPTH} levels"), nested(MAX_DEPTH), 200, REPLY),
        row(
            format!("{} levels", MAX_DEPTH + 1),
            nested(MAX_DEPTH + 1),
            400,
            &too_deep,
        ),
        row("20,000 levels (60 KiB)", opening(20_000), 400, &too_deep),
        row(
            "15,000 self-closed siblings",
            message(&"<a/>".repeat(15_000)),
            200,
            REPLY,
        ),
        row(
            "2,500 distinct siblings",
            message(
                &(0..2_500)
                    .map(|i| format!("<f{i}>{i}</f{i}>"))
                    .collect::<String>(),
            ),
            200,
            REPLY,
        ),
        row("100,000 levels (300 KiB)", opening(100_000), 413, ""),
        row("100,000 levels, chunked", opening(100_000), 413, "").chunked(),
    ]
}

fn size_rows() -> Vec<Row> {
    let content = |len: usize| text_with(&"x".repeat(len));
    let overhead = content(0).len();
    let exactly = |len: usize| content(len - overhead);
    vec![
        // A single field is bounded only by the body limit: 64 KiB of text in, at most
        // a few copies of it in memory, and the reply is what the rules make of it.
        row("60 KiB Content", content(60 * 1024), 200, REPLY),
        row(
            "60 KiB CDATA",
            text_with(&format!("<![CDATA[{}]]>", "y".repeat(60 * 1024))),
            200,
            REPLY,
        ),
        row(
            "60 KiB of &amp;",
            text_with(&"&amp;".repeat(12 * 1024)),
            200,
            REPLY,
        ),
        row(
            "body of exactly 64 KiB",
            exactly(DEFAULT_BODY_LIMIT),
            200,
            REPLY,
        ),
        row(
            "body of 64 KiB + 1",
            exactly(DEFAULT_BODY_LIMIT + 1),
            413,
            "",
        ),
        row("body of 1 MiB", content(1024 * 1024), 413, ""),
        row(
            "over 64 KiB, Content-Length says 100",
            content(70 * 1024),
            413,
            "",
        )
        .header("content-length", "100"),
        row(
            "small body, Content-Length says 10 MB",
            message(""),
            413,
            "",
        )
        .header("content-length", "10000000"),
        row("over 64 KiB, chunked", content(70 * 1024), 413, "").chunked(),
        row(
            "small body, chunked",
            message("<Content>hi</Content>"),
            200,
            REPLY,
        )
        .chunked(),
        row("Content-Length not a number", message(""), 400, "").header("content-length", "lots"),
    ]
}

fn utf8_rows() -> Vec<Row> {
    let around = |raw: &[u8]| {
        let xml = message("<Content>@</Content>");
        let (head, tail) = xml.split_once('@').unwrap();
        bytes_with(head, raw, tail)
    };
    let mut gbk = b"<?xml version=\"1.0\" encoding=\"GBK\"?>".to_vec();
    gbk.extend(around(&[0xC4, 0xE3, 0xBA, 0xC3])); // 你好 in GBK
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in message("<Content>hi</Content>").encode_utf16() {
        utf16.extend(unit.to_le_bytes());
    }
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(message("<Content>hi</Content>").into_bytes());
    let xml = message("<Content>hi</Content>");
    let bad_name = xml.replace("<Content>hi</Content>", "<Cont\u{1}ent>hi</Cont\u{1}ent>");
    let bad_name: Vec<u8> = bad_name
        .bytes()
        .map(|b| if b == 1 { 0xFF } else { b })
        .collect();
    let bad_attr = xml.replace("<Content>", "<Content note=\"\u{1}\">");
    let bad_attr: Vec<u8> = bad_attr
        .bytes()
        .map(|b| if b == 1 { 0xFF } else { b })
        .collect();
    let bad_comment = xml.replace("<Content>", "<!--\u{1}--><Content>");
    let bad_comment: Vec<u8> = bad_comment
        .bytes()
        .map(|b| if b == 1 { 0xFF } else { b })
        .collect();
    vec![
        row("invalid UTF-8 in text", around(b"ab\xFFcd"), 400, MALFORMED),
        row(
            "invalid UTF-8 in CDATA",
            around(b"<![CDATA[ab\xFEcd]]>"),
            400,
            MALFORMED,
        ),
        row("invalid UTF-8 in an element name", bad_name, 400, MALFORMED),
        row(
            "overlong UTF-8 (C0 AF)",
            around(b"\xC0\xAF"),
            400,
            MALFORMED,
        ),
        row(
            "UTF-8-encoded surrogate",
            around(b"\xED\xA0\x80"),
            400,
            MALFORMED,
        ),
        row(
            "cut multi-byte character",
            around(b"\xE4\xBB"),
            400,
            MALFORMED,
        ),
        row("GBK declared and sent", gbk, 400, MALFORMED),
        row("UTF-16 with a BOM", utf16, 400, ""),
        // Attributes and comments are never read, so their bytes cannot reach a rule,
        // a template or a log: inert, and the push is answered.
        row(
            "invalid UTF-8 in an ignored attribute",
            bad_attr,
            200,
            REPLY,
        ),
        row("invalid UTF-8 in a comment", bad_comment, 200, REPLY),
        row("UTF-8 BOM", bom, 200, REPLY),
        row(
            "NUL and C0 controls in text",
            text_with("a\u{0}b\u{1}c\u{1b}"),
            200,
            REPLY,
        ),
        row(
            "emoji and noncharacters",
            text_with("😀\u{FFFF}\u{10FFFF}"),
            200,
            REPLY,
        ),
        row(
            "]]> in CDATA, split",
            text_with("<![CDATA[a]]]]><![CDATA[>b]]>"),
            200,
            REPLY,
        ),
    ]
}

fn non_xml_rows() -> Vec<Row> {
    let mut noise = Noise(0x5EED_CAFE_F00D_D00D);
    let mut rows = vec![
        row("empty", Vec::new(), 400, "empty body"),
        row("whitespace only", " \r\n\t ", 400, "empty body"),
        row(
            "JSON",
            r#"{"ToUserName":"gh_account","MsgType":"text"}"#,
            400,
            MALFORMED,
        ),
        row("form-encoded", "ToUserName=gh&MsgType=text", 400, MALFORMED),
        row("4 KiB of zero bytes", vec![0u8; 4096], 400, MALFORMED),
        row(
            "HTML",
            "<html><body><p>hi</p></body></html>",
            400,
            "missing required field",
        ),
        row(
            "just <xml/>",
            "<xml/>",
            400,
            "missing required field `ToUserName`",
        ),
        row("just <xml></xml>", "<xml></xml>", 400, MALFORMED),
        row("text root", "<xml>hello</xml>", 400, MALFORMED),
        row("two roots", format!("{0}{0}", message("")), 400, MALFORMED),
        row("mismatched end tag", "<xml><a></b></xml>", 400, MALFORMED),
        row("unclosed CDATA", text_with("<![CDATA[abc"), 400, MALFORMED),
        row("unclosed comment", text_with("<!-- abc"), 400, MALFORMED),
        row(
            "stray end tag",
            format!("</a>{}", message("")),
            400,
            MALFORMED,
        ),
    ];
    for (i, len) in [1, 2, 7, 64, 511, 4096, 60_000].into_iter().enumerate() {
        rows.push(row(
            format!("random bytes #{i} ({len})"),
            noise.bytes(len),
            400,
            "",
        ));
        let mut body = b"<xml><ToUserName>".to_vec();
        body.extend(noise.bytes(len));
        rows.push(row(
            format!("<xml> then random bytes #{i} ({len})"),
            body,
            400,
            "",
        ));
    }
    rows
}

fn number_rows() -> Vec<Row> {
    let create_time = |v: &str| with_field("CreateTime", &format!("<CreateTime>{v}</CreateTime>"));
    let msg_id = |v: &str| with_field("MsgId", &format!("<MsgId>{v}</MsgId>"));
    let nan = |field: &str, v: &str| format!("field `{field}` is not a number: `{v}`");
    vec![
        row("CreateTime negative", create_time("-1"), 400, &nan("CreateTime", "-1")),
        row(
            "CreateTime past u64",
            create_time("18446744073709551616"),
            400,
            &nan("CreateTime", "18446744073709551616"),
        ),
        row("CreateTime float", create_time("1.5e9"), 400, &nan("CreateTime", "1.5e9")),
        row("CreateTime empty", create_time(""), 400, &nan("CreateTime", "")),
        row("CreateTime self-closed", "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime/><MsgType>text</MsgType></xml>", 400, &nan("CreateTime", "")),
        row("CreateTime hex", create_time("0x10"), 400, &nan("CreateTime", "0x10")),
        row("CreateTime full-width digits", create_time("１２３"), 400, &nan("CreateTime", "１２３")),
        row(
            "CreateTime 10 KiB of digits",
            create_time(&"9".repeat(10 * 1024)),
            400,
            &nan("CreateTime", &"9".repeat(40)),
        ),
        row("CreateTime padded with spaces", create_time(" 1795737600\n"), 200, REPLY),
        row("CreateTime u64::MAX", create_time("18446744073709551615"), 200, REPLY),
        row("CreateTime zero", create_time("0"), 200, REPLY),
        row("CreateTime missing", with_field("CreateTime", ""), 400, "missing required field `CreateTime`"),
        row("MsgId past u64", msg_id("18446744073709551616"), 400, &nan("MsgId", "18446744073709551616")),
        row("MsgId negative", msg_id("-5"), 400, &nan("MsgId", "-5")),
        row("MsgId empty", msg_id(""), 400, &nan("MsgId", "")),
        row("MsgId float", msg_id("1e5"), 400, &nan("MsgId", "1e5")),
        row("MsgID past u64", with_field("MsgId", "<MsgID>99999999999999999999</MsgID>"), 400, &nan("MsgID", "99999999999999999999")),
    ]
}

fn odd_xml_rows() -> Vec<Row> {
    let xml = message("<Content>hi</Content>");
    let dup = |field: &str| {
        let start = xml.find(&format!("<{field}>")).unwrap();
        let end_tag = format!("</{field}>");
        let end = xml.find(&end_tag).unwrap() + end_tag.len();
        format!("{}{}{}", &xml[..end], &xml[start..end], &xml[end..])
    };
    let twice = |field: &str| format!("field `{field}` appears more than once");
    vec![
        row(
            "XML declaration, PIs and comments everywhere",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<?php echo 1; ?>\n{}\n<!-- after -->",
                xml.replace("<Content>hi</Content>", "<!--x--><Content>h<!-- y -->i<?pi z?></Content>")
            ),
            200,
            REPLY,
        ),
        row("comment splitting a keyword", text_with("价<!-- 格 -->格"), 200, REPLY),
        row("duplicate Content", dup("Content"), 200, REPLY),
        row(
            "a query parameter given twice",
            message("<Content>hi</Content>"),
            400,
            "query: parameter `timestamp` given more than once",
        )
        .query(format!("{}&timestamp=1", signed_query())),
        row(
            "a percent-encoded query value",
            message("<Content>hi</Content>"),
            200,
            REPLY,
        )
        .query(signed_query().replace("nonce=1320562132", "nonce=132056213%32")),
        row("duplicate ToUserName", dup("ToUserName"), 400, &twice("ToUserName")),
        row("duplicate FromUserName", dup("FromUserName"), 400, &twice("FromUserName")),
        row("duplicate CreateTime", dup("CreateTime"), 400, &twice("CreateTime")),
        row("duplicate MsgType", dup("MsgType"), 400, &twice("MsgType")),
        row("duplicate MsgId", dup("MsgId"), 400, &twice("MsgId")),
        row(
            "MsgType with child elements",
            with_field("MsgType", "<MsgType><a>text</a></MsgType>"),
            400,
            "field `MsgType` has child elements",
        ),
        row(
            "attributes everywhere",
            xml.replace("<xml>", "<xml version=\"2\" a='1'>")
                .replace("<Content>", "<Content lang=\"zh\" x=\"&lt;\">"),
            200,
            REPLY,
        ),
        row("malformed attribute", xml.replace("<Content>", "<Content a=>"), 200, REPLY),
        row(
            "default namespace",
            xml.replace("<xml>", "<xml xmlns=\"urn:wechat\">"),
            200,
            REPLY,
        ),
        row(
            "prefixed names are other fields",
            xml.replace("<xml>", "<xml xmlns:wx=\"urn:wechat\">")
                .replace("ToUserName>", "wx:ToUserName>"),
            400,
            "missing required field `ToUserName`",
        ),
        row("mixed content", text_with("a<b>c</b>d"), 200, REPLY),
    ]
}

fn safe_rows() -> Vec<Row> {
    let inner = fixture("msg_text");
    let mut laughs = String::from("<!DOCTYPE xml [<!ENTITY a \"aaaaaaaaaa\">");
    laughs.push_str("<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>");
    laughs.push_str(&text_with("&b;"));
    let no_encrypt = "<xml><ToUserName>gh</ToUserName><Encrypt></Encrypt></xml>";
    let two_encrypts = "<xml><Encrypt>QUFB</Encrypt><Encrypt>QUFB</Encrypt></xml>";
    let cannot = "cannot decrypt: ";
    vec![
        sealed_row(
            "sealed fixture",
            inner.as_bytes(),
            APP_ID,
            200,
            ENCRYPTED_REPLY,
        ),
        safe_row(
            "Encrypt not base64",
            "not base64!!",
            400,
            "cannot decrypt: encrypted payload is not valid base64",
        ),
        safe_row(
            "Encrypt of 17 bytes",
            &base64(&[1; 17]),
            400,
            "cannot decrypt: ciphertext is 17 bytes",
        ),
        safe_row("Encrypt of 32 zero bytes", &base64(&[0; 32]), 400, cannot),
        safe_row(
            "Encrypt of 48 KiB of A",
            &"A".repeat(48 * 1024),
            400,
            cannot,
        ),
        safe_row("Encrypt of one block", &base64(&[0x41; 16]), 400, cannot),
        row(
            "Encrypt empty",
            no_encrypt,
            400,
            "missing required field `Encrypt`",
        )
        .query(safe_query("")),
        row(
            "two Encrypt elements",
            two_encrypts,
            400,
            "field `Encrypt` appears more than once",
        )
        .query(safe_query("QUFB")),
        row(
            "Encrypt, wrong msg_signature",
            no_encrypt.replace("</Encrypt>", "QUFB</Encrypt>"),
            403,
            "",
        )
        .query(safe_query("other")),
        // The probe's log injection: with a key set, this unsigned body was parsed (and its
        // parse error, newline and all, logged) before the signature was checked.
        row(
            "unsigned malformed envelope (a forged log line)",
            "<xml><Encrypt>x</Encrypt></xml\n2026-11-30T00:00:00Z  INFO forged \u{1b}[2J<forged>>",
            403,
            "",
        )
        .query(safe_query("other")),
        row(
            "signed Encrypt is not the XML's",
            "<xml><!-- <Encrypt>QUFB</Encrypt> --><Encrypt>QkJC</Encrypt></xml>",
            400,
            "the signed `Encrypt` is not the element the XML holds",
        )
        .query(safe_query("QUFB")),
        row(
            "Encrypt, no msg_signature",
            no_encrypt.replace("</Encrypt>", "QUFB</Encrypt>"),
            403,
            "",
        )
        .query(format!("timestamp={NOW}&nonce={NONCE}&encrypt_type=aes")),
        sealed_row(
            "sealed for another AppID",
            inner.as_bytes(),
            "wxother",
            400,
            "cannot decrypt: payload is for AppID `wxother`",
        ),
        sealed_row(
            "sealed billion laughs",
            laughs.as_bytes(),
            APP_ID,
            400,
            DOCTYPE,
        ),
        sealed_row(
            "sealed invalid UTF-8",
            b"<xml>\xFF</xml>",
            APP_ID,
            400,
            "cannot decrypt: decrypted message is not UTF-8",
        ),
        sealed_row(
            "sealed truncated XML",
            &inner.as_bytes()[..60],
            APP_ID,
            400,
            MALFORMED,
        ),
        sealed_row("sealed empty message", b"", APP_ID, 400, "empty body"),
        sealed_row(
            "sealed Encrypt inside Encrypt",
            format!("<xml><Encrypt>{}</Encrypt></xml>", base64(b"x")).as_bytes(),
            APP_ID,
            400,
            "missing required field",
        ),
    ]
}

#[actix_web::test]
async fn every_hostile_input_gets_its_status_and_the_server_keeps_serving() {
    let app = app(safe_state()).await;
    let rows: Vec<Row> = [
        entity_rows(),
        depth_rows(),
        size_rows(),
        utf8_rows(),
        non_xml_rows(),
        number_rows(),
        odd_xml_rows(),
        safe_rows(),
    ]
    .into_iter()
    .flatten()
    .collect();

    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for row in &rows {
        let started = Instant::now();
        let (status, body) = send(&app, row).await;
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, row.name.clone());
        }
        if status != row.status || !body.starts_with(&row.says) || took > QUICKLY {
            let shown: String = body.chars().take(120).collect();
            failures.push(format!(
                "{}: expected {} {:?}…, got {status} {shown:?} in {took:?}",
                row.name, row.status, row.says
            ));
        }
    }
    println!(
        "{} rows; slowest: {:?} ({})",
        rows.len(),
        slowest.0,
        slowest.1
    );
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let (status, body) = post(&app, &signed_query(), message("<Content>价格</Content>")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(REPLY), "{body}");
}

/// Where `</xml>` ends in `xml`: every shorter prefix is an unfinished document.
fn root_end(xml: &str) -> usize {
    xml.rfind("</xml>").unwrap() + "</xml>".len()
}

#[actix_web::test]
async fn every_prefix_of_a_real_push_is_refused_or_answered_never_a_5xx() {
    let app = app(safe_state()).await;
    for name in ["msg_text", "event_pic_weixin", "event_scancode_waitmsg"] {
        let xml = fixture(name);
        let end = root_end(&xml);
        for len in 0..=xml.len() {
            let (status, body) = post(&app, &signed_query(), &xml.as_bytes()[..len]).await;
            let expected = if len < end { 400 } else { 200 };
            assert_eq!(status, expected, "{name}[..{len}]: {body}");
        }
    }
    // The same for a safe-mode body: cut anywhere, it is never a 5xx.
    let xml =
        std::fs::read_to_string(root().join("tests/data/messages/safe_python_sample.xml")).unwrap();
    for len in 0..xml.len() {
        let (status, body) = post(&app, &safe_query("x"), &xml.as_bytes()[..len]).await;
        assert!(
            matches!(status, 400 | 403),
            "safe[..{len}]: {status} {body}"
        );
    }
    let (status, _) = post(&app, &signed_query(), message("<Content>hi</Content>")).await;
    assert_eq!(status, 200);
}

/// Starts the real server (`HttpServer` + `server::configure`) on a free loopback port.
struct Listening {
    addr: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl Listening {
    fn start(state: AppState) -> Listening {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let state = state.clone();
                    App::new().configure(move |cfg| server::configure(cfg, state))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
                tx.send(server.handle()).unwrap();
                server.await
            })
        });
        let handle = rx.recv().unwrap();
        Listening { addr, handle }
    }

    /// Sends `head` (request line and headers, without the blank line) and `body` as
    /// they are, and reads the status of the first response.
    fn exchange(&self, head: &str, body: &[u8]) -> u16 {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(format!("{head}\r\n\r\n").as_bytes())
            .unwrap();
        // The server may answer 413 and close before it has read everything.
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&response);
        line.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        actix_web::rt::System::new().block_on(self.handle.stop(false));
    }
}

fn chunks(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn framing_over_a_real_socket() {
    let server = Listening::start(safe_state());
    let head = |extra: &str| {
        format!(
            "POST /wechat?{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nConnection: close\r\n{extra}",
            signed_query()
        )
    };
    let small = message("<Content>hi</Content>").into_bytes();
    let big = text_with(&"x".repeat(70 * 1024)).into_bytes();
    let deep = format!("<xml>{}", "<a>".repeat(100_000)).into_bytes();
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        (
            "chunked, small",
            head("Transfer-Encoding: chunked"),
            chunks(&small, 7),
            200,
        ),
        (
            "chunked, 70 KiB",
            head("Transfer-Encoding: chunked"),
            chunks(&big, 4096),
            413,
        ),
        (
            "chunked, 100,000 levels",
            head("Transfer-Encoding: chunked"),
            chunks(&deep, 8192),
            413,
        ),
        (
            "Content-Length: 100, 70 KiB sent",
            head("Content-Length: 100"),
            big.clone(),
            400,
        ),
        (
            "Content-Length: 10 MB, small body sent",
            head("Content-Length: 10000000"),
            small.clone(),
            413,
        ),
        (
            "Content-Length: lots",
            head("Content-Length: lots"),
            small.clone(),
            400,
        ),
        (
            "two different Content-Lengths",
            head(&format!(
                "Content-Length: {}\r\nContent-Length: 5",
                small.len()
            )),
            small.clone(),
            400,
        ),
        (
            "Content-Length and chunked",
            head(&format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked",
                small.len()
            )),
            chunks(&small, 7),
            400,
        ),
        (
            "bad chunk size",
            head("Transfer-Encoding: chunked"),
            b"zz\r\nabc\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (name, head, body, expected) in &cases {
        let status = server.exchange(head, body);
        if status != *expected {
            failures.push(format!("{name}: expected {expected}, got {status}"));
        }
    }
    let status = server.exchange(&head(&format!("Content-Length: {}", small.len())), &small);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(status, 200, "a good push after the hostile ones");
}

/// What a client that stops sending gets: the status, and whether the server closed the
/// connection (rather than keep it for the rest of a body that never comes).
fn stalled(addr: std::net::SocketAddr, head: &str, sent: &[u8]) -> (u16, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    // Far past the body timeout of these tests: a server that hangs fails here.
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .unwrap();
    stream.write_all(sent).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let status = String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, closed)
}

/// A body that stops or trickles, before any signature check, held its connection for
/// minutes (the probe's 20,000 of them exhausted the file descriptors). Now every route
/// answers 408 once the body timeout has passed, and closes the connection; a chunked
/// body left unread by a route that ignores bodies included.
#[test]
fn slow_and_stalled_bodies_get_408_and_a_closed_connection_on_every_route() {
    let mut state = safe_state();
    state.options.body_timeout = Duration::from_millis(500);
    let server = Listening::start(state);
    let head = |line: &str, framing: &str| {
        format!("{line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n{framing}")
    };
    let post = format!("POST /wechat?{}", signed_query());
    let unsigned = "POST /wechat?signature=x&timestamp=1&nonce=2";
    let chunked = "Transfer-Encoding: chunked";
    let cases: Vec<(&str, String, &[u8], u16)> = vec![
        (
            "POST, Content-Length 1000, 5 bytes sent",
            head(&post, "Content-Length: 1000"),
            b"<xml>",
            408,
        ),
        (
            "POST, chunked, stopped mid-chunk",
            head(&post, chunked),
            b"100\r\nabc",
            408,
        ),
        (
            "POST, chunked, stopped in a size line",
            head(&post, chunked),
            b"10",
            408,
        ),
        (
            "GET /healthz, chunked, stopped",
            head("GET /healthz", chunked),
            b"100\r\nabc",
            408,
        ),
        (
            "GET /wechat, chunked, stopped",
            head("GET /wechat", chunked),
            b"100\r\nabc",
            408,
        ),
        // A path no account serves: 404 at once, the body unread and the connection
        // closed (one route table for one account or many, as with `--config`).
        (
            "POST /nowhere, chunked, stopped",
            head("POST /nowhere", chunked),
            b"100\r\nabc",
            404,
        ),
        // Unsigned: refused before the body is read, at once.
        (
            "POST unsigned, Content-Length 1000, stopped",
            head(unsigned, "Content-Length: 1000"),
            b"<xml>",
            403,
        ),
        (
            "POST unsigned, chunked, stopped",
            head(unsigned, chunked),
            b"100\r\nabc",
            403,
        ),
    ];
    let mut failures = Vec::new();
    for (name, head, sent, expected) in &cases {
        let (status, closed) = stalled(server.addr, head, sent);
        if (status, closed) != (*expected, true) {
            failures.push(format!("{name}: got {status}, closed: {closed}"));
        }
    }
    // One byte every 200 ms: never done within the timeout.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(format!("{}\r\n\r\n", head(&post, "Content-Length: 100")).as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    for _ in 0..100 {
        if stream.write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        if let Ok(n) = stream.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        stream.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    if !answer.starts_with("HTTP/1.1 408") {
        failures.push(format!("one byte every 200 ms: got {answer:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The server still answers a good push.
    let good = message("<Content>hi</Content>");
    let status = server.exchange(
        &format!(
            "{}Content-Length: {}\r\nConnection: close",
            head(&post, ""),
            good.len()
        ),
        good.as_bytes(),
    );
    assert_eq!(status, 200);
}

/// Plaintext replay: the plaintext `signature` covers the query, not the body, so a
/// captured signed query could carry any number of bodies while its timestamp is fresh.
/// Under one signed query the same body again is a retry (answered as before); any other
/// body is refused, 403 and counted as `replayed`. Safe mode is not held to it: its
/// `msg_signature` covers the body. Before the fix all 50 forged bodies were answered.
#[actix_web::test]
async fn a_captured_plaintext_query_carries_one_body_only() {
    let state = state_with_dedup(
        shipped(),
        Secrets::new(TOKEN, Some((AES_KEY, APP_ID))).unwrap(),
        Options::default(),
        Some(wxrules::store::dedup::Config::default()),
    );
    let app = app(state.clone()).await;
    let captured = signed_query();
    let first = message("<Content>价格</Content>");
    let (status, answer) = post(&app, &captured, first.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(post(&app, &captured, first).await, (status, answer));
    for i in 0..50 {
        let forged = message(&format!("<Content>forged {i}</Content>"));
        let (status, body) = post(&app, &captured, forged).await;
        assert_eq!((status, body.as_str()), (403, ""), "forged body {i}");
    }
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "wxrules_requests_total{outcome=\"replayed\"}"),
        Some(50.0),
        "{metrics}"
    );
    // Safe mode: two bodies under one timestamp and nonce, each with its own
    // `msg_signature`, are both answered.
    let cipher = Cipher::new(AES_KEY, APP_ID).unwrap();
    for content in ["价格", "帮助"] {
        let encrypt = cipher.encrypt(message(&format!("<Content>{content}</Content>")).as_bytes());
        let ts = NOW.to_string();
        let query = format!(
            "signature={}&timestamp={ts}&nonce={NONCE}&encrypt_type=aes&msg_signature={}",
            sign(&[TOKEN, &ts, NONCE]),
            sign(&[TOKEN, &ts, NONCE, &encrypt])
        );
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_account]]></ToUserName>\
             <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        let (status, answer) = post(&app, &query, body).await;
        assert_eq!(status, 200, "{answer}");
    }
}

/// Log lines written on this thread (the test's runtime, where pushes are handled).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A push whose messages the outbox refuses gets a line at most 20 times a second, the
/// first line after a quiet spell saying how many were left out; the metrics count every
/// refused message. Before the fix each refused push had its line (a full outbox in
/// process logged 379k lines in 8 s).
#[actix_web::test]
async fn outbox_refusals_are_logged_twenty_a_second() {
    let logs = Logs::default();
    let writer = logs.clone();
    let _capture = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let scratch = Scratch::new("outbox-refusals");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: order\n    when: { keyword: 订单 }\n    reply: { text: 查询中 }\n    send: [ { text: 详情 } ]\n",
    );
    std::fs::create_dir_all(scratch.path("templates")).unwrap();
    // No AppSecret: the outbox refuses every push's messages, as a full one does.
    let state = plain_state(wxrules::rules::Sources {
        rules: scratch.path("rules.yaml"),
        templates: scratch.path("templates"),
    });
    let app = app(state).await;
    let pushes = 200;
    let started = std::time::Instant::now();
    for _ in 0..pushes {
        let (status, _) = post(&app, &signed_query(), text_with("订单")).await;
        assert_eq!(status, 200);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("outbox_refused"))
        .count();
    assert!(lines >= 1, "{text}");
    assert!(
        lines as u64 <= 20 * (seconds + 1),
        "{lines} lines for {pushes} pushes in {seconds} s"
    );
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(
            &metrics,
            "wxrules_outbox_results_total{outcome=\"unsendable\"}"
        ),
        Some(f64::from(pushes)),
        "{metrics}"
    );
}
