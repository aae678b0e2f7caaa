//! `cooldown:`: after a rule answers a user, it passes that user over for a while. Kept per
//! (account, rule, user), in process (bounded) or, with `--store redis://…`, in Redis
//! (shared by every instance, as expiring keys). A Redis that fails falls back to the
//! process's own store (`Link::or_memory`). Knows nothing of rules beyond the names it is given.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;

use super::{set_nx_px, Link};
use crate::clock::Clock;

/// Users × rules whose cooldown the process remembers; past it the least recently used are
/// forgotten (their rule may answer them again early).
pub const MEMORY_ENTRIES: usize = 200_000;

/// A rule's cooldown for one user, to be claimed in Redis together with a push's dedup
/// key (`dedup::Ticket::claim_redis`): one round trip for both.
#[derive(Debug, Clone)]
pub struct CooldownClaim {
    key: String,
    ttl: Duration,
}

impl CooldownClaim {
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// The cooldowns of one server, shared by its workers and accounts (keys carry the account).
pub struct Cooldowns {
    /// Key → the unix second the cooldown ends.
    memory: Cache<String, u64>,
    link: Option<Arc<Link>>,
    clock: Arc<dyn Clock>,
    /// Held while the in-process store checks and claims one key.
    claiming: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for Cooldowns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cooldowns")
            .field("memory", &self.memory.len())
            .field("redis", &self.link.is_some())
            .finish()
    }
}

impl Cooldowns {
    /// In process, and in Redis through `link` when given.
    pub fn new(clock: Arc<dyn Clock>, link: Option<Arc<Link>>) -> Cooldowns {
        Cooldowns {
            memory: Cache::new(MEMORY_ENTRIES),
            link,
            clock,
            claiming: parking_lot::Mutex::new(()),
        }
    }

    fn key(account: &str, rule: &str, user: &str) -> String {
        format!("wxrules:cooldown:{account}:{rule}:{user}")
    }

    /// Claims `rule`'s cooldown for `user` of `account` if it is not cooling down: `true`
    /// when claimed (the rule may answer), `false` when it is cooling down. The check and the
    /// claim are one step (`SET NX` in Redis, under a lock in process), so two messages of a
    /// burst cannot both get the reply. `release` gives the claim back when the rule did not
    /// answer after all.
    pub async fn try_claim(&self, account: &str, rule: &str, user: &str, seconds: u64) -> bool {
        let key = Cooldowns::key(account, rule, user);
        let claim = set_nx_px(&key, 1, Duration::from_secs(seconds));
        Link::or_memory(
            self.link.as_deref(),
            |mut conn| {
                let claim = &claim;
                async move { Ok(conn.query::<Option<String>>(claim).await?.is_some()) }
            },
            || self.claim_here(key, seconds),
        )
        .await
    }

    /// The claim `try_claim` would make, for Redis to make it along with a dedup claim;
    /// `None` without Redis (the in-process store needs no round trip).
    pub fn redis_claim(
        &self,
        account: &str,
        rule: &str,
        user: &str,
        seconds: u64,
    ) -> Option<CooldownClaim> {
        self.link.as_ref()?;
        Some(CooldownClaim {
            key: Cooldowns::key(account, rule, user),
            ttl: Duration::from_secs(seconds),
        })
    }

    /// `try_claim` in process: the check and the claim under one lock.
    fn claim_here(&self, key: String, seconds: u64) -> bool {
        let now = self.clock.now();
        let _one_at_a_time = self.claiming.lock();
        if self.memory.get(&key).is_some_and(|until| now < until) {
            return false;
        }
        self.memory.insert(key, now.saturating_add(seconds));
        true
    }

    /// Gives back a claim whose rule did not answer (`success`, a render error).
    pub async fn release(&self, account: &str, rule: &str, user: &str) {
        let key = Cooldowns::key(account, rule, user);
        self.memory.remove(&key);
        if let Some(link) = &self.link {
            let del = redis::Cmd::del(&key);
            // Redis away: the claim lapses with its cooldown.
            let _ = link
                .run(|mut conn| {
                    let del = &del;
                    async move { conn.query::<i64>(del).await }
                })
                .await;
        }
    }
}
