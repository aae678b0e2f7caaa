//! WeChat's customer-service quota per account and user (since June 2023): after a user's
//! message, 5 messages within 48 h; after a menu click, a follow or a QR scan, 3 within
//! 1 minute. A user's next action opens a new window (the quota is reset, not added to).
//! Each window is known by the action's time (`since`, its `CreateTime`); `take` counts
//! messages against it and says how many may go. In process (bounded) or, with `--store
//! redis://…`, in Redis (shared by every instance, one expiring hash per user). Knows
//! nothing of HTTP or WeChat's XML.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use super::Link;

/// Users whose window the process remembers; past it the expired ones go, then new
/// windows are not counted (and their messages are sent, WeChat refusing past its quota
/// with 45047).
pub const MEMORY_ENTRIES: usize = 200_000;

/// One window of WeChat's quota. Carried with the messages counted against it (in the
/// outbox, and in its Redis streams as JSON), so that a 45047 spends the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// The unix second of the action that opened it.
    pub since: u64,
    /// Which action opened it (a hash of the push's dedup key): two actions in the same
    /// second open two windows, one after the other.
    pub action: u64,
    /// Messages it allows.
    pub limit: u32,
    /// How long it lasts, in seconds.
    pub seconds: u64,
}

impl Window {
    /// The window a user's action opens: `event` is the push's `Event` for an event.
    pub fn after(since: u64, action: u64, event: Option<&str>) -> Window {
        let (limit, seconds) = match event {
            None => (5, 48 * 3600),
            Some(_) => (3, 60),
        };
        Window {
            since,
            action,
            limit,
            seconds,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    since: u64,
    action: u64,
    until: u64,
    used: u32,
}

/// The quota of every account's users (keys carry the account's scope).
pub struct Quota {
    memory: Mutex<HashMap<String, Count>>,
    link: Option<Arc<Link>>,
}

impl std::fmt::Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field("memory", &self.memory.lock().len())
            .field("redis", &self.link.is_some())
            .finish()
    }
}

/// ARGV: since, limit, until, n, now, spent (1: the window is used up), action. Returns
/// how many of the n may go.
/// `TAKE`, hashed once (`EVALSHA` by its SHA-1; loaded when Redis answers `NOSCRIPT`).
static TAKE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TAKE));

const TAKE: &str = r"
local since = tonumber(ARGV[1])
local known = tonumber(redis.call('HGET', KEYS[1], 'since') or '-1')
if since > known or (since == known and redis.call('HGET', KEYS[1], 'action') ~= ARGV[7]) then
  redis.call('HSET', KEYS[1], 'since', since, 'until', ARGV[3], 'used', 0, 'action', ARGV[7])
elseif since < known then
  return 0
end
local ends = tonumber(redis.call('HGET', KEYS[1], 'until'))
if tonumber(ARGV[5]) >= ends then return 0 end
local used = tonumber(redis.call('HGET', KEYS[1], 'used'))
local left = tonumber(ARGV[2]) - used
if ARGV[6] == '1' then left = 0; used = tonumber(ARGV[2]) end
local n = math.max(0, math.min(left, tonumber(ARGV[4])))
redis.call('HSET', KEYS[1], 'used', used + n)
redis.call('PEXPIRE', KEYS[1], math.max(1000, (ends - tonumber(ARGV[5])) * 1000))
return n";

fn key(scope: &str, user: &str) -> String {
    format!("wxrules:quota:{scope}{user}")
}

impl Quota {
    /// In process, and in Redis through `link` when given.
    pub fn new(link: Option<Arc<Link>>) -> Quota {
        Quota {
            memory: Mutex::new(HashMap::new()),
            link,
        }
    }

    /// Counts up to `n` messages to `user` of `scope` in `window` at the unix second `now`:
    /// how many of them may go. A window older than the user's latest is spent.
    pub async fn take(&self, scope: &str, user: &str, window: Window, n: u32, now: u64) -> u32 {
        self.count(scope, user, window, n, now, false).await
    }

    /// WeChat answered 45047 (quota spent): the window allows nothing more.
    pub async fn spent(&self, scope: &str, user: &str, window: Window, now: u64) {
        self.count(scope, user, window, 0, now, true).await;
    }

    async fn count(
        &self,
        scope: &str,
        user: &str,
        window: Window,
        n: u32,
        now: u64,
        spent: bool,
    ) -> u32 {
        let key = key(scope, user);
        let until = window.since.saturating_add(window.seconds);
        let script = &*TAKE_SCRIPT;
        Link::or_memory(
            self.link.as_deref(),
            |mut conn| {
                let (script, key) = (&script, &key);
                async move {
                    let mut invocation = script.key(key);
                    invocation
                        .arg(window.since)
                        .arg(window.limit)
                        .arg(until)
                        .arg(n)
                        .arg(now)
                        .arg(if spent { "1" } else { "0" })
                        .arg(window.action.to_string());
                    conn.script::<u32>(&invocation).await
                }
            },
            || self.count_here(key.clone(), window, until, n, now, spent),
        )
        .await
    }

    fn count_here(
        &self,
        key: String,
        window: Window,
        until: u64,
        n: u32,
        now: u64,
        spent: bool,
    ) -> u32 {
        let mut memory = self.memory.lock();
        if memory.len() >= MEMORY_ENTRIES && !memory.contains_key(&key) {
            memory.retain(|_, count| count.until > now);
            if memory.len() >= MEMORY_ENTRIES {
                return n;
            }
        }
        let count = memory.entry(key).or_insert(Count {
            since: window.since,
            action: window.action,
            until,
            used: 0,
        });
        let newer = window.since > count.since
            || (window.since == count.since && window.action != count.action);
        if newer {
            *count = Count {
                since: window.since,
                action: window.action,
                until,
                used: 0,
            };
        } else if window.since < count.since || now >= count.until {
            return 0;
        }
        if spent {
            count.used = window.limit;
        }
        let allowed = n.min(window.limit.saturating_sub(count.used));
        count.used += allowed;
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn windows_count_and_reset(quota: &Quota) {
        let message = Window::after(1_000, 1, None);
        assert_eq!(quota.take("a=x:", "u", message, 3, 1_001).await, 3);
        assert_eq!(
            quota.take("a=x:", "u", message, 3, 1_002).await,
            2,
            "5 in 48 h"
        );
        assert_eq!(quota.take("a=x:", "u", message, 1, 1_003).await, 0);
        assert_eq!(
            quota.take("a=y:", "u", message, 1, 1_003).await,
            1,
            "accounts apart"
        );
        // A click opens a new window of 3 in a minute: reset, not added.
        let click = Window::after(2_000, 2, Some("CLICK"));
        assert_eq!(quota.take("a=x:", "u", click, 5, 2_001).await, 3);
        assert_eq!(
            quota.take("a=x:", "u", click, 1, 2_070).await,
            0,
            "the minute is over"
        );
        assert_eq!(
            quota.take("a=x:", "u", message, 1, 2_071).await,
            0,
            "an older window is spent"
        );
        // Another action in the same second: a window of its own.
        let same_second = Window::after(2_000, 9, Some("CLICK"));
        assert_eq!(quota.take("a=x:", "u", same_second, 5, 2_001).await, 3);
        // 45047: spent whatever was counted.
        let next = Window::after(3_000, 3, None);
        assert_eq!(quota.take("a=x:", "v", next, 1, 3_001).await, 1);
        quota.spent("a=x:", "v", next, 3_002).await;
        assert_eq!(quota.take("a=x:", "v", next, 1, 3_003).await, 0);
    }

    #[tokio::test]
    async fn in_process() {
        windows_count_and_reset(&Quota::new(None)).await;
    }

    #[tokio::test]
    async fn in_redis() {
        let server = super::super::redis_server::RedisServer::start();
        let link = super::super::test_link(&server.url());
        windows_count_and_reset(&Quota::new(Some(Arc::clone(&link)))).await;
        assert!(!link.is_down(), "every step ran in Redis, none fell back");
    }
}
