//! What an error may quote of a file: a short excerpt, control characters escaped. A rules
//! or config file can be anything an operator pointed at (a token file, `/etc/passwd`, a
//! 20 MB line), and its errors go to the log, the reload answer, the page and `/healthz`:
//! serde's messages, which embed the values they met, are cut down here, and every error
//! of a load is bounded before it leaves `rules`. Pure string work, no IO.

use std::fmt::Write as _;

use super::RuleError;

/// The most characters of a value from a file an error quotes.
pub(crate) const EXCERPT_CHARS: usize = 40;
/// The most characters of a rule's (or an account's) name an error shows.
pub(crate) const NAME_CHARS: usize = 64;
/// The most characters of one error's message, whatever it quotes.
pub(crate) const MESSAGE_CHARS: usize = 1_000;

/// Whether `c` would change what a terminal or a log line shows beyond itself: control
/// characters, line and paragraph separators, and bidirectional overrides.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if is_hidden(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// `text` on one line, its hidden characters escaped, cut to `max` characters with `…`.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4 + 4));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// A value from a file, as an error may quote it: `EXCERPT_CHARS` at most.
pub(crate) fn excerpt(text: &str) -> String {
    cut(text, EXCERPT_CHARS)
}

/// A serde (serde_yaml) message with every value it quotes cut to an excerpt: the
/// `"…"` of `invalid type: string "…"` (written escaped, as Rust's `{:?}`), and the `` `…` ``
/// of `unknown field`, `unknown variant`, `integer`, … Then bounded as a whole.
pub(crate) fn serde_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MESSAGE_CHARS));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = if rest.as_bytes()[open] == b'"' {
            '"'
        } else {
            '`'
        };
        out.push_str(&rest[..=open]);
        let inside = &rest[open + 1..];
        let close = if quote == '"' {
            escaped_end(inside)
        } else {
            inside.find('`')
        };
        let Some(close) = close else {
            out.push_str(&excerpt(inside));
            rest = "";
            break;
        };
        let value = &inside[..close];
        if quote == '"' {
            out.push_str(&cut_escaped(value, EXCERPT_CHARS));
        } else {
            out.push_str(&excerpt(value));
        }
        out.push(quote);
        rest = &inside[close + 1..];
    }
    out.push_str(rest);
    cut(&out, MESSAGE_CHARS)
}

/// Where the `"` that closes a `{:?}`-escaped string is, in `text` (which follows the
/// opening one).
fn escaped_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// A `{:?}`-escaped string cut to `max` characters as it reads unescaped: an escape
/// (`\"`, `\n`, `\u{1b}`) counts as one and is never cut in half.
fn cut_escaped(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut shown = 0;
    while let Some(c) = chars.next() {
        if shown == max {
            out.push('…');
            break;
        }
        out.push(c);
        if c == '\\' {
            match chars.next() {
                Some('u') => {
                    out.push('u');
                    for c in chars.by_ref() {
                        out.push(c);
                        if c == '}' {
                            break;
                        }
                    }
                }
                Some(c) => out.push(c),
                None => {}
            }
        }
        shown += 1;
    }
    // Anything `{:?}` would not have left in (a raw control character) is escaped all the
    // same.
    cut(&out, max * 12)
}

/// What a YAML document is, from serde's `invalid type: KIND …, expected struct NAME`
/// when serde met it where `name` (a struct) was expected at the root: `None` for any
/// other message. A file that is not a mapping is said to be so without quoting it.
pub(crate) fn root_kind(message: &str, name: &str) -> Option<&'static str> {
    let rest = message.strip_prefix("invalid type: ")?;
    if !rest.ends_with(&format!("expected struct {name}")) {
        return None;
    }
    Some(match rest.split([' ', ',']).next()? {
        "string" => "a text",
        "sequence" => "a list",
        "integer" | "floating" => "a number",
        "boolean" => "`true` or `false`",
        "unit" | "null" => "empty",
        _ => "not a mapping",
    })
}

/// An error of a load as it may leave `rules`: the rule's name and the message on one
/// line, hidden characters escaped, within `NAME_CHARS` and `MESSAGE_CHARS`.
pub(crate) fn bounded(error: RuleError) -> RuleError {
    RuleError {
        location: error.location,
        rule: error.rule.map(|name| cut(&name, NAME_CHARS)),
        message: cut(&error.message, MESSAGE_CHARS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_serde_quotes_are_cut_and_escaped() {
        let long = "x".repeat(10_000);
        let message = format!("invalid type: string {long:?}, expected a sequence");
        let cut = serde_message(&message);
        assert_eq!(
            cut,
            format!(
                "invalid type: string \"{}…\", expected a sequence",
                "x".repeat(40)
            )
        );
        let tricky = "a\"b\\c\u{1b}[31m\nline two";
        let message = format!("invalid value: string {tricky:?}, expected x");
        assert_eq!(
            serde_message(&message),
            "invalid value: string \"a\\\"b\\\\c\\u{1b}[31m\\nline two\", expected x"
        );
        // An escape is never cut in half.
        let message = format!(
            "invalid type: string {:?}",
            format!("{}\u{1b}rest", "y".repeat(39))
        );
        assert_eq!(
            serde_message(&message),
            format!("invalid type: string \"{}\\u{{1b}}…\"", "y".repeat(39))
        );
        let key = format!("k{}\nz", "e".repeat(100));
        let message = format!("unknown field `{key}`, expected `timezone` or `rules`");
        assert_eq!(
            serde_message(&message),
            format!(
                "unknown field `k{}…`, expected `timezone` or `rules`",
                "e".repeat(39)
            )
        );
        // Unbalanced quotes still end bounded.
        let message = format!("unknown field `{}", "q".repeat(1_000_000));
        assert!(serde_message(&message).chars().count() < 100);
        let message = format!("odd \"{}", "\\".repeat(1_000_001));
        assert!(serde_message(&message).chars().count() < 200);
    }

    #[test]
    fn the_kind_of_a_root_that_is_not_a_mapping_is_named_without_its_value() {
        let kind = |m: &str| root_kind(m, "RawFile");
        assert_eq!(
            kind("invalid type: string \"newstoken2\", expected struct RawFile"),
            Some("a text")
        );
        assert_eq!(
            kind("invalid type: sequence, expected struct RawFile"),
            Some("a list")
        );
        assert_eq!(
            kind("invalid type: integer `7`, expected struct RawFile"),
            Some("a number")
        );
        assert_eq!(
            kind("invalid type: string \"x\", expected a sequence"),
            None
        );
        assert_eq!(kind("missing field `rules`"), None);
    }

    #[test]
    fn an_error_leaving_rules_is_one_bounded_line() {
        let error = RuleError {
            location: super::super::Location::new(std::path::Path::new("rules.yaml"), None),
            rule: Some(format!("{}\u{202E}", "n".repeat(1_000))),
            message: format!("keyword `{}` is only spaces\n", " ".repeat(20 << 20)),
        };
        let shown = bounded(error).to_string();
        assert!(
            shown.chars().count() < MESSAGE_CHARS + NAME_CHARS + 40,
            "{}",
            shown.len()
        );
        assert!(!shown.contains('\n') && !shown.contains('\u{202E}'));
    }
}
