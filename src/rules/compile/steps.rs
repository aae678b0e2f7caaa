//! The steps of one load, in order: where the rules start (read from the lines of a file
//! in the usual shape, else by the outline pass), typing them in pieces or whole, compiling
//! each rule, what the templates include, the regex budget, the rule set.

use std::path::Path;

use handlebars::Handlebars;

use super::super::locate::{LazyPositions, Position, MAX_YAML_DEPTH};
use super::super::matcher::IndexBuilder;
use super::super::read::TemplateFile;
use super::super::split::{self, LineIndex};
use super::super::{registry, LoadError, Loaded, Location, Rule, RuleError};
use super::rule::{self, Names};
use super::{files, finish, parse_rules, regexes, timezone_holds, zone_holds, Compiler, RuleInput};

/// A load, in its steps: the outline pass, typing the rules, the template files, the file's
/// time zone, each rule, what the templates include; then the rule set.
pub(super) fn compile_steps(
    file: &Path,
    source: &str,
    template_files: &[TemplateFile],
    media_dir: Option<&Path>,
) -> Result<Loaded, LoadError> {
    steps(file, source, template_files, media_dir, Guessing::Allowed)
}

/// Whether a load may read where the rules start from the file's lines (tests compare a
/// load that does with one that does not).
#[derive(Clone, Copy, PartialEq)]
enum Guessing {
    Allowed,
    #[cfg(test)]
    Not,
}

fn steps(
    file: &Path,
    source: &str,
    template_files: &[TemplateFile],
    media_dir: Option<&Path>,
    guessing: Guessing,
) -> Result<Loaded, LoadError> {
    let lines = LineIndex::new(source);
    // Template files a living rule set holds compiled (of another account on the same
    // directory, or the set this load will replace) are not compiled again.
    let (files_key, compiled) = registry::lookup(template_files);
    let setup = Setup {
        file,
        template_files,
        compiled: compiled.as_deref(),
        media_dir,
    };
    // Where each rule starts: in a file of the usual shape, read from its lines (`guess`),
    // and the rules typed in pieces on every core cut there (a small file whole), each
    // piece compiled as it comes. Otherwise, or when a piece does not type to the rules it
    // was given, the outline pass finds the starts; in a plain file the rules are then
    // typed in pieces (a small file whole), else whole (rule by rule where it must).
    let guess = split::guess(source).filter(|_| guessing == Guessing::Allowed);
    let mut tried = None;
    if let Some(guess) = guess.filter(|g| zone_holds(g.timezone.as_deref())) {
        let starts = guess.starts.clone();
        let mut c = setup.compiler(LazyPositions::assumed(source, guess.starts, guess.timezone));
        if let Ok(rules) = compile_in_pieces(&mut c, source, &lines, &starts) {
            return Compiled { c, rules }.into_loaded(source, &setup, files_key);
        }
        tried = Some(starts);
    }
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
    let starts = positions.plain_rule_starts().map(<[_]>::to_vec);
    let mut c = setup.compiler(positions);
    // A plain file's rules are typed in pieces on every core and each piece compiled as it
    // comes, so the raw rules of the whole file are never held at once. (A file whose time
    // zone is wrong takes the other way, which reports its YAML errors first.)
    let mut pieces = Err(false);
    // (Not again when the guess was these starts: the pieces would fail again.)
    let again = starts.filter(|starts| tried.as_ref() != Some(starts));
    if let Some(starts) = again.filter(|_| zone_holds(c.positions.timezone())) {
        pieces = compile_in_pieces(&mut c, source, &lines, &starts);
    }
    let rules = match pieces {
        Ok(compiled) => compiled,
        Err(touched) => {
            // Typed whole (which finds every YAML error), by a compiler that has seen
            // nothing of the pieces compiled before one failed to type.
            if touched || !c.errors.is_empty() {
                c = setup.compiler(c.positions);
            }
            compile_whole(&mut c, source)?
        }
    };
    Compiled { c, rules }.into_loaded(source, &setup, files_key)
}

/// What every compiler of one load starts from.
struct Setup<'a> {
    file: &'a Path,
    template_files: &'a [TemplateFile],
    compiled: Option<&'a Handlebars<'static>>,
    media_dir: Option<&'a Path>,
}

impl<'a> Setup<'a> {
    /// A compiler with the template files registered.
    fn compiler(&self, positions: LazyPositions<'a>) -> Compiler<'a> {
        let mut c = Compiler::new(self.file, positions, self.template_files, self.compiled);
        c.media_dir = self.media_dir.map(Path::to_owned);
        files::register(&mut c, self.template_files, self.compiled.is_some());
        c
    }
}

/// The rules compiled, and the compiler that holds what they need.
struct Compiled<'a> {
    c: Compiler<'a>,
    rules: Collected,
}

/// The rules compiled so far, in file order, each on or off, the names seen, and the index
/// of those that are on, filled as they come.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) rules: Vec<Rule>,
    pub(super) off: Vec<Rule>,
    names: Names,
    pub(super) index: IndexBuilder,
}

impl Collected {
    fn with_capacity(rules: usize) -> Collected {
        Collected {
            rules: Vec::with_capacity(rules),
            ..Collected::default()
        }
    }

    /// Compiles rule `i` of the file into `c`, and keeps it when it has no error.
    fn add(&mut self, c: &mut Compiler<'_>, i: usize, input: RuleInput) {
        match rule::compile_rule(c, i, input, &mut self.names) {
            Some(rule) if rule.off => self.off.push(rule),
            Some(rule) => {
                self.index.add(self.rules.len(), &rule);
                self.rules.push(rule);
            }
            None => {}
        }
    }
}

/// Types a plain file's rules in pieces (`split::type_rules_each`) and compiles each piece
/// as it comes. `Err(true)` when typing in pieces failed after rules were compiled into `c`
/// (the caller starts again with a fresh compiler), `Err(false)` when none were.
fn compile_in_pieces(
    c: &mut Compiler<'_>,
    source: &str,
    lines: &LineIndex,
    starts: &[Position],
) -> Result<Collected, bool> {
    let mut rules = Collected::with_capacity(starts.len());
    let mut touched = false;
    let typed = split::type_rules_each(source, lines, starts, |first, piece| {
        touched = true;
        for (j, raw) in piece.into_iter().enumerate() {
            rules.add(c, first + j, RuleInput::Typed(raw));
        }
    });
    typed.map(|()| rules).ok_or(touched)
}

/// Types the file whole (each rule on its own when that fails, so that every broken rule
/// is reported) and compiles every rule.
fn compile_whole(c: &mut Compiler<'_>, source: &str) -> Result<Collected, LoadError> {
    let inputs = match parse_rules(source) {
        Ok(inputs) => inputs,
        Err(e) => {
            let at = e.position.or_else(|| c.positions.key(&e.path));
            c.error(None, at, e.message);
            return Err(LoadError(std::mem::take(&mut c.errors)));
        }
    };
    if !timezone_holds(c) {
        return Err(LoadError(std::mem::take(&mut c.errors)));
    }
    let mut rules = Collected::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        rules.add(c, i, input);
    }
    Ok(rules)
}

impl Compiled<'_> {
    /// What the templates include, the regex budget, then the rule set.
    fn into_loaded(
        self,
        source: &str,
        setup: &Setup<'_>,
        files_key: registry::Key,
    ) -> Result<Loaded, LoadError> {
        let Compiled { mut c, rules } = self;
        files::check_partials(&mut c, setup.template_files);
        if !c.errors.is_empty() {
            return Err(LoadError(c.errors));
        }
        // Before the index compiles its regex sets: a file whose regexes the budgets refuse
        // costs no more than its parse. Rules that are off are never matched, so their
        // regexes are never compiled.
        let regex_budget =
            regexes::reserve(setup.file, &rules.rules).map_err(|e| LoadError(vec![e]))?;
        Ok(finish(
            c,
            source,
            setup.template_files,
            files_key,
            rules,
            regex_budget,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rules in the styles a large file mixes, under the file's time zone; the rules of
    /// the `active:` style read it.
    fn large(n: usize) -> String {
        let mut text = String::from("# wxrules\ntimezone: Europe/Berlin  # the office\nrules:\n");
        for i in 0..n {
            text.push_str(&match i % 4 {
                0 => format!("  - {{ name: r{i}, when: {{ keyword: [k{i}] }}, reply: {{ text: \"hi {i} {{{{FromUserName}}}}\" }} }}\n"),
                1 => format!("  - name: r{i}\n    when:\n      keyword: {{ regex: '^a{i}-(\\d+)$' }}\n    reply:\n      text: |\n        - not a rule {i}\n\n  # between\n"),
                2 => format!("  - name: r{i}\n    active: {{ hours: [\"09:00-18:00\"] }}\n    reply: {{ text: \"open {i}\" }}\n"),
                _ => format!("  -   name: r{i}\n      when: {{ event: CLICK, event_key: K{i} }}\n      reply: {{ text: k{i} }}\n"),
            });
        }
        text
    }

    fn load(source: &str, guessing: Guessing) -> Result<Loaded, LoadError> {
        steps(Path::new("rules.yaml"), source, &[], None, guessing)
    }

    fn rules_of(loaded: &Loaded) -> String {
        format!("{:?}", loaded.rules.rules)
    }

    /// Loaded with the starts read from the lines and with the outline pass: the same.
    fn same_both_ways(source: &str) -> Loaded {
        let guessed = load(source, Guessing::Allowed).unwrap();
        let outlined = load(source, Guessing::Not).unwrap();
        assert_eq!(rules_of(&guessed), rules_of(&outlined));
        guessed
    }

    #[test]
    fn a_large_file_compiles_the_same_with_the_guess_as_with_the_outline() {
        let source = large(2_600);
        assert!(
            split::guess(&source).is_some(),
            "the usual shape is guessed"
        );
        let loaded = same_both_ways(&source);
        assert_eq!(loaded.rules.rules.len(), 2_600);
        assert!(rules_of(&loaded).contains("Europe/Berlin"));
        // Errors too: the same, at the same lines.
        let broken = source.replacen("name: r2000,", "name: r1996,", 1);
        let errors = |guessing| match load(&broken, guessing) {
            Err(LoadError(errors)) => errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            Ok(_) => panic!("a duplicate name"),
        };
        assert_eq!(errors(Guessing::Allowed), errors(Guessing::Not));
        assert!(errors(Guessing::Allowed)[0].contains("duplicate rule name"));
    }

    #[test]
    fn a_wrong_guess_is_found_out_and_the_outline_reads_the_file() {
        // An anchor ties rule 2 to rule 1,502, a piece away: that piece does not type alone.
        let tied = large(2_100)
            .replacen(
                "reply: { text: \"open 2\" }",
                "reply: &open { text: \"open 2\" }",
                1,
            )
            .replacen("reply: { text: \"open 1502\" }", "reply: *open", 1);
        assert!(split::guess(&tied).is_some());
        let loaded = same_both_ways(&tied);
        assert_eq!(loaded.rules.rules.len(), 2_100);
        assert_eq!(rules_of(&loaded).matches("\"open 2\"").count(), 2);
        // A quoted string whose second line looks like a rule at the list's column: a
        // piece holds a rule less than the guess gave it. (libyaml reads such a string,
        // yaml-rust2 does not: the outline then knows no rule's line, either way.)
        let source = large(2_100).replacen(
            "reply: { text: \"open 2\" }",
            "reply: { text: \"open 2\n  - name: fake\n      two\" }",
            1,
        );
        assert_eq!(split::guess(&source).map(|g| g.starts.len()), Some(2_101));
        let loaded = same_both_ways(&source);
        assert_eq!(loaded.rules.rules.len(), 2_100);
        assert!(rules_of(&loaded).contains("open 2 - name: fake two"));
    }

    #[test]
    fn a_file_nested_too_deep_is_refused_before_it_is_typed() {
        let deep: String = (0..MAX_YAML_DEPTH + 2)
            .map(|level| format!("{}k{level}:\n", " ".repeat(6 + 2 * level)))
            .collect();
        let source = large(2_100).replacen(
            "    reply: { text: \"open 2\" }\n",
            &format!("    reply: {{ text: \"open 2\" }}\n    extra:\n{deep}"),
            1,
        );
        assert!(split::guess(&source).is_none());
        let Err(LoadError(errors)) = load(&source, Guessing::Allowed) else {
            panic!("too deep");
        };
        assert!(
            errors[0]
                .to_string()
                .contains("nested more than 64 levels deep"),
            "{}",
            errors[0]
        );
    }
}
