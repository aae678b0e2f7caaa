//! The rules file's text edited in place: the changes a draft makes (a rule's reply,
//! keywords, `enabled`, `active`, `cooldown`; rules added, deleted, moved), each made to the
//! text so that only the edited rule's lines change, and every byte outside them (comments,
//! blank lines, other rules, quoting, `\r\n`, the final line break or its lack) stays. Pure:
//! no IO. Where a rule is comes from yaml-rust2's marked events (`tree`), never a regex;
//! every edit is read back and must mean exactly what was asked, or it is refused.
//!
//! Here: `Change`, `apply`, `apply_all`, what each change splices and means. `tree` (nodes and spans),
//! `item` (the `rules:` list, a rule's lines), `entry` (a mapping's entries), `emit` (JSON
//! as YAML), `readback` (the check), `text` (lines and splices), `diff` (for the page).

mod diff;
mod emit;
mod entry;
mod item;
mod readback;
mod text;
mod tree;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use diff::diff;

use entry::Style;
use item::{List, Place};
use text::Splice;
use tree::Node;

/// One change a draft makes (DESIGN.md's "Part 3 names": the JSON scripts send).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// The rule's `reply:` (any reply form of the rules file); an `ignore: true` goes.
    SetReply {
        rule: String,
        reply: Value,
    },
    /// The rule's `when.keyword`: `{"keyword": [..]}` (exact) and/or `{"contains": [..]}`.
    SetKeywords {
        rule: String,
        #[serde(flatten)]
        keywords: Value,
    },
    /// `false` writes `enabled: false`; `true` removes the key.
    SetEnabled {
        rule: String,
        enabled: bool,
    },
    /// The rule's `active:` window; `None` removes it.
    SetActive {
        rule: String,
        active: Option<Value>,
    },
    /// The rule's `cooldown:` (`"60m"`); `None` removes it.
    SetCooldown {
        rule: String,
        cooldown: Option<String>,
    },
    /// A whole rule, as in rules.yaml but as JSON; before the rule `before`, or (`None`)
    /// before the catch-all rules that end the file, or at its end.
    AddRule {
        rule: Value,
        before: Option<String>,
    },
    DeleteRule {
        rule: String,
    },
    /// The rule moved before the rule `before`; `None`: to the end.
    MoveRule {
        rule: String,
        before: Option<String>,
    },
    /// A template file's text: written by the caller; the rules file stays as it is.
    SetTemplate {
        file: String,
        text: String,
    },
    /// The rule test `case` expects what the draft's rules now do: worked out and written by
    /// the caller (the tests file); the rules file stays as it is.
    ExpectCase {
        case: String,
    },
}

/// Why a change cannot be made. Messages name the rule and quote at most a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("no rule named `{rule}`")]
    NoRule { rule: String },
    #[error("rule `{rule}`: the file already has a rule of that name")]
    Duplicate { rule: String },
    #[error("not a rules file: {reason}")]
    NotRules { reason: String },
    /// The file is valid, but not in a shape this engine edits without guessing.
    #[error("rule `{rule}`: cannot be edited in place: {reason}")]
    Unplaceable { rule: String, reason: String },
    /// The change itself is not one a rule can take.
    #[error("rule `{rule}`: {reason}")]
    Invalid { rule: String, reason: String },
}

/// Which change of a draft failed (`apply_all`), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change {} (`{op}`): {error}", index + 1)]
pub struct ChangeError {
    /// The change's place in the list, from 0 (the message counts from 1).
    pub index: usize,
    /// Its `op`, as the JSON names it.
    pub op: &'static str,
    pub error: EditError,
}

impl Change {
    /// The change's `op`, as the JSON names it.
    pub fn op(&self) -> &'static str {
        match self {
            Change::SetReply { .. } => "set_reply",
            Change::SetKeywords { .. } => "set_keywords",
            Change::SetEnabled { .. } => "set_enabled",
            Change::SetActive { .. } => "set_active",
            Change::SetCooldown { .. } => "set_cooldown",
            Change::AddRule { .. } => "add_rule",
            Change::DeleteRule { .. } => "delete_rule",
            Change::MoveRule { .. } => "move_rule",
            Change::SetTemplate { .. } => "set_template",
            Change::ExpectCase { .. } => "expect_case",
        }
    }

    /// The rule the change concerns (a template's file name for `set_template`).
    pub fn rule(&self) -> &str {
        match self {
            Change::SetReply { rule, .. }
            | Change::SetKeywords { rule, .. }
            | Change::SetEnabled { rule, .. }
            | Change::SetActive { rule, .. }
            | Change::SetCooldown { rule, .. }
            | Change::DeleteRule { rule }
            | Change::MoveRule { rule, .. } => rule,
            Change::AddRule { rule, .. } => rule.get("name").and_then(Value::as_str).unwrap_or("?"),
            Change::SetTemplate { file, .. } => file,
            Change::ExpectCase { case } => case,
        }
    }
}

/// `text` (a rules file) with `change` made. Only the edited rule's lines differ (for
/// `add_rule`, the new lines; for `delete_rule` and `move_rule`, the rule's lines and one
/// blank line beside them, or above the comments right above them, where blank lines
/// separate the rules: a move keeps the file's lines, in another order). `set_template`
/// returns the text as it is.
///
/// Errors: no rule of that name; a name taken (`add_rule`, or a file naming a rule twice); a
/// file that is not one YAML mapping with a `rules:` list; a rule written with anchors or
/// aliases, or laid out so that its lines cannot be told apart; a change whose values a rule
/// cannot take (an empty keyword list, a reply that is not a mapping).
pub fn apply(text: &str, change: &Change) -> Result<String, EditError> {
    if let Change::SetTemplate { .. } | Change::ExpectCase { .. } = change {
        return Ok(text.to_owned());
    }
    let name = change.rule();
    let bytes = text.as_bytes();
    if (0..bytes.len()).any(|i| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
        return Err(EditError::NotRules {
            reason: "it has line breaks of a lone `\\r`".into(),
        });
    }
    let root = tree::parse(text).map_err(|e| EditError::NotRules { reason: e.0 })?;
    let list = List::of(root.as_ref())?;
    let mut expected = readback::read(text).map_err(|reason| EditError::NotRules { reason })?;
    expect(&mut expected, change)?;
    let splices = plan(text, &list, change)?;
    if splices.is_empty() {
        return Ok(text.to_owned());
    }
    let edited = text::splice(text, &splices).ok_or_else(|| cannot(name, "its edits overlap"))?;
    match readback::read(&edited) {
        Ok(got) if got == expected => Ok(edited),
        _ => Err(cannot(name, "the edited file would not read back as asked")),
    }
}

/// `text` with every change of a draft made, in order, each to the text the ones before it
/// left; one result, or nothing. The first change that fails stops the rest, and the error
/// says which it was.
pub fn apply_all(text: &str, changes: &[Change]) -> Result<String, ChangeError> {
    let mut done = text.to_owned();
    for (index, change) in changes.iter().enumerate() {
        done = apply(&done, change).map_err(|error| ChangeError {
            index,
            op: change.op(),
            error,
        })?;
    }
    Ok(done)
}

fn cannot(rule: &str, reason: &str) -> EditError {
    EditError::Unplaceable {
        rule: rule.to_owned(),
        reason: reason.to_owned(),
    }
}

fn invalid(rule: &str, reason: impl Into<String>) -> EditError {
    EditError::Invalid {
        rule: rule.to_owned(),
        reason: reason.into(),
    }
}

/// The splices that make `change` to `text`.
fn plan(text: &str, list: &List<'_>, change: &Change) -> Result<Vec<Splice>, EditError> {
    let name = change.rule();
    let at = |r: Result<Vec<Splice>, String>| r.map_err(|reason| cannot(name, &reason));
    let target = match change {
        Change::AddRule { .. } | Change::SetTemplate { .. } | Change::ExpectCase { .. } => None,
        _ => Some(editable(list.find(name)?, name, text)?),
    };
    let step = target
        .and_then(|t| item::step_in(text, t))
        .or_else(|| list.items.iter().find_map(|r| item::step_in(text, r)))
        .unwrap_or(2);
    let st = Style {
        text,
        eol: text::line_break(text),
        step,
    };
    let Some(rule) = target else {
        return match change {
            Change::AddRule { rule, before } => add_rule(st, list, rule, before.as_deref()),
            _ => Ok(Vec::new()),
        };
    };
    match change {
        Change::SetReply { reply, .. } => at(set_reply(st, rule, reply)),
        Change::SetKeywords { keywords, .. } => {
            let matcher = keyword_matcher(name, keywords)?;
            at(set_keywords(st, rule, &matcher))
        }
        Change::SetEnabled { enabled: false, .. } => {
            at(entry::set(st, rule, "enabled", &json!(false), &["name"]))
        }
        Change::SetEnabled { enabled: true, .. } => at(entry::remove(st, rule, "enabled")),
        Change::SetActive {
            active: Some(window),
            ..
        } => at(entry::set(
            st,
            rule,
            "active",
            window,
            &["when", "enabled", "name"],
        )),
        Change::SetActive { active: None, .. } => at(entry::remove(st, rule, "active")),
        Change::SetCooldown {
            cooldown: Some(c), ..
        } => {
            let after = ["active", "when", "enabled", "name"];
            at(entry::set(st, rule, "cooldown", &json!(c), &after))
        }
        Change::SetCooldown { cooldown: None, .. } => at(entry::remove(st, rule, "cooldown")),
        Change::DeleteRule { .. } => {
            let lines = block_lines(text, list, rule, name)?;
            let first = list.items.first().is_some_and(|f| f.start == rule.start);
            Ok(item::removal(text, &lines, first).splices)
        }
        Change::MoveRule { before, .. } => move_rule(st, list, rule, name, before.as_deref()),
        Change::AddRule { .. } | Change::SetTemplate { .. } | Change::ExpectCase { .. } => {
            Ok(Vec::new())
        }
    }
}

/// The rule `rule`, if the engine edits it: a mapping without anchors or aliases.
fn editable<'n>(rule: &'n Node, name: &str, text: &str) -> Result<&'n Node, EditError> {
    if rule.tangled {
        let reason = format!(
            "it uses YAML anchors or aliases (line {}: `{}`)",
            text::line_number(text, rule.start),
            text::excerpt(text, rule.start)
        );
        return Err(cannot(name, &reason));
    }
    if rule.entries().is_none() {
        return Err(cannot(name, "it is not a mapping"));
    }
    Ok(rule)
}

/// The lines of `rule`, whose list must be a block list (`- …` lines).
fn block_lines(
    text: &str,
    list: &List<'_>,
    rule: &Node,
    name: &str,
) -> Result<item::Lines, EditError> {
    if list.entry.value.is_flow() {
        return Err(cannot(
            name,
            "the `rules:` list is written in flow style ([…])",
        ));
    }
    item::lines(text, rule).map_err(|reason| cannot(name, &reason))
}

fn set_reply(st: Style<'_>, rule: &Node, reply: &Value) -> Result<Vec<Splice>, String> {
    match (rule.entry("reply"), rule.entry("ignore")) {
        (Some(_), ignore) => {
            let mut s = entry::set(st, rule, "reply", reply, &[])?;
            if ignore.is_some() {
                s.extend(entry::remove(st, rule, "ignore")?);
            }
            Ok(s)
        }
        (None, Some(ignore)) => {
            // `ignore: true` becomes the reply, where it was.
            let mut s = vec![Splice::new(ignore.key.start, ignore.key.end, "reply")];
            s.extend(entry::replace(st, rule, ignore, reply)?);
            Ok(s)
        }
        (None, None) => entry::set(st, rule, "reply", reply, &[]),
    }
}

fn set_keywords(st: Style<'_>, rule: &Node, matcher: &Value) -> Result<Vec<Splice>, String> {
    match rule.entry("when") {
        Some(when) if when.value.entries().is_some() => {
            let after = ["event_key", "event", "msg_type"];
            entry::set(st, &when.value, "keyword", matcher, &after)
        }
        Some(when) => entry::replace(st, rule, when, &json!({ "keyword": matcher })),
        None => entry::set(
            st,
            rule,
            "when",
            &json!({ "keyword": matcher }),
            &["enabled", "name"],
        ),
    }
}

fn add_rule(
    st: Style<'_>,
    list: &List<'_>,
    rule: &Value,
    before: Option<&str>,
) -> Result<Vec<Splice>, EditError> {
    let name = new_rule_name(rule)?;
    match list.find(name) {
        Err(EditError::NoRule { .. }) => {}
        Ok(_) | Err(EditError::Duplicate { .. }) => {
            return Err(EditError::Duplicate { rule: name.into() })
        }
        Err(e) => return Err(e),
    }
    let text = st.text;
    let place = match (before, list.first_catch_all(), list.items.last()) {
        (Some(b), ..) => Place::Before(block_lines(text, list, list.find(b)?, name)?),
        (None, Some(c), _) => Place::Before(block_lines(text, list, c, name)?),
        (None, None, Some(last)) => Place::End(block_lines(text, list, last, name)?),
        (None, None, None) => Place::Empty,
    };
    let (dash, key_offset) = list.layout(text);
    let lines = item::rule_text(st, rule, dash, key_offset, list.flow_rules());
    item::insert(st, list, &place, &lines, list.spaced(text))
        .map_err(|reason| cannot(name, &reason))
}

fn move_rule(
    st: Style<'_>,
    list: &List<'_>,
    rule: &Node,
    name: &str,
    before: Option<&str>,
) -> Result<Vec<Splice>, EditError> {
    let text = st.text;
    let index = |n: &Node| list.items.iter().position(|r| r.start == n.start);
    let from = index(rule);
    let to = match before {
        Some(b) => index(list.find(b)?),
        None => Some(list.items.len()),
    };
    // Already there: before itself, before the rule after it, or last and moved to the end.
    if from == to || from.map(|f| f + 1) == to {
        return Ok(Vec::new());
    }
    let lines = block_lines(text, list, rule, name)?;
    let place = match before {
        Some(b) => Place::Before(block_lines(text, list, list.find(b)?, name)?),
        None => match list.items.last() {
            Some(last) => Place::End(block_lines(text, list, last, name)?),
            None => return Ok(Vec::new()),
        },
    };
    let own = &text[lines.first..lines.end];
    let own = own.strip_suffix('\n').unwrap_or(own);
    let own = own.strip_suffix('\r').unwrap_or(own);
    let first = list.items.first().is_some_and(|f| f.start == rule.start);
    // The rule takes its spacing along: a blank line beside it where one went with it.
    let removal = item::removal(text, &lines, first);
    let mut splices = item::insert(st, list, &place, own, removal.blank)
        .map_err(|reason| cannot(name, &reason))?;
    splices.extend(removal.splices);
    Ok(splices)
}

/// The name of a rule given whole, which must be a mapping with a non-empty `name`.
fn new_rule_name(rule: &Value) -> Result<&str, EditError> {
    let name = rule.get("name").and_then(Value::as_str).unwrap_or("");
    if !rule.is_object() || name.trim().is_empty() {
        return Err(invalid(
            if name.is_empty() { "?" } else { name },
            "a new rule must be a mapping with a `name`",
        ));
    }
    Ok(name)
}

/// `{"keyword": [..]}` and/or `{"contains": [..]}` as a `keyword:` matcher: the list of
/// exact keywords, `{ contains: [..] }`, or both in one list.
fn keyword_matcher(rule: &str, keywords: &Value) -> Result<Value, EditError> {
    let words = |key: &str| -> Result<Vec<Value>, EditError> {
        let list = match keywords.get(key) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::String(s)) => vec![Value::String(s.clone())],
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(invalid(rule, format!("`{key}` must be a list of texts"))),
        };
        if list
            .iter()
            .any(|w| w.as_str().is_none_or(|w| w.trim().is_empty()))
        {
            return Err(invalid(
                rule,
                format!("`{key}` must be a list of texts, none empty"),
            ));
        }
        Ok(list)
    };
    let unknown = keywords.as_object().map(|o| {
        o.keys()
            .filter(|k| !matches!(k.as_str(), "keyword" | "contains"))
            .count()
    });
    if unknown != Some(0) {
        return Err(invalid(
            rule,
            "keywords are given as `keyword` and/or `contains` lists",
        ));
    }
    let (exact, contains) = (words("keyword")?, words("contains")?);
    Ok(match (exact.is_empty(), contains.is_empty()) {
        (true, true) => return Err(invalid(rule, "a rule's keywords cannot be empty")),
        (false, true) => Value::Array(exact),
        (true, false) => json!({ "contains": contains }),
        (false, false) => {
            let mut all = exact;
            all.push(json!({ "contains": contains }));
            Value::Array(all)
        }
    })
}

/// What `change` means, made to the file's JSON: what the edited text must read back as.
fn expect(doc: &mut Value, change: &Change) -> Result<(), EditError> {
    let name = change.rule();
    let need_map = |v: &Value, what: &str| match v {
        Value::Object(o) if !o.is_empty() => Ok(()),
        _ => Err(invalid(name, format!("{what} must be a non-empty mapping"))),
    };
    if let Change::AddRule { rule, before } = change {
        new_rule_name(rule)?;
        let rules = readback::rules_mut(doc).ok_or_else(|| cannot(name, "no `rules:` list"))?;
        let at = match before {
            Some(b) => position(rules, b).ok_or_else(|| EditError::NoRule { rule: b.clone() })?,
            None => catch_alls_start(rules),
        };
        rules.insert(at, rule.clone());
        return Ok(());
    }
    if let Change::DeleteRule { .. } | Change::MoveRule { .. } = change {
        let before = match change {
            Change::MoveRule { before, .. } => Some(before.as_deref()),
            _ => None,
        };
        if before == Some(Some(name)) {
            return Ok(());
        }
        let rules = readback::rules_mut(doc).ok_or_else(|| cannot(name, "no `rules:` list"))?;
        let from = position(rules, name).ok_or_else(|| EditError::NoRule { rule: name.into() })?;
        let moved = rules.remove(from);
        if let Some(before) = before {
            let to = match before {
                Some(b) => {
                    position(rules, b).ok_or_else(|| EditError::NoRule { rule: b.into() })?
                }
                None => rules.len(),
            };
            rules.insert(to, moved);
        }
        return Ok(());
    }
    let Some(rule) = readback::rule_mut(doc, name) else {
        return match change {
            Change::SetTemplate { .. } | Change::ExpectCase { .. } => Ok(()),
            _ => Err(EditError::NoRule { rule: name.into() }),
        };
    };
    match change {
        Change::SetReply { reply, .. } => {
            need_map(reply, "a reply")?;
            rule.remove("ignore");
            rule.insert("reply".into(), reply.clone());
        }
        Change::SetKeywords { keywords, .. } => {
            let matcher = keyword_matcher(name, keywords)?;
            match rule.get_mut("when") {
                Some(Value::Object(when)) => {
                    when.insert("keyword".into(), matcher);
                }
                _ => {
                    rule.insert("when".into(), json!({ "keyword": matcher }));
                }
            }
        }
        Change::SetEnabled { enabled, .. } => {
            set_or_remove(rule, "enabled", (!enabled).then_some(Value::Bool(false)))
        }
        Change::SetActive { active, .. } => {
            if let Some(window) = active {
                need_map(window, "an `active` window")?;
            }
            set_or_remove(rule, "active", active.clone());
        }
        Change::SetCooldown { cooldown, .. } => {
            if cooldown.as_deref().is_some_and(|c| c.trim().is_empty()) {
                return Err(invalid(name, "a cooldown cannot be empty"));
            }
            set_or_remove(rule, "cooldown", cooldown.clone().map(Value::String));
        }
        _ => {}
    }
    Ok(())
}

fn set_or_remove(rule: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => rule.insert(key.into(), v),
        None => rule.remove(key),
    };
}

fn position(rules: &[Value], name: &str) -> Option<usize> {
    rules
        .iter()
        .position(|r| r.get("name").and_then(Value::as_str) == Some(name))
}

/// Where the catch-all rules that end the list start (see `item::List::first_catch_all`).
fn catch_alls_start(rules: &[Value]) -> usize {
    let catch_all = |r: &Value| match r.get("when") {
        _ if !r.is_object() => false,
        None | Some(Value::Null) => true,
        Some(Value::Object(when)) => when.keys().all(|k| k == "msg_type" || k == "event"),
        Some(_) => false,
    };
    rules.len() - rules.iter().rev().take_while(|r| catch_all(r)).count()
}
