//! Conversations through the real App: a phone number bound over several messages (a wrong
//! answer asked again, the right one kept in `state.vars`, a tap on a choice), a state that
//! expires and says so once, the cancel word, choices by tap and by typing, a service's
//! answer kept in the state, two instances sharing a conversation through Redis, the bound
//! on states, and a WeChat retry that does not move a conversation twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::backend::Backend;
use common::redis_server::{touching, Monitor, RedisServer};
use common::*;
use wxrules::accounts::Secrets;
use wxrules::clock::ManualClock;
use wxrules::server::{AppState, Options};
use wxrules::store::conversation::Conversations;
use wxrules::store::dedup;

/// The conversation rules, their calls sent to `backend` (or to a port nothing serves).
fn rules(backend: Option<&Backend>) -> Scratch {
    let scratch = Scratch::new("conversation");
    let text = std::fs::read_to_string(root().join("tests/data/conversation/rules.yaml")).unwrap();
    let text = match backend {
        Some(backend) => text.replace("http://127.0.0.1:9", &backend.base()),
        None => text,
    };
    scratch.write("rules.yaml", &text);
    scratch
}

/// A text from `user`, tapped on choice `choice` when given.
fn text(user: &str, content: &str, msg_id: u64, choice: Option<&str>) -> String {
    let tapped = choice.map_or(String::new(), |id| {
        format!("<bizmsgmenuid>{id}</bizmsgmenuid>")
    });
    format!(
        "<xml><ToUserName><![CDATA[gh_talk]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>\
         <CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId>{tapped}</xml>"
    )
}

/// The text of a reply (or `success`).
fn said(body: &str) -> String {
    match (body.find("<Content><![CDATA["), body.rfind("]]></Content>")) {
        (Some(start), Some(end)) => body[start + 18..end].to_owned(),
        _ => body.to_owned(),
    }
}

/// One instance: retries deduplicated in process, states on `clock` (and in Redis when
/// given), at most `bound` users in a state.
fn instance(scratch: &Scratch, clock: &Arc<ManualClock>, redis: Option<&RedisServer>) -> AppState {
    let store = match redis {
        Some(redis) => redis.url().parse().unwrap(),
        None => dedup::Config::default().store,
    };
    let mut state = state_with_dedup(
        scratch.sources(),
        Secrets::new(TOKEN, None).unwrap(),
        Options {
            max_age: 0,
            ..Options::default()
        },
        Some(dedup::Config {
            store,
            ..dedup::Config::default()
        }),
    );
    state.clock = clock.clone();
    state.conversations = Arc::new(Conversations::new(clock.clone(), state.dedup.redis()));
    state
}

/// Pushes as one user, a new MsgId each.
struct User<'a, S> {
    app: &'a S,
    id: &'a str,
    msg_id: u64,
}

impl<S> User<'_, S>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    async fn says(&mut self, content: &str) -> String {
        self.taps(content, None).await
    }

    async fn taps(&mut self, content: &str, choice: Option<&str>) -> String {
        self.msg_id += 1;
        let push = text(self.id, content, self.msg_id, choice);
        said(&post(self.app, &signed_query(), push).await.1)
    }
}

fn user<'a, S>(app: &'a S, id: &'a str) -> User<'a, S> {
    // MsgIds apart per user, so that users never share one.
    let msg_id = id.bytes().map(u64::from).sum::<u64>() * 1_000_000;
    User { app, id, msg_id }
}

#[actix_web::test]
async fn a_phone_number_is_bound_over_several_messages() {
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let app = app(instance(&scratch, &clock, None)).await;
    let mut u = user(&app, "oBind");
    assert_eq!(u.says("绑定手机").await, "请回复手机号");
    // A wrong answer is asked again, counted.
    assert_eq!(u.says("12345").await, "不是手机号，第 1 次");
    assert_eq!(u.says("abc").await, "不是手机号，第 2 次");
    // The right one: kept in the state, and the choices as WeChat's tap-to-answer links.
    let confirm = u.says("13800138000").await;
    assert_eq!(
        confirm,
        "确认绑定 13800138000？\n<a href=\"weixin://bizmsgmenu?msgmenucontent=是&msgmenuid=1\">是</a>\n<a href=\"weixin://bizmsgmenu?msgmenucontent=否&msgmenuid=2\">否</a>"
    );
    // The tap comes back as the choice's text with its id.
    assert_eq!(
        u.taps("是", Some("1")).await,
        "点选确认，已绑定 13800138000"
    );
    // The conversation is over: the catch-all answers.
    assert_eq!(u.says("13800138000").await, "默认：13800138000");
    // Another user was never in it.
    let mut other = user(&app, "oOther");
    assert_eq!(other.says("12345").await, "默认：12345");
    // Three wrong answers end it.
    assert_eq!(other.says("绑定手机").await, "请回复手机号");
    other.says("a").await;
    other.says("b").await;
    assert_eq!(other.says("c").await, "次数过多");
    assert_eq!(other.says("d").await, "默认：d");
}

#[actix_web::test]
async fn a_state_that_expired_says_so_on_the_next_message_once() {
    expires_and_says_so(None).await;
}

#[actix_web::test]
async fn with_redis_a_state_that_expired_says_so_on_the_next_message_once() {
    let redis = RedisServer::start();
    expires_and_says_so(Some(&redis)).await;
}

/// A user's state expires, a location report leaves its `on_expire` for the next message,
/// which gets it, once (states in process, or in `redis`: there the state is read in the
/// claim's round trip, and a user found in one is answered again knowing it).
async fn expires_and_says_so(redis: Option<&RedisServer>) {
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let instance = instance(&scratch, &clock, redis);
    instance.dedup.connect().await;
    let app = app(instance).await;
    let mut u = user(&app, "oLate");
    u.says("绑定手机").await;
    clock.advance(9 * 60);
    assert_eq!(
        u.says("x").await,
        "不是手机号，第 1 次",
        "still on at 9 minutes"
    );
    clock.advance(2 * 60);
    // A location report meanwhile is no message of the user's: it leaves the word for one.
    let location = format!(
        "<xml><ToUserName><![CDATA[gh_talk]]></ToUserName><FromUserName><![CDATA[oLate]]></FromUserName>\
         <CreateTime>{NOW}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[LOCATION]]></Event>\
         <Latitude>23.1</Latitude><Longitude>113.3</Longitude><Precision>119.4</Precision></xml>"
    );
    let (status, _) = post(&app, &signed_query(), location).await;
    assert_eq!(status, 200);
    assert_eq!(
        u.says("13800138000").await,
        "绑定已超时（bind_phone），请重新开始"
    );
    assert_eq!(
        u.says("13800138000").await,
        "默认：13800138000",
        "said once"
    );
}

#[actix_web::test]
async fn the_cancel_word_leaves_any_state() {
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let app = app(instance(&scratch, &clock, None)).await;
    let mut u = user(&app, "oCancel");
    // Not in a state: `cancel` is for users in one.
    assert_eq!(u.says("取消").await, "默认：取消");
    u.says("绑定手机").await;
    assert_eq!(u.says("取消").await, "已取消");
    assert_eq!(u.says("13800138000").await, "默认：13800138000");
    u.says("绑定手机").await;
    u.says("13800138000").await;
    assert_eq!(
        u.says("cancel").await,
        "已取消",
        "from the second state too"
    );
}

#[actix_web::test]
async fn choices_are_matched_by_tap_and_by_typing() {
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let app = app(instance(&scratch, &clock, None)).await;
    let mut u = user(&app, "oChoice");
    u.says("绑定手机").await;
    u.says("13800138000").await;
    // Typed, the text matches the keyword rule; `choice: "1"` needs the tap.
    assert_eq!(u.says("是").await, "输入确认，已绑定 13800138000");
    u.says("绑定手机").await;
    u.says("13900139000").await;
    assert_eq!(u.says("否").await, "请点选");
    assert_eq!(
        u.taps("是", Some("1")).await,
        "点选确认，已绑定 13900139000"
    );
}

#[actix_web::test]
async fn a_services_answer_is_kept_in_the_state() {
    let backend = Backend::start();
    let scratch = rules(Some(&backend));
    let clock = Arc::new(ManualClock::new(NOW));
    let app = app(instance(&scratch, &clock, None)).await;
    let mut u = user(&app, "oOrder");
    assert_eq!(u.says("订单123").await, "订单 123：已发货，回复「详情」");
    assert_eq!(u.says("详情").await, "订单 123 的详情：已发货");
    // The state is the user's: the call's request carried no state yet, the next one does.
    assert_eq!(u.says("订单456").await, "订单 456：已发货，回复「详情」");
    let bodies: Vec<serde_json::Value> = backend.received().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].get("state").is_none(), "{}", bodies[0]);
    assert_eq!(bodies[1]["state"]["name"], "order");
    assert_eq!(bodies[1]["state"]["vars"]["order"], "123");
}

#[actix_web::test]
async fn two_instances_on_one_redis_share_a_conversation() {
    let redis = RedisServer::start();
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let (one, two) = (
        instance(&scratch, &clock, Some(&redis)),
        instance(&scratch, &clock, Some(&redis)),
    );
    one.dedup.connect().await;
    two.dedup.connect().await;
    let (one, two) = (app(one).await, app(two).await);
    let mut on_one = user(&one, "oShared");
    let mut on_two = user(&two, "oShared");
    on_two.msg_id += 500_000;
    assert_eq!(on_one.says("绑定手机").await, "请回复手机号");
    assert_eq!(on_two.says("x").await, "不是手机号，第 1 次");
    assert!(on_one.says("13800138000").await.starts_with("确认绑定"));
    let kept: serde_json::Value =
        serde_json::from_str(&redis.get("wxrules:conv:oShared").unwrap()).unwrap();
    assert_eq!(kept["state"], "confirm");
    assert_eq!(kept["vars"]["phone"], "13800138000");
    assert_eq!(
        on_two.taps("是", Some("1")).await,
        "点选确认，已绑定 13800138000"
    );
    assert_eq!(redis.get("wxrules:conv:oShared"), None, "cleared for both");
    assert_eq!(on_one.says("是").await, "默认：是");
}

#[actix_web::test]
async fn states_are_bounded_per_account_the_least_recent_out_first() {
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let mut state = instance(&scratch, &clock, None);
    state.conversations = Arc::new(Conversations::new(clock.clone(), None).bounded(2));
    let app = app(state).await;
    let (mut a, mut b, mut c) = (user(&app, "oA"), user(&app, "oB"), user(&app, "oC"));
    a.says("绑定手机").await;
    b.says("绑定手机").await;
    c.says("绑定手机").await;
    // oA was set least recently: out of the state, counted.
    assert_eq!(a.says("x").await, "默认：x");
    assert_eq!(b.says("x").await, "不是手机号，第 1 次");
    assert_eq!(c.says("x").await, "不是手机号，第 1 次");
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, "wxrules_states_evicted_total"), Some(1.0));
}

#[actix_web::test]
async fn a_wechat_retry_inside_a_flow_does_not_move_it_twice() {
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let app = app(instance(&scratch, &clock, None)).await;
    let mut u = user(&app, "oRetry");
    u.says("绑定手机").await;
    // WeChat sends the same push three times: one answer, one try counted.
    let push = text("oRetry", "x", 77, None);
    let first = said(&post(&app, &signed_query(), push.clone()).await.1);
    let second = said(&post(&app, &signed_query(), push.clone()).await.1);
    let third = said(&post(&app, &signed_query(), push).await.1);
    assert_eq!(first, "不是手机号，第 1 次");
    assert_eq!(
        (second.as_str(), third.as_str()),
        (first.as_str(), first.as_str())
    );
    assert_eq!(u.says("y").await, "不是手机号，第 2 次");
    // A retry of the answer that moved the state on does not move it again either.
    let push = text("oRetry", "13800138000", 78, None);
    post(&app, &signed_query(), push.clone()).await;
    let again = said(&post(&app, &signed_query(), push).await.1);
    assert!(again.starts_with("确认绑定"), "{again}");
    assert_eq!(
        u.taps("是", Some("1")).await,
        "点选确认，已绑定 13800138000"
    );
}

#[actix_web::test]
async fn with_redis_a_user_with_nothing_waiting_costs_one_round_trip() {
    let redis = RedisServer::start();
    // These rules converse, and call a service: an answer may be kept for a user
    // (`server::slow`), so that every text asks for one too.
    let scratch = rules(None);
    let clock = Arc::new(ManualClock::new(NOW));
    let instance = instance(&scratch, &clock, Some(&redis));
    assert!(instance.dedup.connect().await);
    let app = app(instance).await;
    let mut u = user(&app, "oTrips");
    // The first push loads the scripts (`NOSCRIPT`, `SCRIPT LOAD`, `EVALSHA` again).
    assert_eq!(u.says("你好").await, "默认：你好");
    let monitor = Monitor::start(&redis);
    let _ = monitor.take();

    // A user in no state and with no answer kept, a rule that only answers: the claim's
    // script reads the state and looks for a kept answer, claims the MsgId and stores the
    // answer, one command.
    assert_eq!(u.says("在吗").await, "默认：在吗");
    let seen = monitor.take();
    let ours = touching(&seen, "wxrules:");
    assert_eq!(ours.len(), 1, "one command: {seen:#?}");
    assert!(ours[0].contains("\"EVALSHA\""), "{seen:#?}");
    assert!(ours[0].contains("\"wxrules:conv:oTrips\""), "{seen:#?}");
    assert!(ours[0].contains("\"wxrules:kept:oTrips\""), "{seen:#?}");

    // A rule that sets a state acts: its user's state is read first, then the push is
    // claimed, then the state and the answer written.
    assert_eq!(u.says("绑定手机").await, "请回复手机号");
    let _ = monitor.take();
    // In a state: the claim's script finds it (claiming nothing), and the push is answered
    // knowing it: claimed, a kept answer looked for, its try counted, its answer stored.
    // The state is not read again.
    assert_eq!(u.says("x").await, "不是手机号，第 1 次");
    let seen = monitor.take();
    let ours = touching(&seen, "wxrules:");
    assert!(
        !ours.iter().any(|c| c.contains("\"GET\" \"wxrules:conv:")),
        "{seen:#?}"
    );
    assert_eq!(ours.len(), 5, "{seen:#?}");
    let kept: serde_json::Value =
        serde_json::from_str(&redis.get("wxrules:conv:oTrips").unwrap()).unwrap();
    assert_eq!(kept["tries"], 1);
}
