//! What a rule's templates may reference, held to what the rule can see: the fields of the
//! messages its criteria match (`rules::fields`), the groups of its regexes (`captures.…`),
//! and `call.…` only where its service has answered. Errors only; nothing is compiled here.

use std::collections::HashSet;

use super::at::At;
use super::reply::collect_tpls;
use super::Compiler;
use crate::rules::fields;
use crate::rules::matcher::{Criteria, Pattern};
use crate::rules::templates;
use crate::rules::{Location, ReplySpec, RuleError, Tpl};

/// Holds each template of a rule's replies to the fields of the messages the rule can match
/// (`rules::fields`), and its `captures.…` to the groups of its regexes. `specs`: each reply
/// of the rule, with its place.
pub(super) fn check_fields(c: &mut Compiler<'_>, when: &Criteria, specs: &[(At<'_>, &ReplySpec)]) {
    let kinds = fields::matchable(when);
    let mut groups: Option<(Vec<String>, usize)> = None;
    // One error per place and message, however many strings of the rule share a template.
    let mut reported: HashSet<String> = HashSet::new();
    for (path, spec) in specs {
        let mut tpls = Vec::new();
        collect_tpls(spec, &mut tpls);
        for tpl in tpls {
            // Where an error about this string points: the template file, or the YAML.
            let (file, used): (Option<String>, Vec<fields::UsedPath>) = match tpl {
                Tpl::Literal(_) => continue,
                Tpl::Simple(simple) => (
                    simple.file().map(str::to_owned),
                    simple
                        .paths()
                        .map(|parts| fields::UsedPath {
                            parts: parts.to_vec(),
                            at: None,
                            guarded: false,
                        })
                        .collect(),
                ),
                Tpl::Template(name) => {
                    let Some(t) = c.templates.get_template(name) else {
                        continue;
                    };
                    let file = (!c.inline_templates.contains_key(name)).then(|| name.clone());
                    (file, fields::template_paths(t))
                }
            };
            for used in used {
                let written = used.parts.join(".");
                let problem = match used.parts[0].as_str() {
                    "rule" | "call" => None,
                    "captures" => {
                        let (names, count) = groups.get_or_insert_with(|| regex_groups(when));
                        capture_problem(&used.parts, names, *count)
                    }
                    _ => match (&kinds, used.guarded) {
                        (Some(_), true) => fields::guarded_problem(&used.parts),
                        (Some(kinds), false) => fields::problem(&used.parts, kinds),
                        (None, _) => fields::common_typo(&used.parts),
                    },
                };
                let Some(problem) = problem else { continue };
                let message = format!("`{{{{{written}}}}}`: {problem}");
                let file_path = file.as_ref().and_then(|name| c.template_files.get(name));
                let (location, at) = match file_path {
                    Some(file_path) => (Location::new(file_path, used.at), used.at),
                    None => {
                        let at = c.value_at(*path);
                        (Location::new(c.file, at), at)
                    }
                };
                let key = format!("{}:{at:?}:{message}", location.path.display());
                if reported.insert(key) {
                    c.errors.push(RuleError {
                        location,
                        rule: Some(path.rule_name().to_owned()),
                        message,
                    });
                }
            }
        }
    }
}

/// The named groups of a rule's regexes, and the most groups any of them has (group 0, the
/// whole match, included).
fn regex_groups(when: &Criteria) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut count = 0;
    for test in &when.tests {
        for pattern in &test.matcher.patterns {
            if let Pattern::Regex(regex) = pattern {
                // Parsed, not compiled: keyword regexes are compiled on first use.
                if let Ok(hir) = regex_syntax::parse(regex.pattern()) {
                    let mut groups = 0;
                    capture_names(&hir, &mut names, &mut groups);
                    count = count.max(groups + 1);
                }
            }
        }
    }
    (names, count)
}

/// The names of the capture groups in `hir`, and how many groups (group 0 aside).
fn capture_names(hir: &regex_syntax::hir::Hir, names: &mut Vec<String>, groups: &mut usize) {
    use regex_syntax::hir::HirKind;
    match hir.kind() {
        HirKind::Capture(capture) => {
            *groups += 1;
            names.extend(capture.name.as_deref().map(str::to_owned));
            capture_names(&capture.sub, names, groups);
        }
        HirKind::Concat(list) | HirKind::Alternation(list) => {
            for h in list {
                capture_names(h, names, groups);
            }
        }
        HirKind::Repetition(rep) => capture_names(&rep.sub, names, groups),
        _ => {}
    }
}

/// What is wrong with `captures.NAME` (or `captures.[N]`) for a rule whose regexes define
/// `names` and at most `count` groups.
fn capture_problem(parts: &[String], names: &[String], count: usize) -> Option<String> {
    let name = parts.get(1)?;
    if let Ok(n) = name.parse::<usize>() {
        return (n >= count).then(|| match count {
            0 => "this rule has no regex, so no captures".to_owned(),
            _ => format!("this rule's regexes have groups 0 to {} at most", count - 1),
        });
    }
    if names.iter().any(|n| n == name) {
        return None;
    }
    Some(match (names.is_empty(), count) {
        (_, 0) => "this rule has no regex, so no captures".to_owned(),
        (true, _) => {
            format!("this rule's regexes name no group `{name}` (they have numbered groups only)")
        }
        (false, _) => {
            let near = names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(name) || strsim::jaro_winkler(n, name) >= 0.85);
            let mut message = format!(
                "this rule's regexes name no group `{name}` (they define: {})",
                names.join(", ")
            );
            if let Some(near) = near {
                message.push_str(&format!("; did you mean `captures.{near}`?"));
            }
            message
        }
    })
}

/// An error when `spec` uses `call.…`, which it cannot see.
pub(super) fn no_call_in(c: &mut Compiler<'_>, at: At<'_>, spec: &ReplySpec, why: &str) {
    if uses_root(c, spec, "call") {
        c.error_at(at, format!("{why}: its templates cannot use `call.…`"));
    }
}

/// Whether any string of `spec` references a path starting with `root` (`call`).
pub(super) fn uses_root(c: &Compiler<'_>, spec: &ReplySpec, root: &str) -> bool {
    let tpl = |t: &Tpl| match t {
        Tpl::Literal(_) => false,
        Tpl::Simple(simple) => simple.roots().any(|r| r == root),
        Tpl::Template(name) => c
            .templates
            .get_template(name)
            .is_some_and(|t| templates::uses_root(t, root)),
    };
    match spec {
        ReplySpec::Text(t) | ReplySpec::Image(t) | ReplySpec::Voice(t) => tpl(t),
        ReplySpec::Video(v) => [&v.media_id, &v.title, &v.description].into_iter().any(tpl),
        ReplySpec::Music(m) => [
            &m.title,
            &m.description,
            &m.music_url,
            &m.hq_music_url,
            &m.thumb_media_id,
        ]
        .into_iter()
        .any(tpl),
        ReplySpec::News(articles) => articles.iter().any(|a| {
            [&a.title, &a.description, &a.pic_url, &a.url]
                .into_iter()
                .any(tpl)
        }),
        ReplySpec::TransferCustomerService(account) => account.as_ref().is_some_and(tpl),
        ReplySpec::OneOf(choices) => choices.iter().any(|choice| uses_root(c, choice, root)),
    }
}
