//! Criterion benchmark of a SIGHUP reload: `reload::reload_once` reads the rules file and
//! every template, compiles them, diffs the rule names against the live set and swaps the
//! result in. The requests being served meanwhile do not wait for it.
//! `cargo bench --bench reload`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use wxrules::accounts::build::Builder;
use wxrules::accounts::{Mode, ReloadOutcome, Secrets};
use wxrules::clock::SystemClock;
use wxrules::reload::{self, Fleet};
use wxrules::rules::{self, Sources};

/// A rules file of `n` rules shaped like a big account's, in block style with comments as
/// ops write it: mostly exact keywords, then partial keywords, regexes with captures, menu
/// keys, QR scenes and rules that answer from a template file, with the usual catch-alls.
fn rules_yaml(n: usize) -> String {
    let mut y = String::from("# generated for benches/reload.rs\nrules:\n");
    for i in 0..n {
        match i % 10 {
            0..=3 => y.push_str(&format!(
                "  # keyword {i}\n  - name: kw{i}\n    when: {{ keyword: [kw{i}, 关键词{i}] }}\n    \
                 reply: {{ text: \"回复 {i}：{{{{FromUserName}}}}\" }}\n"
            )),
            4 => y.push_str(&format!(
                "  - name: part{i}\n    when: {{ keyword: {{ contains: [part{i}x, 优惠{i}] }} }}\n    \
                 reply:\n      one_of:\n        - {{ text: \"partial {i} a\" }}\n        - {{ text: \"partial {i} b\" }}\n"
            )),
            5 => y.push_str(&format!(
                "  - name: order{i}\n    when: {{ keyword: {{ regex: '^订单{i}\\s*(?P<order>\\d{{6,20}})$' }} }}\n    \
                 reply: {{ text: \"订单 {{{{captures.order}}}} 正在查询\" }}\n"
            )),
            6 => y.push_str(&format!(
                "  - name: menu{i}\n    when: {{ event: CLICK, event_key: KEY_{i} }}\n    reply:\n      news:\n        \
                 - {{ title: \"菜单 {i}\", description: \"工作日 9:00-18:00\", url: \"https://example.com/{i}\", \
                 pic_url: \"https://example.com/{i}.jpg\" }}\n"
            )),
            7 => y.push_str(&format!(
                "  - name: scene{i}\n    when: {{ event: subscribe, event_key: {{ prefix: qrscene_{i} }} }}\n    \
                 reply: {{ text: {{ template: scene{i} }} }}\n"
            )),
            8 => y.push_str(&format!(
                "  - name: tpl{i}\n    when: {{ keyword: tpl{i} }}\n    reply: {{ text: {{ template: menus/t{i} }} }}\n"
            )),
            _ => y.push_str(&format!(
                "  - name: status{i}\n    when: {{ event: TEMPLATESENDJOBFINISH, fields: {{ MsgID: \"{i}\" }} }}\n    \
                 ignore: true\n"
            )),
        }
    }
    y.push_str("  - name: other-events\n    when: { msg_type: event }\n    ignore: true\n");
    y.push_str(
        "  - name: to-human\n    when: { msg_type: [text, voice, image] }\n    \
         reply: { transfer_customer_service: {} }\n",
    );
    y
}

/// Writes the rules and their templates (one in five rules uses one) into a fresh directory.
fn write_sources(n: usize) -> Sources {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("wxrules-bench-reload-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("templates/menus")).expect("bench dir");
    std::fs::write(dir.join("rules.yaml"), rules_yaml(n)).expect("bench rules");
    for i in 0..n {
        let (name, text) = match i % 10 {
            7 => (
                format!("scene{i}.hbs"),
                format!(
                    "欢迎！您是通过「{{{{strip_prefix EventKey \"qrscene_\"}}}}」来的（{i}）\n"
                ),
            ),
            8 => (
                format!("menus/t{i}.hbs"),
                format!(
                    "{{{{#if Content}}}}您发送了：{{{{Content}}}}{{{{else}}}}模板 {i}{{{{/if}}}}\n"
                ),
            ),
            _ => continue,
        };
        std::fs::write(dir.join("templates").join(name), text).expect("bench template");
    }
    Sources {
        rules: dir.join("rules.yaml"),
        templates: dir.join("templates"),
    }
}

fn bench_reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    for n in [1_000, 10_000] {
        let sources = write_sources(n);
        let loaded = rules::load(&sources).expect("bench rules load");
        assert_eq!(loaded.rules.rules().len(), n + 2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("bench runtime");
        let fleet = runtime.block_on(async {
            let builder = Builder {
                clock: Arc::new(SystemClock),
                wechat_api: "http://127.0.0.1:9".into(),
                redis: None,
                outbox: wxrules::act::outbox::Config::default(),
                http: wxrules::wechat_api::http_client().expect("bench client"),
                mode: Mode::Single,
                metrics: wxrules::telemetry::metrics::Metrics::new(),
                over_quota: None,
            };
            let secrets = Secrets::new("bench-token", None).expect("bench secrets");
            Arc::new(Fleet::of_one(builder, sources.clone(), secrets).expect("bench fleet"))
        });
        group.bench_with_input(BenchmarkId::from_parameter(n), &fleet, |b, fleet| {
            b.iter(|| {
                let report = runtime.block_on(reload::reload_once(
                    black_box(fleet),
                    reload::RELOAD_TIMEOUT,
                ));
                match report.accounts.first().map(|a| &a.report) {
                    Some(line) if line.outcome == ReloadOutcome::Applied => line.rules,
                    _ => panic!("bench reload: {report:?}"),
                }
            })
        });
        let _ = std::fs::remove_dir_all(sources.rules.parent().expect("bench dir"));
    }
    group.finish();
}

criterion_group!(benches, bench_reload);
criterion_main!(benches);
