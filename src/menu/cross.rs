//! The menu held against the rules, both ways: a button whose key no rule answers (a tap
//! that answers nothing: a warning), and a rule's `event_key` that no button sends (a
//! note: it may be a QR scene's or another menu's). Pure: the rules are asked as a push
//! would ask them, with a made-up push of the button's event.

use super::{Kind, LoadedMenu};
use crate::rules::{excerpt, RuleSet, Subject};
use crate::wire::Message;

/// What `check` says about a menu and its rules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CrossCheck {
    /// `file:line:col: …` of each button whose key no rule answers.
    pub warnings: Vec<String>,
    /// Each rule's `event_key` no button sends.
    pub notes: Vec<String>,
}

/// The push a tap on a `kind` button with `key` makes, as WeChat sends it.
fn push_of(kind: Kind, key: &str) -> Option<Message> {
    let event = kind.event()?;
    let scan = if matches!(kind, Kind::ScancodePush | Kind::ScancodeWaitmsg) {
        "<ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>1</ScanResult></ScanCodeInfo>"
    } else {
        ""
    };
    let xml = format!(
        "<xml><ToUserName>gh_menu</ToUserName><FromUserName>o_menu</FromUserName>\
         <CreateTime>0</CreateTime><MsgType>event</MsgType><Event>{event}</Event>\
         <EventKey>{}</EventKey>{scan}</xml>",
        escape(key)
    );
    Message::parse(xml.as_bytes()).ok()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The rule that answers a tap on a `kind` button with `key` (its time window aside), if
/// one does.
pub fn rule_for<'r>(rules: &'r RuleSet, kind: Kind, key: &str) -> Option<&'r crate::rules::Rule> {
    let push = push_of(kind, key)?;
    rules.find_any_time(&Subject::at(&push, 0))
}

/// Holds `menu` against `rules` both ways.
pub fn cross_check(menu: &LoadedMenu, rules: &RuleSet) -> CrossCheck {
    let mut out = CrossCheck::default();
    for (kind, key, location) in &menu.keys {
        if !kind.wants_rule() {
            continue;
        }
        let what = format!("{} button key `{}`", kind.as_str(), excerpt::excerpt(key));
        match rule_for(rules, *kind, key) {
            None => out.warnings.push(format!(
                "{location}: no rule answers the {what}: a tap on it answers nothing"
            )),
            Some(rule) if !rule.reads_event_key() => out.warnings.push(format!(
                "{location}: no rule answers the {what} by its key; only rule `{}`, which answers any such push",
                excerpt::cut(rule.name(), excerpt::NAME_CHARS)
            )),
            Some(_) => {}
        }
    }
    let sent: Vec<&str> = menu.keys.iter().map(|(_, key, _)| key.as_str()).collect();
    for rule in rules.rules() {
        let Some((events, keys)) = rule.exact_event_keys() else {
            continue;
        };
        let menu_event = events.is_empty()
            || events
                .iter()
                .any(|e| matches!(*e, "click" | "scancode_push" | "scancode_waitmsg"));
        if !menu_event {
            continue;
        }
        for key in keys {
            // A QR code's scene or a VIEW's URL is not a button's key.
            if key.starts_with("qrscene_") || key.starts_with("http") || sent.contains(&key) {
                continue;
            }
            out.notes.push(format!(
                "rule `{}` (line {}) answers event_key `{}`, which no button of the menu sends",
                excerpt::cut(rule.name(), excerpt::NAME_CHARS),
                rule.line(),
                excerpt::excerpt(key)
            ));
        }
    }
    out
}
