//! The JSON shapes of changes, as the page's scripts send them.

use super::*;

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
