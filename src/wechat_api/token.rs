//! How long a fetched access token is used (`usable`): until shortly before WeChat says it
//! expires. Where it is kept, in process and shared through Redis, is
//! `store::token::TokenStore`'s; the refresh itself is `Api::refresh_token`'s.

use std::time::Duration;

/// A token is used until this long before WeChat says it expires, so that a call made
/// just before the end does not carry a token that expires on the way.
const MARGIN: Duration = Duration::from_secs(300);

/// How long a token that WeChat says lasts `expires_in` is used.
pub(super) fn usable(expires_in: Duration) -> Duration {
    expires_in
        .checked_sub(MARGIN)
        .filter(|d| *d >= expires_in / 2)
        .unwrap_or(expires_in / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::token::TokenStore;

    #[test]
    fn a_token_is_used_until_shortly_before_it_expires_and_never_shown() {
        let cache = TokenStore::default();
        assert!(cache.current().is_none());
        cache.keep("t0ken-secret".into(), usable(Duration::from_secs(7200)));
        assert_eq!(usable(Duration::from_secs(7200)), Duration::from_secs(6900));
        assert_eq!(usable(Duration::from_secs(400)), Duration::from_secs(200));
        assert_eq!(cache.current().as_deref(), Some("t0ken-secret"));
        assert!(!format!("{cache:?}").contains("t0ken"));
        // Expired already (a zero lifetime): not used.
        cache.keep("gone".into(), usable(Duration::ZERO));
        assert!(cache.current().is_none());
        cache.keep("t".into(), usable(Duration::from_secs(7200)));
        cache.clear();
        assert!(cache.current().is_none());
    }
}
