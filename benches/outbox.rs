//! Outbox throughput: customer-service messages per second from `Outbox::enqueue` to a
//! fake of WeChat's API on 127.0.0.1 (the tests' `fake_wechat`), through the real API
//! client: token, JSON, HTTP keep-alive, 8 senders. In process; the Redis outbox is not
//! built yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wxrules::metrics::Metrics;
use wxrules::outbox::{Config, Outbox};
use wxrules::wechat_api::{Api, Credentials, CustomMessage};
use wxrules::wire::Reply;

#[path = "../tests/common/fake_wechat.rs"]
#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
mod fake_wechat;

const MESSAGES: usize = 2_000;
const USERS: usize = 200;

fn outbox(c: &mut Criterion) {
    let fake = fake_wechat::FakeWechat::start();
    let base = fake.base();
    let mut group = c.benchmark_group("outbox");
    group.sample_size(10);
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("memory, 8 senders, to a local fake API", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let before = fake.delivered_count();
                total += actix_web::rt::System::new().block_on(async {
                    let metrics = Metrics::new();
                    let api = Api::new(
                        &base,
                        Some(Credentials::new(fake_wechat::APPID, fake_wechat::SECRET)),
                        metrics.clone(),
                    )
                    .expect("client");
                    let (outbox, senders) =
                        Outbox::start(&Arc::new(api), Config::default(), metrics);
                    let rule: Arc<str> = "bench".into();
                    let started = Instant::now();
                    for i in 0..MESSAGES {
                        let reply = Reply::Text {
                            content: format!("message {i}"),
                        };
                        let message =
                            CustomMessage::new(&format!("oBenchUser{}", i % USERS), reply)
                                .expect("text is sendable");
                        outbox.enqueue(&rule, vec![message]).await.expect("room");
                    }
                    while fake.delivered_count() < before + MESSAGES {
                        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
                    }
                    let took = started.elapsed();
                    outbox.close();
                    senders.drain(Duration::from_secs(1)).await;
                    took
                });
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, outbox);
criterion_main!(benches);
