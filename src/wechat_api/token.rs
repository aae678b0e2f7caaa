//! The access token of one account, cached until shortly before it expires, with one
//! refresh at a time in this process, and, with Redis, one for all instances (`Shared`).
//! `Debug` never shows the token.

use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{set_px, Lease, Redis, Unavailable};

/// The longest a token is kept, whatever an answer says: WeChat's tokens last 2 hours.
const MAX_LIFE: Duration = Duration::from_secs(2 * 7200);

/// A token is used until this long before WeChat says it expires, so that a call made
/// just before the end does not carry a token that expires on the way.
const MARGIN: Duration = Duration::from_secs(300);

#[derive(Default)]
pub(super) struct TokenCache {
    current: Mutex<Option<(Arc<str>, Instant)>>,
    /// Held by the one caller that fetches; the others wait, then use what it got.
    refresh: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("cached", &self.current().is_some())
            .finish()
    }
}

impl TokenCache {
    /// The token, if there is one still good for at least `MARGIN`.
    pub(super) fn current(&self) -> Option<Arc<str>> {
        let guard = self.current.lock();
        match &*guard {
            Some((token, until)) if Instant::now() < *until => Some(Arc::clone(token)),
            _ => None,
        }
    }

    pub(super) async fn refreshing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refresh.lock().await
    }

    /// Keeps `token` for `usable` (see `usable`).
    pub(super) fn store(&self, token: Arc<str>, usable: Duration) {
        // `usable` comes from an answer (WeChat's, a proxy's, Redis'): never trusted to fit.
        let until = Instant::now()
            .checked_add(usable.min(MAX_LIFE))
            .unwrap_or_else(Instant::now);
        *self.current.lock() = Some((token, until));
    }

    pub(super) fn clear(&self) {
        *self.current.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_until_shortly_before_it_expires_and_never_shown() {
        let cache = TokenCache::default();
        assert!(cache.current().is_none());
        cache.store("t0ken-secret".into(), usable(Duration::from_secs(7200)));
        assert_eq!(usable(Duration::from_secs(7200)), Duration::from_secs(6900));
        assert_eq!(usable(Duration::from_secs(400)), Duration::from_secs(200));
        assert_eq!(cache.current().as_deref(), Some("t0ken-secret"));
        assert!(!format!("{cache:?}").contains("t0ken"));
        // Expired already (a zero lifetime): not used.
        cache.store("gone".into(), usable(Duration::ZERO));
        assert!(cache.current().is_none());
        cache.store("t".into(), usable(Duration::from_secs(7200)));
        cache.clear();
        assert!(cache.current().is_none());
    }
}

/// The token shared through Redis by every instance of one account (`--store redis://…`):
/// `wxrules:token:APPID` holds it for its usable life, and `wxrules:token:APPID:lock`, taken
/// with `SET NX PX`, lets one instance fetch while the others wait for what it stores.
#[derive(Debug)]
pub(super) struct Shared {
    redis: Arc<Redis>,
    key: String,
    /// The fetch lock, under this instance's own value, so that only it frees the lock.
    lock: Lease,
}

/// What taking the fetch lock came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lock {
    Taken,
    /// Another instance is fetching: wait for its token.
    HeldByOther,
    /// Redis did not answer: fetch here, at once.
    Unavailable,
}

/// How long the fetch lock lasts: past one API call's timeout, so that an instance that
/// died holding it does not hold the others up for long.
const LOCK_FOR: Duration = Duration::from_secs(15);
/// How long an instance waits for another's fetch before it fetches itself.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(12);
const POLL_EVERY: Duration = Duration::from_millis(50);

impl Shared {
    pub(super) fn new(redis: Arc<Redis>, appid: &str) -> Shared {
        use rand::distributions::{Alphanumeric, DistString};
        let owner = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
        Shared {
            lock: Lease::new(
                Arc::clone(&redis),
                format!("wxrules:token:{appid}:lock"),
                owner,
            ),
            redis,
            key: format!("wxrules:token:{appid}"),
        }
    }

    /// The shared token and how long it is still good for, if there is one.
    pub(super) async fn get(&self) -> Option<(Arc<str>, Duration)> {
        let mut pipe = redis::pipe();
        pipe.add_command(redis::Cmd::get(&self.key))
            .add_command(redis::Cmd::pttl(&self.key));
        let found = self
            .redis
            .run(|mut conn| {
                let pipe = &pipe;
                async move { conn.pipe::<(Option<String>, i64)>(pipe).await }
            })
            .await
            .ok()?;
        match found {
            (Some(token), ttl) if ttl > 0 && !token.is_empty() => Some((
                token.into(),
                Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
            )),
            _ => None,
        }
    }

    /// Takes the fetch lock under this instance's own value.
    pub(super) async fn lock(&self) -> Lock {
        match self.lock.take(LOCK_FOR).await {
            Ok(true) => Lock::Taken,
            Ok(false) => Lock::HeldByOther,
            Err(Unavailable) => Lock::Unavailable,
        }
    }

    /// Stores a fresh token for `usable`, and lets the lock go if it is still ours.
    pub(super) async fn put(&self, token: &str, usable: Duration) {
        let set = set_px(&self.key, token, usable.min(MAX_LIFE));
        // Redis away: the other instances fetch their own.
        let _ = self
            .redis
            .run(|mut conn| {
                let set = &set;
                async move { conn.query::<()>(set).await }
            })
            .await;
        self.unlock().await;
    }

    /// Lets the lock go, if it is still ours: a fetch that outlived the lock must not
    /// free another instance's.
    pub(super) async fn unlock(&self) {
        self.lock.release().await;
    }

    /// Waits for another instance's fetch: the token it stores, unless it is `rejected`.
    pub(super) async fn wait(&self, rejected: Option<&str>) -> Option<(Arc<str>, Duration)> {
        let until = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(POLL_EVERY).await;
            if self.redis.is_down() {
                return None;
            }
            if let Some((token, ttl)) = self.get().await {
                if rejected != Some(&*token) {
                    return Some((token, ttl));
                }
            }
        }
        None
    }
}

/// How long a token that WeChat says lasts `expires_in` is used.
pub(super) fn usable(expires_in: Duration) -> Duration {
    expires_in
        .checked_sub(MARGIN)
        .filter(|d| *d >= expires_in / 2)
        .unwrap_or(expires_in / 2)
}
