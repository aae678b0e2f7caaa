//! `cooldown:` through the real App: a rule that answered a user passes them over until its
//! cooldown ends, matching goes on with the next rules, other users are not affected; in
//! process with a clock the test moves, and in Redis shared by two instances.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use wxrules::accounts::Secrets;
use wxrules::clock::ManualClock;
use wxrules::server::{AppState, Options};
use wxrules::store::cooldown::Cooldowns;
use wxrules::store::dedup;

fn rules(cooldown: &str) -> Scratch {
    let scratch = Scratch::new("cooldown");
    scratch.write(
        "rules.yaml",
        &format!(
            "rules:\n  - name: price\n    when: {{ keyword: 价格 }}\n    reply: {{ text: 本周价格 }}\n  - name: default-reply\n    when: {{ msg_type: [text, voice, image] }}\n    cooldown: {cooldown}\n    reply: {{ text: \"收到～客服工作时间 9:00-18:00\" }}\n  - name: to-human\n    reply: {{ transfer_customer_service: {{}} }}\n"
        ),
    );
    scratch
}

fn text(user: &str, content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_cool]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>\
         <CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

fn kind(body: &str) -> &'static str {
    if body.contains("收到～") {
        "default"
    } else if body.contains("transfer_customer_service") {
        "human"
    } else if body.contains("本周价格") {
        "price"
    } else {
        "other"
    }
}

#[actix_web::test]
async fn a_cooling_rule_passes_the_user_over_until_the_clock_moves_past_it() {
    let scratch = rules("60m");
    let clock = Arc::new(ManualClock::new(NOW));
    // The replay window would refuse the signed query once the clock has moved an hour.
    let mut state = state_for(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options {
            max_age: 0,
            ..Options::default()
        },
    );
    state.clock = clock.clone();
    state.cooldowns = Arc::new(Cooldowns::new(clock.clone(), None));
    let app = app(state).await;
    let mut id = 0;
    let mut push = |user: &str, content: &str| {
        id += 1;
        text(user, content, id)
    };
    let (_, a1) = post(&app, &signed_query(), push("oA", "在吗")).await;
    assert_eq!(kind(&a1), "default");
    // Cooling for oA: matching goes on to the next rule.
    let (_, a2) = post(&app, &signed_query(), push("oA", "在吗？")).await;
    assert_eq!(kind(&a2), "human");
    // Other rules still answer oA, and other users get the default reply.
    let (_, a3) = post(&app, &signed_query(), push("oA", "价格")).await;
    assert_eq!(kind(&a3), "price");
    let (_, b1) = post(&app, &signed_query(), push("oB", "hello")).await;
    assert_eq!(kind(&b1), "default");
    // A burst from one user: one of them gets the default reply, the others go on.
    let (q1, q2, q3) = (signed_query(), signed_query(), signed_query());
    let (x, y, z) = tokio::join!(
        post(&app, &q1, push("oC", "在吗")),
        post(&app, &q2, push("oC", "你好")),
        post(&app, &q3, push("oC", "？"))
    );
    let defaults = [&x.1, &y.1, &z.1]
        .iter()
        .filter(|body| kind(body) == "default")
        .count();
    assert_eq!(defaults, 1);
    // 59 minutes on: still cooling; past the hour: the default reply again.
    clock.advance(59 * 60);
    let (_, a4) = post(&app, &signed_query(), push("oA", "hi")).await;
    assert_eq!(kind(&a4), "human");
    clock.advance(61);
    let (_, a5) = post(&app, &signed_query(), push("oA", "hi")).await;
    assert_eq!(kind(&a5), "default");
}

#[actix_web::test]
async fn instances_sharing_redis_share_cooldowns() {
    let redis = RedisServer::start();
    let scratch = rules("2s");
    let instance = || {
        let state: AppState = state_with_dedup(
            scratch.sources(),
            Secrets::new(TOKEN, None).unwrap(),
            Options::default(),
            Some(dedup::Config {
                store: redis.url().parse().unwrap(),
                ..dedup::Config::default()
            }),
        );
        state
    };
    let (one, two) = (instance(), instance());
    one.dedup.connect().await;
    two.dedup.connect().await;
    let (one, two) = (app(one).await, app(two).await);
    let (_, first) = post(&one, &signed_query(), text("oShared", "在吗", 1)).await;
    assert_eq!(kind(&first), "default");
    // The other instance knows: the user is cooling down there too.
    let (_, second) = post(&two, &signed_query(), text("oShared", "在吗", 2)).await;
    assert_eq!(kind(&second), "human");
    let key = "wxrules:cooldown:gh_cool:default-reply:oShared";
    assert_eq!(redis.get(key).as_deref(), Some("1"));
    // The key expires with the cooldown.
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(redis.get(key), None);
    let (_, third) = post(&two, &signed_query(), text("oShared", "在吗", 3)).await;
    assert_eq!(kind(&third), "default");
}

/// `active` windows through the real App, at the server's clock: overnight hours on
/// weekdays, a campaign's dates, and a file-wide `timezone`.
#[actix_web::test]
async fn active_windows_follow_the_servers_clock() {
    let scratch = Scratch::new("active");
    scratch.write(
        "rules.yaml",
        r#"timezone: Asia/Shanghai
rules:
  - name: off-hours
    when: { msg_type: text }
    active: { hours: ["18:00-09:00"], weekdays: [mon, tue, wed, thu, fri] }
    reply: { text: off-hours }
  - name: campaign
    when: { keyword: { contains: 双十一 } }
    active: { from: 2026-11-01, until: 2026-11-11T23:59:59 }
    reply: { text: campaign }
  - name: utc-morning
    when: { keyword: utc }
    active: { hours: ["00:00-01:00"], timezone: UTC }
    reply: { text: utc-morning }
  - name: open
    reply: { text: open }
"#,
    );
    // NOW is 2026-11-27T00:00:00Z: Friday 08:00 in Shanghai.
    let clock = Arc::new(ManualClock::new(NOW));
    let mut state = state_for(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options {
            max_age: 0,
            ..Options::default()
        },
    );
    state.clock = clock.clone();
    let app = app(state).await;
    let reply = |body: String| {
        let start = body.find("<Content><![CDATA[").map_or(0, |i| i + 18);
        let end = body.rfind("]]></Content>").unwrap_or(body.len());
        body[start..end].to_owned()
    };
    let mut id = 0;
    let mut ask = |content: &str| {
        id += 1;
        text("oTime", content, id)
    };
    assert_eq!(
        reply(post(&app, &signed_query(), ask("在吗")).await.1),
        "off-hours"
    );
    assert_eq!(
        reply(post(&app, &signed_query(), ask("utc")).await.1),
        "off-hours"
    );
    // 10:00 on Friday: working hours.
    clock.advance(2 * 3600);
    assert_eq!(
        reply(post(&app, &signed_query(), ask("在吗")).await.1),
        "open"
    );
    // The campaign ended on the 11th; `utc` at 02:00 UTC is outside its hour.
    assert_eq!(
        reply(post(&app, &signed_query(), ask("双十一")).await.1),
        "open"
    );
    assert_eq!(
        reply(post(&app, &signed_query(), ask("utc")).await.1),
        "open"
    );
    // Saturday 01:00 Shanghai (17:00 UTC Friday): the weekday is Saturday, not in the window.
    clock.advance(15 * 3600);
    assert_eq!(
        reply(post(&app, &signed_query(), ask("在吗")).await.1),
        "open"
    );
    // Saturday 00:30 UTC (08:30 Shanghai): the UTC rule's hour.
    clock.advance(7 * 3600 + 30 * 60);
    assert_eq!(
        reply(post(&app, &signed_query(), ask("utc")).await.1),
        "utc-morning"
    );
}
