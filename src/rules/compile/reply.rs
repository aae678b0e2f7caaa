//! A reply (`reply`, each of `send`, `on_error`, `late.reply`) → `ReplySpec`: its kind,
//! and each of its strings as a literal, a `Simple` template, a compiled inline template or
//! a template file's. Every problem is an error at its value; nothing here renders.

use super::at::{At, Key};
use super::files::{fast_form, template_reason, too_deep_message};
use super::Compiler;
use crate::rules::active::DEFAULT_TIMEZONE;
use crate::rules::conversation::{Choice, ChoiceText, MAX_CHOICES, MAX_CHOICE_ID, MAX_CHOICE_TEXT};
use crate::rules::media::{self, TemporaryMedia};
use crate::rules::schema::{
    RawArticle, RawChoice, RawReply, RawReplyKind, RawStr, Scalar, REPLY_KINDS,
};
use crate::rules::templates;
use crate::rules::{ArticleSpec, MusicSpec, ReplySpec, Tpl, VideoSpec};

/// WeChat accepts at most 8 articles in one news reply.
pub const MAX_ARTICLES: usize = 8;

/// The reply at `at`, each of its strings at its own key; `None` when it has errors.
pub(super) fn compile_reply(
    c: &mut Compiler<'_>,
    at: At<'_>,
    reply: RawReply,
) -> Option<ReplySpec> {
    // Every failure below records an error, so the count tells whether this reply is good.
    let errors_before = c.errors.len();
    let mut reply = reply;
    let choices = reply.choices.take();
    let reply = match reply.kind() {
        Ok(kind) => kind,
        Err(n) => {
            let given = if n == 0 { "none" } else { "several" };
            c.error_at(
                at,
                format!("a reply takes exactly one of {REPLY_KINDS}; {given} given"),
            );
            return None;
        }
    };
    let s = string;
    let spec = match reply {
        RawReplyKind::Text(t) => ReplySpec::Text(s(c, at.key("text"), Some(t))),
        RawReplyKind::Image(m) => {
            ReplySpec::Image(media(c, at, "image", (m.media_id, m.file, m.expires), None))
        }
        RawReplyKind::Voice(m) => {
            ReplySpec::Voice(media(c, at, "voice", (m.media_id, m.file, m.expires), None))
        }
        RawReplyKind::Video(v) => {
            let title = s(c, at.key("video.title"), v.title);
            let description = s(c, at.key("video.description"), v.description);
            let plain = match (&title, &description) {
                (Tpl::Literal(t), Tpl::Literal(d)) => Some((t.clone(), d.clone())),
                _ => None,
            };
            ReplySpec::Video(Box::new(VideoSpec {
                media_id: media(c, at, "video", (v.media_id, v.file, v.expires), Some(plain)),
                title,
                description,
            }))
        }
        RawReplyKind::Music(m) => {
            let thumb = &m.thumb_media_id;
            temporary(c, at.key("music.expires"), "music", thumb, m.expires);
            ReplySpec::Music(Box::new(MusicSpec {
                title: s(c, at.key("music.title"), m.title),
                description: s(c, at.key("music.description"), m.description),
                music_url: s(c, at.key("music.music_url"), m.music_url),
                hq_music_url: s(c, at.key("music.hq_music_url"), m.hq_music_url),
                thumb_media_id: s(c, at.key("music.thumb_media_id"), Some(m.thumb_media_id)),
            }))
        }
        RawReplyKind::News(articles) => {
            let news = at.key("news");
            if articles.is_empty() || articles.len() > MAX_ARTICLES {
                c.error_at(
                    news,
                    format!(
                        "a news reply has 1 to {MAX_ARTICLES} articles, this one has {}",
                        articles.len()
                    ),
                );
            }
            let specs = articles
                .into_iter()
                .enumerate()
                .map(|(i, a): (usize, RawArticle)| {
                    let article = news.index(i);
                    ArticleSpec {
                        title: s(c, article.key("title"), Some(a.title)),
                        description: s(c, article.key("description"), a.description),
                        pic_url: s(c, article.key("pic_url"), a.pic_url),
                        url: s(c, article.key("url"), a.url),
                    }
                })
                .collect();
            ReplySpec::News(specs)
        }
        RawReplyKind::TransferCustomerService(t) => {
            let account = t
                .kf_account
                .map(|a| s(c, at.key("transfer_customer_service.kf_account"), Some(a)));
            ReplySpec::TransferCustomerService(account)
        }
        RawReplyKind::OneOf(choices) => {
            let one_of = at.key("one_of");
            if choices.is_empty() {
                c.error_at(one_of, "`one_of` needs at least one reply".into());
            }
            let specs = choices
                .into_iter()
                .enumerate()
                .filter_map(|(i, choice)| compile_reply(c, one_of.index(i), choice))
                .collect();
            ReplySpec::OneOf(specs)
        }
    };
    let spec = match (choices, spec) {
        (None, spec) => spec,
        (Some(raw), ReplySpec::Text(text)) => {
            let choices = compile_choices(c, at.key("choices"), raw);
            ReplySpec::Choices(Box::new(ChoiceText { text, choices }))
        }
        (Some(_), spec) => {
            c.error_at_key(
                at.key("choices"),
                format!(
                    "`choices` go with a `text` reply, and this one is `{}`",
                    spec.kind()
                ),
            );
            spec
        }
    };
    (c.errors.len() == errors_before).then_some(spec)
}

/// A text reply's `choices`: 1 to `MAX_CHOICES`, each id unique and short, each text what
/// a link can carry as it is.
fn compile_choices(c: &mut Compiler<'_>, at: At<'_>, raw: Vec<RawChoice>) -> Vec<Choice> {
    if raw.is_empty() || raw.len() > MAX_CHOICES {
        c.error_at(
            at,
            format!(
                "a reply has 1 to {MAX_CHOICES} choices, this one has {}",
                raw.len()
            ),
        );
    }
    let mut choices: Vec<Choice> = Vec::with_capacity(raw.len());
    for (i, choice) in raw.into_iter().enumerate() {
        let here = at.index(i);
        let id = choice.id.0.trim().to_owned();
        let text = choice.text.0.trim().to_owned();
        let id_ok = !id.is_empty()
            && id.len() <= MAX_CHOICE_ID
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            c.error_at(
                here.key("id"),
                format!("a choice's id is 1 to {MAX_CHOICE_ID} letters, digits, `_` or `-`"),
            );
        } else if choices.iter().any(|other| other.id == id) {
            c.error_at(here.key("id"), format!("choice id `{id}` is given twice"));
        }
        let text_ok = !text.is_empty()
            && text.len() <= MAX_CHOICE_TEXT
            && !text.contains(['"', '&', '<', '>', '\n', '\r'])
            && !text.contains("{{");
        if !text_ok {
            c.error_at(
                here.key("text"),
                format!("a choice's text is 1 to {MAX_CHOICE_TEXT} bytes on one line, without `\"`, `&`, `<`, `>` or `{{{{`"),
            );
        }
        choices.push(Choice { id, text });
    }
    choices
}

/// A reply's media: its `media_id` (a string, maybe a template), or its `file` read and
/// held to WeChat's limits (`Tpl::Media`). `video`: for a video, its title and description
/// when they are plain text (`Some(None)` when they are not, which a file cannot take).
fn media(
    c: &mut Compiler<'_>,
    at: At<'_>,
    kind: &'static str,
    (media_id, file, expires): (Option<RawStr>, Option<Scalar>, Option<Scalar>),
    video: Option<Option<(String, String)>>,
) -> Tpl {
    let [media_key, file_key, expires_key] = match kind {
        "image" => ["image.media_id", "image.file", "image.expires"],
        "voice" => ["voice.media_id", "voice.file", "voice.expires"],
        _ => ["video.media_id", "video.file", "video.expires"],
    };
    match (media_id, file) {
        (Some(media_id), None) => {
            temporary(c, at.key(expires_key), kind, &media_id, expires);
            string(c, at.key(media_key), Some(media_id))
        }
        (None, Some(file)) => {
            if expires.is_some() {
                c.error_at(
                    at.key(expires_key),
                    "`expires` marks a temporary media id; a `file` is uploaded as permanent material".into(),
                );
            }
            let video = match video {
                Some(None) => {
                    c.error_at(
                        at.key(file_key),
                        "a video from a `file` takes a plain `title` and `description` (they are uploaded with it), not templates".into(),
                    );
                    return Tpl::Literal(String::new());
                }
                Some(Some(texts)) => Some(texts),
                None => None,
            };
            match c.media_file(kind, &file.0, video) {
                Ok(found) => Tpl::Media(found),
                Err(message) => {
                    c.error_at(at.key(file_key), message);
                    Tpl::Literal(String::new())
                }
            }
        }
        (Some(_), Some(_)) => {
            c.error_at(
                at.key(file_key),
                format!("an {kind} takes `media_id` or `file`, not both"),
            );
            Tpl::Literal(String::new())
        }
        (None, None) => {
            c.error_at(
                at.key(kind),
                format!("an {kind} needs `media_id` or `file`"),
            );
            Tpl::Literal(String::new())
        }
    }
}

/// Records a media id that `expires` marks temporary, for `check`'s warning; an `expires`
/// that is not a day is an error at its value.
fn temporary(
    c: &mut Compiler<'_>,
    at: At<'_>,
    kind: &'static str,
    media_id: &RawStr,
    expires: Option<Scalar>,
) {
    let Some(expires) = expires else { return };
    let day = match media::parse_day(&expires.0) {
        Ok(day) => day,
        Err(message) => {
            c.error_at(at, message);
            return;
        }
    };
    let zone = c
        .positions
        .timezone()
        .unwrap_or(DEFAULT_TIMEZONE)
        .to_owned();
    let (line, column) = c.value_at(at).unwrap_or((0, 0));
    c.temporary.push(TemporaryMedia {
        kind,
        media_id: match media_id {
            RawStr::Inline(Scalar(text)) => text.clone(),
            RawStr::File(file) => format!("{{ template: {} }}", file.template),
        },
        expires: day,
        zone: jiff::tz::TimeZone::get(&zone).unwrap_or(jiff::tz::TimeZone::UTC),
        line,
        column,
    });
}

/// A reply's string at `at`, when it has one; else the empty string.
pub(super) fn string(c: &mut Compiler<'_>, at: At<'_>, raw: Option<RawStr>) -> Tpl {
    raw.and_then(|raw| compile_str(c, at, raw))
        .unwrap_or(Tpl::Literal(String::new()))
}

/// A rule's `send:` list: replies the customer-service API can carry.
pub(super) fn compile_send(
    c: &mut Compiler<'_>,
    rule: At<'_>,
    raw: Vec<RawReply>,
) -> Box<[ReplySpec]> {
    let mut specs = Vec::with_capacity(raw.len());
    let send = rule.field(Key::Send);
    for (i, reply) in raw.into_iter().enumerate() {
        let at = send.index(i);
        let Some(spec) = compile_reply(c, at, reply) else {
            continue;
        };
        if let Some(why) = unsendable(&spec) {
            c.error_at(
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

/// Why the customer-service API cannot carry `spec`, if it cannot.
pub(super) fn unsendable(spec: &ReplySpec) -> Option<String> {
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
fn compile_str(c: &mut Compiler<'_>, at: At<'_>, raw: RawStr) -> Option<Tpl> {
    match raw {
        RawStr::Inline(text) => {
            if let Some(fast) = fast_form(&text.0) {
                return Some(fast);
            }
            if let Some((l, col)) = templates::too_deep(&text.0) {
                let message = format!("{} (template line {l}, column {col})", too_deep_message());
                c.error_at(at, message);
                return None;
            }
            // Named after its rule; never the name of a file (`welcome#1.hbs` may exist),
            // which it would replace.
            let name = loop {
                c.inline_count += 1;
                let name = format!("{}#{}", at.rule_name(), c.inline_count);
                if !c.template_files.contains_key(&name) {
                    break name;
                }
            };
            match c.templates.register_template_string(&name, &text.0) {
                Ok(()) => {
                    c.inline_templates
                        .insert(name.clone(), (at.rule_name().to_owned(), at.to_string()));
                    Some(Tpl::Template(name))
                }
                Err(e) => {
                    let within = e
                        .pos()
                        .map(|(l, col)| format!(" (template line {l}, column {col})"))
                        .unwrap_or_default();
                    c.error_at(
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
                c.error_at(
                    at.key("template"),
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

pub(crate) fn collect_tpls<'a>(spec: &'a ReplySpec, out: &mut Vec<&'a Tpl>) {
    match spec {
        ReplySpec::Text(t) | ReplySpec::Image(t) | ReplySpec::Voice(t) => out.push(t),
        ReplySpec::Choices(choices) => out.push(&choices.text),
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

#[cfg(test)]
mod tests {
    use crate::rules::compile::compile_yaml;
    use crate::rules::LoadError;

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
}
