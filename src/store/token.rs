//! One account's access token as kept: in process until shortly before it expires, and,
//! with `--store redis://…`, one copy for every instance (`wxrules:token:APPID`) with the
//! fetch lock (`wxrules:token:APPID:lock`, `SET NX PX`) that lets one instance fetch while
//! the others wait for what it stores. When and how to fetch is `wechat_api`'s; this only
//! keeps what it is given. `Debug` never shows the token.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Cmd;

use super::{set_px, Lease, Link, Unavailable};

/// The longest a token is kept, whatever an answer says: WeChat's tokens last 2 hours.
const MAX_LIFE: Duration = Duration::from_secs(2 * 7200);
/// How long the fetch lock lasts: past one API call's timeout, so that an instance that
/// died holding it does not hold the others up for long.
const LOCK_FOR: Duration = Duration::from_secs(15);
/// How long an instance waits for another's fetch before it fetches itself.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(12);
const POLL_EVERY: Duration = Duration::from_millis(50);

/// What taking the fetch lock came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    Taken,
    /// Another instance is fetching: wait for its token.
    HeldByOther,
    /// No other instance to share with, or Redis did not answer: fetch here, at once.
    Here,
}

/// The token of one account: the same methods whether it is kept in process only or
/// shared through Redis too.
#[derive(Default)]
pub(crate) struct TokenStore {
    current: Mutex<Option<(Arc<str>, Instant)>>,
    /// With Redis: the copy every instance reads.
    shared: Option<Shared>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("cached", &self.current().is_some())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// The Redis side of a shared token.
#[derive(Debug)]
struct Shared {
    link: Arc<Link>,
    key: String,
    /// The fetch lock, under this instance's own value, so that only it frees the lock.
    lock: Lease,
}

impl TokenStore {
    /// A token shared through `link` with every instance of the account `appid`.
    pub(crate) fn shared(link: Arc<Link>, appid: &str) -> TokenStore {
        use rand::distributions::{Alphanumeric, DistString};
        let owner = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
        let key = format!("wxrules:token:{appid}");
        TokenStore {
            current: Mutex::default(),
            shared: Some(Shared {
                lock: Lease::new(Arc::clone(&link), format!("{key}:lock"), owner),
                link,
                key,
            }),
        }
    }

    /// The token kept in process, if it is still good.
    pub(crate) fn current(&self) -> Option<Arc<str>> {
        let guard = self.current.lock();
        match &*guard {
            Some((token, until)) if Instant::now() < *until => Some(Arc::clone(token)),
            _ => None,
        }
    }

    /// Keeps `token` in process for `usable`.
    pub(crate) fn keep(&self, token: Arc<str>, usable: Duration) {
        // `usable` comes from an answer (WeChat's, a proxy's, Redis'): never trusted to fit.
        let until = Instant::now()
            .checked_add(usable.min(MAX_LIFE))
            .unwrap_or_else(Instant::now);
        *self.current.lock() = Some((token, until));
    }

    /// Forgets the token kept in process.
    pub(crate) fn clear(&self) {
        *self.current.lock() = None;
    }

    /// The copy another instance stored, unless it is `rejected`; kept in process for the
    /// rest of its life when found. `None` without Redis.
    pub(crate) async fn find_shared(&self, rejected: Option<&str>) -> Option<Arc<str>> {
        let (token, left) = self.shared.as_ref()?.get().await?;
        if rejected == Some(&*token) {
            return None;
        }
        self.keep(Arc::clone(&token), left);
        Some(token)
    }

    /// Takes the fetch lock under this instance's own value.
    pub(crate) async fn lock(&self) -> Lock {
        let Some(shared) = &self.shared else {
            return Lock::Here;
        };
        match shared.lock.take(LOCK_FOR).await {
            Ok(true) => Lock::Taken,
            Ok(false) => Lock::HeldByOther,
            Err(Unavailable) => Lock::Here,
        }
    }

    /// Waits for another instance's fetch: the token it stores, unless it is `rejected`,
    /// kept in process when found. `None` past the wait, or when Redis goes down.
    pub(crate) async fn wait(&self, rejected: Option<&str>) -> Option<Arc<str>> {
        let shared = self.shared.as_ref()?;
        let until = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(POLL_EVERY).await;
            if shared.link.is_down() {
                return None;
            }
            if let Some((token, left)) = shared.get().await {
                if rejected != Some(&*token) {
                    self.keep(Arc::clone(&token), left);
                    return Some(token);
                }
            }
        }
        None
    }

    /// Keeps a fresh token for `usable`, in process and for the other instances, and lets
    /// the fetch lock go if it is still ours.
    pub(crate) async fn put(&self, token: &Arc<str>, usable: Duration) {
        self.keep(Arc::clone(token), usable);
        let Some(shared) = &self.shared else {
            return;
        };
        let set = set_px(&shared.key, &**token, usable.min(MAX_LIFE));
        // Redis away: the other instances fetch their own.
        let _ = shared
            .link
            .run(|mut conn| {
                let set = &set;
                async move { conn.query::<()>(set).await }
            })
            .await;
        shared.lock.release().await;
    }

    /// Lets the fetch lock go, if it is still ours: a fetch that outlived the lock must
    /// not free another instance's.
    pub(crate) async fn unlock(&self) {
        if let Some(shared) = &self.shared {
            shared.lock.release().await;
        }
    }
}

impl Shared {
    /// The shared token and how long it is still good for, if there is one.
    async fn get(&self) -> Option<(Arc<str>, Duration)> {
        let mut pipe = redis::pipe();
        pipe.add_command(Cmd::get(&self.key))
            .add_command(Cmd::pttl(&self.key));
        let found = self
            .link
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
}
