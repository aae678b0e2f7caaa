//! Criterion benchmarks: loading rule sets (up to 100,000 rules), matching as rule sets
//! grow (10 to 100,000 rules), and the whole answer for one message, in plaintext and in
//! safe mode. `cargo bench --bench match`; `benches/load.sh` measures the server.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wxrules::crypto::{sign, verify_signature, Cipher};
use wxrules::rules::{self, RuleSet, Sources, Subject};
use wxrules::wire::{self, Message};
use wxrules::Outcome;

/// A rule set of `n` rules shaped like a real account's: mostly exact keywords, some
/// partial keywords and regexes, menu keys, then the usual catch-alls.
fn rules_yaml(n: usize) -> String {
    let mut y = String::from("rules:\n");
    for i in 0..n {
        match i % 10 {
            0..=5 => y.push_str(&format!(
                "  - {{ name: kw{i}, when: {{ keyword: [kw{i}, 关键词{i}] }}, reply: {{ text: \"reply {i} to {{{{FromUserName}}}}\" }} }}\n"
            )),
            6 => y.push_str(&format!(
                "  - {{ name: part{i}, when: {{ keyword: {{ contains: part{i}x }} }}, reply: {{ text: partial {i} }} }}\n"
            )),
            7 => y.push_str(&format!(
                "  - {{ name: re{i}, when: {{ keyword: {{ regex: '^re{i}-(?P<n>\\d+)$' }} }}, reply: {{ text: \"regex {{{{captures.n}}}}\" }} }}\n"
            )),
            8 => y.push_str(&format!(
                "  - {{ name: menu{i}, when: {{ event: CLICK, event_key: KEY_{i} }}, reply: {{ text: menu {i} }} }}\n"
            )),
            _ => y.push_str(&format!(
                "  - {{ name: scene{i}, when: {{ event: subscribe, event_key: qrscene_{i} }}, reply: {{ text: scene {i} }} }}\n"
            )),
        }
    }
    y.push_str("  - { name: other-events, when: { msg_type: event }, ignore: true }\n");
    y.push_str("  - { name: to-human, when: { msg_type: text }, reply: { transfer_customer_service: {} } }\n");
    y
}

fn write_rules(n: usize) -> Sources {
    let dir = std::env::temp_dir().join(format!("wxrules-bench-{n}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("templates")).expect("bench dir");
    std::fs::write(dir.join("rules.yaml"), rules_yaml(n)).expect("bench rules");
    Sources {
        rules: dir.join("rules.yaml"),
        templates: dir.join("templates"),
    }
}

fn load(n: usize) -> RuleSet {
    rules::load(&write_rules(n))
        .expect("bench rules load")
        .rules
}

fn text(content: &str) -> Message {
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>\
         <CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{content}]]></Content><MsgId>1234567890123456</MsgId></xml>"
    );
    Message::parse(xml.as_bytes()).expect("bench message")
}

fn bench_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    // 100,000 rules take over a second a load: criterion warns and takes ten samples anyway.
    for n in [100, 1_000, 10_000, 100_000] {
        let sources = write_rules(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &sources, |b, s| {
            b.iter(|| rules::load(black_box(s)).expect("load"))
        });
    }
    group.finish();
}

/// The hits and the miss of `find`, each near the end of an `n`-rule file: the worst case
/// for a linear scan.
fn find_cases(n: usize) -> [(&'static str, Message); 4] {
    let last = |k: usize| (0..n).rev().find(|i| i % 10 == k).unwrap_or(0);
    [
        ("exact", text(&format!("kw{}", last(0)))),
        ("contains", text(&format!("some part{}x here", last(6)))),
        ("regex", text(&format!("re{}-42", last(7)))),
        ("miss", text("nothing matches this")),
    ]
}

fn bench_find_in(c: &mut Criterion, group_name: &str, sizes: &[usize], samples: usize) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(samples);
    for &n in sizes {
        let rules = load(n);
        for (name, message) in &find_cases(n) {
            group.bench_with_input(BenchmarkId::new(*name, n), message, |b, m| {
                b.iter(|| {
                    let subject = Subject::new(black_box(m));
                    rules.find(&subject).map(|f| f.index)
                })
            });
        }
    }
    group.finish();
}

fn bench_find(c: &mut Criterion) {
    bench_find_in(c, "find", &[10, 1_000, 10_000], 100);
}

/// The same cases at 100,000 rules, apart: building the set takes seconds.
fn bench_find_100k(c: &mut Criterion) {
    bench_find_in(c, "find_100000", &[100_000], 20);
}

fn bench_answer(c: &mut Criterion) {
    let rules = load(1_000);
    let body = String::from(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>\
         <CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[kw500]]></Content><MsgId>1234567890123456</MsgId></xml>",
    );
    c.bench_function("answer/parse+match+render+write", |b| {
        b.iter(|| {
            let message = Message::parse(black_box(body.as_bytes())).expect("parse");
            wxrules::answer(&rules, &message, 1_795_737_600)
        })
    });
}

const TOKEN: &str = "bench-token";
/// The official samples' EncodingAESKey and AppID.
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";
const TIMESTAMP: &str = "1795737600";
const NONCE: &str = "1320562132";

/// What the server does with one push, without HTTP: check the signature, (decrypt,) parse,
/// match, render, write (and encrypt and sign the reply), at 1,000 rules.
fn bench_pipeline(c: &mut Criterion) {
    let rules = load(1_000);
    let cipher = Cipher::new(AES_KEY, APP_ID).expect("bench key");
    let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>\
               <CreateTime>1795737600</CreateTime><MsgType><![CDATA[text]]></MsgType>\
               <Content><![CDATA[kw500]]></Content><MsgId>1234567890123456</MsgId></xml>";
    let signature = sign(&[TOKEN, TIMESTAMP, NONCE]);
    let encrypt = cipher.encrypt(xml.as_bytes());
    let msg_signature = sign(&[TOKEN, TIMESTAMP, NONCE, &encrypt]);
    let sealed = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    let now = 1_795_737_600;

    let mut group = c.benchmark_group("pipeline");
    group.bench_function("plain/1000", |b| {
        b.iter(|| {
            verify_signature(&signature, &[TOKEN, TIMESTAMP, NONCE]).expect("signature");
            let message = Message::parse(black_box(xml.as_bytes())).expect("parse");
            wxrules::answer(&rules, &message, now).body().len()
        })
    });
    group.bench_function("safe/1000", |b| {
        b.iter(|| {
            let encrypt = wire::parse_encrypted(black_box(sealed.as_bytes())).expect("envelope");
            verify_signature(&msg_signature, &[TOKEN, TIMESTAMP, NONCE, &encrypt])
                .expect("msg_signature");
            let inner = cipher.decrypt(&encrypt).expect("decrypt");
            let message = Message::parse(&inner).expect("parse");
            match wxrules::answer(&rules, &message, now) {
                Outcome::Replied { xml, .. } => {
                    let reply = cipher.encrypt(xml.as_bytes());
                    let nonce = "b3n6PpVvXgDq3kZl";
                    let signature = sign(&[TOKEN, TIMESTAMP, nonce, &reply]);
                    wire::write_encrypted(&reply, &signature, now, nonce).len()
                }
                other => panic!("bench message not replied: {other:?}"),
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_load,
    bench_find,
    bench_find_100k,
    bench_answer,
    bench_pipeline
);
criterion_main!(benches);
