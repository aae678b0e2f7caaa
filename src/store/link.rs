//! The one Redis link of a server: a `ConnectionManager`, made on first use and kept, that
//! reconnects by itself; every command bounded by the command timeout; and a gate that,
//! once Redis failed, skips it for `retry_after` before one caller tries again. Logs
//! `store_redis_connected`, `store_redis_down` (once per outage) and `store_redis_recovered`.
//! It knows no need's keys, and never retries beyond one command on a reconnected link.

use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, ScriptInvocation};
use tokio::time::{timeout, Instant};

/// The longest one Redis command (or connect) may take before Redis counts as down.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// While Redis is down, how often one request tries it again.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long data sent to Redis may stay unacknowledged before the kernel gives the
/// connection up (`TCP_USER_TIMEOUT`). The manager keeps one connection until it errors: a
/// peer gone without a reset (a failover behind a virtual IP, a lost NAT entry) must error
/// in seconds, not after the kernel's quarter hour of retransmissions, so that the manager
/// reconnects. A Redis that is only slow still acknowledges what it receives.
#[cfg(target_os = "linux")]
const DEAD_PEER: Duration = Duration::from_secs(2);

/// Redis was not used this time: skipped while it is down, or a command failed or ran past
/// the command timeout. The caller does the same thing in process, or goes without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("redis is unavailable")]
pub struct Unavailable;

/// Why one command did not answer.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command timed out")]
    TimedOut,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

impl CommandError {
    /// The error code Redis answered with (`BUSYGROUP`, …), if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CommandError::Redis(e) => e.code(),
            CommandError::TimedOut => None,
        }
    }

    /// The connection was lost (Redis restarted, a proxy closed it): the manager has
    /// started a new one, and a command sent now waits for it.
    fn reconnecting(&self) -> bool {
        matches!(self, CommandError::Redis(e) if e.is_unrecoverable_error())
    }
}

/// One operation's handle on the link: every command through it is bounded by the
/// command timeout. Cheap to clone (the manager is shared).
#[derive(Clone)]
pub struct Conn {
    manager: ConnectionManager,
    timeout: Duration,
}

impl Conn {
    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, CommandError> {
        bounded(self.timeout, cmd.query_async(&mut self.manager)).await
    }

    /// Runs a pipeline as one round trip.
    pub async fn pipe<T: FromRedisValue>(&mut self, pipe: &Pipeline) -> Result<T, CommandError> {
        bounded(self.timeout, pipe.query_async(&mut self.manager)).await
    }

    /// Runs a Lua script by its SHA-1 (`EVALSHA`), loading it first when Redis does not
    /// have it yet (after a restart, say).
    pub async fn script<T: FromRedisValue>(
        &mut self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, CommandError> {
        bounded(self.timeout, script.invoke_async(&mut self.manager)).await
    }
}

/// A connection of its own, for a blocking command (`XREADGROUP … BLOCK`) that would hold
/// up every other command on the shared one. Not gated nor retried: its user reconnects.
pub struct Dedicated {
    conn: MultiplexedConnection,
    /// Its `CLIENT ID`, by which `Link::unblock` wakes it.
    id: i64,
    timeout: Duration,
}

impl Dedicated {
    /// Runs one command that may block for up to `block`: bounded by `block` plus the
    /// command timeout.
    pub async fn query<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        block: Duration,
    ) -> Result<T, CommandError> {
        bounded(self.timeout + block, cmd.query_async(&mut self.conn)).await
    }

    /// Its `CLIENT ID`.
    pub fn id(&self) -> i64 {
        self.id
    }
}

async fn bounded<T>(
    limit: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, CommandError> {
    match timeout(limit, command).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(CommandError::TimedOut),
    }
}

/// The shared link to Redis (`--store redis://…`). Makes no connection until first used.
pub struct Link {
    client: redis::Client,
    /// `host:port/db`, for logs (never the password).
    shown: String,
    command_timeout: Duration,
    retry_after: Duration,
    /// Made by the first caller that reaches Redis, then kept for the link's life.
    manager: OnceLock<ConnectionManager>,
    /// Held by the caller making the manager: the others wait for it.
    making: tokio::sync::Mutex<()>,
    gate: Mutex<Gate>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("at", &self.shown).finish()
    }
}

/// Whether callers may use Redis now. A few plain fields, valid after any panic.
struct Gate {
    /// Redis failed and has not answered since: `store_redis_down` was logged.
    down: bool,
    /// While Redis is down (or not reached yet), nobody tries it before this.
    next_try: Instant,
}

impl Link {
    /// A link to `client`, shown in logs as `shown`. Makes no connection yet.
    pub fn new(
        client: redis::Client,
        shown: String,
        command_timeout: Duration,
        retry_after: Duration,
    ) -> Link {
        Link {
            client,
            shown,
            command_timeout,
            retry_after,
            manager: OnceLock::new(),
            making: tokio::sync::Mutex::new(()),
            gate: Mutex::new(Gate {
                down: false,
                next_try: Instant::now(),
            }),
        }
    }

    /// Runs `op` on Redis, or says it is `Unavailable`: skipped while down, or `op` failed.
    /// When the first try fails because the connection was lost, `op` runs once more on
    /// the connection the manager makes in its place, so a Redis restart between two uses
    /// costs nothing (nor does the end of the runtime whose task drove the connection: the
    /// crate spawns the new one on the caller's); any other failure marks Redis down
    /// (logged once per outage).
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, Unavailable>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<T, CommandError>>,
    {
        let conn = self.admit().await?;
        let answer = match op(conn.clone()).await {
            Err(e) if e.reconnecting() => {
                tracing::debug!(event = "store_redis_retry", error = %e);
                op(conn).await
            }
            answer => answer,
        };
        match answer {
            Ok(value) => {
                self.answered();
                Ok(value)
            }
            Err(e) => {
                self.mark_down(&e.to_string());
                Err(Unavailable)
            }
        }
    }

    /// The one way a need falls back: `op` on Redis when the need has a `link` and Redis
    /// answers; otherwise `in_process`, the same thing done in this process's own store.
    pub async fn or_memory<T, F, Fut>(
        link: Option<&Link>,
        op: F,
        in_process: impl FnOnce() -> T,
    ) -> T
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<T, CommandError>>,
    {
        match link {
            Some(link) => match link.run(op).await {
                Ok(value) => value,
                Err(Unavailable) => in_process(),
            },
            None => in_process(),
        }
    }

    /// Reaches Redis now (at start-up, to log the outcome early): whether it is usable. A
    /// failure is logged and tried again on later uses.
    pub async fn connect(&self) -> bool {
        self.admit().await.is_ok() && !self.is_down()
    }

    /// A connection of its own (see `Dedicated`), made now: one attempt, bounded by the
    /// command timeout. Skipped while the shared link counts Redis as down.
    pub async fn dedicated(&self) -> Result<Dedicated, Unavailable> {
        if self.is_down() {
            return Err(Unavailable);
        }
        let config = AsyncConnectionConfig::new().set_connection_timeout(self.command_timeout);
        #[cfg(target_os = "linux")]
        let config = config
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_user_timeout(DEAD_PEER));
        let made = timeout(self.command_timeout * 2, async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((conn, id))
        })
        .await;
        match made {
            Ok(Ok((conn, id))) => Ok(Dedicated {
                conn,
                id,
                timeout: self.command_timeout,
            }),
            Ok(Err(e)) => {
                tracing::debug!(event = "store_redis_dedicated_failed", error = %e);
                Err(Unavailable)
            }
            Err(_) => Err(Unavailable),
        }
    }

    /// Wakes the `Dedicated` connection `id` from its blocking command, which then answers
    /// as if its wait had ended (`CLIENT UNBLOCK`).
    pub async fn unblock(&self, id: i64) {
        let mut unblock = redis::cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(id);
        let _ = self
            .run(|mut conn| {
                let unblock = &unblock;
                async move { conn.query::<i64>(unblock).await }
            })
            .await;
    }

    /// Whether Redis is counted as down now.
    pub fn is_down(&self) -> bool {
        self.gate.lock().down
    }

    /// Lets the caller through the gate, with the manager made if it was not yet.
    async fn admit(&self) -> Result<Conn, Unavailable> {
        if self.manager.get().is_none() {
            // The first connection: one caller makes it and the others wait for it (a
            // bounded connect), rather than do without Redis meanwhile: at start-up every
            // need (the outbox's shards, the first pushes) reaches for it at once. Once it
            // failed, they do without until the gate's next try.
            let _making = self.making.lock().await;
            if self.manager.get().is_none() {
                {
                    let mut gate = self.gate.lock();
                    let now = Instant::now();
                    if now < gate.next_try {
                        return Err(Unavailable);
                    }
                    gate.next_try = now + self.retry_after;
                }
                let manager = self.make().await?;
                return Ok(Conn {
                    manager,
                    timeout: self.command_timeout,
                });
            }
        }
        {
            let mut gate = self.gate.lock();
            if gate.down {
                let now = Instant::now();
                if now < gate.next_try {
                    return Err(Unavailable);
                }
                // This caller tries; the others do without Redis meanwhile.
                gate.next_try = now + self.retry_after;
            }
        }
        let Some(manager) = self.manager.get() else {
            return Err(Unavailable);
        };
        Ok(Conn {
            manager: manager.clone(),
            timeout: self.command_timeout,
        })
    }

    /// Makes the manager: one connection attempt, bounded.
    async fn make(&self) -> Result<ConnectionManager, Unavailable> {
        // One attempt per reconnect: the crate's backoff starts at a fixed second and
        // multiplies by `factor`, and a command sent meanwhile waits for it. Without it,
        // a failed reconnect ends at once and the next command starts another, so a Redis
        // that is back is used at the gate's next try (`retry_after`), as before.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(self.command_timeout);
        #[cfg(target_os = "linux")]
        let config = config
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_user_timeout(DEAD_PEER));
        let made = timeout(
            self.command_timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        let manager = match made {
            Ok(Ok(manager)) => manager,
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                return Err(Unavailable);
            }
            Err(_) => {
                self.mark_down("connect timed out");
                return Err(Unavailable);
            }
        };
        // Two callers may have made one each (a connect slower than `retry_after`): the
        // first kept is the link's.
        let manager = self.manager.get_or_init(|| manager).clone();
        let mut gate = self.gate.lock();
        let redis = &self.shown;
        if gate.down {
            gate.down = false;
            tracing::info!(event = "store_redis_recovered", redis);
        } else {
            tracing::info!(event = "store_redis_connected", redis);
        }
        Ok(manager)
    }

    /// Redis answered: the outage, if there was one, is over.
    fn answered(&self) {
        let mut gate = self.gate.lock();
        if gate.down {
            gate.down = false;
            let redis = &self.shown;
            tracing::info!(event = "store_redis_recovered", redis);
        }
    }

    /// Skips Redis for `retry_after`, and warns once per outage.
    fn mark_down(&self, error: &str) {
        let mut gate = self.gate.lock();
        gate.next_try = Instant::now() + self.retry_after;
        if !gate.down {
            gate.down = true;
            tracing::warn!(
                event = "store_redis_down",
                redis = %self.shown,
                error,
                "deduplicating retries in process until Redis answers again"
            );
        }
    }
}
