//! WeChat's attempts at one push joined to one slow call (`late.via: retries`). WeChat
//! waits 5 s for a push and tries it three times; the first attempt starts the call and
//! each attempt (on any instance) waits for its answer here. The call's task `publish`es
//! the answer; the last attempt `close`s the push: it takes the answer if it came, or
//! else the push has no attempt left and an answer published after it is the caller's to
//! keep for the user's next message. Per push (its dedup key), in process or, with
//! `--store redis://…`, in Redis (a hash per push, expiring). Knows nothing of HTTP or
//! WeChat's XML: answers are opaque strings.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{millis, CommandError, Conn, Link};

/// How long a joined push is remembered: WeChat's three attempts take about 15 s.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Pushes joined at once in this process; past it a slow call is not joined (its rule
/// answers as a `late` rule without retries would: the holding reply, then the answer
/// kept for the next message).
pub const MEMORY_ENTRIES: usize = 10_000;
/// How often an attempt on one instance asks Redis whether the call (on another) answered.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// What became of a published answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// An attempt that is still open will carry it.
    ToAttempts,
    /// Every attempt has been answered (or the push is forgotten): the answer is the
    /// publisher's to keep for the user's next message.
    Closed,
}

struct Slot {
    attempts: u32,
    answer: Option<Arc<str>>,
    closed: bool,
    born: std::time::Instant,
    /// Wakes the attempts of this process waiting for the answer.
    ready: Arc<Notify>,
}

/// The joined pushes of one server (keys carry the account: they are dedup keys).
pub struct Joined {
    memory: Mutex<HashMap<String, Slot>>,
    link: Option<Arc<Link>>,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("memory", &self.memory.lock().len())
            .field("redis", &self.link.is_some())
            .finish()
    }
}

fn redis_key(key: &str) -> String {
    format!("wxrules:joined:{key}")
}

/// Publishes unless the push is closed: 1 published, 0 closed (or gone).
/// `PUBLISH`, hashed once (`EVALSHA` by its SHA-1; loaded when Redis answers `NOSCRIPT`).
static PUBLISH_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUBLISH));

const PUBLISH: &str = r"
if redis.call('HEXISTS', KEYS[1], 'attempts') == 0 or redis.call('HGET', KEYS[1], 'closed') then
  return 0
end
redis.call('HSET', KEYS[1], 'answer', ARGV[1])
return 1";

/// Takes the answer, or closes the push: the answer, or nil.
/// `CLOSE`, hashed once (`EVALSHA` by its SHA-1; loaded when Redis answers `NOSCRIPT`).
static CLOSE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CLOSE));

const CLOSE: &str = r"
local answer = redis.call('HGET', KEYS[1], 'answer')
if answer then return answer end
redis.call('HSET', KEYS[1], 'closed', '1')
return false";

/// Counts an attempt of a push that is known: its number, or 0.
/// `ATTEMPT`, hashed once (`EVALSHA` by its SHA-1; loaded when Redis answers `NOSCRIPT`).
static ATTEMPT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ATTEMPT));

const ATTEMPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'attempts') == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)";

impl Joined {
    /// In process, and in Redis through `link` when given.
    pub fn new(link: Option<Arc<Link>>) -> Joined {
        Joined {
            memory: Mutex::new(HashMap::new()),
            link,
        }
    }

    /// The first attempt at `key` joins it (attempt 1). `false` when the process holds as
    /// many joined pushes as it may (the call then goes on unjoined).
    pub async fn begin(&self, key: &str) -> bool {
        let here = self.begin_here(key);
        if !here {
            return false;
        }
        let Some(link) = self.link.as_deref() else {
            return true;
        };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(redis_key(key))
            .arg("attempts")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(redis_key(key))
            .arg(millis(WINDOW))
            .ignore();
        // Redis down: this instance's own slot stands (attempts elsewhere cannot join).
        let _ = link
            .run(|mut conn| {
                let pipe = &pipe;
                async move { conn.pipe::<()>(pipe).await }
            })
            .await;
        true
    }

    fn begin_here(&self, key: &str) -> bool {
        let mut memory = self.memory.lock();
        if memory.len() >= MEMORY_ENTRIES {
            memory.retain(|_, slot| slot.born.elapsed() < WINDOW);
            if memory.len() >= MEMORY_ENTRIES {
                return false;
            }
        }
        memory.insert(
            key.to_owned(),
            Slot {
                attempts: 1,
                answer: None,
                closed: false,
                born: std::time::Instant::now(),
                ready: Arc::new(Notify::new()),
            },
        );
        true
    }

    /// A later attempt at `key`: its number (2, 3, …), or 0 when the push is not (or no
    /// longer) joined.
    pub async fn attempt(&self, key: &str) -> u32 {
        let script = &*ATTEMPT_SCRIPT;
        let rkey = redis_key(key);
        Link::or_memory(
            self.link.as_deref(),
            |mut conn| {
                let (script, rkey) = (&script, &rkey);
                async move { run::<u32>(&mut conn, script, rkey, None).await }
            },
            || {
                let mut memory = self.memory.lock();
                memory.get_mut(key).map_or(0, |slot| {
                    slot.attempts += 1;
                    slot.attempts
                })
            },
        )
        .await
    }

    /// The call's answer for `key`.
    pub async fn publish(&self, key: &str, answer: &str) -> Published {
        let here = {
            let mut memory = self.memory.lock();
            match memory.get_mut(key) {
                Some(slot) if !slot.closed => {
                    slot.answer = Some(Arc::from(answer));
                    slot.ready.notify_waiters();
                    Published::ToAttempts
                }
                _ => Published::Closed,
            }
        };
        let Some(link) = self.link.as_deref() else {
            return here;
        };
        let script = &*PUBLISH_SCRIPT;
        let rkey = redis_key(key);
        Link::or_memory(
            Some(link),
            |mut conn| {
                let (script, rkey) = (&script, &rkey);
                async move {
                    let published: u32 = run(&mut conn, script, rkey, Some(answer)).await?;
                    Ok(if published == 1 {
                        Published::ToAttempts
                    } else {
                        Published::Closed
                    })
                }
            },
            || here,
        )
        .await
    }

    /// Waits until `until` for the answer of `key`: `None` if it did not come.
    pub async fn wait(&self, key: &str, until: Instant) -> Option<Arc<str>> {
        loop {
            let ready = {
                let memory = self.memory.lock();
                match memory.get(key) {
                    Some(Slot {
                        answer: Some(answer),
                        ..
                    }) => return Some(Arc::clone(answer)),
                    Some(slot) => Some(Arc::clone(&slot.ready)),
                    None => None,
                }
            };
            if let Some(link) = self.link.as_deref() {
                let get = redis::Cmd::hget(redis_key(key), "answer");
                let found = link
                    .run(|mut conn| {
                        let get = &get;
                        async move { conn.query::<Option<String>>(get).await }
                    })
                    .await;
                if let Ok(Some(answer)) = found {
                    return Some(Arc::from(answer));
                }
            }
            let next = match (&ready, &self.link) {
                (_, Some(_)) => (Instant::now() + POLL_EVERY).min(until),
                (Some(_), None) => until,
                // Neither here nor shared: nothing will come.
                (None, None) => return None,
            };
            if Instant::now() >= until {
                return None;
            }
            match ready {
                Some(ready) => {
                    let _ = tokio::time::timeout_at(next, ready.notified()).await;
                }
                None => tokio::time::sleep_until(next).await,
            }
        }
    }

    /// The last attempt at `key`: the answer if it came, or else closes the push (an
    /// answer published from now on is `Published::Closed`).
    pub async fn close(&self, key: &str) -> Option<Arc<str>> {
        let here = || {
            let mut memory = self.memory.lock();
            let slot = memory.get_mut(key)?;
            if slot.answer.is_none() {
                slot.closed = true;
            }
            slot.answer.clone()
        };
        let Some(link) = self.link.as_deref() else {
            return here();
        };
        // Closed here too: a publish by this process sees it without Redis.
        let local = here();
        let script = &*CLOSE_SCRIPT;
        let rkey = redis_key(key);
        Link::or_memory(
            Some(link),
            |mut conn| {
                let (script, rkey) = (&script, &rkey);
                async move {
                    let answer: Option<String> = run(&mut conn, script, rkey, None).await?;
                    Ok(answer.map(Arc::from))
                }
            },
            || local.clone(),
        )
        .await
    }
}

async fn run<T: redis::FromRedisValue>(
    conn: &mut Conn,
    script: &redis::Script,
    key: &str,
    arg: Option<&str>,
) -> Result<T, CommandError> {
    let mut invocation = script.key(key);
    if let Some(arg) = arg {
        invocation.arg(arg);
    }
    conn.script(&invocation).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn each_attempt_joins_and_the_last_closes(joined: &Joined, key: &str) {
        assert!(joined.begin(key).await);
        assert_eq!(joined.attempt(key).await, 2);
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(joined.wait(key, soon).await, None);
        assert_eq!(joined.attempt(key).await, 3);
        assert_eq!(joined.close(key).await, None, "nothing came: closed");
        assert_eq!(
            joined.publish(key, "late").await,
            Published::Closed,
            "after the last attempt the answer is the caller's to keep"
        );
        assert_eq!(joined.attempt("unknown").await, 0);
    }

    async fn an_answer_reaches_a_waiting_attempt(joined: Arc<Joined>, key: &'static str) {
        assert!(joined.begin(key).await);
        let waiter = {
            let joined = Arc::clone(&joined);
            tokio::spawn(async move {
                joined
                    .wait(key, Instant::now() + Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(joined.publish(key, "answer").await, Published::ToAttempts);
        let got = waiter.await.unwrap();
        assert_eq!(got.as_deref(), Some("answer"));
        assert_eq!(joined.close(key).await.as_deref(), Some("answer"));
    }

    #[tokio::test]
    async fn in_process() {
        let joined = Arc::new(Joined::new(None));
        each_attempt_joins_and_the_last_closes(&joined, "k1").await;
        an_answer_reaches_a_waiting_attempt(joined, "k2").await;
    }

    #[tokio::test]
    async fn in_redis_an_attempt_on_another_instance_gets_the_answer() {
        let server = super::super::redis_server::RedisServer::start();
        let link = || Some(super::super::test_link(&server.url()));
        let (one, other) = (Joined::new(link()), Arc::new(Joined::new(link())));
        each_attempt_joins_and_the_last_closes(&one, "r1").await;
        // The call runs on `one`; the retry lands on `other`, which never began it.
        assert!(one.begin("r2").await);
        assert_eq!(other.attempt("r2").await, 2);
        let waiter = {
            let other = Arc::clone(&other);
            tokio::spawn(async move {
                other
                    .wait("r2", Instant::now() + Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(one.publish("r2", "from one").await, Published::ToAttempts);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("from one"));
        assert_eq!(other.close("r2").await.as_deref(), Some("from one"));
        for joined in [&one, &*other] {
            assert!(
                !joined.link.as_ref().unwrap().is_down(),
                "every step ran in Redis"
            );
        }
    }
}
