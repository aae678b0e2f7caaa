//! Renders a matched rule's reply: evaluates its templates (compiled at load, in the
//! language `rules::tpl` defines) against the message fields and the regex captures, into a
//! `Reply`, within `Bounded` output. Evaluation only: nothing here parses or compiles a
//! template, and this module does no IO.

use handlebars::RenderErrorReason;
use std::cell::OnceCell;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Map, Value};

use crate::rules::conversation::UserState;
use crate::rules::tpl::{Segment, Simple};
use crate::rules::{ArticleSpec, Captures, ReplySpec, RuleSet, Tpl};
use crate::wire::{Article, FieldRef, Message, Reply};

/// A template failed at render time (for example a field the message lacks, in strict mode).
#[derive(Debug, thiserror::Error)]
#[error("template `{template}` failed: {reason}")]
pub struct RenderError {
    pub template: String,
    pub reason: String,
}

/// What a reply is rendered from: the message, the matched rule's name and its captures.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub message: &'a Message,
    pub rule: &'a str,
    pub captures: &'a Captures,
    /// The JSON object the rule's service answered (`call:`), if it has one and it did.
    pub call: Option<&'a Value>,
    /// The user's conversation state (`state.name`, `state.vars.…`, `state.tries`).
    pub state: Option<&'a UserState>,
}

impl Scope<'_> {
    /// The data handlebars templates see: every message field under its WeChat name, plus
    /// `captures` (regex groups by number and by name) and `rule` (the matched rule's name).
    pub fn context(&self) -> Value {
        let mut fields = self.message.to_fields();
        let captures: Map<String, Value> = self
            .captures
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        fields.insert("captures".into(), Value::Object(captures));
        fields.insert("rule".into(), Value::String(self.rule.to_owned()));
        if let Some(call) = self.call {
            fields.insert("call".into(), call.clone());
        }
        if let Some(state) = self.state {
            let vars: Map<String, Value> = state
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let mut object = Map::new();
            object.insert("name".into(), Value::String(state.name.clone()));
            object.insert("tries".into(), Value::from(state.tries));
            object.insert("vars".into(), Value::Object(vars));
            fields.insert("state".into(), Value::Object(object));
        }
        Value::Object(fields)
    }

    /// The message as a rule's `call` POSTs it: the template context without `call`.
    pub fn request_body(&self) -> Value {
        Scope {
            call: None,
            ..*self
        }
        .context()
    }

    /// The value at a parsed path, as `context()` would give it.
    fn resolve(&self, parts: &[String]) -> Option<Resolved<'_>> {
        let (first, rest) = parts.split_first()?;
        match first.as_str() {
            "captures" => match rest {
                [] => Some(Resolved::Object),
                [name] => {
                    // Later groups of the same name win, as when the map is built.
                    let found = self.captures.iter().rev().find(|(k, _)| k == name)?;
                    Some(Resolved::Str(&found.1))
                }
                _ => None,
            },
            "rule" => rest.is_empty().then_some(Resolved::Str(self.rule)),
            "state" => {
                let state = self.state?;
                match rest {
                    [] => Some(Resolved::Object),
                    [name] if name == "name" => Some(Resolved::Str(&state.name)),
                    [tries] if tries == "tries" => Some(Resolved::Count(state.tries)),
                    [vars] if vars == "vars" => Some(Resolved::Object),
                    [vars, key] if vars == "vars" => state.vars.get(key).map(|v| Resolved::Str(v)),
                    _ => None,
                }
            }
            "call" if self.call.is_some() => {
                let mut value = self.call?;
                for part in rest {
                    value = match value {
                        Value::Object(map) => map.get(part.as_str())?,
                        Value::Array(list) => list.get(part.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                match value {
                    Value::String(s) => Some(Resolved::Str(s)),
                    // What a service answered is written as it came: an object or a list
                    // as JSON (as `rules::tpl::call_values_as_json` makes handlebars do).
                    Value::Object(_) | Value::Array(_) => Some(Resolved::Structured(value)),
                    other => Some(Resolved::Json(other)),
                }
            }
            _ => match self.message.get(parts.iter().map(String::as_str))? {
                FieldRef::Text(text) => Some(Resolved::Str(text)),
                FieldRef::Json(value) => Some(Resolved::Json(value)),
            },
        }
    }
}

enum Resolved<'a> {
    Str(&'a str),
    Count(u32),
    Json(&'a Value),
    /// A service's object or list, written as JSON.
    Structured(&'a Value),
    Object,
}

impl Simple {
    /// Errors name the template file, or the rule an inline template belongs to.
    fn render(&self, scope: &Scope<'_>) -> Result<String, RenderError> {
        self.render_with(scope, |value, out| out.push_str(value))
    }

    /// Renders a URL: each value percent-encoded (all but `A-Z a-z 0-9 - . _ ~`), so that a
    /// value cannot add a path segment, a query or a fragment; the text is kept as written.
    pub(crate) fn render_url(&self, scope: &Scope<'_>) -> Result<String, RenderError> {
        self.render_with(scope, |value, out| {
            out.extend(percent_encoding::utf8_percent_encode(value, URL_VALUE));
        })
    }

    fn render_with(
        &self,
        scope: &Scope<'_>,
        write: impl Fn(&str, &mut String),
    ) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.capacity());
        let mut text = String::new();
        for segment in self.segments() {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(parts) => match scope.resolve(parts) {
                    Some(Resolved::Str(s)) => write(s, &mut out),
                    Some(Resolved::Json(v)) => {
                        text.clear();
                        json_render(v, &mut text);
                        write(&text, &mut out);
                    }
                    Some(Resolved::Structured(v)) => {
                        text.clear();
                        text.push_str(&serde_json::to_string(v).unwrap_or_default());
                        write(&text, &mut out);
                    }
                    Some(Resolved::Object) => write("[object]", &mut out),
                    Some(Resolved::Count(n)) => {
                        text.clear();
                        text.push_str(&n.to_string());
                        write(&text, &mut out);
                    }
                    None => {
                        return Err(RenderError {
                            template: self.file().unwrap_or(scope.rule).to_owned(),
                            reason: format!("the message has no field `{}`", parts.join(".")),
                        })
                    }
                },
            }
        }
        Ok(out)
    }
}

/// What a value expanded into a call's URL keeps as is: RFC 3986's unreserved characters.
const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A JSON value as handlebars prints it.
fn json_render(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Null => {}
        Value::Array(list) => {
            out.push('[');
            for (i, v) in list.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                json_render(v, out);
            }
            out.push(']');
        }
        Value::Object(_) => out.push_str("[object]"),
    }
}

/// Renders `spec` for `scope`. A `one_of` picks one choice at random.
pub fn render_reply(
    rules: &RuleSet,
    spec: &ReplySpec,
    scope: &Scope<'_>,
) -> Result<Reply, RenderError> {
    // Built only if a handlebars template needs it, once for all the reply's strings.
    let context = OnceCell::new();
    render_spec(rules, spec, scope, &context)
}

/// One string (a `set:`'s var) rendered for `scope`.
pub fn render_text(rules: &RuleSet, tpl: &Tpl, scope: &Scope<'_>) -> Result<String, RenderError> {
    render_str(rules, tpl, scope, &OnceCell::new())
}

fn render_spec(
    rules: &RuleSet,
    spec: &ReplySpec,
    scope: &Scope<'_>,
    context: &OnceCell<Value>,
) -> Result<Reply, RenderError> {
    let s = |t: &Tpl| render_str(rules, t, scope, context);
    Ok(match spec {
        ReplySpec::Text(t) => Reply::Text { content: s(t)? },
        ReplySpec::Choices(choices) => {
            let mut content = s(&choices.text)?;
            choices.append_links(&mut content);
            Reply::Text { content }
        }
        ReplySpec::Image(t) => Reply::Image { media_id: s(t)? },
        ReplySpec::Voice(t) => Reply::Voice { media_id: s(t)? },
        ReplySpec::Video(v) => Reply::Video {
            media_id: s(&v.media_id)?,
            title: s(&v.title)?,
            description: s(&v.description)?,
        },
        ReplySpec::Music(m) => Reply::Music {
            title: s(&m.title)?,
            description: s(&m.description)?,
            music_url: s(&m.music_url)?,
            hq_music_url: s(&m.hq_music_url)?,
            thumb_media_id: s(&m.thumb_media_id)?,
        },
        ReplySpec::News(articles) => Reply::News {
            articles: articles
                .iter()
                .map(|a: &ArticleSpec| {
                    Ok(Article {
                        title: s(&a.title)?,
                        description: s(&a.description)?,
                        pic_url: s(&a.pic_url)?,
                        url: s(&a.url)?,
                    })
                })
                .collect::<Result<_, RenderError>>()?,
        },
        ReplySpec::TransferCustomerService(account) => Reply::TransferCustomerService {
            kf_account: account.as_ref().map(s).transpose()?,
        },
        ReplySpec::OneOf(choices) => {
            let pick = rand::thread_rng().gen_range(0..choices.len().max(1));
            match choices.get(pick) {
                Some(choice) => render_spec(rules, choice, scope, context)?,
                None => {
                    return Err(RenderError {
                        template: "one_of".into(),
                        reason: "no choices".into(),
                    })
                }
            }
        }
    })
}

fn render_str(
    rules: &RuleSet,
    tpl: &Tpl,
    scope: &Scope<'_>,
    context: &OnceCell<Value>,
) -> Result<String, RenderError> {
    match tpl {
        Tpl::Literal(s) => Ok(s.clone()),
        Tpl::Simple(simple) => simple.render(scope),
        // Uploaded in the background at load; until then the reply cannot be made.
        Tpl::Media(file) => rules.media_ids().get(file).ok_or_else(|| RenderError {
            template: file.name.clone(),
            reason: MEDIA_PENDING.into(),
        }),
        Tpl::Template(name) => {
            let mut out = Bounded::new();
            let rendered = rules.templates().render_to_write(
                name,
                context.get_or_init(|| scope.context()),
                &mut out,
            );
            let fail = |reason: String| RenderError {
                template: name.clone(),
                reason,
            };
            if let Some(over) = out.over {
                return Err(fail(over.to_string()));
            }
            rendered.map_err(|e| {
                fail(match e.reason() {
                    RenderErrorReason::MissingVariable(Some(path)) => {
                        format!("the message has no field `{path}`")
                    }
                    other => other.to_string(),
                })
            })?;
            String::from_utf8(out.bytes).map_err(|_| fail("the output is not UTF-8".into()))
        }
    }
}

/// The reason of a render that needed a media file whose upload has not finished: the
/// push is answered as a failed render is (`success`), or after a call by the rule's
/// `on_error` (`answer::after_call`), and counted apart (`media_pending`).
pub const MEDIA_PENDING: &str = "its upload as permanent material has not finished";

/// The most one handlebars template may write. WeChat shows a few KiB of a reply; the
/// loops of a template over a pushed list could otherwise write megabytes.
pub const MAX_RENDERED: usize = 64 * 1024;
/// The longest one handlebars template may take to render, checked at each write. A
/// render takes microseconds; the deadline answers a push well within WeChat's 5 s.
pub const MAX_RENDER_TIME: Duration = Duration::from_millis(250);

/// Why a render was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overrun {
    #[error("the output passed {MAX_RENDERED} bytes")]
    Size,
    #[error("rendering took over {} ms", MAX_RENDER_TIME.as_millis())]
    Time,
}

/// A render's output, refusing to grow past `MAX_RENDERED` or to go on past
/// `MAX_RENDER_TIME`: the first write past either fails, which stops handlebars.
struct Bounded {
    bytes: Vec<u8>,
    started: Instant,
    writes: u32,
    over: Option<Overrun>,
}

impl Bounded {
    fn new() -> Bounded {
        Bounded {
            bytes: Vec::new(),
            started: Instant::now(),
            writes: 0,
            over: None,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes = self.writes.wrapping_add(1);
        if self.bytes.len() + buf.len() > MAX_RENDERED {
            self.over = Some(Overrun::Size);
        } else if self.writes.is_multiple_of(64) && self.started.elapsed() > MAX_RENDER_TIME {
            // The clock is read every 64th write: a write costs far less than reading it.
            self.over = Some(Overrun::Time);
        }
        if let Some(over) = self.over {
            return Err(std::io::Error::other(over));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For tests: the reply of the first rule of `rules` that matches the push `xml` (which must
/// parse, match, and reply).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn first_reply(rules: &RuleSet, xml: &str) -> Result<Reply, RenderError> {
    use crate::rules::{Action, Subject};
    let message = Message::parse(xml.as_bytes()).unwrap();
    let found = rules.find(&Subject::new(&message)).unwrap();
    let Action::Reply(spec) = found.rule.action() else {
        panic!("not a reply")
    };
    let scope = Scope {
        message: &message,
        rule: found.rule.name(),
        captures: &found.captures,
        call: None,
        state: None,
    };
    render_reply(rules, spec, &scope)
}

#[cfg(test)]
mod simple_equals_handlebars {
    //! Property test: a simple template renders exactly as handlebars renders it.
    use proptest::prelude::*;

    use super::*;
    use crate::rules::tpl::{parse_simple, registry};

    const PIECES: &[&str] = &[
        "hi ",
        "订单 ",
        " ",
        "}}",
        "{",
        "]]>",
        "<&>",
        "{{Event}}",
        "{{ EventKey }}",
        "{{FromUserName}}",
        "{{captures.order}}",
        "{{captures.[1]}}",
        "{{captures.[0]}}",
        "{{captures}}",
        "{{rule}}",
        "{{Missing}}",
        "{{ScanCodeInfo.ScanType}}",
        "{{ScanCodeInfo}}",
        "{{PicList}}",
        "{{PicList.0.Md5}}",
        "{{PicList.[1].Md5}}",
        "{{PicList.2.Md5}}",
        "{{Event.x}}",
        "{{captures.none}}",
        "{{Empty}}",
        "{{rule.x}}",
    ];

    const XML: &str = "<xml><ToUserName>gh</ToUserName><FromUserName>o_1</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>scancode_push</Event>\
        <EventKey>k &amp; 1</EventKey><Empty/><ScanCodeInfo><ScanType>qrcode</ScanType>\
        </ScanCodeInfo><PicList><item><Md5>a</Md5></item><item><Md5>b</Md5></item></PicList></xml>";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn renders_the_same(pieces in prop::collection::vec(prop::sample::select(PIECES), 1..6)) {
            let text = pieces.concat();
            let Some(simple) = parse_simple(&text) else {
                return Ok(());
            };
            let message = Message::parse(XML.as_bytes()).unwrap();
            let captures: Captures = vec![
                ("0".into(), "订单 42".into()),
                ("1".into(), "42".into()),
                ("order".into(), "41".into()),
                ("order".into(), "42".into()),
            ];
            let scope = Scope { message: &message, rule: "r", captures: &captures, call: None, state: None };
            let mut hb = registry();
            hb.register_template_string("t", &text).unwrap();
            let expected = hb.render("t", &scope.context()).map_err(|e| e.reason().to_string());
            let got = simple.render(&scope).map_err(|e| e.reason);
            match (&expected, &got) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "template {:?}", text),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "template {:?}: handlebars {:?}, simple {:?}", text, expected, got),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::compile_yaml;

    const SUBSCRIBE: &str = "<xml><ToUserName>gh</ToUserName><FromUserName>o_user</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe</Event>\
        <EventKey>qrscene_shop-7</EventKey></xml>";

    /// Renders the reply of a one-rule set (`when: {}`) for `xml`.
    fn render(reply: &str, xml: &str) -> Result<Reply, RenderError> {
        let yaml = format!("rules:\n  - name: r\n    reply: {reply}\n");
        let rules = compile_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
        first_reply(&rules, xml)
    }

    fn content(reply: &str, xml: &str) -> String {
        match render(reply, xml).unwrap() {
            Reply::Text { content } => content,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fields_helpers_and_no_html_escaping() {
        assert_eq!(
            content("{ text: '{{FromUserName}} <&>' }", SUBSCRIBE),
            "o_user <&>"
        );
        assert_eq!(
            content(
                "{ text: '{{strip_prefix EventKey \"qrscene_\"}}' }",
                SUBSCRIBE
            ),
            "shop-7"
        );
        assert_eq!(
            content(
                "{ text: '{{default Ticket \"none\"}}/{{default Event \"none\"}}' }",
                SUBSCRIBE
            ),
            "none/subscribe"
        );
        assert_eq!(content("{ text: 'rule {{rule}}' }", SUBSCRIBE), "rule r");
        assert_eq!(
            content(
                "{ text: '{{#if Ticket}}t{{else}}no ticket{{/if}}' }",
                SUBSCRIBE
            ),
            "no ticket"
        );
    }

    #[test]
    fn strict_mode_turns_a_missing_field_into_an_error() {
        // A field some pushes carry and this one lacks (a misspelt one is refused at load).
        let err = render("{ text: 'hi {{Ticket}}' }", SUBSCRIBE).unwrap_err();
        assert_eq!(err.template, "r");
        assert_eq!(err.reason, "the message has no field `Ticket`");
        // The same through handlebars (a block makes it a handlebars template).
        let err = render("{ text: '{{#if Event}}hi {{Ticket}}{{/if}}' }", SUBSCRIBE).unwrap_err();
        assert_eq!(err.template, "r#1");
        assert_eq!(err.reason, "the message has no field `Ticket`");
    }

    /// Nested loops over a pushed list rendered 2.9 MB in 3 s; the output is cut at
    /// `MAX_RENDERED` and the render fails (the push answers `success`).
    #[test]
    fn a_render_stops_at_its_size_bound() {
        let items = "<item><PicMd5Sum>0123456789abcdef</PicMd5Sum></item>".repeat(200);
        let xml = format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>pic_weixin</Event>\
             <SendPicsInfo><Count>200</Count><PicList>{items}</PicList></SendPicsInfo></xml>"
        );
        let loops = "'{{#each SendPicsInfo.PicList}}{{#each ../SendPicsInfo.PicList}}\
                     {{PicMd5Sum}}{{/each}}{{/each}}'";
        let err = render(&format!("{{ text: {loops} }}"), &xml).unwrap_err();
        assert_eq!(err.reason, "the output passed 65536 bytes");
        // One loop is well within the bound.
        let one = "'{{#each SendPicsInfo.PicList}}{{PicMd5Sum}}{{/each}}'";
        assert_eq!(content(&format!("{{ text: {one} }}"), &xml).len(), 3200);
    }

    #[test]
    fn a_render_stops_at_its_time_bound() {
        use std::io::Write;
        let mut out = Bounded::new();
        out.started -= MAX_RENDER_TIME * 2;
        let writes = (0..64).map(|_| out.write(b"x")).collect::<Vec<_>>();
        assert!(writes[..63].iter().all(Result::is_ok));
        assert_eq!(
            writes[63].as_ref().unwrap_err().to_string(),
            "rendering took over 250 ms"
        );
        assert_eq!(out.over, Some(Overrun::Time));
    }

    #[test]
    fn every_string_of_every_reply_type_renders() {
        let reply = render(
            "{ news: [{ title: '{{Event}}', description: d, pic_url: '{{EventKey}}', url: u }] }",
            SUBSCRIBE,
        )
        .unwrap();
        assert_eq!(
            reply,
            Reply::News {
                articles: vec![Article {
                    title: "subscribe".into(),
                    description: "d".into(),
                    pic_url: "qrscene_shop-7".into(),
                    url: "u".into(),
                }]
            }
        );
        assert_eq!(
            render(
                "{ transfer_customer_service: { kf_account: 'kf{{Event}}@x' } }",
                SUBSCRIBE
            )
            .unwrap(),
            Reply::TransferCustomerService {
                kf_account: Some("kfsubscribe@x".into())
            }
        );
        assert_eq!(
            render("{ video: { media_id: '{{Event}}' } }", SUBSCRIBE).unwrap(),
            Reply::Video {
                media_id: "subscribe".into(),
                title: String::new(),
                description: String::new()
            }
        );
    }

    /// `{{call.status}}` of an object writes it as JSON (and a list too), in a simple
    /// template and in a handlebars one alike; strings and numbers as before. Before the
    /// fix an object wrote `[object]`.
    #[test]
    fn a_services_objects_and_lists_render_as_json() {
        let call = serde_json::json!({"status": {"code": 2, "text": "已发货"}, "tags": ["a", "b"],
            "n": 7, "s": "x"});
        let message = Message::parse(SUBSCRIBE.as_bytes()).unwrap();
        let captures = Captures::new();
        let scope = Scope {
            message: &message,
            rule: "r",
            captures: &captures,
            call: Some(&call),
            state: None,
        };
        let text = "{{call.status}} {{call.tags}} {{call.n}} {{call.s}}";
        let expected = r#"{"code":2,"text":"已发货"} ["a","b"] 7 x"#;
        let simple = crate::rules::tpl::parse_simple(text).unwrap();
        assert_eq!(simple.render(&scope).unwrap(), expected);
        let mut hb = crate::rules::tpl::registry();
        hb.register_template_string("t", format!("{{{{#if call}}}}{text}{{{{/if}}}}"))
            .unwrap();
        crate::rules::tpl::call_values_as_json(&mut hb);
        assert_eq!(hb.render("t", &scope.context()).unwrap(), expected);
    }
}
