//! Prometheus metrics, named `wxrules_…`: requests by outcome, hits per rule, latency,
//! reloads by outcome, rules loaded, retries answered by the dedup store. One `Metrics` per server; no IO here, the server
//! exposes `render()` at `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a request ended, as counted in `wxrules_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A reply was sent.
    Replied,
    /// `success`: an ignore rule, or no rule.
    Ignored,
    /// 403: bad or missing signature, or a stale timestamp.
    BadSignature,
    /// 400/413: the body is not a usable message.
    BadRequest,
    /// `success` after a template failed at render time.
    Error,
    /// A WeChat retry answered from the dedup store.
    Retry,
    /// `success` because the answer could not be had within the deadline.
    Deadline,
    /// 408: the body did not arrive in time.
    Timeout,
    /// 403: a plaintext push whose signed query came before with another body.
    Replayed,
}

impl RequestOutcome {
    /// Every outcome, in `index` order.
    const ALL: [RequestOutcome; 9] = [
        RequestOutcome::Replied,
        RequestOutcome::Ignored,
        RequestOutcome::BadSignature,
        RequestOutcome::BadRequest,
        RequestOutcome::Error,
        RequestOutcome::Retry,
        RequestOutcome::Deadline,
        RequestOutcome::Timeout,
        RequestOutcome::Replayed,
    ];

    /// Its place in `ALL` and in `Metrics::by_outcome`. The match has no wildcard, so a new
    /// outcome does not compile until it is numbered here (and then added to `ALL`, which
    /// the tests check).
    fn index(self) -> usize {
        match self {
            RequestOutcome::Replied => 0,
            RequestOutcome::Ignored => 1,
            RequestOutcome::BadSignature => 2,
            RequestOutcome::BadRequest => 3,
            RequestOutcome::Error => 4,
            RequestOutcome::Retry => 5,
            RequestOutcome::Deadline => 6,
            RequestOutcome::Timeout => 7,
            RequestOutcome::Replayed => 8,
        }
    }

    /// Whether the request was verified, and so its latency is observed.
    fn timed(self) -> bool {
        !matches!(
            self,
            RequestOutcome::BadSignature
                | RequestOutcome::BadRequest
                | RequestOutcome::Timeout
                | RequestOutcome::Replayed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Replied => "replied",
            RequestOutcome::Ignored => "ignored",
            RequestOutcome::BadSignature => "bad_signature",
            RequestOutcome::BadRequest => "bad_request",
            RequestOutcome::Error => "error",
            RequestOutcome::Retry => "retry",
            RequestOutcome::Deadline => "deadline",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Replayed => "replayed",
        }
    }
}

/// What a call reports to: `wxrules_calls_total{rule,outcome}` and
/// `wxrules_call_duration_seconds{rule}`.
#[derive(Debug, Clone)]
pub struct CallMetrics {
    pub calls: IntCounterVec,
    pub duration: HistogramVec,
}

impl CallMetrics {
    /// Counts one call that ended as `outcome` after `took`.
    pub fn observe(&self, rule: &str, outcome: &str, took: std::time::Duration) {
        self.calls.with_label_values(&[rule, outcome]).inc();
        self.duration
            .with_label_values(&[rule])
            .observe(took.as_secs_f64());
    }
}

/// The server's metrics and the registry they are exposed from.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    rule_hits: IntCounterVec,
    reloads: IntCounterVec,
    rules_loaded: IntGauge,
    dedup_hits: IntCounterVec,
    kept_answers: IntCounterVec,
    dedup_fallbacks: IntCounter,
    media_pending: IntCounter,
    dedup_stored: IntGauge,
    dedup_stored_bytes: IntGauge,
    log_dropped: IntCounter,
    states_evicted: IntCounter,
    log_suppressed: IntCounter,
    api_calls: IntCounterVec,
    outbox: IntGaugeVec,
    outbox_results: IntCounterVec,
    calls: IntCounterVec,
    call_duration: HistogramVec,
    url_checks: IntCounterVec,
    unrouted: IntCounter,
    edits: IntCounterVec,
    /// Held while `log_dropped` catches up, so that two scrapes at once add a drop once.
    log_catch_up: std::sync::Arc<parking_lot::Mutex<()>>,
    /// Each outcome's series of `requests` and `latency`, looked up once: a request finds
    /// its counters by index instead of hashing labels.
    by_outcome: [(IntCounter, Option<Histogram>); RequestOutcome::ALL.len()],
    /// The account these metrics are labelled with (`for_account`); `None` for a fleet of
    /// one's, as for its log lines (`Account::log_name`).
    account: Option<std::sync::Arc<str>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_registry(Registry::new())
    }

    /// The metrics of one account of several (`--config`): every series carries
    /// `account="NAME"`.
    pub fn for_account(name: &str) -> Metrics {
        let labels = std::iter::once(("account".to_owned(), name.to_owned())).collect();
        // Only a label name or value Prometheus refuses fails; account names are checked
        // to be `[a-z0-9_-]`.
        let registry = Registry::new_custom(None, Some(labels)).unwrap_or_default();
        Metrics {
            account: Some(name.into()),
            ..Metrics::with_registry(registry)
        }
    }

    /// The account's name for the `account` field of log lines: what the outbox and the
    /// API client, which hold the metrics but not the account, write. `None` for a fleet
    /// of one.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    fn with_registry(registry: Registry) -> Metrics {
        let r = &registry;
        let requests = counters(
            r,
            "wxrules_requests_total",
            "POST /wechat requests by outcome",
            &["outcome"],
            &[],
        );
        let latency = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "wxrules_request_duration_seconds",
                    "Time from a verified request to its answer",
                )
                .buckets(vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
                    1.0, 5.0,
                ]),
                &["outcome"],
            ),
        );
        // Outcomes show up as 0 before they first happen, so rates and alerts work at
        // once; latencies too, for each outcome that is timed.
        let by_outcome = RequestOutcome::ALL.map(|outcome| {
            let label = [outcome.as_str()];
            let timed = outcome.timed().then(|| latency.with_label_values(&label));
            (requests.with_label_values(&label), timed)
        });
        Metrics {
            rule_hits: counters(r, "wxrules_rule_hits_total", "Messages answered by each rule", &["rule"], &[]),
            reloads: counters(
                r,
                "wxrules_reloads_total",
                "Rule reloads by outcome",
                &["outcome"],
                &["applied", "rejected"],
            ),
            rules_loaded: register(r, IntGauge::new("wxrules_rules_loaded", "Rules in the live rule set")),
            dedup_hits: counters(
                r,
                "wxrules_dedup_hits_total",
                "Retries answered from the dedup store, by store",
                &["store"],
                &["memory", "redis"],
            ),
            kept_answers: counters(
                r,
                "wxrules_kept_answers_total",
                "Answers kept for a user's next message (too late for every attempt, or the parts of a long one), given, or dropped (the store full)",
                &["outcome"],
                &["kept", "given", "dropped"],
            ),
            dedup_fallbacks: register(
                r,
                IntCounter::new(
                    "wxrules_dedup_fallbacks_total",
                    "Requests deduplicated in process because Redis was unavailable",
                ),
            ),
            media_pending: register(
                r,
                IntCounter::new(
                    "wxrules_media_pending_total",
                    "Replies not made because their media file's upload had not finished",
                ),
            ),
            dedup_stored: register(
                r,
                IntGauge::new(
                    "wxrules_dedup_stored_answers",
                    "Answers in the in-process dedup store (expired ones until the next sweep)",
                ),
            ),
            dedup_stored_bytes: register(
                r,
                IntGauge::new(
                    "wxrules_dedup_stored_bytes",
                    "Weight of the in-process dedup store, in bytes; capped at 64 MiB",
                ),
            ),
            log_suppressed: register(
                r,
                IntCounter::new(
                    "wxrules_log_lines_suppressed_total",
                    "Log lines of other crates (actix's, …) left out: more than 20 a second from one source",
                ),
            ),
            states_evicted: register(
                r,
                IntCounter::new(
                    "wxrules_states_evicted_total",
                    "Users put out of their conversation state to keep an account within --max-states (by this process)",
                ),
            ),
            log_dropped: register(
                r,
                IntCounter::new(
                    "wxrules_log_lines_dropped_total",
                    "Log lines dropped because the log output (stderr) stalled",
                ),
            ),
            api_calls: counters(
                r,
                "wxrules_wechat_api_calls_total",
                "Calls to WeChat's API, by api (stable_token, custom_send) and outcome (ok, errcode, network, http_status, too_large, bad_answer, no_credentials)",
                &["api", "outcome"],
                &[],
            ),
            outbox: {
                let outbox = register(
                    r,
                    IntGaugeVec::new(
                        Opts::new(
                            "wxrules_outbox_messages",
                            "Customer-service messages in the outbox now, by state (queued: waiting or being sent; retrying: waiting to be tried again)",
                        ),
                        &["state"],
                    ),
                );
                for state in ["queued", "retrying"] {
                    outbox.with_label_values(&[state]);
                }
                outbox
            },
            outbox_results: counters(
                r,
                "wxrules_outbox_results_total",
                "Customer-service messages by how they ended: sent, failed (a final errcode, or retried past the limit), refused (outbox full or closing), unsendable (no AppSecret), kept (WeChat said the user's quota is spent, 45047: kept for the user's next message)",
                &["outcome"],
                &["sent", "failed", "refused", "unsendable", "kept"],
            ),
            calls: counters(
                r,
                "wxrules_calls_total",
                "Calls of rules to their services (`call:`), by rule and outcome (ok, late, busy, bad_url, timeout, connect, network, status, too_large, invalid)",
                &["rule", "outcome"],
                &[],
            ),
            call_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "wxrules_call_duration_seconds",
                        "Time each rule's calls to its service took, whatever their outcome",
                    )
                    .buckets(vec![
                        0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0, 60.0,
                    ]),
                    &["rule"],
                ),
            ),
            url_checks: counters(
                r,
                "wxrules_url_checks_total",
                "GET /wechat (the MP console's URL check) by outcome: passed, refused (bad or missing signature, stale timestamp, bad query)",
                &["outcome"],
                &["passed", "refused"],
            ),
            unrouted: register(
                r,
                IntCounter::new(
                    "wxrules_requests_unrouted_total",
                    "Requests to a path no account serves (404), with several accounts",
                ),
            ),
            edits: counters(
                r,
                "wxrules_rules_edits_total",
                "Changes made in the page, by outcome: applied, rollback, conflict (the files changed since the draft began), rejected (errors or failing rule tests), failed (a file could not be written)",
                &["outcome"],
                &["applied", "rollback", "conflict", "rejected", "failed"],
            ),
            log_catch_up: Default::default(),
            by_outcome,
            registry,
            account: None,
        }
    }

    /// Counts one URL check (`GET /wechat`).
    pub fn observe_url_check(&self, passed: bool) {
        let outcome = if passed { "passed" } else { "refused" };
        self.url_checks.with_label_values(&[outcome]).inc();
    }

    /// The series a rule's calls report to.
    pub fn call_metrics(&self) -> CallMetrics {
        CallMetrics {
            calls: self.calls.clone(),
            duration: self.call_duration.clone(),
        }
    }

    /// Counts one call to WeChat's API.
    /// Counts a change made in the page that ended as `outcome`.
    pub fn observe_edit(&self, outcome: &str) {
        self.edits.with_label_values(&[outcome]).inc();
    }

    pub fn observe_api_call(&self, api: &str, outcome: &str) {
        self.api_calls.with_label_values(&[api, outcome]).inc();
    }

    /// Moves `n` messages into (positive) or out of (negative) an outbox state.
    pub fn outbox_state(&self, state: &str, n: i64) {
        self.outbox.with_label_values(&[state]).add(n);
    }

    /// Counts `n` messages that ended as `outcome` (sent, failed, refused, unsendable).
    pub fn outbox_result(&self, outcome: &str, n: u64) {
        self.outbox_results.with_label_values(&[outcome]).inc_by(n);
    }

    /// Counts one request; `rule` is the rule that decided, if any.
    pub fn observe_request(&self, outcome: RequestOutcome, rule: Option<&str>, seconds: f64) {
        let (count, latency) = &self.by_outcome[outcome.index()];
        count.inc();
        if let Some(rule) = rule {
            self.rule_hits.with_label_values(&[rule]).inc();
        }
        if let Some(latency) = latency {
            latency.observe(seconds);
        }
    }

    /// Each rule's hits so far, by name (only rules that have answered are listed: reading
    /// does not add series).
    pub fn rule_hits(&self) -> std::collections::HashMap<String, u64> {
        use prometheus::core::Collector;
        self.rule_hits
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter_map(|m| {
                let rule = m.get_label().iter().find(|l| l.name() == "rule")?;
                Some((rule.value().to_owned(), m.get_counter().get_value() as u64))
            })
            .collect()
    }

    /// Counts a request to a path no account serves (several accounts only).
    pub fn observe_unrouted(&self) {
        self.unrouted.inc();
    }

    /// Counts a request refused before the rules ran.
    pub fn observe_refused(&self, outcome: RequestOutcome) {
        self.by_outcome[outcome.index()].0.inc();
    }

    /// Counts a retry answered from the dedup store (`memory` or `redis`); the request
    /// itself is counted by `observe_request` with `RequestOutcome::Retry`.
    pub fn observe_dedup_hit(&self, store: &str) {
        self.dedup_hits.with_label_values(&[store]).inc();
    }

    /// Counts an answer kept for a user's next message (`kept`), given (`given`) or lost
    /// to the store's bounds (`dropped`).
    pub fn observe_kept(&self, outcome: &str) {
        self.kept_answers.with_label_values(&[outcome]).inc();
    }

    /// Counts a request deduplicated in process because Redis was unavailable.
    pub fn observe_dedup_fallback(&self) {
        self.dedup_fallbacks.inc();
    }

    /// Counts a reply not made because its media file's upload had not finished.
    pub fn observe_media_pending(&self) {
        self.media_pending.inc();
    }

    /// Counts a reload; `rules` is the size of the set now serving.
    pub fn observe_reload(&self, applied: bool, rules: usize) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.reloads.with_label_values(&[outcome]).inc();
        self.set_rules_loaded(rules);
    }

    pub fn set_rules_loaded(&self, rules: usize) {
        self.rules_loaded
            .set(i64::try_from(rules).unwrap_or(i64::MAX));
    }

    /// The conversation store's count of users put out of their state, caught up at a
    /// scrape.
    pub fn set_states_evicted(&self, evicted: u64) {
        let _one = self.log_catch_up.lock();
        self.states_evicted
            .inc_by(evicted.saturating_sub(self.states_evicted.get()));
    }

    /// The size of the in-process dedup store, read when `/metrics` is scraped.
    pub fn set_dedup_stored(&self, answers: usize, bytes: u64) {
        self.dedup_stored
            .set(i64::try_from(answers).unwrap_or(i64::MAX));
        self.dedup_stored_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.catch_up_log_drops();
        let mut out = Vec::with_capacity(4096);
        // Encoding into a Vec only fails on metric families that cannot occur here.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The metrics of a server of several accounts: the process-wide families (the dedup
    /// store, the log) from `process`, every other family from each account's own metrics,
    /// merged so that each family is written once with a series per account.
    pub fn render_accounts<'a>(
        process: &Metrics,
        accounts: impl IntoIterator<Item = &'a Metrics>,
    ) -> String {
        process.catch_up_log_drops();
        let mut families: Vec<prometheus::proto::MetricFamily> = process
            .registry
            .gather()
            .into_iter()
            .filter(|f| PROCESS_WIDE.contains(&f.name()))
            .collect();
        let mut at: std::collections::HashMap<String, usize> = families
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().to_owned(), i))
            .collect();
        for metrics in accounts {
            for mut family in metrics.registry.gather() {
                if PROCESS_WIDE.contains(&family.name()) {
                    continue;
                }
                // `account` first, where a reader looks for it.
                for metric in family.mut_metric() {
                    metric.mut_label().sort_by_key(|l| l.name() != "account");
                }
                match at.get(family.name()) {
                    Some(&i) => families[i].mut_metric().extend(family.take_metric()),
                    None => {
                        at.insert(family.name().to_owned(), families.len());
                        families.push(family);
                    }
                }
            }
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(4096 * families.len().max(1));
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The log sink counts its drops itself; the counter catches up at each scrape.
    fn catch_up_log_drops(&self) {
        {
            let _one = self.log_catch_up.lock();
            let dropped = crate::telemetry::logsink::dropped();
            self.log_dropped
                .inc_by(dropped.saturating_sub(self.log_dropped.get()));
            let suppressed = crate::telemetry::limit::suppressed();
            self.log_suppressed
                .inc_by(suppressed.saturating_sub(self.log_suppressed.get()));
        }
    }
}

/// The families one process has once, whatever its accounts: the dedup store and the log
/// are shared by every account.
/// Registers `metric` on `registry`. Metric definitions and names here are fixed and
/// distinct: a failure is a programming error, caught by every test that builds a server.
#[allow(clippy::expect_used)]
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("valid metric"); // ok: fixed definitions
    registry
        .register(Box::new(metric.clone()))
        .expect("distinct metric names"); // ok: fixed names
    metric
}

/// A counter family named `name`, registered, with the series of `zeros` (one label value
/// each) at 0 from the start, so that rates and alerts work before the first one counts.
fn counters(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    zeros: &[&str],
) -> IntCounterVec {
    let counters = register(registry, IntCounterVec::new(Opts::new(name, help), labels));
    for zero in zeros {
        counters.with_label_values(&[zero]);
    }
    counters
}

const PROCESS_WIDE: [&str; 8] = [
    "wxrules_states_evicted_total",
    "wxrules_requests_unrouted_total",
    "wxrules_dedup_hits_total",
    "wxrules_dedup_fallbacks_total",
    "wxrules_dedup_stored_answers",
    "wxrules_dedup_stored_bytes",
    "wxrules_log_lines_dropped_total",
    "wxrules_log_lines_suppressed_total",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_indexes_its_own_series() {
        for (i, outcome) in RequestOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i);
        }
        let m = Metrics::new();
        m.observe_request(RequestOutcome::Deadline, None, 0.5);
        m.observe_refused(RequestOutcome::BadSignature);
        let text = m.render();
        assert!(
            text.contains("wxrules_requests_total{outcome=\"deadline\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wxrules_requests_total{outcome=\"bad_signature\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wxrules_requests_total{outcome=\"replied\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("wxrules_request_duration_seconds_count{outcome=\"deadline\"} 1"),
            "{text}"
        );
        // Refused requests are not timed.
        assert!(
            !text.contains("wxrules_request_duration_seconds_count{outcome=\"bad_signature\"}"),
            "{text}"
        );
    }

    #[test]
    fn counts_show_up_in_the_exposition() {
        let m = Metrics::new();
        m.observe_request(RequestOutcome::Replied, Some("price"), 0.0002);
        m.observe_request(RequestOutcome::Replied, Some("price"), 0.0002);
        m.observe_request(RequestOutcome::Ignored, None, 0.0001);
        m.observe_refused(RequestOutcome::BadSignature);
        m.observe_reload(false, 3);
        m.observe_request(RequestOutcome::Retry, None, 0.0001);
        m.observe_dedup_hit("redis");
        m.observe_dedup_fallback();
        let text = m.render();
        for line in [
            "wxrules_requests_total{outcome=\"replied\"} 2",
            "wxrules_requests_total{outcome=\"ignored\"} 1",
            "wxrules_requests_total{outcome=\"bad_signature\"} 1",
            "wxrules_requests_total{outcome=\"error\"} 0",
            "wxrules_rule_hits_total{rule=\"price\"} 2",
            "wxrules_reloads_total{outcome=\"rejected\"} 1",
            "wxrules_reloads_total{outcome=\"applied\"} 0",
            "wxrules_rules_loaded 3",
            "wxrules_request_duration_seconds_count{outcome=\"replied\"} 2",
            "wxrules_requests_total{outcome=\"retry\"} 1",
            "wxrules_requests_total{outcome=\"deadline\"} 0",
            "wxrules_rule_hits_total{rule=\"price\"} 2",
            "wxrules_dedup_hits_total{store=\"redis\"} 1",
            "wxrules_dedup_hits_total{store=\"memory\"} 0",
            "wxrules_dedup_fallbacks_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
