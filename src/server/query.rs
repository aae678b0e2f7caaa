//! WeChat's signed query: `WechatQuery` reads it (in place when nothing needs decoding),
//! `verify_plain` checks `signature` and the replay window (`--max-age`), `check_replay`
//! holds a plaintext push's query to the body it first came with, and `verify_url` answers
//! the MP console's URL check with it. No body is read here.

use std::borrow::Cow;

use actix_web::{web, HttpRequest, HttpResponse};

use super::refusal::{count_unrouted, log_url_check};
use super::PLAIN_TEXT;
use super::{AppState, ServiceError};
use crate::accounts::Live;
use crate::crypto::{verify_signature, SignatureError};

/// The query WeChat appends to the server URL; the values borrow from it unless they
/// are percent-encoded. Other parameters (`openid`, …) are ignored.
#[derive(Debug, Default)]
pub(crate) struct WechatQuery<'a> {
    pub(super) signature: Option<Cow<'a, str>>,
    pub(super) timestamp: Option<Cow<'a, str>>,
    pub(super) nonce: Option<Cow<'a, str>>,
    pub(super) echostr: Option<Cow<'a, str>>,
    pub(super) encrypt_type: Option<Cow<'a, str>>,
    pub(super) msg_signature: Option<Cow<'a, str>>,
}

impl<'a> WechatQuery<'a> {
    /// Reads a query string (`application/x-www-form-urlencoded`); a parameter given twice
    /// is refused, since which one was signed cannot be told.
    pub(crate) fn parse(query: &'a str) -> Result<WechatQuery<'a>, ServiceError> {
        let mut q = WechatQuery::default();
        for (key, value) in query_pairs(query) {
            let slot = match key.as_ref() {
                "signature" => &mut q.signature,
                "timestamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                "echostr" => &mut q.echostr,
                "encrypt_type" => &mut q.encrypt_type,
                "msg_signature" => &mut q.msg_signature,
                _ => continue,
            };
            if slot.is_some() {
                return Err(ServiceError::Query(format!(
                    "parameter `{}` given more than once",
                    key.chars().take(20).collect::<String>()
                )));
            }
            *slot = Some(value);
        }
        Ok(q)
    }
}

/// The query's `(name, value)` pairs, decoded as `application/x-www-form-urlencoded`.
/// WeChat's query has nothing to decode (hex, digits, letters), and such a query is split
/// in place; one with `%` or `+` goes through `form_urlencoded`.
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let plain = memchr::memchr2(b'%', b'+', query.as_bytes()).is_none();
    let split = plain.then(|| {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(key), Cow::Borrowed(value))
            })
    });
    let decoded = (!plain).then(|| form_urlencoded::parse(query.as_bytes()));
    split
        .into_iter()
        .flatten()
        .chain(decoded.into_iter().flatten())
}

pub(super) fn required<'a>(
    v: &'a Option<Cow<'_, str>>,
    name: &'static str,
) -> Result<&'a str, SignatureError> {
    v.as_deref().ok_or(SignatureError::Missing(name))
}

impl AppState {
    /// Checks `signature` over (token, timestamp, nonce) and the replay window.
    pub(super) fn verify_plain(&self, account: &Live, q: &WechatQuery) -> Result<(), ServiceError> {
        let timestamp = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        let signature = required(&q.signature, "signature")?;
        verify_signature(signature, &[account.secrets.token(), timestamp, nonce])?;
        self.check_fresh(timestamp)
    }

    /// A plaintext push (its body trusted on the query's signature alone): its signed query
    /// must not have come before with another body. The same body again is a retry, and
    /// goes on to the dedup store. Safe mode does not come here: `msg_signature` covers
    /// the body. With Redis the check is not made here but returned, to be made in the
    /// round trip of the push's dedup claim (`Ticket::settle`, `claim_redis`).
    pub(super) async fn check_replay(
        &self,
        account: &Live,
        q: &WechatQuery<'_>,
        body: &[u8],
    ) -> Result<Option<crate::store::replay::Pending>, ServiceError> {
        use crate::store::replay::{BodyHash, Query, Seen};
        let timestamp = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        let now = self.clock.now();
        // Remembered as long as the timestamp is accepted: `--max-age` either side of now.
        let until = match (self.options.max_age, timestamp.parse::<u64>()) {
            (0, _) | (_, Err(_)) => now + crate::store::replay::WITHOUT_WINDOW.as_secs(),
            (max_age, Ok(sent)) => sent.saturating_add(max_age).saturating_add(1),
        };
        let query = Query {
            scope: account.account.scope(),
            timestamp,
            nonce,
        };
        let pending = self.replays.pending(
            query,
            BodyHash::of(account.secrets.body_key(), body),
            now,
            until,
        );
        // With Redis the check goes with the push's dedup claim, in its round trip.
        if self.replays.deferred() {
            return Ok(Some(pending));
        }
        match self.replays.check_here(&pending) {
            Seen::New | Seen::Same => Ok(None),
            Seen::Other => Err(ServiceError::Replayed),
        }
    }

    pub(super) fn check_fresh(&self, timestamp: &str) -> Result<(), ServiceError> {
        let max_age = self.options.max_age;
        if max_age == 0 {
            return Ok(());
        }
        let stale = || ServiceError::Stale(timestamp.chars().take(20).collect());
        let sent: u64 = timestamp.parse().map_err(|_| stale())?;
        if self.clock.now().abs_diff(sent) > max_age {
            return Err(stale());
        }
        Ok(())
    }
}

/// `GET /wechat` (or an account's path): the URL check of the MP console; answers
/// `echostr` when signed with the account's token.
pub(crate) async fn verify_url(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ServiceError> {
    let account = state
        .accounts()
        .route(req.match_info().as_str())
        .filter(|_| req.method() == actix_web::http::Method::GET);
    let Some(account) = account else {
        count_unrouted(&state, &req);
        return Ok(HttpResponse::NotFound().finish());
    };
    let checked = WechatQuery::parse(req.query_string()).and_then(|query| {
        state.verify_plain(&account, &query)?;
        Ok(query.echostr.map(Cow::into_owned).unwrap_or_default())
    });
    let echostr = match checked {
        Ok(echostr) => echostr,
        Err(e) => {
            account.metrics().observe_url_check(false);
            log_url_check(account.account.log_name(), &e);
            return Err(e);
        }
    };
    account.metrics().observe_url_check(true);
    tracing::info!(
        event = "url_check_passed",
        account = account.account.log_name()
    );
    Ok(HttpResponse::Ok().content_type(PLAIN_TEXT).body(echostr))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Split in place or decoded, the pairs are those `form_urlencoded` reads.
        #[test]
        fn query_pairs_are_those_of_form_urlencoded(query in "[ab=&%+2Fé]{0,24}") {
            let ours: Vec<_> = query_pairs(&query).collect();
            let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn wechat_query_is_read_in_place() {
        let q = WechatQuery::parse(
            "signature=0f9d&timestamp=1409304348&nonce=xxxxxx&openid=o1&encrypt_type=aes&msg_signature=ab",
        )
        .unwrap();
        assert!(matches!(q.signature, Some(Cow::Borrowed("0f9d"))));
        assert!(matches!(q.nonce, Some(Cow::Borrowed("xxxxxx"))));
        assert!(matches!(q.encrypt_type, Some(Cow::Borrowed("aes"))));
        assert!(q.echostr.is_none());
        let q = WechatQuery::parse("echostr=a%2Bb+c&nonce=").unwrap();
        assert_eq!(q.echostr.as_deref(), Some("a+b c"));
        assert_eq!(q.nonce.as_deref(), Some(""));
        assert!(WechatQuery::parse("nonce=1&nonce=2").is_err());
    }
}
