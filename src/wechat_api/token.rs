//! The access token of one account, cached until shortly before it expires, with one
//! refresh at a time. `Debug` never shows the token.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
        let guard = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*guard {
            Some((token, until)) if Instant::now() < *until => Some(Arc::clone(token)),
            _ => None,
        }
    }

    pub(super) async fn refreshing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refresh.lock().await
    }

    /// Keeps `token`, good for `expires_in` as WeChat says (7,200 s); a short-lived token
    /// is used for half its life.
    pub(super) fn store(&self, token: Arc<str>, expires_in: Duration) {
        let usable = expires_in
            .checked_sub(MARGIN)
            .filter(|d| *d >= expires_in / 2)
            .unwrap_or(expires_in / 2);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((token, Instant::now() + usable));
    }

    pub(super) fn clear(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_until_shortly_before_it_expires_and_never_shown() {
        let cache = TokenCache::default();
        assert!(cache.current().is_none());
        cache.store("t0ken-secret".into(), Duration::from_secs(7200));
        assert_eq!(cache.current().as_deref(), Some("t0ken-secret"));
        assert!(!format!("{cache:?}").contains("t0ken"));
        // Expired already (a zero lifetime): not used.
        cache.store("gone".into(), Duration::ZERO);
        assert!(cache.current().is_none());
        cache.store("t".into(), Duration::from_secs(7200));
        cache.clear();
        assert!(cache.current().is_none());
    }
}
