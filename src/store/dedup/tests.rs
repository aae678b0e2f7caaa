//! The dedup store's own tests: keys, the Redis encoding of answers, waiting retries,
//! abandoned attempts, the TTL, the byte capacity, and `off`.

use super::*;

fn message(xml: &str) -> Message {
    Message::parse(xml.as_bytes()).unwrap()
}

fn answer(body: &str) -> Arc<Answer> {
    Arc::new(Answer {
        content_type: "text/xml".into(),
        body: body.into(),
        rule: Some("r".into()),
        joined: false,
    })
}

/// Claims `key`, which must be this attempt's to answer.
async fn first<'a>(dedup: &'a Dedup, key: &Key, why: &str) -> Ticket<'a> {
    match dedup.claim(key).await {
        Claim::First(ticket) => ticket,
        Claim::Answered { .. } => panic!("{why}"),
    }
}

/// Starts a retry of `key` and checks that it waits (for an attempt still answering).
async fn waiting_retry<'a>(
    dedup: &'a Dedup,
    key: &'a Key,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Claim<'a>> + 'a>> {
    let mut retry = Box::pin(dedup.claim(key));
    assert!(tokio::time::timeout(Duration::from_millis(20), &mut retry)
        .await
        .is_err());
    retry
}

const TEXT: &str = "<xml><ToUserName>gh_a</ToUserName><FromUserName>o:1</FromUserName>\
    <CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content>hi</Content>\
    <MsgId>42</MsgId></xml>";
const CLICK: &str = "<xml><ToUserName>gh_a</ToUserName><FromUserName>o1</FromUserName>\
    <CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>CLICK</Event>\
    <EventKey>K:1</EventKey></xml>";

#[test]
fn keys_are_namespaced_by_account_and_escape_separators() {
    assert_eq!(
        Key::for_message(&message(TEXT)).as_str(),
        "wxrules:dedup:gh_a:msg:42"
    );
    assert_eq!(
        Key::for_message(&message(CLICK)).as_str(),
        "wxrules:dedup:gh_a:event:o1:1700000000:CLICK:K%3A1"
    );
    let escaped = CLICK.replace("K:1", "50%:x");
    assert_eq!(
        Key::for_message(&message(&escaped)).as_str(),
        "wxrules:dedup:gh_a:event:o1:1700000000:CLICK:50%25%3Ax"
    );
    let other_account = TEXT.replace("gh_a", "gh_b");
    assert_ne!(
        Key::for_message(&message(TEXT)),
        Key::for_message(&message(&other_account))
    );
}

#[test]
fn answers_survive_the_redis_encoding() {
    let a = Answer {
        content_type: "text/plain; charset=utf-8".into(),
        body: "<xml>\"]]>\n😀</xml>".into(),
        rule: None,
        joined: false,
    };
    assert_eq!(Answer::decode(a.encode().as_bytes()), Some(a.clone()));
    let joined = Answer { joined: true, ..a };
    assert_eq!(Answer::decode(joined.encode().as_bytes()), Some(joined));
    assert_eq!(Answer::decode(PENDING), None);
}

#[tokio::test]
async fn a_retry_waits_for_the_first_attempt_and_gets_its_answer() {
    let dedup = Dedup::new(Config::default(), Metrics::new());
    let key = Key::for_message(&message(TEXT));
    let ticket = first(&dedup, &key, "the first attempt must get the ticket").await;
    // The retry is still waiting while the first attempt has not answered.
    let retry = waiting_retry(&dedup, &key).await;
    ticket.complete(answer("first")).await;
    let Claim::Answered { answer: got, store } = retry.await else {
        panic!("the retry must get the first answer");
    };
    assert_eq!((&*got.body, store), ("first", Tier::Memory));
}

#[tokio::test]
async fn an_abandoned_attempt_hands_the_key_to_a_waiter() {
    let dedup = Dedup::new(Config::default(), Metrics::new());
    let key = Key::for_message(&message(CLICK));
    let ticket = first(&dedup, &key, "a new key is this attempt's to answer").await;
    let retry = waiting_retry(&dedup, &key).await;
    drop(ticket);
    let Claim::First(second) = retry.await else {
        panic!("the waiter must take over the abandoned key");
    };
    second.complete(answer("second")).await;
    assert!(matches!(
        dedup.claim(&key).await,
        Claim::Answered { answer, .. } if answer.body == "second"
    ));
}

#[tokio::test]
async fn of_many_concurrent_attempts_exactly_one_answers_and_all_get_its_answer() {
    let dedup = Arc::new(Dedup::new(Config::default(), Metrics::new()));
    let key = Key::for_message(&message(TEXT));
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (dedup, key) = (Arc::clone(&dedup), key.clone());
        attempts.spawn(async move {
            match dedup.claim(&key).await {
                Claim::First(ticket) => {
                    // Let the others queue up behind this attempt first.
                    tokio::task::yield_now().await;
                    ticket.complete(answer(&format!("from {i}"))).await;
                    (true, format!("from {i}"))
                }
                Claim::Answered { answer, .. } => (false, answer.body.to_string()),
            }
        });
    }
    let results = attempts.join_all().await;
    let firsts: Vec<_> = results.iter().filter(|(first, _)| *first).collect();
    assert_eq!(firsts.len(), 1, "{results:?}");
    assert!(results.iter().all(|(_, body)| *body == firsts[0].1));
}

#[tokio::test]
async fn an_answer_older_than_the_ttl_counts_as_absent_and_sweep_drops_it() {
    let config = Config {
        ttl: Duration::from_millis(50),
        ..Config::default()
    };
    let dedup = Dedup::new(config, Metrics::new());
    let key = Key::for_message(&message(TEXT));
    let ticket = first(&dedup, &key, "a new key is this attempt's to answer").await;
    ticket.complete(answer("old")).await;
    assert!(matches!(dedup.claim(&key).await, Claim::Answered { .. }));
    let other = Key::for_message(&message(CLICK));
    let ticket = first(&dedup, &other, "a new key is this attempt's to answer").await;
    ticket.complete(answer("other")).await;
    assert_eq!(dedup.stored().0, 2);

    tokio::time::sleep(Duration::from_millis(60)).await;
    dedup.sweep();
    assert_eq!(dedup.stored(), (0, 0), "sweep keeps nothing expired");
    // Expired before a sweep, too: the next attempt answers afresh.
    let ticket = first(&dedup, &key, "an expired answer must not be served").await;
    ticket.complete(answer("new")).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let ticket = first(&dedup, &key, "an expired answer must not be served").await;
    drop(ticket);
}

#[tokio::test]
async fn the_store_stays_within_its_byte_capacity() {
    let config = Config {
        capacity: 256 * 1024,
        ..Config::default()
    };
    let dedup = Dedup::new(config, Metrics::new());
    let body = "x".repeat(1024);
    for id in 0..2000 {
        let xml = TEXT.replace("<MsgId>42", &format!("<MsgId>{id}"));
        let ticket = first(
            &dedup,
            &Key::for_message(&message(&xml)),
            "every MsgId is new",
        )
        .await;
        ticket.complete(answer(&body)).await;
    }
    let (count, bytes) = dedup.stored();
    assert!(bytes <= 256 * 1024, "{bytes} bytes stored");
    assert!(count > 50, "only {count} answers kept");
}

#[tokio::test]
async fn a_large_answer_in_a_small_store_still_reaches_the_waiting_retry() {
    let config = Config {
        capacity: 64 * 1024,
        ..Config::default()
    };
    let dedup = Dedup::new(config, Metrics::new());
    let key = Key::for_message(&message(TEXT));
    let ticket = first(&dedup, &key, "a new key is this attempt's to answer").await;
    let retry = waiting_retry(&dedup, &key).await;
    ticket.complete(answer(&"x".repeat(40 * 1024))).await;
    assert!(
        matches!(retry.await, Claim::Answered { .. }),
        "the retry must get the first answer, not run the rules again"
    );
}

#[tokio::test]
async fn off_never_answers_from_a_store() {
    let dedup = Dedup::off(Metrics::new());
    let key = Key::for_message(&message(TEXT));
    for _ in 0..2 {
        let ticket = first(&dedup, &key, "off must always run the rules").await;
        ticket.complete(answer("x")).await;
    }
}
