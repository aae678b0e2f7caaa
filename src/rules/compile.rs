//! Raw rules → `RuleSet`: read the files, type every rule, build matchers, regexes and
//! templates, resolve template names, and collect every error with its file:line:col.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use handlebars::Handlebars;
use sha1::{Digest, Sha1};

use super::fields;
use super::locate::{LazyPositions, MAX_YAML_DEPTH};
use super::matcher::{Criteria, Field, Index, LazyRegex, Pattern, StrMatcher, Test};
use super::read::{self, TemplateFile};
use super::registry::{self, Registry};
use super::schema::{
    self, OneOrMany, RawAlternative, RawArticle, RawCall, RawLate, RawMatcher, RawOp, RawReply,
    RawReplyKind, RawStr, RawWhen, REPLY_KINDS,
};
use super::split::{self, LineIndex};
use super::templates::{self, MAX_TEMPLATE_NESTING};
use super::tpl::{self, Simple};
use super::{Action, ArticleSpec, LoadError, Loaded, Location, ReplySpec, Rule, RuleError};
use super::{Call, CallMethod, Late, MusicSpec, RuleSet, Sources, Tpl, VideoSpec};

/// WeChat accepts at most 8 articles in one news reply.
pub const MAX_ARTICLES: usize = 8;

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

/// How a rule renders the template file `t`: a literal or a `Simple` template when it is one
/// (still registered: handlebars templates may use it as a partial), else by handlebars.
fn known_form(t: &TemplateFile) -> Tpl {
    match fast_form(&t.text) {
        Some(Tpl::Simple(simple)) => Tpl::Simple(simple.read_from(&t.name)),
        Some(fast) => fast,
        None => Tpl::Template(t.name.clone()),
    }
}

fn too_deep_message() -> String {
    format!("template nests blocks or subexpressions more than {MAX_TEMPLATE_NESTING} levels deep")
}

/// Reports every registered template that cannot render (`rules::templates::problems`):
/// a template file's at its file, line and column; an inline template's at its rule.
fn check_partials(c: &mut Compiler<'_>, template_files: &[TemplateFile]) {
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
fn template_reason(e: &handlebars::TemplateError) -> String {
    let reason = e.reason().to_string();
    if reason.starts_with("invalid handlebars syntax") {
        "invalid handlebars syntax: an unclosed `{{#block}}`, or unbalanced `{{ }}`".to_owned()
    } else {
        reason
    }
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

fn compile_when(c: &mut Compiler<'_>, rule: &str, base: &str, when: RawWhen) -> Criteria {
    let mut tests = Vec::new();
    let named = [
        ("msg_type", Field::MsgType, when.msg_type),
        ("event", Field::Event, when.event),
        ("event_key", Field::EventKey, when.event_key),
        ("keyword", Field::Keyword, when.keyword),
        ("status", Field::Status, when.status),
    ];
    let fields: BTreeMap<_, _> = when.fields;
    let all = named
        .into_iter()
        .filter_map(|(key, field, m)| m.map(|m| (format!("{base}.when.{key}"), field, m)))
        .chain(fields.into_iter().map(|(path, m)| {
            (
                format!("{base}.when.fields.{path}"),
                Field::Path(path.clone()),
                m,
            )
        }));
    for (path, field, raw) in all {
        if let Field::Path(p) = &field {
            if p.is_empty() || p.split('.').any(str::is_empty) {
                let at = c.positions.key(&path);
                c.error(Some(rule), at, format!("`{p}` is not a field path"));
                continue;
            }
            if let Some(problem) = fields::list_problem(p) {
                let at = c.positions.key(&path);
                c.error(Some(rule), at, format!("`fields: {p}`: {problem}"));
                continue;
            }
        }
        if let Some(matcher) = compile_matcher(c, rule, &path, &field, raw) {
            tests.push(Test { field, matcher });
        }
    }
    // Pushed one by one, the vectors hold room for four (224 and 128 bytes); exact, they
    // take half as much for the usual one or two criteria of one pattern each, which is a
    // quarter of a rule's memory (measured: 633 → 380 bytes for a keyword-and-ignore rule).
    for test in &mut tests {
        test.matcher.patterns.shrink_to_fit();
    }
    tests.shrink_to_fit();
    Criteria { tests }
}

fn compile_matcher(
    c: &mut Compiler<'_>,
    rule: &str,
    path: &str,
    field: &Field,
    raw: RawMatcher,
) -> Option<StrMatcher> {
    let alternatives: Vec<(String, RawAlternative)> = match raw {
        RawMatcher::One(s) => vec![(path.to_owned(), RawAlternative::One(s))],
        RawMatcher::Op(op) => vec![(path.to_owned(), RawAlternative::Op(op))],
        RawMatcher::Any(list) => {
            if list.is_empty() {
                let at = c.positions.value(path);
                c.error(Some(rule), at, "empty list matches nothing".into());
                return None;
            }
            list.into_iter()
                .enumerate()
                .map(|(i, a)| (format!("{path}[{i}]"), a))
                .collect()
        }
    };
    let mut patterns = Vec::new();
    let mut ok = true;
    // Each literal keyword as written, its YAML path, and where it went in `patterns`.
    let mut literals: Vec<(String, String, usize)> = Vec::new();
    for (at_path, alternative) in alternatives {
        match alternative {
            RawAlternative::One(s) => {
                literals.push((s.0.clone(), at_path.clone(), patterns.len()));
                patterns.push(Pattern::Exact(normalize(field, &s.0)));
            }
            RawAlternative::Op(op) => {
                ok &= compile_op(c, rule, &at_path, field, *op, &mut patterns, &mut literals)
            }
        }
    }
    if *field == Field::Keyword {
        ok &= check_folded(c, rule, &patterns, &literals);
    }
    ok.then_some(StrMatcher { patterns })
}

/// Keywords are compared folded (`rules::fold`): one that folds to nothing (only
/// punctuation or spaces) is an error, two that fold to the same a warning.
fn check_folded(
    c: &mut Compiler<'_>,
    rule: &str,
    patterns: &[Pattern],
    literals: &[(String, String, usize)],
) -> bool {
    let mut ok = true;
    let mut seen: HashMap<(u8, &str), &str> = HashMap::new();
    for (raw, path, at) in literals {
        let (kind, folded) = match patterns.get(*at) {
            Some(Pattern::Exact(s)) => (0, s.as_str()),
            Some(Pattern::Prefix(s)) => (1, s.as_str()),
            Some(Pattern::Contains(s)) => (2, s.as_str()),
            _ => continue,
        };
        // An empty keyword as written keeps its meaning (a `prefix: ''` matches any text);
        // one that only trimming empties is a mistake.
        if folded.is_empty() && !raw.is_empty() {
            let at = c.positions.value(path);
            c.error(
                Some(rule),
                at,
                format!("keyword `{raw}` is only spaces, which keywords are trimmed of"),
            );
            ok = false;
            continue;
        }
        match seen.get(&(kind, folded)) {
            Some(first) if *first != raw.as_str() => {
                let at = c.positions.value(path);
                c.warnings.push(RuleError {
                    location: Location::new(c.file, at),
                    rule: Some(rule.to_owned()),
                    message: format!(
                        "keywords `{first}` and `{raw}` are the same once folded (full-width forms, ASCII case, surrounding punctuation): one is enough"
                    ),
                });
            }
            Some(_) => {}
            None => {
                seen.insert((kind, folded), raw.as_str());
            }
        }
    }
    ok
}

/// Folds case for the fields that ignore it, and folds keywords as messages' are folded
/// (`rules::fold`).
fn normalize(field: &Field, s: &str) -> String {
    match field {
        Field::Keyword => super::fold::literal(s, super::fold::Literal::Exact),
        f if f.folds_case() => s.to_ascii_lowercase(),
        _ => s.to_owned(),
    }
}

fn compile_op(
    c: &mut Compiler<'_>,
    rule: &str,
    path: &str,
    field: &Field,
    op: RawOp,
    patterns: &mut Vec<Pattern>,
    literals: &mut Vec<(String, String, usize)>,
) -> bool {
    let given: Vec<(&str, OneOrMany)> = [
        ("exact", op.exact),
        ("prefix", op.prefix),
        ("contains", op.contains),
        ("regex", op.regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    if given.len() != 1 {
        let at = c.positions.value(path);
        c.error(
            Some(rule),
            at,
            "a matcher map takes exactly one of `exact`, `prefix`, `contains`, `regex`".into(),
        );
        return false;
    }
    let mut ok = true;
    for (kind, values) in given {
        let many = matches!(values, OneOrMany::Many(_));
        for (i, value) in values.into_vec().into_iter().enumerate() {
            let at_path = if many {
                format!("{path}.{kind}[{i}]")
            } else {
                format!("{path}.{kind}")
            };
            if kind != "regex" {
                literals.push((value.clone(), at_path.clone(), patterns.len()));
            }
            match kind {
                "exact" => patterns.push(Pattern::Exact(normalize(field, &value))),
                "prefix" if *field == Field::Keyword => patterns.push(Pattern::Prefix(
                    super::fold::literal(&value, super::fold::Literal::Prefix),
                )),
                "prefix" => patterns.push(Pattern::Prefix(normalize(field, &value))),
                "contains" => {
                    if value.trim().is_empty() {
                        let at = c.positions.value(&at_path);
                        c.error(Some(rule), at, "`contains` needs a non-empty string".into());
                        ok = false;
                    }
                    patterns.push(Pattern::Contains(if *field == Field::Keyword {
                        super::fold::literal(&value, super::fold::Literal::Contains)
                    } else {
                        normalize(field, &value)
                    }));
                }
                _ => match LazyRegex::new(&value, field.folds_case(), *field == Field::Keyword) {
                    // Keyword regexes are found through the index's RegexSet and compiled on
                    // first use; the others are tried on every candidate, so compile now.
                    Ok(re) if *field == Field::Keyword => {
                        patterns.push(Pattern::Regex(Box::new(re)))
                    }
                    Ok(re) => match re.compile() {
                        Ok(()) => patterns.push(Pattern::Regex(Box::new(re))),
                        Err(reason) => {
                            let at = c.positions.value(&at_path);
                            c.error(Some(rule), at, format!("invalid regex: {reason}"));
                            ok = false;
                        }
                    },
                    Err(reason) => {
                        let at = c.positions.value(&at_path);
                        c.error(Some(rule), at, format!("invalid regex: {reason}"));
                        ok = false;
                    }
                },
            }
        }
    }
    ok
}

fn compile_reply(
    c: &mut Compiler<'_>,
    rule: &str,
    path: &str,
    reply: RawReply,
) -> Option<ReplySpec> {
    // Every failure below records an error, so the count tells whether this reply is good.
    let errors_before = c.errors.len();
    let reply = match reply.kind() {
        Ok(kind) => kind,
        Err(n) => {
            let at = c.positions.value(path);
            let given = if n == 0 { "none" } else { "several" };
            c.error(
                Some(rule),
                at,
                format!("a reply takes exactly one of {REPLY_KINDS}; {given} given"),
            );
            return None;
        }
    };
    let s = |c: &mut Compiler<'_>, key: &str, raw: Option<RawStr>| -> Tpl {
        raw.and_then(|raw| compile_str(c, rule, &format!("{path}.{key}"), raw))
            .unwrap_or(Tpl::Literal(String::new()))
    };
    let spec = match reply {
        RawReplyKind::Text(t) => ReplySpec::Text(s(c, "text", Some(t))),
        RawReplyKind::Image(m) => ReplySpec::Image(s(c, "image.media_id", Some(m.media_id))),
        RawReplyKind::Voice(m) => ReplySpec::Voice(s(c, "voice.media_id", Some(m.media_id))),
        RawReplyKind::Video(v) => ReplySpec::Video(Box::new(VideoSpec {
            media_id: s(c, "video.media_id", Some(v.media_id)),
            title: s(c, "video.title", v.title),
            description: s(c, "video.description", v.description),
        })),
        RawReplyKind::Music(m) => ReplySpec::Music(Box::new(MusicSpec {
            title: s(c, "music.title", m.title),
            description: s(c, "music.description", m.description),
            music_url: s(c, "music.music_url", m.music_url),
            hq_music_url: s(c, "music.hq_music_url", m.hq_music_url),
            thumb_media_id: s(c, "music.thumb_media_id", Some(m.thumb_media_id)),
        })),
        RawReplyKind::News(articles) => {
            if articles.is_empty() || articles.len() > MAX_ARTICLES {
                let at = c.positions.value(&format!("{path}.news"));
                c.error(
                    Some(rule),
                    at,
                    format!(
                        "a news reply has 1 to {MAX_ARTICLES} articles, this one has {}",
                        articles.len()
                    ),
                );
            }
            let specs = articles
                .into_iter()
                .enumerate()
                .map(|(i, a): (usize, RawArticle)| ArticleSpec {
                    title: s(c, &format!("news[{i}].title"), Some(a.title)),
                    description: s(c, &format!("news[{i}].description"), a.description),
                    pic_url: s(c, &format!("news[{i}].pic_url"), a.pic_url),
                    url: s(c, &format!("news[{i}].url"), a.url),
                })
                .collect();
            ReplySpec::News(specs)
        }
        RawReplyKind::TransferCustomerService(t) => {
            let account = t
                .kf_account
                .map(|a| s(c, "transfer_customer_service.kf_account", Some(a)));
            ReplySpec::TransferCustomerService(account)
        }
        RawReplyKind::OneOf(choices) => {
            if choices.is_empty() {
                let at = c.positions.value(&format!("{path}.one_of"));
                c.error(Some(rule), at, "`one_of` needs at least one reply".into());
            }
            let specs = choices
                .into_iter()
                .enumerate()
                .filter_map(|(i, choice)| {
                    compile_reply(c, rule, &format!("{path}.one_of[{i}]"), choice)
                })
                .collect();
            ReplySpec::OneOf(specs)
        }
    };
    (c.errors.len() == errors_before).then_some(spec)
}

/// A rule's `send:` list: replies the customer-service API can carry.
fn compile_send(
    c: &mut Compiler<'_>,
    rule: &str,
    base: &str,
    raw: Vec<RawReply>,
) -> Box<[ReplySpec]> {
    let mut specs = Vec::with_capacity(raw.len());
    for (i, reply) in raw.into_iter().enumerate() {
        let path = format!("{base}.send[{i}]");
        let Some(spec) = compile_reply(c, rule, &path, reply) else {
            continue;
        };
        if let Some(why) = unsendable(&spec) {
            let at = c.positions.value(&path);
            c.error(
                Some(rule),
                at,
                format!(
                    "`send` takes text, image, voice, video, music or news of one article; {why}"
                ),
            );
            continue;
        }
        specs.push(spec);
    }
    specs.into_boxed_slice()
}

/// A rule's `active:` window, in its own `timezone`, the file's, or Asia/Shanghai.
fn compile_active(
    c: &mut Compiler<'_>,
    rule: &str,
    base: &str,
    raw: &schema::RawActive,
) -> Option<Box<super::active::Active>> {
    let file_timezone = c.positions.timezone().map(str::to_owned);
    let timezone = raw
        .timezone
        .as_ref()
        .map(|t| t.0.clone())
        .or(file_timezone)
        .unwrap_or_else(|| super::active::DEFAULT_TIMEZONE.to_owned());
    let written = super::active::Written {
        from: raw.from.as_ref().map(|s| s.0.as_str()),
        until: raw.until.as_ref().map(|s| s.0.as_str()),
        hours: raw.hours.iter().map(|s| s.0.as_str()).collect(),
        weekdays: raw.weekdays.iter().map(|s| s.0.as_str()).collect(),
        timezone: &timezone,
    };
    match super::active::compile(&written) {
        Ok(active) => Some(Box::new(active)),
        Err((key, why)) => {
            let at = c
                .positions
                .value(&format!("{base}.active.{key}"))
                .or_else(|| c.positions.key(&format!("{base}.active")));
            c.error(Some(rule), at, format!("`active.{key}`: {why}"));
            None
        }
    }
}

/// The longest `cooldown`.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The default and the bounds of a call's `timeout`.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a push waits for a call without `late`: the passive budget of Part 1.
pub(crate) const PASSIVE_BUDGET: Duration = crate::wire::PASSIVE_DEADLINE;
/// The default and the longest `late.after`: WeChat gives up on a push after 5 s.
pub(crate) const DEFAULT_LATE_AFTER: Duration = Duration::from_secs(3);
pub(crate) const MAX_LATE_AFTER: Duration = Duration::from_millis(4500);
/// Calls of one rule at once, by default and at most.
pub(crate) const DEFAULT_CALL_CONCURRENCY: u32 = 64;
pub(crate) const MAX_CALL_CONCURRENCY: u32 = 10_000;

/// A rule's `call`, with its `on_error` and `late`. Each problem is an error naming the key.
fn compile_call(
    c: &mut Compiler<'_>,
    rule: &str,
    base: &str,
    raw: Option<Box<RawCall>>,
    on_error: Option<RawReply>,
    late: Option<Box<RawLate>>,
) -> Option<Box<Call>> {
    let Some(raw) = raw else {
        for (key, given) in [("on_error", on_error.is_some()), ("late", late.is_some())] {
            if given {
                let at = c.positions.key(&format!("{base}.{key}"));
                c.error(
                    Some(rule),
                    at,
                    format!("`{key}` goes with a `call`, and this rule has none"),
                );
            }
        }
        return None;
    };
    let errors_before = c.errors.len();
    let path = format!("{base}.call");
    let url = compile_url(c, rule, &format!("{path}.url"), &raw.url.0);
    let method = match raw.method.as_ref().map(|m| m.0.to_ascii_uppercase()) {
        None => CallMethod::Post,
        Some(m) if m == "POST" => CallMethod::Post,
        Some(m) if m == "GET" => CallMethod::Get,
        Some(_) => {
            let at = c.positions.value(&format!("{path}.method"));
            c.error(
                Some(rule),
                at,
                "a call's `method` is `POST` or `GET`".into(),
            );
            CallMethod::Post
        }
    };
    let timeout = match &raw.timeout {
        None => DEFAULT_CALL_TIMEOUT,
        Some(t) => duration(c, rule, &format!("{path}.timeout"), &t.0, MAX_CALL_TIMEOUT)
            .unwrap_or(DEFAULT_CALL_TIMEOUT),
    };
    let headers = compile_headers(c, rule, &format!("{path}.headers"), &raw.headers);
    let concurrency = raw.concurrency.unwrap_or(DEFAULT_CALL_CONCURRENCY);
    if !(1..=MAX_CALL_CONCURRENCY).contains(&concurrency) {
        let at = c.positions.value(&format!("{path}.concurrency"));
        c.error(
            Some(rule),
            at,
            format!("a call's `concurrency` is 1 to {MAX_CALL_CONCURRENCY}"),
        );
    }
    let on_error = on_error.and_then(|reply| {
        let at_path = format!("{base}.on_error");
        let spec = compile_reply(c, rule, &at_path, reply)?;
        no_call_in(
            c,
            rule,
            &at_path,
            &spec,
            "`on_error` answers when the call failed",
        );
        Some(spec)
    });
    let late = match late {
        None => {
            if timeout > PASSIVE_BUDGET && raw.timeout.is_some() {
                let at = c.positions.value(&format!("{path}.timeout"));
                c.error(
                    Some(rule),
                    at,
                    format!(
                        "a call without `late` must answer within the passive budget ({}): give a shorter `timeout`, or `late:` to answer a slower service through the customer-service API",
                        humantime::format_duration(PASSIVE_BUDGET)
                    ),
                );
            }
            None
        }
        Some(late) => {
            let late_path = format!("{base}.late");
            let after = match &late.after {
                None => DEFAULT_LATE_AFTER,
                Some(a) => duration(c, rule, &format!("{late_path}.after"), &a.0, MAX_LATE_AFTER)
                    .unwrap_or(DEFAULT_LATE_AFTER),
            };
            if after >= timeout {
                let at = c
                    .positions
                    .value(&format!("{late_path}.after"))
                    .or_else(|| c.positions.key(&late_path));
                c.error(
                    Some(rule),
                    at,
                    format!(
                        "`late.after` ({}) must be below the call's `timeout` ({}): the reply goes out late only if the call can still answer",
                        humantime::format_duration(after),
                        humantime::format_duration(timeout)
                    ),
                );
            }
            let reply = late.reply.and_then(|reply| {
                let at_path = format!("{late_path}.reply");
                let spec = compile_reply(c, rule, &at_path, reply)?;
                no_call_in(
                    c,
                    rule,
                    &at_path,
                    &spec,
                    "the holding reply goes out before the call has answered",
                );
                Some(spec)
            });
            Some(Late { after, reply })
        }
    };
    let url = url?;
    (c.errors.len() == errors_before).then(|| {
        Box::new(Call {
            url,
            method,
            timeout,
            headers,
            on_error,
            late,
            limit: Arc::new(tokio::sync::Semaphore::new(concurrency as usize)),
            concurrency,
        })
    })
}

/// Holds each template of a rule's replies to the fields of the messages the rule can match
/// (`rules::fields`), and its `captures.…` to the groups of its regexes.
fn check_fields(c: &mut Compiler<'_>, rule: &str, when: &Criteria, specs: &[(String, &ReplySpec)]) {
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
                        let at = c.positions.value(path);
                        (Location::new(c.file, at), at)
                    }
                };
                let key = format!("{}:{at:?}:{message}", location.path.display());
                if reported.insert(key) {
                    c.errors.push(RuleError {
                        location,
                        rule: Some(rule.to_owned()),
                        message,
                    });
                }
            }
        }
    }
}

pub(crate) fn collect_tpls<'a>(spec: &'a ReplySpec, out: &mut Vec<&'a Tpl>) {
    match spec {
        ReplySpec::Text(t) | ReplySpec::Image(t) | ReplySpec::Voice(t) => out.push(t),
        ReplySpec::Video(v) => out.extend([&v.media_id, &v.title, &v.description]),
        ReplySpec::Music(m) => out.extend([
            &m.title,
            &m.description,
            &m.music_url,
            &m.hq_music_url,
            &m.thumb_media_id,
        ]),
        ReplySpec::News(articles) => {
            for a in articles {
                out.extend([&a.title, &a.description, &a.pic_url, &a.url]);
            }
        }
        ReplySpec::TransferCustomerService(account) => out.extend(account.iter()),
        ReplySpec::OneOf(choices) => {
            for choice in choices {
                collect_tpls(choice, out);
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
fn no_call_in(c: &mut Compiler<'_>, rule: &str, path: &str, spec: &ReplySpec, why: &str) {
    if uses_root(c, spec, "call") {
        let at = c.positions.value(path);
        c.error(
            Some(rule),
            at,
            format!("{why}: its templates cannot use `call.…`"),
        );
    }
}

/// Whether any string of `spec` references a path starting with `root` (`call`).
fn uses_root(c: &Compiler<'_>, spec: &ReplySpec, root: &str) -> bool {
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

/// A call's URL: text and `{{path}}`s, `http` or `https`, the scheme and host written out.
fn compile_url(c: &mut Compiler<'_>, rule: &str, path: &str, text: &str) -> Option<Simple> {
    let fail = |c: &mut Compiler<'_>, message: String| {
        let at = c.positions.value(path);
        c.error(Some(rule), at, message);
        None
    };
    let Some(simple) = tpl::parse_simple(text) else {
        return fail(
            c,
            "a call's `url` takes text and `{{field}}` references only (no blocks or helpers), so that each value can be percent-encoded".into(),
        );
    };
    if simple.roots().any(|root| root == "call") {
        return fail(
            c,
            "a call's `url` cannot use `call.…`: the service has not answered yet".into(),
        );
    }
    // The scheme, host and port come from the rules file, never from a message.
    let lead = simple.leading_text();
    let fixed = lead.len() == text.len()
        || lead
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains(['/', '?', '#']));
    if !fixed {
        return fail(
            c,
            "a call's `url` writes out its scheme and host (and port): `{{…}}` may come only after the `/` that follows the host".into(),
        );
    }
    let sample = simple.with_values("x");
    let parsed = match reqwest::Url::parse(&sample) {
        Ok(url) => url,
        Err(e) => return fail(c, format!("a call's `url` is not a URL: {e}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return fail(
            c,
            "a call's `url` starts with `http://` or `https://` and a host".into(),
        );
    }
    Some(simple)
}

/// A call's headers, each `${VAR}` replaced by the environment variable VAR. Values are
/// never put in an error: they may be credentials.
fn compile_headers(
    c: &mut Compiler<'_>,
    rule: &str,
    path: &str,
    raw: &BTreeMap<String, schema::Scalar>,
) -> Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)> {
    let mut headers = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let key_path = format!("{path}.{name}");
        let Ok(header) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) else {
            let at = c.positions.key(&key_path);
            c.error(
                Some(rule),
                at,
                format!("`{}` is not a header name", name.escape_debug()),
            );
            continue;
        };
        let expanded = match expand_env(&value.0, |var| std::env::var(var).ok()) {
            Ok(expanded) => expanded,
            Err(why) => {
                let at = c.positions.value(&key_path);
                c.error(Some(rule), at, format!("header `{header}`: {why}"));
                continue;
            }
        };
        match reqwest::header::HeaderValue::from_str(&expanded) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.push((header, v));
            }
            Err(_) => {
                let at = c.positions.value(&key_path);
                c.error(
                    Some(rule),
                    at,
                    format!("header `{header}`: the value (after `${{VAR}}`s) is not a valid header value (visible ASCII)"),
                );
            }
        }
    }
    headers
}

/// `text` with each `${VAR}` replaced by `lookup(VAR)`; a `$` not followed by `{` is kept.
fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without its `}`".into());
        };
        let var = &after[..end];
        let valid = var
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{}}}` is not an environment variable name",
                var.escape_debug()
            ));
        }
        match lookup(var) {
            Some(value) => out.push_str(&value),
            None => return Err(format!("the environment variable `{var}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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

/// Why the customer-service API cannot carry `spec`, if it cannot.
fn unsendable(spec: &ReplySpec) -> Option<String> {
    match spec {
        ReplySpec::TransferCustomerService(_) => {
            Some("`transfer_customer_service` is a passive reply only".into())
        }
        ReplySpec::News(articles) if articles.len() > 1 => Some(format!(
            "this news has {} articles (WeChat sends one)",
            articles.len()
        )),
        ReplySpec::OneOf(choices) => choices.iter().find_map(unsendable),
        _ => None,
    }
}

/// An inline string becomes a literal when it has no `{{`, a `Simple` template when it only
/// references fields, else a compiled handlebars template; a
/// `{ template: NAME }` must name a file of the templates directory.
fn compile_str(c: &mut Compiler<'_>, rule: &str, path: &str, raw: RawStr) -> Option<Tpl> {
    match raw {
        RawStr::Inline(text) => {
            if let Some(fast) = fast_form(&text.0) {
                return Some(fast);
            }
            if let Some((l, col)) = templates::too_deep(&text.0) {
                let at = c.positions.value(path);
                let message = format!("{} (template line {l}, column {col})", too_deep_message());
                c.error(Some(rule), at, message);
                return None;
            }
            // Named after its rule; never the name of a file (`welcome#1.hbs` may exist),
            // which it would replace.
            let name = loop {
                c.inline_count += 1;
                let name = format!("{rule}#{}", c.inline_count);
                if !c.template_files.contains_key(&name) {
                    break name;
                }
            };
            match c.templates.register_template_string(&name, &text.0) {
                Ok(()) => {
                    c.inline_templates
                        .insert(name.clone(), (rule.to_owned(), path.to_owned()));
                    Some(Tpl::Template(name))
                }
                Err(e) => {
                    let at = c.positions.value(path);
                    let within = e
                        .pos()
                        .map(|(l, col)| format!(" (template line {l}, column {col})"))
                        .unwrap_or_default();
                    c.error(
                        Some(rule),
                        at,
                        format!("template does not compile: {}{within}", template_reason(&e)),
                    );
                    None
                }
            }
        }
        RawStr::File(r) => {
            if let Some(tpl) = c.known_templates.get(&r.template) {
                let tpl = tpl.clone();
                c.used_templates.insert(r.template);
                Some(tpl)
            } else {
                let at = c.positions.value(&format!("{path}.template"));
                c.error(
                    Some(rule),
                    at,
                    format!(
                        "template `{}` not found (no file {}.hbs in the templates directory)",
                        r.template, r.template
                    ),
                );
                None
            }
        }
    }
}

/// A template's text as a literal (no `{{` at all) or a `Simple` template, when it is one:
/// both render exactly as handlebars would, without it.
fn fast_form(text: &str) -> Option<Tpl> {
    if !text.contains("{{") {
        return Some(Tpl::Literal(text.to_owned()));
    }
    tpl::parse_simple(text).map(Tpl::Simple)
}

/// Compiles rules from a string, with no template files; for unit tests.
#[cfg(test)]
pub(crate) fn compile_yaml(yaml: &str) -> Result<RuleSet, LoadError> {
    compile(Path::new("rules.yaml"), yaml, &[]).map(|l| l.rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
    fn send_takes_what_the_customer_service_api_carries() {
        let ok = "rules:\n  - name: a\n    reply: { text: hi }\n    send: [ { text: more }, { image: { media_id: M } }, { one_of: [ { voice: { media_id: V } } ] } ]\n";
        let rules = compile_yaml(ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.rules()[0].send().len(), 3);
        for (send, says) in [
            ("[ { transfer_customer_service: {} } ]", "rules.yaml:4:15: rule `a`: `send` takes text, image, voice, video, music or news of one article; `transfer_customer_service` is a passive reply only"),
            ("[ { news: [ { title: a }, { title: b } ] } ]", "rules.yaml:4:15: rule `a`: `send` takes text, image, voice, video, music or news of one article; this news has 2 articles (WeChat sends one)"),
            ("[ { one_of: [ { text: x }, { transfer_customer_service: {} } ] } ]", "rules.yaml:4:15: rule `a`: `send` takes text, image, voice, video, music or news of one article; `transfer_customer_service` is a passive reply only"),
        ] {
            let yaml = format!("rules:\n  - name: a\n    reply: {{ text: hi }}\n    send: {send}\n");
            let Err(LoadError(errors)) = compile_yaml(&yaml) else {
                panic!("{send} loaded");
            };
            assert_eq!(errors[0].to_string(), says);
        }
        let ignored = "rules:\n  - name: a\n    ignore: true\n    send: [ { text: more } ]\n";
        let Err(LoadError(errors)) = compile_yaml(ignored) else {
            panic!("ignore + send loaded");
        };
        assert_eq!(
            errors[0].to_string(),
            "rules.yaml:4:5: rule `a`: `send` goes out after a passive reply: a rule with `ignore: true` cannot send"
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
        let rules = compile(Path::new("rules.yaml"), yaml, &files)
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
        let rules = compile(Path::new("rules.yaml"), yaml, &files)
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

    /// The errors of a rules file holding one rule `r` with `body` (YAML at 4 spaces).
    fn rule_errors(body: &str) -> Vec<String> {
        let yaml = format!("rules:\n  - name: r\n{body}");
        match load_str(&yaml, &[]) {
            Ok(_) => Vec::new(),
            Err(LoadError(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_call_is_checked_key_by_key() {
        let ok = "    call: { url: 'http://127.0.0.1:9/orders/{{captures.order}}?u={{FromUserName}}', timeout: 800ms, method: get }\n    reply: { text: '{{call.status}}' }\n    on_error: { text: sorry }\n";
        assert_eq!(rule_errors(ok), Vec::<String>::new());
        let loaded = load_str(&format!("rules:\n  - name: r\n{ok}"), &[]).unwrap();
        let call = loaded.rules.rules()[0].call().unwrap();
        assert_eq!(call.method(), CallMethod::Get);
        assert_eq!(call.timeout(), Duration::from_millis(800));
        // A rule with a call and no reply leaves the answer to its service.
        assert_eq!(
            rule_errors("    call: { url: 'https://127.0.0.1/x' }\n"),
            Vec::<String>::new()
        );
        let mut wrong = Vec::new();
        for (body, says) in [
            ("    call: { url: 'ftp://127.0.0.1/x' }\n", "rules.yaml:3:18: rule `r`: a call's `url` starts with `http://` or `https://` and a host"),
            ("    call: { url: 'http://{{FromUserName}}/x' }\n", "rules.yaml:3:18: rule `r`: a call's `url` writes out its scheme and host (and port): `{{…}}` may come only after the `/` that follows the host"),
            ("    call: { url: 'http://127.0.0.1:{{x}}/' }\n", "rules.yaml:3:18: rule `r`: a call's `url` writes out its scheme and host (and port): `{{…}}` may come only after the `/` that follows the host"),
            ("    call: { url: 'http://h/{{#if a}}x{{/if}}' }\n", "rules.yaml:3:18: rule `r`: a call's `url` takes text and `{{field}}` references only (no blocks or helpers), so that each value can be percent-encoded"),
            ("    call: { url: 'http://h/{{call.x}}' }\n", "rules.yaml:3:18: rule `r`: a call's `url` cannot use `call.…`: the service has not answered yet"),
            ("    call: { url: 'http://h/', method: PUT }\n", "rules.yaml:3:39: rule `r`: a call's `method` is `POST` or `GET`"),
            ("    call: { url: 'http://h/', timeout: soon }\n", "rules.yaml:3:40: rule `r`: `timeout` is a duration such as `2s` or `800ms` (expected number at 0)"),
            ("    call: { url: 'http://h/', timeout: 0s }\n", "rules.yaml:3:40: rule `r`: `timeout` must be above zero"),
            ("    call: { url: 'http://h/', timeout: 2h }\n", "rules.yaml:3:40: rule `r`: `timeout` is at most 10m"),
            ("    call: { url: 'http://h/', timeout: 4s }\n", "rules.yaml:3:40: rule `r`: a call without `late` must answer within the passive budget (3s): give a shorter `timeout`, or `late:` to answer a slower service through the customer-service API"),
            ("    call: { url: 'http://h/', timeout: 60s }\n    late: { after: 5s }\n", "rules.yaml:4:20: rule `r`: `after` is at most 4s 500ms"),
            ("    call: { url: 'http://h/' }\n    late: {}\n", "rules.yaml:4:11: rule `r`: `late.after` (3s) must be below the call's `timeout` (2s): the reply goes out late only if the call can still answer"),
            ("    call: { url: 'http://h/', concurrency: 0 }\n", "rules.yaml:3:44: rule `r`: a call's `concurrency` is 1 to 10000"),
            ("    call: { url: 'http://h/', timeout: 9s }\n    late: { after: 1s }\n    reply: { transfer_customer_service: {} }\n", "rules.yaml:5:14: rule `r`: a `late` rule's reply may go out through the customer-service API, which takes text, image, voice, video, music or news of one article; `transfer_customer_service` is a passive reply only"),
            ("    call: { url: 'http://h/' }\n    send: [ { text: more } ]\n", "rules.yaml:4:5: rule `r`: `send` goes out after a passive reply: give the rule a `reply` (a rule whose service decides has none of its own)"),
            ("    reply: { text: hi }\n    on_error: { text: x }\n", "rules.yaml:4:5: rule `r`: `on_error` goes with a `call`, and this rule has none"),
            ("    reply: { text: hi }\n    late: { after: 1s }\n", "rules.yaml:4:5: rule `r`: `late` goes with a `call`, and this rule has none"),
            ("    reply: { text: '{{call.status}}' }\n", "rules.yaml:3:14: rule `r`: `call.…` is the answer of the rule's service, and this rule has no `call`"),
            ("    reply: { text: '{{#if call.ok}}y{{/if}}' }\n", "rules.yaml:3:14: rule `r`: `call.…` is the answer of the rule's service, and this rule has no `call`"),
            ("    reply: { text: hi }\n    send: [ { text: '{{call.x}}' } ]\n", "rules.yaml:4:15: rule `r`: `call.…` is the answer of the rule's service, and this rule has no `call`"),
            ("    call: { url: 'http://h/' }\n    on_error: { text: '{{call.status}}' }\n", "rules.yaml:4:17: rule `r`: `on_error` answers when the call failed: its templates cannot use `call.…`"),
            ("    call: { url: 'http://h/', timeout: 9s }\n    late: { after: 1s, reply: { text: '{{default call.x \"y\"}}' } }\n", "rules.yaml:4:33: rule `r`: the holding reply goes out before the call has answered: its templates cannot use `call.…`"),
            ("    call: { url: 'http://h/', headers: { Authorization: 'Bearer ${WXRULES_TEST_UNSET_VARIABLE}' } }\n", "rules.yaml:3:57: rule `r`: header `authorization`: the environment variable `WXRULES_TEST_UNSET_VARIABLE` is not set"),
            ("    call: { url: 'http://h/', headers: { 'a b': x } }\n", "rules.yaml:3:42: rule `r`: `a b` is not a header name"),
        ] {
            let got = rule_errors(body);
            if got != [says] {
                wrong.push(format!("{body}  got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn header_values_take_environment_variables_and_never_show_them() {
        let env = |var: &str| (var == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(expand_env("Bearer ${TOKEN}", env).unwrap(), "Bearer s3cret");
        assert_eq!(
            expand_env("$5 ${TOKEN}${TOKEN}", env).unwrap(),
            "$5 s3crets3cret"
        );
        assert_eq!(
            expand_env("${NOPE}", env).unwrap_err(),
            "the environment variable `NOPE` is not set"
        );
        assert_eq!(
            expand_env("${TOKEN", env).unwrap_err(),
            "`${` without its `}`"
        );
        assert_eq!(
            expand_env("${1x}", env).unwrap_err(),
            "`${1x}` is not an environment variable name"
        );
        // A value that is not a header value is refused without being shown.
        std::env::set_var("WXRULES_TEST_BAD_HEADER", "line\nbreak-s3cret");
        let errors = rule_errors(
            "    call: { url: 'http://h/', headers: { X-Key: '${WXRULES_TEST_BAD_HEADER}' } }\n",
        );
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].contains("s3cret"), "{errors:?}");
        assert!(
            errors[0].contains("is not a valid header value"),
            "{errors:?}"
        );
        let debug = format!(
            "{:?}",
            load_str(
                "rules:\n  - name: r\n    call: { url: 'http://h/', headers: { X-Key: '${PATH}' } }\n",
                &[]
            )
            .unwrap()
            .rules
            .rules()[0]
            .call()
        );
        assert!(
            debug.contains("x-key") && !debug.contains(&std::env::var("PATH").unwrap()),
            "{debug}"
        );
    }

    #[test]
    fn keywords_that_fold_to_nothing_or_to_each_other_are_reported() {
        assert_eq!(
            rule_errors("    when: { keyword: [价格, '  '] }\n    reply: { text: hi }\n"),
            ["rules.yaml:3:27: rule `r`: keyword `  ` is only spaces, which keywords are trimmed of"]
        );
        let loaded = load_str(
            "rules:\n  - name: r\n    when: { keyword: [价格, 价格！, ＰＲＩＣＥ, price] }\n    reply: { text: hi }\n",
            &[],
        )
        .unwrap();
        let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "rules.yaml:3:27: rule `r`: keywords `价格` and `价格！` are the same once folded (full-width forms, ASCII case, surrounding punctuation): one is enough",
                "rules.yaml:3:39: rule `r`: keywords `ＰＲＩＣＥ` and `price` are the same once folded (full-width forms, ASCII case, surrounding punctuation): one is enough",
            ]
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

    #[test]
    fn a_cooldown_is_whole_seconds_on_a_rule_that_answers() {
        let loaded = load_str(
            "rules:\n  - name: r\n    cooldown: 60m\n    reply: { text: hi }\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            loaded.rules.rules()[0].cooldown(),
            Some(Duration::from_secs(3600))
        );
        for (body, says) in [
            ("    cooldown: soon\n    reply: { text: hi }\n", "rules.yaml:3:15: rule `r`: `cooldown` is a duration such as `2s` or `800ms` (expected number at 0)"),
            ("    cooldown: 1500ms\n    reply: { text: hi }\n", "rules.yaml:3:15: rule `r`: `cooldown` is whole seconds (`30s`, `60m`, `1h`)"),
            ("    cooldown: 60d\n    reply: { text: hi }\n", "rules.yaml:3:15: rule `r`: `cooldown` is at most 30days"),
            ("    cooldown: 1h\n    ignore: true\n", "rules.yaml:3:5: rule `r`: `cooldown` starts when the rule answers, and a rule with `ignore: true` never does"),
        ] {
            assert_eq!(rule_errors(body), [says], "{body}");
        }
    }
}
