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
                Tpl::Literal(_) | Tpl::Media(_) => continue,
                Tpl::Simple(simple) => (
                    simple.file().map(str::to_owned),
                    simple
                        .paths()
                        .map(|parts| fields::UsedPath {
                            parts: parts.to_vec(),
                            at: None,
                            guarded: false,
                            each: false,
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
                    "state" => state_problem(&used.parts),
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
                // A loop over what the catalog does not know as a list works until WeChat
                // sends one element: a warning, once the path itself is fine.
                let (problem, warning) = match problem {
                    Some(problem) => (problem, false),
                    None if used.each
                        && !matches!(
                            used.parts[0].as_str(),
                            "rule" | "call" | "captures" | "state"
                        ) =>
                    {
                        match fields::each_problem(&used.parts, kinds.as_deref()) {
                            Some(problem) => (problem, true),
                            None => continue,
                        }
                    }
                    None => continue,
                };
                let message = if warning {
                    format!("`{{{{#each {written}}}}}`: {problem}")
                } else {
                    format!("`{{{{{written}}}}}`: {problem}")
                };
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
                    let found = RuleError {
                        location,
                        rule: Some(path.rule_name().to_owned()),
                        message,
                    };
                    if warning {
                        c.warnings.push(found);
                    } else {
                        c.errors.push(found);
                    }
                }
            }
        }
    }
}

/// What is wrong with a `state.…` path: templates see `state.name`, `state.tries` and
/// `state.vars.NAME` (or `state.vars` whole).
fn state_problem(parts: &[String]) -> Option<String> {
    match parts {
        [_] => None,
        [_, field] if matches!(field.as_str(), "name" | "tries" | "vars") => None,
        [_, vars, _] if vars == "vars" => None,
        _ => Some(format!(
            "templates see `state.name`, `state.tries` and `state.vars.NAME`, not `{}`",
            parts.join(".")
        )),
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
                if let Ok(hir) = regex_syntax::parse(regex.as_str()) {
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
        Tpl::Literal(_) | Tpl::Media(_) => false,
        Tpl::Simple(simple) => simple.roots().any(|r| r == root),
        Tpl::Template(name) => c
            .templates
            .get_template(name)
            .is_some_and(|t| templates::uses_root(t, root)),
    };
    match spec {
        ReplySpec::Text(t) | ReplySpec::Image(t) | ReplySpec::Voice(t) => tpl(t),
        ReplySpec::Choices(choices) => tpl(&choices.text),
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

#[cfg(test)]
mod tests {
    use crate::rules::load_str;

    fn warnings(yaml: &str, templates: &[(&str, &str)]) -> Vec<String> {
        let loaded = load_str(yaml, templates).unwrap_or_else(|e| panic!("{e}"));
        loaded.warnings.iter().map(ToString::to_string).collect()
    }

    /// `{{#each}}` over what WeChat sends once per push (an object, a text) works by
    /// accident or not at all; over a list the catalog knows, whatever the count. Before,
    /// nothing was said: the rule loaded, and the push with one element got nothing.
    #[test]
    fn each_over_a_path_the_catalog_does_not_know_as_a_list_is_a_warning() {
        let yaml = "rules:\n  - name: beacons\n    when: { event: ShakearoundUserShake }\n    reply: { text: \"{{#each AroundBeacons.AroundBeacon}}{{Distance}} {{/each}}\" }\n  - name: chosen\n    when: { event: ShakearoundUserShake }\n    reply: { text: \"{{#each ChosenBeacon}}{{this}}{{/each}}\" }\n  - name: published\n    when: { event: PUBLISHJOBFINISH }\n    reply: { text: { template: published } }\n  - name: anything\n    when: { fields: { Foo: bar } }\n    reply: { text: \"{{#each Foo.Bar}}{{this}}{{/each}} {{#each SendPicsInfo.PicList}}{{PicMd5Sum}}{{/each}}\" }\n";
        let published = "{{#each PublishEventInfo.article_detail.item}}{{article_url}}{{/each}}\n{{#each PublishEventInfo.fail_idx}}{{this}}{{/each}}\n{{#each PublishEventInfo.article_detail}}{{this}}{{/each}}";
        assert_eq!(
            warnings(yaml, &[("published", published)]),
            [
                "rules.yaml:7:14: rule `chosen`: `{{#each ChosenBeacon}}`: `ChosenBeacon` is not a list in what WeChat sends (wxrules' catalog knows no list there): when one element comes it is not a list, and the loop does not walk it",
                "templates/published.hbs:3:1: rule `published`: `{{#each PublishEventInfo.article_detail}}`: `PublishEventInfo.article_detail` is not a list in what WeChat sends (wxrules' catalog knows no list there): when one element comes it is not a list, and the loop does not walk it",
                "rules.yaml:13:14: rule `anything`: `{{#each Foo.Bar}}`: `Foo.Bar` is not a list in what WeChat sends (wxrules' catalog knows no list there): when one element comes it is not a list, and the loop does not walk it",
            ]
        );
    }
}
