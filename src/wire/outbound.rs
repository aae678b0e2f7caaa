//! Passive replies as WeChat expects them: one `<xml>` document per reply type, every
//! string in CDATA, To/From swapped from the request by the caller.

use std::fmt::Write as _;

use super::push_cdata;

/// A passive reply, with every template already rendered. Serialised (JSON) only to be
/// kept for a later attempt or message (`server::slow`), never shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Text {
        content: String,
    },
    Image {
        media_id: String,
    },
    Voice {
        media_id: String,
    },
    Video {
        media_id: String,
        title: String,
        description: String,
    },
    Music {
        title: String,
        description: String,
        music_url: String,
        hq_music_url: String,
        thumb_media_id: String,
    },
    News {
        articles: Vec<Article>,
    },
    TransferCustomerService {
        kf_account: Option<String>,
    },
}

/// One article of a news reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Article {
    pub title: String,
    pub description: String,
    pub pic_url: String,
    pub url: String,
}

/// The envelope fields every reply carries.
#[derive(Debug, Clone, Copy)]
pub struct ReplyHeader<'a> {
    /// The user's OpenID: the request's `FromUserName`.
    pub to_user: &'a str,
    /// The account: the request's `ToUserName`.
    pub from_user: &'a str,
    pub create_time: u64,
}

impl Reply {
    /// The bytes of its texts, plus the markup beyond 256 bytes that its type needs.
    fn text_len(&self) -> usize {
        match self {
            Reply::Text { content } => content.len(),
            Reply::Image { media_id } | Reply::Voice { media_id } => media_id.len(),
            Reply::Video {
                media_id,
                title,
                description,
            } => 96 + media_id.len() + title.len() + description.len(),
            Reply::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => {
                160 + title.len()
                    + description.len()
                    + music_url.len()
                    + hq_music_url.len()
                    + thumb_media_id.len()
            }
            Reply::News { articles } => articles
                .iter()
                .map(|a| 150 + a.title.len() + a.description.len() + a.pic_url.len() + a.url.len())
                .sum(),
            Reply::TransferCustomerService { kf_account } => {
                kf_account.as_ref().map_or(0, String::len)
            }
        }
    }

    /// The `MsgType` of this reply.
    pub fn msg_type(&self) -> &'static str {
        match self {
            Reply::Text { .. } => "text",
            Reply::Image { .. } => "image",
            Reply::Voice { .. } => "voice",
            Reply::Video { .. } => "video",
            Reply::Music { .. } => "music",
            Reply::News { .. } => "news",
            Reply::TransferCustomerService { .. } => "transfer_customer_service",
        }
    }
}

/// Serializes `reply` as the passive-reply XML document WeChat documents for its type.
pub fn write_reply(header: &ReplyHeader<'_>, reply: &Reply) -> String {
    // The markup: under 256 bytes for most types, more for video, music and each news
    // article (`text_len`). With the texts, the buffer does not grow unless a text holds
    // `]]>`; a test checks each type.
    let mut out = String::with_capacity(
        256 + header.to_user.len() + header.from_user.len() + reply.text_len(),
    );
    out.push_str("<xml>");
    element(&mut out, "ToUserName", header.to_user);
    element(&mut out, "FromUserName", header.from_user);
    // Writing to a String cannot fail.
    let _ = write!(out, "<CreateTime>{}</CreateTime>", header.create_time);
    element(&mut out, "MsgType", reply.msg_type());
    match reply {
        Reply::Text { content } => element(&mut out, "Content", content),
        Reply::Image { media_id } => {
            out.push_str("<Image>");
            element(&mut out, "MediaId", media_id);
            out.push_str("</Image>");
        }
        Reply::Voice { media_id } => {
            out.push_str("<Voice>");
            element(&mut out, "MediaId", media_id);
            out.push_str("</Voice>");
        }
        Reply::Video {
            media_id,
            title,
            description,
        } => {
            out.push_str("<Video>");
            element(&mut out, "MediaId", media_id);
            element(&mut out, "Title", title);
            element(&mut out, "Description", description);
            out.push_str("</Video>");
        }
        Reply::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => {
            out.push_str("<Music>");
            element(&mut out, "Title", title);
            element(&mut out, "Description", description);
            element(&mut out, "MusicUrl", music_url);
            element(&mut out, "HQMusicUrl", hq_music_url);
            element(&mut out, "ThumbMediaId", thumb_media_id);
            out.push_str("</Music>");
        }
        Reply::News { articles } => {
            let _ = write!(
                out,
                "<ArticleCount>{}</ArticleCount><Articles>",
                articles.len()
            );
            for article in articles {
                out.push_str("<item>");
                element(&mut out, "Title", &article.title);
                element(&mut out, "Description", &article.description);
                element(&mut out, "PicUrl", &article.pic_url);
                element(&mut out, "Url", &article.url);
                out.push_str("</item>");
            }
            out.push_str("</Articles>");
        }
        Reply::TransferCustomerService { kf_account } => {
            if let Some(account) = kf_account {
                out.push_str("<TransInfo>");
                element(&mut out, "KfAccount", account);
                out.push_str("</TransInfo>");
            }
        }
    }
    out.push_str("</xml>");
    out
}

/// The safe-mode answer: the encrypted reply and its signature.
pub fn write_encrypted(encrypt: &str, signature: &str, timestamp: u64, nonce: &str) -> String {
    let mut out = String::with_capacity(encrypt.len() + 200);
    out.push_str("<xml>");
    element(&mut out, "Encrypt", encrypt);
    element(&mut out, "MsgSignature", signature);
    let _ = write!(out, "<TimeStamp>{timestamp}</TimeStamp>");
    element(&mut out, "Nonce", nonce);
    out.push_str("</xml>");
    out
}

fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    push_cdata(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Writes flat `(dotted name, value)` pairs as a message document, nested elements for
/// dotted names (`ScanCodeInfo.ScanType`): how `explain` and `wxrules test` build the
/// messages they describe.
pub fn write_fields(fields: &[(String, String)]) -> String {
    #[derive(Default)]
    struct Node {
        text: Option<String>,
        children: Vec<(String, Node)>,
    }
    fn insert(node: &mut Node, path: &[&str], value: &str) {
        let Some((first, rest)) = path.split_first() else {
            node.text = Some(value.to_owned());
            return;
        };
        let at = match node.children.iter().position(|(n, _)| n == first) {
            Some(at) => at,
            None => {
                node.children.push(((*first).to_owned(), Node::default()));
                node.children.len() - 1
            }
        };
        insert(&mut node.children[at].1, rest, value);
    }
    fn write(out: &mut String, name: &str, node: &Node) {
        let _ = write!(out, "<{name}>");
        if node.children.is_empty() {
            push_cdata(out, node.text.as_deref().unwrap_or(""));
        }
        for (child, n) in &node.children {
            write(out, child, n);
        }
        let _ = write!(out, "</{name}>");
    }
    let mut root = Node::default();
    for (name, value) in fields {
        let path: Vec<&str> = name.split('.').collect();
        insert(&mut root, &path, value);
    }
    let mut out = String::new();
    write(&mut out, "xml", &root);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: ReplyHeader<'static> = ReplyHeader {
        to_user: "toUser",
        from_user: "fromUser",
        create_time: 12345678,
    };

    const HEAD: &str = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
        <FromUserName><![CDATA[fromUser]]></FromUserName><CreateTime>12345678</CreateTime>";

    #[allow(clippy::needless_pass_by_value)]
    fn check(reply: Reply, rest: &str) {
        let xml = write_reply(&HEADER, &reply);
        assert_eq!(xml, format!("{HEAD}{rest}"));
        // Written into the buffer as first sized: it never had to grow.
        let sized = 256 + HEADER.to_user.len() + HEADER.from_user.len() + reply.text_len();
        assert_eq!(xml.capacity(), sized, "{xml}");
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn text() {
        check(
            Reply::Text {
                content: s("你好 ]]> <b>&"),
            },
            "<MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[你好 ]]]]><![CDATA[> <b>&]]></Content></xml>",
        );
    }

    #[test]
    fn image_and_voice() {
        check(
            Reply::Image { media_id: s("m1") },
            "<MsgType><![CDATA[image]]></MsgType>\
             <Image><MediaId><![CDATA[m1]]></MediaId></Image></xml>",
        );
        check(
            Reply::Voice { media_id: s("m2") },
            "<MsgType><![CDATA[voice]]></MsgType>\
             <Voice><MediaId><![CDATA[m2]]></MediaId></Voice></xml>",
        );
    }

    #[test]
    fn video() {
        check(
            Reply::Video {
                media_id: s("m"),
                title: s("t"),
                description: s("d"),
            },
            "<MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[m]]></MediaId>\
             <Title><![CDATA[t]]></Title><Description><![CDATA[d]]></Description></Video></xml>",
        );
    }

    #[test]
    fn music() {
        check(
            Reply::Music {
                title: s("t"),
                description: s("d"),
                music_url: s("u"),
                hq_music_url: s("h"),
                thumb_media_id: s("m"),
            },
            "<MsgType><![CDATA[music]]></MsgType><Music><Title><![CDATA[t]]></Title>\
             <Description><![CDATA[d]]></Description><MusicUrl><![CDATA[u]]></MusicUrl>\
             <HQMusicUrl><![CDATA[h]]></HQMusicUrl><ThumbMediaId><![CDATA[m]]></ThumbMediaId>\
             </Music></xml>",
        );
    }

    #[test]
    fn news() {
        let article = |n: &str| Article {
            title: format!("t{n}"),
            description: format!("d{n}"),
            pic_url: format!("p{n}"),
            url: format!("u{n}"),
        };
        check(
            Reply::News {
                articles: vec![article("1"), article("2")],
            },
            "<MsgType><![CDATA[news]]></MsgType><ArticleCount>2</ArticleCount><Articles>\
             <item><Title><![CDATA[t1]]></Title><Description><![CDATA[d1]]></Description>\
             <PicUrl><![CDATA[p1]]></PicUrl><Url><![CDATA[u1]]></Url></item>\
             <item><Title><![CDATA[t2]]></Title><Description><![CDATA[d2]]></Description>\
             <PicUrl><![CDATA[p2]]></PicUrl><Url><![CDATA[u2]]></Url></item></Articles></xml>",
        );
    }

    #[test]
    fn encrypted_envelope() {
        assert_eq!(
            write_encrypted("ZW5j", "abc123", 1409304348, "xxxxxx"),
            "<xml><Encrypt><![CDATA[ZW5j]]></Encrypt><MsgSignature><![CDATA[abc123]]></MsgSignature>\
             <TimeStamp>1409304348</TimeStamp><Nonce><![CDATA[xxxxxx]]></Nonce></xml>"
        );
    }

    #[test]
    fn transfer_customer_service() {
        check(
            Reply::TransferCustomerService { kf_account: None },
            "<MsgType><![CDATA[transfer_customer_service]]></MsgType></xml>",
        );
        check(
            Reply::TransferCustomerService {
                kf_account: Some(s("test1@test")),
            },
            "<MsgType><![CDATA[transfer_customer_service]]></MsgType>\
             <TransInfo><KfAccount><![CDATA[test1@test]]></KfAccount></TransInfo></xml>",
        );
    }

    #[test]
    fn dotted_fields_become_nested_elements() {
        let xml = write_fields(&[
            ("MsgType".into(), "event".into()),
            ("ScanCodeInfo.ScanType".into(), "qrcode".into()),
            ("ScanCodeInfo.ScanResult".into(), "a]]>b".into()),
        ]);
        assert_eq!(
            xml,
            "<xml><MsgType><![CDATA[event]]></MsgType><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType>\
             <ScanResult><![CDATA[a]]]]><![CDATA[>b]]></ScanResult></ScanCodeInfo></xml>"
        );
    }
}
