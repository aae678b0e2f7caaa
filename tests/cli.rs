//! The `wxrules` binary: `check` against golden error output, `explain`, and start-up
//! refusals. Run with `UPDATE_GOLDEN=1` to rewrite the `check.stderr` files.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// The frozen copy of the shipped rules that `explain` and `test` run on from the
/// repository's root: tests expect its replies, and ops may edit the shipped ones.
const FIXTURE: [&str; 4] = [
    "--rules",
    "tests/data/shipped/rules.yaml",
    "--templates",
    "tests/data/shipped/templates",
];

/// Runs `wxrules ARGS` in `dir`. From the repository's root, `explain` and `test` without
/// `--rules` run on `FIXTURE`.
fn wxrules(dir: &Path, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    if dir == root()
        && matches!(args.first(), Some(&"explain" | &"test"))
        && !args.contains(&"--rules")
    {
        args.splice(1..1, FIXTURE);
    }
    Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(&args)
        .current_dir(dir)
        .env_remove("WXRULES_TOKEN")
        .env_remove("WXRULES_AES_KEY")
        .env_remove("WXRULES_APPID")
        .output()
        .expect("run wxrules")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Prints expected and actual as blocks, so a mismatch reads at a glance.
fn assert_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        panic!(
            "\n{} differs\n--- expected ---\n{expected}--- actual ---\n{actual}----------------\n(UPDATE_GOLDEN=1 rewrites it)",
            path.display()
        );
    }
}

#[test]
fn check_accepts_the_shipped_rules() {
    let out = wxrules(&root(), &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Valid, whatever ops have made of it: no count or reply is expected of it here.
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("(rules/rules.yaml)"),
        "{stdout}"
    );
    // The frozen copy the other tests use.
    let out = wxrules(
        &root(),
        &["check", FIXTURE[0], FIXTURE[1], FIXTURE[2], FIXTURE[3]],
    );
    assert!(
        text(&out.stdout).starts_with("ok: 23 rules, 6 templates, digest "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_reports_every_error_with_file_line_and_column() {
    let bad = root().join("tests/data/rules/bad");
    let mut cases: Vec<_> = std::fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "cases: {cases:?}");
    for case in cases {
        let out = wxrules(
            &case,
            &["check", "--rules", "rules.yaml", "--templates", "templates"],
        );
        assert_eq!(out.status.code(), Some(78), "{}", case.display());
        assert_eq!(text(&out.stdout), "", "{}", case.display());
        assert_golden(&case.join("check.stderr"), &text(&out.stderr));
    }
}

#[test]
fn check_of_a_missing_file_names_it() {
    let out = wxrules(&root(), &["check", "--rules", "rules/nope.yaml"]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: rules/nope.yaml: cannot read rules file: "),
        "{stderr}"
    );
}

#[test]
fn serve_without_a_token_is_a_one_line_error() {
    let out = wxrules(&root(), &["--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: environment variable WXRULES_TOKEN is not set\n"
    );
}

#[test]
fn serve_refuses_invalid_rules() {
    let case = root().join("tests/data/rules/bad/duplicate_name");
    let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(["serve", "--rules", "rules.yaml", "--listen", "127.0.0.1:0"])
        .current_dir(&case)
        .env("WXRULES_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains(
        "error: rules.yaml:8:11: rule `price`: duplicate rule name (first used on line 2)"
    ));
}

#[test]
fn serve_refuses_a_bad_aes_key_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(root())
        .env("WXRULES_TOKEN", "t")
        .env("WXRULES_APPID", "wx1")
        .env("WXRULES_AES_KEY", "tooShort")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: WXRULES_AES_KEY: "), "{stderr}");
    assert!(!stderr.contains("tooShort"), "the key leaked: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn explain_a_text_names_the_rule_criteria_captures_and_reply() {
    let out = wxrules(&root(), &["explain", "--text", "订单 20261127001"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("rule: order-status (tests/data/shipped/rules.yaml:131)")
    );
    assert_eq!(lines.next(), Some("  ✓ keyword = \"订单 20261127001\""));
    assert_eq!(lines.next(), Some("captures:"));
    assert!(stdout.contains("  order = \"20261127001\"\n"), "{stdout}");
    assert!(
        stdout.contains("reply (text):\n<xml><ToUserName><![CDATA[o_explain_user]]></ToUserName>")
    );
    assert!(stdout.contains("<Content><![CDATA[订单 20261127001 正在查询，结果将通过服务通知发送给您。]]></Content></xml>"));
}

#[test]
fn explain_an_event_and_a_file() {
    let out = wxrules(&root(), &["explain", "--event", "TEMPLATESENDJOBFINISH"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    // Made up as WeChat sends it: with its MsgID and a Status (`success`).
    assert!(
        stdout.starts_with("rule: template-delivered (tests/data/shipped/rules.yaml:"),
        "{stdout}"
    );
    assert!(stdout.contains("  ✓ status = \"success\"\n"), "{stdout}");
    assert!(
        stdout.ends_with("ignored by rule `template-delivered`: answers `success`\n"),
        "{stdout}"
    );

    let out = wxrules(
        &root(),
        &[
            "explain",
            "tests/data/messages/event_templatesendjobfinish_user_block.xml",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("rule: template-blocked (tests/data/shipped/rules.yaml:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  ✓ status = \"failed:user block\"\n"),
        "{stdout}"
    );
}

#[test]
fn explain_json_is_machine_readable() {
    let out = wxrules(
        &root(),
        &[
            "explain",
            "--event",
            "CLICK",
            "--event-key",
            "CONTACT_US",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "replied");
    assert_eq!(v["rule"]["name"], "menu-contact");
    assert_eq!(
        v["rule"]["criteria"][1]["criterion"],
        "event_key = \"CONTACT_US\""
    );
    assert_eq!(v["rule"]["criteria"][1]["held"], true);
    assert!(v["body"]
        .as_str()
        .unwrap()
        .contains("<MsgType><![CDATA[news]]></MsgType>"));
}

#[test]
fn explain_of_a_message_no_rule_takes() {
    let scratch = Scratch::new("cli-nomatch");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: only-clicks\n    when: { event: CLICK }\n    ignore: true\n",
    );
    let out = wxrules(
        &scratch.dir,
        &["explain", "--rules", "rules.yaml", "--text", "hi"],
    );
    assert_eq!(
        text(&out.stdout),
        "no rule matched\nignored (no rule): answers `success`\n"
    );
}

#[test]
fn explain_decrypts_a_safe_mode_message_with_the_configured_key() {
    let file = "tests/data/messages/safe_python_sample.xml";
    let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .arg("explain")
        .args(FIXTURE)
        .arg(file)
        .current_dir(root())
        .env("WXRULES_TOKEN", "spamtest")
        .env("WXRULES_APPID", "wx2c2769f8efd9abc2")
        .env(
            "WXRULES_AES_KEY",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        )
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("rule: to-human (tests/data/shipped/rules.yaml:"),
        "{stdout}"
    );
    assert!(stdout.contains("  ✓ msg_type = \"text\"\n"), "{stdout}");
    assert!(stdout.contains("<ToUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></ToUserName>"));

    // Without the key it says what is missing.
    let out = wxrules(&root(), &["explain", file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: an encrypted message needs an AES key and AppID (WXRULES_AES_KEY and WXRULES_APPID, or the account's)\n"
    );
}

#[test]
fn test_runs_the_shipped_cases() {
    let out = wxrules(&root(), &["test", "tests/data/shipped/tests.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.ends_with(" passed, 0 failed\n"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

#[test]
fn test_names_each_failure_and_ends_with_the_counts() {
    let out = wxrules(&root(), &["test", "tests/data/cases/failing.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let head = "<xml><ToUserName><![CDATA[o_wxrules_test_user]]></ToUserName>\
        <FromUserName><![CDATA[gh_wxrules_test]]></FromUserName><CreateTime>1700000000</CreateTime>\
        <MsgType><![CDATA[text]]></MsgType>";
    let expected = format!(
        "FAIL wrong rule: expected rule `help`, got rule `price`\n\
         FAIL wrong text: expected the reply to contain \"Goodbye\", got: {head}\
         <Content><![CDATA[欢迎关注！回复「价格」查看本周价格，回复「帮助」查看全部功能。]]></Content></xml>\n\
         FAIL expected silence: expected `success`, got a reply: {head}\
         <Content><![CDATA[您可以回复：\n「价格」查看本周价格\n「订单 单号」查询订单\n「优惠」查看优惠活动\n\
         其他问题请直接留言，客服会尽快回复。]]></Content></xml>\n\
         FAIL expected no rule: expected no rule, got rule `scan-qr`\n\
         FAIL no expectation: no expectation: give `rule`, `reply_contains`, `reply_type`, `ignore` or `state`\n\
         1 passed, 5 failed\n"
    );
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn test_runs_conversation_cases_and_says_which_step_failed() {
    let rules = ["--rules", "tests/data/conversation/rules.yaml"];
    let passing = [
        &["test"][..],
        &rules,
        &["tests/data/conversation/cases.yaml"],
    ]
    .concat();
    let out = wxrules(&root(), &passing);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "3 passed, 0 failed\n");
    let failing = [
        &["test"][..],
        &rules,
        &["tests/data/conversation/failing.yaml"],
    ]
    .concat();
    let out = wxrules(&root(), &failing);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "FAIL the wrong state: step 2 of 2 (the number): expected state bind_phone, got state confirm; expected var `phone` = \"139\", got \"13800138000\"\n\
         FAIL a step that says nothing: step 1 of 1 (绑定手机): no expectation: give `rule`, `reply_contains`, `reply_type`, `ignore` or `state`\n\
         0 passed, 2 failed\n"
    );
}

#[test]
fn test_reports_a_broken_cases_file_with_its_position() {
    let scratch = Scratch::new("cli-cases");
    scratch.write("cases.yaml", "cases:\n  - name: x\n    txet: hi\n");
    let cases = scratch.path("cases.yaml");
    let out = wxrules(&root(), &["test", cases.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {}:3:5: cases[0]: unknown field `txet`",
            cases.display()
        )),
        "{stderr}"
    );
}

#[test]
fn check_warns_about_likely_mistakes_and_can_deny_them() {
    let case = root().join("tests/data/rules/warn");
    let args = ["check", "--rules", "rules.yaml", "--templates", "templates"];
    let out = wxrules(&case, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: 11 rules, 1 templates"));
    assert_golden(&case.join("check.stderr"), &text(&out.stderr));
    let stderr = text(&out.stderr);
    // The issue's own example: a keyword rule after a catch-all names both rules.
    assert!(stderr.contains(
        "rule `too-late`: unreachable: every message it matches is answered first by rule `to-human` (line 29)"
    ));

    let out = wxrules(&case, &[&args[..], &["--deny-warnings"]].concat());
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).ends_with("rules.yaml: 8 warning(s), denied by --deny-warnings\n"));
}

#[test]
fn schema_prints_the_shipped_schema() {
    let out = wxrules(&root(), &["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let shipped = std::fs::read_to_string(root().join("rules/rules.schema.json")).unwrap();
    assert_eq!(text(&out.stdout), shipped);
}

/// `--workers 0` and `--workers 100000` panicked with a backtrace; a number out of range is
/// a usage error (exit 2) naming the flag and the range, before anything starts.
#[test]
fn out_of_range_numbers_are_usage_errors() {
    for (flag, value, range) in [
        ("--workers", "0", "1..=256"),
        ("--workers", "100000", "1..=256"),
        ("--max-connections", "0", "1..=1000000"),
    ] {
        let out = wxrules(&root(), &[flag, value, "--listen", "127.0.0.1:0"]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: invalid value '{value}' for '{flag} <")),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("not in {range}")), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A rule with a call and one with a late call, on a port nothing listens to: `explain` and
/// `test` never call, they take the service's answer from the command line or the case.
const CALL_RULES: &str = r#"rules:
  - name: order
    when: { keyword: { regex: '^订单\s*(?P<order>.+)$' } }
    call: { url: "http://127.0.0.1:9/orders/{{captures.order}}", headers: { Authorization: "Bearer ${WXRULES_TEST_EXPLAIN_TOKEN}" } }
    reply: { text: "订单 {{captures.order}}：{{call.status}}" }
    on_error: { text: "查询暂时不可用" }
  - name: agent
    when: { msg_type: text }
    call: { url: "http://127.0.0.1:9/chat", timeout: 60s }
    late: { after: 2s, reply: { text: "正在思考" } }
    reply: { text: "{{call.answer}}" }
"#;

fn call_scratch(tag: &str) -> Scratch {
    let scratch = Scratch::new(tag);
    scratch.write("rules.yaml", CALL_RULES);
    scratch.write("shipped.json", r#"{"status": "已发货"}"#);
    scratch
}

fn wxrules_with_token(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(args)
        .current_dir(dir)
        .env("WXRULES_TEST_EXPLAIN_TOKEN", "s3cret-explain")
        .output()
        .expect("run wxrules")
}

#[test]
fn explain_shows_a_calls_request_and_the_reply_from_a_given_answer() {
    let scratch = call_scratch("cli-explain-call");
    let base = ["explain", "--rules", "rules.yaml", "--text", "订单 a/b 1"];
    let out = wxrules_with_token(
        &scratch.dir,
        &[&base[..], &["--call-response", "shipped.json"]].concat(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("call: POST http://127.0.0.1:9/orders/a%2Fb%201\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\"order\":\"a/b 1\"}"), "{stdout}");
    assert!(
        stdout.contains("<Content><![CDATA[订单 a/b 1：已发货]]></Content>"),
        "{stdout}"
    );
    assert!(!stdout.contains("no call made"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");

    // Without an answer: the failure path, and a word on how to see the other.
    let out = wxrules_with_token(&scratch.dir, &base);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("<Content><![CDATA[查询暂时不可用]]></Content>"),
        "{stdout}"
    );
    assert!(stdout.contains("no call made"), "{stdout}");
    let out = wxrules_with_token(
        &scratch.dir,
        &[&base[..], &["--call-error", "timeout"]].concat(),
    );
    assert!(text(&out.stdout).contains("查询暂时不可用"));

    // A late call: the holding reply too. JSON says the same.
    let out = wxrules_with_token(
        &scratch.dir,
        &[
            "explain",
            "--rules",
            "rules.yaml",
            "--text",
            "你好",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["call"]["request"]["method"], "POST");
    assert_eq!(v["call"]["request"]["late_after_ms"], 2000);
    assert_eq!(v["call"]["stubbed"], false);
    assert!(v["call"]["holding_body"]
        .as_str()
        .unwrap()
        .contains("正在思考"));

    // A missing `${VAR}` is a load error naming it.
    let out = wxrules(&scratch.dir, &base);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("the environment variable `WXRULES_TEST_EXPLAIN_TOKEN` is not set"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn test_cases_give_a_calls_answer_or_failure_and_must_give_one() {
    let scratch = call_scratch("cli-test-call");
    scratch.write(
        "cases.yaml",
        r#"cases:
  - name: shipped
    text: 订单 42
    call_response: { status: 已发货 }
    reply_contains: 订单 42：已发货
  - name: the service decides
    text: 订单 43
    call_response: { reply: { text: "由服务决定 ]]>" } }
    reply_contains: 由服务决定
  - name: the service is down
    text: 订单 44
    call_error: connect
    reply_contains: 查询暂时不可用
  - name: the service ignores
    text: 订单 45
    call_response: { ignore: true }
    ignore: true
  - name: no answer given
    text: 订单 46
    rule: order
"#,
    );
    let out = wxrules_with_token(
        &scratch.dir,
        &["test", "--rules", "rules.yaml", "cases.yaml"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "FAIL no answer given: rule `order` calls a service: give `call_response:` (its JSON answer) or `call_error:` (a reason), as no call is made in tests\n\
         4 passed, 1 failed\n"
    );
}

/// The shipped file's commented examples (`# - name: …`), uncommented, are valid rules:
/// the examples cannot drift from what `check` accepts. (They stand for shipped rules of
/// the same name, so `check` warns that those hide them.)
#[test]
fn the_shipped_commented_examples_are_valid_rules() {
    let shipped = std::fs::read_to_string(root().join("rules/rules.yaml")).unwrap();
    let mut examples = 0;
    let mut inside = false;
    let mut out = String::new();
    for line in shipped.lines() {
        if let Some(name) = line.strip_prefix("  # - name: ") {
            inside = true;
            examples += 1;
            // Renamed: an example may stand for a shipped rule of the same name.
            out.push_str(&format!("  - name: example-{name}\n"));
        } else if let (true, Some(rest)) = (inside, line.strip_prefix("  #   ")) {
            if !rest.starts_with('#') {
                out.push_str(&format!("    {rest}\n"));
            }
        } else {
            inside = false;
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(examples >= 2, "{examples}");
    let scratch = Scratch::new("cli-examples");
    scratch.write("rules.yaml", &out);
    let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
        .args(["check", "--rules"])
        .arg(scratch.path("rules.yaml"))
        .args(["--templates", "templates"])
        .current_dir(root())
        .env("ORDERS_TOKEN", "example")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shipped_count = text(&wxrules(&root(), &["check"]).stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap();
    assert!(
        text(&out.stdout).starts_with(&format!("ok: {} rules", shipped_count + examples)),
        "{}",
        text(&out.stdout)
    );
}

/// A rule on an event the catalog does not know loads (its fields cannot be checked), and
/// `check` says so without failing, even with `--deny-warnings`.
#[test]
fn check_notes_rules_it_cannot_hold_to_wechats_fields() {
    let scratch = Scratch::new("cli-unchecked");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: card\n    when: { event: user_get_card }\n    reply: { text: \"卡券 {{CardId}}\" }\n  - name: typed\n    when: { event: CLICK }\n    reply: { text: \"{{EventKey}}\" }\n",
    );
    let out = wxrules(
        &scratch.dir,
        &[
            "check",
            "--deny-warnings",
            "--rules",
            "rules.yaml",
            "--templates",
            "templates",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("note: rules.yaml:2: rule `card`: its templates are not checked against WeChat's fields"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("`typed`"));
}

/// `active` windows in the tools: `explain --at`, a case's `at:`, `check`'s warning for a
/// window that has ended, and each mistake located.
#[test]
fn active_windows_are_tried_at_a_given_time_and_checked() {
    let scratch = Scratch::new("cli-active");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: off-hours\n    when: { msg_type: text }\n    active: { hours: [\"18:00-09:00\"] }\n    reply: { text: 下班了 }\n  - name: old-campaign\n    when: { keyword: 双十一 }\n    active: { until: 2020-11-11 }\n    reply: { text: 活动 }\n  - name: open\n    reply: { text: 在线 }\n",
    );
    scratch.write(
        "cases.yaml",
        "cases:\n  - name: evening\n    text: 在吗\n    at: 2026-11-30T20:00:00+08:00\n    rule: off-hours\n  - name: noon\n    text: 在吗\n    at: 2026-11-30T12:00:00+08:00\n    rule: open\n",
    );
    fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--rules", "rules.yaml", "--templates", "templates"];
        all.extend_from_slice(extra);
        all
    }
    let out = wxrules(
        &scratch.dir,
        &[&["test"][..], &args(&["cases.yaml"])].concat(),
    );
    assert_eq!(
        text(&out.stdout),
        "2 passed, 0 failed\n",
        "{}",
        text(&out.stderr)
    );
    let out = wxrules(
        &scratch.dir,
        &[
            &["explain"][..],
            &args(&["--text", "在吗", "--at", "2026-11-30T20:00:00+08:00"]),
        ]
        .concat(),
    );
    assert!(
        text(&out.stdout).starts_with("rule: off-hours"),
        "{}",
        text(&out.stdout)
    );
    let out = wxrules(
        &scratch.dir,
        &[
            &["explain"][..],
            &args(&["--text", "在吗", "--at", "2026-11-30T12:00:00+08:00"]),
        ]
        .concat(),
    );
    assert!(
        text(&out.stdout).starts_with("rule: open"),
        "{}",
        text(&out.stdout)
    );
    let out = wxrules(&scratch.dir, &[&["check"][..], &args(&[])].concat());
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("warning: rules.yaml:6:5: rule `old-campaign`: its `active` window ended at 2020-11-11T16:00:00Z: it will never match again"),
        "{}",
        text(&out.stderr)
    );
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: r\n    active: { hours: [\"9-18\"], timezone: Asia/Shanghai }\n    reply: { text: x }\n",
    );
    let out = wxrules(&scratch.dir, &[&["check"][..], &args(&[])].concat());
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        text(&out.stderr),
        "error: rules.yaml:3:22: rule `r`: `active.hours`: `9-18` is a range of times of day, `HH:MM-HH:MM` (`18:00-09:00` runs overnight)\nrules.yaml: 1 error\n"
    );
}

/// `wxrules import` of a console export in WeChat's documented format (every reply type,
/// both match modes, both reply modes, `]]>`, `<` and `{{` in texts, a repeated rule name):
/// rules that `check` accepts, warning of each temporary media id with its day (so that
/// `--deny-warnings` refuses them until they are replaced), and cases that pass; a switch that is off
/// comments its rules out; a broken export writes nothing and names the JSON path.
#[test]
fn import_turns_the_console_export_into_rules_and_passing_cases() {
    let scratch = Scratch::new("cli-import");
    let export = root().join("tests/data/console/autoreply.json");
    let export = export.to_str().unwrap();
    let out = wxrules(
        &scratch.dir,
        &[
            "import",
            export,
            "--rules-out",
            "rules.yaml",
            "--tests-out",
            "cases.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "imported 7 rules (0 switched off in the console, commented out)\n"
    );
    let rules = std::fs::read_to_string(scratch.path("rules.yaml")).unwrap();
    assert!(rules.contains("    cooldown: 60m\n"), "{rules}");
    assert!(rules.contains("- name: \"autoreply-text-2\""), "{rules}");
    assert!(rules.contains("reply: { one_of: [ { voice:"), "{rules}");
    assert!(
        rules.contains("    send:\n      - { text: \"and a text <b> ]]> after it\" }"),
        "{rules}"
    );
    assert!(rules.contains("(3 days after the export;"), "{rules}");
    // Its images and voices are temporary media: each marked with the day WeChat deletes
    // it, which `check` names. Before, they passed every check and failed 3 days later.
    assert!(
        rules.contains("{ voice: { media_id: \"NESsxgHEvAcg3egJTtYj4uG1PTL6iPhratdWKDLAXYErhN6oEEfMdVyblWtBY5vp\", expires: 20"),
        "{rules}"
    );
    let args = ["check", "--rules", "rules.yaml", "--templates", "templates"];
    let check = wxrules(&scratch.dir, &args);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    let warnings = text(&check.stderr);
    for id in [
        "image media id `KgTiJlt4lI2YsHa1u2Pud3uyFzfXYUBNWgJlZ5uqBe0U`",
        "voice media id `NESsxgHEvAcg3egJTtYj4uG1PTL6iPhratdWKDLAXYErhN6oEEfMdVyblWtBY5vp`",
    ] {
        assert!(
            warnings.contains(&format!("{id} is temporary: WeChat deletes it on 20")),
            "{warnings}"
        );
    }
    assert!(warnings.contains("(in 3 days)"), "{warnings}");
    let denied = wxrules(&scratch.dir, &[&args[..], &["--deny-warnings"]].concat());
    assert_eq!(denied.status.code(), Some(78), "{}", text(&denied.stderr));
    let test = wxrules(
        &scratch.dir,
        &[
            "test",
            "--rules",
            "rules.yaml",
            "--templates",
            "templates",
            "cases.yaml",
        ],
    );
    assert_eq!(
        text(&test.stdout),
        "7 passed, 0 failed\n",
        "{}",
        text(&test.stdout)
    );
    // Texts come out as the console had them, CDATA-safe, never rendered as templates.
    let explain = wxrules(
        &scratch.dir,
        &[
            "explain",
            "--rules",
            "rules.yaml",
            "--templates",
            "templates",
            "--event",
            "subscribe",
        ],
    );
    assert!(
        text(&explain.stdout).contains(
            "<Content><![CDATA[Thanks for your attention! 回复 <价格> 看价目表 ]]]]><![CDATA[> {{FromUserName}}]]></Content>"
        ),
        "{}",
        text(&explain.stdout)
    );

    // A switch that is off: its rules are written commented out, and have no cases.
    let off = std::fs::read_to_string(root().join("tests/data/console/autoreply.json"))
        .unwrap()
        .replace("\"is_autoreply_open\": 1", "\"is_autoreply_open\": 0");
    scratch.write("off.json", &off);
    let out = wxrules(
        &scratch.dir,
        &[
            "import",
            "off.json",
            "--rules-out",
            "off.yaml",
            "--tests-out",
            "off-cases.yaml",
        ],
    );
    assert_eq!(
        text(&out.stderr),
        "imported 7 rules (6 switched off in the console, commented out)\n"
    );
    let check = wxrules(
        &scratch.dir,
        &[
            "check",
            "--deny-warnings",
            "--rules",
            "off.yaml",
            "--templates",
            "templates",
        ],
    );
    assert!(
        text(&check.stdout).starts_with("ok: 1 rules"),
        "{}",
        text(&check.stderr)
    );

    // Broken exports: the JSON path, and nothing written.
    for (json, says) in [
        ("{ not json", "error: $: not JSON: key must be a string at line 1 column 3\nnothing written\n"),
        ("[]", "error: $: the export is a JSON object\nnothing written\n"),
        (r#"{"keyword_autoreply_info": {"list": [{"rule_name": "r", "reply_mode": "reply_all", "keyword_list_info": [{"match_mode": "equal", "content": "a"}], "reply_list_info": [{"type": "gif", "content": "x"}]}]}}"#,
         "error: $.keyword_autoreply_info.list[0].reply_list_info[0].type: `gif` is not a reply type (text, img, voice, video, news)\nnothing written\n"),
        (r#"{"keyword_autoreply_info": {"list": [{"rule_name": "r", "keyword_list_info": [{"content": "a"}], "reply_list_info": []}]}}"#,
         "error: $.keyword_autoreply_info.list[0].keyword_list_info[0].match_mode: missing\nnothing written\n"),
        (r#"{"add_friend_autoreply_info": {"type": "text"}}"#,
         "error: $.add_friend_autoreply_info.content: missing, or not a string\nnothing written\n"),
        (r#"{"keyword_autoreply_info": {"list": [{"rule_name": "r", "reply_mode": "all", "keyword_list_info": [{"match_mode": "equal", "content": "a"}], "reply_list_info": [{"type": "text", "content": "x"}]}]}}"#,
         "error: $.keyword_autoreply_info.list[0].reply_mode: `all` is not a reply mode (reply_all, random_one)\nnothing written\n"),
        (r#"{"keyword_autoreply_info": {"list": [{"rule_name": "r", "keyword_list_info": [{"match_mode": "fuzzy", "content": "a"}], "reply_list_info": []}]}}"#,
         "error: $.keyword_autoreply_info.list[0].keyword_list_info[0].match_mode: `fuzzy` is not a match mode (equal, contain)\nnothing written\n"),
        (r#"{"is_autoreply_open": "yes"}"#,
         "error: $.is_autoreply_open: is 0 or 1\nnothing written\n"),
        (r#"{"message_default_autoreply_info": {"type": "news"}}"#,
         "error: $.message_default_autoreply_info.news_info.list: missing, or not a list\nnothing written\n"),
        (r#"{"errcode": 40001, "errmsg": "invalid credential"}"#,
         "error: $.errcode: WeChat answered errcode 40001, not the auto-replies\nnothing written\n"),
    ] {
        scratch.write("bad.json", json);
        let out = wxrules(
            &scratch.dir,
            &["import", "bad.json", "--rules-out", "bad.yaml", "--tests-out", "bad-cases.yaml"],
        );
        assert_eq!(out.status.code(), Some(78), "{json}");
        assert_eq!(text(&out.stderr), says, "{json}");
        assert!(!scratch.path("bad.yaml").exists() && !scratch.path("bad-cases.yaml").exists());
    }
    // Console habits wxrules folds together: case and punctuation variants of one keyword,
    // a keyword already another rule's, a rule an earlier `contain` keyword always answers;
    // and the follow reply switched off.
    scratch.write(
        "habits.json",
        r#"{"is_add_friend_reply_open": 0, "add_friend_autoreply_info": {"type": "text", "content": "welcome"},
            "keyword_autoreply_info": {"list": [
              {"rule_name": "help", "reply_mode": "reply_all", "keyword_list_info": [
                 {"match_mode": "equal", "content": "help"}, {"match_mode": "equal", "content": "HELP"},
                 {"match_mode": "equal", "content": "帮助？"}, {"match_mode": "equal", "content": "帮助"}],
               "reply_list_info": [{"type": "text", "content": "how can we help"}]},
              {"rule_name": "price", "reply_mode": "reply_all", "keyword_list_info": [
                 {"match_mode": "contain", "content": "价格"}, {"match_mode": "equal", "content": "Help"}],
               "reply_list_info": [{"type": "text", "content": "prices"}]},
              {"rule_name": "price list", "reply_mode": "reply_all", "keyword_list_info": [
                 {"match_mode": "equal", "content": "价格表"}],
               "reply_list_info": [{"type": "text", "content": "the list"}]}
            ]}}"#,
    );
    let out = wxrules(
        &scratch.dir,
        &[
            "import",
            "habits.json",
            "--rules-out",
            "habits.yaml",
            "--tests-out",
            "habits-cases.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let habits = std::fs::read_to_string(scratch.path("habits.yaml")).unwrap();
    assert!(habits.contains("keyword `HELP` left out"), "{habits}");
    assert!(habits.contains("keyword `Help` left out"), "{habits}");
    assert!(
        habits.contains("unreachable: every message it matches is answered first by rule `price`"),
        "{habits}"
    );
    assert!(habits.contains("  # - name: \"welcome\""), "{habits}");
    let check = wxrules(
        &scratch.dir,
        &[
            "check",
            "--deny-warnings",
            "--rules",
            "habits.yaml",
            "--templates",
            "templates",
        ],
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    let test = wxrules(
        &scratch.dir,
        &[
            "test",
            "--rules",
            "habits.yaml",
            "--templates",
            "templates",
            "habits-cases.yaml",
        ],
    );
    assert_eq!(
        text(&test.stdout),
        "2 passed, 0 failed\n",
        "{}",
        text(&test.stdout)
    );

    // An existing file is not overwritten.
    let out = wxrules(
        &scratch.dir,
        &["import", export, "--rules-out", "rules.yaml"],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).starts_with("error: rules.yaml exists"),
        "{}",
        text(&out.stderr)
    );
}

/// A listener on 127.0.0.1 that answers every request with `status` and no body.
fn answering(status: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 8192];
            let _ = stream.read(&mut head);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    addr
}

/// `send` answered 403 or 404 says what is likely wrong: the token (403), the account's
/// path (404). Before the fix it printed the bare status.
#[test]
fn send_says_what_a_403_or_a_404_likely_means() {
    let send = |addr: std::net::SocketAddr, path: &str| {
        let url = format!("http://{addr}{path}");
        let out = Command::new(env!("CARGO_BIN_EXE_wxrules"))
            .args(["send", "--url", &url, "--text", "hi"])
            .env("WXRULES_TOKEN", "some-token")
            .env_remove("WXRULES_AES_KEY")
            .env_remove("WXRULES_APPID")
            .env_remove("WXRULES_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        (text(&out.stdout), text(&out.stderr))
    };
    let (out, err) = send(answering("403 Forbidden"), "/wechat");
    assert!(out.starts_with("403 Forbidden"), "{out}");
    assert!(err.starts_with("hint: "), "{err}");
    assert!(
        err.contains("WXRULES_TOKEN") && err.contains("--max-age"),
        "{err}"
    );
    let (out, err) = send(answering("404 Not Found"), "/wechat");
    assert!(out.starts_with("404 Not Found"), "{out}");
    assert!(err.contains("no account is served at `/wechat`"), "{err}");
    assert!(
        err.contains("/wechat/NAME") && err.contains("--url"),
        "{err}"
    );
    // Other statuses need no hint.
    let (_, err) = send(answering("413 Payload Too Large"), "/wechat");
    assert_eq!(err, "");
}
