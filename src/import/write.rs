//! The rules file `wxrules import` writes, by hand: every string JSON-quoted (which YAML
//! reads as written), comments where a person must look, names made unique.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::{Imported, Rule};

/// A console text as a template that renders to itself: `{{` would start a handlebars
/// expression, so it is escaped (`\{{`).
pub(super) fn literal(text: &str) -> String {
    text.replace("{{", "\\{{")
}

/// A YAML scalar that reads back as `text`: JSON's double-quoted form, which YAML accepts,
/// with the characters YAML refuses or folds in a quoted scalar (DEL, C1 controls, NEL, the
/// line and paragraph separators, U+FFFE/U+FFFF) escaped too.
pub(super) fn quote(text: &str) -> String {
    let json = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        let refused = matches!(
            c,
            '\u{7F}'..='\u{9F}' | '\u{2028}' | '\u{2029}' | '\u{FFFE}' | '\u{FFFF}'
        );
        if refused {
            let _ = write!(out, "\\u{:04X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Text from the export put in a comment: on one line, without control characters.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// `name`, or `name-2`, `name-3`…: rule names are unique.
pub(super) fn unique(name: &str, names: &mut HashSet<String>) -> String {
    let base = if name.trim().is_empty() {
        "rule"
    } else {
        name.trim()
    };
    let mut candidate = base.to_owned();
    let mut n = 1;
    while names.contains(&candidate) {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    names.insert(candidate.clone());
    candidate
}

pub(super) fn write(rules: &[Rule]) -> Imported {
    let mut out = String::from(
        "# yaml-language-server: $schema=rules.schema.json\n\
         # Imported from the MP console's auto-replies by `wxrules import`. Review it, then\n\
         # `wxrules check` (it warns of each temporary media id, whose `expires:` says when\n\
         # WeChat deletes it) and `wxrules test` the cases written with it.\n\
         # Keyword rules come first, in the order the export lists them; the first that\n\
         # matches answers. Rules switched off in the console are here, commented out.\n\
         rules:\n",
    );
    let mut cases =
        String::from("# Cases for the imported rules: `wxrules test` runs them.\ncases:\n");
    let mut disabled = 0;
    for rule in rules {
        out.push('\n');
        for line in &rule.comment {
            let _ = writeln!(out, "  # {}", comment(line));
        }
        for note in &rule.notes {
            let _ = writeln!(out, "  # NOTE: {}", comment(note));
        }
        let prefix = if rule.enabled {
            "  "
        } else {
            disabled += 1;
            out.push_str("  # Switched off in the console: uncomment to use.\n");
            "  # "
        };
        let _ = writeln!(out, "{prefix}- name: {}", quote(&rule.name));
        let _ = writeln!(out, "{prefix}  when: {}", rule.when);
        if let Some(cooldown) = rule.cooldown {
            let _ = writeln!(out, "{prefix}  cooldown: {cooldown}");
        }
        let _ = writeln!(out, "{prefix}  reply: {}", rule.reply);
        if !rule.send.is_empty() {
            let _ = writeln!(out, "{prefix}  send:");
            for send in &rule.send {
                let _ = writeln!(out, "{prefix}    - {}", send.yaml);
            }
        }
        if let (true, Some(case)) = (rule.enabled, &rule.case) {
            let _ = writeln!(
                cases,
                "  - name: {}\n    {case}\n    rule: {}",
                quote(&format!("imported: {}", rule.name)),
                quote(&rule.name)
            );
        }
    }
    if rules.iter().all(|r| !r.enabled) {
        out.push_str("  []\n");
    }
    if !rules.iter().any(|r| r.enabled && r.case.is_some()) {
        cases.push_str("  []\n");
    }
    Imported {
        rules: out,
        cases,
        rule_count: rules.len(),
        disabled,
        media: Vec::new(),
    }
}
