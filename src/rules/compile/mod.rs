//! Raw rules → `RuleSet`: read the files, type every rule, build matchers, regexes and
//! templates, resolve template names, and collect every error with its file:line:col.
//!
//! Here: `load`/`load_str` and the steps of a load, in order. The parts of a rule have a
//! file each: `when` (criteria), `reply` (replies and their strings), `call` (`call`,
//! `on_error`, `late`), `check` (what templates may reference), `rule` (the rest of a
//! rule), `files` (template files). No IO but `load`'s reads, through `rules::read`.

mod call;
mod check;
mod files;
mod reply;
mod rule;
mod when;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use handlebars::Handlebars;
use sha1::{Digest, Sha1};

use super::locate::{LazyPositions, MAX_YAML_DEPTH};
use super::matcher::Index;
use super::read::{self, TemplateFile};
use super::registry::{self, Registry};
use super::schema;
use super::split::{self, LineIndex};
use super::templates;
use super::tpl;
use super::{Action, LoadError, Loaded, Location, ReplySpec, Rule, RuleError};
use super::{RuleSet, Sources, Tpl};
use call::compile_call;
use check::{check_fields, uses_root};
use files::{check_partials, known_form, template_reason, too_deep_message};
use reply::{compile_reply, compile_send, unsendable};
use rule::{compile_active, MAX_COOLDOWN};
use when::compile_when;

pub(crate) use call::MAX_CALL_TIMEOUT;
pub(crate) use reply::collect_tpls;
pub use reply::MAX_ARTICLES;

/// Loads and compiles the rules file and templates directory of `sources`.
///
/// Returns every error found (unreadable file, YAML syntax, unknown key, duplicate name, bad
/// regex, missing or broken template), each with file, line and column; nothing partial.
pub fn load(sources: &Sources) -> Result<Loaded, LoadError> {
    let fail = |path: &Path, message: String| {
        LoadError(vec![RuleError {
            location: Location::new(path, None),
            rule: None,
            message,
        }])
    };
    let source = read::read_text(&sources.rules, read::MAX_RULES_FILE)
        .map_err(|e| fail(&sources.rules, format!("cannot read rules file: {e}")))?;
    let files = read::read_templates(&sources.templates)
        .map_err(|e| fail(&e.path, format!("cannot read templates: {}", e.error)))?;
    compile(&sources.rules, &source, &files)
}

/// Loads and compiles rules and templates held in memory, as `load` does files: `yaml` as if
/// read from `rules.yaml`, and each `(name, text)` as `templates/NAME.hbs`. For fuzzing,
/// tests and anything that builds rules without a directory.
pub fn load_str(yaml: &str, templates: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    let files: Vec<TemplateFile> = templates
        .iter()
        .map(|(name, text)| TemplateFile {
            name: (*name).to_owned(),
            path: Path::new("templates").join(format!("{name}.hbs")),
            text: (*text).to_owned(),
        })
        .collect();
    compile(Path::new("rules.yaml"), yaml, &files)
}

/// What compiling one rule needs to know and where it reports.
struct Compiler<'a> {
    file: &'a Path,
    positions: LazyPositions<'a>,
    templates: Handlebars<'static>,
    /// Each template file by name, in the form a reply uses it: a literal or a `Simple`
    /// template when it is one (rendered without handlebars), else the registered template.
    known_templates: HashMap<String, Tpl>,
    used_templates: HashSet<String>,
    errors: Vec<RuleError>,
    inline_count: usize,
    /// Each inline handlebars template registered, by its registry name: its rule and the
    /// YAML path of its string, where its errors point.
    inline_templates: HashMap<String, (String, String)>,
    /// Each template file's path, by name.
    template_files: HashMap<String, std::path::PathBuf>,
    warnings: Vec<RuleError>,
}

impl Compiler<'_> {
    fn error(&mut self, rule: Option<&str>, at: Option<(usize, usize)>, message: String) {
        self.errors.push(RuleError {
            location: Location::new(self.file, at),
            rule: rule.map(str::to_owned),
            message,
        });
    }
}

fn compile(
    file: &Path,
    source: &str,
    template_files: &[TemplateFile],
) -> Result<Loaded, LoadError> {
    // The outline pass finds where each rule starts; in a plain file (the usual case) the
    // rules are then typed in pieces on every core, else the file is typed whole.
    let positions = LazyPositions::new(source);
    if let Some(at) = positions.too_deep() {
        return Err(LoadError(vec![RuleError {
            location: Location::new(file, Some(at)),
            rule: None,
            message: format!(
                "nested more than {MAX_YAML_DEPTH} levels deep; a rule needs a handful"
            ),
        }]));
    }
    let lines = LineIndex::new(source);
    let parsed = match positions
        .plain_rule_starts()
        .and_then(|starts| split::type_rules(source, &lines, starts))
    {
        Some(rules) => Ok(rules.into_iter().map(RuleInput::Typed).collect()),
        None => parse_rules(source),
    };
    // Template files a living rule set holds compiled (of another account on the same
    // directory, or the set this load will replace) are not compiled again.
    let (files_key, compiled) = registry::lookup(template_files);
    let mut c = Compiler {
        file,
        positions,
        templates: compiled.as_deref().cloned().unwrap_or_else(tpl::registry),
        known_templates: HashMap::new(),
        used_templates: HashSet::new(),
        errors: Vec::new(),
        inline_count: 0,
        inline_templates: HashMap::new(),
        template_files: template_files
            .iter()
            .map(|t| (t.name.clone(), t.path.clone()))
            .collect(),
        warnings: Vec::new(),
    };
    for t in template_files {
        if compiled.is_some() {
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

    let inputs = match parsed {
        Ok(inputs) => inputs,
        Err(e) => {
            let at = e.position.or_else(|| c.positions.key(&e.path));
            c.error(None, at, e.message);
            return Err(LoadError(c.errors));
        }
    };

    // The file's time zone, checked once, at its own line.
    if let Some(tz) = c.positions.timezone() {
        if jiff::tz::TimeZone::get(tz).is_err() {
            let at = c.positions.value("timezone");
            c.error(
                None,
                at,
                format!(
                    "`timezone`: `{tz}` is not a time zone (an IANA name such as `Asia/Shanghai`)"
                ),
            );
            return Err(LoadError(c.errors));
        }
    }
    let spans = rule_spans(source, &lines, c.positions.rule_lines());
    let mut rules = Vec::with_capacity(inputs.len());
    let mut names: HashMap<String, usize, foldhash::fast::RandomState> = HashMap::default();
    for (i, input) in inputs.into_iter().enumerate() {
        let base = format!("rules[{i}]");
        let rule_at = c.positions.rule(i);
        let raw_rule = match input {
            RuleInput::Typed(r) => r,
            RuleInput::Failed { name, error: e } => {
                let path = if e.path == "." {
                    base.clone()
                } else {
                    format!("{base}.{}", e.path)
                };
                let at = if let Some(key) = unknown_field_key(&e.message) {
                    // serde_path_to_error's path may or may not end with the unknown key.
                    let key_path = if path.ends_with(&format!(".{key}")) {
                        path.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    c.positions.key(&key_path)
                } else {
                    c.positions.value(&path)
                };
                c.error(name.as_deref(), at, e.message);
                continue;
            }
        };
        let fingerprint = {
            // The rule's own text: a change anywhere in it is a changed rule.
            let mut h = std::hash::DefaultHasher::new();
            spans.get(i).hash(&mut h);
            raw_rule.name.0.hash(&mut h);
            h.finish()
        };
        let name = raw_rule.name.0;
        if name.trim().is_empty() {
            c.error(None, rule_at, "rule name is empty".into());
            continue;
        }
        if let Some(first) = names.get(&name) {
            let first_line = *first;
            let at = c.positions.value(&format!("{base}.name"));
            c.error(
                Some(&name),
                at,
                format!("duplicate rule name (first used on line {first_line})"),
            );
            continue;
        }
        let (line, column) = rule_at.unwrap_or((0, 0));
        names.insert(name.clone(), line);
        let errors_before = c.errors.len();
        let when = compile_when(&mut c, &name, &base, raw_rule.when);
        let has_call = raw_rule.call.is_some();
        let action = match (raw_rule.reply, raw_rule.ignore) {
            (Some(_), true) => {
                c.error(
                    Some(&name),
                    rule_at,
                    "a rule has either `reply` or `ignore: true`, not both".into(),
                );
                None
            }
            // A rule with a call and no reply leaves the answer to its service.
            (None, false) if has_call => Some(Action::Ignore),
            (None, false) => {
                c.error(
                    Some(&name),
                    rule_at,
                    "a rule needs `reply` or `ignore: true`".into(),
                );
                None
            }
            (None, true) => Some(Action::Ignore),
            (Some(reply), false) => {
                compile_reply(&mut c, &name, &format!("{base}.reply"), reply).map(Action::Reply)
            }
        };
        if matches!(action, Some(Action::Ignore)) && !raw_rule.send.is_empty() {
            let at = c.positions.key(&format!("{base}.send"));
            let why = if raw_rule.ignore {
                "a rule with `ignore: true` cannot send"
            } else {
                "give the rule a `reply` (a rule whose service decides has none of its own)"
            };
            c.error(
                Some(&name),
                at,
                format!("`send` goes out after a passive reply: {why}"),
            );
        }
        let send = compile_send(&mut c, &name, &base, raw_rule.send);
        let call = compile_call(
            &mut c,
            &name,
            &base,
            raw_rule.call,
            raw_rule.on_error,
            raw_rule.late,
        );
        // A late call's reply, and its `on_error`, go out through the customer-service API.
        if let Some(late_call) = call.as_ref().filter(|c| c.late.is_some()) {
            let reply = match &action {
                Some(Action::Reply(spec)) => Some((format!("{base}.reply"), spec)),
                _ => None,
            };
            let on_error = late_call
                .on_error
                .as_ref()
                .map(|spec| (format!("{base}.on_error"), spec));
            let problems: Vec<(String, String)> = reply
                .into_iter()
                .chain(on_error)
                .filter_map(|(path, spec)| unsendable(spec).map(|why| (path, why)))
                .collect();
            for (path, why) in problems {
                let at = c.positions.value(&path);
                c.error(
                    Some(&name),
                    at,
                    format!("a `late` rule's reply may go out through the customer-service API, which takes text, image, voice, video, music or news of one article; {why}"),
                );
            }
        }
        if !has_call {
            let uses_call = match &action {
                Some(Action::Reply(spec)) => uses_root(&c, spec, "call"),
                _ => false,
            };
            let using: Vec<(String, bool)> =
                [(format!("{base}.reply"), uses_call)]
                    .into_iter()
                    .chain(send.iter().enumerate().map(|(i, spec)| {
                        (format!("{base}.send[{i}]"), uses_root(&c, spec, "call"))
                    }))
                    .collect();
            for (path, uses) in using {
                if uses {
                    let at = c.positions.value(&path);
                    c.error(
                        Some(&name),
                        at,
                        "`call.…` is the answer of the rule's service, and this rule has no `call`"
                            .into(),
                    );
                }
            }
        }
        if c.errors.len() == errors_before {
            let mut specs: Vec<(String, &ReplySpec)> = Vec::new();
            if let Some(Action::Reply(spec)) = &action {
                specs.push((format!("{base}.reply"), spec));
            }
            specs.extend(
                send.iter()
                    .enumerate()
                    .map(|(i, s)| (format!("{base}.send[{i}]"), s)),
            );
            if let Some(call) = &call {
                specs.extend(
                    call.on_error
                        .iter()
                        .map(|s| (format!("{base}.on_error"), s)),
                );
                if let Some(late) = &call.late {
                    specs.extend(late.reply.iter().map(|s| (format!("{base}.late.reply"), s)));
                }
            }
            check_fields(&mut c, &name, &when, &specs);
        }
        let cooldown_secs = match &raw_rule.cooldown {
            None => 0,
            Some(text) => match duration(
                &mut c,
                &name,
                &format!("{base}.cooldown"),
                &text.0,
                MAX_COOLDOWN,
            ) {
                Some(d) if d.as_secs() == 0 || d.subsec_nanos() != 0 => {
                    let at = c.positions.value(&format!("{base}.cooldown"));
                    c.error(
                        Some(&name),
                        at,
                        "`cooldown` is whole seconds (`30s`, `60m`, `1h`)".into(),
                    );
                    0
                }
                Some(d) => u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
                None => 0,
            },
        };
        if cooldown_secs > 0 && matches!(action, Some(Action::Ignore)) && !has_call {
            let at = c.positions.key(&format!("{base}.cooldown"));
            c.error(
                Some(&name),
                at,
                "`cooldown` starts when the rule answers, and a rule with `ignore: true` never does".into(),
            );
        }
        let active = raw_rule
            .active
            .and_then(|raw| compile_active(&mut c, &name, &base, &raw));
        if let (Some(action), true) = (action, c.errors.len() == errors_before) {
            rules.push(Rule {
                name: name.into(),
                line,
                column,
                fingerprint,
                when,
                action,
                send,
                call,
                cooldown_secs,
                active,
                last_hit: std::sync::atomic::AtomicU64::new(0),
            });
        }
    }

    check_partials(&mut c, template_files);
    if !c.errors.is_empty() {
        return Err(LoadError(c.errors));
    }

    let mut warnings = std::mem::take(&mut c.warnings);
    for t in template_files {
        if !c.used_templates.contains(&t.name) {
            warnings.push(RuleError {
                location: Location::new(&t.path, None),
                rule: None,
                message: format!("template `{}` is not used by any rule", t.name),
            });
        }
    }

    let mut templates = Sha1::new();
    for t in template_files {
        templates.update(t.name.as_bytes());
        templates.update([0]);
        templates.update(t.text.as_bytes());
        templates.update([0]);
    }
    let templates_digest = short_hex(&templates.finalize());
    let digest = short_hex(
        &Sha1::new_with_prefix(source)
            .chain_update(&templates_digest)
            .finalize(),
    );

    let index = Index::build(&rules);
    let inline: Vec<&str> = c.inline_templates.keys().map(String::as_str).collect();
    let templates = Registry::new(c.templates, template_files, files_key, &inline);
    Ok(Loaded {
        rules: RuleSet {
            rules,
            index,
            templates,
            digest,
            templates_digest,
            template_count: template_files.len(),
        },
        warnings,
    })
}

/// One rule as read from the file: typed, or the reason it is not (with its name when
/// that much could be read).
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every rule is typed: boxing them would only add an allocation each"
)]
enum RuleInput {
    Typed(schema::RawRule),
    Failed {
        name: Option<String>,
        error: schema::YamlError,
    },
}

/// Types every rule. The whole file is typed in one pass when it can be (the usual case,
/// and the fast one); otherwise each rule is typed on its own, so that every broken rule
/// is reported, not only the first.
fn parse_rules(source: &str) -> Result<Vec<RuleInput>, schema::YamlError> {
    if let Some(rules) = schema::parse_typed(source) {
        return Ok(rules.into_iter().map(RuleInput::Typed).collect());
    }
    let raw = schema::parse_file(source)?;
    Ok(raw
        .rules
        .into_iter()
        .map(|value| {
            // Read the name first, so that errors in a rule that does not type still name it.
            let name = value
                .get("name")
                .and_then(|n| serde_yaml::from_value::<schema::Scalar>(n.clone()).ok())
                .map(|n| n.0);
            match schema::parse_rule(value) {
                Ok(rule) => RuleInput::Typed(rule),
                Err(error) => RuleInput::Failed { name, error },
            }
        })
        .collect())
}

/// The source text of each rule: from its first line to the next rule's first line.
fn rule_spans<'a>(
    source: &'a str,
    index: &LineIndex,
    lines: impl Iterator<Item = usize>,
) -> Vec<&'a str> {
    let starts: Vec<usize> = lines.map(|line| index.offset(line)).collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = starts
                .get(i + 1)
                .copied()
                .unwrap_or(source.len())
                .max(start);
            source.get(start..end).unwrap_or_default()
        })
        .collect()
}

/// The first 8 bytes of a hash, as hex: enough to tell versions apart in logs.
fn short_hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The key named in serde's "unknown field `x`, expected …".
fn unknown_field_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// A duration such as `2s`, `800ms` or `1m 30s`, above zero and at most `max`.
fn duration(
    c: &mut Compiler<'_>,
    rule: &str,
    path: &str,
    text: &str,
    max: Duration,
) -> Option<Duration> {
    let problem = match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => "must be above zero".to_owned(),
        Ok(d) if d > max => format!("is at most {}", humantime::format_duration(max)),
        Ok(d) => return Some(d),
        Err(e) => format!("is a duration such as `2s` or `800ms` ({e})"),
    };
    let at = c.positions.value(path);
    let key = path.rsplit('.').next().unwrap_or(path);
    c.error(Some(rule), at, format!("`{key}` {problem}"));
    None
}

/// Compiles rules from a string, with no template files; for unit tests.
#[cfg(test)]
pub(crate) fn compile_yaml(yaml: &str) -> Result<RuleSet, LoadError> {
    compile(Path::new("rules.yaml"), yaml, &[]).map(|l| l.rules)
}

/// The errors of a rules file holding one rule `r` with `body` (YAML at 4 spaces); for
/// unit tests.
#[cfg(test)]
fn rule_errors(body: &str) -> Vec<String> {
    let yaml = format!("rules:\n  - name: r\n{body}");
    match load_str(&yaml, &[]) {
        Ok(_) => Vec::new(),
        Err(LoadError(errors)) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_a_byte_order_mark_keeps_its_error_positions() {
        let yaml = "\u{feff}rules:\n  - name: a\n    ignroe: true\n";
        let Err(LoadError(errors)) = compile(Path::new("rules.yaml"), yaml, &[]) else {
            panic!("an unknown key");
        };
        assert!(
            errors[0]
                .to_string()
                .starts_with("rules.yaml:3:5: rule `a`: unknown field"),
            "{}",
            errors[0]
        );
    }

    /// 64,000 nested flow sequences took serde_yaml 31 s to reject; the outline pass now
    /// stops at the 65th level, before serde_yaml sees the file.
    #[test]
    fn deep_flow_nesting_is_refused_before_serde_yaml_reads_it() {
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            let yaml = format!(
                "rules:\n  - name: a\n    extra: {}1{}\n    ignore: true\n",
                open.repeat(64_000),
                close.repeat(64_000)
            );
            let Err(LoadError(errors)) = compile_yaml(&yaml) else {
                panic!("nesting 64,000 deep");
            };
            assert_eq!(errors.len(), 1);
            assert!(
                errors[0].to_string().starts_with("rules.yaml:3:")
                    && errors[0].message
                        == "nested more than 64 levels deep; a rule needs a handful",
                "{}",
                errors[0]
            );
        }
        // At the limit it is read, and the unknown key reported as usual.
        let yaml = format!(
            "rules:\n  - name: a\n    extra: {}1{}\n    ignore: true\n",
            "[".repeat(MAX_YAML_DEPTH - 3),
            "]".repeat(MAX_YAML_DEPTH - 3)
        );
        let Err(LoadError(errors)) = compile_yaml(&yaml) else {
            panic!("an unknown key");
        };
        assert!(
            errors[0].message.starts_with("unknown field `extra`"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_large_file_reports_each_broken_rule_where_it_is() {
        let mut yaml = String::from("rules:\n");
        for i in 0..5_000 {
            let key = if i == 3_210 || i == 4_999 {
                "ignroe"
            } else {
                "ignore"
            };
            yaml.push_str(&format!(
                "  - {{ name: r{i}, when: {{ keyword: k{i} }}, {key}: true }}\n"
            ));
        }
        let Err(LoadError(errors)) = compile(Path::new("rules.yaml"), &yaml, &[]) else {
            panic!("two rules have an unknown key");
        };
        let found: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("rules.yaml:3212:46: rule `r3210`: unknown field `ignroe`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("rules.yaml:5001:46: rule `r4999`: unknown field `ignroe`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_file_time_zone_is_checked_once_and_used_by_every_window() {
        let err = load_str(
            "timezone: Mars/Olympus\nrules:\n  - name: r\n    reply: { text: hi }\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rules.yaml:1:11: `timezone`: `Mars/Olympus` is not a time zone (an IANA name such as `Asia/Shanghai`)"
        );
        // After `rules:` too; `~` is none.
        for yaml in [
            "rules:\n  - name: r\n    active: { hours: [\"00:00-01:00\"] }\n    reply: { text: hi }\ntimezone: UTC\n",
            "timezone: UTC\nrules:\n  - name: r\n    active: { hours: [\"00:00-01:00\"] }\n    reply: { text: hi }\n",
        ] {
            let loaded = load_str(yaml, &[]).unwrap();
            let active = loaded.rules.rules()[0].active().unwrap();
            // 00:30 UTC on 2026-11-30.
            assert!(active.holds(1_795_998_600), "{yaml}");
        }
        let loaded = load_str(
            "timezone: ~\nrules:\n  - name: r\n    active: { hours: [\"08:00-09:00\"] }\n    reply: { text: hi }\n",
            &[],
        )
        .unwrap();
        // 00:30 UTC is 08:30 in Shanghai, the default.
        assert!(loaded.rules.rules()[0]
            .active()
            .unwrap()
            .holds(1_795_998_600));
    }
}
