//! Criterion benchmarks: loading rule sets, matching as rule sets grow, and the whole
//! answer for one message. `cargo bench --bench match`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wxrules::rules::{self, RuleSet, Sources, Subject};
use wxrules::wire::Message;

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
    for n in [100, 1_000, 10_000] {
        let sources = write_rules(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &sources, |b, s| {
            b.iter(|| rules::load(black_box(s)).expect("load"))
        });
    }
    group.finish();
}

fn bench_find(c: &mut Criterion) {
    let mut group = c.benchmark_group("find");
    for n in [10, 1_000, 10_000] {
        let rules = load(n);
        // Hits near the end of the file are the worst case for a linear scan.
        let last = |k: usize| (0..n).rev().find(|i| i % 10 == k).unwrap_or(0);
        let cases = [
            ("exact", text(&format!("kw{}", last(0)))),
            ("contains", text(&format!("some part{}x here", last(6)))),
            ("regex", text(&format!("re{}-42", last(7)))),
            ("miss", text("nothing matches this")),
        ];
        for (name, message) in &cases {
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

criterion_group!(benches, bench_load, bench_find, bench_answer);
criterion_main!(benches);
