//! A rule's `when` → `Criteria`: each field's matcher (a string, a list, or a map of
//! `exact`, `prefix`, `contains` or `regex`), keywords folded as messages' are, regexes
//! checked. Every problem is an error at its value; nothing here matches a message.

use std::collections::{BTreeMap, HashMap};

use super::at::{At, Key};
use super::Compiler;
use crate::rules::conversation::{self, StateWhen};
use crate::rules::fields;
use crate::rules::fold;
use crate::rules::matcher::{Criteria, Field, LazyRegex, Pattern, StateTest, StrMatcher, Test};
use crate::rules::schema::{OneOrMany, RawAlternative, RawMatcher, RawOp, RawWhen, Scalar};
use crate::rules::{Location, RuleError};

/// A rule's `when`: every criterion, each at its key (`when.keyword`, `when.fields.PATH`,
/// as `Field::label` names it).
pub(super) fn compile_when(c: &mut Compiler<'_>, rule: At<'_>, when: RawWhen) -> Criteria {
    let mut tests = Vec::new();
    let named = [
        (Field::MsgType, when.msg_type),
        (Field::Event, when.event),
        (Field::EventKey, when.event_key),
        (Field::Keyword, when.keyword),
        (Field::Status, when.status),
    ];
    let fields: BTreeMap<_, _> = when.fields;
    let when_at = rule.field(Key::When);
    let state = compile_state(c, when_at, when.state, when.tries_below);
    let all = named
        .into_iter()
        .chain([(Field::Choice, when.choice)])
        .filter_map(|(field, m)| m.map(|m| (field, m)))
        .chain(
            fields
                .into_iter()
                .map(|(path, m)| (Field::Path(Box::new(path.into())), m)),
        );
    for (field, raw) in all {
        let matcher = {
            let label = field.label();
            let at = when_at.key(&label);
            if let Field::Path(p) = &field {
                if p.is_empty() || p.split('.').any(str::is_empty) {
                    c.error_at_key(at, format!("`{p}` is not a field path"));
                    continue;
                }
                if let Some(problem) = fields::list_problem(p) {
                    c.error_at_key(at, format!("`fields: {p}`: {problem}"));
                    continue;
                }
            }
            compile_matcher(c, at, &field, raw)
        };
        if let Some(matcher) = matcher {
            tests.push(Test { field, matcher });
        }
    }
    // Pushed one by one, the vectors hold room for four (224 and 128 bytes); boxed slices
    // take half as much for the usual one or two criteria of one pattern each, which is a
    // quarter of a rule's memory (measured: 633 → 380 bytes for a keyword-and-ignore rule).
    Criteria {
        tests: tests.into_boxed_slice(),
        state,
    }
}

/// `when: { state, tries_below }`: a state's name, `none` or `any`; `tries_below` only
/// with a state to count the tries in.
fn compile_state(
    c: &mut Compiler<'_>,
    when: At<'_>,
    state: Option<Scalar>,
    tries_below: Option<u32>,
) -> Option<Box<StateTest>> {
    let state = match state {
        None => {
            if tries_below.is_some() {
                c.error_at_key(
                    when.key("tries_below"),
                    "`tries_below` counts the user's messages in a state: give `state` too".into(),
                );
            }
            return None;
        }
        Some(name) => match name.0.trim() {
            "none" => StateWhen::None,
            "any" => StateWhen::Any,
            name => match conversation::name_problem(name) {
                Some(problem) => {
                    c.error_at(when.key("state"), problem);
                    return None;
                }
                None => StateWhen::Named(name.into()),
            },
        },
    };
    if tries_below == Some(0) {
        c.error_at(
            when.key("tries_below"),
            "`tries_below: 0` never holds: the first answer in a state is try 1".into(),
        );
    }
    if tries_below.is_some() && state == StateWhen::None {
        c.error_at_key(
            when.key("tries_below"),
            "`tries_below` counts the user's messages in a state, and `state: none` is none".into(),
        );
    }
    Some(Box::new(StateTest {
        when: state,
        tries_below,
    }))
}

fn compile_matcher(
    c: &mut Compiler<'_>,
    at: At<'_>,
    field: &Field,
    raw: RawMatcher,
) -> Option<StrMatcher> {
    let alternatives: Vec<(At<'_>, RawAlternative)> = match raw {
        RawMatcher::One(s) => vec![(at, RawAlternative::One(s))],
        RawMatcher::Op(op) => vec![(at, RawAlternative::Op(op))],
        RawMatcher::Any(list) => {
            if list.is_empty() {
                c.error_at(at, "empty list matches nothing".into());
                return None;
            }
            list.into_iter()
                .enumerate()
                .map(|(i, a)| (at.index(i), a))
                .collect()
        }
    };
    let mut patterns = Vec::new();
    let mut ok = true;
    // Each literal keyword as written, where it is written, and where it went in `patterns`.
    let mut literals: Vec<(String, Spot<'_>, usize)> = Vec::new();
    for (alternative_at, alternative) in alternatives {
        match alternative {
            RawAlternative::One(s) => {
                let spot = Spot {
                    alternative: alternative_at,
                    op: None,
                };
                literals.push((s.0.clone(), spot, patterns.len()));
                patterns.push(Pattern::Exact(normalize(field, &s.0)));
            }
            RawAlternative::Op(op) => {
                ok &= compile_op(c, alternative_at, field, *op, &mut patterns, &mut literals)
            }
        }
    }
    if *field == Field::Keyword {
        ok &= check_folded(c, at.rule_name(), &patterns, &literals);
    }
    ok.then(|| StrMatcher {
        patterns: patterns.into_boxed_slice(),
    })
}

/// Where a literal keyword is written: its alternative of the matcher and, in a map, the
/// operator's key and (in a list of them) the value's index. Kept while the matcher is
/// compiled, and made a place only for an error.
#[derive(Clone, Copy)]
struct Spot<'a> {
    alternative: At<'a>,
    op: Option<(&'static str, Option<usize>)>,
}

impl Spot<'_> {
    fn position(self, c: &Compiler<'_>) -> Option<(usize, usize)> {
        let Some((kind, item)) = self.op else {
            return c.value_at(self.alternative);
        };
        let op = self.alternative.key(kind);
        match item {
            Some(i) => c.value_at(op.index(i)),
            None => c.value_at(op),
        }
    }
}

/// Keywords are compared folded (`rules::fold`): one that folds to nothing (only
/// punctuation or spaces) is an error, two that fold to the same a warning.
fn check_folded(
    c: &mut Compiler<'_>,
    rule: &str,
    patterns: &[Pattern],
    literals: &[(String, Spot<'_>, usize)],
) -> bool {
    let mut ok = true;
    let mut seen: HashMap<(u8, &str), &str> = HashMap::new();
    for (raw, spot, at) in literals {
        let (kind, folded) = match patterns.get(*at) {
            Some(Pattern::Exact(s)) => (0, &**s),
            Some(Pattern::Prefix(s)) => (1, &**s),
            Some(Pattern::Contains(s)) => (2, &**s),
            _ => continue,
        };
        // An empty keyword as written keeps its meaning (a `prefix: ''` matches any text);
        // one that only trimming empties is a mistake.
        if folded.is_empty() && !raw.is_empty() {
            let at = spot.position(c);
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
                let at = spot.position(c);
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
fn normalize(field: &Field, s: &str) -> Box<str> {
    match field {
        Field::Keyword => fold::literal(s, fold::Literal::Exact),
        f if f.folds_case() => s.to_ascii_lowercase(),
        _ => s.to_owned(),
    }
    .into_boxed_str()
}

/// One alternative of a matcher written as a map (`{ regex: … }`), at `at`: its patterns
/// and its literals; `false` when it has errors.
fn compile_op<'a>(
    c: &mut Compiler<'_>,
    at: At<'a>,
    field: &Field,
    op: RawOp,
    patterns: &mut Vec<Pattern>,
    literals: &mut Vec<(String, Spot<'a>, usize)>,
) -> bool {
    let given: Vec<(&'static str, OneOrMany)> = [
        ("exact", op.exact),
        ("prefix", op.prefix),
        ("contains", op.contains),
        ("regex", op.regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    if given.len() != 1 {
        c.error_at(
            at,
            "a matcher map takes exactly one of `exact`, `prefix`, `contains`, `regex`".into(),
        );
        return false;
    }
    let mut ok = true;
    for (kind, values) in given {
        let many = matches!(values, OneOrMany::Many(_));
        let kind_at = at.key(kind);
        for (i, value) in values.into_vec().into_iter().enumerate() {
            let item = many.then_some(i);
            let item_at = match item {
                Some(i) => kind_at.index(i),
                None => kind_at,
            };
            if kind != "regex" {
                let spot = Spot {
                    alternative: at,
                    op: Some((kind, item)),
                };
                literals.push((value.clone(), spot, patterns.len()));
            }
            match kind {
                "exact" => patterns.push(Pattern::Exact(normalize(field, &value))),
                "prefix" if *field == Field::Keyword => patterns.push(Pattern::Prefix(
                    fold::literal(&value, fold::Literal::Prefix).into(),
                )),
                "prefix" => patterns.push(Pattern::Prefix(normalize(field, &value))),
                "contains" => {
                    if value.trim().is_empty() {
                        c.error_at(item_at, "`contains` needs a non-empty string".into());
                        ok = false;
                    }
                    patterns.push(Pattern::Contains(if *field == Field::Keyword {
                        fold::literal(&value, fold::Literal::Contains).into()
                    } else {
                        normalize(field, &value)
                    }));
                }
                _ => match LazyRegex::new(&value, field.folds_case(), *field == Field::Keyword) {
                    // Keyword regexes are found through the index and compiled on first
                    // use; the others are tried on every candidate of their rule: held to
                    // the size limit now, as `check` holds them.
                    Ok(re) if *field == Field::Keyword => {
                        patterns.push(Pattern::Regex(Box::new(re)))
                    }
                    Ok(re) => match re.compile() {
                        Ok(()) => patterns.push(Pattern::Regex(Box::new(re))),
                        Err(reason) => {
                            c.error_at(item_at, format!("invalid regex: {reason}"));
                            ok = false;
                        }
                    },
                    Err(reason) => {
                        c.error_at(item_at, format!("invalid regex: {reason}"));
                        ok = false;
                    }
                },
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use crate::rules::compile::rule_errors;
    use crate::rules::load_str;

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
}
