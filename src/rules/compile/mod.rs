//! Raw rules → `RuleSet`: read the files, type every rule, build matchers, regexes and
//! templates, resolve template names, and collect every error with its file:line:col.
//!
//! Here: `load`/`load_str` and what every step shares (`Compiler`); `steps` runs a load's
//! steps, in order. The parts of a rule have a file each: `when` (criteria), `reply` (replies and their strings), `call` (`call`,
//! `on_error`, `late`), `check` (what templates may reference), `rule` (the rest of a
//! rule), `files` (template files); `at` names where in a rule each error is. No IO but
//! `load`'s reads, through `rules::read`.

mod at;
mod call;
mod check;
mod files;
mod regexes;
mod reply;
mod rule;
mod steps;
mod when;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use handlebars::Handlebars;
use sha1::{Digest, Sha1};

use super::budget::Reservation;
use super::excerpt;
use super::locate::LazyPositions;
use super::media::{self, MediaFile, TemporaryMedia};
use super::read::{self, TemplateFile};
use super::registry::{self, Registry};
use super::schema;
use super::tpl;
use super::{LoadError, Loaded, Location, Rule, RuleError, RuleSet, Sources, Tpl};
use at::At;

pub(crate) use call::MAX_CALL_TIMEOUT;
pub(crate) use reply::collect_tpls;
pub use reply::MAX_ARTICLES;

/// Loads and compiles the rules file and templates directory of `sources`.
///
/// Returns every error found (unreadable file, YAML syntax, unknown key, duplicate name, bad
/// regex, missing or broken template), each with file, line and column; nothing partial.
pub fn load(sources: &Sources) -> Result<Loaded, LoadError> {
    let (source, files) = read_files(sources)?;
    compile(&sources.rules, &source, &files, Some(&sources.templates))
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
    compile(Path::new("rules.yaml"), yaml, &files, None)
}

/// A draft of `sources`: `rules` in place of the rules file's text, and each of
/// `templates` (`(name, text)`, the name as rules write it: `price`, `menus/t1`) in place
/// of that template file's, or added. What a change made in the page would load, before
/// any file is written; errors locate in `sources`' files.
pub fn load_draft(
    sources: &Sources,
    rules: &str,
    templates: &[(String, String)],
) -> Result<Loaded, LoadError> {
    let mut files = read_files(sources)?.1;
    overlay(&mut files, &sources.templates, templates);
    compile(&sources.rules, rules, &files, Some(&sources.templates))
}

/// The digest a load of `sources` would give (`RuleSet::digest`), from the files as they
/// are on disk, without compiling them: to tell whether they changed since a draft began.
pub fn files_digest(sources: &Sources) -> Result<String, LoadError> {
    let (source, files) = read_files(sources)?;
    Ok(digests(&source, &files).0)
}

/// The files of an account as they are on disk, for the page's editor.
#[derive(Debug, Clone)]
pub struct SourceFiles {
    /// What `files_digest` gives for them.
    pub digest: String,
    pub rules: String,
    /// Each template's name (as rules write it) and text.
    pub templates: Vec<(String, String)>,
}

/// Reads `sources`' files as a load would (same bounds), without compiling them.
pub fn read_sources(sources: &Sources) -> Result<SourceFiles, LoadError> {
    let (rules, files) = read_files(sources)?;
    let digest = digests(&rules, &files).0;
    Ok(SourceFiles {
        digest,
        rules,
        templates: files.into_iter().map(|f| (f.name, f.text)).collect(),
    })
}

/// The rules file's text and the template files, read.
fn read_files(sources: &Sources) -> Result<(String, Vec<TemplateFile>), LoadError> {
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
    Ok((source, files))
}

/// `files` with each of `templates` in place of the file of its name, or added; each text
/// as a read gives it (without its last line break).
fn overlay(files: &mut Vec<TemplateFile>, dir: &Path, templates: &[(String, String)]) {
    for (name, text) in templates {
        let name = name.strip_suffix(".hbs").unwrap_or(name);
        let text = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        match files.iter_mut().find(|f| f.name == name) {
            Some(file) => text.clone_into(&mut file.text),
            None => files.push(TemplateFile {
                name: name.to_owned(),
                path: dir.join(format!("{name}.hbs")),
                text: text.to_owned(),
            }),
        }
    }
}

/// The digest of a rules file's text with its template files, and of the templates alone.
fn digests(source: &str, template_files: &[TemplateFile]) -> (String, String) {
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
    (digest, templates_digest)
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
    /// The media ids of the rule being compiled that its replies mark temporary.
    temporary: Vec<TemporaryMedia>,
    /// Where replies' media files are (the templates directory); `None` when the rules
    /// come from memory alone (`load_str`).
    media_dir: Option<std::path::PathBuf>,
    /// Each media file read, by kind, name and video texts: read once per load.
    media_files: HashMap<String, Result<Arc<MediaFile>, String>>,
}

impl<'a> Compiler<'a> {
    /// A compiler for the rules file `file`, whose registry starts from `compiled` (the
    /// template files a living rule set holds compiled) when there is one.
    fn new(
        file: &'a Path,
        positions: LazyPositions<'a>,
        template_files: &[TemplateFile],
        compiled: Option<&Handlebars<'static>>,
    ) -> Compiler<'a> {
        Compiler {
            file,
            positions,
            templates: compiled.cloned().unwrap_or_else(tpl::registry),
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
            temporary: Vec::new(),
            media_dir: None,
            media_files: HashMap::new(),
        }
    }

    /// The media file `name` of a reply of `kind`, read once per load.
    fn media_file(
        &mut self,
        kind: &'static str,
        name: &str,
        video: Option<(String, String)>,
    ) -> Result<Arc<MediaFile>, String> {
        let Some(dir) = &self.media_dir else {
            return Err("a reply's `file` needs a templates directory".into());
        };
        let key = format!("{kind}\0{name}\0{video:?}");
        self.media_files
            .entry(key)
            .or_insert_with(|| media::media_file(kind, dir, name, video).map(Arc::new))
            .clone()
    }

    fn error(&mut self, rule: Option<&str>, at: Option<(usize, usize)>, message: String) {
        self.errors.push(RuleError {
            location: Location::new(self.file, at),
            rule: rule.map(str::to_owned),
            message,
        });
    }

    /// An error of `at`'s rule, at the value `at` names.
    fn error_at(&mut self, at: At<'_>, message: String) {
        let position = self.value_at(at);
        self.error(Some(at.rule_name()), position, message);
    }

    /// An error of `at`'s rule, at the key that names `at`.
    fn error_at_key(&mut self, at: At<'_>, message: String) {
        let position = self.key_at(at);
        self.error(Some(at.rule_name()), position, message);
    }

    /// Where the value at `at` is written, or its nearest ancestor's.
    fn value_at(&self, at: At<'_>) -> Option<(usize, usize)> {
        self.positions.value(&at.to_string())
    }

    /// Where the key that names `at` is written, else as `value_at`.
    fn key_at(&self, at: At<'_>) -> Option<(usize, usize)> {
        self.positions.key(&at.to_string())
    }
}

/// A load, with every error and warning bounded (`excerpt::bounded`): whatever the file
/// holds, what is said about it is a few lines, never the file.
fn compile(
    file: &Path,
    source: &str,
    template_files: &[TemplateFile],
    media_dir: Option<&Path>,
) -> Result<Loaded, LoadError> {
    match steps::compile_steps(file, source, template_files, media_dir) {
        Ok(mut loaded) => {
            loaded.warnings = loaded.warnings.into_iter().map(excerpt::bounded).collect();
            Ok(loaded)
        }
        Err(LoadError(errors)) => Err(LoadError(
            errors.into_iter().map(excerpt::bounded).collect(),
        )),
    }
}

/// Whether a file's time zone, if it gives one, is one.
fn zone_holds(timezone: Option<&str>) -> bool {
    timezone.is_none_or(|tz| jiff::tz::TimeZone::get(tz).is_ok())
}

/// Whether the file's time zone, if it gives one, is one; checked once, at its own line.
fn timezone_holds(c: &mut Compiler<'_>) -> bool {
    let Some(tz) = c.positions.timezone().filter(|tz| !zone_holds(Some(tz))) else {
        return true;
    };
    let message = format!(
        "`timezone`: `{}` is not a time zone (an IANA name such as `Asia/Shanghai`)",
        excerpt::excerpt(tz)
    );
    let at = c.positions.value("timezone");
    c.error(None, at, message);
    false
}

/// The rule set of a load without errors, with its warnings: the rules indexed, the
/// templates split into the files' share and the rules' own, and the digests.
fn finish(
    mut c: Compiler<'_>,
    source: &str,
    template_files: &[TemplateFile],
    files_key: registry::Key,
    collected: steps::Collected,
    regex_budget: Reservation,
) -> Loaded {
    let steps::Collected {
        rules, off, index, ..
    } = collected;
    let mut warnings = std::mem::take(&mut c.warnings);
    files::warn_unused(&c, template_files, &mut warnings);

    let (digest, templates_digest) = digests(source, template_files);

    let index = index.build(&rules);
    let keeps = rules.iter().any(Rule::calls_or_sends);
    let converses = rules
        .iter()
        .any(|rule| rule.transition().is_some() || rule.when.state.is_some());
    let mut states: Vec<Arc<str>> = Vec::new();
    for rule in rules.iter().chain(&off) {
        if let Some(crate::rules::conversation::Transition::Set(set)) = rule.transition() {
            if !states.contains(&set.name) {
                states.push(Arc::clone(&set.name));
            }
        }
    }
    let inline: Vec<&str> = c.inline_templates.keys().map(String::as_str).collect();
    let templates = Registry::new(c.templates, template_files, files_key, &inline);
    Loaded {
        rules: RuleSet {
            rules,
            off,
            index,
            templates,
            digest,
            templates_digest,
            template_count: template_files.len(),
            regex_budget,
            keeps,
            converses,
            states,
            media_ids: Arc::default(),
        },
        warnings,
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

/// The first 8 bytes of a hash, as hex: enough to tell versions apart in logs.
fn short_hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A duration such as `2s`, `800ms` or `1m 30s`, above zero and at most `max`.
fn duration(c: &mut Compiler<'_>, at: At<'_>, text: &str, max: Duration) -> Option<Duration> {
    let problem = match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => "must be above zero".to_owned(),
        Ok(d) if d > max => format!("is at most {}", humantime::format_duration(max)),
        Ok(d) => return Some(d),
        Err(e) => format!("is a duration such as `2s` or `800ms` ({e})"),
    };
    let key = at.last_key();
    c.error_at(at, format!("`{key}` {problem}"));
    None
}

/// Compiles rules from a string, with no template files; for unit tests.
#[cfg(test)]
pub(crate) fn compile_yaml(yaml: &str) -> Result<RuleSet, LoadError> {
    compile(Path::new("rules.yaml"), yaml, &[], None).map(|l| l.rules)
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
    use crate::rules::locate::MAX_YAML_DEPTH;

    #[test]
    fn a_file_with_a_byte_order_mark_keeps_its_error_positions() {
        let yaml = "\u{feff}rules:\n  - name: a\n    ignroe: true\n";
        let Err(LoadError(errors)) = compile(Path::new("rules.yaml"), yaml, &[], None) else {
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

    /// A file that is not rules (a token file, `/etc/passwd`, a 20 MB line) was quoted in its
    /// errors, whole: `invalid type: string "newstoken2"`, in the log, the reload answer,
    /// the page and `/healthz`. Now it is named for what it is, and what an error quotes of
    /// a value is an excerpt.
    #[test]
    fn what_an_error_says_of_a_file_is_an_excerpt_never_the_file() {
        // 2 MB here (a debug build reads 20 MB in seconds); docs/reliability.md has 20 MB.
        let line = "s3cr3t".repeat((2 << 20) / 6);
        for (yaml, expected) in [
            ("newstoken2\n".to_owned(), "rules.yaml:1:1: not a rules file: a YAML mapping with `rules:` was expected, and this is a text (its text is not shown)".to_owned()),
            ("root:x:0:0:root:/root:/bin/bash\nbin:x:2:2:bin:/bin:/usr/sbin/nologin\n".to_owned(), "rules.yaml:1:1: not a rules file: a YAML mapping with `rules:` was expected, and this is a text (its text is not shown)".to_owned()),
            (line.clone(), "rules.yaml:1:1: not a rules file: a YAML mapping with `rules:` was expected, and this is a text (its text is not shown)".to_owned()),
            (format!("- {line}\n"), "rules.yaml:1:1: not a rules file: a YAML mapping with `rules:` was expected, and this is a list (its text is not shown)".to_owned()),
            (format!("rules: {line}\n"), format!("rules.yaml:1:8: rules: invalid type: string \"{}…\", expected a sequence", &line[..40])),
        ] {
            let Err(LoadError(errors)) = compile_yaml(&yaml) else {
                panic!("not rules");
            };
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(shown, [expected]);
        }
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
        let Err(LoadError(errors)) = compile(Path::new("rules.yaml"), &yaml, &[], None) else {
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
