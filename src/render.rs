//! Renders a matched rule's reply: fills its templates from the message fields and the
//! regex captures. Templates are compiled at load time; this module does no IO.

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use rand::Rng;
use serde_json::{Map, Value};

use crate::rules::{ArticleSpec, Match, ReplySpec, RuleSet, Tpl};
use crate::wire::{Article, Message, Reply};

/// A template failed at render time (for example a field the message lacks, in strict mode).
#[derive(Debug, thiserror::Error)]
#[error("template `{template}` failed: {reason}")]
pub struct RenderError {
    pub template: String,
    pub reason: String,
}

/// The registry every rule set starts from: strict (a misspelt field is an error, not an
/// empty string), no HTML escaping (output goes into CDATA), and our helpers.
pub fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("strip_prefix", Box::new(strip_prefix));
    hb.register_helper("default", Box::new(default));
    hb
}

/// `{{strip_prefix EventKey "qrscene_"}}`: the value without the prefix, or unchanged.
fn strip_prefix(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default();
    let prefix = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default();
    out.write(value.strip_prefix(prefix).unwrap_or(value))?;
    Ok(())
}

/// `{{default Recognition "…"}}`: the value when present and not empty, else the fallback.
fn default(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let fallback = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
    let value = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
    out.write(if value.is_empty() { fallback } else { value })?;
    Ok(())
}

/// The data templates see: every message field under its WeChat name, plus `captures`
/// (regex groups by number and by name) and `rule` (the matched rule's name).
pub fn context(message: &Message, found: &Match<'_>) -> Value {
    let mut fields = message.fields().clone();
    add_extras(&mut fields, found);
    Value::Object(fields)
}

fn add_extras(fields: &mut Map<String, Value>, found: &Match<'_>) {
    let captures: Map<String, Value> = found
        .captures
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    fields.insert("captures".into(), Value::Object(captures));
    fields.insert("rule".into(), Value::String(found.rule.name().to_owned()));
}

/// Renders `spec` against `data`. A `one_of` picks one choice at random.
pub fn render_reply(rules: &RuleSet, spec: &ReplySpec, data: &Value) -> Result<Reply, RenderError> {
    let s = |t: &Tpl| render_str(rules, t, data);
    Ok(match spec {
        ReplySpec::Text(t) => Reply::Text { content: s(t)? },
        ReplySpec::Image(t) => Reply::Image { media_id: s(t)? },
        ReplySpec::Voice(t) => Reply::Voice { media_id: s(t)? },
        ReplySpec::Video {
            media_id,
            title,
            description,
        } => Reply::Video {
            media_id: s(media_id)?,
            title: s(title)?,
            description: s(description)?,
        },
        ReplySpec::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => Reply::Music {
            title: s(title)?,
            description: s(description)?,
            music_url: s(music_url)?,
            hq_music_url: s(hq_music_url)?,
            thumb_media_id: s(thumb_media_id)?,
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
                Some(choice) => render_reply(rules, choice, data)?,
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

fn render_str(rules: &RuleSet, tpl: &Tpl, data: &Value) -> Result<String, RenderError> {
    match tpl {
        Tpl::Literal(s) => Ok(s.clone()),
        Tpl::Template(name) => rules
            .templates()
            .render(name, data)
            .map_err(|e| RenderError {
                template: name.clone(),
                reason: match e.reason() {
                    RenderErrorReason::MissingVariable(Some(path)) => {
                        format!("the message has no field `{path}`")
                    }
                    other => other.to_string(),
                },
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::compile_yaml;
    use crate::rules::{Action, Subject};

    const SUBSCRIBE: &str = "<xml><ToUserName>gh</ToUserName><FromUserName>o_user</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>subscribe</Event>\
        <EventKey>qrscene_shop-7</EventKey></xml>";

    /// Renders the reply of a one-rule set (`when: {}`) for `xml`.
    fn render(reply: &str, xml: &str) -> Result<Reply, RenderError> {
        let yaml = format!("rules:\n  - name: r\n    reply: {reply}\n");
        let rules = compile_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
        let message = Message::parse(xml.as_bytes()).unwrap();
        let found = rules.find(&Subject::new(&message)).unwrap();
        let Action::Reply(spec) = found.rule.action() else {
            panic!("not a reply")
        };
        render_reply(&rules, spec, &context(&message, &found))
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
    fn strict_mode_turns_a_misspelt_field_into_an_error() {
        let err = render("{ text: 'hi {{FromUsername}}' }", SUBSCRIBE).unwrap_err();
        assert_eq!(err.template, "r#1");
        assert!(err.reason.contains("FromUsername"), "{}", err.reason);
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
}
