//! A service's own reply: the `reply` of a call's JSON answer (any reply form of the rules
//! file, its strings taken as they are, never rendered) read into a `Reply`. Pure: no IO.

use rand::Rng;
use serde_json::{Map, Value};

use crate::wire::{Article, Reply};

/// A service's `reply` as a reply; errors name the JSON path (`reply.news[0].title`).
pub(crate) fn read(value: &Value) -> Result<Reply, String> {
    service_reply(value, "reply", 0)
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The deepest `one_of` nesting read from a service's `reply`.
const MAX_ONE_OF_DEPTH: usize = 8;

/// A service's `reply` (any reply form of the rules file, its strings taken as they are) as
/// a reply; a `one_of` picks one at random. Errors name the JSON path.
fn service_reply(value: &Value, path: &str, depth: usize) -> Result<Reply, String> {
    let Value::Object(object) = value else {
        return Err(format!("`{path}` is a {}, not an object", kind(value)));
    };
    let mut keys = object.iter();
    let (Some((key, inner)), None) = (keys.next(), keys.next()) else {
        return Err(format!(
            "`{path}` takes exactly one of `text`, `image`, `voice`, `video`, `music`, `news`, `transfer_customer_service`, `one_of`; {} given",
            object.len()
        ));
    };
    let at = format!("{path}.{key}");
    let fields = |v: &Value| -> Result<Map<String, Value>, String> {
        match v {
            Value::Object(m) => Ok(m.clone()),
            other => Err(format!("`{at}` is a {}, not an object", kind(other))),
        }
    };
    let text = |m: &Map<String, Value>, name: &str, required: bool| -> Result<String, String> {
        match m.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            None | Some(Value::Null) => Err(format!("`{at}.{name}` is missing")),
            Some(other) => Err(format!("`{at}.{name}` is a {}, not a string", kind(other))),
        }
    };
    Ok(match key.as_str() {
        "text" => match inner {
            Value::String(content) => Reply::Text {
                content: content.clone(),
            },
            other => return Err(format!("`{at}` is a {}, not a string", kind(other))),
        },
        "image" => Reply::Image {
            media_id: text(&fields(inner)?, "media_id", true)?,
        },
        "voice" => Reply::Voice {
            media_id: text(&fields(inner)?, "media_id", true)?,
        },
        "video" => {
            let m = fields(inner)?;
            Reply::Video {
                media_id: text(&m, "media_id", true)?,
                title: text(&m, "title", false)?,
                description: text(&m, "description", false)?,
            }
        }
        "music" => {
            let m = fields(inner)?;
            Reply::Music {
                title: text(&m, "title", false)?,
                description: text(&m, "description", false)?,
                music_url: text(&m, "music_url", false)?,
                hq_music_url: text(&m, "hq_music_url", false)?,
                thumb_media_id: text(&m, "thumb_media_id", true)?,
            }
        }
        "news" => news(inner, &at)?,
        "transfer_customer_service" => {
            let account = match inner {
                Value::Null => None,
                other => {
                    let m = fields(other)?;
                    Some(text(&m, "kf_account", false)?).filter(|a| !a.is_empty())
                }
            };
            Reply::TransferCustomerService {
                kf_account: account,
            }
        }
        "one_of" => {
            let Value::Array(choices) = inner else {
                return Err(format!("`{at}` is a {}, not a list", kind(inner)));
            };
            if choices.is_empty() {
                return Err(format!("`{at}` needs at least one reply"));
            }
            if depth >= MAX_ONE_OF_DEPTH {
                return Err(format!(
                    "`{at}` nests `one_of` more than {MAX_ONE_OF_DEPTH} deep"
                ));
            }
            let pick = rand::thread_rng().gen_range(0..choices.len());
            service_reply(&choices[pick], &format!("{at}[{pick}]"), depth + 1)?
        }
        _ => {
            // The key is not echoed: it is the service's text, which may hold anything.
            return Err(format!(
                "`{path}` has a key that is not a reply kind (`text`, `image`, `voice`, `video`, `music`, `news`, `transfer_customer_service`, `one_of`)"
            ));
        }
    })
}

/// A `news` reply: 1 to `MAX_ARTICLES` articles, each an object of strings.
fn news(inner: &Value, at: &str) -> Result<Reply, String> {
    let Value::Array(list) = inner else {
        return Err(format!("`{at}` is a {}, not a list", kind(inner)));
    };
    if list.is_empty() || list.len() > crate::rules::MAX_ARTICLES {
        return Err(format!(
            "`{at}` has 1 to {} articles, not {}",
            crate::rules::MAX_ARTICLES,
            list.len()
        ));
    }
    let mut articles = Vec::with_capacity(list.len());
    for (i, article) in list.iter().enumerate() {
        let Value::Object(m) = article else {
            return Err(format!("`{at}[{i}]` is a {}, not an object", kind(article)));
        };
        let field = |name: &str, required: bool| -> Result<String, String> {
            match m.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                None | Some(Value::Null) if !required => Ok(String::new()),
                None | Some(Value::Null) => Err(format!("`{at}[{i}].{name}` is missing")),
                Some(other) => Err(format!(
                    "`{at}[{i}].{name}` is a {}, not a string",
                    kind(other)
                )),
            }
        };
        articles.push(Article {
            title: field("title", true)?,
            description: field("description", false)?,
            pic_url: field("pic_url", false)?,
            url: field("url", false)?,
        });
    }
    Ok(Reply::News { articles })
}
