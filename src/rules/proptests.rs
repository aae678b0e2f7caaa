//! Property test: the indexed `RuleSet::find` returns exactly what trying every rule in
//! file order (`find_linear`) returns, on random rule sets and messages. Words come from a
//! small alphabet so that rules and messages collide often.

use proptest::prelude::*;

use super::compile::compile_yaml;
use super::Subject;
use crate::wire::Message;

// "\u{212A}1" starts with the Kelvin sign, which case-insensitive regexes match as `k`.
const WORDS: &[&str] = &[
    "a",
    "b",
    "ab",
    "BA",
    "价格",
    "x1",
    "订单 12",
    " a ",
    "\u{212A}1",
];
const EVENTS: &[&str] = &["subscribe", "SCAN", "CLICK", "unsubscribe"];
const KEYS: &[&str] = &["qrscene_1", "qrscene_2", "K1", "k1", "1"];
const TYPES: &[&str] = &["text", "event", "voice", "TEXT"];
/// Regexes without a required literal of two bytes or more (`^a`, `b$`, `a.?b`, `\d+`,
/// `x(1)?`) go to the index's `RegexSet`s; the others are found by their prefixes, or by a
/// literal further in (`\d+ab`, `.?价格\d*`, `^\w{2}x1`).
const REGEXES: &[&str] = &[
    "\\\\d+ab",
    ".?价格\\\\d*",
    "^\\\\w{1,2}x1",
    "(\\\\w+订单|\\\\d价格)",
    "^a",
    "b$",
    "a.?b",
    "(?P<n>\\\\d+)",
    "^价",
    "x(1)?",
    "ab",
    "^BA(?P<n>\\\\d*)",
    "订单\\\\s*(?P<id>\\\\d+)$",
    "价格|x1",
    "(ab|ba)+",
    "k1",
];

fn word(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(list).prop_map(|w| format!("{w:?}"))
}

/// A string matcher in YAML: exact, list, or a `{prefix|contains|regex}` map.
fn matcher(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        word(list),
        prop::collection::vec(word(list), 1..3).prop_map(|ws| format!("[{}]", ws.join(", "))),
        word(list).prop_map(|w| format!("{{ prefix: {w} }}")),
        word(list).prop_map(|w| format!("{{ contains: {w} }}")),
        prop::sample::select(REGEXES).prop_map(|r| format!("{{ regex: \"{r}\" }}")),
        (word(list), prop::sample::select(REGEXES))
            .prop_map(|(w, r)| format!("[{w}, {{ contains: {w} }}, {{ regex: \"{r}\" }}]")),
    ]
}

fn criteria() -> impl Strategy<Value = String> {
    (
        prop::option::of(matcher(TYPES)),
        prop::option::of(matcher(EVENTS)),
        prop::option::of(matcher(KEYS)),
        prop::option::of(matcher(WORDS)),
        prop::option::weighted(0.2, matcher(WORDS)),
    )
        .prop_map(|(t, e, k, kw, f)| {
            let mut parts = Vec::new();
            if let Some(t) = t {
                parts.push(format!("msg_type: {t}"));
            }
            if let Some(e) = e {
                parts.push(format!("event: {e}"));
            }
            if let Some(k) = k {
                parts.push(format!("event_key: {k}"));
            }
            if let Some(kw) = kw {
                parts.push(format!("keyword: {kw}"));
            }
            if let Some(f) = f {
                parts.push(format!("fields: {{ Extra: {f} }}"));
            }
            format!("{{ {} }}", parts.join(", "))
        })
}

fn rules_yaml() -> impl Strategy<Value = String> {
    prop::collection::vec(criteria(), 1..25).prop_map(|rules| {
        let mut y = String::from("rules:\n");
        for (i, when) in rules.iter().enumerate() {
            y.push_str(&format!(
                "  - name: r{i}\n    when: {when}\n    ignore: true\n"
            ));
        }
        y
    })
}

fn cdata(s: &str) -> String {
    format!("<![CDATA[{s}]]>")
}

fn message() -> impl Strategy<Value = String> {
    let text = prop::collection::vec(prop::sample::select(WORDS), 1..3).prop_map(|w| w.concat());
    let extra = prop::option::of(prop::sample::select(WORDS)).prop_map(|e| {
        e.map(|e| format!("<Extra>{}</Extra>", cdata(e)))
            .unwrap_or_default()
    });
    prop_oneof![
        (text.clone(), prop::sample::select(TYPES), extra.clone()).prop_map(|(t, ty, x)| {
            let field = if ty.eq_ignore_ascii_case("voice") {
                "Recognition"
            } else {
                "Content"
            };
            format!("<MsgType>{ty}</MsgType><{field}>{}</{field}>{x}", cdata(&t))
        }),
        (
            prop::sample::select(EVENTS),
            prop::option::of(prop::sample::select(KEYS)),
            extra
        )
            .prop_map(|(e, k, x)| {
                let key = k
                    .map(|k| format!("<EventKey>{k}</EventKey>"))
                    .unwrap_or_default();
                format!("<MsgType>event</MsgType><Event>{e}</Event>{key}{x}")
            }),
    ]
    .prop_map(|body| {
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime>{body}</xml>"
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn indexed_find_equals_trying_every_rule(
        yaml in rules_yaml(),
        messages in prop::collection::vec(message(), 1..12),
    ) {
        let rules = compile_yaml(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        for xml in &messages {
            let message = Message::parse(xml.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let subject = Subject::new(&message);
            let indexed = rules.find(&subject).map(|m| (m.index, m.captures));
            let linear = rules.find_linear(&subject).map(|m| (m.index, m.captures));
            prop_assert_eq!(indexed, linear, "message {}\nrules:\n{}", xml, yaml);
        }
    }
}
