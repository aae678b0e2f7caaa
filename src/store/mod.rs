//! State that instances share through Redis (`--store redis://…`) or that one process
//! keeps alone: one type per need, with the same methods on either backing. Knows nothing
//! of HTTP or rules. A Redis that is down is reported once and tried again after a while;
//! meanwhile each need does in process what it would have done in Redis.
//!
//! # Layout
//! - [`link`]: the one Redis link (`Link`), its gate, and `Link::or_memory`, the one way a
//!   need falls back to its own store.
//! - `lease`: a key one owner holds for a while (the token's fetch lock, a shard's lease).
//! - [`dedup`]: WeChat's retries answered once (`Dedup`).
//! - [`cooldown`]: rules' per-user cooldowns (`Cooldowns`).
//! - [`media`]: replies' media ids by content, and the upload lock (`MediaStore`).
//! - `token`: an account's access token (`TokenStore`); `wechat_api` decides when to fetch.
//! - [`outbox`]: the outbox's shard streams (`ShardStream`), capped, and their blocking
//!   `Reader` on a connection of its own (`Link::dedicated`); whether Redis keeps them
//!   across its restart (`check_durability`); `crate::act::outbox` sends.
//! - [`replay`]: plaintext pushes' signed queries, each with its body's hash (`Replays`).
//! - [`joined`]: WeChat's attempts at one push joined to one slow call (`Joined`).
//! - [`kept`]: answers kept for a user's next message (`Kept`).
//! - [`quota`]: WeChat's customer-service quota per user (`Quota`).
//! - [`conversation`]: users' conversation states (`Conversations`), bounded per account.
//! - Here: the `--store` value (`Store`), `millis`, and the `SET`s that claim and store.
//!
//! A need is one file: a type that holds its in-process store and an `Option<Arc<Link>>`,
//! builds its commands with `redis::Cmd` (durations in PX milliseconds, `millis`), runs them
//! through `Link::run` or `Link::or_memory`, and its scripts through `redis::Script`.

pub mod conversation;
pub mod cooldown;
pub mod dedup;
pub mod joined;
pub mod kept;
mod lease;
pub mod link;
pub mod media;
pub mod outbox;
pub mod quota;
pub mod replay;
pub(crate) mod token;

/// The integration tests' own `redis-server` on a free loopback port, for the needs' tests.
#[cfg(test)]
#[path = "../../tests/common/redis_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

/// A link to the tests' own `redis-server` at `url`, with short timeouts.
#[cfg(test)]
fn test_link(url: &str) -> std::sync::Arc<Link> {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("{e}"));
    let (timeout, retry_after) = (Duration::from_millis(250), Duration::from_millis(50));
    std::sync::Arc::new(Link::new(client, "test".into(), timeout, retry_after))
}

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::{Cmd, ExistenceCheck, SetExpiry, SetOptions, ToRedisArgs};

pub(crate) use self::lease::Lease;
pub use self::link::{CommandError, Conn, Link, Unavailable};

/// A `--store` value that is neither `memory` nor a usable `redis://` URL. The messages do
/// not repeat the value: it may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("expected `memory` or `redis://host:port[/db]`")]
    Unknown,
    #[error("not a valid Redis URL: expected `redis://[:password@]host:port[/db]`")]
    BadUrl,
}

/// Where shared state is kept: the value of `--store` (first named `--dedup`).
#[derive(Clone, Default)]
pub enum Store {
    /// In this process only (the default).
    #[default]
    Memory,
    /// In Redis, shared by every instance; the in-process store stands in while it is down.
    Redis(RedisUrl),
}

/// A parsed `redis://` URL. Shown without its password.
#[derive(Clone)]
pub struct RedisUrl {
    client: redis::Client,
}

impl RedisUrl {
    /// `host:port/db`: what logs may show.
    pub fn redacted(&self) -> String {
        let info = self.client.get_connection_info();
        format!("{}/{}", info.addr, info.redis.db)
    }

    /// A link to this Redis (see `Link::new`). Makes no connection yet.
    pub fn link(&self, command_timeout: Duration, retry_after: Duration) -> Link {
        Link::new(
            self.client.clone(),
            self.redacted(),
            command_timeout,
            retry_after,
        )
    }
}

impl FromStr for Store {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Store, StoreError> {
        if s == "memory" {
            return Ok(Store::Memory);
        }
        if !s.starts_with("redis://") {
            return Err(StoreError::Unknown);
        }
        let client = redis::Client::open(s).map_err(|_| StoreError::BadUrl)?;
        Ok(Store::Redis(RedisUrl { client }))
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Memory => f.write_str("memory"),
            Store::Redis(url) => write!(f, "redis://{}", url.redacted()),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_parses_memory_and_redis_urls_and_hides_passwords() {
        assert!(matches!("memory".parse::<Store>(), Ok(Store::Memory)));
        let store: Store = "redis://:s3cret@127.0.0.1:6380/2".parse().unwrap();
        assert_eq!(store.to_string(), "redis://127.0.0.1:6380/2");
        assert!(!format!("{store:?}").contains("s3cret"));
        let err = "memcached://x".parse::<Store>().unwrap_err().to_string();
        assert!(err.contains("expected `memory` or `redis://"), "{err}");
        assert!("redis://host:notaport".parse::<Store>().is_err());
    }
}
