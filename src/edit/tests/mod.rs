//! The engine's tests, a file per change kind (here, what they share): every change kind, in block and flow files, with comments, CRLF, a
//! rule at the file's end, Chinese text, quotes and `{{…}}`; each proves that the lines the
//! change does not own are byte for byte what they were (`changed_lines`), and that the
//! edited file loads and means what was asked (`rules::load_str`, `answer`).

use std::ops::Range;

use serde_json::json;

use super::*;
use crate::answer::{answer, Outcome};
use crate::rules::RuleSet;
use crate::wire::{Message, Reply};

mod api;
mod criteria;
mod errors;
mod order;
mod reply;
mod shipped;
mod switches;

/// The frozen copy of the shipped rules and its templates (the property tests use them too).
pub(super) const SHIPPED: &str = include_str!("../../../tests/data/shipped/rules.yaml");
pub(super) const TEMPLATES: &[(&str, &str)] = &[
    (
        "welcome_qr",
        include_str!("../../../tests/data/shipped/templates/welcome_qr.hbs"),
    ),
    (
        "welcome",
        include_str!("../../../tests/data/shipped/templates/welcome.hbs"),
    ),
    (
        "price",
        include_str!("../../../tests/data/shipped/templates/price.hbs"),
    ),
    (
        "help",
        include_str!("../../../tests/data/shipped/templates/help.hbs"),
    ),
    (
        "scancode",
        include_str!("../../../tests/data/shipped/templates/scancode.hbs"),
    ),
    (
        "photos",
        include_str!("../../../tests/data/shipped/templates/photos.hbs"),
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

fn keywords(rule: &str, k: Value) -> Change {
    Change::SetKeywords {
        rule: rule.into(),
        keywords: k,
    }
}

fn new_rule(name: &str) -> Value {
    json!({"name": name, "when": {"keyword": ["退款"]}, "reply": {"text": "退款请联系客服：{{FromUserName}}"}})
}
