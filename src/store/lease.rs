//! A key one owner holds for a while: taken with `SET NX PX`, renewed and let go only by
//! its owner (Lua through `redis::Script`, so another's hold is never touched). The access
//! token's fetch lock and each outbox shard's lease. Redis only: in process there is
//! nobody to share with.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::link::{Link, Unavailable};
use super::{millis, set_nx_px};

/// Extends the hold only if it is the caller's.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
         return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
    )
});
/// Deletes the key only if it holds the caller's value.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
         return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

/// One owner's hold on `key`.
#[derive(Debug)]
pub(crate) struct Lease {
    link: Arc<Link>,
    key: String,
    /// The owner's value in the key: only it renews or lets go.
    owner: String,
}

impl Lease {
    pub(crate) fn new(link: Arc<Link>, key: String, owner: String) -> Lease {
        Lease { link, key, owner }
    }

    /// Takes the key for `ttl`: `Ok(true)` taken, `Ok(false)` held by another.
    pub(crate) async fn take(&self, ttl: Duration) -> Result<bool, Unavailable> {
        let set = set_nx_px(&self.key, &self.owner, ttl);
        self.link
            .run(|mut conn| {
                let set = &set;
                async move { conn.query::<Option<String>>(set).await }
            })
            .await
            .map(|set| set.is_some())
    }

    /// Extends the hold by `ttl` if it is still the owner's: `Ok(true)` when it is.
    pub(crate) async fn renew(&self, ttl: Duration) -> Result<bool, Unavailable> {
        self.if_owner(&RENEW, Some(ttl)).await
    }

    /// Lets the key go if it is still the owner's; never another's.
    pub(crate) async fn release(&self) {
        // Nothing to do when Redis is away: the hold lapses by itself.
        let _ = self.if_owner(&RELEASE, None).await;
    }

    async fn if_owner(&self, script: &Script, ttl: Option<Duration>) -> Result<bool, Unavailable> {
        let mut invocation = script.key(&self.key);
        invocation.arg(&self.owner);
        if let Some(ttl) = ttl {
            invocation.arg(millis(ttl));
        }
        self.link
            .run(|mut conn| {
                let invocation = &invocation;
                async move { conn.script::<i64>(invocation).await }
            })
            .await
            .map(|done| done == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::redis_server;
    use super::*;

    use super::super::test_link as link;

    #[tokio::test]
    async fn only_the_owner_renews_or_lets_go_and_scripts_load_themselves() {
        let redis = redis_server::RedisServer::start();
        let link = link(&redis.url());
        let mine = Lease::new(Arc::clone(&link), "l".into(), "me".into());
        let theirs = Lease::new(Arc::clone(&link), "l".into(), "them".into());
        let ttl = Duration::from_secs(10);
        assert_eq!(mine.take(ttl).await, Ok(true));
        assert_eq!(theirs.take(ttl).await, Ok(false));
        // The scripts are not in Redis yet: EVALSHA fails, and the script is loaded.
        assert_eq!(theirs.renew(ttl).await, Ok(false));
        assert_eq!(mine.renew(ttl).await, Ok(true));
        theirs.release().await;
        assert_eq!(redis.get("l").as_deref(), Some("me"));
        mine.release().await;
        assert_eq!(redis.get("l"), None);
        assert_eq!(theirs.take(ttl).await, Ok(true));
        // Redis gone: the lease says so rather than guess.
        drop(redis);
        assert_eq!(mine.take(ttl).await, Err(Unavailable));
        assert!(link.is_down());
    }
}
