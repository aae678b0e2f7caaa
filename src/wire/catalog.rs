//! What WeChat sends with each kind of push: the fields of every message type and event of
//! an Official Account, from WeChat's documentation (the samples under
//! `tests/data/messages`), and the elements that can repeat. `check` holds templates to it
//! (a field no message a rule can match carries is a typo), `Message` makes repeatable
//! elements lists even when one comes, and `test`/`explain` build each event with the fields
//! WeChat always sends with it.

/// One kind of push: a message type, or an event.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// `MsgType`, lowercase (`text`, `event`, …).
    pub msg_type: &'static str,
    /// `Event` for `event` kinds, as WeChat writes it (`subscribe`, `SCAN`, `CLICK`, …).
    pub event: Option<&'static str>,
    /// Its fields beyond `ToUserName`, `FromUserName`, `CreateTime`, `MsgType` and `Event`,
    /// as dotted paths; a path ending in `[]` is a list whose elements have the paths that
    /// follow it (`SendPicsInfo.PicList[]`, then `SendPicsInfo.PicList[].PicMd5Sum`).
    pub fields: &'static [Field],
}

/// A field a kind carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub path: &'static str,
    /// Sent only sometimes (`Recognition` without speech recognition turned on, `EventKey`
    /// of a plain follow): a template should test it with `{{#if …}}`.
    pub optional: bool,
    /// A sample value, for the messages `test` and `explain` make up.
    pub sample: &'static str,
}

const fn f(path: &'static str, sample: &'static str) -> Field {
    Field {
        path,
        optional: false,
        sample,
    }
}

const fn opt(path: &'static str, sample: &'static str) -> Field {
    Field {
        path,
        optional: true,
        sample,
    }
}

/// The fields every push carries.
pub const COMMON: &[&str] = &["ToUserName", "FromUserName", "CreateTime", "MsgType"];

/// Elements that are lists whatever their count, as `(parent, child)`: WeChat repeats them
/// once per item (one `<List>` per template, one `<item>` per article, one `<fail_idx>` per
/// refused article, one `<AroundBeacon>` per device nearby), and with one item a template
/// or a path written for the list must still see a list. A container whose children are
/// all `<item>`s (`PicList`, `ResultList`) is a list already; `article_detail` is not, as
/// its `<count>` comes first.
///
/// Every push of WeChat's documentation for Official Accounts was gone through for these
/// (the kinds below, and those it lacks: card, store, Wi-Fi and scan-product events carry
/// no repeated element).
pub const REPEATED: &[(&str, &str)] = &[
    ("SubscribeMsgPopupEvent", "List"),
    ("SubscribeMsgChangeEvent", "List"),
    ("SubscribeMsgSentEvent", "List"),
    ("article_detail", "item"),
    ("PublishEventInfo", "fail_idx"),
    ("AroundBeacons", "AroundBeacon"),
];

const MSG_IDS: [Field; 3] = [
    f("MsgId", "1"),
    opt("MsgDataId", "xxxx"),
    opt("Idx", "xxxx"),
];

macro_rules! fields {
    ($($field:expr),* $(,)?) => { &[$($field),*] };
}

/// Every kind WeChat documents for an Official Account's server URL.
pub static KINDS: &[Kind] = &[
    Kind {
        msg_type: "text",
        event: None,
        fields: fields![
            f("Content", "你好"),
            MSG_IDS[0],
            MSG_IDS[1],
            MSG_IDS[2],
            opt("bizmsgmenuid", "101")
        ],
    },
    Kind {
        msg_type: "image",
        event: None,
        fields: fields![
            f("PicUrl", "http://127.0.0.1/pic.jpg"),
            f("MediaId", "media_id"),
            MSG_IDS[0],
            MSG_IDS[1],
            MSG_IDS[2]
        ],
    },
    Kind {
        msg_type: "voice",
        event: None,
        fields: fields![
            f("MediaId", "media_id"),
            f("Format", "amr"),
            opt("Recognition", "腾讯微信团队"),
            opt("MediaId16K", "media_id_16k"),
            MSG_IDS[0],
            MSG_IDS[1],
            MSG_IDS[2]
        ],
    },
    Kind {
        msg_type: "video",
        event: None,
        fields: fields![
            f("MediaId", "media_id"),
            f("ThumbMediaId", "thumb_media_id"),
            MSG_IDS[0],
            MSG_IDS[1],
            MSG_IDS[2]
        ],
    },
    Kind {
        msg_type: "shortvideo",
        event: None,
        fields: fields![
            f("MediaId", "media_id"),
            f("ThumbMediaId", "thumb_media_id"),
            MSG_IDS[0],
            MSG_IDS[1],
            MSG_IDS[2]
        ],
    },
    Kind {
        msg_type: "location",
        event: None,
        fields: fields![
            f("Location_X", "23.134521"),
            f("Location_Y", "113.358803"),
            f("Scale", "20"),
            f("Label", "位置信息"),
            MSG_IDS[0],
            MSG_IDS[1],
            MSG_IDS[2]
        ],
    },
    Kind {
        msg_type: "link",
        event: None,
        fields: fields![
            f("Title", "公众平台官网链接"),
            f("Description", "公众平台官网链接"),
            f("Url", "http://127.0.0.1/link"),
            MSG_IDS[0],
            MSG_IDS[1],
            MSG_IDS[2]
        ],
    },
    // A plain follow has no EventKey; one through a parametric QR code has `qrscene_…` and
    // a Ticket.
    Kind {
        msg_type: "event",
        event: Some("subscribe"),
        fields: fields![opt("EventKey", "qrscene_123123"), opt("Ticket", "TICKET")],
    },
    Kind {
        msg_type: "event",
        event: Some("unsubscribe"),
        fields: fields![opt("EventKey", "")],
    },
    Kind {
        msg_type: "event",
        event: Some("SCAN"),
        fields: fields![f("EventKey", "SCENE_VALUE"), f("Ticket", "TICKET")],
    },
    Kind {
        msg_type: "event",
        event: Some("LOCATION"),
        fields: fields![
            f("Latitude", "23.137466"),
            f("Longitude", "113.352425"),
            f("Precision", "119.385040")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("CLICK"),
        fields: fields![f("EventKey", "EVENTKEY")],
    },
    Kind {
        msg_type: "event",
        event: Some("VIEW"),
        fields: fields![
            f("EventKey", "http://127.0.0.1/menu"),
            opt("MenuId", "MENUID")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("view_miniprogram"),
        fields: fields![f("EventKey", "pages/index/index"), f("MenuId", "MENUID")],
    },
    Kind {
        msg_type: "event",
        event: Some("scancode_push"),
        fields: fields![
            f("EventKey", "6"),
            f("ScanCodeInfo.ScanType", "qrcode"),
            f("ScanCodeInfo.ScanResult", "1")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("scancode_waitmsg"),
        fields: fields![
            f("EventKey", "6"),
            f("ScanCodeInfo.ScanType", "qrcode"),
            f("ScanCodeInfo.ScanResult", "2")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("pic_sysphoto"),
        fields: PICS,
    },
    Kind {
        msg_type: "event",
        event: Some("pic_photo_or_album"),
        fields: PICS,
    },
    Kind {
        msg_type: "event",
        event: Some("pic_weixin"),
        fields: PICS,
    },
    Kind {
        msg_type: "event",
        event: Some("location_select"),
        fields: fields![
            f("EventKey", "6"),
            f("SendLocationInfo.Location_X", "23"),
            f("SendLocationInfo.Location_Y", "113"),
            f("SendLocationInfo.Scale", "15"),
            f("SendLocationInfo.Label", " 广州市海珠区客村艺苑路 106号"),
            opt("SendLocationInfo.Poiname", "")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("TEMPLATESENDJOBFINISH"),
        fields: fields![f("MsgID", "200163836"), f("Status", "success")],
    },
    Kind {
        msg_type: "event",
        event: Some("MASSSENDJOBFINISH"),
        fields: fields![
            f("MsgID", "1000001625"),
            f("Status", "err(30003)"),
            f("TotalCount", "0"),
            f("FilterCount", "0"),
            f("SentCount", "0"),
            f("ErrorCount", "0"),
            opt("CopyrightCheckResult.Count", "2"),
            opt("CopyrightCheckResult.ResultList[]", ""),
            opt("CopyrightCheckResult.ResultList[].ArticleIdx", "1"),
            opt("CopyrightCheckResult.ResultList[].UserDeclareState", "0"),
            opt("CopyrightCheckResult.ResultList[].AuditState", "2"),
            opt("CopyrightCheckResult.ResultList[].OriginalArticleUrl", ""),
            opt("CopyrightCheckResult.ResultList[].OriginalArticleType", "1"),
            opt("CopyrightCheckResult.ResultList[].CanReprint", "1"),
            opt("CopyrightCheckResult.ResultList[].NeedReplaceContent", "1"),
            opt(
                "CopyrightCheckResult.ResultList[].NeedShowReprintSource",
                "1"
            ),
            opt("CopyrightCheckResult.CheckState", "2"),
            opt("ArticleUrlResult.Count", "1"),
            opt("ArticleUrlResult.ResultList[]", ""),
            opt("ArticleUrlResult.ResultList[].ArticleIdx", "1"),
            opt("ArticleUrlResult.ResultList[].ArticleUrl", ""),
        ],
    },
    // The result of publishing (发布能力): the articles' links when it succeeded (one
    // `<item>` per article), the refused articles' numbers (`fail_idx`, once per article)
    // when originality or review failed.
    Kind {
        msg_type: "event",
        event: Some("PUBLISHJOBFINISH"),
        fields: fields![
            f("PublishEventInfo.publish_id", "2247503051"),
            f("PublishEventInfo.publish_status", "0"),
            opt(
                "PublishEventInfo.article_id",
                "b5O2OUs25HBxRceL7hfReg-U9QGeq9zQjiDvyWP4Hq4"
            ),
            opt("PublishEventInfo.article_detail.count", "1"),
            opt("PublishEventInfo.article_detail.item[]", ""),
            opt("PublishEventInfo.article_detail.item[].idx", "1"),
            opt(
                "PublishEventInfo.article_detail.item[].article_url",
                "ARTICLE_URL"
            ),
            opt("PublishEventInfo.fail_idx[]", "1"),
        ],
    },
    // 摇一摇周边: the device whose page the user sees, and up to five of the account's
    // devices nearby.
    Kind {
        msg_type: "event",
        event: Some("ShakearoundUserShake"),
        fields: fields![
            f("ChosenBeacon.Uuid", "uuid"),
            f("ChosenBeacon.Major", "major"),
            f("ChosenBeacon.Minor", "minor"),
            f("ChosenBeacon.Distance", "0.057"),
            opt("AroundBeacons.AroundBeacon[]", ""),
            opt("AroundBeacons.AroundBeacon[].Uuid", "uuid"),
            opt("AroundBeacons.AroundBeacon[].Major", "major"),
            opt("AroundBeacons.AroundBeacon[].Minor", "minor"),
            opt("AroundBeacons.AroundBeacon[].Distance", "166.816"),
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("subscribe_msg_popup_event"),
        fields: fields![
            f("SubscribeMsgPopupEvent.List[]", ""),
            f(
                "SubscribeMsgPopupEvent.List[].TemplateId",
                "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
            ),
            f(
                "SubscribeMsgPopupEvent.List[].SubscribeStatusString",
                "accept"
            ),
            f("SubscribeMsgPopupEvent.List[].PopupScene", "2")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("subscribe_msg_change_event"),
        fields: fields![
            f("SubscribeMsgChangeEvent.List[]", ""),
            f(
                "SubscribeMsgChangeEvent.List[].TemplateId",
                "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
            ),
            f(
                "SubscribeMsgChangeEvent.List[].SubscribeStatusString",
                "reject"
            )
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("subscribe_msg_sent_event"),
        fields: fields![
            f("SubscribeMsgSentEvent.List[]", ""),
            f(
                "SubscribeMsgSentEvent.List[].TemplateId",
                "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
            ),
            f("SubscribeMsgSentEvent.List[].MsgID", "1700827132819554304"),
            f("SubscribeMsgSentEvent.List[].ErrorCode", "0"),
            f("SubscribeMsgSentEvent.List[].ErrorStatus", "success")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("qualification_verify_success"),
        fields: fields![f("ExpiredTime", "1442401156")],
    },
    Kind {
        msg_type: "event",
        event: Some("qualification_verify_fail"),
        fields: fields![f("FailTime", "1442401122"), f("FailReason", "by time")],
    },
    Kind {
        msg_type: "event",
        event: Some("naming_verify_success"),
        fields: fields![f("ExpiredTime", "1442401093")],
    },
    Kind {
        msg_type: "event",
        event: Some("naming_verify_fail"),
        fields: fields![f("FailTime", "1442401061"), f("FailReason", "by time")],
    },
    Kind {
        msg_type: "event",
        event: Some("annual_renew"),
        fields: fields![f("ExpiredTime", "1442401004")],
    },
    Kind {
        msg_type: "event",
        event: Some("verify_expired"),
        fields: fields![f("ExpiredTime", "1442400900")],
    },
    Kind {
        msg_type: "event",
        event: Some("merchant_order"),
        fields: fields![
            f("OrderId", "13921238027826960815"),
            f("OrderStatus", "2"),
            f("ProductId", "pDF3iY8xW8ftuOIzhWxEvjWTqiqU"),
            f("SkuInfo", "10001:1000012;10002:100021")
        ],
    },
    Kind {
        msg_type: "event",
        event: Some("kf_create_session"),
        fields: fields![f("KfAccount", "test1@test")],
    },
    Kind {
        msg_type: "event",
        event: Some("kf_close_session"),
        fields: fields![f("KfAccount", "test1@test")],
    },
    Kind {
        msg_type: "event",
        event: Some("kf_switch_session"),
        fields: fields![
            f("FromKfAccount", "test1@test"),
            f("ToKfAccount", "test2@test")
        ],
    },
];

const PICS: &[Field] = &[
    f("EventKey", "6"),
    f("SendPicsInfo.Count", "1"),
    f("SendPicsInfo.PicList[]", ""),
    f(
        "SendPicsInfo.PicList[].PicMd5Sum",
        "1b5f7c23b5bf75682a53e7b6d163e185",
    ),
];

/// The kind of a message type and event (`event` ignored unless `msg_type` is `event`;
/// both compared in any ASCII case, as rules compare them).
pub fn kind(msg_type: &str, event: Option<&str>) -> Option<&'static Kind> {
    KINDS.iter().find(|k| {
        k.msg_type.eq_ignore_ascii_case(msg_type)
            && match (k.event, event) {
                (None, _) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (Some(_), None) => false,
            }
    })
}

/// Whether `child` under `parent` is always a list.
pub fn always_list(parent: &str, child: &str) -> bool {
    REPEATED.iter().any(|(p, c)| *p == parent && *c == child)
}

/// The fields WeChat always sends with `kind`, with sample values, as `(dotted name,
/// value)` pairs for `wire::write_fields`: what `explain`, `test` and `send` add to the
/// messages they make up, so that a made-up SCAN carries its `Ticket` as a real one does.
/// A list gets one element (`SendPicsInfo.PicList.item.PicMd5Sum`, or one `<List>`).
pub fn sample_fields(kind: &Kind) -> Vec<(String, String)> {
    sample_fields_for(kind, None)
}

/// `sample_fields`, for a push whose `EventKey` is `event_key`: a follow through a QR code
/// (`qrscene_…`) carries its `Ticket` too, as WeChat sends it.
pub fn sample_fields_for(kind: &Kind, event_key: Option<&str>) -> Vec<(String, String)> {
    let qr_follow =
        kind.event == Some("subscribe") && event_key.is_some_and(|k| k.starts_with("qrscene_"));
    kind.fields
        .iter()
        .filter(|field| {
            (!field.optional || (qr_follow && field.path == "Ticket"))
                && !field.path.ends_with("[]")
        })
        .map(|field| {
            let path = match field.path.split_once("[].") {
                Some((list, rest)) => {
                    let (parent, name) = list.rsplit_once('.').unwrap_or(("", list));
                    let parent = parent.rsplit('.').next().unwrap_or(parent);
                    if always_list(parent, name) {
                        format!("{list}.{rest}")
                    } else {
                        format!("{list}.item.{rest}")
                    }
                }
                None => field.path.to_owned(),
            };
            (path, field.sample.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{write_fields, Message};

    #[test]
    fn made_up_pushes_carry_what_wechat_always_sends_and_read_back_as_its_own_do() {
        let build = |msg_type: &str, event: &str| {
            let mut fields = vec![
                ("ToUserName".to_owned(), "gh".to_owned()),
                ("FromUserName".to_owned(), "o".to_owned()),
                ("CreateTime".to_owned(), "1".to_owned()),
                ("MsgType".to_owned(), msg_type.to_owned()),
                ("Event".to_owned(), event.to_owned()),
            ];
            fields.extend(sample_fields(kind(msg_type, Some(event)).unwrap()));
            Message::parse(write_fields(&fields).as_bytes()).unwrap()
        };
        let scan = build("event", "SCAN");
        assert_eq!(scan.lookup("Ticket"), Some("TICKET"));
        assert_eq!(scan.lookup("EventKey"), Some("SCENE_VALUE"));
        let pics = build("event", "pic_sysphoto");
        assert_eq!(
            pics.lookup("SendPicsInfo.PicList.0.PicMd5Sum"),
            Some("1b5f7c23b5bf75682a53e7b6d163e185")
        );
        let sent = build("event", "subscribe_msg_sent_event");
        assert_eq!(
            sent.lookup("SubscribeMsgSentEvent.List.0.ErrorStatus"),
            Some("success")
        );
        // Optional fields are left out: a plain follow has no EventKey.
        let follow = build("event", "subscribe");
        assert_eq!(follow.lookup("EventKey"), None);
        // Every kind's sample reads back with each of its required fields.
        for kind in KINDS {
            let event = kind.event.unwrap_or("");
            let message = build(kind.msg_type, event);
            for field in kind
                .fields
                .iter()
                .filter(|f| !f.optional && !f.path.contains("[]"))
            {
                assert_eq!(
                    message.lookup(field.path),
                    Some(field.sample),
                    "{event} {}",
                    field.path
                );
            }
        }
    }
}
