//! What each change refuses, and why, with the file untouched.

use super::*;

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
