//! The dedup store's Redis side: the claim script (claim, replay check, cooldown, the
//! user's state read, the answer stored: one round trip) and the answer's store.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::{Answer, Key, With, PENDING, PENDING_TTL, POLL_EVERY};
use crate::store::{millis, set_px, CommandError, Conn, Link};

/// What Redis said about a key.
pub(super) enum RedisClaim {
    /// The key is this attempt's; `cooled` says whether the cooldown asked for with it was
    /// taken too.
    First {
        cooled: Option<bool>,
    },
    Answered(Arc<Answer>),
    /// The replay check found the push's signed query with another body.
    Replayed,
    /// The user has a state (its record as Redis holds it): nothing claimed.
    InState(Option<Vec<u8>>),
    /// An answer is kept for the user: nothing claimed.
    Kept,
    /// Down, failing or slow: dedup in process for this request.
    InProcess,
}

/// What a claim puts in the key.
#[derive(Clone, Copy)]
pub(super) enum Value<'v> {
    /// The pending mark, for `PENDING_TTL`: the answer comes later.
    Pending,
    /// The encoded answer itself, for the TTL.
    Answer(&'v str, Duration),
}

// The dedup commands, on the shared Redis link.

/// The claim of a push, in one step. With a plaintext push's replay check (`ARGV[3]`, the
/// body's hash, not empty): its key (the next of `KEYS`) is taken with the hash for
/// `ARGV[4]` ms, or compared with the hash it holds; another hash answers `{2, 0, nil}`
/// and nothing else is done. For an answer made for a user with nothing waiting, with
/// the user's state key (`ARGV[6]` = `1`; the next of `KEYS`) and the key of an answer
/// kept for them (`ARGV[7]` = `1`; the next): when `KEYS[1]` is free and the state key
/// holds a record, nothing is taken and the record is answered, `{3, 0, record}`; when an
/// answer is kept, nothing is taken, `{4, 0, nil}`. Then takes `KEYS[1]` with the value `ARGV[1]` for `ARGV[2]` ms
/// if nobody holds it and, only then, with a cooldown (`ARGV[5]`, not empty), its key (the
/// last of `KEYS`) with `1` for `ARGV[5]` ms. Answers `{1, taken, nil}` (`taken` 0 when
/// the cooldown was held), or `{0, 0, value}` with the value found in `KEYS[1]`. Atomic,
/// and one round trip (`EVALSHA`; the crate loads the script when Redis answers
/// `NOSCRIPT`, after a restart).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local next = 2 \
         if ARGV[3] ~= '' then \
           local key = KEYS[next] \
           next = next + 1 \
           if not redis.call('SET', key, ARGV[3], 'NX', 'PX', ARGV[4]) then \
             local seen = redis.call('GET', key) \
             if seen and seen ~= ARGV[3] then return {2, 0, false} end \
           end \
         end \
         if ARGV[6] == '1' or ARGV[7] == '1' then \
           local held = redis.call('GET', KEYS[1]) \
           if held then return {0, 0, held} end \
           if ARGV[6] == '1' then \
             local record = redis.call('GET', KEYS[next]) \
             if record then return {3, 0, record} end \
             next = next + 1 \
           end \
           if ARGV[7] == '1' then \
             if redis.call('EXISTS', KEYS[next]) == 1 then return {4, 0, false} end \
             next = next + 1 \
           end \
         end \
         if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
           if ARGV[5] == '' then return {1, 1, false} end \
           if redis.call('SET', KEYS[next], '1', 'NX', 'PX', ARGV[5]) then return {1, 1, false} end \
           return {1, 0, false} \
         end \
         return {0, 0, redis.call('GET', KEYS[1])}",
    )
});

/// Stores the answer under `key` for the TTL.
pub(super) async fn store_on(link: &Link, key: &Key, answer: &Answer, ttl: Duration) {
    let set = set_px(key.as_str(), answer.encode(), ttl);
    // A failed write marks Redis down; the answer goes out either way.
    let _ = link
        .run(|mut conn| {
            let set = &set;
            async move { conn.query::<()>(set).await }
        })
        .await;
}

/// `claim` in Redis: takes the key with `value` (and `cooldown` with it), or waits for the
/// answer of whoever has it, polling until it is there; the caller's deadline bounds the
/// wait.
pub(super) async fn claim_on(
    mut conn: Conn,
    key: &Key,
    value: Value<'_>,
    with: With<'_>,
) -> Result<RedisClaim, CommandError> {
    let mut claim = CLAIM.key(key.as_str());
    match value {
        Value::Pending => claim.arg(PENDING).arg(millis(PENDING_TTL)),
        Value::Answer(encoded, ttl) => claim.arg(encoded).arg(millis(ttl)),
    };
    // A put-off replay check always has its Redis parts: only a `Replays` with Redis puts
    // checks off (`Replays::deferred`), and the same link serves both.
    match with.replay.and_then(|replay| replay.pending.redis()) {
        Some((replay_key, hash, ttl)) => claim.key(replay_key).arg(hash).arg(millis(ttl)),
        None => claim.arg("").arg(""),
    };
    if let Some(state) = with.state {
        claim.key(state);
    }
    if let Some(kept) = with.kept {
        claim.key(kept);
    }
    match with.cooldown {
        Some(cooldown) => claim.key(cooldown.key()).arg(millis(cooldown.ttl())),
        None => claim.arg(""),
    };
    claim.arg(if with.state.is_some() { "1" } else { "" });
    claim.arg(if with.kept.is_some() { "1" } else { "" });
    let cooldown = with.cooldown;
    let get = redis::Cmd::get(key.as_str());
    loop {
        let (taken, cooled, mut found): (i64, i64, Option<Vec<u8>>) = conn.script(&claim).await?;
        if taken == 2 {
            return Ok(RedisClaim::Replayed);
        }
        if taken == 3 {
            return Ok(RedisClaim::InState(found));
        }
        if taken == 4 {
            return Ok(RedisClaim::Kept);
        }
        if taken == 1 {
            let cooled = cooldown.map(|_| cooled == 1);
            return Ok(RedisClaim::First { cooled });
        }
        loop {
            match found.take() {
                // Gone: expired, or its claimer's pending mark lapsed. Claim it again.
                None => break,
                Some(value) if value == PENDING => {
                    tokio::time::sleep(POLL_EVERY).await;
                    found = conn.query::<Option<Vec<u8>>>(&get).await?;
                }
                Some(found) => {
                    if let Some(answer) = Answer::decode(&found) {
                        return Ok(RedisClaim::Answered(Arc::new(answer)));
                    }
                    // Not ours to read (another version wrote it): answer afresh and
                    // overwrite it.
                    // The key of an event holds an OpenID: debug level only.
                    tracing::warn!(event = "dedup_value_unreadable");
                    tracing::debug!(event = "dedup_value_unreadable", key = key.as_str());
                    if let Value::Answer(encoded, ttl) = value {
                        conn.query::<()>(&set_px(key.as_str(), encoded, ttl))
                            .await?;
                    }
                    return Ok(RedisClaim::First { cooled: None });
                }
            }
        }
    }
}
