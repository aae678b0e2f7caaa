//! The rules' regexes held to the budgets (`rules::budget`): what they would take compiled
//! (each regex's `cost`, and the index's `RegexSet`s), per rule set and with every rule set
//! the process holds. A file past a budget is refused with the regexes that weigh most,
//! before anything of them is compiled.

use std::path::Path;

use crate::rules::budget::{self, Reservation, PROCESS_BYTES, RULE_SET_BYTES};
use crate::rules::excerpt;
use crate::rules::matcher::{Field, LazyRegex, Pattern, SET_FACTOR};
use crate::rules::{Location, Rule, RuleError};

/// How many of the heaviest regexes a refusal names.
const NAMED: usize = 3;

/// Reserves what the regexes of `rules` (loaded from `file`) would take compiled, or the
/// error that says which budget they are past and which regexes weigh most.
pub(super) fn reserve(file: &Path, rules: &[Rule]) -> Result<Reservation, RuleError> {
    let mut total = 0u64;
    let mut sets = 0u64;
    let mut heaviest: Vec<(u64, &Rule, &LazyRegex)> = Vec::new();
    for rule in rules {
        for test in &rule.when.tests {
            for pattern in &test.matcher.patterns {
                let Pattern::Regex(regex) = pattern else {
                    continue;
                };
                let cost = regex.cost();
                total = total.saturating_add(cost);
                // A keyword regex without literals for the index goes to a `RegexSet`.
                if test.field == Field::Keyword && !regex.has_literals() {
                    let set = regex.program().saturating_mul(SET_FACTOR);
                    sets = sets.saturating_add(set);
                }
                heaviest.push((cost, rule, regex));
            }
        }
    }
    let total = total.saturating_add(sets);
    if total > RULE_SET_BYTES {
        let why = format!(
            "this file's regexes would take about {} compiled, past the budget of {} a rules file",
            budget::size(total),
            budget::size(RULE_SET_BYTES)
        );
        return Err(refusal(file, &why, &mut heaviest));
    }
    Reservation::take(total).map_err(|full| {
        let why = format!(
            "this file's regexes would take about {} compiled, and the rule sets already loaded take {}: together past the process's budget of {}",
            budget::size(total),
            budget::size(full.held),
            budget::size(PROCESS_BYTES)
        );
        refusal(file, &why, &mut heaviest)
    })
}

/// The error of a file past a budget: why, and its heaviest regexes, each with its rule,
/// line and estimated size; at the heaviest one's rule.
fn refusal(file: &Path, why: &str, heaviest: &mut [(u64, &Rule, &LazyRegex)]) -> RuleError {
    heaviest.sort_by_key(|(cost, rule, _)| (std::cmp::Reverse(*cost), rule.line));
    let named: Vec<String> = heaviest
        .iter()
        .take(NAMED)
        .map(|(cost, rule, regex)| {
            format!(
                "rule `{}` (line {}): `{}`, about {}",
                excerpt::cut(&rule.name, excerpt::NAME_CHARS),
                rule.line,
                excerpt::excerpt(regex.as_str()),
                budget::size(*cost)
            )
        })
        .collect();
    let first = heaviest.first().map(|(_, rule, _)| rule);
    RuleError {
        location: Location::new(
            file,
            first
                .map(|rule| (rule.line(), rule.column()))
                .filter(|(line, _)| *line > 0),
        ),
        rule: None,
        message: format!(
            "{why}. The heaviest: {}. A class of every script (`\\w`, `\\d`, `\\pL`) compiles to some 20 KiB, and a repeat `{{n}}` copies it n times: an ASCII class (`[a-zA-Z0-9_]`), a shorter repeat or fewer such regexes take far less",
            named.join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::budget::RULE_SET_BYTES;
    use crate::rules::compile::{compile_yaml, LoadError};
    use crate::rules::Subject;

    /// The file: `count` keyword rules of `^\w{N}z<i>\d{1,3}$`, N from 8 to 17.
    fn heavy_file(count: usize) -> String {
        let mut yaml = String::from("rules:\n");
        for i in 0..count {
            let n = 8 + i % 10;
            yaml.push_str(&format!(
                "  - name: r{i}\n    when: {{ keyword: {{ regex: '^\\w{{{n}}}z{i}\\d{{1,3}}$' }} }}\n    reply: {{ text: hi }}\n"
            ));
        }
        yaml
    }

    /// A thousand such regexes took `check` 7 s and 1.5 GB: each was compiled into a
    /// `RegexSet` at load. Now none is compiled at load (each is found by its `z<i>`), and
    /// what they would take compiled is counted, within the budget.
    #[test]
    fn a_thousand_heavy_regexes_load_within_the_budget() {
        let rules = compile_yaml(&heavy_file(1_000)).unwrap_or_else(|e| panic!("{e}"));
        let reserved = rules.regex_budget.bytes();
        assert!(
            reserved > 100 << 20 && reserved < RULE_SET_BYTES,
            "{reserved}"
        );
        let find = |content: &str| {
            let xml = format!("<xml><ToUserName>gh</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>{content}</Content></xml>");
            let message = crate::wire::Message::parse(xml.as_bytes()).unwrap();
            let name = rules
                .find(&Subject::new(&message))
                .map(|m| m.rule.name().to_owned());
            name
        };
        // r512 is `^\w{10}z512\d{1,3}$`, r51 `^\w{9}z51\d{1,3}$`, r5 `^\w{13}z5\d{1,3}$`.
        assert_eq!(find("abcdefghijz5123").as_deref(), Some("r512"));
        assert_eq!(find("abcdefghiz5123").as_deref(), Some("r51"));
        assert_eq!(find("abcz5123"), None);
    }

    /// Three thousand took 37 s and 4.4 GB, and a SIGHUP with them under a 1 GiB limit got
    /// the server OOM-killed; now none is compiled at load, and three thousand (873 MiB if
    /// every one were used) are within the budget. Four thousand are refused, before any is
    /// compiled, with the budget and the heaviest regexes named.
    #[test]
    fn a_file_past_the_budget_is_refused_naming_its_heaviest_regexes() {
        let Err(LoadError(errors)) = compile_yaml(&heavy_file(4_000)) else {
            panic!("4,000 heavy regexes loaded");
        };
        assert_eq!(errors.len(), 1);
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with("rules.yaml:3029:5: this file's regexes would take about 1164 MiB compiled, past the budget of 1024 MiB a rules file. The heaviest: rule `r1009` (line 3029): `^\\w{17}z1009\\d{1,3}$`, about 395 KiB; rule `r1019` (line 3059): ")
                && shown.contains("an ASCII class (`[a-zA-Z0-9_]`), a shorter repeat or fewer such regexes take far less"),
            "{shown}"
        );
    }
}
