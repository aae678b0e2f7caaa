//! Answers kept for a user's next message: a slow call's answer that came after every
//! attempt of WeChat's had been answered, the parts of a long answer not sent yet, or what
//! the customer-service quota left over. One value per (account, user), replaced as a
//! whole by compare-and-swap (`swap`), so that two messages of one user cannot both take
//! the same answer. In process (bounded per account and in bytes) or, with `--store
//! redis://…`, in Redis (shared by every instance, expiring keys). Values are opaque
//! strings; knows nothing of HTTP, rules or WeChat's XML.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

use super::{millis, Link};
use crate::clock::Clock;

/// The largest value kept: a call's answer is at most 64 KiB, its parts and their
/// bookkeeping somewhat more.
pub const MAX_VALUE: usize = 256 << 10;
/// Users with a kept answer per account, in process; past it the one that expires first
/// is dropped (counted).
pub const PER_ACCOUNT: usize = 10_000;
/// Bytes of kept values in process, every account together; past it a new value is
/// refused (counted as dropped).
pub const MEMORY_BYTES: usize = 128 << 20;

/// What `swap` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    /// The value was as expected and is now the new one.
    Done,
    /// The value had changed (another message took or added to it): read it again.
    Changed,
    /// The new value is over `MAX_VALUE`, or the process holds `MEMORY_BYTES`: not kept.
    Refused,
}

struct Entry {
    value: Arc<str>,
    /// The unix second it is forgotten.
    until: u64,
    scope: Arc<str>,
}

#[derive(Default)]
struct Memory {
    entries: HashMap<String, Entry>,
    per_scope: HashMap<Arc<str>, usize>,
    bytes: usize,
}

impl Memory {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.bytes = self.bytes.saturating_sub(entry.value.len() + key.len());
        if let Some(count) = self.per_scope.get_mut(&entry.scope) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_scope.remove(&entry.scope);
            }
        }
        Some(entry)
    }
}

/// The kept answers of one server (keys carry the account's scope).
pub struct Kept {
    memory: Mutex<Memory>,
    /// Entries in `memory`, readable without the lock: a push of an account whose rules
    /// never keep anything, or of a process that keeps nothing, looks no further.
    held: AtomicUsize,
    /// Values dropped to stay within `PER_ACCOUNT`, since start.
    dropped: AtomicUsize,
    link: Option<Arc<Link>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("memory", &self.held.load(Ordering::Relaxed))
            .field("redis", &self.link.is_some())
            .finish()
    }
}

/// Replaces the value when it is the expected one. ARGV: 1 when a value is expected, the
/// expected value, the new value ('' deletes), the time to live in milliseconds.
/// `SWAP`, hashed once (`EVALSHA` by its SHA-1; loaded when Redis answers `NOSCRIPT`).
static SWAP_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SWAP));

const SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1";

fn key(scope: &str, user: &str) -> String {
    format!("wxrules:kept:{scope}{user}")
}

impl Kept {
    /// In process, and in Redis through `link` when given.
    pub fn new(clock: Arc<dyn Clock>, link: Option<Arc<Link>>) -> Kept {
        Kept {
            memory: Mutex::new(Memory::default()),
            held: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            link,
            clock,
        }
    }

    /// Whether values are kept in Redis (then any instance may hold one).
    pub fn shared(&self) -> bool {
        self.link.is_some()
    }

    /// The key of `user`'s kept answers in Redis, when they are kept there and this
    /// process holds none of its own (kept while Redis was away): read by a push's dedup
    /// claim in its own round trip (`store::dedup::With::kept`).
    pub fn redis_key(&self, scope: &str, user: &str) -> Option<String> {
        (self.shared() && !self.any_here()).then(|| key(scope, user))
    }

    /// Whether this process holds any value (in process only).
    pub fn any_here(&self) -> bool {
        self.held.load(Ordering::Relaxed) > 0
    }

    /// Values dropped since start to stay within `PER_ACCOUNT`.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The value kept for `user` of the account `scope`, if any.
    pub async fn get(&self, scope: &str, user: &str) -> Option<Arc<str>> {
        let key = key(scope, user);
        let get = redis::Cmd::get(&key);
        Link::or_memory(
            self.link.as_deref(),
            |mut conn| {
                let get = &get;
                async move { Ok(conn.query::<Option<String>>(get).await?.map(Arc::from)) }
            },
            || self.get_here(&key),
        )
        .await
    }

    fn get_here(&self, key: &str) -> Option<Arc<str>> {
        let now = self.clock.now();
        let mut memory = self.memory.lock();
        match memory.entries.get(key) {
            Some(entry) if entry.until > now => Some(Arc::clone(&entry.value)),
            Some(_) => {
                memory.remove(key);
                self.held.store(memory.entries.len(), Ordering::Relaxed);
                None
            }
            None => None,
        }
    }

    /// Replaces the value of `user` of `scope` with `new` (`None` removes it) if it is
    /// `expected` (`None`: if there is none), to be kept for `ttl`.
    pub async fn swap(
        &self,
        scope: &str,
        user: &str,
        expected: Option<&str>,
        new: Option<&str>,
        ttl: Duration,
    ) -> Swapped {
        if new.is_some_and(|v| v.len() > MAX_VALUE || v.is_empty()) {
            return Swapped::Refused;
        }
        let key = key(scope, user);
        let script = &*SWAP_SCRIPT;
        Link::or_memory(
            self.link.as_deref(),
            |mut conn| {
                let (script, key) = (&script, &key);
                async move {
                    let mut invocation = script.key(key);
                    invocation
                        .arg(if expected.is_some() { "1" } else { "0" })
                        .arg(expected.unwrap_or(""))
                        .arg(new.unwrap_or(""))
                        .arg(millis(ttl).max(1));
                    let done: u32 = conn.script(&invocation).await?;
                    Ok(if done == 1 {
                        Swapped::Done
                    } else {
                        Swapped::Changed
                    })
                }
            },
            || self.swap_here(scope, key.clone(), expected, new, ttl),
        )
        .await
    }

    fn swap_here(
        &self,
        scope: &str,
        key: String,
        expected: Option<&str>,
        new: Option<&str>,
        ttl: Duration,
    ) -> Swapped {
        let now = self.clock.now();
        let mut memory = self.memory.lock();
        let current = memory
            .entries
            .get(&key)
            .filter(|entry| entry.until > now)
            .map(|entry| &*entry.value);
        if current != expected {
            return Swapped::Changed;
        }
        let old = memory.remove(&key);
        let outcome = match new {
            None => Swapped::Done,
            Some(value) if memory.bytes + value.len() + key.len() > MEMORY_BYTES => {
                Swapped::Refused
            }
            Some(value) => {
                let scope: Arc<str> = old.map_or_else(|| Arc::from(scope), |old| old.scope);
                let count = memory.per_scope.get(&scope).copied().unwrap_or(0);
                if count >= PER_ACCOUNT {
                    // The one that expires first of this account goes.
                    let first = memory
                        .entries
                        .iter()
                        .filter(|(_, entry)| entry.scope == scope)
                        .min_by_key(|(_, entry)| entry.until)
                        .map(|(key, _)| key.clone());
                    if let Some(first) = first {
                        memory.remove(&first);
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                memory.bytes += value.len() + key.len();
                *memory.per_scope.entry(Arc::clone(&scope)).or_insert(0) += 1;
                memory.entries.insert(
                    key,
                    Entry {
                        value: Arc::from(value),
                        until: now.saturating_add(ttl.as_secs().max(1)),
                        scope,
                    },
                );
                Swapped::Done
            }
        };
        self.held.store(memory.entries.len(), Ordering::Relaxed);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const TTL: Duration = Duration::from_secs(1800);

    async fn values_swap_only_from_what_was_read(kept: &Kept) {
        assert_eq!(kept.get("a=x:", "u1").await, None);
        assert_eq!(
            kept.swap("a=x:", "u1", None, Some("v1"), TTL).await,
            Swapped::Done
        );
        assert_eq!(
            kept.swap("a=x:", "u1", None, Some("v2"), TTL).await,
            Swapped::Changed,
            "a value is there: not replaced blindly"
        );
        assert_eq!(kept.get("a=x:", "u1").await.as_deref(), Some("v1"));
        assert_eq!(kept.get("a=y:", "u1").await, None, "accounts are apart");
        assert_eq!(
            kept.swap("a=x:", "u1", Some("v1"), None, TTL).await,
            Swapped::Done
        );
        assert_eq!(
            kept.swap("a=x:", "u1", Some("v1"), None, TTL).await,
            Swapped::Changed,
            "taken once"
        );
        let big = "x".repeat(MAX_VALUE + 1);
        assert_eq!(
            kept.swap("a=x:", "u2", None, Some(&big), TTL).await,
            Swapped::Refused
        );
    }

    #[tokio::test]
    async fn in_process_values_expire_and_each_account_is_bounded() {
        let clock = Arc::new(ManualClock::new(1_000));
        let kept = Kept::new(clock.clone(), None);
        values_swap_only_from_what_was_read(&kept).await;
        kept.swap("a=x:", "u", None, Some("v"), Duration::from_secs(60))
            .await;
        assert!(kept.any_here());
        clock.advance(61);
        assert_eq!(kept.get("a=x:", "u").await, None, "expired");
        for i in 0..=PER_ACCOUNT {
            let user = format!("u{i}");
            let ttl = Duration::from_secs(60 + i as u64);
            assert_eq!(
                kept.swap("a=full:", &user, None, Some("v"), ttl).await,
                Swapped::Done
            );
        }
        assert_eq!(kept.dropped(), 1);
        assert_eq!(
            kept.get("a=full:", "u0").await,
            None,
            "the first to expire went"
        );
        assert!(kept.get("a=full:", "u1").await.is_some());
    }

    #[tokio::test]
    async fn in_redis_instances_share_values() {
        let server = super::super::redis_server::RedisServer::start();
        let link = || Some(super::super::test_link(&server.url()));
        let clock = Arc::new(ManualClock::new(1_000));
        let one = Kept::new(clock.clone(), link());
        values_swap_only_from_what_was_read(&one).await;
        let two = Kept::new(clock, link());
        one.swap("a=x:", "u", None, Some("kept on one"), TTL).await;
        assert_eq!(two.get("a=x:", "u").await.as_deref(), Some("kept on one"));
        assert_eq!(
            two.swap("a=x:", "u", Some("kept on one"), None, TTL).await,
            Swapped::Done
        );
        assert_eq!(one.get("a=x:", "u").await, None);
        assert!(
            !two.link.as_ref().unwrap().is_down(),
            "every step ran in Redis"
        );
        assert!(
            !one.link.as_ref().unwrap().is_down(),
            "every step ran in Redis"
        );
    }
}
