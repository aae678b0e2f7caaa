//! wxrules answers a WeChat Official Account's message and event pushes from a YAML rules
//! file that ops teams edit and hot-reload.
//!
//! # Layout
//! - [`accounts`]: the `--config` file of several accounts, their secrets, the table by path.
//! - [`wire`]: WeChat XML in (`Message`) and out (`Reply`, `write_reply`).
//! - [`crypto`]: request signatures and safe-mode AES.
//! - [`rules`]: load, compile and match `rules.yaml`; `rules::load` is the one loader.
//! - [`render`]: handlebars templates → `Reply`.
//! - [`answer`]: match + render + write for one message, shared by server and CLI.
//! - [`store`]: state in process or shared through Redis, one type per need (retries'
//!   answers, cooldowns, the access token, the outbox's streams) over one Redis link.
//!   [`dedup`] and [`cooldown`] are its old paths, kept as re-exports.
//! - [`wechat_api`]: WeChat's HTTP API: the access token and customer-service messages.
//! - [`outbox`]: customer-service messages queued by pushes and sent in the background.
//! - [`reload`]: the live `RuleSet` behind an `ArcSwap`, and the SIGHUP control loop.
//! - [`server`]: actix-web routes and handlers; the only module that knows HTTP.
//! - [`metrics`]: Prometheus counters and histograms, exposed at `GET /metrics`.
//! - [`settings`]: secrets from the environment; [`clock`]: the time source.
//! - [`logline`]: the `tracing` layer that formats log lines; [`logsink`]: the batching
//!   writer behind it in `serve`.
//! - [`cases`]: `wxrules test`, ops-written cases run through `answer`.
//! - [`cli`]: the `serve`, `check`, `explain` and `test` commands.

pub mod accounts;
pub mod act;
pub mod answer;
pub mod cases;
pub mod cli;
pub mod clock;
pub mod cooldown;
pub mod crypto;
pub mod dedup;
pub mod explain;
pub mod import;
pub mod outbox;
pub mod reload;
pub mod render;
pub mod rules;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod wechat_api;
pub mod wire;

// Paths from before the move to `telemetry/` (kept until every caller uses the new ones).
pub use act::call;
pub use telemetry::{logline, logsink, metrics, recent};

pub use answer::{answer, Outcome};
pub use rules::{RuleSet, Sources};
