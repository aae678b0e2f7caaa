//! `wxrules import`'s tests: the console's export as rules and cases.

use super::*;

const EXPORT: &str = r#"{
    "add_friend_autoreply_info": { "type": "img", "content": "IMG_ID" },
    "keyword_autoreply_info": { "list": [
        { "rule_name": "声音", "reply_mode": "reply_all",
          "keyword_list_info": [ { "type": "text", "match_mode": "equal", "content": "听" } ],
          "reply_list_info": [ { "type": "voice", "content": "VOICE_ID" },
                               { "type": "video", "content": "http://127.0.0.1/v.mp4" } ] }
    ] }
}"#;

/// 2026-12-07 12:00 in Shanghai: temporary ids expire on the 10th.
const FETCHED: i64 = 1_796_616_000;

fn media(kind: &'static str, content: &str) -> ExportMedia {
    ExportMedia {
        kind,
        content: content.to_owned(),
    }
}

#[test]
fn the_import_lists_the_exports_media_and_names_the_files_fetched_for_them() {
    let plain = import_fetched_at(EXPORT, FETCHED, &Downloads::default()).unwrap();
    assert_eq!(
        plain.media,
        [
            media("voice", "VOICE_ID"),
            media("video", "http://127.0.0.1/v.mp4"),
            media("image", "IMG_ID"),
        ]
    );
    assert!(
        plain
            .rules
            .contains("reply: { voice: { media_id: \"VOICE_ID\", expires: 2026-12-10 } }"),
        "{}",
        plain.rules
    );
    let mut downloads = Downloads::default();
    downloads.insert(
        media("voice", "VOICE_ID"),
        Ok(Downloaded {
            file: "media/0123abcd.amr".into(),
            video: None,
        }),
    );
    downloads.insert(
        media("video", "http://127.0.0.1/v.mp4"),
        Ok(Downloaded {
            file: "media/4567cdef.mp4".into(),
            video: None,
        }),
    );
    downloads.insert(
        media("image", "IMG_ID"),
        Err("errcode 40007: invalid media_id".into()),
    );
    let fetched = import_fetched_at(EXPORT, FETCHED, &downloads).unwrap();
    let rules = &fetched.rules;
    assert!(
        rules.contains("  reply: { voice: { file: \"media/0123abcd.amr\" } }\n"),
        "{rules}"
    );
    // A video without WeChat's title takes its rule's name.
    assert!(
        rules.contains("      - { video: { file: \"media/4567cdef.mp4\", title: \"声音\", description: \"\" } }\n"),
        "{rules}"
    );
    assert!(
        rules.contains("  # voice media id `VOICE_ID` downloaded from WeChat (--download-media) to `media/0123abcd.amr`"),
        "{rules}"
    );
    // A media that could not be fetched keeps its id, its day, and says why.
    assert!(
        rules.contains("reply: { image: { media_id: \"IMG_ID\", expires: 2026-12-10 } }"),
        "{rules}"
    );
    assert!(
        rules.contains("replace it with a permanent material's id; --download-media could not fetch it: errcode 40007: invalid media_id\n"),
        "{rules}"
    );
    let loaded = crate::rules::load_str(rules, &[]);
    assert!(loaded.is_err(), "the files are not there: {rules}");
}

#[test]
fn a_fetched_files_extension_comes_from_its_type_name_or_bytes_within_wechats_formats() {
    assert_eq!(
        media_extension("image", "image/jpeg", None, b""),
        Some("jpg")
    );
    assert_eq!(
        media_extension("image", "application/octet-stream", Some("ID.png"), b""),
        Some("png")
    );
    assert_eq!(
        media_extension("image", "", None, b"\x89PNG\r\n\x1a\n...."),
        Some("png")
    );
    assert_eq!(
        media_extension("voice", "", None, b"#!AMR\n.."),
        Some("amr")
    );
    assert_eq!(
        media_extension("video", "", None, b"\0\0\0\x18ftypmp42"),
        Some("mp4")
    );
    // WeChat's speex voice, and an image given for a voice: no format permanent
    // voice material takes.
    assert_eq!(
        media_extension("voice", "audio/speex", Some("a.speex"), b""),
        None
    );
    assert_eq!(media_extension("voice", "image/png", None, b""), None);
    assert_eq!(media_extension("image", "", None, b"plain text"), None);
}
