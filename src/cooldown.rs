//! `cooldown:`: after a rule answers a user, it passes that user over for a while. Kept per
//! (account, rule, user), in process (bounded) or, with `--store redis://…`, in Redis
//! (shared by every instance, as expiring keys). A Redis that fails falls back to the
//! process's own store, as dedup does.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;

use crate::clock::Clock;
use crate::store::Redis;

/// Users × rules whose cooldown the process remembers; past it the least recently used are
/// forgotten (their rule may answer them again early).
pub const MEMORY_ENTRIES: usize = 200_000;

pub struct Cooldowns {
    /// Key → the unix second the cooldown ends.
    memory: Cache<String, u64>,
    redis: Option<Arc<Redis>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Cooldowns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cooldowns")
            .field("memory", &self.memory.len())
            .field("redis", &self.redis.is_some())
            .finish()
    }
}

impl Cooldowns {
    /// In process, and in `redis` when given.
    pub fn new(clock: Arc<dyn Clock>, redis: Option<Arc<Redis>>) -> Cooldowns {
        Cooldowns {
            memory: Cache::new(MEMORY_ENTRIES),
            redis,
            clock,
        }
    }

    fn key(account: &str, rule: &str, user: &str) -> String {
        format!("wxrules:cooldown:{account}:{rule}:{user}")
    }

    /// Whether `rule` is cooling down for `user` of `account`.
    pub async fn cooling(&self, account: &str, rule: &str, user: &str) -> bool {
        let key = Cooldowns::key(account, rule, user);
        if let Some(redis) = &self.redis {
            let found = redis
                .run(|mut conn| {
                    let mut exists = redis::cmd("EXISTS");
                    exists.arg(&key);
                    async move { redis.bounded(exists.query_async::<i64>(&mut conn)).await }
                })
                .await;
            if let Some(found) = found {
                return found > 0;
            }
        }
        self.memory
            .get(&key)
            .is_some_and(|until| self.clock.now() < until)
    }

    /// Starts `rule`'s cooldown of `seconds` for `user`.
    pub async fn start(&self, account: &str, rule: &str, user: &str, seconds: u64) {
        let key = Cooldowns::key(account, rule, user);
        self.memory
            .insert(key.clone(), self.clock.now().saturating_add(seconds));
        if let Some(redis) = &self.redis {
            let millis = Duration::from_secs(seconds).as_millis().to_string();
            redis
                .run(|mut conn| {
                    let mut set = redis::cmd("SET");
                    set.arg(&key).arg(1).arg("PX").arg(&millis);
                    async move { redis.bounded(set.query_async::<()>(&mut conn)).await }
                })
                .await;
        }
    }
}
