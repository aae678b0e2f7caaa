//! Warnings about valid rules that are probably mistakes: rules an earlier rule makes
//! unreachable, one exact keyword in two rules, news replies WeChat will cut, and event or
//! message types WeChat does not send. `check` reports them; `--deny-warnings` fails on them.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::conversation::{StateWhen, Transition};
use super::matcher::{Field, Pattern, StrMatcher};
use super::{Action, Location, ReplySpec, Rule, RuleError, RuleSet};

/// Event names WeChat pushes to an Official Account's server URL, lower-cased.
const KNOWN_EVENTS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "scan",
    "location",
    "click",
    "view",
    "view_miniprogram",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "templatesendjobfinish",
    "masssendjobfinish",
    "publishjobfinish",
    "merchant_order",
    "qualification_verify_success",
    "qualification_verify_fail",
    "naming_verify_success",
    "naming_verify_fail",
    "annual_renew",
    "verify_expired",
    "subscribe_msg_popup_event",
    "subscribe_msg_change_event",
    "subscribe_msg_sent_event",
    "kf_create_session",
    "kf_close_session",
    "kf_switch_session",
    "user_get_card",
    "user_del_card",
    "user_consume_card",
    "user_enter_session_from_card",
    "card_pass_check",
    "card_not_pass_check",
    "user_view_card",
    "poi_check_notify",
    "wificonnected",
    "shakearoundusershake",
    "user_enter_tempsession",
];

/// Message types WeChat pushes, lower-cased.
const KNOWN_MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "shortvideo",
    "location",
    "link",
    "event",
    "file",
    "miniprogrampage",
];

/// Past this many rule pairs, the unreachable-rule analysis is skipped (and says so).
const PAIR_BUDGET: usize = 20_000_000;

/// Compiles every regex that loading only syntax-checked (keyword regexes are compiled on
/// first use); a regex too big to compile is an error here, as it would be at start-up if
/// regexes were compiled eagerly.
pub fn compile_regexes(rules: &RuleSet, path: &Path) -> Vec<RuleError> {
    let mut errors = Vec::new();
    for rule in &rules.rules {
        for test in &rule.when.tests {
            for pattern in &test.matcher.patterns {
                if let Pattern::Regex(re) = pattern {
                    if let Err(reason) = re.compile() {
                        errors.push(RuleError {
                            location: Location::new(
                                path,
                                Some((rule.line(), rule.column())).filter(|(l, _)| *l > 0),
                            ),
                            rule: Some(rule.name.to_string()),
                            message: format!("invalid regex `{}`: {reason}", re.as_str()),
                        });
                    }
                }
            }
        }
    }
    errors.into_iter().map(super::excerpt::bounded).collect()
}

/// The warnings for `rules`, loaded from `path`.
pub fn lint(rules: &RuleSet, path: &Path) -> Vec<RuleError> {
    let mut out = Vec::new();
    let warn = |rule: &Rule, message: String| RuleError {
        location: Location::new(
            path,
            Some((rule.line(), rule.column())).filter(|(l, _)| *l > 0),
        ),
        rule: Some(rule.name.to_string()),
        message,
    };
    unknown_names(rules, &mut |r, m| out.push(warn(r, m)));
    duplicate_keywords(rules, &mut |r, m| out.push(warn(r, m)));
    long_news(rules, &mut |r, m| out.push(warn(r, m)));
    unreachable(rules, path, &mut out);
    ended_windows(rules, &mut |r, m| out.push(warn(r, m)));
    states(rules, &mut |r, m| out.push(warn(r, m)));
    temporary_media(rules, path, &mut out);
    out.sort_by_key(|w| w.location.line);
    out.into_iter().map(super::excerpt::bounded).collect()
}

/// A state that rules `set:` and no rule's `when: { state: NAME }` matches (only `any`
/// rules answer in it), and a state a rule matches that no rule sets (it never matches).
fn states(rules: &RuleSet, warn: &mut dyn FnMut(&Rule, String)) {
    let all: Vec<&Rule> = rules.rules.iter().chain(&rules.off).collect();
    let matched = |name: &str| {
        all.iter()
            .any(|r| matches!(r.state_when(), Some(StateWhen::Named(n)) if &**n == name))
    };
    for rule in &all {
        if let Some(Transition::Set(set)) = rule.transition() {
            if !matched(&set.name) {
                warn(rule, format!("state `{}` is set here, and no rule's `when: {{ state: {} }}` answers in it (only `state: any` rules, or rules without a state)", set.name, set.name));
            }
        }
        if let Some(StateWhen::Named(name)) = rule.state_when() {
            if !rules.states.contains(name) {
                warn(
                    rule,
                    format!("no rule sets state `{name}`: this rule never matches"),
                );
            }
        }
    }
}

/// What the rules ask of an account that has no customer-service API (`customer_service:
/// false`): `send:` and `late.via: customer_service` cannot be served there. Errors; none
/// when the account has the API.
pub fn account_fit(rules: &RuleSet, path: &Path, customer_service: bool) -> Vec<RuleError> {
    if customer_service {
        return Vec::new();
    }
    let mut out = Vec::new();
    for rule in &rules.rules {
        let late = rule.call().and_then(|call| call.late());
        let problem = if !rule.send().is_empty() {
            "`send:` needs WeChat's customer-service API, which this account does not have (`customer_service: false`); a `call` with `late:` answers such an account through WeChat's retries and the user's next message instead"
        } else if late.is_some_and(|late| late.via == Some(super::Via::CustomerService)) {
            "`late.via: customer_service` needs WeChat's customer-service API, which this account does not have (`customer_service: false`); leave `via` out (or `via: retries`): the answer then goes out as the passive reply of one of WeChat's retries, or of the user's next message"
        } else {
            continue;
        };
        out.push(RuleError {
            location: Location::new(
                path,
                Some((rule.line(), rule.column())).filter(|(l, _)| *l > 0),
            ),
            rule: Some(rule.name.to_string()),
            message: problem.to_owned(),
        });
    }
    out
}

/// Rules whose `active` window has ended: they can never match again.
fn ended_windows(rules: &RuleSet, warn: &mut dyn FnMut(&Rule, String)) {
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    for rule in &rules.rules {
        let Some(until) = rule.active().and_then(|a| a.until()) else {
            continue;
        };
        if until <= now {
            let ended = jiff::Timestamp::from_second(until)
                .map_or_else(|_| until.to_string(), |t| t.to_string());
            warn(
                rule,
                format!("its `active` window ended at {ended}: it will never match again"),
            );
        }
    }
}

/// Media ids their replies mark temporary (`expires:`): each a warning naming the day it
/// expires, or that it has.
fn temporary_media(rules: &RuleSet, path: &Path, out: &mut Vec<RuleError>) {
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    for rule in &rules.rules {
        for media in rule.temporary_media().iter() {
            out.push(RuleError {
                location: Location::new(
                    path,
                    Some((media.line, media.column)).filter(|(l, _)| *l > 0),
                ),
                rule: Some(rule.name.to_string()),
                message: super::media::warning(media, now),
            });
        }
    }
}

fn exacts(m: &StrMatcher) -> impl Iterator<Item = &str> {
    m.patterns.iter().filter_map(|p| match p {
        Pattern::Exact(s) => Some(&**s),
        _ => None,
    })
}

fn unknown_names(rules: &RuleSet, warn: &mut dyn FnMut(&Rule, String)) {
    for rule in &rules.rules {
        for test in &rule.when.tests {
            let (known, what) = match test.field {
                Field::Event => (KNOWN_EVENTS, "event"),
                Field::MsgType => (KNOWN_MSG_TYPES, "message type"),
                _ => continue,
            };
            for name in exacts(&test.matcher) {
                if known.contains(&name) {
                    continue;
                }
                let nearest = known
                    .iter()
                    .map(|k| (strsim::levenshtein(k, name), *k))
                    .min()
                    .filter(|(d, _)| *d <= 2)
                    .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                warn(
                    rule,
                    format!("WeChat sends no {what} named `{name}`{nearest}"),
                );
            }
        }
    }
}

fn duplicate_keywords(rules: &RuleSet, warn: &mut dyn FnMut(&Rule, String)) {
    let mut first: HashMap<&str, &Rule> = HashMap::new();
    for rule in &rules.rules {
        let Some(test) = rule.when.tests.iter().find(|t| t.field == Field::Keyword) else {
            continue;
        };
        let mine: BTreeSet<&str> = exacts(&test.matcher).collect();
        // A rule that is only sometimes live (a campaign, a cooldown) may share keywords with
        // the rule that answers the rest of the time.
        let sometimes = rule.active().is_some() || rule.cooldown_secs > 0;
        for keyword in mine {
            if sometimes {
                continue;
            }
            match first.get(keyword) {
                Some(earlier) => warn(
                    rule,
                    format!(
                        "keyword `{keyword}` is also an exact keyword of rule `{}` (line {})",
                        earlier.name,
                        earlier.line()
                    ),
                ),
                None => {
                    first.insert(keyword, rule);
                }
            }
        }
    }
}

fn long_news(rules: &RuleSet, warn: &mut dyn FnMut(&Rule, String)) {
    fn most_articles(spec: &ReplySpec) -> usize {
        match spec {
            ReplySpec::News(a) => a.len(),
            ReplySpec::OneOf(choices) => choices.iter().map(most_articles).max().unwrap_or(0),
            _ => 0,
        }
    }
    for rule in &rules.rules {
        let Action::Reply(spec) = &rule.action else {
            continue;
        };
        let n = most_articles(spec);
        // Replies to events may carry up to 8 articles; replies to what a user sends, one.
        let events_only = implied_msg_types(rule).is_some_and(|t| t == ["event"]);
        if n > 1 && !events_only {
            warn(
                rule,
                format!("a news reply to a user's message shows only 1 article; this one has {n}"),
            );
        }
    }
}

/// The message types a rule can match, when its criteria pin them down.
fn implied_msg_types(rule: &Rule) -> Option<Vec<&str>> {
    let tests = &rule.when.tests;
    if let Some(t) = tests.iter().find(|t| t.field == Field::MsgType) {
        let all: Option<Vec<&str>> = t
            .matcher
            .patterns
            .iter()
            .map(|p| match p {
                Pattern::Exact(s) => Some(&**s),
                _ => None,
            })
            .collect();
        if all.is_some() {
            return all;
        }
    }
    if tests
        .iter()
        .any(|t| t.field == Field::Event || t.field == Field::Status)
    {
        return Some(vec!["event"]);
    }
    if tests.iter().any(|t| t.field == Field::Keyword) {
        return Some(vec!["text", "voice"]);
    }
    None
}

/// Whether every value `b` matches is also matched by `a`.
fn matcher_covers(a: &StrMatcher, b: &StrMatcher) -> bool {
    b.patterns.iter().all(|pb| {
        a.patterns.iter().any(|pa| match (pa, pb) {
            (Pattern::Exact(x), Pattern::Exact(y)) => x == y,
            (Pattern::Prefix(p), Pattern::Exact(y) | Pattern::Prefix(y)) => y.starts_with(&**p),
            (
                Pattern::Contains(c),
                Pattern::Exact(y) | Pattern::Prefix(y) | Pattern::Contains(y),
            ) => y.contains(&**c),
            (Pattern::Regex(r), Pattern::Exact(y)) => r.get().is_some_and(|r| r.is_match(&**y)),
            (Pattern::Regex(r), Pattern::Regex(s)) => r.as_str() == s.as_str(),
            _ => false,
        })
    })
}

/// Whether every user state `b` matches in, `a` matches in too.
fn state_covers(a: &Rule, b: &Rule) -> bool {
    let (Some(sa), Some(sb)) = (a.when.state.as_deref(), b.when.state.as_deref()) else {
        // A rule without a state criterion matches in any state; one with cannot cover one
        // without.
        return a.when.state.is_none();
    };
    let states = match (&sa.when, &sb.when) {
        (StateWhen::Any, StateWhen::Any | StateWhen::Named(_)) => true,
        (x, y) => x == y,
    };
    let tries = match (sa.tries_below, sb.tries_below) {
        (None, _) => true,
        (Some(a), Some(b)) => b <= a,
        (Some(_), None) => false,
    };
    states && tries
}

/// Whether every message `b` matches is answered by `a` first.
fn covers(a: &Rule, b: &Rule) -> bool {
    if !state_covers(a, b) {
        return false;
    }
    a.when.tests.iter().all(|ta| {
        let same_field = b
            .when
            .tests
            .iter()
            .any(|tb| tb.field == ta.field && matcher_covers(&ta.matcher, &tb.matcher));
        same_field
            || (ta.field == Field::MsgType
                && implied_msg_types(b).is_some_and(|types| {
                    types.iter().all(|t| exacts(&ta.matcher).any(|e| e == *t))
                }))
    })
}

fn unreachable(rules: &RuleSet, path: &Path, out: &mut Vec<RuleError>) {
    let list = &rules.rules;
    let mut pairs = 0usize;
    for (j, b) in list.iter().enumerate() {
        // Only an earlier rule that the index would also try for b's messages can cover b.
        let candidates = rules.index.coverers(b);
        pairs += candidates.len();
        if pairs > PAIR_BUDGET {
            out.push(RuleError {
                location: Location::new(path, None),
                rule: None,
                message: "too many rules without an exact criterion: the unreachable-rule check was skipped".into(),
            });
            return;
        }
        let found = candidates
            .into_iter()
            .filter(|&i| i < j)
            .filter_map(|i| list.get(i))
            // A rule that is sometimes not live (`active`) or passes users over
            // (`cooldown`) lets later rules answer.
            .filter(|a| a.active().is_none() && a.cooldown_secs == 0)
            .find(|a| covers(a, b));
        if let Some(a) = found {
            out.push(RuleError {
                location: Location::new(path, Some((b.line(), b.column())).filter(|(l, _)| *l > 0)),
                rule: Some(b.name.to_string()),
                message: format!(
                    "unreachable: every message it matches is answered first by rule `{}` (line {})",
                    a.name, a.line()
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn warnings(yaml: &str) -> Vec<String> {
        let loaded = crate::rules::load_str(yaml, &[]).unwrap_or_else(|e| panic!("{e}"));
        super::lint(&loaded.rules, Path::new("rules.yaml"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn states_set_and_never_matched_or_matched_and_never_set_are_warned_of() {
        let yaml = "rules:\n  - name: ask\n    when: { keyword: a }\n    set: { state: asked }\n    reply: { text: q }\n  - name: lost\n    when: { keyword: b }\n    set: { state: nobody_reads }\n    reply: { text: q }\n  - name: in-asked\n    when: { state: asked }\n    reply: { text: ok }\n  - name: in-ghost\n    when: { state: ghost }\n    reply: { text: never }\n  - name: all\n    reply: { text: all }\n";
        assert_eq!(
            warnings(yaml),
            [
                "rules.yaml:6:5: rule `lost`: state `nobody_reads` is set here, and no rule's `when: { state: nobody_reads }` answers in it (only `state: any` rules, or rules without a state)",
                "rules.yaml:13:5: rule `in-ghost`: no rule sets state `ghost`: this rule never matches",
            ]
        );
    }

    #[test]
    fn a_rule_in_a_state_does_not_make_later_rules_unreachable() {
        // `in-asked` matches every message, but only of users in `asked`; `retry` only below
        // its tries; `all` answers the rest. A later rule of the same state is shadowed.
        let yaml = "rules:\n  - name: ask\n    when: { keyword: a }\n    set: { state: asked }\n    reply: { text: q }\n  - name: retry\n    when: { state: asked, tries_below: 3 }\n    reply: { text: again }\n  - name: in-asked\n    when: { state: asked }\n    reply: { text: ok }\n  - name: all\n    reply: { text: all }\n  - name: after-all\n    when: { state: asked }\n    reply: { text: never }\n";
        assert_eq!(
            warnings(yaml),
            ["rules.yaml:14:5: rule `after-all`: unreachable: every message it matches is answered first by rule `in-asked` (line 9)"]
        );
    }
}
