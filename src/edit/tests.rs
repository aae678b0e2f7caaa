//! The engine's tests: every change kind, in block and flow files, with comments, CRLF, a
//! rule at the file's end, Chinese text, quotes and `{{…}}`; each proves that the lines the
//! change does not own are byte for byte what they were (`changed_lines`), and that the
//! edited file loads and means what was asked (`rules::load_str`, `answer`).

use std::ops::Range;

use serde_json::json;

use super::*;
use crate::answer::{answer, Outcome};
use crate::rules::RuleSet;
use crate::wire::{Message, Reply};

/// The frozen copy of the shipped rules and its templates (the property tests use them too).
pub(super) const SHIPPED: &str = include_str!("../../tests/data/shipped/rules.yaml");
pub(super) const TEMPLATES: &[(&str, &str)] = &[
    (
        "welcome_qr",
        include_str!("../../tests/data/shipped/templates/welcome_qr.hbs"),
    ),
    (
        "welcome",
        include_str!("../../tests/data/shipped/templates/welcome.hbs"),
    ),
    (
        "price",
        include_str!("../../tests/data/shipped/templates/price.hbs"),
    ),
    (
        "help",
        include_str!("../../tests/data/shipped/templates/help.hbs"),
    ),
    (
        "scancode",
        include_str!("../../tests/data/shipped/templates/scancode.hbs"),
    ),
    (
        "photos",
        include_str!("../../tests/data/shipped/templates/photos.hbs"),
    ),
];

const BLOCK: &str = "\
# Rules of a test account.
rules:
  # The price list.
  - name: price
    when: { keyword: [价格, price] }   # exact
    # The reply, by hand.
    reply: { text: \"本周价格\" }
    # after the reply

  - name: help
    when:
      keyword: [帮助]
    reply:
      text: 'it''s help'

  # Everything else.
  - name: to-human
    when: { msg_type: [text, voice] }
    reply: { transfer_customer_service: {} }
";

const FLOW: &str = "\
rules:
- { name: price, when: { keyword: [价格] }, reply: { text: 价格表 } }   # prices
- { name: help, when: { keyword: [帮助] }, reply: { text: \"帮助 {{FromUserName}}\" } }
- { name: other, ignore: true }
";

fn ok(text: &str, change: &Change) -> String {
    apply(text, change).unwrap_or_else(|e| panic!("{change:?}: {e}"))
}

/// The lines of `before` that differ from `after`: the range between their common first
/// lines and their common last lines (lines keep their breaks, so a changed break shows).
fn changed_lines(before: &str, after: &str) -> Range<usize> {
    let a: Vec<&str> = before.split_inclusive('\n').collect();
    let b: Vec<&str> = after.split_inclusive('\n').collect();
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    head..a.len() - tail
}

/// The 0-based lines of the rule `name` in `text`, found by hand: from its `- name:` (or
/// `- { name:`) line to its last line indented past its `-`.
fn rule_lines(text: &str, name: &str) -> Range<usize> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let first = lines
        .iter()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with('-')
                && t.trim_start_matches(['-', ' ', '{'])
                    .starts_with(&format!("name: {name}"))
                && t.trim_start_matches(['-', ' ', '{'])[6 + name.len()..]
                    .starts_with([' ', '\n', '\r', ',', '}'])
        })
        .unwrap_or_else(|| panic!("no rule {name}"));
    let dash = indent(lines[first]);
    let mut last = first;
    for (i, l) in lines.iter().enumerate().skip(first + 1) {
        if l.trim().is_empty() {
            continue;
        }
        if indent(l) <= dash {
            break;
        }
        last = i;
    }
    first..last + 1
}

/// Asserts that only lines inside `allowed` (0-based lines of `before`) differ.
#[track_caller]
fn only_changed(before: &str, after: &str, allowed: Range<usize>) {
    let changed = changed_lines(before, after);
    assert!(
        changed.is_empty() || (allowed.start <= changed.start && changed.end <= allowed.end),
        "lines {changed:?} changed, only {allowed:?} may:\n{}",
        diff(before, after, "rules.yaml")
    );
}

/// The lines of `text`, sorted: a move keeps them all, in another order.
fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    lines.sort_unstable();
    lines
}

/// The 0-based line of `needle`'s first occurrence.
fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).unwrap_or_else(|| panic!("no {needle:?}"))]
        .matches('\n')
        .count()
}

fn load(text: &str) -> RuleSet {
    crate::rules::load_str(text, TEMPLATES)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .rules
}

fn text_push(content: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o_user]]></FromUserName>\
         <CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{content}]]></Content><MsgId>1</MsgId></xml>"
    )
}

/// The rule that answers the text `content`, and its reply's text (if a text reply).
fn answers(rules: &RuleSet, content: &str) -> (Option<String>, Option<String>) {
    let message = Message::parse(text_push(content).as_bytes()).unwrap();
    let outcome = answer(rules, &message, 0);
    let text = match &outcome {
        Outcome::Replied {
            reply: Reply::Text { content },
            ..
        } => Some(content.clone()),
        _ => None,
    };
    (outcome.rule().map(str::to_owned), text)
}

fn set_reply(rule: &str, reply: Value) -> Change {
    Change::SetReply {
        rule: rule.into(),
        reply,
    }
}

fn rule_json(text: &str, name: &str) -> Value {
    let mut doc = readback::read(text).unwrap();
    Value::Object(readback::rule_mut(&mut doc, name).unwrap().clone())
}

// ---- set_reply ---------------------------------------------------------------------------

#[test]
fn set_reply_in_a_block_rule_changes_only_its_reply_line() {
    let after = ok(
        BLOCK,
        &set_reply("price", json!({"text": "新价格：{{FromUserName}}"})),
    );
    let reply = line_of(BLOCK, "reply: { text: \"本周价格\" }");
    only_changed(BLOCK, &after, reply..reply + 1);
    assert!(after
        .contains("    reply: { text: \"新价格：{{FromUserName}}\" }\n    # after the reply\n"));
    let rules = load(&after);
    assert_eq!(
        answers(&rules, "价格"),
        (Some("price".into()), Some("新价格：o_user".into()))
    );
}

#[test]
fn set_reply_replaces_a_block_reply_and_keeps_its_style() {
    let after = ok(
        BLOCK,
        &set_reply(
            "help",
            json!({"text": "第一行\n第二行 \"引号\" # 不是注释"}),
        ),
    );
    let help = rule_lines(BLOCK, "help");
    let reply = line_of(BLOCK, "    reply:\n      text: 'it''s");
    only_changed(BLOCK, &after, reply..help.end);
    assert!(
        after.contains("    reply:\n      text: |-\n        第一行\n        第二行 \"引号\" # 不是注释\n\n  # Everything else."),
        "{after}"
    );
    assert_eq!(
        answers(&load(&after), "帮助").1.as_deref(),
        Some("第一行\n第二行 \"引号\" # 不是注释")
    );
}

#[test]
fn set_reply_writes_texts_that_read_back_exactly() {
    for text in [
        "他说：\"你好\" {{FromUserName}} # 1: yes",
        "yes",
        "1",
        "null",
        "  leading and trailing  ",
        "a: b",
        "line one\nline two\n",
        "tab\tand \\ backslash",
        "emoji 👍 and 「括号」",
    ] {
        let after = ok(BLOCK, &set_reply("price", json!({ "text": text })));
        assert_eq!(rule_json(&after, "price")["reply"], json!({ "text": text }));
        let want = text.replace("{{FromUserName}}", "o_user");
        assert_eq!(
            answers(&load(&after), "价格").1.as_deref(),
            Some(want.as_str()),
            "{text:?}"
        );
    }
}

#[test]
fn set_reply_takes_every_reply_form() {
    for reply in [
        json!({"one_of": [{"text": "本周全场 8 折"}, {"text": "新用户立减 10 元，详情见菜单「优惠活动」。"}, {"text": "第三条"}]}),
        json!({"news": [{"title": "联系我们", "description": "客服热线 400-000-0000", "url": "https://example.com/c", "pic_url": "https://example.com/c.jpg"}]}),
        json!({"image": {"media_id": "MEDIA_1"}}),
        json!({"transfer_customer_service": {"kf_account": "kf@account"}}),
        json!({"text": {"template": "price"}}),
        json!({"music": {"title": "歌", "description": "d", "music_url": "https://e.com/a.mp3", "hq_music_url": "https://e.com/b.mp3", "thumb_media_id": "T"}}),
    ] {
        let after = ok(BLOCK, &set_reply("help", reply.clone()));
        let help = rule_lines(BLOCK, "help");
        only_changed(
            BLOCK,
            &after,
            line_of(BLOCK, "    reply:\n      text: 'it''s")..help.end,
        );
        assert_eq!(rule_json(&after, "help")["reply"], reply);
        load(&after);
    }
}

#[test]
fn set_reply_in_a_flow_rule_rewrites_its_line_only() {
    let after = ok(
        FLOW,
        &set_reply("help", json!({"text": "新的 {{FromUserName}}\n第二行"})),
    );
    let line = line_of(FLOW, "- { name: help");
    only_changed(FLOW, &after, line..line + 1);
    assert!(after.contains(
        "- { name: help, when: { keyword: [帮助] }, reply: { text: \"新的 {{FromUserName}}\\n第二行\" } }\n"
    ));
    assert_eq!(
        answers(&load(&after), "帮助").1.as_deref(),
        Some("新的 o_user\n第二行")
    );
    // `ignore: true` becomes the reply, where it was.
    let after = ok(FLOW, &set_reply("other", json!({"text": "其他"})));
    assert!(
        after.ends_with("- { name: other, reply: { text: 其他 } }\n"),
        "{after}"
    );
}

#[test]
fn set_reply_on_an_ignore_rule_in_block_style() {
    let text = "rules:\n  - name: quiet   # says nothing\n    when: { event: VIEW }\n    ignore: true  # on purpose\n  - name: next\n    reply: { text: x }\n";
    let after = ok(text, &set_reply("quiet", json!({"text": "说点什么"})));
    assert_eq!(
        after,
        "rules:\n  - name: quiet   # says nothing\n    when: { event: VIEW }\n    reply: { text: 说点什么 }  # on purpose\n  - name: next\n    reply: { text: x }\n"
    );
}

// ---- line breaks and the file's end ------------------------------------------------------

#[test]
fn a_crlf_file_stays_crlf() {
    let crlf = BLOCK.replace('\n', "\r\n");
    let changes = [
        set_reply("help", json!({"text": "一\n二"})),
        set_reply(
            "price",
            json!({"news": [{"title": "t", "url": "https://e.com", "description": "d".repeat(90)}]}),
        ),
        Change::SetEnabled {
            rule: "help".into(),
            enabled: false,
        },
        Change::SetCooldown {
            rule: "price".into(),
            cooldown: Some("60m".into()),
        },
        Change::AddRule {
            rule: json!({"name": "new", "when": {"keyword": ["新"]}, "reply": {"text": "新"}}),
            before: None,
        },
        Change::DeleteRule {
            rule: "help".into(),
        },
        Change::MoveRule {
            rule: "price".into(),
            before: None,
        },
    ];
    for change in &changes {
        let after = ok(&crlf, change);
        assert!(
            !after.replace("\r\n", "").contains('\n'),
            "{change:?}: a bare \\n in\n{after:?}"
        );
        let lf = ok(BLOCK, change);
        assert_eq!(after, lf.replace('\n', "\r\n"), "{change:?}");
    }
}

#[test]
fn a_rule_at_the_end_with_and_without_the_final_line_break() {
    for end in ["\n", ""] {
        let a = "  - name: a\n    when: { keyword: a }\n    reply: { text: a }";
        let last = "  - name: last\n    when: { keyword: z }\n    reply: { text: last }";
        let text = format!("rules:\n{a}\n\n{last}{end}");
        let own = rule_lines(&text, "last");
        let check = |change: Change, expected_tail: &str| {
            let after = ok(&text, &change);
            assert_eq!(
                after.ends_with('\n'),
                !end.is_empty(),
                "{change:?}: {after:?}"
            );
            assert!(
                after.ends_with(&format!("{expected_tail}{end}")),
                "{change:?}: {after:?}"
            );
            after
        };
        let after = check(
            set_reply("last", json!({"text": "最后"})),
            "    reply: { text: 最后 }",
        );
        only_changed(&text, &after, own.clone());
        let after = check(
            Change::SetEnabled { rule: "last".into(), enabled: false },
            "  - name: last\n    enabled: false\n    when: { keyword: z }\n    reply: { text: last }",
        );
        only_changed(&text, &after, own.clone());
        let after = check(
            Change::SetCooldown {
                rule: "last".into(),
                cooldown: Some("1h".into()),
            },
            "    when: { keyword: z }\n    cooldown: 1h\n    reply: { text: last }",
        );
        only_changed(&text, &after, own.clone());
        let after = check(
            Change::AddRule { rule: json!({"name": "new", "when": {"keyword": "n"}, "reply": {"text": "新"}}), before: None },
            "    reply: { text: last }\n\n  - name: new\n    when: { keyword: \"n\" }\n    reply: { text: 新 }",
        );
        // An insertion only; without a final break, the last line gains one.
        let changed = changed_lines(&text, &after);
        assert_eq!(changed.len(), usize::from(end.is_empty()), "{changed:?}");
        let after = check(
            Change::DeleteRule {
                rule: "last".into(),
            },
            a,
        );
        assert_eq!(after, format!("rules:\n{a}{end}"));
        let after = check(
            Change::MoveRule {
                rule: "a".into(),
                before: None,
            },
            a,
        );
        assert_eq!(after, format!("rules:\n{last}\n\n{a}{end}"));
        assert_eq!(
            ok(
                &after,
                &Change::MoveRule {
                    rule: "a".into(),
                    before: Some("last".into())
                }
            ),
            text
        );
    }
}

// ---- set_keywords ------------------------------------------------------------------------

fn keywords(rule: &str, k: Value) -> Change {
    Change::SetKeywords {
        rule: rule.into(),
        keywords: k,
    }
}

#[test]
fn set_keywords_in_flow_and_block_criteria() {
    // A flow `when:` on the rule's line.
    let after = ok(
        BLOCK,
        &keywords(
            "price",
            json!({"keyword": ["价格", "价目表", "yes", "{{x}}"]}),
        ),
    );
    let when = line_of(BLOCK, "    when: { keyword: [价格");
    only_changed(BLOCK, &after, when..when + 1);
    assert!(after.contains("    when: { keyword: [价格, 价目表, \"yes\", \"{{x}}\"] }   # exact\n"));
    let rules = load(&after);
    assert_eq!(answers(&rules, "价目表").0.as_deref(), Some("price"));
    assert_eq!(answers(&rules, "YES").0.as_deref(), Some("price"));
    // A block `when:`: only its `keyword:` line.
    let after = ok(
        BLOCK,
        &keywords("help", json!({"contains": ["帮助", "help me"]})),
    );
    let kw = line_of(BLOCK, "      keyword: [帮助]");
    only_changed(BLOCK, &after, kw..kw + 1);
    assert!(after.contains("      keyword: { contains: [帮助, help me] }\n"));
    assert_eq!(
        answers(&load(&after), "请帮助我").0.as_deref(),
        Some("help")
    );
    // Both kinds in one list.
    let after = ok(
        BLOCK,
        &keywords("help", json!({"keyword": ["帮助"], "contains": ["救命"]})),
    );
    assert_eq!(
        rule_json(&after, "help")["when"]["keyword"],
        json!(["帮助", {"contains": ["救命"]}])
    );
    assert_eq!(
        answers(&load(&after), "快救命啊").0.as_deref(),
        Some("help")
    );
}

#[test]
fn set_keywords_adds_when_and_keyword_where_missing() {
    // `when:` with other criteria: `keyword:` joins them.
    let after = ok(BLOCK, &keywords("to-human", json!({"keyword": ["人工"]})));
    let when = line_of(BLOCK, "    when: { msg_type: [text, voice] }");
    only_changed(BLOCK, &after, when..when + 1);
    assert!(after.contains("    when: { msg_type: [text, voice], keyword: [人工] }\n"));
    // No `when:` at all: one after the name.
    let text = "rules:\n  - name: all  # every message\n    reply: { text: hi }\n";
    let after = ok(text, &keywords("all", json!({"keyword": ["hi"]})));
    assert_eq!(after, "rules:\n  - name: all  # every message\n    when: { keyword: [hi] }\n    reply: { text: hi }\n");
    // An empty `when:`.
    let text = "rules:\n  - name: all\n    when:\n    reply: { text: hi }\n";
    let after = ok(text, &keywords("all", json!({"keyword": ["hi"]})));
    assert_eq!(
        after,
        "rules:\n  - name: all\n    when: { keyword: [hi] }\n    reply: { text: hi }\n"
    );
    // In a flow rule.
    let after = ok(FLOW, &keywords("other", json!({"contains": ["别的"]})));
    assert!(
        after.ends_with(
            "- { name: other, when: { keyword: { contains: [别的] } }, ignore: true }\n"
        ),
        "{after}"
    );
}

// ---- enabled, active, cooldown -------------------------------------------------------------

#[test]
fn set_enabled_writes_and_removes_one_line() {
    let after = ok(
        BLOCK,
        &Change::SetEnabled {
            rule: "help".into(),
            enabled: false,
        },
    );
    let name = line_of(BLOCK, "  - name: help");
    assert_eq!(
        changed_lines(BLOCK, &after),
        name + 1..name + 1,
        "one line inserted"
    );
    assert!(after.contains("  - name: help\n    enabled: false\n    when:\n"));
    assert_eq!(rule_json(&after, "help")["enabled"], json!(false));
    assert_eq!(
        ok(
            &after,
            &Change::SetEnabled {
                rule: "help".into(),
                enabled: true
            }
        ),
        BLOCK
    );
    assert_eq!(
        ok(
            BLOCK,
            &Change::SetEnabled {
                rule: "help".into(),
                enabled: true
            }
        ),
        BLOCK
    );
    // Flow rules, and a rule whose `enabled:` comes first.
    let after = ok(
        FLOW,
        &Change::SetEnabled {
            rule: "price".into(),
            enabled: false,
        },
    );
    assert!(
        after.starts_with("rules:\n- { name: price, enabled: false, when:"),
        "{after}"
    );
    assert_eq!(
        ok(
            &after,
            &Change::SetEnabled {
                rule: "price".into(),
                enabled: true
            }
        ),
        FLOW
    );
    let text = "rules:\n  - enabled: false\n    name: a\n    reply: { text: a }\n";
    assert_eq!(
        ok(
            text,
            &Change::SetEnabled {
                rule: "a".into(),
                enabled: true
            }
        ),
        "rules:\n  - name: a\n    reply: { text: a }\n"
    );
}

#[test]
fn set_active_and_cooldown() {
    let window =
        json!({"hours": ["18:00-09:00"], "weekdays": ["mon", "tue"], "timezone": "Asia/Shanghai"});
    let change = Change::SetActive {
        rule: "to-human".into(),
        active: Some(window.clone()),
    };
    let after = ok(BLOCK, &change);
    let when = line_of(BLOCK, "    when: { msg_type: [text, voice] }");
    assert_eq!(changed_lines(BLOCK, &after), when + 1..when + 1);
    assert!(after.contains(
        "    when: { msg_type: [text, voice] }\n    active: { hours: [\"18:00-09:00\"], weekdays: [mon, tue], timezone: Asia/Shanghai }\n"
    ));
    let after = ok(
        &after,
        &Change::SetCooldown {
            rule: "to-human".into(),
            cooldown: Some("60m".into()),
        },
    );
    assert!(after.contains("timezone: Asia/Shanghai }\n    cooldown: 60m\n    reply:"));
    load(&after);
    // Replaced where they are, then removed.
    let after = ok(
        &after,
        &Change::SetActive {
            rule: "to-human".into(),
            active: Some(json!({"from": "2026-11-01", "until": "2026-11-11"})),
        },
    );
    assert!(after.contains(
        "    active: { from: \"2026-11-01\", until: \"2026-11-11\" }\n    cooldown: 60m\n"
    ));
    load(&after);
    let after = ok(
        &after,
        &Change::SetCooldown {
            rule: "to-human".into(),
            cooldown: None,
        },
    );
    let after = ok(
        &after,
        &Change::SetActive {
            rule: "to-human".into(),
            active: None,
        },
    );
    assert_eq!(after, BLOCK);
}

// ---- add, delete, move -------------------------------------------------------------------

fn new_rule(name: &str) -> Value {
    json!({"name": name, "when": {"keyword": ["退款"]}, "reply": {"text": "退款请联系客服：{{FromUserName}}"}})
}

#[test]
fn add_rule_goes_before_the_catch_alls_or_where_asked() {
    let after = ok(
        BLOCK,
        &Change::AddRule {
            rule: new_rule("refund"),
            before: None,
        },
    );
    // Above `to-human` and its comment, as a block rule, a blank line after it.
    assert!(after.contains(
        "      text: 'it''s help'\n\n  - name: refund\n    when: { keyword: [退款] }\n    reply: { text: \"退款请联系客服：{{FromUserName}}\" }\n\n  # Everything else.\n  - name: to-human\n"
    ), "{after}");
    assert!(changed_lines(BLOCK, &after).is_empty(), "an insertion only");
    let rules = load(&after);
    assert_eq!(
        answers(&rules, "退款"),
        (Some("refund".into()), Some("退款请联系客服：o_user".into()))
    );
    // Where asked.
    let after = ok(
        BLOCK,
        &Change::AddRule {
            rule: new_rule("refund"),
            before: Some("help".into()),
        },
    );
    assert!(
        after.contains("    # after the reply\n\n  - name: refund\n"),
        "{after}"
    );
    assert!(
        after.contains("reply: { text: \"退款请联系客服：{{FromUserName}}\" }\n\n  - name: help\n")
    );
    // Flow files get a flow line; without a catch-all, at the end.
    let after = ok(
        FLOW,
        &Change::AddRule {
            rule: new_rule("refund"),
            before: None,
        },
    );
    assert!(after.contains("\n- { name: refund, when: { keyword: [退款] }, reply: { text: \"退款请联系客服：{{FromUserName}}\" } }\n- { name: other"), "{after}");
    let text = "rules:\n- name: a\n  when: { keyword: a }\n  reply: { text: a }";
    let after = ok(
        text,
        &Change::AddRule {
            rule: new_rule("refund"),
            before: None,
        },
    );
    assert_eq!(after, format!("{text}\n- name: refund\n  when: {{ keyword: [退款] }}\n  reply: {{ text: \"退款请联系客服：{{{{FromUserName}}}}\" }}"));
    load(&after);
}

#[test]
fn add_rule_to_an_empty_list_and_in_block_style() {
    let lines = "  - name: refund\n    when: { keyword: [退款] }\n    reply: { text: \"退款请联系客服：{{FromUserName}}\" }";
    for (text, want) in [
        ("rules: []\n", format!("rules:\n{lines}\n")),
        ("rules:", format!("rules:\n{lines}")),
        (
            "# none yet\nrules:   # to come\n",
            format!("# none yet\nrules:   # to come\n{lines}\n"),
        ),
        (
            "rules: [] # to come\r\n",
            format!("rules: # to come\r\n{}\r\n", lines.replace('\n', "\r\n")),
        ),
    ] {
        let after = ok(
            text,
            &Change::AddRule {
                rule: new_rule("refund"),
                before: None,
            },
        );
        assert_eq!(after, want);
        assert_eq!(rule_json(&after, "refund"), new_rule("refund"));
        load(&after);
    }
    let big = json!({
        "name": "stores",
        "when": {"keyword": ["门店", "地址"], "msg_type": "text"},
        "cooldown": "10m",
        "reply": {"news": [{"title": "全部门店", "description": "营业时间 9:00-21:00，节假日照常营业，欢迎光临。".repeat(2), "url": "https://example.com/stores", "pic_url": "https://example.com/s.jpg"}]},
    });
    let after = ok(
        BLOCK,
        &Change::AddRule {
            rule: big.clone(),
            before: Some("price".into()),
        },
    );
    assert!(after.starts_with(
        "# Rules of a test account.\nrules:\n  - name: stores\n    when: { msg_type: text, keyword: [门店, 地址] }\n    cooldown: 10m\n    reply:\n      news:\n        - title: 全部门店\n          description: \""
    ), "{after}");
    assert!(after.contains("\n\n  # The price list.\n  - name: price\n"));
    assert_eq!(rule_json(&after, "stores"), big);
    load(&after);
}

#[test]
fn delete_rule_takes_its_lines_and_one_blank_line() {
    let after = ok(
        BLOCK,
        &Change::DeleteRule {
            rule: "help".into(),
        },
    );
    let help = rule_lines(BLOCK, "help");
    only_changed(BLOCK, &after, help.start..help.end + 1);
    assert!(
        after.contains("    # after the reply\n\n  # Everything else.\n"),
        "{after}"
    );
    let after = ok(
        BLOCK,
        &Change::DeleteRule {
            rule: "price".into(),
        },
    );
    assert!(
        after.starts_with(
            "# Rules of a test account.\nrules:\n  # The price list.\n  - name: help\n"
        ),
        "{after}"
    );
    let after = ok(
        BLOCK,
        &Change::DeleteRule {
            rule: "to-human".into(),
        },
    );
    // The last rule: the comment above it stays, the blank line above that goes with it.
    assert!(
        after.ends_with("      text: 'it''s help'\n  # Everything else.\n"),
        "{after}"
    );
    let after = ok(
        FLOW,
        &Change::DeleteRule {
            rule: "help".into(),
        },
    );
    assert_eq!(after, FLOW.replace("- { name: help, when: { keyword: [帮助] }, reply: { text: \"帮助 {{FromUserName}}\" } }\n", ""));
    load(&after);
}

#[test]
fn move_rule_carries_its_lines_exactly() {
    let after = ok(
        BLOCK,
        &Change::MoveRule {
            rule: "to-human".into(),
            before: Some("help".into()),
        },
    );
    assert!(after.contains(
        "    # after the reply\n\n  - name: to-human\n    when: { msg_type: [text, voice] }\n    reply: { transfer_customer_service: {} }\n\n  - name: help\n"
    ), "{after}");
    // Its comment stays; the blank line that went with it is the one above that comment.
    assert!(
        after.ends_with("      text: 'it''s help'\n  # Everything else.\n"),
        "{after}"
    );
    assert_eq!(sorted_lines(&after), sorted_lines(BLOCK), "the same lines");
    assert_eq!(
        answers(&load(&after), "帮助").0.as_deref(),
        Some("to-human")
    );
    // Moved back to the end: after the last rule, above the comment that stayed at the end.
    let back = ok(
        &after,
        &Change::MoveRule {
            rule: "to-human".into(),
            before: None,
        },
    );
    assert!(back.ends_with("      text: 'it''s help'\n\n  - name: to-human\n    when: { msg_type: [text, voice] }\n    reply: { transfer_customer_service: {} }\n  # Everything else.\n"), "{back}");
    assert_eq!(sorted_lines(&back), sorted_lines(BLOCK), "the same lines");
    for noop in [Some("to-human"), None] {
        let change = Change::MoveRule {
            rule: "to-human".into(),
            before: noop.map(str::to_owned),
        };
        assert_eq!(ok(BLOCK, &change), BLOCK);
    }
    let after = ok(
        FLOW,
        &Change::MoveRule {
            rule: "price".into(),
            before: None,
        },
    );
    assert_eq!(after, "rules:\n- { name: help, when: { keyword: [帮助] }, reply: { text: \"帮助 {{FromUserName}}\" } }\n- { name: other, ignore: true }\n- { name: price, when: { keyword: [价格] }, reply: { text: 价格表 } }   # prices\n");
}

// ---- layouts -----------------------------------------------------------------------------

#[test]
fn indentation_is_read_from_the_file() {
    let text = "rules:\n    -   name: wide\n        reply:\n            text: hi\n";
    let after = ok(
        text,
        &Change::SetCooldown {
            rule: "wide".into(),
            cooldown: Some("5m".into()),
        },
    );
    assert_eq!(
        after,
        "rules:\n    -   name: wide\n        cooldown: 5m\n        reply:\n            text: hi\n"
    );
    let after = ok(text, &set_reply("wide", json!({"text": "一\n二"})));
    assert_eq!(after, "rules:\n    -   name: wide\n        reply:\n            text: |-\n                一\n                二\n");
    // `wide` matches every message: the new rule goes before it.
    let after = ok(
        text,
        &Change::AddRule {
            rule: json!({"name": "new", "reply": {"text": "x"}}),
            before: None,
        },
    );
    assert_eq!(after, "rules:\n    -   name: new\n        reply: { text: x }\n    -   name: wide\n        reply:\n            text: hi\n");
    // A list not indented under `rules:`.
    let text = "rules:\n- name: a\n  reply:\n    text: a\n- name: b\n  reply: { text: b }\n";
    let after = ok(
        text,
        &Change::SetEnabled {
            rule: "a".into(),
            enabled: false,
        },
    );
    assert_eq!(after, "rules:\n- name: a\n  enabled: false\n  reply:\n    text: a\n- name: b\n  reply: { text: b }\n");
    let after = ok(text, &Change::DeleteRule { rule: "a".into() });
    assert_eq!(after, "rules:\n- name: b\n  reply: { text: b }\n");
}

#[test]
fn tabs_inside_values_are_kept_and_tab_indentation_is_not_yaml() {
    let text =
        "rules:\n  - name: a\n    reply: { text: \"a\\tb\" }\n    when: { keyword: \"x\ty\" }\n";
    let after = ok(
        text,
        &Change::SetCooldown {
            rule: "a".into(),
            cooldown: Some("1m".into()),
        },
    );
    assert!(after.starts_with(text.trim_end()));
    let tabbed = "rules:\n\t- name: a\n";
    assert!(matches!(
        apply(tabbed, &Change::DeleteRule { rule: "a".into() }),
        Err(EditError::NotRules { .. })
    ));
}

// ---- errors ------------------------------------------------------------------------------

#[test]
fn refuses_what_it_cannot_place() {
    let err = |text: &str, change: Change| apply(text, &change).unwrap_err();
    assert_eq!(
        err(BLOCK, set_reply("nope", json!({"text": "x"}))),
        EditError::NoRule {
            rule: "nope".into()
        }
    );
    assert_eq!(
        err(
            BLOCK,
            Change::AddRule {
                rule: new_rule("help"),
                before: None
            }
        ),
        EditError::Duplicate {
            rule: "help".into()
        }
    );
    assert_eq!(
        err(
            BLOCK,
            Change::AddRule {
                rule: new_rule("x"),
                before: Some("nope".into())
            }
        ),
        EditError::NoRule {
            rule: "nope".into()
        }
    );
    for not_rules in [
        "",
        "- a\n",
        "rules: { a: 1 }\n",
        "other: []\n",
        "rules: [\n",
        "rules: []\n---\nrules: []\n",
        "a: 1\rb: 2\r",
    ] {
        assert!(
            matches!(
                err(not_rules, Change::DeleteRule { rule: "a".into() }),
                EditError::NotRules { .. }
            ),
            "{not_rules:?}"
        );
    }
    let anchored = "rules:\n  - name: a\n    when: &w { keyword: [a] }\n    reply: { text: a }\n  - name: b\n    when: *w\n    reply: { text: b }\n";
    for rule in ["a", "b"] {
        let e = err(anchored, set_reply(rule, json!({"text": "x"})));
        assert!(
            matches!(&e, EditError::Unplaceable { rule: r, .. } if r == rule),
            "{e}"
        );
        assert!(e.to_string().contains("anchors or aliases"), "{e}");
    }
    // Other rules of such a file can still be edited.
    let after = ok(
        &format!("{anchored}  - name: c\n    reply: {{ text: c }}\n"),
        &set_reply("c", json!({"text": "C"})),
    );
    assert!(after.ends_with("  - name: c\n    reply: { text: C }\n"));
    let flow_list = "rules: [ { name: a, reply: { text: a } } ]\n";
    assert!(matches!(
        err(flow_list, Change::DeleteRule { rule: "a".into() }),
        EditError::Unplaceable { .. }
    ));
    assert_eq!(
        ok(flow_list, &set_reply("a", json!({"text": "b"}))),
        "rules: [ { name: a, reply: { text: b } } ]\n"
    );
    let twice = "rules:\n  - name: a\n  - name: a\n";
    assert_eq!(
        err(twice, Change::DeleteRule { rule: "a".into() }),
        EditError::Duplicate { rule: "a".into() }
    );
    for bad in [
        json!({}),
        json!({"keyword": []}),
        json!({"keyword": [""]}),
        json!({"keyword": [1]}),
        json!({"regex": ["a"]}),
    ] {
        assert!(
            matches!(
                err(BLOCK, keywords("help", bad.clone())),
                EditError::Invalid { .. }
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        err(BLOCK, set_reply("help", json!("text"))),
        EditError::Invalid { .. }
    ));
    assert!(matches!(
        err(
            BLOCK,
            Change::AddRule {
                rule: json!({"reply": {}}),
                before: None
            }
        ),
        EditError::Invalid { .. }
    ));
    assert!(matches!(
        err(
            BLOCK,
            Change::SetCooldown {
                rule: "help".into(),
                cooldown: Some(" ".into())
            }
        ),
        EditError::Invalid { .. }
    ));
}

#[test]
fn error_messages_name_the_rule_and_stay_short() {
    let long = format!(
        "rules:\n  - &a {{ name: a, reply: {{ text: \"{}\" }} }}\n",
        "长".repeat(500)
    );
    let e = apply(&long, &set_reply("a", json!({"text": "x"})))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("rule `a`: cannot be edited in place: it uses YAML anchors"),
        "{e}"
    );
    assert!(e.chars().count() < 150, "{e}");
    assert_eq!(
        apply(
            BLOCK,
            &Change::DeleteRule {
                rule: "nope".into()
            }
        )
        .unwrap_err()
        .to_string(),
        "no rule named `nope`"
    );
}

// ---- the shipped rules file ------------------------------------------------------------------

/// The frozen copy of the shipped rules, with the shipped file's `off-hours` rule (its
/// `active` and `cooldown`) before `to-human`, as rules/rules.yaml has it. The frozen copy
/// (tests/data/shipped) is the tests' own: rules/rules.yaml is the ops team's to change.
fn shipped_with_off_hours() -> String {
    const OFF_HOURS: &str = "  # Off-hours (the console's 收到消息回复, once per user per hour).
  - name: off-hours
    when: { msg_type: [text, voice] }
    active: { hours: [\"18:00-09:00\"], weekdays: [mon, tue, wed, thu, fri] }
    cooldown: 60m
    reply: { text: \"客服已下班，明早 9 点回复您。\" }

";
    let at = SHIPPED
        .find("  # Everything else a person sends")
        .expect("the frozen copy has its catch-all");
    format!("{}{OFF_HOURS}{}", &SHIPPED[..at], &SHIPPED[at..])
}

#[test]
fn every_change_over_the_shipped_file_touches_only_its_rule() {
    let owned = shipped_with_off_hours();
    let shipped: &str = &owned;
    let rules = load(shipped);
    assert_eq!(answers(&rules, "价格").0.as_deref(), Some("price"));
    let cases: Vec<(Change, &str)> = vec![
        (
            set_reply(
                "price",
                json!({"text": "本周价格：{{FromUserName}}，回复「帮助」查看更多"}),
            ),
            "price",
        ),
        (
            set_reply(
                "menu-contact",
                json!({"news": [{"title": "联系我们", "description": "客服热线 400-111-2222", "url": "https://example.com/contact", "pic_url": "https://example.com/c.jpg"}]}),
            ),
            "menu-contact",
        ),
        (
            set_reply(
                "discount",
                json!({"one_of": [{"text": "本周全场 7 折"}, {"text": "新用户首单立减 20 元"}]}),
            ),
            "discount",
        ),
        (
            set_reply("unsubscribe", json!({"text": "再见"})),
            "unsubscribe",
        ),
        (
            set_reply("scan-qr", json!({"text": "多行\n文本 {{EventKey}}"})),
            "scan-qr",
        ),
        (
            keywords("price", json!({"keyword": ["价格", "价目表", "price"]})),
            "price",
        ),
        (keywords("help", json!({"contains": ["帮助"]})), "help"),
        (
            keywords("location-message", json!({"keyword": ["位置"]})),
            "location-message",
        ),
        (
            Change::SetEnabled {
                rule: "welcome".into(),
                enabled: false,
            },
            "welcome",
        ),
        (
            Change::SetActive {
                rule: "off-hours".into(),
                active: None,
            },
            "off-hours",
        ),
        (
            Change::SetActive {
                rule: "price".into(),
                active: Some(json!({"from": "2026-11-01", "until": "2026-11-11"})),
            },
            "price",
        ),
        (
            Change::SetCooldown {
                rule: "off-hours".into(),
                cooldown: Some("30m".into()),
            },
            "off-hours",
        ),
        (
            Change::SetCooldown {
                rule: "off-hours".into(),
                cooldown: None,
            },
            "off-hours",
        ),
        (
            Change::SetCooldown {
                rule: "to-human".into(),
                cooldown: Some("1h".into()),
            },
            "to-human",
        ),
        (
            Change::DeleteRule {
                rule: "order-status".into(),
            },
            "order-status",
        ),
        (
            Change::DeleteRule {
                rule: "menu-music".into(),
            },
            "-",
        ),
    ];
    for (change, rule) in cases {
        if rule == "-" {
            assert!(apply(shipped, &change).is_err());
            continue;
        }
        let after = ok(shipped, &change);
        let own = rule_lines(shipped, rule);
        // A deletion may take the blank line after the rule.
        let allowed = match change {
            Change::DeleteRule { .. } => own.start..own.end + 1,
            _ => own,
        };
        only_changed(shipped, &after, allowed);
        if !matches!(change, Change::SetEnabled { .. }) {
            load(&after);
        }
    }
    // What the edits mean.
    let after = ok(
        shipped,
        &set_reply("price", json!({"text": "本周价格：{{FromUserName}}"})),
    );
    assert_eq!(
        answers(&load(&after), "价格").1.as_deref(),
        Some("本周价格：o_user")
    );
    let after = ok(shipped, &keywords("price", json!({"keyword": ["价目表"]})));
    assert_eq!(answers(&load(&after), "价目表").0.as_deref(), Some("price"));
}

#[test]
fn adding_and_moving_over_the_shipped_file() {
    let after = ok(
        SHIPPED,
        &Change::AddRule {
            rule: new_rule("refund"),
            before: None,
        },
    );
    assert!(
        changed_lines(SHIPPED, &after).is_empty(),
        "an insertion only"
    );
    // Before the catch-alls that end the file: above `location-message`'s heading.
    let heading = "  # ---- Other messages ------";
    assert!(after.contains(&format!(
        "  - name: refund\n    when: {{ keyword: [退款] }}\n    reply: {{ text: \"退款请联系客服：{{{{FromUserName}}}}\" }}\n\n{heading}"
    )), "{after}");
    let rules = load(&after);
    assert_eq!(
        answers(&rules, "退款"),
        (Some("refund".into()), Some("退款请联系客服：o_user".into()))
    );
    assert_eq!(answers(&rules, "价格").0.as_deref(), Some("price"));
    // Moved: the lines are the rule's own, exactly.
    let after = ok(
        SHIPPED,
        &Change::MoveRule {
            rule: "help".into(),
            before: Some("welcome-from-qr".into()),
        },
    );
    let help = rule_lines(SHIPPED, "help");
    let own: Vec<&str> = SHIPPED.split_inclusive('\n').collect::<Vec<_>>()[help].to_vec();
    assert!(
        after.contains(&format!("rules:\n{}\n  # ---- Following", own.concat())),
        "{after}"
    );
    let a: Vec<&str> = SHIPPED.split_inclusive('\n').collect();
    let b: Vec<&str> = after.split_inclusive('\n').collect();
    assert_eq!(a.len(), b.len());
    let mut sorted_a = a.clone();
    let mut sorted_b = b.clone();
    sorted_a.sort();
    sorted_b.sort();
    assert_eq!(sorted_a, sorted_b, "the same lines, in another order");
    load(&after);
}

// ---- the API's shapes --------------------------------------------------------------------

#[test]
fn changes_read_from_the_json_scripts_send() {
    let read = |s: &str| serde_json::from_str::<Change>(s).unwrap();
    assert_eq!(
        read(r#"{"op": "set_reply", "rule": "price", "reply": {"text": "新"}}"#),
        set_reply("price", json!({"text": "新"}))
    );
    assert_eq!(
        read(r#"{"op": "set_keywords", "rule": "price", "keyword": ["a", "b"]}"#),
        keywords("price", json!({"keyword": ["a", "b"]}))
    );
    assert_eq!(
        read(r#"{"op": "set_keywords", "rule": "price", "contains": ["a"]}"#),
        keywords("price", json!({"contains": ["a"]}))
    );
    assert_eq!(
        read(r#"{"op": "set_enabled", "rule": "price", "enabled": false}"#),
        Change::SetEnabled {
            rule: "price".into(),
            enabled: false
        }
    );
    assert_eq!(
        read(r#"{"op": "add_rule", "rule": {"name": "n"}, "before": "help"}"#),
        Change::AddRule {
            rule: json!({"name": "n"}),
            before: Some("help".into())
        }
    );
    assert_eq!(
        read(r#"{"op": "add_rule", "rule": {"name": "n"}}"#),
        Change::AddRule {
            rule: json!({"name": "n"}),
            before: None
        }
    );
    assert_eq!(
        read(r#"{"op": "delete_rule", "rule": "n"}"#),
        Change::DeleteRule { rule: "n".into() }
    );
    assert_eq!(
        read(r#"{"op": "move_rule", "rule": "n", "before": null}"#),
        Change::MoveRule {
            rule: "n".into(),
            before: None
        }
    );
    assert_eq!(
        read(r#"{"op": "set_active", "rule": "n", "active": null}"#),
        Change::SetActive {
            rule: "n".into(),
            active: None
        }
    );
    assert_eq!(
        read(r#"{"op": "set_cooldown", "rule": "n", "cooldown": "60m"}"#),
        Change::SetCooldown {
            rule: "n".into(),
            cooldown: Some("60m".into())
        }
    );
    let template = read(r#"{"op": "set_template", "file": "price", "text": "价格表"}"#);
    assert_eq!(ok(SHIPPED, &template), SHIPPED);
    let back = serde_json::to_value(keywords("p", json!({"keyword": ["a"]}))).unwrap();
    assert_eq!(
        back,
        json!({"op": "set_keywords", "rule": "p", "keyword": ["a"]})
    );
}

#[test]
fn apply_all_makes_every_change_in_order() {
    let changes = [
        Change::AddRule {
            rule: new_rule("refund"),
            before: None,
        },
        set_reply("refund", json!({"text": "退款：{{FromUserName}}"})),
        Change::MoveRule {
            rule: "refund".into(),
            before: Some("price".into()),
        },
        Change::SetEnabled {
            rule: "help".into(),
            enabled: false,
        },
        Change::SetEnabled {
            rule: "help".into(),
            enabled: true,
        },
        Change::DeleteRule {
            rule: "to-human".into(),
        },
    ];
    let after = apply_all(BLOCK, &changes).unwrap();
    assert!(
        after.starts_with("# Rules of a test account.\nrules:\n  - name: refund\n"),
        "{after}"
    );
    assert_eq!(
        answers(&load(&after), "退款").1.as_deref(),
        Some("退款：o_user")
    );
    // The error says which change failed; nothing of the ones before it is returned.
    let failing = [changes[0].clone(), changes[3].clone(), changes[0].clone()];
    let e = apply_all(BLOCK, &failing).unwrap_err();
    assert_eq!(
        e,
        ChangeError {
            index: 2,
            op: "add_rule",
            error: EditError::Duplicate {
                rule: "refund".into()
            }
        }
    );
    assert_eq!(
        e.to_string(),
        "change 3 (`add_rule`): rule `refund`: the file already has a rule of that name"
    );
    let e = apply_all(
        BLOCK,
        &[changes[3].clone(), set_reply("nope", json!({"text": "x"}))],
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "change 2 (`set_reply`): no rule named `nope`"
    );
    // No changes: the text as it was.
    assert_eq!(apply_all(BLOCK, &[]).unwrap(), BLOCK);
    // Every op's name is the one the JSON gives.
    for change in &changes {
        let json = serde_json::to_value(change).unwrap();
        assert_eq!(json["op"], json!(change.op()));
    }
    let d = diff(BLOCK, &after, "rules/rules.yaml");
    assert!(
        d.starts_with("--- a/rules/rules.yaml\n+++ b/rules/rules.yaml\n@@ "),
        "{d}"
    );
}

#[test]
fn every_rule_of_the_shipped_file_takes_every_change() {
    let doc = readback::read(SHIPPED).unwrap();
    let names: Vec<String> = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.len() > 20);
    let sorted = |t: &str| {
        let mut l: Vec<String> = t.lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    for name in &names {
        let own = rule_lines(SHIPPED, name);
        let ignores = rule_json(SHIPPED, name).get("ignore").is_some();
        let text = "「{{FromUserName}}」: #1 'yes' \"null\"\n第二行";
        let after = ok(SHIPPED, &set_reply(name, json!({ "text": text })));
        only_changed(SHIPPED, &after, own.clone());
        assert_eq!(rule_json(&after, name)["reply"]["text"], json!(text));
        assert!(rule_json(&after, name).get("ignore").is_none());
        load(&after);
        let after = ok(
            SHIPPED,
            &Change::SetEnabled {
                rule: name.clone(),
                enabled: false,
            },
        );
        only_changed(SHIPPED, &after, own.clone());
        assert_eq!(
            ok(
                &after,
                &Change::SetEnabled {
                    rule: name.clone(),
                    enabled: true
                }
            ),
            SHIPPED
        );
        let after = ok(
            SHIPPED,
            &Change::SetCooldown {
                rule: name.clone(),
                cooldown: Some("5m".into()),
            },
        );
        only_changed(SHIPPED, &after, own.clone());
        if !ignores {
            load(&after);
        }
        let after = ok(SHIPPED, &keywords(name, json!({"keyword": ["新词"]})));
        only_changed(SHIPPED, &after, own.clone());
        let after = ok(SHIPPED, &Change::DeleteRule { rule: name.clone() });
        // Its lines and the blank line after them; the last rule's blank line is the one
        // above the comments right above it, which stay.
        let lines: Vec<&str> = SHIPPED.lines().collect();
        let mut top = own.start;
        while top > 0 && lines[top - 1].trim_start().starts_with('#') {
            top -= 1;
        }
        if own.end == lines.len() {
            only_changed(SHIPPED, &after, top.saturating_sub(1)..own.end);
            assert!(lines[top..own.start].iter().all(|c| after.contains(c)));
        } else {
            only_changed(SHIPPED, &after, own.start..own.end + 1);
        }
        // Gone from the rules (a commented-out copy, as `order-status` has, stays).
        let left = readback::read(&after).unwrap();
        assert!(
            left["rules"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["name"] != json!(name)),
            "{name}: deleted"
        );
        // Its lines went, and a blank line with them where one separates the rules.
        let gone = SHIPPED.lines().count() - after.lines().count();
        assert!(
            gone == own.len() || gone == own.len() + 1,
            "{name}: {gone} lines"
        );
        load(&after);
        for before in [Some(names[0].clone()), None] {
            let after = ok(
                SHIPPED,
                &Change::MoveRule {
                    rule: name.clone(),
                    before,
                },
            );
            assert_eq!(sorted(&after), sorted(SHIPPED), "{name}: the same lines");
            load(&after);
        }
    }
}
