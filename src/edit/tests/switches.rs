//! `set_enabled`, `set_active` and `set_cooldown`: one line written or removed.

use super::*;

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
