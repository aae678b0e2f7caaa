//! `Message::parse` and `parse_encrypted` on arbitrary bytes: never a panic, and a message
//! that parses keeps its invariants (the common fields are there, `CreateTime` is the
//! number its text says, and a field read from the flat element list is what the JSON
//! object templates see says).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxrules::wire::{parse_encrypted, Message};

fuzz_target!(|data: &[u8]| {
    let _ = parse_encrypted(data);
    let Ok(message) = Message::parse(data) else {
        return;
    };
    for field in ["ToUserName", "FromUserName", "MsgType", "CreateTime"] {
        assert!(
            message.text(field).is_some(),
            "{field} missing after a successful parse"
        );
    }
    let create_time = message
        .text("CreateTime")
        .map(|t| t.trim().parse::<u64>().ok());
    assert_eq!(create_time, Some(Some(message.create_time())));
    // The flat lookups (one pass at parse for the common fields, a scan for the others)
    // agree with the JSON object built for templates.
    for field in [
        "ToUserName", "FromUserName", "MsgType", "Event", "EventKey", "MsgId", "MsgID",
        "Content", "Recognition", "Status", "PicList", "item", "ScanCodeInfo",
    ] {
        let from_tree = message.fields().get(field).and_then(|v| v.as_str());
        assert_eq!(message.text(field), from_tree, "{field}");
        assert_eq!(message.lookup(field), from_tree, "{field}");
    }
    let _ = message.keyword_text();
    let _ = message.msg_id();
    let _ = message.lookup("SendPicsInfo.PicList.0.PicMd5Sum");
    let _ = message.lookup("ScanCodeInfo.ScanResult");
});
