//! Plaintext pushes seen. WeChat's plaintext `signature` covers the query (token,
//! `timestamp`, `nonce`), not the body: one signed query, captured, would carry any number
//! of different bodies for as long as its timestamp is accepted (`--max-age`). So each
//! signed (account, timestamp, nonce) is remembered with a hash of the body it came with,
//! for that long: the same body again is a retry (dedup answers it), another body is a
//! replay, refused. In process (bounded) or, with `--store redis://…`, in Redis (shared by
//! every instance: `SET NX PX` of the hash, compared on conflict); a Redis that fails falls
//! back to the process's own store (`Link::or_memory`). Safe mode needs none of this: its
//! `msg_signature` covers the body. Knows nothing of HTTP or WeChat's XML.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::{Cache, GuardResult};
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::{set_nx_px, Link};

/// Signed queries the process remembers; past it the least recently used are forgotten
/// early (a replay of one of those with another body would pass). At 200,000 and a
/// 5-minute window that is 660 pushes a second, every second; some 22 MiB of RSS when
/// full (measured: docs/reliability.md).
pub const MEMORY_ENTRIES: usize = 200_000;
/// How long a query is remembered when the timestamp window is off (`--max-age 0`, which
/// accepts a query for ever): the protection is then as long as this.
pub const WITHOUT_WINDOW: Duration = Duration::from_secs(300);

/// The key of an account's body hashes: derived from its token, so every instance of the
/// account hashes a body alike (Redis compares their hashes) and whoever replays, not
/// knowing the token, cannot predict a hash.
#[derive(Clone, Copy)]
pub struct BodyKey(u64, u64);

impl BodyKey {
    /// Derives the key from `secret` (the account's token) once, when its secrets are
    /// read; never per push.
    pub fn from_secret(secret: &str) -> BodyKey {
        let digest = Sha256::new()
            .chain_update(b"wxrules replay body key\0")
            .chain_update(secret.as_bytes())
            .finalize();
        let mut halves = [0u8; 8];
        halves.copy_from_slice(&digest[..8]);
        let k0 = u64::from_le_bytes(halves);
        halves.copy_from_slice(&digest[8..16]);
        BodyKey(k0, u64::from_le_bytes(halves))
    }
}

impl std::fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyKey(<redacted>)")
    }
}

/// A body's hash: SipHash-1-3, 128 bits, keyed by the account's `BodyKey`. Whoever
/// replays would need a second body with the same hash as the one WeChat sent, without
/// the key and without ever seeing a hash (they stay in this process or in Redis): a keyed
/// pseudo-random function is made for exactly that. It replaced an unkeyed SHA-1, which
/// took a push about 5,700 instructions more than SipHash (benches/instructions.sh,
/// BENCHMARKS.md "Hardening 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHash(u128);

impl BodyHash {
    pub fn of(key: BodyKey, body: &[u8]) -> BodyHash {
        let mut hasher = SipHasher13::new_with_keys(key.0, key.1);
        hasher.write(body);
        BodyHash(hasher.finish128().as_u128())
    }

    fn hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// What a signed query has carried before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen (or forgotten): remembered with this body from now on.
    New,
    /// Seen with this very body: a retry.
    Same,
    /// Seen with another body: a replay of a captured query.
    Other,
}

/// The signed queries of one server, shared by its workers and accounts (keys carry the
/// account).
pub struct Replays {
    /// Key (a hash of account, timestamp and nonce) → (body, the unix second it is
    /// forgotten).
    memory: Cache<u64, (BodyHash, u64)>,
    /// Hashes the memory's keys, with a seed of this process's own.
    keys: foldhash::fast::RandomState,
    link: Option<Arc<Link>>,
}

impl std::fmt::Debug for Replays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replays")
            .field("memory", &self.memory.len())
            .field("redis", &self.link.is_some())
            .finish()
    }
}

/// One signed query: whose, when signed, and its nonce.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The account's scope (`Account::scope`): empty for a fleet of one.
    pub scope: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
}

impl Replays {
    /// In process, and in Redis through `link` when given.
    pub fn new(link: Option<Arc<Link>>) -> Replays {
        Replays {
            memory: Cache::new(MEMORY_ENTRIES),
            keys: foldhash::fast::RandomState::default(),
            link,
        }
    }

    /// Remembers `body` for `query` until the unix second `until` (when its timestamp is
    /// no longer accepted), and says what the query carried before. `now` is the unix
    /// second. One memory insert, or one Redis command (two when the query was seen).
    pub async fn check(&self, query: Query<'_>, body: BodyHash, now: u64, until: u64) -> Seen {
        self.check_pending(&self.pending(query, body, now, until))
            .await
    }

    /// Whether checks are better put off (`pending`) to be made with the push's dedup
    /// claim, in its round trip: with Redis. In process a check costs no round trip.
    pub fn deferred(&self) -> bool {
        self.link.is_some()
    }

    /// The check of `query` with `body`, to be made later: by `check_pending`, or in
    /// Redis within the dedup claim's script (`dedup::Ticket::settle`, `claim_redis`).
    /// Its Redis key and value are written only with Redis, the one place they are read
    /// (in process they were 1,000 instructions a push).
    pub fn pending(&self, query: Query<'_>, body: BodyHash, now: u64, until: u64) -> Pending {
        let redis = self.link.is_some().then(|| RedisCheck {
            key: format!(
                "wxrules:replay:{}{}:{}",
                query.scope, query.timestamp, query.nonce
            ),
            hex: body.hex(),
            ttl: Duration::from_secs(until.saturating_sub(now).max(1)),
        });
        Pending {
            redis,
            memory_key: self
                .keys
                .hash_one((query.scope, query.timestamp, query.nonce)),
            body,
            now,
            until,
        }
    }

    /// Makes a put-off check on its own: in Redis when configured, else (or when it does
    /// not answer) in process.
    pub async fn check_pending(&self, pending: &Pending) -> Seen {
        let Some(link) = self.link.as_deref() else {
            return self.check_here(pending);
        };
        let Some(check) = &pending.redis else {
            // Made by a `Replays` without Redis: not this one's (see `pending`).
            return self.check_here(pending);
        };
        let claim = set_nx_px(&check.key, &check.hex, check.ttl);
        let get = redis::Cmd::get(&check.key);
        Link::or_memory(
            Some(link),
            |mut conn| {
                let (claim, get, hex) = (&claim, &get, &check.hex);
                async move {
                    if conn.query::<Option<String>>(claim).await?.is_some() {
                        return Ok(Seen::New);
                    }
                    // Seen: compare. Gone since (expired in between): as new.
                    Ok(match conn.query::<Option<String>>(get).await? {
                        Some(seen) if seen == *hex => Seen::Same,
                        Some(_) => Seen::Other,
                        None => Seen::New,
                    })
                }
            },
            || self.check_here(pending),
        )
        .await
    }

    /// The check in process: the lookup and the insert are one step per key. For a
    /// put-off check whose Redis did not answer, too.
    pub fn check_here(&self, pending: &Pending) -> Seen {
        let Pending {
            memory_key: key,
            body,
            now,
            until,
            ..
        } = *pending;
        match self.memory.get_value_or_guard(&key, None) {
            GuardResult::Guard(guard) => {
                let _ = guard.insert((body, until));
                Seen::New
            }
            GuardResult::Value((seen, _)) if seen == body => Seen::Same,
            GuardResult::Value((_, forgotten_at)) if forgotten_at <= now => {
                self.memory.insert(key, (body, until));
                Seen::New
            }
            GuardResult::Value(_) => Seen::Other,
            // No timeout was given: not returned. As new, rather than refuse a push.
            GuardResult::Timeout => Seen::New,
        }
    }
}

/// A check put off (`Replays::pending`), with what it needs: its Redis key and value (with
/// Redis), and its in-process key.
#[derive(Debug, Clone)]
pub struct Pending {
    redis: Option<RedisCheck>,
    memory_key: u64,
    body: BodyHash,
    now: u64,
    until: u64,
}

/// A check's Redis key (`wxrules:replay:…`), the body's hash as stored, and how long.
#[derive(Debug, Clone)]
struct RedisCheck {
    key: String,
    hex: String,
    ttl: Duration,
}

impl Pending {
    /// The Redis key, the body's hash as stored, and how long; `None` when the check was
    /// made by a `Replays` without Redis, whose checks are never put off.
    pub(super) fn redis(&self) -> Option<(&str, &str, Duration)> {
        self.redis
            .as_ref()
            .map(|check| (check.key.as_str(), check.hex.as_str(), check.ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::super::redis_server;
    use super::*;

    const NOW: u64 = 1_795_737_600;
    const KEY: BodyKey = BodyKey(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);

    #[test]
    fn instances_of_an_account_hash_alike_and_other_accounts_do_not() {
        let body = b"<xml><MsgId>1</MsgId></xml>";
        let (one, again) = (
            BodyKey::from_secret("token-a"),
            BodyKey::from_secret("token-a"),
        );
        assert_eq!(BodyHash::of(one, body), BodyHash::of(again, body));
        let other = BodyKey::from_secret("token-b");
        assert_ne!(BodyHash::of(one, body), BodyHash::of(other, body));
        assert_ne!(
            BodyHash::of(one, body),
            BodyHash::of(one, b"<xml><MsgId>2</MsgId></xml>")
        );
        assert_eq!(format!("{one:?}"), "BodyKey(<redacted>)");
    }

    fn query<'a>(scope: &'a str, nonce: &'a str) -> Query<'a> {
        Query {
            scope,
            timestamp: "1795737600",
            nonce,
        }
    }

    async fn each_query_keeps_its_first_body(replays: &Replays) {
        let (a, b) = (
            BodyHash::of(KEY, b"<xml>a</xml>"),
            BodyHash::of(KEY, b"<xml>b</xml>"),
        );
        let until = NOW + 300;
        assert_eq!(
            replays.check(query("", "1"), a, NOW, until).await,
            Seen::New
        );
        assert_eq!(
            replays.check(query("", "1"), a, NOW, until).await,
            Seen::Same
        );
        assert_eq!(
            replays.check(query("", "1"), b, NOW, until).await,
            Seen::Other
        );
        assert_eq!(
            replays.check(query("", "2"), b, NOW, until).await,
            Seen::New
        );
        // Another account's query of the same timestamp and nonce is its own.
        assert_eq!(
            replays.check(query("a=news:", "1"), b, NOW, until).await,
            Seen::New
        );
    }

    #[tokio::test]
    async fn in_process_a_query_keeps_its_first_body_until_it_expires() {
        let replays = Replays::new(None);
        each_query_keeps_its_first_body(&replays).await;
        let (a, b) = (BodyHash::of(KEY, b"a"), BodyHash::of(KEY, b"b"));
        assert_eq!(
            replays.check(query("", "3"), a, NOW, NOW + 5).await,
            Seen::New
        );
        // Past its window the query is refused as stale anyway; what is kept is forgotten.
        assert_eq!(
            replays.check(query("", "3"), b, NOW + 5, NOW + 10).await,
            Seen::New
        );
    }

    #[tokio::test]
    async fn in_redis_instances_share_what_they_saw_and_a_lost_redis_falls_back() {
        let redis = redis_server::RedisServer::start();
        let link = crate::store::test_link;
        let one = Replays::new(Some(link(&redis.url())));
        each_query_keeps_its_first_body(&one).await;
        // A second instance sees what the first saw.
        let two = Replays::new(Some(link(&redis.url())));
        let (a, b) = (
            BodyHash::of(KEY, b"<xml>a</xml>"),
            BodyHash::of(KEY, b"<xml>b</xml>"),
        );
        assert_eq!(
            two.check(query("", "1"), a, NOW, NOW + 300).await,
            Seen::Same
        );
        assert_eq!(
            two.check(query("", "1"), b, NOW, NOW + 300).await,
            Seen::Other
        );
        let ttl: i64 = {
            let client = redis::Client::open(redis.url()).unwrap();
            let mut conn = client.get_connection().unwrap();
            redis::cmd("PTTL")
                .arg("wxrules:replay:1795737600:1")
                .query(&mut conn)
                .unwrap()
        };
        assert!((299_000..=300_000).contains(&ttl), "{ttl}");
        drop(redis);
        // Redis gone: this process's own memory answers.
        assert_eq!(
            two.check(query("", "9"), a, NOW, NOW + 300).await,
            Seen::New
        );
        assert_eq!(
            two.check(query("", "9"), b, NOW, NOW + 300).await,
            Seen::Other
        );
    }
}
