//! The shared Redis link: one `ConnectionManager`, every command bounded in time, and a
//! down state that is logged once per outage (`dedup_redis_down`, `dedup_redis_recovered`:
//! the names predate the other users of the link and are kept for dashboards and alerts).

use parking_lot::Mutex;
use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::{timeout, Instant};

/// Extends a lock only if it holds the caller's value.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lock only if it holds the caller's value.
const UNLOCK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// One shared connection to Redis, or none while Redis is down.
pub struct Redis {
    client: redis::Client,
    /// `host:port/db`, for logs (never the password).
    shown: String,
    command_timeout: Duration,
    retry_after: Duration,
    state: Mutex<LinkState>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis").field("at", &self.shown).finish()
    }
}

struct LinkState {
    conn: Option<ConnectionManager>,
    /// Redis failed and has not answered since: the warning was logged once.
    down: bool,
    /// While there is no connection, nobody tries to make one before this.
    next_try: Instant,
}

impl Redis {
    /// A link to `client` (shown in logs as `shown`). Makes no connection yet.
    pub fn new(
        client: redis::Client,
        shown: String,
        command_timeout: Duration,
        retry_after: Duration,
    ) -> Redis {
        Redis {
            client,
            shown,
            command_timeout,
            retry_after,
            state: Mutex::new(LinkState {
                conn: None,
                down: false,
                next_try: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, LinkState> {
        // The state is a few plain fields, valid after any panic.
        self.state.lock()
    }

    /// Runs `op` on the shared connection. A connection that fails may only be stale (Redis
    /// restarted, a proxy dropped it): one fresh connection is tried before Redis counts as
    /// down. `None` means "Redis is not available this time".
    pub async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let conn = self.connection().await?;
        let first_error = match op(conn).await {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        tracing::debug!(event = "dedup_redis_retry", error = first_error);
        let conn = self.reconnect().await?;
        match op(conn).await {
            Ok(value) => Some(value),
            Err(e) => {
                self.mark_down(&e);
                None
            }
        }
    }

    /// The shared connection, making it when there is none and it is time to try.
    pub async fn connection(&self) -> Option<ConnectionManager> {
        {
            let mut state = self.lock();
            if let Some(conn) = &state.conn {
                return Some(conn.clone());
            }
            let now = Instant::now();
            if now < state.next_try {
                return None;
            }
            // This caller tries; the others do without Redis meanwhile.
            state.next_try = now + self.retry_after;
        }
        self.connect().await
    }

    /// Drops the shared connection and makes a new one now, unless another caller is at
    /// it already.
    async fn reconnect(&self) -> Option<ConnectionManager> {
        {
            let mut state = self.lock();
            state.conn = None;
            let now = Instant::now();
            if state.down && now < state.next_try {
                return None;
            }
            state.next_try = now + self.retry_after;
        }
        self.connect().await
    }

    async fn connect(&self) -> Option<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(self.command_timeout)
            .set_response_timeout(self.command_timeout);
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        let conn = match timeout(self.command_timeout * 2, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                return None;
            }
            Err(_) => {
                self.mark_down("connect timed out");
                return None;
            }
        };
        let mut state = self.lock();
        let redis = &self.shown;
        if state.down {
            state.down = false;
            tracing::info!(event = "dedup_redis_recovered", redis);
        } else {
            tracing::info!(event = "dedup_redis_connected", redis);
        }
        state.conn = Some(conn.clone());
        Some(conn)
    }

    /// Drops the connection and warns, once per outage.
    fn mark_down(&self, error: &str) {
        let mut state = self.lock();
        state.conn = None;
        state.next_try = Instant::now() + self.retry_after;
        if !state.down {
            state.down = true;
            tracing::warn!(
                event = "dedup_redis_down",
                redis = %self.shown,
                error,
                "deduplicating retries in process until Redis answers again"
            );
        }
    }

    /// Whether Redis is counted as down now.
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// Takes the lock `key` for `owner` (`SET NX PX`): `Some(true)` taken, `Some(false)` held
    /// by another, `None` when Redis did not answer.
    pub async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Option<bool> {
        self.run(|mut conn| {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(owner).arg("NX").arg("PX").arg(millis(ttl));
            async move {
                self.bounded(set.query_async::<Option<String>>(&mut conn))
                    .await
            }
        })
        .await
        .map(|set| set.is_some())
    }

    /// Extends the lock `key` by `ttl` if `owner` still holds it: `Some(true)` when it does.
    pub async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Option<bool> {
        self.if_owner(RENEW, key, owner, Some(ttl)).await
    }

    /// Lets the lock `key` go if `owner` still holds it; never another's.
    pub async fn unlock(&self, key: &str, owner: &str) {
        self.if_owner(UNLOCK, key, owner, None).await;
    }

    async fn if_owner(
        &self,
        script: &str,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Option<bool> {
        self.run(|mut conn| {
            let mut eval = redis::cmd("EVAL");
            eval.arg(script).arg(1).arg(key).arg(owner);
            if let Some(ttl) = ttl {
                eval.arg(millis(ttl));
            }
            async move { self.bounded(eval.query_async::<i64>(&mut conn)).await }
        })
        .await
        .map(|done| done == 1)
    }

    /// Runs one command under the command timeout.
    pub async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match timeout(self.command_timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("command timed out".to_owned()),
        }
    }
}
