//! `serve`'s settings, settled: flags, the environment and the config file put together
//! once (`serve::settle`), and the signal streams installed before the first load.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::reload::Source;

/// `serve`'s settings once flags, the environment and the config file are put together:
/// a flag (or its environment variable) wins over the file, the file over the default.
pub(super) struct Settled {
    pub(super) listen: SocketAddr,
    pub(super) max_age: u64,
    pub(super) store: crate::store::Store,
    pub(super) wechat_api: String,
    pub(super) admin_listen: Option<SocketAddr>,
    /// The base of `late` calls' delivery URLs (`--deliver-url`, or this listener).
    pub(super) deliver_base: Option<String>,
    /// Where the accounts come from: the config file, or the flags and `WXRULES_*`.
    pub(super) source: Source,
    /// `--strict`: every account of the config file must load, or nothing starts.
    pub(super) strict: bool,
    /// HTTP worker threads (`--workers`, or one per core).
    pub(super) workers: usize,
    pub(super) max_connections: u32,
    /// `--watch`: reload when the files change.
    pub(super) watch: bool,
    pub(super) pid_file: Option<PathBuf>,
    /// Host names the admin port answers to besides loopback ones (`--admin-host`).
    pub(super) admin_hosts: Vec<String>,
    /// Users in a conversation state per account at most (`--max-states`).
    pub(super) max_states: usize,
}

/// Signal streams, installed before anything else. A SIGHUP that arrives before its
/// handler takes the default action and kills the process, so they come before the first
/// load (which can take a second with 100,000 rules): a SIGHUP then is a reload once the
/// server runs. `server_started`, which ops and tests wait for, comes later still.
pub(super) struct Signals {
    pub(super) hup: tokio::signal::unix::Signal,
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }
}
