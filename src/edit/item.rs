//! The `rules:` list of the file: its rules found by name, each rule's lines, and rules
//! added, removed and moved as whole lines. A rule's lines run from its `-` to the end of
//! its last value (and comment lines indented inside it); comments above a rule are not
//! counted as its own (a note on the rule or a heading for the rules below it look alike),
//! but a rule placed before another goes above that other's comments.

use serde_json::Value;

use super::emit;
use super::entry::Style;
use super::text::{
    column, indent, is_blank, is_comment, line_end, line_start, next_line, previous_line, Splice,
};
use super::tree::{Entry, Kind, Node};
use super::EditError;

/// The file's `rules:` entry, read.
pub(super) struct List<'n> {
    pub(super) entry: &'n Entry,
    /// The rules (every item, mappings or not), in file order.
    pub(super) items: &'n [Node],
}

/// The lines of one rule of a block list.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lines {
    /// The start of the line of its `-`.
    pub(super) first: usize,
    /// The column of its `-`.
    pub(super) dash: usize,
    /// Past its last line's break (the text's end when its last line has none).
    pub(super) end: usize,
}

impl<'n> List<'n> {
    /// The `rules:` list of the document whose root is `root`.
    pub(super) fn of(root: Option<&'n Node>) -> Result<List<'n>, EditError> {
        let not = |reason: &str| EditError::NotRules {
            reason: reason.into(),
        };
        let root = root.ok_or_else(|| not("the file is empty"))?;
        if root.entries().is_none() {
            return Err(not("the file is not a mapping"));
        }
        let entry = root
            .entry("rules")
            .ok_or_else(|| not("the file has no `rules:` key"))?;
        let items: &[Node] = match &entry.value.kind {
            Kind::Seq { items, .. } => items,
            Kind::Scalar { empty: true, .. } => &[],
            _ => return Err(not("`rules:` is not a list")),
        };
        Ok(List { entry, items })
    }

    /// The rule named `name`.
    pub(super) fn find(&self, name: &str) -> Result<&'n Node, EditError> {
        let mut found = self.items.iter().filter(|r| rule_name(r) == Some(name));
        let rule = found.next().ok_or_else(|| EditError::NoRule {
            rule: name.to_owned(),
        })?;
        if found.next().is_some() {
            return Err(EditError::Duplicate {
                rule: name.to_owned(),
            });
        }
        Ok(rule)
    }

    /// Whether the file's rules are mostly flow mappings written one a line.
    pub(super) fn flow_rules(&self) -> bool {
        let flow = self.items.iter().filter(|r| r.is_flow()).count();
        flow * 2 > self.items.len()
    }

    /// Whether most rules have a blank line above them (or above their comments).
    pub(super) fn spaced(&self, text: &str) -> bool {
        let spaced = self
            .items
            .iter()
            .skip(1)
            .filter_map(|r| lines(text, r).ok())
            .filter(|l| {
                let top = above_comments(text, l);
                previous_line(text, top).is_some_and(|p| is_blank(text, p))
            })
            .count();
        spaced * 2 > self.items.len().saturating_sub(1) && self.items.len() > 1
    }

    /// The first of the catch-all rules that end the list: rules that match on no keyword or
    /// event key, only on `msg_type` and `event` (or nothing), so that a new keyword rule
    /// placed before them is not shadowed.
    pub(super) fn first_catch_all(&self) -> Option<&'n Node> {
        self.items.iter().rev().take_while(|r| catch_all(r)).last()
    }

    /// Where a block list's rules put their `-` and first key, and how far nested blocks
    /// go in: read from the rules, else the `rules:` key's column plus two.
    pub(super) fn layout(&self, text: &str) -> (usize, usize) {
        // The dash's column from any rule (a list of flow rules has its own), the key's
        // from a block rule.
        let mut dash = None;
        for rule in self.items {
            let Ok(l) = lines(text, rule) else { continue };
            dash.get_or_insert(l.dash);
            if let (true, Some(first)) = (
                rule.is_block_collection(),
                rule.entries().and_then(|e| e.first()),
            ) {
                return (l.dash, column(text, first.key.start).saturating_sub(l.dash));
            }
        }
        let dash = dash.unwrap_or_else(|| column(text, self.entry.key.start) + 2);
        (dash, 2)
    }
}

/// A rule's `name:`, when it has a plain one.
pub(super) fn rule_name(rule: &Node) -> Option<&str> {
    rule.entry("name")?.value.scalar()
}

fn catch_all(rule: &Node) -> bool {
    let Some(when) = rule.entry("when").map(|e| &e.value) else {
        return rule.entries().is_some();
    };
    match (&when.kind, when.entries()) {
        (Kind::Scalar { empty: true, .. }, _) => true,
        (_, Some(entries)) => entries
            .iter()
            .all(|e| matches!(e.key.scalar(), Some("msg_type" | "event"))),
        _ => false,
    }
}

/// The lines of `rule`, an item of a block list: refused when its `-` does not start its
/// line's text and sit on the line of its first key or brace.
pub(super) fn lines(text: &str, rule: &Node) -> Result<Lines, String> {
    let first = line_start(text, rule.start);
    let before = &text[first..rule.start];
    let dash = before.trim_end_matches(' ');
    let Some(lead) = dash.strip_suffix('-') else {
        return Err("its `-` is not on the line of its first key".into());
    };
    if !lead.chars().all(|c| c == ' ') {
        return Err("it shares its line with something else".into());
    }
    let dash_col = lead.len();
    let mut end = next_line(text, rule.end);
    while end < text.len() && is_comment(text, end) && indent(text, end) > dash_col {
        end = next_line(text, end);
    }
    Ok(Lines {
        first,
        dash: dash_col,
        end,
    })
}

/// The start of the comment lines right above a rule (no blank line between), at most as
/// indented as its `-`; the rule's own first line when it has none.
pub(super) fn above_comments(text: &str, l: &Lines) -> usize {
    let mut top = l.first;
    while let Some(prev) = previous_line(text, top) {
        if is_comment(text, prev) && indent(text, prev) <= l.dash {
            top = prev;
        } else {
            break;
        }
    }
    top
}

/// What removing the rule of lines `l` takes, as splices: its lines, and one blank line
/// beside them when blank lines separate the rules (a blank line above the rule, or above
/// the comments right above it, or the rule first in the list), so that the spacing stays
/// as it was. The comments above the rule stay (see the module's doc): the blank line taken
/// is the one after the rule, or, for the file's last rule, the one above it or its comments.
pub(super) struct Removal {
    pub(super) splices: Vec<Splice>,
    /// Whether a blank line was taken: a rule moved elsewhere takes one there.
    pub(super) blank: bool,
}

pub(super) fn removal(text: &str, l: &Lines, first_rule: bool) -> Removal {
    let blank_above = |at: usize| previous_line(text, at).filter(|p| is_blank(text, *p));
    let top = above_comments(text, l);
    // The blank line right above the rule, and the one above its comments (the same line
    // when it has none).
    let (right_above, group_above) = (blank_above(l.first), blank_above(top));
    let whole_line = |at: usize| Splice::new(at, next_line(text, at), "");
    let (mut a, mut b) = (l.first, l.end);
    let mut extra = None;
    if b == text.len() && !text.ends_with('\n') {
        // The last line, without a break: the break before it goes, and a blank line above.
        if let Some(prev) = previous_line(text, a) {
            a = line_end(text, prev);
            match (right_above, group_above) {
                (Some(blank), _) => {
                    if let Some(p2) = previous_line(text, blank) {
                        a = line_end(text, p2);
                    }
                }
                (None, Some(blank)) => extra = Some(whole_line(blank)),
                (None, None) => {}
            }
        }
    } else if b < text.len() && is_blank(text, b) && (group_above.is_some() || first_rule) {
        b = next_line(text, b);
    } else if b == text.len() {
        match (right_above, group_above) {
            (Some(blank), _) => a = blank,
            (None, Some(blank)) => extra = Some(whole_line(blank)),
            (None, None) => {}
        }
    }
    // Whether a whole blank line went: past the rule's end, before its break (the no-break
    // case takes one break anyway), or on its own.
    let taken = text.get(a..l.first).map_or(0, |s| s.matches('\n').count())
        + text.get(l.end..b).map_or(0, |s| s.matches('\n').count());
    let own_break = usize::from(l.end == text.len() && !text.ends_with('\n') && a < l.first);
    let blank = extra.is_some() || taken > own_break;
    let mut splices = vec![Splice::new(a, b, "")];
    splices.extend(extra);
    Removal { splices, blank }
}

/// Where in the text a rule goes, and how it is written there.
pub(super) enum Place {
    /// Above the rule of these lines (and above its comments).
    Before(Lines),
    /// After the last rule, whose lines end here.
    End(Lines),
    /// The list is empty: replaces the value of `rules:`.
    Empty,
}

/// The splices that put `rule`'s lines (without a final break) at `place`.
pub(super) fn insert(
    st: Style<'_>,
    list: &List<'_>,
    place: &Place,
    rule: &str,
    spaced: bool,
) -> Result<Vec<Splice>, String> {
    let (text, eol) = (st.text, st.eol);
    let gap = if spaced { eol } else { "" };
    Ok(match place {
        Place::Before(l) => vec![Splice::insert(
            above_comments(text, l),
            format!("{rule}{eol}{gap}"),
        )],
        Place::End(l) if l.end == text.len() && !text.ends_with('\n') => {
            vec![Splice::insert(l.end, format!("{eol}{gap}{rule}"))]
        }
        Place::End(l) => vec![Splice::insert(l.end, format!("{gap}{rule}{eol}"))],
        Place::Empty => {
            // `rules:` or `rules: []`: the `[]` goes, the rule goes on the next line (a
            // comment after `rules:` stays on its line).
            let colon = list.entry.colon.ok_or("`rules` is an explicit key")?;
            let end = list.entry.value.end.max(colon + 1);
            let line_end = line_end(text, end);
            vec![
                Splice::new(colon + 1, end, ""),
                Splice::insert(line_end, format!("{eol}{rule}")),
            ]
        }
    })
}

/// A new rule's lines (joined by the file's break, without a final one): a flow mapping on
/// one line in a file of one-line rules, else a block mapping whose values fit where they can.
pub(super) fn rule_text(
    st: Style<'_>,
    rule: &Value,
    dash: usize,
    key_offset: usize,
    flow: bool,
) -> String {
    let pad = " ".repeat(dash);
    if flow {
        return format!("{pad}- {}", emit::flow(rule));
    }
    let key_col = dash + key_offset.max(2);
    let mut lines = emit::block(rule, key_col, st.step);
    if let Some(first) = lines.first_mut() {
        let lead = format!("{pad}-{}", " ".repeat(key_col - dash - 1));
        *first = format!("{lead}{}", &first[key_col.min(first.len())..]);
    }
    lines.join(st.eol)
}

/// How far nested blocks are indented in `rule`: a block mapping's keys against its parent
/// key's column, the first found; `None` when it has no nested block mapping.
pub(super) fn step_in(text: &str, node: &Node) -> Option<usize> {
    match &node.kind {
        Kind::Map {
            flow: false,
            entries,
        } => entries.iter().find_map(|e| {
            let child = &e.value;
            match (&child.kind, child.entries().and_then(|c| c.first())) {
                (Kind::Map { flow: false, .. }, Some(c)) => {
                    column(text, c.key.start).checked_sub(column(text, e.key.start))
                }
                _ => step_in(text, child),
            }
            .filter(|s| *s > 0)
        }),
        Kind::Seq { flow: false, items } => items.iter().find_map(|i| step_in(text, i)),
        _ => None,
    }
}
