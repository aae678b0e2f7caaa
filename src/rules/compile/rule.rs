//! One rule of the file → `Rule`: its name (present, unique), its `reply` or `ignore`, the
//! rules that tie its parts together (`send` after a passive reply, what a `late` call may
//! send, `call.…` only with a `call`), its `cooldown` and its `active` window; `when`,
//! replies and `call` are their own files'. Every problem is an error; no IO.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use super::at::{At, Key};
use super::call::compile_call;
use super::check::{check_fields, uses_root};
use super::reply::{compile_reply, compile_send, string, unsendable};
use super::when::compile_when;
use super::{duration, Compiler, RuleInput};
use crate::rules::conversation::{self, SetState, Transition};
use crate::rules::schema::{self, RawReply, RawRule, RawSet, RawStr, Scalar};
use crate::rules::{active, Action, Call, Criteria, Extras, ReplySpec, Rule};

/// The rules' names seen so far, each with the line where it is first used.
pub(super) type Names = HashMap<String, usize, foldhash::fast::RandomState>;

/// Compiles rule `i` of the file, recording every problem in `c`;
/// `None` when it has any.
pub(super) fn compile_rule(
    c: &mut Compiler<'_>,
    i: usize,
    input: RuleInput,
    names: &mut Names,
) -> Option<Rule> {
    let start = c.positions.rule(i);
    c.temporary.clear();
    let raw_rule = typed(c, i, input)?;
    // What the rule says, as typed: comments, layout, quoting and its place in the file do
    // not change what it does, so they do not make it changed. Compared within the process
    // only (a reload's report); foldhash, as SipHash was 4% of a 100,000-rule load's CPU.
    let fingerprint = foldhash::quality::FixedState::default().hash_one(&raw_rule);
    let name = raw_rule.name.0;
    if name.trim().is_empty() {
        c.error(None, start, "rule name is empty".into());
        return None;
    }
    let at = At::rule(i, &name);
    if let Some(first) = names.get(&name) {
        let first_line = *first;
        c.error_at(
            at.field(Key::Name),
            format!("duplicate rule name (first used on line {first_line})"),
        );
        return None;
    }
    let (line, column) = start.unwrap_or((0, 0));
    names.insert(name.clone(), line);
    let errors_before = c.errors.len();
    let when = compile_when(c, at, raw_rule.when);
    let has_call = raw_rule.call.is_some();
    let action = compile_action(c, at, start, raw_rule.reply, raw_rule.ignore, has_call);
    if matches!(action, Some(Action::Ignore)) && !raw_rule.send.is_empty() {
        let why = if raw_rule.ignore {
            "a rule with `ignore: true` cannot send"
        } else {
            "give the rule a `reply` (a rule whose service decides has none of its own)"
        };
        c.error_at_key(
            at.field(Key::Send),
            format!("`send` goes out after a passive reply: {why}"),
        );
    }
    let send = compile_send(c, at, raw_rule.send);
    let call = compile_call(c, at, raw_rule.call, raw_rule.on_error, raw_rule.late);
    check_late_replies(c, at, action.as_ref(), call.as_deref());
    if !has_call {
        check_no_call(c, at, action.as_ref(), &send);
    }
    if c.errors.len() == errors_before {
        check_templates(c, at, &when, action.as_ref(), &send, call.as_deref());
    }
    let cooldown_secs = compile_cooldown(c, at, raw_rule.cooldown.as_ref());
    if cooldown_secs > 0 && matches!(action, Some(Action::Ignore)) && !has_call {
        c.error_at_key(
            at.field(Key::Cooldown),
            "`cooldown` starts when the rule answers, and a rule with `ignore: true` never does"
                .into(),
        );
    }
    let active = raw_rule.active.and_then(|raw| compile_active(c, at, &raw));
    let plain = match raw_rule.format.as_ref().map(|f| f.0.trim()) {
        None => false,
        Some("plain") => true,
        Some(_) => {
            c.error_at_key(
                at.field(Key::Format),
                "`format` is `plain` (Markdown made WeChat text)".into(),
            );
            false
        }
    };
    let converse = compile_converse(c, at, raw_rule.set, raw_rule.clear);
    if c.errors.len() == errors_before {
        if let Some(Transition::Set(set)) = &converse {
            check_set_templates(c, at, &when, set);
        }
    }
    let (Some(action), true) = (action, c.errors.len() == errors_before) else {
        return None;
    };
    let extras = Extras {
        send,
        active,
        converse,
        temporary_media: std::mem::take(&mut c.temporary).into_boxed_slice(),
    };
    Some(Rule {
        name: name.into(),
        fingerprint,
        when,
        action,
        call,
        extras: extras.boxed(),
        last_hit: std::sync::atomic::AtomicU64::new(0),
        line: position(line),
        column: position(column),
        cooldown_secs,
        off: !raw_rule.enabled,
        plain,
    })
}

/// A line or column as a rule keeps it: a file of more than 4 billion lines is not read
/// (`rules::read` bounds its size), so this saturates only in theory.
fn position(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The rule as typed, or `None` with the error of a rule that does not type, at the key or
/// value serde names (`e.path`, within the rule; `.` for the rule itself).
fn typed(c: &mut Compiler<'_>, i: usize, input: RuleInput) -> Option<RawRule> {
    match input {
        RuleInput::Typed(r) => Some(r),
        RuleInput::Failed { name, error: e } => {
            let rule = At::rule(i, name.as_deref().unwrap_or_default());
            let path = if e.path == "." {
                rule.to_string()
            } else {
                rule.key(&e.path).to_string()
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
            None
        }
    }
}

/// The key named in serde's "unknown field `x`, expected …".
fn unknown_field_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// What the rule does: its `reply`, or nothing (`ignore: true`, or a `call` whose service
/// decides); `None` when that is not clear or the reply has errors.
fn compile_action(
    c: &mut Compiler<'_>,
    at: At<'_>,
    start: Option<(usize, usize)>,
    reply: Option<RawReply>,
    ignore: bool,
    has_call: bool,
) -> Option<Action> {
    match (reply, ignore) {
        (Some(_), true) => {
            c.error(
                Some(at.rule_name()),
                start,
                "a rule has either `reply` or `ignore: true`, not both".into(),
            );
            None
        }
        // A rule with a call and no reply leaves the answer to its service.
        (None, false) if has_call => Some(Action::Ignore),
        (None, false) => {
            c.error(
                Some(at.rule_name()),
                start,
                "a rule needs `reply` or `ignore: true`".into(),
            );
            None
        }
        (None, true) => Some(Action::Ignore),
        (Some(reply), false) => compile_reply(c, at.field(Key::Reply), reply).map(Action::Reply),
    }
}

/// A late call's reply, and its `on_error`, go out through the customer-service API: each
/// must be one it carries.
fn check_late_replies(
    c: &mut Compiler<'_>,
    at: At<'_>,
    action: Option<&Action>,
    call: Option<&Call>,
) {
    let Some(late_call) = call.filter(|c| c.late.is_some()) else {
        return;
    };
    let reply = match action {
        Some(Action::Reply(spec)) => Some((Key::Reply, spec)),
        _ => None,
    };
    let on_error = late_call.on_error.as_ref().map(|spec| (Key::OnError, spec));
    let problems: Vec<(Key, String)> = reply
        .into_iter()
        .chain(on_error)
        .filter_map(|(key, spec)| unsendable(spec).map(|why| (key, why)))
        .collect();
    for (key, why) in problems {
        c.error_at(
            at.field(key),
            format!("a `late` rule's reply may go out through the customer-service API, which takes text, image, voice, video, music or news of one article; {why}"),
        );
    }
}

/// A rule without a `call` has no service's answer: its reply and `send` cannot use
/// `call.…`.
fn check_no_call(c: &mut Compiler<'_>, at: At<'_>, action: Option<&Action>, send: &[ReplySpec]) {
    let uses_call = match action {
        Some(Action::Reply(spec)) => uses_root(c, spec, "call"),
        _ => false,
    };
    let send_at = at.field(Key::Send);
    let using: Vec<(At<'_>, bool)> = [(at.field(Key::Reply), uses_call)]
        .into_iter()
        .chain(
            send.iter()
                .enumerate()
                .map(|(i, spec)| (send_at.index(i), uses_root(c, spec, "call"))),
        )
        .collect();
    for (place, uses) in using {
        if uses {
            c.error_at(
                place,
                "`call.…` is the answer of the rule's service, and this rule has no `call`".into(),
            );
        }
    }
}

/// Holds every template of the rule's replies (`reply`, `send`, `on_error`, `late.reply`) to
/// what the rule can see (`check_fields`).
fn check_templates(
    c: &mut Compiler<'_>,
    at: At<'_>,
    when: &Criteria,
    action: Option<&Action>,
    send: &[ReplySpec],
    call: Option<&Call>,
) {
    let send_at = at.field(Key::Send);
    let mut specs: Vec<(At<'_>, &ReplySpec)> = Vec::new();
    if let Some(Action::Reply(spec)) = action {
        specs.push((at.field(Key::Reply), spec));
    }
    specs.extend(send.iter().enumerate().map(|(i, s)| (send_at.index(i), s)));
    if let Some(call) = call {
        specs.extend(call.on_error.iter().map(|s| (at.field(Key::OnError), s)));
        if let Some(late) = &call.late {
            specs.extend(late.reply.iter().map(|s| (at.field(Key::LateReply), s)));
        }
    }
    check_fields(c, when, &specs);
}

/// A rule's `cooldown:` in whole seconds; 0 for none, or when it has errors.
fn compile_cooldown(c: &mut Compiler<'_>, rule: At<'_>, raw: Option<&Scalar>) -> u32 {
    let at = rule.field(Key::Cooldown);
    match raw {
        None => 0,
        Some(text) => match duration(c, at, &text.0, MAX_COOLDOWN) {
            Some(d) if d.as_secs() == 0 || d.subsec_nanos() != 0 => {
                c.error_at(
                    at,
                    "`cooldown` is whole seconds (`30s`, `60m`, `1h`)".into(),
                );
                0
            }
            Some(d) => u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
            None => 0,
        },
    }
}

/// A rule's `active:` window, in its own `timezone`, the file's, or Asia/Shanghai.
fn compile_active(
    c: &mut Compiler<'_>,
    rule: At<'_>,
    raw: &schema::RawActive,
) -> Option<active::Active> {
    let file_timezone = c.positions.timezone().map(str::to_owned);
    let timezone = raw
        .timezone
        .as_ref()
        .map(|t| t.0.clone())
        .or(file_timezone)
        .unwrap_or_else(|| active::DEFAULT_TIMEZONE.to_owned());
    let written = active::Written {
        from: raw.from.as_ref().map(|s| s.0.as_str()),
        until: raw.until.as_ref().map(|s| s.0.as_str()),
        hours: raw.hours.iter().map(|s| s.0.as_str()).collect(),
        weekdays: raw.weekdays.iter().map(|s| s.0.as_str()).collect(),
        timezone: &timezone,
    };
    match active::compile(&written) {
        Ok(active) => Some(active),
        Err((key, why)) => {
            let at = rule.field(Key::Active);
            let position = c.value_at(at.key(key)).or_else(|| c.key_at(at));
            c.error(
                Some(rule.rule_name()),
                position,
                format!("`active.{key}`: {why}"),
            );
            None
        }
    }
}

/// A rule's `set:` or `clear: true` (not both).
fn compile_converse(
    c: &mut Compiler<'_>,
    at: At<'_>,
    set: Option<Box<RawSet>>,
    clear: bool,
) -> Option<Transition> {
    let set_at = at.field(Key::Set);
    let raw = match (set, clear) {
        (None, false) => return None,
        (None, true) => return Some(Transition::Clear),
        (Some(_), true) => {
            c.error_at_key(
                at.field(Key::Clear),
                "a rule either `set`s a state or `clear`s it, not both".into(),
            );
            return None;
        }
        (Some(raw), false) => raw,
    };
    let RawSet {
        state,
        ttl,
        vars,
        on_expire,
    } = *raw;
    let name = state.0.trim().to_owned();
    if let Some(problem) = conversation::name_problem(&name) {
        c.error_at(set_at.key("state"), problem);
    }
    let ttl = match ttl {
        None => conversation::DEFAULT_TTL,
        Some(text) => duration(c, set_at.key("ttl"), &text.0, conversation::MAX_TTL)
            .unwrap_or(conversation::DEFAULT_TTL),
    };
    let vars_at = set_at.key("vars");
    if vars.len() > conversation::MAX_VARS {
        c.error_at_key(
            vars_at,
            format!("a state holds at most {} vars", conversation::MAX_VARS),
        );
    }
    let vars = vars
        .into_iter()
        .map(|(key, value)| {
            let here = vars_at.key(&key);
            let ok = !key.is_empty()
                && key.len() <= 64
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                c.error_at_key(
                    here,
                    format!(
                        "`{}` is not a var's name: 1 to 64 letters, digits or `_`",
                        crate::rules::excerpt::excerpt(&key)
                    ),
                );
            }
            let tpl = string(c, here, Some(RawStr::Inline(value)));
            (key, tpl)
        })
        .collect();
    let on_expire = on_expire.and_then(|reply| compile_reply(c, set_at.key("on_expire"), reply));
    Some(Transition::Set(SetState {
        name: name.into(),
        ttl,
        vars,
        on_expire,
    }))
}

/// A `set:`'s vars see what the rule's reply sees; its `on_expire` answers whatever the
/// user sends next, so it is held to the fields every push has.
fn check_set_templates(c: &mut Compiler<'_>, at: At<'_>, when: &Criteria, set: &SetState) {
    let set_at = at.field(Key::Set);
    let vars_at = set_at.key("vars");
    let vars: Vec<(String, ReplySpec)> = set
        .vars
        .iter()
        .map(|(key, tpl)| (key.clone(), ReplySpec::Text(tpl.clone())))
        .collect();
    let specs: Vec<(At<'_>, &ReplySpec)> = vars
        .iter()
        .map(|(key, spec)| (vars_at.key(key), spec))
        .collect();
    check_fields(c, when, &specs);
    if let Some(spec) = &set.on_expire {
        check_fields(c, &Criteria::default(), &[(set_at.key("on_expire"), spec)]);
    }
}

/// The longest `cooldown`.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(30 * 24 * 3600);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::rules::compile::rule_errors;
    use crate::rules::load_str;

    #[test]
    fn a_rule_that_is_off_is_checked_but_never_matched() {
        let loaded = crate::rules::load_str(
            "rules:\n  - name: a\n    enabled: false\n    reply: { text: a }\n  - name: b\n    enabled: true\n    reply: { text: b }\n",
            &[],
        )
        .unwrap();
        let names = |rules: &[crate::rules::Rule]| -> Vec<String> {
            rules.iter().map(|r| r.name().to_owned()).collect()
        };
        assert_eq!(names(loaded.rules.rules()), ["b"]);
        assert_eq!(names(loaded.rules.off()), ["a"]);
        assert!(!loaded.rules.off()[0].is_on());
        // An off rule is checked as any other.
        let e = crate::rules::load_str(
            "rules:\n  - name: a\n    enabled: false\n    reply: { text: { template: nope } }\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = crate::rules::load_str(
            "rules:\n  - name: a\n    enabled: no-thanks\n    reply: { text: a }\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("rules.yaml:3:"), "{e}");
    }

    #[test]
    fn conversation_keys_are_checked_where_they_are_written() {
        let ok = load_str(
            "rules:\n  - name: ask\n    when: { keyword: 绑定 }\n    set: { state: bind, ttl: 5m, vars: { at: \"{{CreateTime}}\" }, on_expire: { text: \"{{state.name}} 已超时\" } }\n    reply: { text: 请回复, choices: [{ id: 1, text: 是 }] }\n  - name: in\n    when: { state: bind, tries_below: 3 }\n    reply: { text: \"{{state.tries}} {{state.vars.at}}\" }\n",
            &[],
        )
        .unwrap();
        assert!(ok.rules.converses());
        assert_eq!(ok.rules.states().len(), 1);
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
        for (body, says) in [
            ("    set: { state: none }\n    reply: { text: hi }\n", "rules.yaml:3:19: rule `r`: `none` is not a state's name: `state: none` in `when` means no state"),
            ("    set: { state: \"a b\" }\n    reply: { text: hi }\n", "rules.yaml:3:19: rule `r`: `a b` is not a state's name: letters, digits, `_` and `-`"),
            ("    set: { state: s, ttl: 30d }\n    reply: { text: hi }\n", "rules.yaml:3:27: rule `r`: `ttl` is at most 7days"),
            ("    set: { state: s }\n    clear: true\n    reply: { text: hi }\n", "rules.yaml:4:5: rule `r`: a rule either `set`s a state or `clear`s it, not both"),
            ("    set: { state: s, vars: { a-b: x } }\n    reply: { text: hi }\n", "rules.yaml:3:30: rule `r`: `a-b` is not a var's name: 1 to 64 letters, digits or `_`"),
            ("    when: { tries_below: 2 }\n    reply: { text: hi }\n", "rules.yaml:3:13: rule `r`: `tries_below` counts the user's messages in a state: give `state` too"),
            ("    when: { state: s, tries_below: 0 }\n    reply: { text: hi }\n", "rules.yaml:3:36: rule `r`: `tries_below: 0` never holds: the first answer in a state is try 1"),
            ("    reply: { image: { media_id: m }, choices: [{ id: 1, text: a }] }\n", "rules.yaml:3:38: rule `r`: `choices` go with a `text` reply, and this one is `image`"),
            ("    reply: { text: t, choices: [{ id: \"a b\", text: a }] }\n", "rules.yaml:3:39: rule `r`: a choice's id is 1 to 64 letters, digits, `_` or `-`"),
            ("    reply: { text: t, choices: [{ id: 1, text: \"a&b\" }] }\n", "rules.yaml:3:48: rule `r`: a choice's text is 1 to 128 bytes on one line, without `\"`, `&`, `<`, `>` or `{{`"),
            ("    reply: { text: t, choices: [{ id: 1, text: a }, { id: 1, text: b }] }\n", "rules.yaml:3:59: rule `r`: choice id `1` is given twice"),
            ("    reply: { text: \"{{state.tries.x}}\" }\n", "rules.yaml:3:14: rule `r`: `{{state.tries.x}}`: templates see `state.name`, `state.tries` and `state.vars.NAME`, not `state.tries.x`"),
        ] {
            assert_eq!(rule_errors(body), [says], "{body}");
        }
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
