//! `Message::parse` and `parse_encrypted` on arbitrary bytes: never a panic, and a message
//! that parses keeps its invariants (the common fields are there, `CreateTime` is the
//! number its text says).
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
    let _ = message.keyword_text();
    let _ = message.msg_id();
    let _ = message.lookup("SendPicsInfo.PicList.0.PicMd5Sum");
    let _ = message.lookup("ScanCodeInfo.ScanResult");
});
