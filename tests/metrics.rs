//! `GET /metrics` after known traffic: exact counts per rule and per outcome.
#![allow(clippy::unwrap_used)]

mod common;

use actix_web::test;
use common::*;

#[actix_web::test]
async fn per_rule_and_per_outcome_counts_are_exact() {
    let app = app(plain_state(shipped())).await;
    let text = |c: &str| fixture("msg_text").replace("this is a test", c);
    let mut traffic: Vec<(String, usize)> = vec![
        (text("价格"), 3),                                      // price
        (text("help"), 2),                                      // help
        (text("订单 123456"), 1),                               // order-status
        (fixture("event_subscribe"), 4),                        // welcome
        (fixture("event_view"), 2),                             // menu-view (ignored)
        (fixture("msg_image"), 1),                              // to-human
        (fixture("event_templatesendjobfinish_user_block"), 5), // template-blocked
    ];
    let mut sent = 0;
    for (xml, times) in traffic.drain(..) {
        for _ in 0..times {
            let (status, _) = post(&app, &signed_query(), xml.clone()).await;
            assert_eq!(status, 200);
            sent += 1;
        }
    }
    assert_eq!(sent, 18);
    // Refused requests: 2 bad signatures, 1 malformed body, 1 too large.
    post(
        &app,
        "timestamp=1&nonce=2&signature=bad",
        fixture("msg_text"),
    )
    .await;
    post(&app, "", fixture("msg_text")).await;
    post(&app, &signed_query(), "<xml>").await;
    let (status, _) = post(&app, &signed_query(), vec![b'x'; 70 * 1024]).await;
    assert_eq!(status, 413);

    let req = test::TestRequest::get().uri("/metrics").to_request();
    let resp = test::call_service(&app, req).await;
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let m = scrape(&app).await;
    let expect = [
        ("wxrules_rule_hits_total{rule=\"price\"}", 3.0),
        ("wxrules_rule_hits_total{rule=\"help\"}", 2.0),
        ("wxrules_rule_hits_total{rule=\"order-status\"}", 1.0),
        ("wxrules_rule_hits_total{rule=\"welcome\"}", 4.0),
        ("wxrules_rule_hits_total{rule=\"menu-view\"}", 2.0),
        ("wxrules_rule_hits_total{rule=\"to-human\"}", 1.0),
        ("wxrules_rule_hits_total{rule=\"template-blocked\"}", 5.0),
        ("wxrules_requests_total{outcome=\"replied\"}", 11.0),
        ("wxrules_requests_total{outcome=\"ignored\"}", 7.0),
        ("wxrules_requests_total{outcome=\"bad_signature\"}", 2.0),
        ("wxrules_requests_total{outcome=\"bad_request\"}", 2.0),
        ("wxrules_requests_total{outcome=\"error\"}", 0.0),
        (
            "wxrules_request_duration_seconds_count{outcome=\"replied\"}",
            11.0,
        ),
        (
            "wxrules_request_duration_seconds_count{outcome=\"ignored\"}",
            7.0,
        ),
        ("wxrules_rules_loaded", 23.0),
        ("wxrules_reloads_total{outcome=\"applied\"}", 0.0),
        ("wxrules_reloads_total{outcome=\"rejected\"}", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&m, series), Some(value), "{series} in\n{m}");
    }
    // Rules that saw no traffic have no series yet.
    assert_eq!(
        sample(&m, "wxrules_rule_hits_total{rule=\"discount\"}"),
        None
    );
}

#[actix_web::test]
async fn render_errors_are_counted_under_their_rule() {
    let scratch = Scratch::new("metrics-error");
    scratch.write(
        "rules.yaml",
        "rules:\n  - name: broken\n    reply: { text: \"{{Ticket}}\" }\n",
    );
    let app = app(plain_state(scratch.sources())).await;
    for _ in 0..3 {
        let (status, body) = post(&app, &signed_query(), fixture("msg_text")).await;
        assert_eq!((status, body.as_str()), (200, "success"));
    }
    let m = scrape(&app).await;
    assert_eq!(
        sample(&m, "wxrules_requests_total{outcome=\"error\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "wxrules_rule_hits_total{rule=\"broken\"}"),
        Some(3.0)
    );
}

#[actix_web::test]
async fn the_dedup_store_size_is_exposed() {
    let state = state_with_dedup(
        shipped(),
        wxrules::accounts::Secrets::new(TOKEN, None).unwrap(),
        wxrules::server::Options::default(),
        Some(wxrules::store::dedup::Config::default()),
    );
    let app = app(state).await;
    let m = scrape(&app).await;
    assert_eq!(sample(&m, "wxrules_dedup_stored_answers"), Some(0.0));
    assert_eq!(sample(&m, "wxrules_dedup_stored_bytes"), Some(0.0));
    let text = fixture("msg_text");
    for id in ["1", "2", "3"] {
        let xml = text.replace("1234567890123456", id);
        assert_ne!(xml, text, "the fixture's MsgId changed");
        let (status, _) = post(&app, &signed_query(), xml.clone()).await;
        assert_eq!(status, 200);
    }
    // A retry is answered from the store and stores nothing new.
    let (status, _) = post(&app, &signed_query(), text.replace("1234567890123456", "1")).await;
    assert_eq!(status, 200);
    let m = scrape(&app).await;
    assert_eq!(sample(&m, "wxrules_dedup_stored_answers"), Some(3.0));
    assert_eq!(
        sample(&m, "wxrules_dedup_hits_total{store=\"memory\"}"),
        Some(1.0)
    );
    let bytes = sample(&m, "wxrules_dedup_stored_bytes").unwrap();
    assert!((300.0..64.0 * 1024.0 * 1024.0).contains(&bytes), "{bytes}");
}
