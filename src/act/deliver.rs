//! Callback delivery: a service asked by a `late` rule may answer `202 Accepted` and POST
//! its answer later to the URL wxrules sent it in `X-Wxrules-Deliver`. Each URL is for one
//! call: signed (HMAC-SHA-256 with a key derived from the account's token, so a URL cannot
//! be made up or altered), valid until the call's timeout, and taken once. The call waits
//! for its delivery here and goes on as if the service had answered then. In process: the
//! URL reaches the instance that made the call (`--deliver-url`). Knows nothing of HTTP
//! servers: `server` routes the deliveries here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::clock::Clock;

/// The header that carries the URL.
pub const HEADER: &str = "x-wxrules-deliver";
/// Calls waiting for a delivery at once; past it a call's URL is not given (its service
/// must answer as usual).
pub const MAX_WAITING: usize = 10_000;
/// The largest delivery read, and what a call's answer may be (`call::MAX_ANSWER`, an
/// answer read or delivered alike).
pub const MAX_BODY: usize = 64 * 1024;

/// A delivery refused, and how the server answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// 403: the URL is not one wxrules signed (for this account).
    #[error("the delivery URL's signature does not hold")]
    BadSignature,
    /// 410: past the call's timeout.
    #[error("the delivery URL has expired")]
    Expired,
    /// 410: delivered already, or its call is over.
    #[error("the delivery URL was used, or its call is over")]
    Used,
}

impl Refused {
    pub fn status(self) -> u16 {
        match self {
            Refused::BadSignature => 403,
            Refused::Expired | Refused::Used => 410,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::BadSignature => "bad_signature",
            Refused::Expired => "expired",
            Refused::Used => "used",
        }
    }
}

/// The key an account's delivery URLs are signed with, derived from its token.
#[derive(Clone)]
pub struct DeliverKey([u8; 32]);

impl DeliverKey {
    pub fn from_secret(secret: &str) -> DeliverKey {
        let digest = Sha256::new()
            .chain_update(b"wxrules delivery key\0")
            .chain_update(secret.as_bytes())
            .finalize();
        DeliverKey(digest.into())
    }

    fn mac(&self, account: &str, id: &str, expires: u64) -> Hmac<Sha256> {
        // Any key length is accepted by HMAC: this never fails.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(account.as_bytes());
        mac.update(b"|");
        mac.update(id.as_bytes());
        mac.update(b"|");
        mac.update(expires.to_string().as_bytes());
        mac
    }
}

impl std::fmt::Debug for DeliverKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliverKey(<redacted>)")
    }
}

/// The calls of one server waiting for their delivery.
pub struct Deliveries {
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("waiting", &self.waiting.lock().len())
            .finish()
    }
}

/// A call's delivery URL (the path below the base) and where its delivery will arrive.
#[derive(Debug)]
pub struct Issued {
    pub path: String,
    pub arrives: Waiting,
}

/// A call waiting for its delivery; dropping it makes its URL used.
#[derive(Debug)]
pub struct Waiting {
    id: String,
    receiver: oneshot::Receiver<Value>,
    deliveries: Arc<Deliveries>,
}

impl Waiting {
    /// The delivered answer, or `None` when the server let the call go.
    pub async fn arrived(mut self) -> Option<Value> {
        (&mut self.receiver).await.ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.deliveries.waiting.lock().remove(&self.id);
    }
}

impl Deliveries {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Deliveries> {
        Arc::new(Deliveries {
            waiting: Mutex::new(HashMap::new()),
            clock,
        })
    }

    /// A URL for one call of `account`, valid for `ttl`: `/-/deliver/ACCOUNT/ID.EXPIRES.SIG`.
    /// `None` when `MAX_WAITING` calls wait already.
    pub fn issue(
        self: &Arc<Self>,
        key: &DeliverKey,
        account: &str,
        ttl: Duration,
    ) -> Option<Issued> {
        use rand::distributions::{Alphanumeric, DistString};
        let id = Alphanumeric.sample_string(&mut rand::thread_rng(), 20);
        let expires = self.clock.now().saturating_add(ttl.as_secs().max(1));
        let signature = hex::encode(key.mac(account, &id, expires).finalize().into_bytes());
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            if waiting.len() >= MAX_WAITING {
                return None;
            }
            waiting.insert(id.clone(), sender);
        }
        let account =
            percent_encoding::utf8_percent_encode(account, percent_encoding::NON_ALPHANUMERIC);
        Some(Issued {
            path: format!("/-/deliver/{account}/{id}.{expires}.{signature}"),
            arrives: Waiting {
                id,
                receiver,
                deliveries: Arc::clone(self),
            },
        })
    }

    /// A delivery to `token` (`ID.EXPIRES.SIG`) of `account`: handed to its call, once.
    pub fn deliver(
        &self,
        key: &DeliverKey,
        account: &str,
        token: &str,
        answer: Value,
    ) -> Result<(), Refused> {
        let mut parts = token.splitn(3, '.');
        let (Some(id), Some(expires), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::BadSignature);
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return Err(Refused::BadSignature);
        };
        let Ok(signature) = hex::decode(signature) else {
            return Err(Refused::BadSignature);
        };
        // Constant time (`Mac::verify_slice`).
        if key
            .mac(account, id, expires)
            .verify_slice(&signature)
            .is_err()
        {
            return Err(Refused::BadSignature);
        }
        if self.clock.now() > expires {
            self.waiting.lock().remove(id);
            return Err(Refused::Expired);
        }
        let sender = self.waiting.lock().remove(id).ok_or(Refused::Used)?;
        sender.send(answer).map_err(|_| Refused::Used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use serde_json::json;

    fn token_of(path: &str) -> &str {
        path.rsplit('/').next().unwrap()
    }

    #[tokio::test]
    async fn a_url_delivers_once_within_its_time_and_only_as_signed() {
        let clock = Arc::new(ManualClock::new(1_000));
        let deliveries = Deliveries::new(clock.clone());
        let key = DeliverKey::from_secret("token");
        let issued = deliveries
            .issue(&key, "shop", Duration::from_secs(60))
            .unwrap();
        let token = token_of(&issued.path).to_owned();
        assert!(issued.path.starts_with("/-/deliver/shop/"));
        // Another account's key, or an altered URL: refused.
        let other = DeliverKey::from_secret("other");
        assert_eq!(
            deliveries.deliver(&other, "shop", &token, json!({})),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            deliveries.deliver(&key, "news", &token, json!({})),
            Err(Refused::BadSignature)
        );
        let longer = token.replacen('.', "9.", 1);
        assert_eq!(
            deliveries.deliver(&key, "shop", &longer, json!({})),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            deliveries.deliver(&key, "shop", "x", json!({})),
            Err(Refused::BadSignature)
        );
        // Delivered once; a replay is refused.
        assert_eq!(
            deliveries.deliver(&key, "shop", &token, json!({"answer": 1})),
            Ok(())
        );
        assert_eq!(issued.arrives.arrived().await, Some(json!({"answer": 1})));
        assert_eq!(
            deliveries.deliver(&key, "shop", &token, json!({})),
            Err(Refused::Used)
        );
        // Past its time: expired.
        let late = deliveries
            .issue(&key, "shop", Duration::from_secs(60))
            .unwrap();
        clock.advance(61);
        let late_token = token_of(&late.path).to_owned();
        assert_eq!(
            deliveries.deliver(&key, "shop", &late_token, json!({})),
            Err(Refused::Expired)
        );
        // A call that is over makes its URL used.
        let gone = deliveries
            .issue(&key, "shop", Duration::from_secs(60))
            .unwrap();
        let gone_token = token_of(&gone.path).to_owned();
        drop(gone);
        assert_eq!(
            deliveries.deliver(&key, "shop", &gone_token, json!({})),
            Err(Refused::Used)
        );
    }
}
