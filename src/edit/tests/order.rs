//! Adding, deleting and moving rules, and the layouts (indentation) they follow.

use super::*;

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
