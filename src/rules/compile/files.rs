//! Template files as rules use them: the form each one takes (a literal, a `Simple`
//! template, or handlebars), why one does not compile, and, once every template is
//! registered, whether each can render. No IO: the files arrive read.

use std::collections::HashMap;
use std::path::Path;

use super::Compiler;
use crate::rules::read::TemplateFile;
use crate::rules::templates::{self, MAX_TEMPLATE_NESTING};
use crate::rules::tpl;
use crate::rules::{Location, RuleError, Tpl};

/// Registers each template file and knows it by name, in the form a reply uses it.
/// `compiled`: `c.templates` came from a living rule set whose files are these, every one
/// compiled and checked when that set loaded.
pub(super) fn register(c: &mut Compiler<'_>, template_files: &[TemplateFile], compiled: bool) {
    for t in template_files {
        if compiled {
            // Compiled and checked when that rule set loaded: every file registered.
            c.known_templates.insert(t.name.clone(), known_form(t));
            continue;
        }
        if let Some(at) = templates::too_deep(&t.text) {
            c.errors.push(RuleError {
                location: Location::new(&t.path, Some(at)),
                rule: None,
                message: too_deep_message(),
            });
            // Known, so references to it do not also report "not found".
            c.known_templates
                .insert(t.name.clone(), Tpl::Template(t.name.clone()));
            continue;
        }
        match c.templates.register_template_string(&t.name, &t.text) {
            Ok(()) => {
                c.known_templates.insert(t.name.clone(), known_form(t));
            }
            Err(e) => {
                c.errors.push(RuleError {
                    location: Location::new(&t.path, e.pos()),
                    rule: None,
                    message: format!("template does not compile: {}", template_reason(&e)),
                });
                // Known, so references to it do not also report "not found".
                c.known_templates
                    .insert(t.name.clone(), Tpl::Template(t.name.clone()));
            }
        }
    }
}

/// A warning for each template file no rule uses.
pub(super) fn warn_unused(
    c: &Compiler<'_>,
    template_files: &[TemplateFile],
    warnings: &mut Vec<RuleError>,
) {
    for t in template_files {
        if !c.used_templates.contains(&t.name) {
            warnings.push(RuleError {
                location: Location::new(&t.path, None),
                rule: None,
                message: format!("template `{}` is not used by any rule", t.name),
            });
        }
    }
}

/// How a rule renders the template file `t`: a literal or a `Simple` template when it is one
/// (still registered: handlebars templates may use it as a partial), else by handlebars.
pub(super) fn known_form(t: &TemplateFile) -> Tpl {
    match fast_form(&t.text) {
        Some(Tpl::Simple(simple)) => Tpl::Simple(simple.read_from(&t.name)),
        Some(fast) => fast,
        None => Tpl::Template(t.name.clone()),
    }
}

pub(super) fn too_deep_message() -> String {
    format!("template nests blocks or subexpressions more than {MAX_TEMPLATE_NESTING} levels deep")
}

/// Reports every registered template that cannot render (`rules::templates::problems`):
/// a template file's at its file, line and column; an inline template's at its rule.
pub(super) fn check_partials(c: &mut Compiler<'_>, template_files: &[TemplateFile]) {
    let files: HashMap<&str, &Path> = template_files
        .iter()
        .map(|t| (t.name.as_str(), t.path.as_path()))
        .collect();
    for problem in templates::problems(&c.templates) {
        if let Some(path) = files.get(problem.template.as_str()) {
            c.errors.push(RuleError {
                location: Location::new(path, problem.at),
                rule: None,
                message: problem.message,
            });
        } else if let Some((rule, path)) = c.inline_templates.get(&problem.template).cloned() {
            let at = c.positions.value(&path);
            let within = problem
                .at
                .map(|(l, col)| format!(" (template line {l}, column {col})"))
                .unwrap_or_default();
            c.error(Some(&rule), at, format!("{}{within}", problem.message));
        }
    }
}

/// handlebars reports a syntax error as the list of tokens its grammar expected there; an
/// operator needs the likely cause instead.
pub(super) fn template_reason(e: &handlebars::TemplateError) -> String {
    let reason = e.reason().to_string();
    if reason.starts_with("invalid handlebars syntax") {
        "invalid handlebars syntax: an unclosed `{{#block}}`, or unbalanced `{{ }}`".to_owned()
    } else {
        reason
    }
}

/// A template's text as a literal (no `{{` at all) or a `Simple` template, when it is one:
/// both render exactly as handlebars would, without it.
pub(super) fn fast_form(text: &str) -> Option<Tpl> {
    if !text.contains("{{") {
        return Some(Tpl::Literal(text.to_owned()));
    }
    tpl::parse_simple(text).map(Tpl::Simple)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::rules::compile::compile;
    use crate::rules::read::TemplateFile;
    use crate::rules::{Action, ReplySpec, Tpl};

    #[test]
    fn template_files_take_the_fastest_form_that_renders_the_same() {
        let file = |name: &str, text: &str| TemplateFile {
            name: name.to_owned(),
            path: PathBuf::from(format!("templates/{name}.hbs")),
            text: text.to_owned(),
        };
        let yaml = "rules:
  - { name: a, when: { keyword: a }, reply: { text: { template: plain } } }
  - { name: b, when: { keyword: b }, reply: { text: { template: fields } } }
  - { name: c, when: { keyword: c }, reply: { text: { template: blocks } } }
";
        let files = [
            file("plain", "价格：¥99/月"),
            file("fields", "hi {{FromUserName}}"),
            file("blocks", "{{#if Content}}yes{{/if}}"),
        ];
        let rules = compile(Path::new("rules.yaml"), yaml, &files, None)
            .unwrap()
            .rules;
        let texts: Vec<&Tpl> = rules
            .rules()
            .iter()
            .map(|r| match &r.action {
                Action::Reply(ReplySpec::Text(tpl)) => tpl,
                other => panic!("unexpected action {other:?}"),
            })
            .collect();
        assert_eq!(texts[0], &Tpl::Literal("价格：¥99/月".to_owned()));
        assert!(matches!(texts[1], Tpl::Simple(_)), "{:?}", texts[1]);
        assert_eq!(texts[2], &Tpl::Template("blocks".to_owned()));
    }

    #[test]
    fn a_simple_template_file_names_itself_in_render_errors() {
        let files = [TemplateFile {
            name: "greeting".to_owned(),
            path: PathBuf::from("templates/greeting.hbs"),
            text: "hi {{Recognition}}".to_owned(),
        }];
        // `Recognition` comes with voice messages only: a text message fails to render it.
        let yaml = "rules:
  - { name: file, when: { keyword: a }, reply: { text: { template: greeting } } }
  - { name: inline, when: { keyword: b }, reply: { text: \"hi {{Recognition}}\" } }
";
        let rules = compile(Path::new("rules.yaml"), yaml, &files, None)
            .unwrap()
            .rules;
        let failed = |keyword: &str| {
            let xml = format!(
                "<xml><ToUserName>t</ToUserName><FromUserName>f</FromUserName>\
                 <CreateTime>1</CreateTime><MsgType>text</MsgType>\
                 <Content>{keyword}</Content><MsgId>1</MsgId></xml>"
            );
            let message = crate::wire::Message::parse(xml.as_bytes()).unwrap();
            match crate::answer::answer(&rules, &message, 1) {
                crate::answer::Outcome::Failed { error, .. } => error.template,
                _ => panic!("the template must fail"),
            }
        };
        assert_eq!(failed("a"), "greeting");
        assert_eq!(failed("b"), "inline");
    }
}
