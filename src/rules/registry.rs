//! A rule set's compiled handlebars templates, with the template files' share held once per
//! process: rule sets whose template files are the same (accounts on one templates directory,
//! a reload that left the templates alone) hold one compiled copy. No IO; the share is a
//! table of weak references, so a copy lives as long as a rule set uses it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};

use handlebars::{Handlebars, RenderError};
use serde::Serialize;
use sha1::{Digest, Sha1};

use super::read::TemplateFile;
use super::templates;

/// What identifies a set of template files: a SHA-1 over every file's name and text, each
/// with its length, in the order the load reads them (sorted). Template files are the
/// operator's own: two sets meeting on one key would take files crafted for it by someone
/// who can already write the templates.
pub(crate) type Key = [u8; 20];

/// The compiled template files in use, by their key.
static SHARED: LazyLock<Mutex<Shared>> = LazyLock::new(|| Mutex::new(Shared::default()));

#[derive(Default)]
struct Shared {
    copies: HashMap<Key, Weak<Handlebars<'static>>>,
    /// When the table has this many entries, the dead ones are swept.
    sweep_at: usize,
}

/// A rule set's templates: the template files (shared) and the rules' own inline
/// templates. Inline templates that include partials are compiled with the files, unshared:
/// a partial is looked up in the registry a template renders from.
pub(crate) struct Registry {
    files: Arc<Handlebars<'static>>,
    /// The inline templates, when they live apart from the files.
    own: Option<Handlebars<'static>>,
}

impl Registry {
    /// Splits `all`, the registry a load compiled and checked (template files and inline
    /// templates, named by `inline`), into the shared files and the rules' own templates,
    /// and takes the files' compiled copy from the table when a rule set already holds it.
    pub(crate) fn new(
        mut all: Handlebars<'static>,
        files: &[TemplateFile],
        files_key: Key,
        inline: &[&str],
    ) -> Registry {
        super::tpl::call_values_as_json(&mut all);
        let crossing = inline.iter().any(|name| {
            all.get_template(name)
                .is_some_and(|t| templates::included_names(t).next().is_some())
        }) || files.iter().any(|f| {
            all.get_template(&f.name)
                .is_some_and(|t| templates::included_names(t).any(|n| inline.contains(&n.as_str())))
        });
        if crossing {
            return Registry {
                files: Arc::new(all),
                own: None,
            };
        }
        let own = (!inline.is_empty()).then(|| {
            let mut own = super::tpl::registry();
            for name in inline {
                if let Some(t) = all.get_template(name) {
                    own.register_template(name, t.clone());
                }
                all.unregister_template(name);
            }
            own
        });
        Registry {
            files: share(files_key, all),
            own,
        }
    }

    /// Renders the template `name` (a file's or an inline one) into `out`.
    pub(crate) fn render_to_write<W: std::io::Write>(
        &self,
        name: &str,
        data: &impl Serialize,
        out: W,
    ) -> Result<(), RenderError> {
        match &self.own {
            Some(own) if own.has_template(name) => own.render_to_write(name, data, out),
            _ => self.files.render_to_write(name, data, out),
        }
    }

    /// Whether `self` and `other` hold the same compiled copy of their template files.
    pub(crate) fn shares_files_with(&self, other: &Registry) -> bool {
        Arc::ptr_eq(&self.files, &other.files)
    }
}

/// The key of `files`, and the compiled copy of them a living rule set holds, if one does:
/// a load starts from a clone of it (cheaper than compiling them again) and ends up sharing it.
pub(crate) fn lookup(files: &[TemplateFile]) -> (Key, Option<Arc<Handlebars<'static>>>) {
    let key = key(files);
    let shared = SHARED.lock();
    let copy = shared.copies.get(&key).and_then(Weak::upgrade);
    (key, copy)
}

fn key(files: &[TemplateFile]) -> Key {
    let mut h = Sha1::new();
    for f in files {
        for part in [&f.name, &f.text] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    h.finalize().into()
}

/// The table's copy of the files keyed `key` if a rule set holds one, else `compiled`, now
/// in the table.
fn share(key: Key, compiled: Handlebars<'static>) -> Arc<Handlebars<'static>> {
    let mut shared = SHARED.lock();
    if let Some(copy) = shared.copies.get(&key).and_then(Weak::upgrade) {
        return copy;
    }
    let copy = Arc::new(compiled);
    shared.copies.insert(key, Arc::downgrade(&copy));
    if shared.copies.len() >= shared.sweep_at {
        shared.copies.retain(|_, w| w.strong_count() > 0);
        shared.sweep_at = (shared.copies.len() * 2).max(64);
    }
    copy
}

#[cfg(test)]
mod tests {
    use crate::render::first_reply;
    use crate::rules::{load_str, RuleSet};
    use crate::wire::Reply;

    const FILES: &[(&str, &str)] = &[
        ("greet", "你好 {{FromUserName}}"),
        ("frame", "[{{> greet}}]"),
    ];

    fn load(yaml: &str, files: &[(&str, &str)]) -> RuleSet {
        load_str(yaml, files)
            .unwrap_or_else(|e| panic!("{e}"))
            .rules
    }

    /// The text a rule set answers to a text message `content`.
    fn answer(rules: &RuleSet, content: &str) -> String {
        let xml = format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o_user</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>text</MsgType><Content>{content}</Content>\
             <MsgId>1</MsgId></xml>"
        );
        match first_reply(rules, &xml).unwrap() {
            Reply::Text { content } => content,
            other => panic!("{other:?}"),
        }
    }

    /// Rules that use both files and an inline template of their own (`{{#if}}`, so
    /// handlebars compiles it).
    fn rules(who: &str) -> String {
        format!(
            "rules:\n\
             - {{ name: g, when: {{ keyword: g }}, reply: {{ text: {{ template: greet }} }} }}\n\
             - {{ name: f, when: {{ keyword: f }}, reply: {{ text: {{ template: frame }} }} }}\n\
             - {{ name: own, when: {{ keyword: own }},\n    \
                  reply: {{ text: '{{{{#if FromUserName}}}}{who} {{{{FromUserName}}}}{{{{/if}}}}' }} }}\n"
        )
    }

    #[test]
    fn rule_sets_with_the_same_files_share_them_and_keep_their_own_templates() {
        let a = load(&rules("甲"), FILES);
        let b = load(&rules("乙"), FILES);
        assert!(a.shares_templates_with(&b));
        assert_eq!(answer(&a, "own"), "甲 o_user");
        assert_eq!(answer(&b, "own"), "乙 o_user");
        for set in [&a, &b] {
            assert_eq!(answer(set, "g"), "你好 o_user");
            assert_eq!(answer(set, "f"), "[你好 o_user]");
        }
    }

    #[test]
    fn different_files_are_compiled_apart() {
        let a = load(&rules("甲"), FILES);
        let b = load(&rules("甲"), &[("greet", "hi {{FromUserName}}"), FILES[1]]);
        assert!(!a.shares_templates_with(&b));
        assert_eq!(answer(&a, "f"), "[你好 o_user]");
        assert_eq!(answer(&b, "f"), "[hi o_user]");
        // A file's name and text are told apart by their lengths, not by a separator.
        let c = load(
            "rules:\n- { name: x, when: { keyword: x }, reply: { text: { template: ab } } }\n",
            &[("ab", "c")],
        );
        let d = load(
            "rules:\n- { name: x, when: { keyword: x }, reply: { text: { template: a } } }\n",
            &[("a", "bc")],
        );
        assert!(!c.shares_templates_with(&d));
        assert_eq!(
            (answer(&c, "x"), answer(&d, "x")),
            ("c".into(), "bc".into())
        );
    }

    #[test]
    fn inline_templates_that_include_files_render_with_them_unshared() {
        let yaml = "rules:\n\
            - { name: p, when: { keyword: p }, reply: { text: '<{{> greet}}>' } }\n";
        let a = load(yaml, FILES);
        let b = load(yaml, FILES);
        assert_eq!(answer(&a, "p"), "<你好 o_user>");
        assert!(!a.shares_templates_with(&b));
        let plain = load(&rules("甲"), FILES);
        assert!(!plain.shares_templates_with(&a));
        assert_eq!(answer(&plain, "f"), "[你好 o_user]");
    }

    #[test]
    fn a_load_on_files_compiled_already_still_checks_its_rules_against_them() {
        let files = [("ev", "场景 {{EventKey}}")];
        let a = load(
            "rules:\n- { name: s, when: { event: SCAN }, reply: { text: { template: ev } } }\n",
            &files,
        );
        // The files are taken from `a`'s copy, and still checked: a text message has no
        // EventKey, and `nope` is no file.
        let errors = load_str(
            "rules:\n- { name: k, when: { keyword: x }, reply: { text: { template: ev } } }\n\
             - { name: n, when: { keyword: y }, reply: { text: { template: nope } } }\n",
            &files,
        )
        .unwrap_err()
        .to_string();
        assert!(errors.contains("carries `EventKey`"), "{errors}");
        assert!(errors.contains("`nope`"), "{errors}");
        let b = load(
            "rules:\n- { name: s2, when: { event: SCAN }, reply: { text: { template: ev } } }\n",
            &files,
        );
        assert!(a.shares_templates_with(&b));
    }

    #[test]
    fn an_inline_template_never_takes_a_files_name() {
        // A file named as the rule's first inline template would be: both render, and the
        // shared copy keeps the file for rule sets without that rule.
        let files = [("w#1", "文件 {{#if MsgId}}{{MsgId}}{{/if}}")];
        let a = load(
            "rules:\n- { name: w, when: { keyword: i }, reply: { text: '行内 {{#if MsgId}}{{MsgId}}{{/if}}' } }\n\
             - { name: f, when: { keyword: f }, reply: { text: { template: 'w#1' } } }\n",
            &files,
        );
        assert_eq!(answer(&a, "i"), "行内 1");
        assert_eq!(answer(&a, "f"), "文件 1");
        let b = load(
            "rules:\n- { name: g, when: { keyword: f }, reply: { text: { template: 'w#1' } } }\n",
            &files,
        );
        assert!(a.shares_templates_with(&b));
        assert_eq!(answer(&b, "f"), "文件 1");
    }

    #[test]
    fn a_copy_outlives_no_rule_set() {
        // Files of this test's own: the other tests run alongside.
        let files = [("greet", "再见 {{FromUserName}}"), FILES[1]];
        let a = load(&rules("甲"), &files);
        let weak = std::sync::Arc::downgrade(&a.templates.files);
        drop(a);
        assert!(weak.upgrade().is_none());
        let b = load(&rules("乙"), &files);
        assert_eq!(answer(&b, "f"), "[再见 o_user]");
    }
}
