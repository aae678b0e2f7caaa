//! Every change kind on the frozen copy of the shipped rules.

use super::*;

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
