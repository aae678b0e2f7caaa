//! `set_reply` and the file's line breaks and end: what a reply change writes, and that it touches nothing else.

use super::*;

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
