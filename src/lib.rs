//! wxrules answers a WeChat Official Account's message and event pushes from a YAML rules
//! file that ops teams edit and hot-reload.
//!
//! # Layout
//! Bytes in, rules, replies out (no IO):
//! - [`wire`]: WeChat XML in (`Message`) and out (`Reply`, `write_reply`); WeChat's facts
//!   (the catalog of pushes, the passive-reply deadline).
//! - [`crypto`]: request signatures and safe-mode AES.
//! - [`rules`]: load, compile and match `rules.yaml`; `rules::load` is the one loader.
//! - [`render`]: a rule's reply evaluated for one message.
//! - [`menu`]: the custom menu as a file (`menu.yaml`), checked and held against the rules.
//! - [`answer`](mod@answer): the decision for one message, shared by the server, `explain` (the
//!   dashboard's try) and `cases` (`wxrules test`); [`import`]: the MP console's export.
//! - [`parts`]: a long answer cut into parts WeChat takes; Markdown as chat text.
//! - [`converse`]: a user's conversation state as rules see it, and what it becomes after
//!   a rule answered (the server and `wxrules test` keep it).
//!
//! What a decision asks for, and where state lives:
//! - [`act`]: a rule's `call` to the account's service, and the `outbox` of
//!   customer-service messages.
//! - [`wechat_api`]: WeChat's HTTP API (the access token, customer-service messages).
//! - [`store`]: state in process or shared through Redis, one type per need over one link.
//!
//! Who is served, and how:
//! - [`accounts`]: the accounts (a fleet of one without `--config`), each a `Live`; the
//!   config file; secrets; building an account.
//! - [`reload`]: the first load and every reload, one loop for a fleet of any size.
//! - [`edit`]: a rules file's text changed in place (no IO); [`editor`]: the page's drafts,
//!   their checks and tests, applying them, the history.
//! - [`server`]: actix-web routes and handlers; the only module that knows HTTP.
//! - [`telemetry`]: log lines, metrics, the dashboard's recent pushes; [`clock`]: time.
//! - [`cli`]: the commands, a file each.

pub mod accounts;
pub mod act;
pub mod answer;
pub mod cases;
pub mod cli;
pub mod clock;
pub mod converse;
pub mod crypto;
pub mod edit;
pub mod editor;
pub mod explain;
pub mod import;
pub mod menu;
pub mod parts;
pub mod reload;
pub mod render;
pub mod rules;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod wechat_api;
pub mod wire;

pub use answer::{answer, Outcome};
pub use rules::{RuleSet, Sources};
