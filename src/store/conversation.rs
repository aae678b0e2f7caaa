//! Users' conversation states: one `Record` per (account, user), set, replaced or cleared
//! as a whole, kept until `expires` and then `GRACE` longer so that the user's next
//! message can be told the state ended (once: reading an expired record removes it). In
//! process (bounded per account and in bytes, the least recently set out first, counted)
//! or, with `--store redis://…`, in Redis (shared by every instance, expiring keys, the
//! same bound per account). Knows nothing of HTTP, rules or WeChat's XML.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Link;
use crate::clock::Clock;

/// Users in a state per account by default (`--max-states`); past it the one set least
/// recently goes (counted).
pub const PER_ACCOUNT: usize = 50_000;
/// Bytes of records in process, every account together; past it the account's least
/// recently set records go to make room (counted), or a new one is not kept.
pub const MEMORY_BYTES: usize = 128 << 20;
/// How long an expired state is remembered, for its `on_expire` reply.
pub const GRACE: Duration = Duration::from_secs(24 * 3600);

/// One user's state as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The state's name.
    pub state: String,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The user's messages in the state so far.
    #[serde(default)]
    pub tries: u32,
    /// The rule that set it (for its `on_expire`).
    pub rule: String,
    /// The unix second it ends.
    pub expires: u64,
}

impl Record {
    fn size(&self) -> usize {
        self.state.len()
            + self.rule.len()
            + self
                .vars
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + 64
    }
}

/// A user's state as `get` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    None,
    Live(Record),
    /// It ended since the user's last message (now forgotten).
    Expired(Record),
}

struct Entry {
    record: Record,
    /// Its place in `Scoped::order`.
    seq: u64,
}

#[derive(Default)]
struct Scoped {
    users: HashMap<String, Entry>,
    /// Users by when they were last set, least recent first.
    order: BTreeMap<u64, String>,
}

#[derive(Default)]
struct Memory {
    scopes: HashMap<Arc<str>, Scoped>,
    bytes: usize,
    seq: u64,
}

impl Memory {
    fn remove(&mut self, scope: &str, user: &str) -> Option<Record> {
        let scoped = self.scopes.get_mut(scope)?;
        let entry = scoped.users.remove(user)?;
        scoped.order.remove(&entry.seq);
        self.bytes = self.bytes.saturating_sub(entry.record.size() + user.len());
        if scoped.users.is_empty() {
            self.scopes.remove(scope);
        }
        Some(entry.record)
    }

    /// The account's least recently set user, removed.
    fn evict_one(&mut self, scope: &str) -> bool {
        let Some(user) = self
            .scopes
            .get(scope)
            .and_then(|s| s.order.first_key_value())
            .map(|(_, user)| user.clone())
        else {
            return false;
        };
        self.remove(scope, &user).is_some()
    }
}

/// The conversation states of one server (keys carry the account's scope).
pub struct Conversations {
    memory: Mutex<Memory>,
    evicted: AtomicU64,
    /// `PER_ACCOUNT`, or the server's `--max-states`.
    per_account: usize,
    link: Option<Arc<Link>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Conversations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversations")
            .field("redis", &self.link.is_some())
            .finish()
    }
}

/// Sets a record and makes room. KEYS: the record, the account's order, the new state's
/// set. ARGV: user, record JSON, its time to live (ms), now (ms), when it ends (ms), the
/// bound, the prefix of the states' sets, the new state, the prefix of records, the end
/// (ms) before which a state's set forgets a user (their record is gone). Answers how many
/// users were put out.
/// `PUT`, hashed once (`EVALSHA` by its SHA-1; loaded when Redis answers `NOSCRIPT`).
static PUT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUT));

const PUT: &str = r"
local old = redis.call('GET', KEYS[1])
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' and o.state and o.state ~= ARGV[8] then
    redis.call('ZREM', ARGV[7] .. o.state, ARGV[1])
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[10])
local out = 0
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #gone, 2 do
    local key = ARGV[9] .. gone[i]
    local r = redis.call('GET', key)
    if r then
      out = out + 1
      local ok, o = pcall(cjson.decode, r)
      if ok and type(o) == 'table' and o.state then
        redis.call('ZREM', ARGV[7] .. o.state, gone[i])
      end
      redis.call('DEL', key)
    end
  end
end
return out";

/// Removes a record if it is `ARGV[2]` (or any, when `ARGV[2]` is ''). KEYS: the record,
/// the account's order. ARGV: user, expected JSON, the prefix of the states' sets.
/// `REMOVE`, hashed once (`EVALSHA` by its SHA-1; loaded when Redis answers `NOSCRIPT`).
static REMOVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REMOVE));

const REMOVE: &str = r"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
if ARGV[2] ~= '' and old ~= ARGV[2] then return 0 end
local ok, o = pcall(cjson.decode, old)
if ok and type(o) == 'table' and o.state then
  redis.call('ZREM', ARGV[3] .. o.state, ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1";

/// Every user's record key starts with this, then the account's scope and the OpenID.
const RECORD_PREFIX: &str = "wxrules:conv:";

fn record_prefix(scope: &str) -> String {
    format!("{RECORD_PREFIX}{scope}")
}

fn record_key(scope: &str, user: &str) -> String {
    format!("{RECORD_PREFIX}{scope}{user}")
}

fn order_key(scope: &str) -> String {
    format!("wxrules:conv-order:{scope}")
}

fn states_prefix(scope: &str) -> String {
    format!("wxrules:conv-in:{scope}")
}

impl Conversations {
    /// In process, and in Redis through `link` when given.
    pub fn new(clock: Arc<dyn Clock>, link: Option<Arc<Link>>) -> Conversations {
        Conversations {
            memory: Mutex::new(Memory::default()),
            evicted: AtomicU64::new(0),
            per_account: PER_ACCOUNT,
            link,
            clock,
        }
    }

    /// The same, with at most `per_account` users in a state per account (at least 1).
    pub fn bounded(self, per_account: usize) -> Conversations {
        Conversations {
            per_account: per_account.max(1),
            ..self
        }
    }

    /// Users put out of their state to stay within `PER_ACCOUNT` (or `MEMORY_BYTES`),
    /// since start (by this instance).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// `user`'s state in the account `scope`. An expired one is returned once, then
    /// forgotten.
    pub async fn get(&self, scope: &str, user: &str) -> Found {
        let Some(link) = self.link.as_deref() else {
            // In process only: no command to build.
            return self.get_here(scope, user, self.clock.now());
        };
        let get = redis::Cmd::get(record_key(scope, user));
        let raw: Option<Option<String>> = Link::or_memory(
            Some(link),
            |mut conn| {
                let get = &get;
                async move { conn.query::<Option<String>>(get).await.map(Some) }
            },
            || None,
        )
        .await;
        match raw {
            Some(raw) => self.found_in_redis(scope, user, raw).await,
            None => self.get_here(scope, user, self.clock.now()),
        }
    }

    /// Whether the states are kept in Redis (`--store redis://…`).
    pub fn shared(&self) -> bool {
        self.link.is_some()
    }

    /// The key of `user`'s record in Redis, when the states are kept there: read by a
    /// push's dedup claim in its own round trip (`store::dedup::Ticket::settle`), for
    /// `found_in_redis`.
    pub fn redis_key(&self, scope: &str, user: &str) -> Option<String> {
        self.link.as_ref().map(|_| record_key(scope, user))
    }

    /// `get`, from the record's value as Redis held it (`None`: no record), read by
    /// another command (see `redis_key`).
    pub async fn found_in_redis(&self, scope: &str, user: &str, raw: Option<String>) -> Found {
        let Some(json) = raw else {
            return Found::None;
        };
        let Ok(record) = serde_json::from_str::<Record>(&json) else {
            // Not ours to read (another version's, or damaged): as if none.
            self.remove_redis(scope, user, &json).await;
            return Found::None;
        };
        if record.expires > self.clock.now() {
            return Found::Live(record);
        }
        // Removed only if unchanged: another message may have set a new state meanwhile.
        if self.remove_redis(scope, user, &json).await {
            Found::Expired(record)
        } else {
            Found::None
        }
    }

    fn get_here(&self, scope: &str, user: &str, now: u64) -> Found {
        let mut memory = self.memory.lock();
        let Some(entry) = memory.scopes.get(scope).and_then(|s| s.users.get(user)) else {
            return Found::None;
        };
        let record = &entry.record;
        if record.expires > now {
            return Found::Live(record.clone());
        }
        let gone = record.expires.saturating_add(GRACE.as_secs()) <= now;
        let record = memory.remove(scope, user);
        match record {
            Some(record) if !gone => Found::Expired(record),
            _ => Found::None,
        }
    }

    /// Removes `user`'s record in Redis if it is `expected` (`""`: whatever it is); `None`
    /// when Redis did not answer.
    async fn remove_in_redis(&self, scope: &str, user: &str, expected: &str) -> Option<bool> {
        let link = self.link.as_deref()?;
        let script = &*REMOVE_SCRIPT;
        let key = record_key(scope, user);
        let (order, states) = (order_key(scope), states_prefix(scope));
        link.run(|mut conn| {
            let (script, key, order, states) = (&script, &key, &order, &states);
            async move {
                let mut invocation = script.key(key);
                invocation.key(order).arg(user).arg(expected).arg(states);
                conn.script::<u32>(&invocation).await
            }
        })
        .await
        .ok()
        .map(|removed| removed == 1)
    }

    async fn remove_redis(&self, scope: &str, user: &str, expected: &str) -> bool {
        self.remove_in_redis(scope, user, expected).await == Some(true)
    }

    /// Puts `user` in `record`'s state (replacing any), making room when the account is
    /// full.
    pub async fn put(&self, scope: &str, user: &str, record: &Record) {
        let now = self.clock.now();
        let Ok(json) = serde_json::to_string(record) else {
            return;
        };
        let ttl_secs = record
            .expires
            .saturating_sub(now)
            .saturating_add(GRACE.as_secs());
        let script = &*PUT_SCRIPT;
        let prefix = record_prefix(scope);
        let key = format!("{prefix}{user}");
        let (order, states) = (order_key(scope), states_prefix(scope));
        let state_key = format!("{states}{}", record.state);
        let per_account = self.per_account;
        let forget_before = now.saturating_sub(GRACE.as_secs()).saturating_mul(1000);
        let evicted = Link::or_memory(
            self.link.as_deref(),
            |mut conn| {
                let (script, key, order, state_key) = (&script, &key, &order, &state_key);
                let (json, states, prefix) = (&json, &states, &prefix);
                async move {
                    let mut invocation = script.key(key);
                    invocation
                        .key(order)
                        .key(state_key)
                        .arg(user)
                        .arg(json)
                        .arg(ttl_secs.saturating_mul(1000).max(1))
                        .arg(now.saturating_mul(1000))
                        .arg(record.expires.saturating_mul(1000))
                        .arg(per_account)
                        .arg(states)
                        .arg(&record.state)
                        .arg(prefix)
                        .arg(forget_before);
                    conn.script::<u64>(&invocation).await
                }
            },
            || self.put_here(scope, user, record.clone()),
        )
        .await;
        if evicted > 0 {
            self.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    fn put_here(&self, scope: &str, user: &str, record: Record) -> u64 {
        let mut memory = self.memory.lock();
        memory.remove(scope, user);
        let size = record.size() + user.len();
        let mut evicted = 0;
        let bound = self.per_account;
        let full = |m: &Memory| m.scopes.get(scope).map_or(0, |s| s.users.len()) >= bound;
        while full(&memory) || memory.bytes + size > MEMORY_BYTES {
            if !memory.evict_one(scope) {
                break;
            }
            evicted += 1;
        }
        if memory.bytes + size > MEMORY_BYTES {
            // Other accounts hold the memory: this state is not kept.
            return evicted + 1;
        }
        memory.seq += 1;
        let seq = memory.seq;
        memory.bytes += size;
        let scoped = match memory.scopes.get_mut(scope) {
            Some(scoped) => scoped,
            None => memory.scopes.entry(Arc::from(scope)).or_default(),
        };
        scoped.order.insert(seq, user.to_owned());
        scoped.users.insert(user.to_owned(), Entry { record, seq });
        evicted
    }

    /// Takes `user` out of any state.
    pub async fn clear(&self, scope: &str, user: &str) {
        if self.remove_in_redis(scope, user, "").await.is_some() {
            return;
        }
        self.memory.lock().remove(scope, user);
    }

    /// How many users of the account are in each of `states` now (no user named).
    pub async fn counts(&self, scope: &str, states: &[&str]) -> Vec<usize> {
        let now = self.clock.now();
        let prefix = states_prefix(scope);
        let mut pipe = redis::pipe();
        for state in states {
            pipe.cmd("ZCOUNT")
                .arg(format!("{prefix}{state}"))
                .arg(now.saturating_mul(1000).saturating_add(1))
                .arg("+inf");
        }
        Link::or_memory(
            self.link.as_deref(),
            |mut conn| {
                let pipe = &pipe;
                async move { conn.pipe::<Vec<usize>>(pipe).await }
            },
            || self.counts_here(scope, states, now),
        )
        .await
    }

    fn counts_here(&self, scope: &str, states: &[&str], now: u64) -> Vec<usize> {
        let memory = self.memory.lock();
        let mut counts = vec![0; states.len()];
        if let Some(scoped) = memory.scopes.get(scope) {
            for entry in scoped.users.values() {
                if entry.record.expires <= now {
                    continue;
                }
                if let Some(i) = states.iter().position(|s| *s == entry.record.state) {
                    counts[i] += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn record(state: &str, expires: u64) -> Record {
        Record {
            state: state.into(),
            vars: BTreeMap::from([("phone".to_owned(), "13800138000".to_owned())]),
            tries: 1,
            rule: "ask".into(),
            expires,
        }
    }

    async fn states_are_set_read_expired_once_and_cleared(
        one: &Conversations,
        two: &Conversations,
        clock: &ManualClock,
    ) {
        assert_eq!(one.get("a=x:", "u").await, Found::None);
        let now = clock.now();
        one.put("a=x:", "u", &record("bind", now + 600)).await;
        assert_eq!(
            two.get("a=x:", "u").await,
            Found::Live(record("bind", now + 600))
        );
        assert_eq!(
            two.get("a=y:", "u").await,
            Found::None,
            "accounts are apart"
        );
        assert_eq!(one.counts("a=x:", &["bind", "other"]).await, [1, 0]);
        clock.advance(601);
        assert_eq!(
            two.get("a=x:", "u").await,
            Found::Expired(record("bind", now + 600))
        );
        assert_eq!(one.get("a=x:", "u").await, Found::None, "told once");
        assert_eq!(one.counts("a=x:", &["bind"]).await, [0]);
        let now = clock.now();
        one.put("a=x:", "u", &record("bind", now + 600)).await;
        one.put("a=x:", "u", &record("other", now + 600)).await;
        assert_eq!(two.counts("a=x:", &["bind", "other"]).await, [0, 1]);
        two.clear("a=x:", "u").await;
        assert_eq!(one.get("a=x:", "u").await, Found::None);
        assert_eq!(one.counts("a=x:", &["other"]).await, [0]);
    }

    #[tokio::test]
    async fn in_process_states_expire_once_and_each_account_is_bounded() {
        let clock = Arc::new(ManualClock::new(1_000));
        let states = Conversations::new(clock.clone(), None);
        states_are_set_read_expired_once_and_cleared(&states, &states, &clock).await;
        // Past the grace, an expired state is forgotten without a word.
        states
            .put("a=x:", "g", &record("bind", clock.now() + 1))
            .await;
        clock.advance(2 + GRACE.as_secs());
        assert_eq!(states.get("a=x:", "g").await, Found::None);
        let expires = clock.now() + 600;
        for i in 0..=PER_ACCOUNT {
            states
                .put("a=full:", &format!("u{i}"), &record("bind", expires))
                .await;
        }
        assert_eq!(states.evicted(), 1);
        assert_eq!(
            states.get("a=full:", "u0").await,
            Found::None,
            "the least recently set went"
        );
        assert!(matches!(states.get("a=full:", "u1").await, Found::Live(_)));
        assert_eq!(states.counts("a=full:", &["bind"]).await, [PER_ACCOUNT]);
    }

    #[tokio::test]
    async fn in_redis_instances_share_states() {
        let server = super::super::redis_server::RedisServer::start();
        let link = || Some(super::super::test_link(&server.url()));
        let clock = Arc::new(ManualClock::new(1_000));
        let one = Conversations::new(clock.clone(), link());
        let two = Conversations::new(clock.clone(), link());
        states_are_set_read_expired_once_and_cleared(&one, &two, &clock).await;
        let small = Conversations::new(clock.clone(), link()).bounded(3);
        let expires = clock.now() + 600;
        for i in 0..5 {
            small
                .put("a=small:", &format!("u{i}"), &record("bind", expires))
                .await;
        }
        assert_eq!(small.evicted(), 2);
        assert_eq!(small.get("a=small:", "u1").await, Found::None);
        assert!(matches!(two.get("a=small:", "u2").await, Found::Live(_)));
        assert_eq!(two.counts("a=small:", &["bind"]).await, [3]);
        for conversations in [&one, &two, &small] {
            assert!(
                !conversations.link.as_ref().unwrap().is_down(),
                "every step ran in Redis"
            );
        }
    }
}
