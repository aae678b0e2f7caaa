//! One mapping's entries changed in place: a value replaced, an entry added after a
//! given key, an entry removed. Block mappings change by whole lines (a comment on the key's
//! line stays with the key); flow mappings (`{ a: 1, b: 2 }`) change inside their braces.

use serde_json::Value;

use super::emit::{self, Emitted, Layout};
use super::text::{column, line_end, line_start, whole_lines, Splice};
use super::tree::{Entry, Node};

/// What an edit of the text needs to know about the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Style<'t> {
    pub(super) text: &'t str,
    /// The file's line break.
    pub(super) eol: &'static str,
    /// How far a nested block is indented.
    pub(super) step: usize,
}

/// Why an entry cannot be changed here: said after the rule's name.
pub(super) type Refusal = String;

/// Sets `key` of the mapping `map` to `value`: its value replaced where the key is, else a
/// new entry after the first of `after` the mapping has (at its end when it has none).
pub(super) fn set(
    st: Style<'_>,
    map: &Node,
    key: &str,
    value: &Value,
    after: &[&str],
) -> Result<Vec<Splice>, Refusal> {
    match map.entry(key) {
        Some(entry) => replace(st, map, entry, value),
        None => add(st, map, key, value, after),
    }
}

/// Replaces the value of `entry`, an entry of `map`.
pub(super) fn replace(
    st: Style<'_>,
    map: &Node,
    entry: &Entry,
    value: &Value,
) -> Result<Vec<Splice>, Refusal> {
    let colon = entry
        .colon
        .ok_or_else(|| format!("`{}` is an explicit key (`? …`)", key_name(entry)))?;
    if map.is_flow() {
        let new = format!(" {}", emit::flow(value));
        return Ok(vec![Splice::new(
            colon + 1,
            entry.value.end.max(colon + 1),
            new,
        )]);
    }
    let key_col = key_column(st, map)?;
    let layout = if entry.value.is_block_collection() {
        Layout::Block
    } else {
        Layout::Fit
    };
    let used = column(st.text, colon) + 1;
    let e = emit::value(value, key_col + st.step, used, st.step, layout);
    Ok(replace_block(st, entry, colon, &e))
}

/// The splices that put `e` in place of the value of `entry`, in a block mapping.
fn replace_block(st: Style<'_>, entry: &Entry, colon: usize, e: &Emitted) -> Vec<Splice> {
    let (text, eol) = (st.text, st.eol);
    let body: String = e.body.iter().map(|l| format!("{eol}{l}")).collect();
    let v = &entry.value;
    let key_line_end = line_end(text, colon);
    if v.is_empty_value() {
        return vec![
            Splice::insert(colon + 1, e.head.clone()),
            Splice::insert(key_line_end, body),
        ];
    }
    let rest = text[colon + 1..key_line_end].trim_start_matches([' ', '\t']);
    if rest.is_empty() || rest.starts_with('#') {
        // The value starts on a later line: the key's line, and a comment on it, stay.
        return vec![
            Splice::insert(colon + 1, e.head.clone()),
            Splice::new(key_line_end, v.end, body),
        ];
    }
    let last_line_end = line_end(text, v.end);
    let trailing = text[v.end..last_line_end].trim_start_matches([' ', '\t']);
    if !e.is_inline() && trailing.starts_with('#') {
        // A comment after the old value would end up after the new block's last line:
        // it moves up to the key's line.
        let with = format!("{} {trailing}{body}", e.head);
        return vec![Splice::new(colon + 1, last_line_end, with)];
    }
    vec![Splice::new(colon + 1, v.end, format!("{}{body}", e.head))]
}

/// Adds `key: value` to `map` after the first of `after` it has, else at its end.
fn add(
    st: Style<'_>,
    map: &Node,
    key: &str,
    value: &Value,
    after: &[&str],
) -> Result<Vec<Splice>, Refusal> {
    let entries = map.entries().ok_or("not a mapping")?;
    let prev = after
        .iter()
        .find_map(|k| map.entry(k))
        .or_else(|| entries.last());
    let k = emit::scalar(key);
    if map.is_flow() {
        let new = format!("{k}: {}", emit::flow(value));
        return Ok(match prev {
            Some(p) => vec![Splice::insert(
                p.value.end.max(p.key.end),
                format!(", {new}"),
            )],
            None => vec![Splice::new(map.start + 1, map.end - 1, format!(" {new} "))],
        });
    }
    let Some(prev) = prev else {
        return Err("an empty block mapping".into());
    };
    let key_col = key_column(st, map)?;
    let lead = format!("{}{k}:", " ".repeat(key_col));
    let e = emit::value(
        value,
        key_col + st.step,
        lead.chars().count(),
        st.step,
        Layout::Fit,
    );
    let mut new = format!("{}{lead}{}", st.eol, e.head);
    for line in &e.body {
        new.push_str(st.eol);
        new.push_str(line);
    }
    let prev_end = prev
        .value
        .end
        .max(prev.colon.map_or(prev.key.end, |c| c + 1));
    Ok(vec![Splice::insert(line_end(st.text, prev_end), new)])
}

/// Removes the entry `key` of `map`, if it has one.
pub(super) fn remove(st: Style<'_>, map: &Node, key: &str) -> Result<Vec<Splice>, Refusal> {
    let entries = map.entries().ok_or("not a mapping")?;
    let Some(i) = entries.iter().position(|e| e.key.scalar() == Some(key)) else {
        return Ok(Vec::new());
    };
    let entry = &entries[i];
    let end = entry.value.end.max(entry.key.end);
    let next = entries.get(i + 1);
    if map.is_flow() {
        return Ok(vec![match (i, next) {
            (0, Some(n)) => Splice::new(entry.key.start, n.key.start, ""),
            (0, None) => Splice::new(map.start + 1, map.end - 1, ""),
            _ => Splice::new(
                entries[i - 1].value.end.max(entries[i - 1].key.end),
                end,
                "",
            ),
        }]);
    }
    let text = st.text;
    let start = line_start(text, entry.key.start);
    if text[start..entry.key.start]
        .trim_start_matches(' ')
        .is_empty()
    {
        let (a, b) = whole_lines(text, start, end);
        return Ok(vec![Splice::new(a, b, "")]);
    }
    // The first entry of a sequence item (`- key: …`): the next key moves up to its place.
    match next {
        Some(n) if i == 0 => Ok(vec![Splice::new(entry.key.start, n.key.start, "")]),
        _ => Err(format!(
            "cannot remove `{key}`: nothing would be left in its place"
        )),
    }
}

/// The column of a block mapping's keys.
pub(super) fn key_column(st: Style<'_>, map: &Node) -> Result<usize, Refusal> {
    let first = map
        .entries()
        .and_then(|e| e.first())
        .ok_or("an empty mapping")?;
    let start = line_start(st.text, first.key.start);
    if st.text[start..first.key.start].contains('\t') {
        return Err("a tab in the indentation of its keys".into());
    }
    Ok(column(st.text, first.key.start))
}

fn key_name(entry: &Entry) -> String {
    entry.key.scalar().unwrap_or("?").chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edit(text: &str, f: impl Fn(Style<'_>, &Node) -> Result<Vec<Splice>, Refusal>) -> String {
        let root = super::super::tree::parse(text).unwrap().unwrap();
        let st = Style {
            text,
            eol: super::super::text::line_break(text),
            step: 2,
        };
        let splices = f(st, &root).unwrap();
        super::super::text::splice(text, &splices).unwrap()
    }

    #[test]
    fn replaces_values_of_every_shape() {
        let set = |text: &str, v: Value| edit(text, |st, m| set(st, m, "a", &v, &[]));
        assert_eq!(set("a: 1 # c\nb: 2\n", json!("x")), "a: x # c\nb: 2\n");
        assert_eq!(set("a:\nb: 2\n", json!("x")), "a: x\nb: 2\n");
        assert_eq!(
            set("a: # c\n  k: v\nb: 2\n", json!("x")),
            "a: x # c\nb: 2\n"
        );
        assert_eq!(
            set("a: # c\n  k: v\nb: 2\n", json!({"k": "one\ntwo"})),
            "a: # c\n  k: |-\n    one\n    two\nb: 2\n"
        );
        assert_eq!(
            set("a: { k: v }  # c\nb: 2\n", json!({"k": "one\ntwo"})),
            "a: # c\n  k: |-\n    one\n    two\nb: 2\n"
        );
        assert_eq!(
            set("a:\n  k: v\nb: 2\n", json!({"k": "w"})),
            "a:\n  k: w\nb: 2\n"
        );
        assert_eq!(set("a: |\n  x\n  y\nb: 2\n", json!("z")), "a: z\nb: 2\n");
        assert_eq!(set("{ a: 1, b: 2 }\n", json!(["x"])), "{ a: [x], b: 2 }\n");
    }

    #[test]
    fn adds_entries_after_a_key_or_at_the_end() {
        let add = |text: &str, after: &'static [&'static str]| {
            edit(text, move |st, m| set(st, m, "c", &json!("new"), after))
        };
        assert_eq!(add("a: 1\nb: 2\n", &["a"]), "a: 1\nc: new\nb: 2\n");
        assert_eq!(add("a: 1\nb: 2", &["x"]), "a: 1\nb: 2\nc: new");
        assert_eq!(add("a: 1\r\nb: 2\r\n", &[]), "a: 1\r\nb: 2\r\nc: new\r\n");
        assert_eq!(add("{ a: 1 }", &[]), "{ a: 1, c: new }");
        assert_eq!(add("{}", &[]), "{ c: new }");
    }

    #[test]
    fn removes_entries() {
        let rm = |text: &str, key: &'static str| edit(text, move |st, m| remove(st, m, key));
        assert_eq!(rm("a: 1\nb: 2 # c\nc: 3\n", "b"), "a: 1\nc: 3\n");
        assert_eq!(rm("a: 1\nb:\n  - x\n", "b"), "a: 1\n");
        assert_eq!(rm("a: 1\nb: 2", "b"), "a: 1");
        assert_eq!(rm("a: 1\nb: 2", "z"), "a: 1\nb: 2");
        assert_eq!(rm("{ a: 1, b: 2 }", "a"), "{ b: 2 }");
        assert_eq!(rm("{ a: 1, b: 2 }", "b"), "{ a: 1 }");
        assert_eq!(rm("{ a: 1 }", "a"), "{}");
    }
}
