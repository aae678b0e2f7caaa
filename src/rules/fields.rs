//! Templates held to what WeChat sends: a template path that no message its rule can match
//! carries (`{{FromUsername}}`), a `captures.NAME` its rule's regexes do not define, or a
//! path that follows the XML rather than the message's shape (`ResultList.item`) is a load
//! error with a suggestion, instead of a render error (and no reply) in production. The
//! kinds a rule can match come from its `msg_type`, `event`, `keyword`, `status` and
//! `event_key` criteria; rules that can match a kind the catalog does not know are not
//! checked. No IO.

use std::collections::BTreeSet;

use handlebars::template::{Parameter, Template, TemplateElement};

use super::matcher::{Criteria, Field, Pattern};
use crate::wire::catalog::{self, Kind, KINDS};

/// A path a template reads, with where it is in the template (1-based line and column),
/// when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsedPath {
    pub(crate) parts: Vec<String>,
    pub(crate) at: Option<(usize, usize)>,
    /// Read where a missing field is no error: the test of `{{#if}}`/`{{#unless}}`, the
    /// value of `default` or `strip_prefix`.
    pub(crate) guarded: bool,
    /// Looped over by `{{#each}}`: it had better be a list whatever WeChat sends.
    pub(crate) each: bool,
}

/// Fields every message carries.
const COMMON: &[&str] = &["ToUserName", "FromUserName", "CreateTime", "MsgType"];

impl super::Rule {
    /// The fields a message this rule can match carries, by dotted path (a list's
    /// elements as `List.[0].Field`): what a template of it may read, offered in the page's
    /// editor as one types. A rule the catalog cannot pin to kinds gets the common fields
    /// and those of text messages and events.
    pub fn fields(&self) -> Vec<String> {
        let kinds = matchable(&self.when).unwrap_or_else(|| {
            KINDS
                .iter()
                .filter(|k| k.msg_type == "text" || k.event.is_some_and(|e| e == "CLICK"))
                .collect()
        });
        let mut out: BTreeSet<String> = COMMON.iter().map(|f| (*f).to_owned()).collect();
        for kind in kinds {
            if kind.event.is_some() {
                out.insert("Event".into());
            }
            for field in kind.fields {
                if !field.path.ends_with("[]") {
                    out.insert(field.path.replace("[]", ".[0]"));
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The kinds `criteria` can match, when they pin the rule to kinds the catalog knows: an
/// exact `msg_type` other than `event`, an exact `event`, or a `keyword` (text and voice).
/// `None` otherwise: a rule that could match a kind the catalog lacks (WeChat has events
/// it does not list: cards, publishing, …) is only checked for typos of the common fields.
pub(crate) fn matchable(criteria: &Criteria) -> Option<Vec<&'static Kind>> {
    let mut kinds: Vec<&'static Kind> = KINDS.iter().collect();
    let mut pinned = false;
    for test in &criteria.tests {
        let exact: Option<Vec<&str>> = test
            .matcher
            .patterns
            .iter()
            .map(|p| match p {
                Pattern::Exact(value) => Some(&**value),
                _ => None,
            })
            .collect();
        match (&test.field, exact) {
            (Field::MsgType, Some(values)) => {
                if values
                    .iter()
                    .any(|v| !KINDS.iter().any(|k| k.msg_type.eq_ignore_ascii_case(v)))
                {
                    return None;
                }
                kinds.retain(|k| values.iter().any(|v| k.msg_type.eq_ignore_ascii_case(v)));
                pinned |= !values.iter().any(|v| v.eq_ignore_ascii_case("event"));
            }
            (Field::Event, Some(values)) => {
                if values.iter().any(|v| {
                    !KINDS
                        .iter()
                        .any(|k| k.event.is_some_and(|e| e.eq_ignore_ascii_case(v)))
                }) {
                    return None;
                }
                kinds.retain(|k| {
                    k.event
                        .is_some_and(|e| values.iter().any(|v| e.eq_ignore_ascii_case(v)))
                });
                pinned = true;
            }
            // Other forms (prefix, regex) of these two could match kinds not in the catalog.
            (Field::MsgType | Field::Event, None) => return None,
            (Field::Keyword, _) => {
                kinds.retain(|k| matches!(k.msg_type, "text" | "voice"));
                pinned = true;
            }
            (Field::Status, _) => kinds.retain(|k| has(k, "Status")),
            (Field::Choice, _) => kinds.retain(|k| has(k, "bizmsgmenuid")),
            (Field::EventKey, _) => kinds.retain(|k| has(k, "EventKey")),
            (Field::Path(_), _) => {}
        }
    }
    // Criteria that no kind meets (a keyword on an event): nothing to hold templates to.
    (pinned && !kinds.is_empty()).then_some(kinds)
}

/// For a rule not pinned to known kinds: a path that is a near miss of a field every push
/// carries (`FromUsername`), which no kind of push has.
pub(crate) fn common_typo(parts: &[String]) -> Option<String> {
    let [name] = parts else { return None };
    // A field some kind carries (`EventKey`) is no typo, however close to `Event`.
    if KINDS.iter().any(|kind| carries(kind, name)) {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let near = catalog::COMMON
        .iter()
        .copied()
        .chain(["Event"])
        .map(|c| (strsim::levenshtein(&c.to_ascii_lowercase(), &lower), c))
        .filter(|(edits, _)| *edits <= 2)
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, c)| c)?;
    Some(format!(
        "no message carries `{name}`; did you mean `{near}`?"
    ))
}

/// For a read that cannot fail at render time (the test of an `{{#if}}`, a `default`):
/// only a path that no kind at all carries is a problem.
pub(crate) fn guarded_problem(parts: &[String]) -> Option<String> {
    let all: Vec<&Kind> = KINDS.iter().collect();
    problem(parts, &all)
}

fn has(kind: &Kind, path: &str) -> bool {
    kind.fields.iter().any(|f| f.path == path)
}

/// The paths `template` reads from the message, outside blocks that change what paths
/// mean (`{{#each}}`, `{{#with}}`: inside, they are the element's), whose own parameters
/// are read; `@root.…` paths are read everywhere. Partials are not followed.
pub(crate) fn template_paths(template: &Template) -> Vec<UsedPath> {
    let mut found = Vec::new();
    walk(template, true, &mut found);
    found
}

fn walk(t: &Template, top: bool, found: &mut Vec<UsedPath>) {
    for (i, element) in t.elements.iter().enumerate() {
        let at = t.mapping.get(i).map(|m| (m.0, m.1));
        match element {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                if h.params.is_empty() && h.hash.is_empty() {
                    // `{{path}}`: the name is the path (unless it is a helper; those take
                    // parameters, and `this`, `@index` are not fields).
                    param(&h.name, top, Read::Plain, at, found);
                } else {
                    let guarded = matches!(h.name.as_name(), Some("default" | "strip_prefix"));
                    for (n, p) in h.params.iter().enumerate() {
                        let read = if guarded && n == 0 {
                            Read::Guarded
                        } else {
                            Read::Plain
                        };
                        param(p, top, read, at, found);
                    }
                    for p in h.hash.values() {
                        param(p, top, Read::Plain, at, found);
                    }
                }
            }
            TemplateElement::HelperBlock(h) => {
                let read = match h.name.as_name() {
                    Some("if" | "unless") => Read::Guarded,
                    Some("each") => Read::Each,
                    _ => Read::Plain,
                };
                for (n, p) in h.params.iter().enumerate() {
                    // `{{#each LIST}}` loops over its first parameter only.
                    let read = if n > 0 && read == Read::Each {
                        Read::Plain
                    } else {
                        read
                    };
                    param(p, top, read, at, found);
                }
                let hash_read = if read == Read::Guarded {
                    Read::Guarded
                } else {
                    Read::Plain
                };
                for p in h.hash.values() {
                    param(p, top, hash_read, at, found);
                }
                let scoped = matches!(h.name.as_name(), Some("each" | "with"));
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    walk(inner, top && !scoped, found);
                }
            }
            // An inline partial's body is rendered where it is included, perhaps inside an
            // `{{#each}}`: its paths may be an element's.
            TemplateElement::DecoratorBlock(d) => {
                if let Some(inner) = &d.template {
                    let inline = d.name.as_name() == Some("inline");
                    walk(inner, top && !inline, found);
                }
            }
            TemplateElement::PartialBlock(d) => {
                if let Some(inner) = &d.template {
                    walk(inner, top, found);
                }
            }
            _ => {}
        }
    }
}

/// How a template reads a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Plain,
    /// Where a missing field is no error (`UsedPath::guarded`).
    Guarded,
    /// Looped over (`UsedPath::each`).
    Each,
}

fn param(
    p: &Parameter,
    top: bool,
    read: Read,
    at: Option<(usize, usize)>,
    found: &mut Vec<UsedPath>,
) {
    let raw = match p {
        Parameter::Path(handlebars::Path::Relative((_, raw))) => raw.as_str(),
        Parameter::Name(name) => name.as_str(),
        Parameter::Subexpression(sub) => {
            // What a subexpression reads is its helper's: a loop over its value loops
            // over what the helper answers, not over the paths it reads.
            let read = if read == Read::Each {
                Read::Plain
            } else {
                read
            };
            if let TemplateElement::Expression(h) = &*sub.element {
                for p in h.params.iter().chain(h.hash.values()) {
                    param(p, top, read, at, found);
                }
            }
            return;
        }
        _ => return,
    };
    let (raw, rooted) = match raw.strip_prefix("@root.") {
        Some(rest) => (rest, true),
        None => (raw, false),
    };
    if !(top || rooted) || raw.starts_with('@') || raw.starts_with("this") || raw.starts_with("../")
    {
        return;
    }
    let parts: Vec<String> = raw
        .split(['.', '/'])
        .map(|part| {
            part.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .collect();
    if parts
        .first()
        .is_some_and(|p| !p.is_empty() && !super::tpl::is_helper(p))
    {
        found.push(UsedPath {
            parts,
            at,
            guarded: read == Read::Guarded,
            each: read == Read::Each,
        });
    }
}

/// For `{{#each PATH}}` in a rule that can match `kinds` (any kind when `None`): why it
/// deserves a warning, unless the catalog knows `PATH` as a list for one of them. An
/// element WeChat may send once or more is a list however many come
/// (`wire::catalog::REPEATED`); one the catalog does not know as a list is an object or a
/// text when it comes once, and the loop then fails or walks the wrong thing.
pub(crate) fn each_problem(parts: &[String], kinds: Option<&[&Kind]>) -> Option<String> {
    let list = format!("{}[]", join(&shape_of(parts)));
    let known = match kinds {
        Some(kinds) => kinds.iter().any(|kind| carries(kind, &list)),
        None => KINDS.iter().any(|kind| carries(kind, &list)),
    };
    (!known).then(|| {
        format!(
            "`{}` is not a list in what WeChat sends (wxrules' catalog knows no list there): when one element comes it is not a list, and the loop does not walk it",
            parts.join(".")
        )
    })
}

/// What is wrong with reading `parts` in a rule that can match `kinds`, with a suggestion;
/// `None` when some kind carries it. `captures`, `rule` and `call` are not fields: the
/// caller checks them.
pub(crate) fn problem(parts: &[String], kinds: &[&Kind]) -> Option<String> {
    let shape = shape_of(parts);
    let wanted = join(&shape);
    if kinds.iter().any(|kind| carries(kind, &wanted)) {
        return None;
    }
    let known = known_paths(kinds);
    if let Some(hint) = list_hint(parts, &shape, &known) {
        return Some(hint);
    }
    let mut message = format!(
        "no message this rule can match carries `{}`",
        parts.join(".")
    );
    if let Some(near) = nearest(&wanted, &known) {
        message.push_str(&format!("; did you mean `{near}`?"));
    }
    Some(message)
}

/// A path's parts with each list index written `[]`, as the catalog writes its paths.
fn shape_of(parts: &[String]) -> Vec<String> {
    parts
        .iter()
        .map(|p| {
            if p.parse::<usize>().is_ok() {
                "[]".to_owned()
            } else {
                p.clone()
            }
        })
        .collect()
}

/// A `fields:` path into a list without an index, or through the XML's `<item>`: it can
/// never match (a list is not text), whatever the kind.
pub(crate) fn list_problem(path: &str) -> Option<String> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    let shape = shape_of(&parts);
    let all: Vec<&Kind> = KINDS.iter().collect();
    list_hint(&parts, &shape, &known_paths(&all))
}

fn list_hint(parts: &[String], shape: &[String], known: &BTreeSet<String>) -> Option<String> {
    let written = parts.join(".");
    // The XML written out: `ResultList.item.ArticleUrl` is `ResultList.0.ArticleUrl`.
    if let Some(at) = shape.iter().position(|p| p == "item") {
        let before = join(&shape[..at]);
        if known.contains(format!("{before}[]").as_str()) {
            let mut fixed: Vec<String> = parts[..at].to_vec();
            fixed.extend(parts[at + 1..].iter().cloned());
            let list = parts[..at].join(".");
            return Some(format!(
                "`{written}` follows the XML: `{list}` is a list of its `<item>`s; write `{{{{#each {list}}}}}…{{{{/each}}}}`, or `{list}.0.{}` for the first",
                parts[at + 1..].join(".")
            ));
        }
    }
    // Into a list without an index: `SubscribeMsgSentEvent.List.TemplateId`.
    for cut in (1..shape.len()).rev() {
        let head = join(&shape[..cut]);
        if known.contains(format!("{head}[]").as_str()) && shape.get(cut).is_some_and(|p| p != "[]")
        {
            let list = parts[..cut].join(".");
            let rest = parts[cut..].join(".");
            return Some(format!(
                "`{list}` is a list (one element per item, even when one comes): write `{{{{#each {list}}}}}{{{{{rest}}}}}{{{{/each}}}}`, or `{list}.0.{rest}` for the first"
            ));
        }
    }
    None
}

fn join(parts: &[String]) -> String {
    let mut out = String::new();
    for part in parts {
        if part == "[]" {
            out.push_str("[]");
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Whether `kind` carries `path` (in the shape of `known_paths`). Each kind's paths are
/// worked out once: a rule set of 100,000 rules asks this for each of their templates.
fn carries(kind: &Kind, path: &str) -> bool {
    static PATHS: std::sync::OnceLock<Vec<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        KINDS
            .iter()
            .map(|k| known_paths(&[k]).into_iter().collect())
            .collect()
    });
    KINDS
        .iter()
        .position(|k| std::ptr::eq(k, kind))
        .and_then(|at| paths.get(at))
        .is_some_and(|set| set.contains(path))
}

/// Every path the kinds carry, with the objects on the way (`ScanCodeInfo`).
fn known_paths(kinds: &[&Kind]) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = catalog::COMMON.iter().map(|c| (*c).to_owned()).collect();
    for kind in kinds {
        if kind.event.is_some() {
            known.insert("Event".to_owned());
        }
        for field in kind.fields {
            let mut path = String::new();
            for (i, part) in field.path.split('.').enumerate() {
                if i > 0 {
                    path.push('.');
                }
                path.push_str(part);
                known.insert(path.clone());
                if let Some(list) = path.strip_suffix("[]") {
                    known.insert(list.to_owned());
                }
            }
        }
    }
    known
}

/// The known path closest to `wanted`: the same but for ASCII case, or one within a few
/// edits.
fn nearest(wanted: &str, known: &BTreeSet<String>) -> Option<String> {
    if let Some(same) = known.iter().find(|k| k.eq_ignore_ascii_case(wanted)) {
        return Some(same.clone());
    }
    known
        .iter()
        .map(|k| {
            (
                strsim::jaro_winkler(&k.to_ascii_lowercase(), &wanted.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.replace("[]", ".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(msg_type: &str, event: Option<&str>) -> Vec<&'static Kind> {
        vec![catalog::kind(msg_type, event).unwrap()]
    }

    fn parts(path: &str) -> Vec<String> {
        path.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn paths_the_kinds_carry_pass_and_typos_get_a_suggestion() {
        let text = kinds("text", None);
        assert_eq!(problem(&parts("FromUserName"), &text), None);
        assert_eq!(problem(&parts("Content"), &text), None);
        assert_eq!(
            problem(&parts("FromUsername"), &text).unwrap(),
            "no message this rule can match carries `FromUsername`; did you mean `FromUserName`?"
        );
        assert_eq!(
            problem(&parts("Contnet"), &text).unwrap(),
            "no message this rule can match carries `Contnet`; did you mean `Content`?"
        );
        assert_eq!(
            problem(&parts("EventKey"), &text).unwrap(),
            "no message this rule can match carries `EventKey`"
        );
        let scan = kinds("event", Some("scancode_push"));
        assert_eq!(problem(&parts("ScanCodeInfo.ScanResult"), &scan), None);
        assert_eq!(
            problem(&parts("ScanCodeInfo.ScanResul"), &scan).unwrap(),
            "no message this rule can match carries `ScanCodeInfo.ScanResul`; did you mean `ScanCodeInfo.ScanResult`?"
        );
        let pics = kinds("event", Some("pic_sysphoto"));
        assert_eq!(
            problem(&parts("SendPicsInfo.PicList.0.PicMd5Sum"), &pics),
            None
        );
    }

    #[test]
    fn rules_on_unknown_kinds_are_held_only_to_the_common_fields() {
        let one = |p: &str| vec![p.to_owned()];
        assert_eq!(
            common_typo(&one("FromUsername")).unwrap(),
            "no message carries `FromUsername`; did you mean `FromUserName`?"
        );
        assert_eq!(
            common_typo(&one("CreatTime")).unwrap(),
            "no message carries `CreatTime`; did you mean `CreateTime`?"
        );
        for fine in [
            "EventKey",
            "CardId",
            "UserCardCode",
            "Event",
            "FromUserName",
        ] {
            assert_eq!(common_typo(&one(fine)), None, "{fine}");
        }
    }

    #[test]
    fn lists_are_pointed_out() {
        let sent = kinds("event", Some("subscribe_msg_sent_event"));
        assert_eq!(
            problem(&parts("SubscribeMsgSentEvent.List.0.TemplateId"), &sent),
            None
        );
        assert_eq!(
            problem(&parts("SubscribeMsgSentEvent.List.TemplateId"), &sent).unwrap(),
            "`SubscribeMsgSentEvent.List` is a list (one element per item, even when one comes): write `{{#each SubscribeMsgSentEvent.List}}{{TemplateId}}{{/each}}`, or `SubscribeMsgSentEvent.List.0.TemplateId` for the first"
        );
        let mass = kinds("event", Some("MASSSENDJOBFINISH"));
        assert_eq!(
            problem(&parts("ArticleUrlResult.ResultList.item.ArticleUrl"), &mass).unwrap(),
            "`ArticleUrlResult.ResultList.item.ArticleUrl` follows the XML: `ArticleUrlResult.ResultList` is a list of its `<item>`s; write `{{#each ArticleUrlResult.ResultList}}…{{/each}}`, or `ArticleUrlResult.ResultList.0.ArticleUrl` for the first"
        );
    }
}
