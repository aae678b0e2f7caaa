//! Property tests: random changes (names that exist and names that don't, replies and
//! keywords of every awkward character, random places) over the shipped rules file and odd
//! ones (flow style, CRLF, comments between rules, no final break, `rules: []`), and over
//! files cut and spliced at random. The engine never panics; what it returns loads with the
//! rules loader, and every rule the change does not concern keeps its lines exactly.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::tests::{SHIPPED, TEMPLATES};
use super::{apply, apply_all, readback, Change};

const BLOCK: &str = "\
# A test account.
rules:
  # The price list.
  - name: price
    when: { keyword: [价格, price] }   # exact
    # The reply, by hand.
    reply: { text: \"本周价格\" }

  - name: help
    when:
      keyword: [帮助]
    reply:
      text: 'it''s help'
  # Between two rules, at the dash's column.
  - name: 退款
    when: { keyword: { contains: [退款] } }
    reply:
      text: |-
        退款请联系客服
        {{FromUserName}}

  # Everything else.
  - name: to-human
    when: { msg_type: [text, voice] }
    reply: { transfer_customer_service: {} }";

const FLOW: &str = "\
rules:
- { name: price, when: { keyword: [价格] }, reply: { text: 价格表 } }   # prices
- { name: help, when: { keyword: [帮助] }, reply: { text: \"帮助 {{FromUserName}}\" } }
- { name: other, ignore: true }
";

const FLOW_LIST: &str = "rules: [ { name: price, when: { keyword: 价格 }, reply: { text: 价格表 } }, { name: help, ignore: true } ]\n";

const EMPTY: &str = "# Nothing yet.\nrules: []   # to come\n";

const NAMES: &[&str] = &[
    "welcome",
    "welcome-from-qr",
    "price",
    "help",
    "to-human",
    "退款",
    "other",
    "off-hours",
    "order-status",
    "nope",
    "",
    "price ",
    "价格",
];

/// Pieces of texts: every character YAML gives a meaning to somewhere, Chinese, emoji.
const PIECES: &[&str] = &[
    "价格",
    "本周",
    "「",
    "」",
    "'",
    "\"",
    "#",
    " #",
    ": ",
    ":",
    "- ",
    "-",
    "? ",
    "{{FromUserName}}",
    "\n",
    "\n\n",
    "\t",
    " ",
    "  ",
    "null",
    "true",
    "1.5",
    "0x1F",
    "~",
    "&a",
    "*a",
    "!x",
    "%",
    "@",
    "`",
    "|",
    ">",
    "\\",
    "\\n",
    "…",
    "👍",
    "[",
    "]",
    ",",
    "\r",
    "\u{feff}",
    "é",
    "---",
];

fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(PIECES)
}

/// A non-empty text made of pieces.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 1..8).prop_map(|p| p.concat())
}

/// A text whose trimmed form is not empty (a keyword).
fn word() -> impl Strategy<Value = String> {
    (
        text(),
        prop::sample::select(&["价格", "a", "退款", "?", "👍"][..]),
    )
        .prop_map(|(t, w)| format!("{t}{w}"))
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES).prop_map(str::to_owned)
}

/// A reply the rules file accepts.
fn reply() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({ "text": t })),
        prop::collection::vec(text(), 1..3).prop_map(
            |ts| json!({ "one_of": ts.iter().map(|t| json!({"text": t})).collect::<Vec<_>>() })
        ),
        (text(), text()).prop_map(|(t, d)| json!({
            "news": [{ "title": t, "description": d, "url": "https://example.com/a" }]
        })),
        Just(json!({ "transfer_customer_service": {} })),
        Just(json!({ "text": { "template": "help" } })),
    ]
}

fn keywords() -> impl Strategy<Value = Value> {
    let list = || prop::collection::vec(word(), 1..4);
    prop_oneof![
        list().prop_map(|k| json!({ "keyword": k })),
        list().prop_map(|c| json!({ "contains": c })),
        (list(), list()).prop_map(|(k, c)| json!({ "keyword": k, "contains": c })),
    ]
}

/// Changes a rules file can take (when the rule exists): the result must load.
fn change() -> impl Strategy<Value = Change> {
    let before = || prop::option::of(name());
    prop_oneof![
        (name(), reply()).prop_map(|(rule, reply)| Change::SetReply { rule, reply }),
        (name(), keywords()).prop_map(|(rule, keywords)| Change::SetKeywords { rule, keywords }),
        (
            name(),
            prop::option::of(prop::sample::select(&["5m", "60m", "1h", "30s"][..]))
        )
            .prop_map(|(rule, c)| Change::SetCooldown {
                rule,
                cooldown: c.map(str::to_owned)
            }),
        (name(), any::<bool>()).prop_map(|(rule, on)| Change::SetActive {
            rule,
            active: on.then(|| json!({ "hours": ["18:00-09:00"], "weekdays": ["mon", "fri"] })),
        }),
        (name(), before()).prop_map(|(rule, before)| Change::MoveRule { rule, before }),
        name().prop_map(|rule| Change::DeleteRule { rule }),
        (name(), keywords(), reply(), before()).prop_map(|(name, k, reply, before)| {
            let mut when = json!({ "keyword": k.get("keyword").cloned().unwrap_or(json!(["新"])) });
            if let Some(c) = k.get("contains") {
                when = json!({ "keyword": [{ "contains": c }] });
            }
            Change::AddRule {
                rule: json!({ "name": name, "when": when, "reply": reply }),
                before,
            }
        }),
    ]
}

/// Any JSON at all, where a change takes JSON.
fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
        prop::sample::select(&["text", "keyword", "contains", "name", "when", "reply", ""][..])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(
                        &["text", "keyword", "contains", "name", "when", "reply", "", "价"][..]
                    ),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Changes with anything in them: refused or made, never a panic.
fn any_change() -> impl Strategy<Value = Change> {
    let words = || prop_oneof![name(), text()];
    prop_oneof![
        change(),
        (words(), junk()).prop_map(|(rule, reply)| Change::SetReply { rule, reply }),
        (words(), junk()).prop_map(|(rule, keywords)| Change::SetKeywords { rule, keywords }),
        (words(), prop::option::of(junk()))
            .prop_map(|(rule, active)| Change::SetActive { rule, active }),
        (words(), prop::option::of(text()))
            .prop_map(|(rule, cooldown)| Change::SetCooldown { rule, cooldown }),
        (words(), any::<bool>()).prop_map(|(rule, enabled)| Change::SetEnabled { rule, enabled }),
        (junk(), prop::option::of(words()))
            .prop_map(|(rule, before)| Change::AddRule { rule, before }),
        (words(), prop::option::of(words()))
            .prop_map(|(rule, before)| Change::MoveRule { rule, before }),
    ]
}

/// The files the changes are made to.
fn file() -> impl Strategy<Value = String> {
    prop::sample::select(&[0usize, 1, 2, 3, 4, 5, 6][..]).prop_map(|i| match i {
        0 => SHIPPED.to_owned(),
        1 => SHIPPED.replace('\n', "\r\n"),
        2 => BLOCK.to_owned(),
        3 => BLOCK.replace('\n', "\r\n") + "\r\n",
        4 => FLOW.to_owned(),
        5 => FLOW_LIST.to_owned(),
        _ => EMPTY.to_owned(),
    })
}

/// The file cut, spliced or garbled at a random character: what a hand edit half done, or a
/// hostile draft, gives.
fn mangled() -> impl Strategy<Value = String> {
    (
        file(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0..4u8,
        piece(),
    )
        .prop_map(|(text, a, b, how, piece)| {
            let bounds: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let (mut x, mut y) = (*a.get(&bounds), *b.get(&bounds));
            if x > y {
                std::mem::swap(&mut x, &mut y);
            }
            match how {
                0 => format!("{}{piece}{}", &text[..x], &text[x..]),
                1 => format!("{}{}", &text[..x], &text[y..]),
                2 => text[..x].to_owned(),
                _ => format!("{}{piece}{}", &text[..x], &text[y..]),
            }
        })
}

/// The names of the rules of `text`, as the file reads.
fn names(text: &str) -> Vec<String> {
    readback::read(text)
        .ok()
        .and_then(|doc| doc.get("rules").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The lines of the rule `name` in `text`, found by hand (from its `- name:` or `- { name:`
/// line to its last line indented past its `-`, trailing blank lines not counted); `None`
/// when it is not written that way.
fn rule_lines(text: &str, name: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let first = lines.iter().position(|l| {
        let t = l.trim_start().trim_start_matches(['-', ' ', '{']);
        l.trim_start().starts_with('-')
            && t.strip_prefix("name: ")
                .and_then(|t| t.strip_prefix(name))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', ',', '}']))
    })?;
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
    Some(
        lines[first..=last]
            .iter()
            .map(|l| (*l).to_owned())
            .collect(),
    )
}

/// Whether `lines` appear in `text` one after the other.
fn holds(text: &str, lines: &[String]) -> bool {
    let all: Vec<&str> = text.lines().collect();
    lines.is_empty() || all.windows(lines.len()).any(|w| w == lines)
}

/// The rules a change concerns: their lines may change.
fn concerned(change: &Change) -> Vec<&str> {
    match change {
        Change::AddRule { .. } | Change::SetTemplate { .. } | Change::ExpectCase { .. } => {
            Vec::new()
        }
        other => vec![other.rule()],
    }
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

/// What must hold of `after`, which `change` made of `before`.
fn check_made(before: &str, after: &str, change: &Change) -> Result<(), TestCaseError> {
    prop_assert!(
        readback::read(after).is_ok(),
        "does not read back:\n{after}"
    );
    for name in names(before) {
        if concerned(change).contains(&name.as_str()) {
            continue;
        }
        if let Some(lines) = rule_lines(before, &name) {
            prop_assert!(
                holds(after, &lines),
                "{change:?}: rule `{name}` lost its lines:\n{after}"
            );
        }
    }
    if let Change::MoveRule { .. } = change {
        prop_assert_eq!(
            sorted_lines(after),
            sorted_lines(before),
            "a move keeps the lines"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Changes a rule can take, one after another: each made keeps the other rules' lines,
    /// and the file still loads; `enabled: false` and back gives the very bytes.
    #[test]
    fn changes_keep_other_rules_and_load(
        before in file(),
        changes in prop::collection::vec(change(), 1..4),
    ) {
        let mut text = before;
        prop_assert!(crate::rules::load_str(&text, TEMPLATES).is_ok());
        // Whether every change made so far kept the file's meaning valid.
        let mut valid = true;
        for change in &changes {
            let Ok(after) = apply(&text, change) else { continue };
            check_made(&text, &after, change)?;
            prop_assert!(
                crate::rules::schema::parse_typed(&after).is_some(),
                "{change:?}: the loader cannot type it:\n{after}"
            );
            // New keywords may take away a regex the reply's `{{captures.…}}` need, and a
            // cooldown on an `ignore: true` rule means nothing: meanings `check` refuses, not
            // YAML the engine got wrong. The other changes here
            // keep a valid file valid.
            valid &= !matches!(change, Change::SetKeywords { .. } | Change::SetCooldown { .. });
            if let (true, Err(e)) = (valid, crate::rules::load_str(&after, TEMPLATES)) {
                return Err(TestCaseError::fail(format!("{change:?}: {e}\n{after}")));
            }
            if names(&after).contains(&change.rule().to_owned()) {
                let off = Change::SetEnabled { rule: change.rule().into(), enabled: false };
                if let Ok(off) = apply(&after, &off) {
                    let on = Change::SetEnabled { rule: change.rule().into(), enabled: true };
                    let back = apply(&off, &on).ok();
                    prop_assert_eq!(back.as_deref(), Some(after.as_str()));
                }
            }
            text = after;
        }
        let all = apply_all(SHIPPED, &changes);
        if let Err(e) = &all {
            prop_assert!(e.index < changes.len());
        }
    }

    /// Anything in a change, on any of the files: refused or made, and what is made reads
    /// back and keeps the other rules' lines.
    #[test]
    fn any_change_is_refused_or_made(before in file(), change in any_change()) {
        if let Ok(after) = apply(&before, &change) {
            check_made(&before, &after, &change)?;
        }
    }

    /// Files cut and spliced at any character: never a panic, and what is made reads back.
    #[test]
    fn mangled_files_never_panic(before in mangled(), change in any_change()) {
        if let Ok(after) = apply(&before, &change) {
            prop_assert!(readback::read(&after).is_ok(), "{change:?}:\n{after}");
        }
    }
}
