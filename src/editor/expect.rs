//! A rule test that fails on a draft, made to expect what the draft now does (the page's
//! "take the new reply as its expectation"): the case's `rule`, `reply_contains`,
//! `reply_type` and `ignore` lines in the tests file are replaced by what was observed, in
//! place; every other line of the file stays as it is. Only cases written as block mappings
//! (`- name: …` then a key a line) are edited; others are refused, to be edited by hand.

use crate::cases::Observed;

/// The keys of a case that say what must happen.
const EXPECTATIONS: [&str; 4] = ["rule", "reply_contains", "reply_type", "ignore"];

/// Why a case's expectation cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpectError {
    #[error("the tests file has no case named `{0}`")]
    NoCase(String),
    #[error("the tests file names case `{0}` twice")]
    Twice(String),
    #[error("case `{case}`: {reason}; change it in the tests file by hand")]
    Layout { case: String, reason: String },
}

/// `text` (a tests file) with case `name` expecting `observed`.
pub fn take(text: &str, name: &str, observed: &Observed) -> Result<String, ExpectError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let ending = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let starts: Vec<(usize, usize)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let (indent, value) = case_start(line)?;
            (value == name).then_some((i, indent))
        })
        .collect();
    let (start, indent) = match starts.as_slice() {
        [] => return Err(ExpectError::NoCase(name.to_owned())),
        [one] => *one,
        _ => return Err(ExpectError::Twice(name.to_owned())),
    };
    let layout = |reason: &str| ExpectError::Layout {
        case: name.to_owned(),
        reason: reason.to_owned(),
    };
    // The case's lines: up to the next line as far left as its dash (another case, or a
    // key of the file), blank and comment lines after its last key left out.
    let key_indent = indent + 2;
    let mut end = start + 1;
    let mut last_key = start;
    while end < lines.len() {
        let line = lines[end].trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        let at = line.len() - trimmed.len();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            if at <= indent {
                break;
            }
            last_key = end;
        }
        end += 1;
    }
    let mut kept: Vec<String> = Vec::new();
    // Whether the last key line was an expectation (left out, with what goes on from it).
    let mut in_expectation = false;
    for line in &lines[start + 1..=last_key] {
        let bare = line.trim_end_matches(['\n', '\r']);
        let trimmed = bare.trim_start();
        let at = bare.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') || at > key_indent {
            if in_expectation && !trimmed.is_empty() && !trimmed.starts_with('#') {
                return Err(layout("an expectation goes on over several lines"));
            }
            kept.push((*line).to_owned());
            continue;
        }
        let key = trimmed.split(':').next().unwrap_or("").trim();
        in_expectation = at == key_indent && EXPECTATIONS.contains(&key);
        if in_expectation {
            let value = trimmed.get(key.len() + 1..).unwrap_or("").trim();
            if value.is_empty() || value.starts_with(['|', '>', '&', '*']) {
                return Err(layout(&format!("its `{key}` takes more than its line")));
            }
            continue;
        }
        kept.push((*line).to_owned());
    }
    let pad = " ".repeat(key_indent);
    let mut added = vec![format!(
        "{pad}rule: {}{ending}",
        observed.rule.as_deref().map_or("null".to_owned(), quoted)
    )];
    match (&observed.msg_type, &observed.text) {
        (None, _) => added.push(format!("{pad}ignore: true{ending}")),
        (Some(_), Some(text)) => {
            added.push(format!("{pad}reply_contains: {}{ending}", quoted(text)))
        }
        (Some(kind), None) => added.push(format!("{pad}reply_type: {kind}{ending}")),
    }
    let mut out = String::with_capacity(text.len() + 128);
    for line in &lines[..=start] {
        out.push_str(line);
    }
    if !out.ends_with('\n') {
        out.push_str(ending);
    }
    for line in &kept {
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str(ending);
        }
    }
    for line in &added {
        out.push_str(line);
    }
    for line in &lines[last_key + 1..] {
        out.push_str(line);
    }
    Ok(out)
}

/// A `- name: VALUE` line: its dash's column and the name.
fn case_start(line: &str) -> Option<(usize, String)> {
    let bare = line.trim_end_matches(['\n', '\r']);
    let trimmed = bare.trim_start();
    let indent = bare.len() - trimmed.len();
    let rest = trimmed.strip_prefix("- ")?.trim_start();
    let value = rest.strip_prefix("name:")?.trim();
    let value = match value.find(" #") {
        Some(at) if !value.starts_with(['"', '\'']) => value[..at].trim(),
        _ => value,
    };
    let name = serde_yaml::from_str::<String>(value).unwrap_or_else(|_| value.to_owned());
    Some((indent, name))
}

/// `s` as a YAML double-quoted scalar (JSON's string syntax is one).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# cases\ncases:\n  - name: price\n    text: 价格\n    rule: price\n    reply_contains: 本周价格   # the header\n\n  # the like menu\n  - name: like\n    event: CLICK\n    ignore: false\n";

    fn seen(rule: Option<&str>, kind: Option<&str>, text: Option<&str>) -> Observed {
        Observed {
            rule: rule.map(str::to_owned),
            msg_type: kind.map(str::to_owned),
            text: text.map(str::to_owned),
        }
    }

    #[test]
    fn a_case_takes_the_new_reply_and_nothing_else_changes() {
        let after = take(
            FILE,
            "price",
            &seen(Some("price"), Some("text"), Some("价格表 \"新\"\n{{x}}")),
        )
        .unwrap();
        assert_eq!(
            after,
            "# cases\ncases:\n  - name: price\n    text: 价格\n    rule: \"price\"\n    reply_contains: \"价格表 \\\"新\\\"\\n{{x}}\"\n\n  # the like menu\n  - name: like\n    event: CLICK\n    ignore: false\n"
        );
        let cases: serde_yaml::Value = serde_yaml::from_str(&after).unwrap();
        assert_eq!(cases["cases"][0]["reply_contains"], "价格表 \"新\"\n{{x}}");
        // The last case, an ignore, a news reply.
        let after = take(FILE, "like", &seen(None, None, None)).unwrap();
        assert!(
            after.ends_with("  - name: like\n    event: CLICK\n    rule: null\n    ignore: true\n"),
            "{after}"
        );
        let after = take(FILE, "like", &seen(Some("menu"), Some("news"), None)).unwrap();
        assert!(
            after.ends_with("    rule: \"menu\"\n    reply_type: news\n"),
            "{after}"
        );
    }

    #[test]
    fn cases_it_cannot_place_are_refused() {
        let observed = seen(Some("r"), Some("text"), Some("x"));
        assert_eq!(
            take(FILE, "nope", &observed),
            Err(ExpectError::NoCase("nope".into()))
        );
        let twice = format!("{FILE}  - name: like\n    text: x\n");
        assert_eq!(
            take(&twice, "like", &observed),
            Err(ExpectError::Twice("like".into()))
        );
        let folded = "cases:\n  - name: a\n    text: x\n    reply_contains: >\n      long\n";
        assert!(matches!(
            take(folded, "a", &observed),
            Err(ExpectError::Layout { .. })
        ));
        let crlf = FILE.replace('\n', "\r\n");
        let after = take(&crlf, "price", &observed).unwrap();
        assert!(!after.replace("\r\n", "").contains('\n'), "{after:?}");
    }
}
