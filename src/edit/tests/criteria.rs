//! `set_keywords`: flow and block criteria, and a `when:` or `keyword:` that is missing.

use super::*;

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
