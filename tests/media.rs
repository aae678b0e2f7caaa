//! Replies' media files (`image: { file: … }`): held to WeChat's limits at load (each
//! refusal at its file:line:col), uploaded as permanent material in the background once per
//! account and content, even by two instances sharing one Redis, the id reused after a
//! restart; until the upload is done a reply answers `success` (or its rule's `on_error`),
//! counted.
#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::{Duration, Instant};

use browser::{text_push, Server};
use common::backend::Backend;
use common::fake_wechat::{FakeWechat, APPID, SECRET};
use common::redis_server::RedisServer;
use common::Scratch;

const RULES: &str = "\
rules:
  - name: poster
    when: { keyword: 海报 }
    reply: { image: { file: media/poster.png } }
  - name: clip
    when: { keyword: 视频 }
    reply: { video: { file: clip.mp4, title: 开业, description: 三十秒 } }
";

/// A scratch directory with the rules and their two files (`poster` makes its content).
fn scratch(tag: &str, poster: &str) -> Scratch {
    let scratch = Scratch::new(tag);
    scratch.write("rules.yaml", RULES);
    scratch.write("templates/media/poster.png", poster);
    scratch.write(
        "templates/clip.mp4",
        "not really an mp4, but WeChat's limits are by name",
    );
    scratch
}

/// `wxrules` on `scratch`, with the account's credentials, the stand-in and `store`.
fn serve(scratch: Scratch, fake: &FakeWechat, store: &str) -> Server {
    Server::launch_with(
        scratch,
        &[
            "--rules",
            "rules.yaml",
            "--templates",
            "templates",
            "--store",
            store,
        ],
        &[
            ("WXRULES_WECHAT_API", &fake.base()),
            ("WXRULES_APPID", APPID),
            ("WXRULES_APPSECRET", SECRET),
        ],
    )
}

/// Pushes `text` until the answer names a media id (10 s at most); the answer.
async fn answer_with_media(server: &Server, text: &str, first_id: &mut u64) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        *first_id += 1;
        let answer = server.push(&text_push(text, *first_id)).await;
        if answer.contains("<MediaId>") || Instant::now() > until {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_instances_upload_each_content_once_and_a_restart_reuses_it() {
    let fake = FakeWechat::start();
    let redis = RedisServer::start();
    let store = redis.url();
    let a = serve(scratch("media-a", "PNG poster v1"), &fake, &store);
    let b = serve(scratch("media-b", "PNG poster v1"), &fake, &store);
    let mut id = 1000;
    let from_a = answer_with_media(&a, "海报", &mut id).await;
    let from_b = answer_with_media(&b, "海报", &mut id).await;
    assert!(
        from_a.contains("<MediaId><![CDATA[PERMANENT_image_"),
        "{from_a}"
    );
    let media_id = |xml: &str| {
        xml.split("<MediaId><![CDATA[")
            .nth(1)
            .and_then(|rest| rest.split("]]>").next())
            .unwrap()
            .to_owned()
    };
    assert_eq!(media_id(&from_a), media_id(&from_b));
    // The video too, with its title and introduction.
    let video = answer_with_media(&a, "视频", &mut id).await;
    assert!(video.contains("<Title><![CDATA[开业]]></Title>"), "{video}");
    let uploads = fake.materials();
    let images: Vec<_> = uploads.iter().filter(|u| u.kind == "image").collect();
    assert_eq!(images.len(), 1, "{uploads:?}");
    assert_eq!(images[0].bytes, b"PNG poster v1");
    assert_eq!(images[0].filename, "poster.png");
    let videos: Vec<_> = uploads.iter().filter(|u| u.kind == "video").collect();
    assert_eq!(videos.len(), 1);
    assert_eq!(
        videos[0].description,
        Some(serde_json::json!({"title": "开业", "introduction": "三十秒"}))
    );
    // The id is kept in Redis by content.
    assert!(redis
        .get(&format!(
            "wxrules:media:{APPID}:image:{}",
            sha256(b"PNG poster v1")
        ))
        .is_some());
    drop(a);
    drop(b);
    // A restart finds the ids: no upload.
    let c = serve(scratch("media-c", "PNG poster v1"), &fake, &store);
    let again = answer_with_media(&c, "海报", &mut id).await;
    assert_eq!(media_id(&again), media_id(&from_a));
    assert_eq!(fake.materials().len(), 2);
    // New content is a new upload.
    drop(c);
    let d = serve(scratch("media-d", "PNG poster v2"), &fake, &store);
    let changed = answer_with_media(&d, "海报", &mut id).await;
    assert_ne!(media_id(&changed), media_id(&from_a));
    assert_eq!(fake.materials().len(), 3);
}

#[tokio::test]
async fn until_the_upload_is_done_the_reply_is_success_or_on_error_and_counted() {
    // The API is down: nothing is uploaded, and the push gets `success` at once.
    let base = "http://127.0.0.1:9".to_owned();
    let scratch = scratch("media-pending", "PNG");
    // A rule with a call has an `on_error`: its service answered, but the reply's file is
    // not uploaded yet, so `on_error` answers in its place.
    let backend = Backend::start();
    scratch.write(
        "rules.yaml",
        &format!(
            "{RULES}  - name: poster-order\n    when: {{ keyword: 订单海报 }}\n    call: {{ url: \"{}/orders/7\" }}\n    reply: {{ image: {{ file: media/poster.png }} }}\n    on_error: {{ text: 海报还在准备 }}\n",
            backend.base()
        ),
    );
    let server = Server::launch_with(
        scratch,
        &["--rules", "rules.yaml", "--templates", "templates"],
        &[
            ("WXRULES_WECHAT_API", &base),
            ("WXRULES_APPID", APPID),
            ("WXRULES_APPSECRET", SECRET),
        ],
    );
    assert_eq!(server.push(&text_push("海报", 1)).await, "success");
    let answer = server.push(&text_push("订单海报", 2)).await;
    assert!(
        answer.contains("<Content><![CDATA[海报还在准备]]></Content>"),
        "{answer}"
    );
    assert_eq!(backend.received().len(), 1, "the service was asked");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::sample(&metrics, "wxrules_media_pending_total"),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_media_id_wechat_refuses_is_uploaded_again_and_the_message_sent_again() {
    let fake = FakeWechat::start();
    let scratch = scratch("media-40007", "PNG poster");
    scratch.write(
        "rules.yaml",
        &format!(
            "{RULES}  - name: poster-later\n    when: {{ keyword: 稍后 }}\n    reply: {{ text: 马上发 }}\n    send: [ {{ image: {{ file: media/poster.png }} }} ]\n"
        ),
    );
    let server = serve(scratch, &fake, "memory");
    let mut id = 2000;
    let first = answer_with_media(&server, "海报", &mut id).await;
    let old = first
        .split("<MediaId><![CDATA[")
        .nth(1)
        .and_then(|rest| rest.split("]]>").next())
        .unwrap()
        .to_owned();
    // Deleted in the console: the customer-service message gets 40007, the file is
    // uploaded again and the message goes out with the new id.
    fake.delete_material(&old);
    assert!(server
        .push(&text_push("稍后", 3000))
        .await
        .contains("马上发"));
    let delivered = fake.wait_delivered(1).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let new = delivered[0]["image"]["media_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    let images: Vec<_> = fake
        .materials()
        .into_iter()
        .filter(|m| m.kind == "image")
        .map(|m| m.media_id)
        .collect();
    assert_eq!(images, [old, new.clone()]);
    // Passive replies use the new id from now on.
    let after = answer_with_media(&server, "海报", &mut id).await;
    assert!(after.contains(&new), "{after}");
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a load says of `yaml` (the rules) with the files of `scratch`.
fn refusals(scratch: &Scratch, yaml: &str) -> Vec<String> {
    scratch.write("rules.yaml", yaml);
    match wxrules::rules::load(&scratch.sources()) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.iter()
                .map(|e| {
                    e.to_string()
                        .replace(&scratch.dir.display().to_string(), "DIR")
                })
                .collect()
        }
    }
}

#[test]
fn files_are_held_to_wechats_formats_and_sizes_at_their_place() {
    let scratch = Scratch::new("media-limits");
    scratch.write("templates/notes.txt", "x");
    scratch.write("templates/ok.jpg", "x");
    std::fs::write(
        scratch.path("templates/long.mp3"),
        vec![0u8; 2 * 1024 * 1024 + 1],
    )
    .unwrap();
    let one = |reply: &str| format!("rules:\n  - name: r\n    reply: {reply}\n");
    let cases = [
        (
            one("{ image: { file: notes.txt } }"),
            "DIR/rules.yaml:3:29: rule `r`: `notes.txt`: WeChat takes image files as bmp, png, jpeg, jpg, gif",
        ),
        (
            one("{ voice: { file: long.mp3 } }"),
            "DIR/rules.yaml:3:29: rule `r`: `long.mp3` is over the size limit of 2097152 bytes: WeChat takes voice files of at most 2 MB",
        ),
        (
            one("{ video: { file: ok.jpg } }"),
            "DIR/rules.yaml:3:29: rule `r`: `ok.jpg`: WeChat takes video files as mp4",
        ),
        (
            one("{ image: { file: ../ok.jpg } }"),
            "DIR/rules.yaml:3:29: rule `r`: `file` is a path under the templates directory, without `..`, not `../ok.jpg`",
        ),
        (
            one("{ image: { file: gone.png } }"),
            "DIR/rules.yaml:3:29: rule `r`: `gone.png` cannot be read (entity not found): WeChat takes image files of at most 10 MB",
        ),
        (
            one("{ image: { file: ok.jpg, media_id: M } }"),
            "DIR/rules.yaml:3:29: rule `r`: an image takes `media_id` or `file`, not both",
        ),
        (
            one("{ image: { file: ok.jpg, expires: 2026-12-01 } }"),
            "DIR/rules.yaml:3:46: rule `r`: `expires` marks a temporary media id; a `file` is uploaded as permanent material",
        ),
    ];
    let mut wrong = Vec::new();
    for (yaml, expected) in cases {
        let got = refusals(&scratch, &yaml);
        if got != [expected] {
            wrong.push(format!("{yaml}  expected: {expected}\n  got:      {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A good file loads, known by its content.
    assert!(refusals(&scratch, &one("{ image: { file: ok.jpg } }")).is_empty());
    let loaded = wxrules::rules::load(&scratch.sources()).unwrap();
    let files = loaded.rules.media_files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].sha256, sha256(b"x"));
}

/// Only the server uploads: `test` and `explain` render a file's reply with the stand-in
/// media id `file:NAME`, so that a case of such a rule passes before any upload.
#[test]
fn test_and_explain_render_a_files_reply_with_a_stand_in_id() {
    let scratch = scratch("media-stand-in", "PNG");
    scratch.write(
        "cases.yaml",
        "cases:\n  - name: poster\n    text: 海报\n    rule: poster\n    reply_type: image\n",
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .args(args)
            .args(["--rules", "rules.yaml", "--templates", "templates"])
            .current_dir(&scratch.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(run(&["test", "cases.yaml"]), "1 passed, 0 failed\n");
    let explained = run(&["explain", "--text", "海报"]);
    assert!(
        explained.contains("<Image><MediaId><![CDATA[file:media/poster.png]]></MediaId></Image>"),
        "{explained}"
    );
}

/// `wxrules import --download-media` fetches the export's media from the stand-in on
/// 127.0.0.1 (temporary media by `media/get`, a video through its `video_url`, the
/// export's own video link, and permanent material by `get_material` after `media/get`'s
/// 40007) into files named by content, and the rules name those files; a media over
/// WeChat's size, or one WeChat has no more, keeps its temporary id with `expires:` and
/// says so on stderr, and the import goes on. The rules pass `check` (warning of those
/// two), their cases pass, and the server uploads the files as permanent material.
#[tokio::test]
async fn import_downloads_the_exports_media_into_files_the_rules_name() {
    let fake = FakeWechat::start();
    let jpeg = b"\xff\xd8\xff\xe0 a jpeg of the welcome";
    let amr = b"#!AMR\n a voice";
    let mp4 = b"\0\0\0\x18ftypmp42 a video";
    let png = b"\x89PNG\r\n\x1a\n a permanent image";
    fake.add_media("IMG_TEMP", "image/jpeg", jpeg);
    fake.add_media("VOICE_TEMP", "audio/amr", amr);
    fake.add_media("VIDEO_TEMP", "video/mp4", mp4);
    fake.add_media("VOICE_BIG", "audio/amr", &vec![b'#'; 2 * 1024 * 1024 + 1]);
    fake.add_permanent(common::fake_wechat::Uploaded {
        kind: "image".into(),
        filename: "logo.png".into(),
        bytes: png.to_vec(),
        description: None,
        media_id: "IMG_KEPT".into(),
    });
    let reply =
        |kind: &str, content: &str| format!(r#"{{ "type": "{kind}", "content": "{content}" }}"#);
    let rule = |name: &str, keyword: &str, replies: &[String]| {
        format!(
            r#"{{ "rule_name": "{name}", "reply_mode": "reply_all",
                 "keyword_list_info": [ {{ "type": "text", "match_mode": "equal", "content": "{keyword}" }} ],
                 "reply_list_info": [ {} ] }}"#,
            replies.join(", ")
        )
    };
    let export = format!(
        r#"{{ "is_add_friend_reply_open": 1, "is_autoreply_open": 1,
             "add_friend_autoreply_info": {},
             "keyword_autoreply_info": {{ "list": [ {}, {}, {}, {}, {} ] }} }}"#,
        reply("img", "IMG_TEMP"),
        rule("语音", "听", &[reply("voice", "VOICE_TEMP")]),
        rule("开业视频", "视频", &[reply("video", "VIDEO_TEMP")]),
        rule(
            "链接视频",
            "短片",
            &[reply("video", &format!("{}/video/VIDEO_TEMP", fake.base()))]
        ),
        rule("标志", "标志", &[reply("img", "IMG_KEPT")]),
        rule(
            "过期",
            "旧",
            &[reply("voice", "VOICE_BIG"), reply("img", "IMG_GONE")]
        ),
    );
    let scratch = Scratch::new("media-import");
    scratch.write("export.json", &export);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .args(args)
            .current_dir(&scratch.dir)
            .env("WXRULES_APPID", APPID)
            .env("WXRULES_APPSECRET", SECRET)
            .env("WXRULES_WECHAT_API", fake.base())
            .output()
            .unwrap()
    };
    // Without the account's credentials nothing is fetched, nor written.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args([
            "import",
            "export.json",
            "--download-media",
            "--rules-out",
            "rules.yaml",
        ])
        .current_dir(&scratch.dir)
        .env_remove("WXRULES_APPID")
        .env_remove("WXRULES_APPSECRET")
        .env("WXRULES_WECHAT_API", fake.base())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "error: --download-media needs WXRULES_APPID and WXRULES_APPSECRET\n"
    );
    assert!(!scratch.path("rules.yaml").exists());
    assert!(fake.downloads().is_empty());
    let out = run(&[
        "import",
        "export.json",
        "--download-media",
        "--rules-out",
        "rules.yaml",
        "--tests-out",
        "cases.yaml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    let name =
        |bytes: &[u8], extension: &str| format!("media/{}.{extension}", &sha256(bytes)[..16]);
    let (image, voice, video, logo) = (
        name(jpeg, "jpg"),
        name(amr, "amr"),
        name(mp4, "mp4"),
        name(png, "png"),
    );
    for (what, file) in [
        ("image media id `IMG_TEMP`", &image),
        ("voice media id `VOICE_TEMP`", &voice),
        ("video media id `VIDEO_TEMP`", &video),
        ("image media id `IMG_KEPT`", &logo),
    ] {
        assert!(
            stderr.contains(&format!("downloaded {what} to templates/{file}\n")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!(
            "downloaded video link {}/video/VIDEO_TEMP to templates/{video}\n",
            fake.base()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: voice media id `VOICE_BIG` not downloaded (over WeChat's 2 MB for voice material): its reply keeps it, temporary (`check` warns)\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: image media id `IMG_GONE` not downloaded (errcode 40007: invalid media_id): its reply keeps it, temporary (`check` warns)\n"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("downloaded 5 of 7 media into templates/media\nimported 6 rules (0 switched off in the console, commented out)\n"),
        "{stderr}"
    );
    // Named by content: the same video, by id and by link, is one file.
    for (file, bytes) in [
        (&image, &jpeg[..]),
        (&voice, amr),
        (&video, mp4),
        (&logo, png),
    ] {
        assert_eq!(
            std::fs::read(scratch.path(&format!("templates/{file}"))).unwrap(),
            bytes
        );
    }
    assert_eq!(
        std::fs::read_dir(scratch.path("templates/media"))
            .unwrap()
            .count(),
        4
    );
    // The temporary media was asked for first; the permanent image after its 40007.
    let downloads = fake.downloads();
    assert!(
        downloads.contains(&"media/get IMG_KEPT".to_owned()),
        "{downloads:?}"
    );
    assert!(
        downloads.contains(&"get_material IMG_KEPT".to_owned()),
        "{downloads:?}"
    );
    assert!(
        !downloads.contains(&"get_material IMG_TEMP".to_owned()),
        "{downloads:?}"
    );

    let rules = std::fs::read_to_string(scratch.path("rules.yaml")).unwrap();
    for line in [
        format!("    reply: {{ image: {{ file: \"{image}\" }} }}\n"),
        format!("    reply: {{ voice: {{ file: \"{voice}\" }} }}\n"),
        format!("    reply: {{ video: {{ file: \"{video}\", title: \"开业视频\", description: \"\" }} }}\n"),
        format!("    reply: {{ video: {{ file: \"{video}\", title: \"链接视频\", description: \"\" }} }}\n"),
        format!("    reply: {{ image: {{ file: \"{logo}\" }} }}\n"),
        "    reply: { voice: { media_id: \"VOICE_BIG\", expires: 20".to_owned(),
        "      - { image: { media_id: \"IMG_GONE\", expires: 20".to_owned(),
    ] {
        assert!(rules.contains(&line), "{line}\nnot in\n{rules}");
    }
    assert!(rules.contains("permanent material's id; --download-media could not fetch it: errcode 40007: invalid media_id\n"), "{rules}");

    // `check` warns of the two temporary ids only; the cases pass.
    let sources = ["--rules", "rules.yaml", "--templates", "templates"];
    let check = run(&[&["check"][..], &sources].concat());
    let warnings = String::from_utf8_lossy(&check.stderr).to_string();
    assert_eq!(check.status.code(), Some(0), "{warnings}");
    assert_eq!(
        warnings
            .matches("is temporary: WeChat deletes it on")
            .count(),
        2,
        "{warnings}"
    );
    let test = run(&[&["test"][..], &sources, &["cases.yaml"]].concat());
    assert_eq!(
        String::from_utf8_lossy(&test.stdout),
        "6 passed, 0 failed\n",
        "{}",
        String::from_utf8_lossy(&test.stderr)
    );

    // The server uploads the files as permanent material, and answers with their ids.
    let server = serve(scratch, &fake, "memory");
    let mut id = 5000;
    let answer = answer_with_media(&server, "标志", &mut id).await;
    assert!(
        answer.contains("<MediaId><![CDATA[PERMANENT_image_"),
        "{answer}"
    );
    let uploaded = fake.materials();
    assert!(
        uploaded
            .iter()
            .any(|m| m.bytes == png && m.filename.ends_with(".png") && m.media_id != "IMG_KEPT"),
        "{uploaded:?}"
    );
}
