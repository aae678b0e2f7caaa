//! Pushes through the real App, signed as WeChat signs: every fixture kind, every shipped
//! rule, every reply type, and the answers to bad requests.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use actix_web::test;
use common::*;
use wxrules::rules::Subject;
use wxrules::wire::Message;

/// Which shipped rule answers each fixture, and what the answer must contain
/// (`None`: the literal `success`).
const FIXTURES: &[(&str, &str, Option<&str>)] = &[
    ("msg_text", "to-human", Some("<MsgType><![CDATA[transfer_customer_service]]></MsgType>")),
    ("msg_image", "to-human", Some("transfer_customer_service")),
    ("msg_voice", "to-human", Some("transfer_customer_service")),
    ("msg_voice_recognition", "to-human", Some("transfer_customer_service")),
    ("msg_video", "to-human", Some("transfer_customer_service")),
    ("msg_shortvideo", "to-human", Some("transfer_customer_service")),
    ("msg_link", "to-human", Some("transfer_customer_service")),
    ("msg_location", "location-message", Some("<Content><![CDATA[收到您的位置：位置信息（23.134521, 113.358803）]]></Content>")),
    ("event_subscribe", "welcome", Some("<Content><![CDATA[欢迎关注！回复「价格」查看本周价格，回复「帮助」查看全部功能。]]></Content>")),
    ("event_subscribe_qrscene", "welcome-from-qr", Some("您是通过「123123」二维码来的")),
    ("event_subscribe_last_trade_no", "welcome", Some("欢迎关注！回复")),
    ("event_unsubscribe", "unsubscribe", None),
    ("event_scan", "scan-qr", Some("您扫描了场景「SCENE_VALUE」的二维码")),
    ("event_location", "other-events", None),
    ("event_click", "menu-other", Some("该功能即将上线")),
    ("event_view", "menu-view", None),
    ("event_scancode_push", "menu-scancode", Some("<Content><![CDATA[扫码结果（qrcode）：1]]></Content>")),
    ("event_scancode_waitmsg", "menu-scancode", Some("扫码结果（qrcode）")),
    ("event_pic_sysphoto", "menu-photos", Some("已收到 1 张图片：1b5f7c23b5bf75682a53e7b6d163e185")),
    ("event_pic_sysphoto_two_pics", "menu-photos", Some("<Content><![CDATA[已收到 2 张图片：1b5f7c23b5bf75682a53e7b6d163e185、233]]></Content>")),
    ("event_pic_photo_or_album", "menu-photos", Some("已收到 1 张图片")),
    ("event_pic_weixin", "menu-photos", Some("已收到 1 张图片：5a75aaca956d97be686719218f275c6b")),
    ("event_location_select", "menu-location-select", Some("已收到您选择的位置： 广州市海珠区客村艺苑路 106号")),
    ("event_templatesendjobfinish_success", "template-delivered", None),
    ("event_templatesendjobfinish_user_block", "template-blocked", None),
    ("event_templatesendjobfinish_system_failed", "template-failed", None),
    ("event_masssendjobfinish", "mass-send-finished", None),
    ("event_merchant_order", "other-events", None),
    ("event_qualification_verify_success", "other-events", None),
    ("event_qualification_verify_fail", "other-events", None),
    ("event_naming_verify_success", "other-events", None),
    ("event_naming_verify_fail", "other-events", None),
    ("event_annual_renew", "other-events", None),
    ("event_verify_expired", "other-events", None),
];

/// Messages built from fixtures for the shipped rules no fixture reaches as is.
fn variants() -> Vec<(String, &'static str, &'static str)> {
    let text = |content: &str| {
        fixture("msg_text").replace(
            "<![CDATA[this is a test]]>",
            &format!("<![CDATA[{content}]]>"),
        )
    };
    let click = |key: &str| fixture("event_click").replace("EVENTKEY", key);
    vec![
        (click("CONTACT_US"), "menu-contact", "<ArticleCount>1</ArticleCount><Articles><item><Title><![CDATA[联系我们]]></Title>"),
        (click("V1001_TODAY_MUSIC"), "menu-today-music", "<HQMusicUrl><![CDATA[https://example.com/music/today-hq.mp3]]></HQMusicUrl><ThumbMediaId><![CDATA[THUMB_MEDIA_ID_TODAY]]></ThumbMediaId>"),
        (click("V1001_GOOD"), "menu-like", "<Content><![CDATA[谢谢你的赞 👍]]></Content>"),
        (text("  Price "), "price", "本周价格："),
        (text("价格"), "price", "· 标准版 ¥99/月"),
        (text("HELP"), "help", "您可以回复："),
        (text("订单 20261127001"), "order-status", "<Content><![CDATA[订单 20261127001 正在查询，结果将通过服务通知发送给您。]]></Content>"),
        (text("有什么优惠吗"), "discount", "<MsgType><![CDATA[text]]></MsgType>"),
        (text("订单 12"), "to-human", "transfer_customer_service"),
    ]
}

fn rule_for(xml: &str) -> Option<String> {
    let rules = wxrules::rules::load(&shipped()).unwrap().rules;
    let message = Message::parse(xml.as_bytes()).unwrap();
    let found = rules.find(&Subject::new(&message));
    found.map(|m| m.rule.name().to_owned())
}

#[actix_web::test]
async fn every_fixture_kind_gets_its_shipped_answer() {
    let app = app(plain_state(shipped())).await;
    for (name, rule, expect) in FIXTURES {
        let xml = fixture(name);
        assert_eq!(rule_for(&xml).as_deref(), Some(*rule), "{name}: rule");
        let (status, body) = post(&app, &signed_query(), xml.clone()).await;
        assert_eq!(status, 200, "{name}: {body}");
        match expect {
            None => assert_eq!(body, "success", "{name}"),
            Some(part) => {
                assert!(body.contains(part), "{name}: {part:?} not in\n{body}");
                // To and From swap; CreateTime is now.
                let m = Message::parse(xml.as_bytes()).unwrap();
                let reply = Message::parse(body.as_bytes()).unwrap();
                assert_eq!(reply.to_user(), m.from_user(), "{name}");
                assert_eq!(reply.from_user(), m.to_user(), "{name}");
                assert_eq!(reply.create_time(), NOW, "{name}");
            }
        }
    }
}

#[actix_web::test]
async fn every_shipped_rule_is_reached() {
    let app = app(plain_state(shipped())).await;
    let mut reached = BTreeSet::new();
    for (name, rule, _) in FIXTURES {
        reached.insert(rule.to_string());
        let _ = name;
    }
    for (xml, rule, part) in variants() {
        assert_eq!(rule_for(&xml).as_deref(), Some(rule), "{xml}");
        let (status, body) = post(&app, &signed_query(), xml.clone()).await;
        assert_eq!(status, 200);
        assert!(body.contains(part), "{rule}: {part:?} not in\n{body}");
        reached.insert(rule.to_string());
    }
    let shipped_rules = wxrules::rules::load(&shipped()).unwrap().rules;
    let all: BTreeSet<String> = shipped_rules
        .rules()
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    assert_eq!(reached, all, "every shipped rule has a test");
}

#[actix_web::test]
async fn one_of_picks_among_its_replies() {
    let app = app(plain_state(shipped())).await;
    let xml = fixture("msg_text").replace("this is a test", "折扣");
    let mut seen = BTreeSet::new();
    for _ in 0..64 {
        let (_, body) = post(&app, &signed_query(), xml.clone()).await;
        let reply = Message::parse(body.as_bytes()).unwrap();
        seen.insert(reply.text("Content").unwrap().to_owned());
    }
    let expected: BTreeSet<String> = [
        "本周全场 8 折，回复「价格」查看价目表。",
        "新用户首单立减 10 元，详情见菜单「优惠活动」。",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(seen, expected);
}

fn echo_rules(extra: &str) -> Scratch {
    let s = Scratch::new("echo");
    s.write(
        "rules.yaml",
        &format!(
            "rules:\n{extra}  - name: echo\n    when: {{ msg_type: text }}\n    reply: {{ text: \"{{{{Content}}}}\" }}\n"
        ),
    );
    s
}

#[actix_web::test]
async fn user_text_comes_back_intact_inside_well_formed_xml() {
    let scratch = echo_rules("");
    let app = app(plain_state(scratch.sources())).await;
    for content in [
        "a ]]> b",
        "]]>]]>",
        "<b>bold</b> & &amp; \"quotes\" 'single'",
        "emoji 😀🎉 中文",
        "{{not a template}}",
    ] {
        let xml = fixture("msg_text").replace("<![CDATA[this is a test]]>", &{
            let mut s = String::new();
            wxrules::wire::push_cdata(&mut s, content);
            s
        });
        let (status, body) = post(&app, &signed_query(), xml).await;
        assert_eq!(status, 200);
        let reply = Message::parse(body.as_bytes()).expect("well-formed reply");
        assert_eq!(reply.text("Content"), Some(content), "{body}");
    }
}

#[actix_web::test]
async fn a_template_failing_at_render_time_answers_success() {
    let scratch = Scratch::new("renderfail");
    scratch.write(
        "rules.yaml",
        // A field some text messages carry (a menu reply's) and this one lacks.
        "rules:\n  - name: broken\n    when: { msg_type: text }\n    reply: { text: \"{{bizmsgmenuid}}\" }\n",
    );
    let app = app(plain_state(scratch.sources())).await;
    let (status, body) = post(&app, &signed_query(), fixture("msg_text")).await;
    assert_eq!((status, body.as_str()), (200, "success"));
}

#[actix_web::test]
async fn no_matching_rule_answers_success() {
    let scratch = Scratch::new("nomatch");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: only-events\n    when: { msg_type: event }\n    reply: { text: hi }\n",
    );
    let app = app(plain_state(scratch.sources())).await;
    let (status, body) = post(&app, &signed_query(), fixture("msg_text")).await;
    assert_eq!((status, body.as_str()), (200, "success"));
}

#[actix_web::test]
async fn unknown_kinds_are_routable_through_fields() {
    let scratch = Scratch::new("unknown");
    scratch.write(
        "rules.yaml",
        r#"rules:
  - name: new-event
    when: { event: brand_new_event, fields: { Detail.Kind: { prefix: gold } } }
    reply: { text: "kind {{Detail.Kind}}, {{#each Detail.Items}}[{{this}}]{{/each}}" }
  - name: new-type
    when: { msg_type: miniprogrampage, fields: { Title: { contains: shop } } }
    reply: { text: "{{Title}} {{AppId}}" }
"#,
    );
    let app = app(plain_state(scratch.sources())).await;
    let event = "<xml><ToUserName>gh_1</ToUserName><FromUserName>o_1</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>Brand_New_Event</Event>\
        <Detail><Kind>golden</Kind><Items><item>a</item><item>b</item></Items></Detail></xml>";
    let (status, body) = post(&app, &signed_query(), event).await;
    assert_eq!(status, 200);
    assert!(body.contains("<![CDATA[kind golden, [a][b]]]>"), "{body}");
    let page = "<xml><ToUserName>gh_1</ToUserName><FromUserName>o_1</FromUserName>\
        <CreateTime>1</CreateTime><MsgType>miniprogrampage</MsgType><MsgId>18446744073709551615</MsgId>\
        <Title><![CDATA[my shop]]></Title><AppId>wx123</AppId></xml>";
    let (status, body) = post(&app, &signed_query(), page).await;
    assert_eq!(status, 200);
    assert!(body.contains("<![CDATA[my shop wx123]]>"), "{body}");
}

#[actix_web::test]
async fn url_check_answers_echostr_when_signed() {
    let app = app(plain_state(shipped())).await;
    let req = test::TestRequest::get()
        .uri(&format!(
            "/wechat?{}&echostr=5838479218127813673",
            signed_query()
        ))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(test::read_body(resp).await, "5838479218127813673");

    let req = test::TestRequest::get()
        .uri("/wechat?timestamp=1&nonce=2&signature=bad&echostr=x")
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(test::read_body(resp).await, "");
}

#[actix_web::test]
async fn bad_requests_get_a_clear_status() {
    let app = app(plain_state(shipped())).await;
    let ts = NOW.to_string();
    let good = signed_query();
    let wrong_nonce = format!(
        "timestamp={ts}&nonce=other&signature={}",
        sign(&[TOKEN, &ts, "1320562132"])
    );
    let wrong_token = format!(
        "timestamp={ts}&nonce=n&signature={}",
        sign(&["other-token", &ts, "n"])
    );
    let old = (NOW - 301).to_string();
    let stale = format!(
        "timestamp={old}&nonce=n&signature={}",
        sign(&[TOKEN, &old, "n"])
    );
    let future = (NOW + 301).to_string();
    let ahead = format!(
        "timestamp={future}&nonce=n&signature={}",
        sign(&[TOKEN, &future, "n"])
    );
    let text = fixture("msg_text");
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("no query", String::new(), text.clone().into(), 403, ""),
        (
            "no signature",
            format!("timestamp={ts}&nonce=n"),
            text.clone().into(),
            403,
            "",
        ),
        ("wrong nonce", wrong_nonce, text.clone().into(), 403, ""),
        ("wrong token", wrong_token, text.clone().into(), 403, ""),
        ("stale timestamp", stale, text.clone().into(), 403, ""),
        ("future timestamp", ahead, text.clone().into(), 403, ""),
        ("empty body", good.clone(), Vec::new(), 400, "empty body"),
        (
            "not xml",
            good.clone(),
            b"hello".to_vec(),
            400,
            "malformed XML",
        ),
        (
            "truncated",
            good.clone(),
            text.as_bytes()[..40].to_vec(),
            400,
            "malformed XML",
        ),
        (
            "doctype",
            good.clone(),
            b"<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml>&x;</xml>".to_vec(),
            400,
            "DOCTYPE declarations are not accepted",
        ),
        (
            "no MsgType",
            good.clone(),
            text.replace("<MsgType><![CDATA[text]]></MsgType>", "")
                .into(),
            400,
            "missing required field `MsgType`",
        ),
        (
            "bad CreateTime",
            good.clone(),
            text.replace("1348831860", "yesterday").into(),
            400,
            "field `CreateTime` is not a number: `yesterday`",
        ),
        (
            "MsgId past 64 bits",
            good.clone(),
            text.replace("1234567890123456", "18446744073709551616")
                .into(),
            400,
            "field `MsgId` is not a number",
        ),
        (
            "invalid utf-8",
            good.clone(),
            text.replace("this is a test", "\u{1}")
                .replace('\u{1}', "\u{FFFD}")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 0xEF { 0xFF } else { b })
                .collect(),
            400,
            "malformed XML",
        ),
        (
            "over 64 KiB",
            good.clone(),
            text.replace("this is a test", &"x".repeat(70 * 1024))
                .into(),
            413,
            "",
        ),
    ];
    for (name, query, body, status, says) in cases {
        let (got, text) = post(&app, &query, body).await;
        assert_eq!(got, status, "{name}: {text}");
        assert!(
            text.starts_with(says),
            "{name}: {text:?} does not start with {says:?}"
        );
    }
}

#[actix_web::test]
async fn max_age_zero_accepts_old_timestamps() {
    let state = state_for(
        shipped(),
        wxrules::accounts::Secrets::new(TOKEN, None).unwrap(),
        wxrules::server::Options {
            max_age: 0,
            ..Default::default()
        },
    );
    let app = app(state).await;
    let query = format!(
        "timestamp=1409735669&nonce=n&signature={}",
        sign(&[TOKEN, "1409735669", "n"])
    );
    let (status, _) = post(&app, &query, fixture("msg_text")).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn healthz_names_the_live_rules() {
    let app = app(plain_state(shipped())).await;
    let req = test::TestRequest::get().uri("/healthz").to_request();
    let health: serde_json::Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["rules"], 23);
    assert_eq!(health["loaded_at"], "2026-11-27T00:00:00Z");
    assert_eq!(health["digest"].as_str().map(str::len), Some(16));
}

/// WeChat's subscribe_msg_sent_event with one template (one `<List>`): a template that loops
/// over the list answers it, as it answers one with two.
#[actix_web::test]
async fn a_list_of_one_is_looped_over_like_a_list_of_two() {
    let scratch = Scratch::new("list-of-one");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: sent\n    when: { event: subscribe_msg_sent_event }\n    reply: { text: \"{{#each SubscribeMsgSentEvent.List}}{{TemplateId}}:{{ErrorStatus}};{{/each}}\" }\n  - name: popup\n    when: { event: subscribe_msg_popup_event }\n    reply: { text: \"{{#each SubscribeMsgPopupEvent.List}}{{SubscribeStatusString}};{{/each}} first {{SubscribeMsgPopupEvent.List.0.SubscribeStatusString}}\" }\n  - name: by-field\n    when: { fields: { SubscribeMsgChangeEvent.List.0.SubscribeStatusString: reject } }\n    reply: { text: \"rejected {{SubscribeMsgChangeEvent.List.0.TemplateId}}\" }\n",
    );
    let app = app(plain_state(scratch.sources())).await;
    let (status, body) = post(&app, &signed_query(), fixture("event_subscribe_msg_sent")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "<Content><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc:success;]]></Content>"
        ),
        "{body}"
    );
    let (_, body) = post(&app, &signed_query(), fixture("event_subscribe_msg_popup")).await;
    assert!(
        body.contains("<Content><![CDATA[accept;reject; first accept]]></Content>"),
        "{body}"
    );
    let (_, body) = post(&app, &signed_query(), fixture("event_subscribe_msg_change")).await;
    assert!(
        body.contains(
            "<Content><![CDATA[rejected VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></Content>"
        ),
        "{body}"
    );
}

/// The rest of WeChat's repeatable elements, sent once: one published article, one refused
/// article, one device nearby. Each was an object (or a text) with one element, so
/// `{{#each}}` walked the wrong thing or failed, and the user got nothing.
#[actix_web::test]
async fn every_repeatable_element_sent_once_is_looped_over() {
    let scratch = Scratch::new("lists-of-one");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: published\n    when: { event: PUBLISHJOBFINISH, fields: { PublishEventInfo.publish_status: \"0\" } }\n    reply: { text: \"{{#each PublishEventInfo.article_detail.item}}{{idx}}={{article_url}};{{/each}}\" }\n  - name: refused\n    when: { event: PUBLISHJOBFINISH }\n    reply: { text: \"refused:{{#each PublishEventInfo.fail_idx}} {{this}}{{/each}}\" }\n  - name: shake\n    when: { event: ShakearoundUserShake }\n    reply: { text: \"{{#each AroundBeacons.AroundBeacon}}{{Distance}};{{/each}}\" }\n",
    );
    let app = app(plain_state(scratch.sources())).await;
    for (name, reply) in [
        ("event_publishjobfinish", "1=ARTICLE_URL;"),
        ("event_publishjobfinish_fail_one", "refused: 1"),
        ("event_publishjobfinish_fail", "refused: 1 2"),
        ("event_shakearound_user_shake_one", "166.816;"),
        ("event_shakearound_user_shake", "166.816;15.013;"),
    ] {
        let (status, body) = post(&app, &signed_query(), fixture(name)).await;
        assert_eq!(status, 200, "{name}");
        assert!(
            body.contains(&format!("<Content><![CDATA[{reply}]]></Content>")),
            "{name}: {body}"
        );
    }
}

/// A push written with whitespace between its tags and their CDATA (several SDKs' fixtures,
/// hand-made tools) is read as WeChat meant it: `MsgType` is `event`, not ` event `, so a
/// `msg_type: event` rule answers, and the reply goes to the user, not to ` oZI8Fj… `.
#[actix_web::test]
async fn whitespace_around_cdata_is_not_part_of_the_value() {
    let scratch = Scratch::new("cdata-space");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: menu\n    when: { msg_type: event, event: CLICK, event_key: V1001 }\n    reply: { text: \"hi {{FromUserName}}\" }\n",
    );
    let app = app(plain_state(scratch.sources())).await;
    let xml = "<xml>\n  <ToUserName> <![CDATA[gh_1]]> </ToUserName>\n  <FromUserName>\n    <![CDATA[oZI8Fj040-be6rlDohc6gkoPOQTQ]]>\n  </FromUserName>\n  <CreateTime> 1348831860 </CreateTime>\n  <MsgType> <![CDATA[event]]> </MsgType>\n  <Event> <![CDATA[CLICK]]> </Event>\n  <EventKey> <![CDATA[V1001]]> </EventKey>\n</xml>";
    let (status, body) = post(&app, &signed_query(), xml).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<ToUserName><![CDATA[oZI8Fj040-be6rlDohc6gkoPOQTQ]]></ToUserName>"),
        "{body}"
    );
    assert!(
        body.contains("<Content><![CDATA[hi oZI8Fj040-be6rlDohc6gkoPOQTQ]]></Content>"),
        "{body}"
    );
}

/// What phones type meets what ops wrote: full-width letters and digits, ASCII case and
/// surrounding punctuation are folded away for keyword criteria; templates see the raw text.
#[actix_web::test]
async fn keywords_fold_full_width_forms_case_and_punctuation() {
    let scratch = Scratch::new("folding");
    scratch.write(
        "rules.yaml",
        r#"rules:
  - name: order
    when: { keyword: { regex: '^订单\s*(?P<order>\d{4,})$' } }
    reply: { text: "order {{captures.order}} from {{Content}}" }
  - name: price
    when: { keyword: [价格, price] }
    reply: { text: "price for {{Content}}" }
  - name: coupon
    when: { keyword: { prefix: ＶＩＰ } }
    reply: { text: "vip" }
"#,
    );
    let app = app(plain_state(scratch.sources())).await;
    let text = |content: &str, id: u64| {
        format!(
            "<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[oU]]></FromUserName>\
             <CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[{content}]]></Content><MsgId>{id}</MsgId></xml>"
        )
    };
    for (i, (typed, reply)) in [
        ("价格！", "price for 价格！"),
        ("「价格」", "price for 「价格」"),
        ("ＰＲＩＣＥ", "price for ＰＲＩＣＥ"),
        (" Price? ", "price for  Price? "),
        (
            "订单２０２６１１３０",
            "order 20261130 from 订单２０２６１１３０",
        ),
        ("vip会员", "vip"),
        ("ｖｉｐ会员", "vip"),
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = post(&app, &signed_query(), text(typed, 100 + i as u64)).await;
        assert_eq!(status, 200);
        assert!(
            body.contains(&format!("<Content><![CDATA[{reply}]]></Content>")),
            "{typed}: {body}"
        );
    }
    let (_, body) = post(&app, &signed_query(), text("价格表", 200)).await;
    assert_eq!(body, "success");
}
