//! Customer-service messages (`/cgi-bin/message/custom/send`) in WeChat's JSON, made from the
//! same `Reply` a passive answer is.

use serde::{Deserialize, Serialize};

use crate::wire::Reply;

/// One message to one user, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomMessage {
    pub touser: String,
    #[serde(flatten)]
    pub body: Body,
}

/// The message itself: `"msgtype": "text", "text": {…}`, and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
pub enum Body {
    Text { text: Text },
    Image { image: Media },
    Voice { voice: Media },
    Video { video: Video },
    Music { music: Music },
    News { news: News },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub media_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    pub media_id: String,
    pub title: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Music {
    pub title: String,
    pub description: String,
    pub musicurl: String,
    pub hqmusicurl: String,
    pub thumb_media_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct News {
    pub articles: Vec<Article>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    pub title: String,
    pub description: String,
    pub url: String,
    pub picurl: String,
}

/// A reply the customer-service API cannot carry: a transfer to a human agent, or news
/// with more than one article (WeChat sends one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a `{0}` reply cannot be sent as a customer-service message")]
pub struct Unsendable(pub &'static str);

impl CustomMessage {
    /// The media id an image, voice or video message carries.
    pub fn media_id(&self) -> Option<&str> {
        match &self.body {
            Body::Image { image: m } | Body::Voice { voice: m } => Some(&m.media_id),
            Body::Video { video } => Some(&video.media_id),
            _ => None,
        }
    }

    /// The same message with `media_id` in place of its own.
    pub fn with_media_id(&self, media_id: &str) -> CustomMessage {
        let mut message = self.clone();
        match &mut message.body {
            Body::Image { image: m } | Body::Voice { voice: m } => m.media_id = media_id.into(),
            Body::Video { video } => video.media_id = media_id.into(),
            _ => {}
        }
        message
    }

    /// `reply` to `touser` (an OpenID).
    pub fn new(touser: &str, reply: Reply) -> Result<CustomMessage, Unsendable> {
        let body = match reply {
            Reply::Text { content } => Body::Text {
                text: Text { content },
            },
            Reply::Image { media_id } => Body::Image {
                image: Media { media_id },
            },
            Reply::Voice { media_id } => Body::Voice {
                voice: Media { media_id },
            },
            Reply::Video {
                media_id,
                title,
                description,
            } => Body::Video {
                video: Video {
                    media_id,
                    title,
                    description,
                },
            },
            Reply::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => Body::Music {
                music: Music {
                    title,
                    description,
                    musicurl: music_url,
                    hqmusicurl: hq_music_url,
                    thumb_media_id,
                },
            },
            Reply::News { articles } if articles.len() == 1 => Body::News {
                news: News {
                    articles: articles
                        .into_iter()
                        .map(|a| Article {
                            title: a.title,
                            description: a.description,
                            url: a.url,
                            picurl: a.pic_url,
                        })
                        .collect(),
                },
            },
            Reply::News { .. } => return Err(Unsendable("news of several articles")),
            Reply::TransferCustomerService { .. } => {
                return Err(Unsendable("transfer_customer_service"))
            }
        };
        Ok(CustomMessage {
            touser: touser.to_owned(),
            body,
        })
    }

    /// The reply it was made from (`new`), to be given passively instead: a message
    /// WeChat would not take now is kept for the user's next one.
    pub fn into_reply(self) -> Reply {
        match self.body {
            Body::Text { text } => Reply::Text {
                content: text.content,
            },
            Body::Image { image } => Reply::Image {
                media_id: image.media_id,
            },
            Body::Voice { voice } => Reply::Voice {
                media_id: voice.media_id,
            },
            Body::Video { video } => Reply::Video {
                media_id: video.media_id,
                title: video.title,
                description: video.description,
            },
            Body::Music { music } => Reply::Music {
                title: music.title,
                description: music.description,
                music_url: music.musicurl,
                hq_music_url: music.hqmusicurl,
                thumb_media_id: music.thumb_media_id,
            },
            Body::News { news } => Reply::News {
                articles: news
                    .articles
                    .into_iter()
                    .map(|a| crate::wire::Article {
                        title: a.title,
                        description: a.description,
                        pic_url: a.picurl,
                        url: a.url,
                    })
                    .collect(),
            },
        }
    }

    /// The message type, for logs.
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Text { .. } => "text",
            Body::Image { .. } => "image",
            Body::Voice { .. } => "voice",
            Body::Video { .. } => "video",
            Body::Music { .. } => "music",
            Body::News { .. } => "news",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Article as WireArticle;

    fn json(reply: Reply) -> serde_json::Value {
        serde_json::to_value(CustomMessage::new("oUser", reply).unwrap()).unwrap()
    }

    /// The shapes of WeChat's documentation for each message type.
    #[test]
    fn each_reply_becomes_wechats_json() {
        assert_eq!(
            json(Reply::Text {
                content: "你好".into()
            }),
            serde_json::json!({"touser": "oUser", "msgtype": "text", "text": {"content": "你好"}})
        );
        assert_eq!(
            json(Reply::Image {
                media_id: "M".into()
            }),
            serde_json::json!({"touser": "oUser", "msgtype": "image", "image": {"media_id": "M"}})
        );
        assert_eq!(
            json(Reply::Voice {
                media_id: "V".into()
            }),
            serde_json::json!({"touser": "oUser", "msgtype": "voice", "voice": {"media_id": "V"}})
        );
        assert_eq!(
            json(Reply::Music {
                title: "t".into(),
                description: "d".into(),
                music_url: "u".into(),
                hq_music_url: "h".into(),
                thumb_media_id: "th".into()
            }),
            serde_json::json!({"touser": "oUser", "msgtype": "music", "music": {
                "title": "t", "description": "d", "musicurl": "u", "hqmusicurl": "h", "thumb_media_id": "th"}})
        );
        let article = WireArticle {
            title: "t".into(),
            description: "d".into(),
            pic_url: "p".into(),
            url: "u".into(),
        };
        assert_eq!(
            json(Reply::News {
                articles: vec![article.clone()]
            }),
            serde_json::json!({"touser": "oUser", "msgtype": "news", "news": {"articles": [
                {"title": "t", "description": "d", "url": "u", "picurl": "p"}]}})
        );
        assert!(CustomMessage::new(
            "o",
            Reply::News {
                articles: vec![article.clone(), article]
            }
        )
        .is_err());
        assert!(
            CustomMessage::new("o", Reply::TransferCustomerService { kf_account: None }).is_err()
        );
    }

    /// A message kept after a 45047 is given passively as the reply it was made from.
    #[test]
    fn each_message_gives_back_its_reply() {
        let replies = [
            Reply::Text {
                content: "你好".into(),
            },
            Reply::Image {
                media_id: "M".into(),
            },
            Reply::Voice {
                media_id: "V".into(),
            },
            Reply::Video {
                media_id: "MV".into(),
                title: "t".into(),
                description: "d".into(),
            },
            Reply::Music {
                title: "t".into(),
                description: "d".into(),
                music_url: "u".into(),
                hq_music_url: "h".into(),
                thumb_media_id: "th".into(),
            },
            Reply::News {
                articles: vec![WireArticle {
                    title: "t".into(),
                    description: "d".into(),
                    pic_url: "p".into(),
                    url: "u".into(),
                }],
            },
        ];
        for reply in replies {
            let message = CustomMessage::new("oUser", reply.clone()).unwrap();
            assert_eq!(message.into_reply(), reply);
        }
    }
}
