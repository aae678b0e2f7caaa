//! `wxrules import`: the MP console's auto-replies (the JSON of
//! `GET /cgi-bin/get_current_autoreply_info`) as a commented rules file and a cases file.
//! Reads the JSON, maps each part as DESIGN.md's "Moving in from the MP console" says, and
//! writes YAML by hand (every string JSON-quoted, which YAML reads as written). No IO: the
//! caller reads the input and writes the output, nothing when this fails. With
//! `--download-media` the caller fetches the media the export names (`Imported::media`) and
//! imports again with the files (`Downloads`), which replace the temporary media ids.
//! Here: mapping the export to rules; `media` (the export's media and the files fetched
//! for them), `write` (the YAML written).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

mod media;
mod write;

use media::MediaPlan;
pub use media::{media_extension, Downloaded, Downloads, ExportMedia};
use write::{literal, quote, unique, write};

/// The rules file and the cases file made from one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub rules: String,
    pub cases: String,
    /// Rules written, and of those the ones turned off in the console (commented out).
    pub rule_count: usize,
    pub disabled: usize,
    /// The images, voices and videos the export names, each once, in the order met.
    pub media: Vec<ExportMedia>,
}

/// Why the export cannot be imported: the JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ImportError {
    pub path: String,
    pub message: String,
}

fn fail(path: &str, message: impl Into<String>) -> ImportError {
    ImportError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// One reply of the console, as rules-file YAML (a flow mapping), with a comment when the
/// export's value needs a person's attention (`note`) or where a file came from (`origin`).
struct Reply {
    yaml: String,
    note: Option<String>,
    origin: Option<String>,
    /// The reply can go through the customer-service API (`send:`).
    sendable: bool,
}

/// A rule to write.
struct Rule {
    comment: Vec<String>,
    name: String,
    when: String,
    cooldown: Option<&'static str>,
    reply: String,
    send: Vec<Reply>,
    notes: Vec<String>,
    enabled: bool,
    /// What a case sends to reach it: `text: …` or `event: …`.
    case: Option<String>,
}

/// Imports the console's auto-replies from `json` (the text of the export), fetched now.
/// Its images, voices and videos are temporary media, which WeChat deletes 3 days after
/// the export: each gets `expires:` with that day (at the latest: an export saved earlier
/// expires sooner), which `check` warns about.
pub fn import(json: &str) -> Result<Imported, ImportError> {
    import_with(json, &Downloads::default())
}

/// `import`, with the files fetched for the export's media: each reply whose media has
/// one names it (`image: { file: … }`) instead of the temporary media id.
pub fn import_with(json: &str, downloads: &Downloads) -> Result<Imported, ImportError> {
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    import_fetched_at(json, i64::try_from(now).unwrap_or(i64::MAX), downloads)
}

/// `import_with`, for an export fetched at `fetched` (unix seconds): its temporary media
/// ids expire 3 days later, the day counted in `Asia/Shanghai`, the time zone of a rules
/// file that names none (the import writes none).
pub fn import_fetched_at(
    json: &str,
    fetched: i64,
    downloads: &Downloads,
) -> Result<Imported, ImportError> {
    let zone = jiff::tz::TimeZone::get(crate::rules::active::DEFAULT_TIMEZONE)
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let expires = crate::rules::expiry_day(fetched, &zone).to_string();
    let mut media = MediaPlan {
        expires: &expires,
        downloads,
        met: Vec::new(),
    };
    let root: Value =
        serde_json::from_str(json).map_err(|e| fail("$", format!("not JSON: {e}")))?;
    let Value::Object(top) = &root else {
        return Err(fail("$", "the export is a JSON object"));
    };
    if let Some(code) = top
        .get("errcode")
        .and_then(Value::as_i64)
        .filter(|c| *c != 0)
    {
        return Err(fail(
            "$.errcode",
            format!("WeChat answered errcode {code}, not the auto-replies"),
        ));
    }
    let switch = |key: &str| -> Result<bool, ImportError> {
        match top.get(key) {
            None => Ok(true),
            Some(v) => v
                .as_i64()
                .map(|n| n != 0)
                .ok_or_else(|| fail(&format!("$.{key}"), "is 0 or 1")),
        }
    };
    let friend_open = switch("is_add_friend_reply_open")?;
    let autoreply_open = switch("is_autoreply_open")?;
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    // Each keyword as wxrules compares it (folded), and the rule that has it first.
    let mut keywords: HashMap<(bool, String), String> = HashMap::new();

    // Keyword rules first, in the order the export lists them.
    if let Some(keyword) = top.get("keyword_autoreply_info") {
        let list = keyword
            .get("list")
            .and_then(Value::as_array)
            .ok_or_else(|| fail("$.keyword_autoreply_info.list", "missing, or not a list"))?;
        for (i, item) in list.iter().enumerate() {
            let path = format!("$.keyword_autoreply_info.list[{i}]");
            rules.push(keyword_rule(
                item,
                &path,
                autoreply_open,
                &mut names,
                &mut keywords,
                &mut media,
            )?);
        }
    }
    if let Some(info) = top.get(WELCOME.key) {
        rules.push(console_rule(
            &WELCOME,
            info,
            friend_open,
            &mut names,
            &mut media,
        )?);
    }
    if let Some(info) = top.get(DEFAULT_REPLY.key) {
        rules.push(console_rule(
            &DEFAULT_REPLY,
            info,
            autoreply_open,
            &mut names,
            &mut media,
        )?);
    }
    let mut imported = comment_out_shadowed(rules);
    imported.media = media.met;
    Ok(imported)
}

/// One of the console's two replies that are not keyword rules: where the export has it,
/// and the rule it becomes.
struct ConsoleReply {
    /// The export's key, also its JSON path (`$.key`) in errors.
    key: &'static str,
    /// The console's name for it, as media labels and comments give it.
    label: &'static str,
    comment: &'static str,
    name: &'static str,
    when: &'static str,
    cooldown: Option<&'static str>,
    case: &'static str,
}

/// The reply on follow.
const WELCOME: ConsoleReply = ConsoleReply {
    key: "add_friend_autoreply_info",
    label: "被关注回复",
    comment: "被关注回复 (reply on follow)",
    name: "welcome",
    when: "{ event: subscribe }",
    cooldown: None,
    case: "event: subscribe",
};

/// The default reply, which the console sends once per user per hour.
const DEFAULT_REPLY: ConsoleReply = ConsoleReply {
    key: "message_default_autoreply_info",
    label: "收到消息回复",
    comment: "收到消息回复 (default reply): the console sends it once per user per hour",
    name: "default-reply",
    when: "{ msg_type: [text, voice, image, video, shortvideo, location, link] }",
    cooldown: Some("60m"),
    case: "text: \"wxrules导入测试留言\"",
};

/// The console's reply `kind` (`info`, the export's value under `kind.key`), as a rule.
fn console_rule(
    kind: &ConsoleReply,
    info: &Value,
    open: bool,
    names: &mut HashSet<String>,
    media: &mut MediaPlan<'_>,
) -> Result<Rule, ImportError> {
    let reply = reply(info, &format!("$.{}", kind.key), media, kind.label)?;
    let mut comment = vec![kind.comment.to_owned()];
    comment.extend(reply.origin);
    Ok(Rule {
        comment,
        name: unique(kind.name, names),
        when: kind.when.into(),
        cooldown: kind.cooldown,
        reply: reply.yaml,
        send: Vec::new(),
        notes: reply.note.into_iter().collect(),
        enabled: open,
        case: Some(kind.case.into()),
    })
}

/// The files made of `rules`. A rule that an earlier one always answers first (its keywords
/// all contain an earlier `contain` keyword) could never answer: left commented out, so that
/// every case passes and `check` warns of nothing but the temporary media ids.
fn comment_out_shadowed(mut rules: Vec<Rule>) -> Imported {
    for _ in 0..rules.len() {
        let imported = write(&rules);
        let Ok(loaded) = crate::rules::load_str(&imported.rules, &[]) else {
            return imported;
        };
        let lint = crate::rules::lint(&loaded.rules, std::path::Path::new("rules.yaml"));
        let shadowed: Vec<(String, String)> = lint
            .iter()
            .filter(|w| w.message.starts_with("unreachable"))
            .filter_map(|w| w.rule.clone().map(|r| (r, w.message.clone())))
            .collect();
        if shadowed.is_empty() {
            return imported;
        }
        for (name, why) in shadowed {
            if let Some(rule) = rules.iter_mut().find(|r| r.name == name) {
                rule.enabled = false;
                rule.notes.push(format!("{why}: left commented out"));
            }
        }
    }
    write(&rules)
}

/// One of the console's keyword rules (`keyword_autoreply_info.list[i]`, at `path`), as a
/// rule. `seen`: each keyword as wxrules compares it, and the rule that has it first.
fn keyword_rule(
    item: &Value,
    path: &str,
    open: bool,
    names: &mut HashSet<String>,
    seen: &mut HashMap<(bool, String), String>,
    media: &mut MediaPlan<'_>,
) -> Result<Rule, ImportError> {
    let name = item
        .get("rule_name")
        .and_then(Value::as_str)
        .ok_or_else(|| fail(&format!("{path}.rule_name"), "missing, or not a string"))?;
    let (exact, contains) = keywords(item, path)?;
    // wxrules compares keywords folded (`价格` and `价格？`, `help` and `HELP` are one): a
    // keyword that an earlier one already is, here or in an earlier rule, is left out.
    let unique_name = unique(name, names);
    let mut dropped = Vec::new();
    let exact = keep_new(exact, false, &unique_name, seen, &mut dropped);
    let contains = keep_new(contains, true, &unique_name, seen, &mut dropped);
    let mut alternatives: Vec<String> = exact.iter().map(|k| quote(k)).collect();
    if !contains.is_empty() {
        let list: Vec<String> = contains.iter().map(|k| quote(k)).collect();
        alternatives.push(format!("{{ contains: [{}] }}", list.join(", ")));
    }
    let when = format!("{{ keyword: [{}] }}", alternatives.join(", "));
    let replies = replies(item, path, media, name)?;
    let mode = item
        .get("reply_mode")
        .and_then(Value::as_str)
        .unwrap_or("reply_all");
    let mut notes: Vec<String> = replies.iter().filter_map(|r| r.note.clone()).collect();
    let origins: Vec<String> = replies.iter().filter_map(|r| r.origin.clone()).collect();
    notes.extend(dropped);
    let no_keywords = exact.is_empty() && contains.is_empty();
    if no_keywords {
        notes.push("every keyword of this rule is an earlier rule's: it could never answer, so it is left commented out".into());
    }
    let (reply_yaml, send) = by_mode(mode, replies, &mut notes, path)?;
    let case_text = exact.first().or(contains.first()).cloned();
    let mut comment = vec![format!(
        "关键词回复「{name}」: {}",
        if mode == "random_one" {
            "随机回复一条 (one at random)"
        } else {
            "回复全部 (all the replies)"
        }
    )];
    comment.extend(origins);
    Ok(Rule {
        comment,
        name: unique_name,
        when,
        cooldown: None,
        reply: reply_yaml,
        send,
        notes,
        enabled: open && !no_keywords,
        case: case_text.map(|t| format!("text: {}", quote(&t))),
    })
}

/// A keyword rule's keywords (`keyword_list_info`): those matched whole (`equal`), and those
/// matched anywhere (`contain`).
fn keywords(item: &Value, path: &str) -> Result<(Vec<String>, Vec<String>), ImportError> {
    let keywords = item
        .get("keyword_list_info")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            fail(
                &format!("{path}.keyword_list_info"),
                "missing, or not a list",
            )
        })?;
    let mut exact = Vec::new();
    let mut contains = Vec::new();
    for (k, keyword) in keywords.iter().enumerate() {
        let at = format!("{path}.keyword_list_info[{k}]");
        let content = keyword
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| fail(&format!("{at}.content"), "missing, or not a string"))?;
        if content.trim().is_empty() {
            return Err(fail(&format!("{at}.content"), "an empty keyword"));
        }
        match keyword.get("match_mode").and_then(Value::as_str) {
            Some("equal") => exact.push(content.to_owned()),
            Some("contain") => contains.push(content.to_owned()),
            Some(other) => {
                return Err(fail(
                    &format!("{at}.match_mode"),
                    format!("`{other}` is not a match mode (equal, contain)"),
                ))
            }
            None => return Err(fail(&format!("{at}.match_mode"), "missing")),
        }
    }
    if exact.is_empty() && contains.is_empty() {
        return Err(fail(&format!("{path}.keyword_list_info"), "no keywords"));
    }
    Ok((exact, contains))
}

/// The keywords of `list` no earlier one already is once folded, each now `seen` as rule
/// `owner`'s; a note in `dropped` for each left out.
fn keep_new(
    list: Vec<String>,
    contains: bool,
    owner: &str,
    seen: &mut HashMap<(bool, String), String>,
    dropped: &mut Vec<String>,
) -> Vec<String> {
    let kind = if contains {
        crate::rules::fold::Literal::Contains
    } else {
        crate::rules::fold::Literal::Exact
    };
    list.into_iter()
        .filter(|k| {
            let folded = crate::rules::fold::literal(k, kind);
            match seen.get(&(contains, folded.clone())) {
                Some(first) => {
                    dropped.push(format!("keyword `{k}` left out: the same as one of rule `{first}` once folded (full-width forms, case, surrounding punctuation)"));
                    false
                }
                None => {
                    seen.insert((contains, folded), owner.to_owned());
                    true
                }
            }
        })
        .collect()
}

/// A keyword rule's replies (`reply_list_info`), at least one; `title`: the rule's name,
/// a downloaded video's title when WeChat gives none.
fn replies(
    item: &Value,
    path: &str,
    media: &mut MediaPlan<'_>,
    title: &str,
) -> Result<Vec<Reply>, ImportError> {
    let replies_value = item
        .get("reply_list_info")
        .and_then(Value::as_array)
        .ok_or_else(|| fail(&format!("{path}.reply_list_info"), "missing, or not a list"))?;
    let mut replies = Vec::with_capacity(replies_value.len());
    for (r, value) in replies_value.iter().enumerate() {
        replies.push(reply(
            value,
            &format!("{path}.reply_list_info[{r}]"),
            media,
            title,
        )?);
    }
    if replies.is_empty() {
        return Err(fail(&format!("{path}.reply_list_info"), "no replies"));
    }
    Ok(replies)
}

/// The rule's `reply` and `send:` for the console's `reply_mode`: one at random is a
/// `one_of`; all of them is the first, then the others the API can send (a note for each
/// it cannot).
fn by_mode(
    mode: &str,
    replies: Vec<Reply>,
    notes: &mut Vec<String>,
    path: &str,
) -> Result<(String, Vec<Reply>), ImportError> {
    Ok(match mode {
        "random_one" if replies.len() > 1 => {
            let choices: Vec<String> = replies.iter().map(|r| r.yaml.clone()).collect();
            (
                format!("{{ one_of: [ {} ] }}", choices.join(", ")),
                Vec::new(),
            )
        }
        "random_one" | "reply_all" => {
            let mut rest = replies.into_iter();
            let first = rest.next().map(|r| r.yaml).unwrap_or_default();
            let mut send = Vec::new();
            for r in rest {
                if r.sendable {
                    send.push(r);
                } else {
                    notes.push(format!(
                        "left out of `send:` (the customer-service API cannot send it): {}",
                        r.yaml
                    ));
                }
            }
            (first, send)
        }
        other => {
            return Err(fail(
                &format!("{path}.reply_mode"),
                format!("`{other}` is not a reply mode (reply_all, random_one)"),
            ))
        }
    })
}

/// One console reply (`{"type": …, "content": …}` or a news with `news_info`). An image, a
/// voice or a video is temporary media, which expires on the day `media.expires`, unless a
/// file was downloaded for it; `title`: a downloaded video's, when WeChat gives none.
fn reply(
    value: &Value,
    path: &str,
    media: &mut MediaPlan<'_>,
    title: &str,
) -> Result<Reply, ImportError> {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| fail(&format!("{path}.type"), "missing, or not a string"))?;
    let content = || {
        value
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| fail(&format!("{path}.content"), "missing, or not a string"))
    };
    Ok(match kind {
        "text" => Reply {
            yaml: format!("{{ text: {} }}", quote(&literal(content()?))),
            note: None,
            origin: None,
            sendable: true,
        },
        "img" | "voice" | "video" => {
            let found = ExportMedia {
                kind: match kind {
                    "img" => "image",
                    "voice" => "voice",
                    _ => "video",
                },
                content: content()?.to_owned(),
            };
            let fetched = media.meet(&found);
            media_reply(&found, fetched, media.expires, title)
        }
        "news" => news(value, path)?,
        other => {
            return Err(fail(
                &format!("{path}.type"),
                format!("`{other}` is not a reply type (text, img, voice, video, news)"),
            ))
        }
    })
}

/// The reply of an image, voice or video of the export: its downloaded file, or else its
/// temporary media id, which expires on `expires` (a video given as a link: that link, in
/// a text). `fetched`: what `--download-media` got, if it was asked to.
fn media_reply(
    media: &ExportMedia,
    fetched: Option<Result<Downloaded, String>>,
    expires: &str,
    title: &str,
) -> Reply {
    let (kind, content) = (media.kind, media.content.as_str());
    let given = if media.is_link() {
        format!("a {kind} link ({content})")
    } else {
        format!("{kind} media id `{content}`")
    };
    let why_not = match fetched {
        Some(Ok(file)) => {
            let yaml = match (kind, &file.video) {
                ("video", Some((title, description))) => format!(
                    "{{ video: {{ file: {}, title: {}, description: {} }} }}",
                    quote(&file.file),
                    quote(title),
                    quote(description)
                ),
                ("video", None) => format!(
                    "{{ video: {{ file: {}, title: {}, description: \"\" }} }}",
                    quote(&file.file),
                    quote(title)
                ),
                _ => format!("{{ {kind}: {{ file: {} }} }}", quote(&file.file)),
            };
            return Reply {
                yaml,
                note: None,
                origin: Some(format!(
                    "{given} downloaded from WeChat (--download-media) to `{}` under the templates directory: the server uploads it as permanent material",
                    file.file
                )),
                sendable: true,
            };
        }
        Some(Err(why)) => format!("; --download-media could not fetch it: {why}"),
        None => ", or import with --download-media".to_owned(),
    };
    // The API gives a video as a link to download it, not a media id: a passive video
    // reply needs an uploaded one.
    if media.is_link() {
        return Reply {
            yaml: format!("{{ text: {} }}", quote(&literal(content))),
            note: Some(format!("a video, given by the API as a link ({content}): sent as that link in a text; upload it and write `video: {{ media_id: … }}` instead{why_not}")),
            origin: None,
            sendable: true,
        };
    }
    Reply {
        yaml: format!(
            "{{ {kind}: {{ media_id: {}, expires: {expires} }} }}",
            quote(content)
        ),
        note: Some(format!("{given} comes from the API: temporary, it expires on {expires} (3 days after the export; `expires:` says so, and `check` warns); replace it with a permanent material's id{why_not}")),
        origin: None,
        sendable: true,
    }
}

/// A console news reply (`news_info.list`): its first article, as WeChat shows one in a
/// reply to a message.
fn news(value: &Value, path: &str) -> Result<Reply, ImportError> {
    let list = value
        .get("news_info")
        .and_then(|n| n.get("list"))
        .and_then(Value::as_array)
        .ok_or_else(|| fail(&format!("{path}.news_info.list"), "missing, or not a list"))?;
    let Some(first) = list.first() else {
        return Err(fail(&format!("{path}.news_info.list"), "no articles"));
    };
    let at = format!("{path}.news_info.list[0]");
    let field = |key: &str| first.get(key).and_then(Value::as_str).unwrap_or("");
    let title = first
        .get("title")
        .and_then(Value::as_str)
        .ok_or_else(|| fail(&format!("{at}.title"), "missing, or not a string"))?;
    let note = (list.len() > 1).then(|| {
        format!(
            "the console's news has {} articles; WeChat shows one in a reply to a message, so only the first is kept",
            list.len()
        )
    });
    Ok(Reply {
        yaml: format!(
            "{{ news: [ {{ title: {}, description: {}, pic_url: {}, url: {} }} ] }}",
            quote(&literal(title)),
            quote(&literal(field("digest"))),
            quote(&literal(field("cover_url"))),
            quote(&literal(field("content_url")))
        ),
        note,
        origin: None,
        sendable: true,
    })
}

#[cfg(test)]
mod tests;
