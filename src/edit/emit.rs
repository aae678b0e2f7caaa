//! JSON values written as YAML that reads back as exactly that JSON. Strings are plain where
//! nothing in them could mean something else, single-quoted when they hold backslashes (a
//! regex reads as written), double-quoted otherwise; a text of several lines is a literal
//! block (`|-`) where one can hold it exactly. Collections are flow (`{ text: … }`) when they
//! fit on their line, block otherwise. Keys come in the order the rules file reads best.

use serde_json::Value;

/// A line may be this long (in characters) before a value goes to block style.
const WIDTH: usize = 100;

/// Keys in the order they are written; keys not listed follow, in alphabetical order.
const KEY_ORDER: &[&str] = &[
    // A rule.
    "name",
    "enabled",
    "when",
    "active",
    "cooldown",
    "call",
    "late",
    "set",
    "clear",
    "reply",
    "ignore",
    "on_error",
    "send", // Its criteria.
    "msg_type",
    "event",
    "event_key",
    "keyword",
    "status",
    "fields",
    "state",
    "choice",
    // String matchers.
    "exact",
    "prefix",
    "contains",
    "regex", // Replies.
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "transfer_customer_service",
    "one_of",
    "template",
    "file",
    "media_id",
    "title",
    "description",
    "url",
    "pic_url",
    "music_url",
    "hq_music_url",
    "thumb_media_id",
    "kf_account",
    "choices",
    "id", // Windows, calls.
    "from",
    "until",
    "hours",
    "weekdays",
    "timezone",
    "method",
    "timeout",
    "headers",
    "concurrency",
    "after",
    "via",
    "keep",
    "pickup",
    "ttl",
    "vars",
    "on_expire",
];

/// A value as written after its key's `:`: `head` goes on the key's line (` { text: hi }`,
/// ` |-`, or nothing), `body` on the lines after it, each already indented.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Emitted {
    pub(super) head: String,
    pub(super) body: Vec<String>,
}

impl Emitted {
    pub(super) fn is_inline(&self) -> bool {
        self.body.is_empty()
    }
}

/// How a collection at the top of a value is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Layout {
    /// Flow when it fits on its line, block otherwise.
    Fit,
    /// Block (the value it replaces was block): its children still fit where they can.
    Block,
    /// Flow, on one line (inside a flow collection, or a flow-style file).
    Flow,
}

/// The entries of a JSON object in writing order.
pub(super) fn ordered(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |k: &str| KEY_ORDER.iter().position(|o| *o == k).unwrap_or(usize::MAX);
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then_with(|| a.0.cmp(b.0)));
    entries
}

/// `value` written after a `:` or a `- ` that has taken `used` characters of its line; its
/// own lines, if it needs them, are indented by `col`, their children by `col + step`.
pub(super) fn value(
    value: &Value,
    col: usize,
    used: usize,
    step: usize,
    layout: Layout,
) -> Emitted {
    let inline = |s: String| Emitted {
        head: format!(" {s}"),
        body: Vec::new(),
    };
    match value {
        Value::String(s) if layout != Layout::Flow && literal_fits(s) => Emitted {
            head: format!(" {}", literal_header(s)),
            body: literal_lines(s, col),
        },
        Value::Array(a) if a.is_empty() => inline("[]".into()),
        Value::Object(o) if o.is_empty() => inline("{}".into()),
        Value::Array(_) | Value::Object(_) => {
            let flat = flow(value);
            let fits = used + 1 + flat.chars().count() <= WIDTH && !has_multiline(value);
            if layout == Layout::Flow || (layout == Layout::Fit && fits) {
                inline(flat)
            } else {
                Emitted {
                    head: String::new(),
                    body: block(value, col, step),
                }
            }
        }
        _ => inline(flow(value)),
    }
}

/// A collection in block style, its lines indented by `col`; scalars and collections that
/// fit stay on their key's or dash's line.
pub(super) fn block(value: &Value, col: usize, step: usize) -> Vec<String> {
    let pad = " ".repeat(col);
    let mut lines = Vec::new();
    match value {
        Value::Object(map) => {
            for (k, v) in ordered(map) {
                let lead = format!("{pad}{}:", scalar(k));
                let used = lead.chars().count();
                let e = self::value(v, col + step, used, step, Layout::Fit);
                lines.push(format!("{lead}{}", e.head));
                lines.extend(e.body);
            }
        }
        Value::Array(items) => {
            for item in items {
                // An item's own lines sit two columns in, past its `- `.
                let inner = col + 2;
                let e = self::value(item, inner, inner, step, Layout::Fit);
                if e.is_inline() || !e.head.is_empty() {
                    lines.push(format!("{pad}-{}", e.head));
                    lines.extend(e.body);
                } else {
                    let mut body = e.body.into_iter();
                    if let Some(first) = body.next() {
                        lines.push(format!("{pad}- {}", &first[inner.min(first.len())..]));
                    }
                    lines.extend(body);
                }
            }
        }
        _ => lines.push(format!("{pad}{}", flow(value))),
    }
    lines
}

/// `value` in flow style, on one line.
pub(super) fn flow(value: &Value) -> String {
    match value {
        Value::String(s) => scalar(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => {
            let parts: Vec<String> = ordered(map)
                .into_iter()
                .map(|(k, v)| format!("{}: {}", scalar(k), flow(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        // Numbers, booleans and null read back as themselves.
        other => other.to_string(),
    }
}

fn has_multiline(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\n'),
        Value::Array(items) => items.iter().any(has_multiline),
        Value::Object(map) => map.values().any(has_multiline),
        _ => false,
    }
}

/// A string as a YAML scalar on one line.
pub(super) fn scalar(s: &str) -> String {
    if plain_safe(s) {
        s.to_owned()
    } else if s.contains('\\')
        && s.chars()
            .all(|c| printable(c) && c != '\t' && c != '\n' && c != '\r')
    {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        double_quoted(s)
    }
}

/// Whether `s` reads back as itself, a string, when written bare, in block or flow context.
/// Stricter than YAML needs: no indicator anywhere that could start or end something, no
/// leading digit or sign (numbers), none of the words any YAML version reads as a boolean
/// or null.
fn plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let last = s.chars().next_back().unwrap_or(first);
    if first.is_whitespace() || last.is_whitespace() || !number_safe(s) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`+.<=~\\".contains(first) {
        return false;
    }
    if s.chars()
        .any(|c| !printable(c) || c.is_control() || ":#,[]{}".contains(c))
    {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    !matches!(
        lower.as_str(),
        "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    )
}

/// Whether `s`, if it starts with a digit, cannot be read as a number, a date or a time: its
/// digits are followed by a letter that no number notation uses there (`60m`, `1h`, `2026年`
/// are text; `1e5`, `0x1F`, `1_000`, `2026-11-30`, `8.5` are not taken bare).
fn number_safe(s: &str) -> bool {
    let tail = s.trim_start_matches(|c: char| c.is_ascii_digit());
    if tail.len() == s.len() {
        return true;
    }
    !s.contains(['.', '_', ':'])
        && tail
            .chars()
            .next()
            .is_some_and(|c| (c.is_ascii_alphabetic() && !"eEoObBxX".contains(c)) || !c.is_ascii())
}

/// Whether YAML lets `c` appear in a file as it is.
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}')
}

/// `s` double-quoted: JSON's escapes are YAML's, and what YAML cannot hold as it is (DEL,
/// C1 controls, line and paragraph separators, a byte-order mark) is escaped too.
fn double_quoted(s: &str) -> String {
    let json = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if printable(c) && !matches!(c, '\u{7f}'..='\u{9f}') {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{:04x}", c as u32));
        }
    }
    out
}

/// Whether a literal block (`|-`, `|`) holds `s` exactly: several lines, at most one final
/// line break, no line that starts the text with a blank or ends with one (a first line's
/// indentation would be read as the block's; trailing blanks are lost by editors), nothing
/// but printable characters and tabs.
fn literal_fits(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    body.contains('\n')
        && !body.ends_with('\n')
        && !body.starts_with([' ', '\t', '\n'])
        && s.chars()
            .all(|c| printable(c) && c != '\r' && c != '\u{85}')
        && body.split('\n').all(|l| !l.ends_with([' ', '\t']))
}

fn literal_header(s: &str) -> &'static str {
    if s.ends_with('\n') {
        "|"
    } else {
        "|-"
    }
}

fn literal_lines(s: &str, col: usize) -> Vec<String> {
    let pad = " ".repeat(col);
    let body = s.strip_suffix('\n').unwrap_or(s);
    body.split('\n')
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads `yaml` back as JSON (through the same reader the engine checks edits with).
    fn read(yaml: &str) -> Value {
        super::super::readback::read(yaml).unwrap()
    }

    #[test]
    fn scalars_read_back_as_the_strings_given() {
        for s in [
            "价格",
            "本周全场 8 折，回复「价格」查看价目表。",
            "{{FromUserName}}",
            "欢迎 {{FromUserName}}",
            "a: b",
            "a #b",
            "a#b",
            "#x",
            "it's",
            "say \"hi\"",
            " lead",
            "trail ",
            "1",
            "1.5",
            "0x1F",
            "-1",
            "+1",
            ".5",
            ".inf",
            "yes",
            "No",
            "ON",
            "null",
            "~",
            "true",
            "",
            "-",
            "- a",
            "? x",
            "a,b",
            "[x]",
            "&a",
            "*a",
            "!t",
            "|",
            ">",
            "%x",
            "@x",
            "`x",
            "'",
            "\"",
            "\\",
            "^订单\\s*(\\d+)$",
            "tab\there",
            "line\nbreak",
            "cr\rlf",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "\u{feff}x",
            "\u{0}",
            "emoji 👍",
            "<<",
            "=",
            "2026-11-30",
            "12:30",
            "https://example.com/a?b=c#d",
            "a\\'b",
            "60m",
            "1h",
            "2026年",
            "8 折",
            "1e5",
            "1E5",
            "0x1F",
            "0o17",
            "0b1",
            "1_000",
            "8.5",
            "1.",
            "12e",
        ] {
            let yaml = format!("a: {}\nb: [{}]\n", scalar(s), scalar(s));
            assert_eq!(read(&yaml), json!({"a": s, "b": [s]}), "{s:?} as {yaml:?}");
        }
        assert_eq!(scalar("价格"), "价格");
        assert_eq!(scalar("{{X}}"), "\"{{X}}\"");
        assert_eq!(scalar("^a\\d{6}$"), "'^a\\d{6}$'");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("60m"), "60m");
        assert_eq!(scalar("1e5"), "\"1e5\"");
    }

    #[test]
    fn multi_line_texts_are_literal_blocks_where_exact() {
        for s in [
            "one\ntwo",
            "one\ntwo\n",
            "one\n\n  indented\ttab\nlast",
            "{{FromUserName}}: #1\n- item",
            // These cannot be literal blocks: they are double-quoted.
            "one\ntwo\n\n",
            " lead\ntwo",
            "\nlead",
            "trail \ntwo",
            "cr\r\nlf",
        ] {
            let e = value(&json!(s), 4, 7, 2, Layout::Fit);
            let yaml = format!("a:\n  text:{}\n{}\nb: 1\n", e.head, e.body.join("\n"));
            assert_eq!(
                read(&yaml),
                json!({"a": {"text": s}, "b": 1}),
                "{s:?} as {yaml:?}"
            );
        }
        let e = value(&json!("one\ntwo"), 6, 10, 2, Layout::Fit);
        assert_eq!(e.head, " |-");
        assert_eq!(e.body, ["      one", "      two"]);
        let e = value(&json!("one\ntwo"), 6, 10, 2, Layout::Flow);
        assert_eq!(e.head, " \"one\\ntwo\"");
    }

    #[test]
    fn collections_fit_or_go_to_block() {
        let reply = json!({"text": "你好"});
        assert_eq!(value(&reply, 6, 10, 2, Layout::Fit).head, " { text: 你好 }");
        assert_eq!(
            value(&reply, 6, 10, 2, Layout::Block).body,
            ["      text: 你好"]
        );
        let long = json!({"one_of": [{"text": "a".repeat(50)}, {"text": "b".repeat(50)}]});
        let e = value(&long, 6, 10, 2, Layout::Fit);
        assert_eq!(e.head, "");
        assert_eq!(
            e.body,
            [
                "      one_of:".to_owned(),
                format!("        - {{ text: {} }}", "a".repeat(50)),
                format!("        - {{ text: {} }}", "b".repeat(50)),
            ]
        );
        let news = json!({"news": [{"title": "标题", "url": "https://e.com/x", "description": "d".repeat(80), "pic_url": "p"}]});
        let e = value(&news, 2, 6, 2, Layout::Fit);
        assert_eq!(
            e.body,
            [
                "  news:".to_owned(),
                "    - title: 标题".into(),
                format!("      description: {}", "d".repeat(80)),
                "      url: \"https://e.com/x\"".into(),
                "      pic_url: p".into(),
            ]
        );
        let yaml = format!("reply:{}\n{}\n", e.head, e.body.join("\n"));
        assert_eq!(read(&yaml), json!({ "reply": news }));
        assert_eq!(
            flow(&json!({"b": 1, "a": [true, null], "text": "x"})),
            "{ text: x, a: [true, null], b: 1 }"
        );
    }
}
