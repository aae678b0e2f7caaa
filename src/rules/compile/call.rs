//! A rule's `call` (the URL, method, timeout, headers and concurrency of the request to the
//! account's service), with its `on_error` and `late`. Each problem is an error naming the
//! key; header values, which may be credentials, never appear in one. No request is made.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::at::{At, Key};
use super::check::no_call_in;
use super::reply::compile_reply;
use super::{duration, Compiler};
use crate::rules::schema::{self, RawCall, RawLate, RawReply};
use crate::rules::tpl::{self, Simple};
use crate::rules::{Call, CallMethod, Late, Via};

/// The default and the bounds of a call's `timeout`.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a push waits for a call without `late`: the passive budget of Part 1.
pub(crate) const PASSIVE_BUDGET: Duration = crate::wire::PASSIVE_DEADLINE;
/// The default and the longest `late.after`: WeChat gives up on a push after 5 s.
pub(crate) const DEFAULT_LATE_AFTER: Duration = Duration::from_secs(3);
pub(crate) const MAX_LATE_AFTER: Duration = Duration::from_millis(4500);
/// How long an answer no attempt could carry waits for the user's next message, by
/// default and at most (WeChat's window for the user's messages is 48 h).
pub(crate) const DEFAULT_LATE_KEEP: Duration = Duration::from_secs(30 * 60);
pub(crate) const MAX_LATE_KEEP: Duration = Duration::from_secs(48 * 3600);
/// Calls of one rule at once, by default and at most.
pub(crate) const DEFAULT_CALL_CONCURRENCY: u32 = 64;
pub(crate) const MAX_CALL_CONCURRENCY: u32 = 10_000;

/// A rule's `call`, with its `on_error` and `late`. Each problem is an error naming the key.
pub(super) fn compile_call(
    c: &mut Compiler<'_>,
    rule: At<'_>,
    raw: Option<Box<RawCall>>,
    on_error: Option<Box<RawReply>>,
    late: Option<Box<RawLate>>,
) -> Option<Box<Call>> {
    let Some(raw) = raw else {
        for (key, given) in [
            (Key::OnError, on_error.is_some()),
            (Key::Late, late.is_some()),
        ] {
            if given {
                c.error_at_key(
                    rule.field(key),
                    format!(
                        "`{}` goes with a `call`, and this rule has none",
                        key.as_str()
                    ),
                );
            }
        }
        return None;
    };
    let errors_before = c.errors.len();
    let at = rule.field(Key::Call);
    let url = compile_url(c, at.key("url"), &raw.url.0);
    let method = match raw.method.as_ref().map(|m| m.0.to_ascii_uppercase()) {
        None => CallMethod::Post,
        Some(m) if m == "POST" => CallMethod::Post,
        Some(m) if m == "GET" => CallMethod::Get,
        Some(_) => {
            c.error_at(
                at.key("method"),
                "a call's `method` is `POST` or `GET`".into(),
            );
            CallMethod::Post
        }
    };
    let timeout_at = at.key("timeout");
    let timeout = match &raw.timeout {
        None => DEFAULT_CALL_TIMEOUT,
        Some(t) => duration(c, timeout_at, &t.0, MAX_CALL_TIMEOUT).unwrap_or(DEFAULT_CALL_TIMEOUT),
    };
    let headers = compile_headers(c, at.key("headers"), &raw.headers);
    let concurrency = raw.concurrency.unwrap_or(DEFAULT_CALL_CONCURRENCY);
    if !(1..=MAX_CALL_CONCURRENCY).contains(&concurrency) {
        c.error_at(
            at.key("concurrency"),
            format!("a call's `concurrency` is 1 to {MAX_CALL_CONCURRENCY}"),
        );
    }
    let on_error = on_error.and_then(|reply| {
        let at = rule.field(Key::OnError);
        let spec = compile_reply(c, at, *reply)?;
        no_call_in(c, at, &spec, "`on_error` answers when the call failed");
        Some(spec)
    });
    let late = match late {
        None => {
            if timeout > PASSIVE_BUDGET && raw.timeout.is_some() {
                c.error_at(
                    timeout_at,
                    format!(
                        "a call without `late` must answer within the passive budget ({}): give a shorter `timeout`, or `late:` to answer a slower service through the customer-service API",
                        humantime::format_duration(PASSIVE_BUDGET)
                    ),
                );
            }
            None
        }
        Some(late) => Some(compile_late(c, rule, *late, timeout)),
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

/// A call's `late`: how long the push waits for the call (`after`, below the call's
/// `timeout`), and the holding reply, which cannot use `call.…`.
fn compile_late(c: &mut Compiler<'_>, rule: At<'_>, late: RawLate, timeout: Duration) -> Late {
    let at = rule.field(Key::Late);
    let after_at = at.key("after");
    let after = match &late.after {
        None => DEFAULT_LATE_AFTER,
        Some(a) => duration(c, after_at, &a.0, MAX_LATE_AFTER).unwrap_or(DEFAULT_LATE_AFTER),
    };
    if after >= timeout {
        let position = c.value_at(after_at).or_else(|| c.key_at(at));
        c.error(
            Some(rule.rule_name()),
            position,
            format!(
                "`late.after` ({}) must be below the call's `timeout` ({}): the reply goes out late only if the call can still answer",
                humantime::format_duration(after),
                humantime::format_duration(timeout)
            ),
        );
    }
    let reply = late.reply.and_then(|reply| {
        let at = rule.field(Key::LateReply);
        let spec = compile_reply(c, at, reply)?;
        no_call_in(
            c,
            at,
            &spec,
            "the holding reply goes out before the call has answered",
        );
        Some(spec)
    });
    let via = late.via.as_ref().and_then(|via| match via.0.trim() {
        "retries" => Some(Via::Retries),
        "customer_service" => Some(Via::CustomerService),
        _ => {
            c.error_at(
                at.key("via"),
                "`late.via` is `customer_service` or `retries`".into(),
            );
            None
        }
    });
    let keep = match &late.keep {
        None => DEFAULT_LATE_KEEP,
        Some(k) if k.0.trim() == "0" => Duration::ZERO,
        Some(k) => duration(c, at.key("keep"), &k.0, MAX_LATE_KEEP).unwrap_or(DEFAULT_LATE_KEEP),
    };
    let mut pickup = Vec::with_capacity(late.pickup.len());
    for (i, word) in late.pickup.iter().enumerate() {
        let folded = crate::rules::fold::folded(word.0.trim());
        if folded.is_empty() {
            c.error_at(
                at.key("pickup").index(i),
                "a `late.pickup` keyword is not empty".into(),
            );
        }
        pickup.push(folded.into_owned().into_boxed_str());
    }
    Late {
        after,
        reply,
        via,
        keep,
        pickup,
    }
}

/// A call's URL: text and `{{path}}`s, `http` or `https`, the scheme and host written out.
fn compile_url(c: &mut Compiler<'_>, at: At<'_>, text: &str) -> Option<Simple> {
    let fail = |c: &mut Compiler<'_>, message: String| {
        c.error_at(at, message);
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
    at: At<'_>,
    raw: &BTreeMap<String, schema::Scalar>,
) -> Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)> {
    let mut headers = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let at = at.key(name);
        let Ok(header) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) else {
            c.error_at_key(
                at,
                format!("`{}` is not a header name", name.escape_debug()),
            );
            continue;
        };
        let expanded = match expand_env(&value.0, |var| std::env::var(var).ok()) {
            Ok(expanded) => expanded,
            Err(why) => {
                c.error_at(at, format!("header `{header}`: {why}"));
                continue;
            }
        };
        match reqwest::header::HeaderValue::from_str(&expanded) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.push((header, v));
            }
            Err(_) => {
                c.error_at(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::rule_errors;
    use crate::rules::load_str;

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
}
