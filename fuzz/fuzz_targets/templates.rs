//! The template path: a generated rules file and templates directory, loaded through the
//! one loader (`rules::load_str`, as start-up and reload do) and, when it loads, every rule
//! answered for a few real messages (`answer`, as a push is). Partials included: the
//! templates are named `a`, `b`, `c`, `price` and `help`, so fuzzed text that says
//! `{{> help}}` includes another fuzzed template. Loading may refuse; nothing may panic,
//! overflow the stack or run away, and a render that fails answers `success`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxrules::answer::{answer, Outcome};
use wxrules::rules::load_str;
use wxrules::wire::Message;

const NAMES: [&str; 5] = ["a", "b", "c", "price", "help"];

/// Messages with what templates reach for: text, a QR scene, a list of pictures.
const MESSAGES: [&str; 3] = [
    "<xml><ToUserName>gh_1</ToUserName><FromUserName>o_1</FromUserName>\
     <CreateTime>1795737600</CreateTime><MsgType>text</MsgType>\
     <Content>订单 2026 price</Content><MsgId>1</MsgId></xml>",
    "<xml><ToUserName>gh_1</ToUserName><FromUserName>o_1</FromUserName>\
     <CreateTime>1795737600</CreateTime><MsgType>event</MsgType><Event>subscribe</Event>\
     <EventKey>qrscene_7</EventKey><Ticket>t</Ticket></xml>",
    "<xml><ToUserName>gh_1</ToUserName><FromUserName>o_1</FromUserName>\
     <CreateTime>1795737600</CreateTime><MsgType>event</MsgType><Event>pic_weixin</Event>\
     <EventKey>k</EventKey><SendPicsInfo><Count>3</Count><PicList>\
     <item><PicMd5Sum>a1</PicMd5Sum></item><item><PicMd5Sum>b2</PicMd5Sum></item>\
     <item><PicMd5Sum>c3</PicMd5Sum></item></PicList></SendPicsInfo></xml>",
];

/// YAML single-quoted: the text as one scalar whatever it holds.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''").replace('\n', " "))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Parts split by NUL: five template files, then inline reply strings.
    let mut parts = text.split('\0');
    let templates: Vec<(&str, &str)> = NAMES
        .iter()
        .map(|name| (*name, parts.next().unwrap_or("")))
        .collect();
    // Each reply on its own, in a rule that matches every message: the inline strings,
    // then each template file. Every load registers all five files, so their partials are
    // checked (and rendered) together each time.
    let replies: Vec<String> = parts
        .take(3)
        .map(quoted)
        .chain(NAMES.iter().map(|name| format!("{{ template: {name} }}")))
        .collect();
    for reply in replies {
        let yaml = format!("rules:\n  - name: only\n    reply: {{ text: {reply} }}\n");
        let Ok(loaded) = load_str(&yaml, &templates) else {
            continue;
        };
        for xml in MESSAGES {
            let message = Message::parse(xml.as_bytes()).expect("fixed messages parse");
            match answer(&loaded.rules, &message, 1_795_737_600) {
                Outcome::Replied { xml, .. } => assert!(xml.starts_with("<xml>")),
                Outcome::Ignored { .. } | Outcome::Failed { .. } => {}
            }
        }
    }
});
