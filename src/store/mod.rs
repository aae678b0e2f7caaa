//! State that instances share through Redis (`--store redis://…`) or that one process
//! keeps alone: one type per need, with the same methods on either backing. Knows nothing
//! of HTTP or rules. A Redis that is down is reported once and tried again after a while;
//! meanwhile each need does in process what it would have done in Redis.
//!
//! # Layout
//! - [`link`]: the one Redis link (`Link`), its gate, and `Link::or_memory`, the one way a
//!   need falls back to its own store.
//! - `lease`: a key one owner holds for a while (the token's fetch lock, a shard's lease).
//!
//! A need is one file: a type that holds its in-process store and an `Option<Arc<Link>>`,
//! builds its commands with `redis::Cmd` (durations in PX milliseconds, `millis`), runs them
//! through `Link::run` or `Link::or_memory`, and its scripts through `redis::Script`.

mod lease;
pub mod link;

use std::time::Duration;

use redis::{Cmd, ExistenceCheck, SetExpiry, SetOptions, ToRedisArgs};

pub(crate) use self::lease::Lease;
pub use self::link::{CommandError, Conn, Link, Unavailable};

/// The link's name before it served more than dedup.
pub type Redis = Link;

/// `d` in whole milliseconds, as Redis' `PX` and `PEXPIRE` take it: at least 1, since
/// Redis refuses 0.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `SET key value NX PX ttl`: takes `key` if nobody holds it, for `ttl`. Answers `OK`
/// (`Some`) when taken, nil (`None`) when held.
pub fn set_nx_px(key: &str, value: impl ToRedisArgs, ttl: Duration) -> Cmd {
    Cmd::set_options(
        key,
        value,
        SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl))),
    )
}

/// `SET key value PX ttl`: stores `value` for `ttl`, whatever was there.
pub fn set_px(key: &str, value: impl ToRedisArgs, ttl: Duration) -> Cmd {
    Cmd::set_options(
        key,
        value,
        SetOptions::default().with_expiration(SetExpiry::PX(millis(ttl))),
    )
}
