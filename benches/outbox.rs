//! Outbox throughput: customer-service messages per second from `Outbox::enqueue` to a
//! fake of WeChat's API on 127.0.0.1 (the tests' `fake_wechat`), through the real API
//! client: token, JSON, HTTP keep-alive, 8 senders; in process, and through Redis Streams
//! (a redis-server of the bench's own on loopback).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wxrules::act::outbox::{Config, Outbox};
use wxrules::telemetry::metrics::Metrics;
use wxrules::wechat_api::{Api, Credentials, CustomMessage};
use wxrules::wire::Reply;

#[path = "../tests/common/fake_wechat.rs"]
#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
mod fake_wechat;

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
mod redis_server;

const MESSAGES: usize = 2_000;

/// Sends `MESSAGES` through a fresh outbox (in Redis with `redis`); the time from the first
/// enqueue to the last delivery.
fn run(
    fake: &fake_wechat::FakeWechat,
    base: &str,
    redis: Option<&Arc<wxrules::store::Link>>,
) -> Duration {
    let before = fake.delivered_count();
    actix_web::rt::System::new().block_on(async {
        let metrics = Metrics::new();
        let api = Api::new(
            base,
            Some(Credentials::new(fake_wechat::APPID, fake_wechat::SECRET)),
            metrics.clone(),
        )
        .expect("client");
        let api = Arc::new(api);
        let (outbox, senders) = match redis {
            Some(redis) => Outbox::start_shared(&api, Config::default(), &metrics, redis, "bench"),
            None => Outbox::start(&api, Config::default(), metrics),
        };
        let outbox = Arc::new(outbox);
        let started = Instant::now();
        // Pushes come concurrently: 16 producers, as 16 requests at a time would queue.
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let outbox = Arc::clone(&outbox);
                tokio::spawn(async move {
                    let rule: Arc<str> = "bench".into();
                    for i in (p..MESSAGES).step_by(PRODUCERS) {
                        let reply = Reply::Text {
                            content: format!("message {i}"),
                        };
                        let message =
                            CustomMessage::new(&format!("oBenchUser{}", i % USERS), reply)
                                .expect("text is sendable");
                        outbox.enqueue(&rule, vec![message]).await.expect("room");
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.await.expect("producer");
        }
        while fake.delivered_count() < before + MESSAGES {
            actix_web::rt::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        outbox.close();
        senders.drain(Duration::from_secs(1)).await;
        took
    })
}
const USERS: usize = 200;
const PRODUCERS: usize = 16;

fn outbox(c: &mut Criterion) {
    let fake = fake_wechat::FakeWechat::start();
    let base = fake.base();
    let mut group = c.benchmark_group("outbox");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("memory, 8 senders, to a local fake API", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run(&fake, &base, None)).sum());
    });
    // A redis-server of the bench's own: the same messages through Redis Streams (XADD at
    // the push, one owner per shard reading, XACK + XDEL per message).
    let redis = redis_server::RedisServer::start();
    let link = Arc::new(wxrules::store::Link::new(
        ::redis::Client::open(redis.url()).expect("redis url"),
        "bench".into(),
        Duration::from_millis(250),
        Duration::from_secs(1),
    ));
    group.bench_function("redis streams, 8 senders, to a local fake API", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run(&fake, &base, Some(&link))).sum());
    });
    group.finish();
}

criterion_group!(benches, outbox);
criterion_main!(benches);
