//! The custom menu as a file: `menu.yaml` checked against WeChat's limits (each refusal
//! at its file:line:col), held against the rules by `check`, its JSON Schema, and
//! `wxrules menu diff|apply|pull` against the WeChat stand-in on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::fake_wechat::{FakeWechat, APPID, SECRET};
use common::*;
use serde_json::json;

fn menu_fixture() -> std::path::PathBuf {
    root().join("tests/data/menu/menu.yaml")
}

fn wxrules(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxrules"));
    command
        .args(args)
        .env("WXRULES_APPID", APPID)
        .env("WXRULES_APPSECRET", SECRET)
        .env_remove("WXRULES_CONFIG")
        .env_remove("WXRULES_WECHAT_API");
    command
}

/// `wxrules menu ACTION --menu FILE` against `fake`.
fn menu_cmd(fake: &FakeWechat, action: &str, menu: &Path) -> Output {
    wxrules(&["menu", action, "--wechat-api", &fake.base(), "--menu"])
        .arg(menu)
        .output()
        .unwrap()
}

/// `wxrules check` of the rules and templates in `scratch`, with `extra` flags first.
fn check_in(scratch: &Scratch, extra: &[&str]) -> Output {
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    args.push("--rules");
    wxrules(&args)
        .arg(scratch.path("rules.yaml"))
        .arg("--templates")
        .arg(scratch.path("templates"))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The error of a menu, as `load_str` reports it: `m.yaml:L:C: message`.
fn refusal(yaml: &str) -> String {
    let errors = wxrules::menu::load_str(yaml, Path::new("m.yaml")).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    errors.0[0].to_string()
}

#[test]
fn every_limit_is_refused_at_its_place() {
    let click = |name: &str| format!("{{ name: {name}, type: click, key: K }}");
    let four = format!(
        "button: [{}]",
        [click("a"), click("b"), click("c"), click("d")].join(", ")
    );
    let subs = |n: usize| {
        (0..n)
            .map(|i| format!("      - {{ name: s{i}, type: click, key: K{i} }}\n"))
            .collect::<String>()
    };
    let cases: Vec<(String, &str)> = vec![
        (four, "m.yaml:1:114: a menu has 1 to 3 buttons, and this one has 4"),
        ("button: []".into(), "m.yaml:1:9: a menu has 1 to 3 buttons, and this one has 0"),
        (
            format!("button:\n  - name: 菜单\n    sub_button:\n{}", subs(6)),
            "m.yaml:9:11: a sub-menu has 1 to 5 buttons, and this one has 6",
        ),
        (
            "button:\n  - { name: 一二三四五六, type: click, key: K }".into(),
            "m.yaml:2:13: `一二三四五六` is 18 bytes: the name of a button on the bar is at most 16 bytes (UTF-8; a Chinese character takes 3)",
        ),
        (
            format!(
                "button:\n  - name: m\n    sub_button:\n      - {{ name: {}, type: click, key: K }}",
                "长".repeat(21)
            ),
            "m.yaml:4:17: `长长长长长长长长长长长长长长长长长长长长长` is 63 bytes: the name of a sub-menu's button is at most 60 bytes (UTF-8; a Chinese character takes 3)",
        ),
        (
            format!("button:\n  - {{ name: a, type: click, key: {} }}", "k".repeat(129)),
            "m.yaml:2:34: `key` is 129 bytes: at most 128",
        ),
        (
            format!(
                "button:\n  - {{ name: a, type: view, url: 'https://x.cn/{}' }}",
                "u".repeat(1012)
            ),
            "m.yaml:2:33: `url` is 1025 bytes: at most 1024",
        ),
        (
            "button:\n  - { name: a, type: view, url: 'ftp://x' }".into(),
            "m.yaml:2:33: `url` is an http:// or https:// address, not `ftp://x`",
        ),
        (
            "button:\n  - { name: a, type: click }".into(),
            "m.yaml:2:7: a button of type `click` needs `key`",
        ),
        (
            "button:\n  - { name: a, type: miniprogram, url: 'http://x', appid: wx1 }".into(),
            "m.yaml:2:7: a button of type `miniprogram` needs `pagepath`",
        ),
        (
            "button:\n  - { name: a, type: media_id }".into(),
            "m.yaml:2:7: a button of type `media_id` needs `media_id`",
        ),
        (
            "button:\n  - { name: a, type: article_view_limited }".into(),
            "m.yaml:2:7: a button of type `article_view_limited` needs `article_id`",
        ),
        (
            "button:\n  - { name: a, type: view, url: 'http://x', key: K }".into(),
            "m.yaml:2:50: `key` is not used by a `view` button",
        ),
        (
            "button:\n  - { name: a, type: clik, key: K }".into(),
            "m.yaml:2:22: unknown button type `clik`: one of click, view, miniprogram, scancode_push, scancode_waitmsg, pic_sysphoto, pic_photo_or_album, pic_weixin, location_select, media_id, view_limited, article_id, article_view_limited",
        ),
        (
            "button:\n  - { name: a }".into(),
            "m.yaml:2:7: a button needs a `type` (what a tap does) or a `sub_button`",
        ),
        (
            "button:\n  - { name: a, type: click, key: K, sub_button: [] }".into(),
            "m.yaml:2:49: a button has a `type` or a `sub_button`, not both",
        ),
        (
            "button:\n  - { name: a, type: click, key: K }\nconditional:\n  - matchrule: {}\n    button: [{ name: b, type: click, key: K }]".into(),
            "m.yaml:4:16: a `matchrule` needs `tag_id` or `client_platform_type` (WeChat refuses an empty one: 65304)",
        ),
        (
            "button:\n  - { name: a, type: click, key: K }\nconditional:\n  - matchrule: { client_platform_type: 4 }\n    button: [{ name: b, type: click, key: K }]".into(),
            "m.yaml:4:40: `client_platform_type` is 1 (iOS), 2 (Android) or 3 (others), not `4`",
        ),
        (
            "button:\n  - { name: a, type: click, key: K }\nconditional:\n  - matchrule: { sex: 1 }\n    button: [{ name: b, type: click, key: K }]".into(),
            "m.yaml:4:18: conditional[0].matchrule: unknown field `sex`, expected `tag_id` or `client_platform_type`",
        ),
        (
            "buttons: []".into(),
            "m.yaml:1:1: unknown field `buttons`, expected `button` or `conditional`",
        ),
    ];
    let mut wrong = Vec::new();
    for (yaml, expected) in cases {
        let got = refusal(&yaml);
        if got != expected {
            wrong.push(format!("{yaml}\n  expected: {expected}\n  got:      {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_file_that_is_not_a_menu_is_not_quoted() {
    let got = refusal("SECRET-TOKEN-VALUE-0123456789\n");
    assert_eq!(
        got,
        "m.yaml:1:1: not a menu file: a YAML mapping with `button:` was expected, and this is a text (its text is not shown)"
    );
}

#[test]
fn check_holds_the_menu_against_the_rules_both_ways() {
    let scratch = Scratch::new("menu-check");
    scratch.write(
        "rules.yaml",
        &std::fs::read_to_string(root().join("tests/data/menu/rules.yaml")).unwrap(),
    );
    scratch.write(
        "menu.yaml",
        &std::fs::read_to_string(menu_fixture()).unwrap(),
    );
    let out = check_in(&scratch, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let menu = scratch.path("menu.yaml").display().to_string();
    let rules = scratch.path("rules.yaml").display().to_string();
    assert_eq!(
        stderr,
        format!(
            "warning: {menu}:10:50: no rule answers the scancode_push button key `rselfmenu_0_1`: a tap on it answers nothing\n\
             note: {rules}: rule `old-button` (line 12) answers event_key `V1001_GOOD`, which no button of the menu sends\n\
             note: {rules}: rule `old-button` (line 12) answers event_key `RETIRED_KEY`, which no button of the menu sends\n"
        )
    );
    assert!(text(&out.stdout).contains("ok: menu, 14 buttons with an action, 1 conditional menus"));
    // --deny-warnings makes the unanswered button fatal.
    let out = check_in(&scratch, &["--deny-warnings"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    // A catch-all rule answers the button, but not by its key: still a warning.
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: any-click\n    when: { event: scancode_push }\n    reply: { text: x }\n",
    );
    let out = check_in(&scratch, &[]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no rule answers the scancode_push button key `rselfmenu_0_1` by its key; only rule `any-click`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`V1001_TODAY_MUSIC`: a tap on it answers nothing"),
        "{stderr}"
    );
}

#[test]
fn check_refuses_a_bad_menu_at_file_line_col() {
    let scratch = Scratch::new("menu-check-bad");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: a\n    reply: { text: x }\n",
    );
    scratch.write(
        "menu.yaml",
        "button:\n  - { name: 一二三四五六, type: click, key: K }\n",
    );
    let out = check_in(&scratch, &[]);
    let menu = scratch.path("menu.yaml").display().to_string();
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        text(&out.stderr),
        format!("error: {menu}:2:13: `一二三四五六` is 18 bytes: the name of a button on the bar is at most 16 bytes (UTF-8; a Chinese character takes 3)\n{menu}: 1 error(s)\n")
    );
}

#[test]
fn the_config_names_each_accounts_menu() {
    let scratch = Scratch::new("menu-config");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: a\n    when: { event_key: K }\n    reply: { text: x }\n",
    );
    scratch.write(
        "shop-menu.yaml",
        "button:\n  - { name: a, type: click, key: OTHER }\n",
    );
    scratch.write(
        "wxrules.yaml",
        "accounts:\n  - name: shop\n    rules: rules.yaml\n    templates: templates\n    token_env: WX_T\n    menu: shop-menu.yaml\n",
    );
    let out = wxrules(&["check", "--config"])
        .arg(scratch.path("wxrules.yaml"))
        .env("WX_T", "t")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("shop-menu.yaml:2:34: no rule answers the click button key `OTHER`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rule `a` (line 2) answers event_key `K`, which no button"),
        "{stderr}"
    );
}

#[test]
fn apply_creates_once_then_calls_nothing() {
    let fake = FakeWechat::start();
    let menu = menu_fixture();
    // No menu yet: diff says they differ, with the file's lines added.
    let out = menu_cmd(&fake, "diff", &menu);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    assert!(
        diff.contains("+- name: 今日歌曲") || diff.contains("+  - name: 今日歌曲"),
        "{diff}"
    );
    assert_eq!(fake.menu_calls(), ["menu/get"]);
    // Apply: one get, one create, one addconditional.
    let out = menu_cmd(&fake, "apply", &menu);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        fake.menu_calls(),
        ["menu/get", "menu/get", "menu/create", "menu/addconditional"]
    );
    // Equal now: diff exits 0, and apply only reads.
    let out = menu_cmd(&fake, "diff", &menu);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = menu_cmd(&fake, "apply", &menu);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).starts_with("unchanged:"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fake.menu_calls().len(), 6);
    assert_eq!(&fake.menu_calls()[4..], ["menu/get", "menu/get"]);
    // The secret is never printed.
    assert!(!text(&out.stderr).contains(SECRET) && !text(&out.stdout).contains(SECRET));
}

#[test]
fn a_changed_default_menu_is_created_again_and_conditionals_are_kept() {
    let fake = FakeWechat::start();
    let scratch = Scratch::new("menu-apply-change");
    let original = std::fs::read_to_string(menu_fixture()).unwrap();
    scratch.write("menu.yaml", &original);
    assert_eq!(
        menu_cmd(&fake, "apply", &scratch.path("menu.yaml"))
            .status
            .code(),
        Some(0)
    );
    let before = fake.menu_calls().len();
    // Only the default menu changes: one create, no delete, no addconditional.
    scratch.write(
        "menu.yaml",
        &original.replace("name: 今日歌曲", "name: 本周歌曲"),
    );
    let out = menu_cmd(&fake, "apply", &scratch.path("menu.yaml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(&fake.menu_calls()[before..], ["menu/get", "menu/create"]);
    // A conditional menu changes: delete all, create, add each conditional menu.
    let before = fake.menu_calls().len();
    scratch.write(
        "menu.yaml",
        &original
            .replace("name: 今日歌曲", "name: 本周歌曲")
            .replace("client_platform_type: 2", "client_platform_type: 1"),
    );
    let out = menu_cmd(&fake, "apply", &scratch.path("menu.yaml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        &fake.menu_calls()[before..],
        [
            "menu/get",
            "menu/delete",
            "menu/create",
            "menu/addconditional"
        ]
    );
    assert_eq!(
        menu_cmd(&fake, "diff", &scratch.path("menu.yaml"))
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn diff_and_apply_refuse_a_bad_file_without_calling() {
    let fake = FakeWechat::start();
    let scratch = Scratch::new("menu-bad-file");
    scratch.write("menu.yaml", "button:\n  - { name: a, type: click }\n");
    for action in ["diff", "apply"] {
        let out = menu_cmd(&fake, action, &scratch.path("menu.yaml"));
        assert_eq!(out.status.code(), Some(78), "{action}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("menu.yaml:2:7: a button of type `click` needs `key`"),
            "{stderr}"
        );
    }
    assert!(fake.menu_calls().is_empty());
    assert_eq!(fake.token_calls(), 0);
}

#[test]
fn pull_writes_the_live_menu_as_a_file_that_loads_back() {
    let fake = FakeWechat::start();
    fake.set_menu(
        Some(json!({"button": [
            {"type": "click", "name": "今日歌曲", "key": "V1001_TODAY_MUSIC"},
            {"name": "菜单", "sub_button": [
                {"type": "view", "name": "搜索", "url": "http://www.soso.com/"},
                {"type": "media_id", "name": "图片", "media_id": "MEDIA_ID1"}
            ]}
        ]})),
        vec![
            json!({"button": [{"type": "click", "name": "iOS", "key": "IOS"}],
                    "matchrule": {"client_platform_type": "1"}}),
        ],
    );
    let scratch = Scratch::new("menu-pull");
    let path = scratch.path("menu.yaml");
    let out = menu_cmd(&fake, "pull", &path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.starts_with("# yaml-language-server: $schema=menu.schema.json\n"));
    // What was pulled is what is live: diff finds nothing, apply calls nothing.
    let out = menu_cmd(&fake, "diff", &path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{written}\n{}",
        text(&out.stdout)
    );
    let loaded = wxrules::menu::load(&path).unwrap().menu;
    assert_eq!(
        loaded.conditional[0]
            .matchrule
            .client_platform_type
            .as_deref(),
        Some("1")
    );
    // An existing file is not replaced without --force.
    let out = menu_cmd(&fake, "pull", &path);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--force replaces it"),
        "{}",
        text(&out.stderr)
    );
    assert!(fake.menu_calls().iter().all(|c| c == "menu/get"));
}

#[test]
fn an_expired_token_is_refreshed_once() {
    let fake = FakeWechat::start();
    assert_eq!(
        menu_cmd(&fake, "apply", &menu_fixture()).status.code(),
        Some(0)
    );
    fake.expire_token();
    let out = menu_cmd(&fake, "diff", &menu_fixture());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_fake_refuses_what_wechat_refuses() {
    // The stand-in's limits are WeChat's: a menu past them, sent without wxrules' check,
    // gets WeChat's errcode, which `menu apply` would report.
    let fake = FakeWechat::start();
    let api = wxrules::wechat_api::Api::new(
        &fake.base(),
        Some(wxrules::wechat_api::Credentials::new(APPID, SECRET)),
        wxrules::telemetry::metrics::Metrics::new(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let four = json!({"button": [
        {"type": "click", "name": "a", "key": "a"}, {"type": "click", "name": "b", "key": "b"},
        {"type": "click", "name": "c", "key": "c"}, {"type": "click", "name": "d", "key": "d"}]});
    let e = runtime.block_on(api.menu_create(&four)).unwrap_err();
    assert_eq!(e.errcode(), Some(40016));
    let conditional = json!({"button": [{"type": "click", "name": "a", "key": "a"}], "matchrule": {"tag_id": "2"}});
    let e = runtime
        .block_on(api.menu_addconditional(&conditional))
        .unwrap_err();
    assert_eq!(e.errcode(), Some(65303));
    assert_eq!(runtime.block_on(api.menu_get()).unwrap(), None);
}

#[test]
fn the_shipped_menu_schema_is_the_generated_one_and_takes_the_fixture() {
    let shipped = std::fs::read_to_string(root().join("rules/menu.schema.json")).unwrap();
    assert!(
        shipped == wxrules::menu::json_schema(),
        "rules/menu.schema.json is stale: run `cargo run -- schema --menu > rules/menu.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&shipped).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let fixture: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(menu_fixture()).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&fixture)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let four = json!({"button": [
        {"type": "click", "name": "a", "key": "a"}, {"type": "click", "name": "b", "key": "b"},
        {"type": "click", "name": "c", "key": "c"}, {"type": "click", "name": "d", "key": "d"}]});
    assert!(!validator.is_valid(&four));
    let typo = json!({"button": [{"type": "clik", "name": "a", "key": "a"}]});
    assert!(!validator.is_valid(&typo));
}
