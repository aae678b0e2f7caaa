//! Dedup of WeChat retries: the first attempt at a push runs the rules, and every retry of
//! it (same MsgId, or same sender + CreateTime for events) gets the same answer, byte for
//! byte, from a store: in process (`memory`) or shared by every instance (`redis://…`).
//! Knows nothing of HTTP; a Redis that is down or slow degrades to the in-process store.
//! The in-process store is always asked first; Redis is the second tier, never the only one.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use self::memory::{claim_local, memory_store, store_in, Guard, Memory};
use self::redis::{claim_on, store_on, RedisClaim, Value};
use super::cooldown::CooldownClaim;
use super::link::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_RETRY_AFTER};
use super::replay::{Pending, Replays, Seen};
use super::{Link, Store};

use crate::telemetry::metrics::Metrics;
use crate::wire::Message;

/// Every key starts with this, then the account (`ToUserName`).
pub const KEY_PREFIX: &str = "wxrules:dedup:";
/// How long an answer is kept: WeChat retries three times, 5 s apart, so 30 s covers the
/// whole window with room for clock skew and a slow first attempt.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// How many bytes of answers (keys, bodies and bookkeeping) the in-process store keeps at
/// most; the coldest go first. 64 MiB holds about 80,000 answers of 400 bytes: 30 s of
/// 2,600 answers a second.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// What one stored answer costs besides the bytes of its strings: the cache entry and
/// its table slot, the `Arc`, and the allocator's headers and rounding for five blocks.
/// Measured: 124,017 answers weighed without it grew the RSS by 98 MiB, 830 bytes each,
/// about 450 more than their strings.
const ENTRY_OVERHEAD: u64 = 448;
/// How long a Redis claim lasts before its answer is stored: past WeChat's own 5 s wait, a
/// first attempt that died (its instance crashed) no longer blocks the next retry.
pub const PENDING_TTL: Duration = Duration::from_secs(5);
/// How often a waiter asks Redis whether another instance has answered yet.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The Redis value of a key whose first attempt is still being answered.
const PENDING: &[u8] = b"pending";

/// How the store behaves; `Config::default()` is `--dedup memory` with the defaults above.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: Store,
    pub ttl: Duration,
    /// Bytes, as weighed by `Answer::weight`.
    pub capacity: u64,
    pub command_timeout: Duration,
    pub retry_after: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            store: Store::Memory,
            ttl: DEFAULT_TTL,
            capacity: DEFAULT_CAPACITY,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

/// The answer given to a push, exactly as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// One of the two the server sends, or as read back from Redis.
    pub content_type: Cow<'static, str>,
    /// Shared, not copied, by each response that sends it.
    pub body: bytestring::ByteString,
    /// The rule that decided, for the retry's log line.
    pub rule: Option<Arc<str>>,
    /// The push is joined to a call still running (`late.via: retries`): the body is the
    /// holding reply, for WeChat's last attempt, and a retry waits for the call instead of
    /// sending it at once.
    pub joined: bool,
}

impl Answer {
    /// What keeping this answer costs in the in-process store, in bytes, roughly.
    fn weight(&self, key: &Key) -> u64 {
        let bytes = key.0.len()
            + self.body.len()
            + self.content_type.len()
            + self.rule.as_ref().map_or(0, |rule| rule.len());
        u64::try_from(bytes).unwrap_or(u64::MAX) + ENTRY_OVERHEAD
    }

    /// The answer as Redis keeps it: a JSON object of its three fields, written straight
    /// from them (through a `serde_json::Value`, this was a quarter of what Redis mode adds
    /// to a push).
    fn encode(&self) -> String {
        #[derive(serde::Serialize)]
        struct Encoded<'a> {
            body: &'a str,
            content_type: &'a str,
            rule: Option<&'a str>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            joined: bool,
        }
        let encoded = Encoded {
            body: &self.body,
            content_type: &self.content_type,
            rule: self.rule.as_deref(),
            joined: self.joined,
        };
        // Strings always serialize; an empty value would read back as unreadable, and be
        // answered afresh.
        serde_json::to_string(&encoded).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Answer> {
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(Answer {
            content_type: value.get("content_type")?.as_str()?.to_owned().into(),
            body: value.get("body")?.as_str()?.into(),
            rule: value.get("rule")?.as_str().map(Arc::from),
            joined: value
                .get("joined")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// Which store answered a retry, as in `wxrules_dedup_hits_total{store}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Redis,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Redis => "redis",
        }
    }
}

/// The dedup key of one push, namespaced by account:
/// `wxrules:dedup:<ToUserName>:msg:<MsgId>` for messages,
/// `wxrules:dedup:<ToUserName>:event:<FromUserName>:<CreateTime>:<Event>:<EventKey>[:<MsgID>]`
/// for events. `%` and `:` inside a part are escaped, so parts cannot run together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    pub fn for_message(message: &Message) -> Key {
        Key::for_message_in("", message)
    }

    /// The key of a push to one account of several: `scope` (`a=NAME:`, or empty for the
    /// single account) comes before the ToUserName, so two accounts never share a key.
    pub fn for_message_in(scope: &str, message: &Message) -> Key {
        let mut key = String::with_capacity(96);
        key.push_str(KEY_PREFIX);
        key.push_str(scope);
        push_part(&mut key, message.to_user());
        // Messages, nearly every push, are keyed by MsgId alone.
        let create_time = || message.create_time().to_string();
        if message.msg_type().eq_ignore_ascii_case("event") {
            key.push_str(":event");
            for part in [
                message.from_user(),
                &create_time(),
                message.event().unwrap_or_default(),
                message.text("EventKey").unwrap_or_default(),
            ] {
                key.push(':');
                push_part(&mut key, part);
            }
            // Template and mass-send reports carry their job's MsgID: two reports to one
            // user in the same second stay apart.
            if let Some(id) = message.msg_id() {
                key.push(':');
                push_part(&mut key, id);
            }
        } else if let Some(id) = message.msg_id() {
            key.push_str(":msg:");
            push_part(&mut key, id);
        } else {
            // WeChat gives every message a MsgId; should one come without, fall back to
            // what identifies an event.
            key.push_str(":other");
            for part in [message.from_user(), &create_time(), message.msg_type()] {
                key.push(':');
                push_part(&mut key, part);
            }
        }
        Key(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn push_part(key: &mut String, part: &str) {
    if memchr::memchr2(b'%', b':', part.as_bytes()).is_none() {
        key.push_str(part);
        return;
    }
    for c in part.chars() {
        match c {
            '%' => key.push_str("%25"),
            ':' => key.push_str("%3A"),
            c => key.push(c),
        }
    }
}

/// What `claim` found.
pub enum Claim<'a> {
    /// No attempt has answered this push: run the rules, then `Ticket::complete`.
    First(Ticket<'a>),
    /// An earlier attempt answered it (or was answering it, and this call waited).
    Answered { answer: Arc<Answer>, store: Tier },
}

/// The right, and the duty, to answer a push first. Dropping it without `complete` (or
/// `settle`) lets the next attempt run the rules.
#[must_use = "a ticket dropped without `complete` stores nothing for the retries"]
pub struct Ticket<'a> {
    dedup: &'a Dedup,
    guard: Option<Guard<'a>>,
    redis: InRedis,
}

/// Where a ticket stands in Redis.
enum InRedis {
    /// Not configured, or down: this attempt answers in process only.
    No,
    /// Claimed in process only so far (`Dedup::claim_here`): Redis is asked by
    /// `Ticket::claim_redis`, or claimed and answered in one step by `Ticket::settle`.
    Unasked(Key),
    /// This attempt holds the key in Redis too, and stores the answer there.
    Held(Key),
}

/// What `Ticket::settle` did.
pub enum Settled<'a> {
    /// This attempt's answer is the push's: stored for the retries (or, Redis away, in
    /// process only).
    Stored,
    /// Another attempt (another instance) answered first: its answer goes out instead.
    Answered { answer: Arc<Answer>, store: Tier },
    /// The replay check refused the push: nothing was claimed or stored.
    Replayed,
    /// An answer made for a user with nothing waiting (`settle`'s `state` and `kept`
    /// keys), and something is: nothing was claimed or stored, and the ticket is back, for
    /// an answer made knowing it.
    Waiting { ticket: Ticket<'a>, what: Waiting },
}

/// What `Settled::Waiting` found waiting for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The user's state: its record as Redis holds it.
    State(String),
    /// An answer kept for the user (the user has no state, or was not asked about).
    Kept,
    /// Redis did not answer: the user's state and kept answers are to be looked up in
    /// process.
    Unknown,
}

impl<'a> Ticket<'a> {
    /// Stores the answer: at once in process (waking the waiters here), then in Redis,
    /// bounded by the command timeout. A failed Redis write is logged, not returned: the
    /// answer goes out either way. A ticket whose Redis claim was never made
    /// (`claim_here`) stores in one step, as `settle` does.
    pub async fn complete(mut self, answer: Arc<Answer>) {
        if let InRedis::Unasked(_) = self.redis {
            // Whatever Redis says, this answer is given: another's found there only
            // means two instances answered (a ticket meant for `settle` should use it).
            let _ = self.settle(answer, With::default()).await;
            return;
        }
        self.store_held(answer).await;
    }

    /// Stores the answer in process, then in Redis if this attempt holds the key there.
    async fn store_held(&mut self, answer: Arc<Answer>) {
        if let Some(guard) = self.guard.take() {
            store_in(guard, Arc::clone(&answer));
        }
        let InRedis::Held(key) = std::mem::replace(&mut self.redis, InRedis::No) else {
            return;
        };
        if let Some(link) = &self.dedup.link {
            store_on(link, &key, &answer, self.dedup.config.ttl).await;
        }
    }

    /// Claims the key in Redis too, before the caller acts (a call, a `send:`, a
    /// cooldown): the first attempt everywhere, or the answer another instance gave
    /// (waited for while it is being answered). `with` is made in the same round trip: a
    /// replay check first (`Replayed`: nothing claimed), and a cooldown only if the key is
    /// this attempt's; the second value says whether the cooldown was taken (`None`: Redis
    /// was not asked, the caller claims it the usual way). Unbounded while waiting for
    /// another attempt: callers wrap it in their deadline.
    pub async fn claim_redis(self, with: With<'_>) -> Result<(Claim<'a>, Option<bool>), Replayed> {
        self.claim_in_redis(with)
            .await
            .map_err(|(replayed, _ticket)| replayed)
    }

    /// `claim_redis`, giving the ticket back with `Replayed` (the hold in process is
    /// dropped with it).
    async fn claim_in_redis(
        mut self,
        with: With<'_>,
    ) -> Result<(Claim<'a>, Option<bool>), (Replayed, Ticket<'a>)> {
        let InRedis::Unasked(key) = std::mem::replace(&mut self.redis, InRedis::No) else {
            return Ok((Claim::First(self), None));
        };
        let dedup = self.dedup;
        // A claim before acting knows what is waiting for the user already.
        let with = With {
            state: None,
            kept: None,
            ..with
        };
        let claimed = Link::or_memory(
            dedup.link.as_deref(),
            |conn| claim_on(conn, &key, Value::Pending, with),
            || {
                dedup.metrics.observe_dedup_fallback();
                RedisClaim::InProcess
            },
        );
        match claimed.await {
            RedisClaim::First { cooled } => {
                self.redis = InRedis::Held(key);
                Ok((Claim::First(self), cooled))
            }
            RedisClaim::Answered(answer) => Ok((self.answered_in_redis(answer), None)),
            RedisClaim::Replayed => Err((Replayed, self)),
            // Not asked for (no state key above): taken as a claim that failed.
            RedisClaim::InState(_) | RedisClaim::Kept | RedisClaim::InProcess => {
                match with.replay {
                    Some(replay) if replay.here() => Err((Replayed, self)),
                    _ => Ok((Claim::First(self), None)),
                }
            }
        }
    }

    /// Claims the key and stores `answer` in one step (one Lua script, one round trip),
    /// for an answer known before the claim: a rule that neither calls, sends nor cools
    /// down, so that deciding it before claiming does nothing a retry could repeat. When
    /// another attempt holds the key (another instance), its answer is waited for and
    /// returned instead. `with` may carry the replay check, and the keys of the user's
    /// state and kept answers for an answer made for a user with nothing waiting (see
    /// `Settled::Waiting`); never a cooldown.
    /// Unbounded while waiting: callers wrap it in their deadline.
    pub async fn settle(mut self, answer: Arc<Answer>, with: With<'_>) -> Settled<'a> {
        let key = match std::mem::replace(&mut self.redis, InRedis::No) {
            InRedis::Unasked(key) => key,
            held => {
                self.redis = held;
                self.store_held(answer).await;
                return Settled::Stored;
            }
        };
        let dedup = self.dedup;
        let encoded = answer.encode();
        let with = With {
            cooldown: None,
            ..with
        };
        let value = Value::Answer(&encoded, dedup.config.ttl);
        let claimed = Link::or_memory(
            dedup.link.as_deref(),
            |conn| claim_on(conn, &key, value, with),
            || {
                dedup.metrics.observe_dedup_fallback();
                RedisClaim::InProcess
            },
        );
        match claimed.await {
            RedisClaim::Replayed => Settled::Replayed,
            RedisClaim::InProcess if with.replay.is_some_and(Replay::here) => Settled::Replayed,
            RedisClaim::InProcess if with.state.is_some() || with.kept.is_some() => {
                self.waiting(key, Waiting::Unknown)
            }
            // A record that is not UTF-8 is nobody's: taken for an empty one, which the
            // state's store then removes.
            RedisClaim::InState(record) => self.waiting(
                key,
                Waiting::State(
                    record.map_or_else(String::new, |r| String::from_utf8(r).unwrap_or_default()),
                ),
            ),
            RedisClaim::Kept => self.waiting(key, Waiting::Kept),
            RedisClaim::First { .. } | RedisClaim::InProcess => {
                if let Some(guard) = self.guard.take() {
                    store_in(guard, answer);
                }
                Settled::Stored
            }
            RedisClaim::Answered(answer) => match self.answered_in_redis(answer) {
                Claim::Answered { answer, store } => Settled::Answered { answer, store },
                // `answered_in_redis` never gives the key back.
                Claim::First(_) => Settled::Stored,
            },
        }
    }

    /// The ticket back, unclaimed in Redis, with what `settle` found waiting.
    fn waiting(mut self, key: Key, what: Waiting) -> Settled<'a> {
        self.redis = InRedis::Unasked(key);
        Settled::Waiting { ticket: self, what }
    }

    /// Another instance's answer, found in Redis: kept in process for the retries that
    /// reach this one, and counted.
    fn answered_in_redis(mut self, answer: Arc<Answer>) -> Claim<'a> {
        if let Some(guard) = self.guard.take() {
            store_in(guard, Arc::clone(&answer));
        }
        self.dedup.metrics.observe_dedup_hit(Tier::Redis.as_str());
        Claim::Answered {
            answer,
            store: Tier::Redis,
        }
    }
}

/// What a claim in Redis makes in the same round trip.
#[derive(Clone, Copy, Default)]
pub struct With<'a> {
    /// A rule's cooldown, taken only if the push is this attempt's.
    pub cooldown: Option<&'a CooldownClaim>,
    /// A plaintext push's replay check, made first.
    pub replay: Option<Replay<'a>>,
    /// The key of the user's conversation state, for an answer made for a user in no
    /// state (`Ticket::settle`): a record there means the answer is not the push's.
    pub state: Option<&'a str>,
    /// The key of the answers kept for the user (`store::kept`), for an answer made for a
    /// user with none (`Ticket::settle`): one there means the answer is not the push's.
    pub kept: Option<&'a str>,
}

/// A plaintext push's replay check put off to the claim's round trip; made in process by
/// `replays` when Redis does not answer.
#[derive(Clone, Copy)]
pub struct Replay<'a> {
    pub replays: &'a Replays,
    pub pending: &'a Pending,
}

impl Replay<'_> {
    /// The check in process (Redis away): whether the push is a replay.
    fn here(self) -> bool {
        self.replays.check_here(self.pending) == Seen::Other
    }
}

/// The push's signed query came before with another body: refused, nothing claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed;

/// The retry store of one server: in process, plus Redis when configured. Shared by all
/// workers (`Arc<Dedup>` in the server state).
pub struct Dedup {
    config: Config,
    /// `None` only for `Dedup::off`.
    memory: Option<Memory>,
    link: Option<Arc<Link>>,
    metrics: Metrics,
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("store", &self.config.store)
            .field("enabled", &self.memory.is_some())
            .finish()
    }
}

impl Dedup {
    /// A store as configured. Makes no connection: Redis is reached on first use (or by
    /// `connect`), so a Redis that is down at start-up does not stop the server.
    pub fn new(config: Config, metrics: Metrics) -> Dedup {
        let memory = memory_store(config.capacity);
        let link = match &config.store {
            Store::Memory => None,
            Store::Redis(url) => Some(Arc::new(
                url.link(config.command_timeout, config.retry_after),
            )),
        };
        Dedup {
            config,
            memory: Some(memory),
            link,
            metrics,
        }
    }

    /// No dedup at all: every attempt runs the rules. For tests that send one fixture many
    /// times and count every answer.
    pub fn off(metrics: Metrics) -> Dedup {
        Dedup {
            config: Config::default(),
            memory: None,
            link: None,
            metrics,
        }
    }

    /// What `--dedup` said, without secrets.
    pub fn store(&self) -> &Store {
        &self.config.store
    }

    /// Connects to Redis now, if configured (at start-up, to log the outcome early).
    /// Returns whether Redis is usable; a failure is logged and retried on later requests.
    pub async fn connect(&self) -> bool {
        match &self.link {
            Some(link) => link.connect().await,
            None => true,
        }
    }

    /// Drops the in-process answers older than the TTL. They already count as absent; this
    /// gives their memory back. The server calls it every TTL, off the request path.
    pub fn sweep(&self) {
        if let Some(memory) = &self.memory {
            let ttl = self.config.ttl;
            memory.retain(|_, stored| stored.at.elapsed() < ttl);
        }
    }

    /// How many answers the in-process store holds, and their weight in bytes.
    pub fn stored(&self) -> (usize, u64) {
        self.memory
            .as_ref()
            .map_or((0, 0), |memory| (memory.len(), memory.weight()))
    }

    /// How often `sweep` should run.
    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// The Redis link, when configured: shared with the other needs that keep state in
    /// Redis (cooldowns, the access token, the outbox).
    pub fn redis(&self) -> Option<Arc<Link>> {
        self.link.clone()
    }

    /// Whether Redis is configured and currently counted as down.
    pub fn redis_down(&self) -> bool {
        self.link.as_ref().is_some_and(|link| link.is_down())
    }

    /// Claims `key` for this attempt, or finds the answer another attempt gave (waiting
    /// for it while that attempt is still being answered). Never fails: a Redis that is
    /// down or slow is counted and stood in for by the in-process store. Unbounded while
    /// waiting for another attempt: callers wrap it in their deadline.
    pub async fn claim(&self, key: &Key) -> Claim<'_> {
        match self.claim_here(key).await {
            // Without a replay check nothing is refused.
            Claim::First(ticket) => match ticket.claim_in_redis(With::default()).await {
                Ok((claim, _)) => claim,
                Err((Replayed, ticket)) => Claim::First(ticket),
            },
            answered => answered,
        }
    }

    /// `claim` in process only, the first tier: an answer given here, or this process's
    /// hold on the key. With Redis, the hold still has to be claimed there, before acting
    /// (`Ticket::claim_redis`) or together with the answer (`Ticket::settle`).
    pub async fn claim_here(&self, key: &Key) -> Claim<'_> {
        let Some(memory) = &self.memory else {
            return Claim::First(Ticket {
                dedup: self,
                guard: None,
                redis: InRedis::No,
            });
        };
        let guard = match claim_local(memory, key, self.config.ttl).await {
            Ok(guard) => guard,
            Err(answer) => {
                self.metrics.observe_dedup_hit(Tier::Memory.as_str());
                return Claim::Answered {
                    answer,
                    store: Tier::Memory,
                };
            }
        };
        let redis = match self.link {
            None => InRedis::No,
            Some(_) => InRedis::Unasked(key.clone()),
        };
        Claim::First(Ticket {
            dedup: self,
            guard: Some(guard),
            redis,
        })
    }
}

mod memory;
mod redis;
#[cfg(test)]
mod tests;
