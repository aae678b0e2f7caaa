//! The outbox's storage in Redis (`--store redis://…`): one Redis Stream per shard, read
//! through a consumer group. A shard has one owner at a time among the instances, by a lease
//! (`…:owner`, 10 s, renewed every 3 s while its instance lives), so one user's messages
//! go out in order whichever instance queued them. An entry is acknowledged and deleted
//! once sent or given up; an instance that dies leaves its entries pending, and the next
//! owner of the shard claims them (`XAUTOCLAIM`) before reading new ones. Delivery is at
//! least once: a message sent just before its instance died is sent again. A free shard is
//! taken at once (at start, a lone instance owns them all within a round trip). A read
//! whose connection fails may leave entries pending under this instance's name that it
//! never received: after the reader's next connection its shards claim their own pending
//! entries again, skipping those they hold.
//!
//! New entries are read by one `Reader` per outbox: a blocking `XREADGROUP … BLOCK` over
//! the streams its shards own, on a connection of its own, so an entry reaches its sender
//! as soon as Redis has it; a change of the streams to read wakes it (`CLIENT UNBLOCK`).
//!
//! Each stream is capped: an entry is added only while the stream holds fewer than the cap
//! (`XLEN` and `XADD` in one script), and refused past it. Nothing is ever trimmed, since
//! what a stream holds is unsent. The streams live in Redis' memory: only a Redis that
//! persists its writes (AOF) keeps them across its own restart; `check_durability` asks.
//!
//! Entries are opaque here (a `job` field of JSON): what a job holds, how it is sent,
//! retried and backed off, and the in-process queues that stand in while Redis is away are
//! `crate::act::outbox`'s.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::{Cmd, FromRedisValue, Script};
use tokio::sync::Notify;

use super::link::{CommandError, Dedicated, Link, Unavailable};
use super::Lease;

/// The consumer group every instance reads through.
const GROUP: &str = "senders";
/// How long a shard's lease lasts without renewal: how long a dead instance's messages wait.
pub const LEASE: Duration = Duration::from_secs(10);
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Entries read at once, per stream.
pub(crate) const BATCH: usize = 16;
/// How long one blocking read waits for a new entry. Not a delay: an entry added meanwhile
/// is answered at once; a change of the shards read wakes it (`CLIENT UNBLOCK`).
/// (A change that lands just as a read starts can miss it: `BLOCK` bounds that wait.)
const BLOCK: Duration = Duration::from_secs(2);
/// While Redis is away (or the dedicated connection cannot be made), how long the reader
/// waits before it tries again.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Adds an entry only while the stream holds fewer than `ARGV[2]`: its id, or nil when full.
static ADD_CAPPED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return false end \
         return redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])",
    )
});

/// What adding a job came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    /// In the stream, under this id.
    Entry(String),
    /// The stream holds as many entries as it may: nothing was added.
    Full,
}

/// One entry of a shard's stream.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    /// The job as it was added; `None` when the entry has none (not written by wxrules).
    pub(crate) job: Option<Vec<u8>>,
}

impl Entry {
    fn of(mut entry: StreamId) -> Entry {
        let job = match entry.map.remove("job") {
            Some(redis::Value::BulkString(bytes)) => Some(bytes),
            _ => None,
        };
        Entry { id: entry.id, job }
    }
}

/// One shard's stream, and this instance's lease on it.
#[derive(Debug)]
pub(crate) struct ShardStream {
    link: Arc<Link>,
    key: String,
    /// The shard's lease, under this instance's name in the group.
    lease: Lease,
    /// This instance's name in the group.
    consumer: String,
    /// The lease is ours now.
    owned: AtomicBool,
    /// Told when `owned` changes (the shard's sender waits on it).
    ownership: Notify,
    /// The shard's sender is ready for new entries (the group is there, what earlier
    /// owners left is claimed): the reader reads this stream.
    reading: AtomicBool,
}

impl ShardStream {
    /// The stream of `account`'s shard number `shard`, read as `consumer` (this instance's
    /// name in the group and its value in the lease).
    pub(crate) fn new(link: Arc<Link>, account: &str, shard: usize, consumer: &str) -> ShardStream {
        let key = format!("wxrules:outbox:{account}:{shard}");
        ShardStream {
            lease: Lease::new(
                Arc::clone(&link),
                format!("{key}:owner"),
                consumer.to_owned(),
            ),
            link,
            key,
            consumer: consumer.to_owned(),
            owned: AtomicBool::new(false),
            ownership: Notify::new(),
            reading: AtomicBool::new(false),
        }
    }

    /// Waits until the lease may have changed hands (or `wait` has passed).
    pub(crate) async fn ownership_changed(&self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.ownership.notified()).await;
    }

    /// Whether the reader reads this stream.
    pub(crate) fn reading(&self) -> bool {
        self.reading.load(Ordering::Acquire)
    }

    /// Starts or stops the reader's reading of this stream; wakes `reader` when that
    /// changes, so that its blocking read covers the streams to read now.
    pub(crate) async fn set_reading(&self, reading: bool, reader: &Reader) {
        if self.reading.swap(reading, Ordering::AcqRel) != reading {
            reader.changed().await;
        }
    }

    /// Runs one command on the stream.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Unavailable> {
        self.link
            .run(|mut conn| async move { conn.query::<T>(cmd).await })
            .await
    }

    /// Adds a job (its JSON) unless the stream holds `cap` entries already (`Full`);
    /// `Unavailable` when Redis did not answer (the caller queues it in process).
    pub(crate) async fn add(&self, job: &str, cap: usize) -> Result<Added, Unavailable> {
        let mut add = ADD_CAPPED.key(&self.key);
        add.arg(job).arg(cap);
        let id = self
            .link
            .run(|mut conn| {
                let add = &add;
                async move { conn.script::<Option<String>>(add).await }
            })
            .await?;
        Ok(id.map_or(Added::Full, Added::Entry))
    }

    /// Whether this instance holds the shard's lease.
    pub(crate) fn owned(&self) -> bool {
        self.owned.load(Ordering::Acquire)
    }

    /// Takes or renews the lease: whether this instance owns the shard now, `Unavailable`
    /// when Redis did not answer (then it does not). A lease still this instance's in
    /// Redis (after Redis was away for a moment) is renewed at once rather than waited out.
    async fn hold(&self) -> Result<bool, Unavailable> {
        let held = if self.owned() {
            self.lease.renew(LEASE).await
        } else {
            match self.lease.take(LEASE).await {
                Ok(false) => self.lease.renew(LEASE).await,
                taken => taken,
            }
        };
        let owned = held == Ok(true);
        if self.owned.swap(owned, Ordering::AcqRel) != owned {
            self.ownership.notify_one();
        }
        held
    }

    /// Keeps the lease while the instance lives: a task of its own, so that a long send
    /// does not let it lapse. A free shard is taken at once at start; while Redis does
    /// not answer, it is tried again every `REREAD_AFTER` rather than every renewal.
    pub(crate) async fn keep_lease(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            let wait = match self.hold().await {
                Ok(_) => RENEW_EVERY,
                Err(Unavailable) => REREAD_AFTER,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        // Stopping: another instance may take the shard at once rather than after `LEASE`
        // (what this one had not acknowledged, it claims).
        if self.owned.swap(false, Ordering::AcqRel) {
            self.ownership.notify_one();
            self.lease.release().await;
        }
    }

    /// Creates the group (and the stream) if they are not there yet.
    pub(crate) async fn ensure_group(&self) {
        let create = Cmd::xgroup_create_mkstream(&self.key, GROUP, "0");
        // Redis away: the next owner of the shard creates it.
        let _ = self
            .link
            .run(|mut conn| {
                let create = &create;
                async move {
                    match conn.query::<()>(create).await {
                        // BUSYGROUP: it exists already.
                        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                        other => other,
                    }
                }
            })
            .await;
    }

    /// Claims the entries left pending by earlier owners, or by this instance's own reads
    /// whose answers were lost, oldest first, `limit` at most (the stream's cap: all of
    /// them); and whether the whole pending list was read (not when Redis failed midway).
    pub(crate) async fn claim(&self, limit: usize) -> (Vec<Entry>, bool) {
        let mut claimed = Vec::new();
        let mut cursor = "0-0".to_owned();
        while claimed.len() < limit {
            let count = (limit - claimed.len()).min(1000);
            let claim = Cmd::xautoclaim_options(
                &self.key,
                GROUP,
                &self.consumer,
                0,
                &cursor,
                StreamAutoClaimOptions::default().count(count),
            );
            let Ok(reply) = self.query::<StreamAutoClaimReply>(&claim).await else {
                return (claimed, false);
            };
            claimed.extend(reply.claimed.into_iter().map(Entry::of));
            // `0-0`: the whole pending list has been seen.
            if reply.next_stream_id == "0-0" || reply.next_stream_id == cursor {
                break;
            }
            cursor = reply.next_stream_id;
        }
        (claimed, true)
    }

    /// The entry is done with: acknowledged and deleted; `false` when Redis did not
    /// answer (the entry is still pending).
    pub(crate) async fn done(&self, id: &str) -> bool {
        let mut pipe = redis::pipe();
        pipe.add_command(Cmd::xack(&self.key, GROUP, &[id]))
            .ignore()
            .add_command(Cmd::xdel(&self.key, &[id]))
            .ignore();
        // Redis away: the entry stays pending; its sender acknowledges it again later.
        self.link
            .run(|mut conn| {
                let pipe = &pipe;
                async move { conn.pipe::<()>(pipe).await }
            })
            .await
            .is_ok()
    }
}

/// Reads new entries of an outbox's streams (those its shards' senders are `reading`)
/// with one blocking `XREADGROUP … BLOCK` on a connection of its own: an entry added by
/// any instance reaches its sender as soon as Redis has it, without polling, and the
/// shared link's commands never wait behind the read. One per outbox (an account), so one
/// connection per account beside the shared one.
pub(crate) struct Reader {
    link: Arc<Link>,
    /// This instance's name in the group (as its `ShardStream`s').
    consumer: String,
    /// The connection's `CLIENT ID` while a read is blocked on it, else 0.
    blocked: AtomicI64,
    /// Told when the streams to read change while no read is blocked.
    changed: Notify,
    /// They changed since the reader last looked.
    dirty: AtomicBool,
    /// How many connections the reader has made. A read whose connection failed may have
    /// had entries moved to this instance's pending list by Redis without their reply ever
    /// coming back: after each new connection the senders claim their own pending entries
    /// again (`ShardStream::claim`), skipping those they hold.
    connections: AtomicU64,
}

impl Reader {
    pub(crate) fn new(link: Arc<Link>, consumer: &str) -> Reader {
        Reader {
            link,
            consumer: consumer.to_owned(),
            blocked: AtomicI64::new(0),
            changed: Notify::new(),
            dirty: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        }
    }

    /// The streams to read have changed: a blocked read ends now, and one about to start
    /// (or a wait for streams to read) is told.
    pub(crate) async fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.changed.notify_one();
        let id = self.blocked.load(Ordering::Acquire);
        if id != 0 {
            self.link.unblock(id).await;
        }
    }

    /// How many connections the reader has made: when it changes, a read may have been
    /// lost with the connection before (`connections`).
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// Waits until the streams to read may have changed (or `wait` has passed).
    pub(crate) async fn wait_for_change(&self, wait: Duration) {
        if self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let _ = tokio::time::timeout(wait, self.changed.notified()).await;
    }

    /// New entries of `streams` (`BATCH` at most from each, by their place in `streams`),
    /// waiting up to `BLOCK` for the first: empty when none came, the read was woken by
    /// `changed`, or Redis is away (after `REREAD_AFTER`). `conn` is the reader's own
    /// connection, made here when missing and dropped after a failure.
    pub(crate) async fn read(
        &self,
        conn: &mut Option<Dedicated>,
        streams: &[&ShardStream],
    ) -> Vec<(usize, Vec<Entry>)> {
        if streams.is_empty() {
            return Vec::new();
        }
        if conn.is_none() {
            *conn = self.link.dedicated().await.ok();
            if conn.is_some() {
                self.connections.fetch_add(1, Ordering::AcqRel);
            }
        }
        let Some(dedicated) = conn.as_mut() else {
            tokio::time::sleep(REREAD_AFTER).await;
            return Vec::new();
        };
        let keys: Vec<&str> = streams.iter().map(|s| s.key.as_str()).collect();
        let ids = vec![">"; keys.len()];
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .count(BATCH)
            .block(usize::try_from(BLOCK.as_millis()).unwrap_or(usize::MAX));
        let read = Cmd::xread_options(&keys, &ids, &options);
        self.blocked.store(dedicated.id(), Ordering::Release);
        // A change notified before the read was blocked would not wake it: look once more.
        let answer = if self.dirty.swap(false, Ordering::AcqRel) {
            Ok(None)
        } else {
            dedicated
                .query::<Option<StreamReadReply>>(&read, BLOCK)
                .await
        };
        self.blocked.store(0, Ordering::Release);
        match answer {
            Ok(reply) => reply
                .map(|reply| {
                    reply
                        .keys
                        .into_iter()
                        .filter_map(|key| {
                            let at = keys.iter().position(|k| *k == key.key)?;
                            Some((at, key.ids.into_iter().map(Entry::of).collect()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Err(e) => {
                if e.code() == Some("NOGROUP") {
                    // The stream went with a Redis restart that did not keep it.
                    for stream in streams {
                        stream.ensure_group().await;
                    }
                } else {
                    tracing::debug!(event = "outbox_read_failed", error = %e);
                    *conn = None;
                    tokio::time::sleep(REREAD_AFTER).await;
                }
                Vec::new()
            }
        }
    }
}

/// Whether Redis keeps what it holds across its own restart, as far as it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// AOF is on, with this `appendfsync` (`everysec`, as advised; `always`; or `no`, which
    /// leaves the flush to the OS).
    Aof { fsync: String },
    /// No AOF: a restart keeps at most the last snapshot (`save`, empty when there are
    /// none), and loses every entry added since.
    NotDurable { save: String },
    /// It could not be asked: `CONFIG` refused (a managed Redis often renames or forbids
    /// it), or Redis did not answer.
    Unknown(String),
}

/// Asks Redis (`CONFIG GET appendonly`, `appendfsync`, `save`) whether the outbox's
/// streams survive its restart. A refused `CONFIG` is an answer, not an outage.
pub async fn durability(link: &Link) -> Durability {
    let get = |name: &'static str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        cmd
    };
    let (appendonly, appendfsync, save) = (get("appendonly"), get("appendfsync"), get("save"));
    let asked = link
        .run(|mut conn| {
            let (appendonly, appendfsync, save) = (&appendonly, &appendfsync, &save);
            async move {
                let mut answers = Vec::with_capacity(3);
                for cmd in [appendonly, appendfsync, save] {
                    match conn.query::<Vec<String>>(cmd).await {
                        // `[name, value]`.
                        Ok(pair) => answers.push(pair.into_iter().nth(1).unwrap_or_default()),
                        // An error reply (`ERR unknown command`, `NOPERM`): Redis is up.
                        Err(CommandError::Redis(e)) if e.code().is_some() => {
                            return Ok(Err(e.code().unwrap_or("ERR").to_owned()))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(Ok(answers))
            }
        })
        .await;
    match asked {
        Ok(Ok(answers)) => match answers.as_slice() {
            [appendonly, fsync, _] if appendonly == "yes" => Durability::Aof {
                fsync: fsync.clone(),
            },
            [_, _, save] => Durability::NotDurable { save: save.clone() },
            _ => Durability::Unknown("unexpected answer to CONFIG GET".into()),
        },
        Ok(Err(code)) => Durability::Unknown(format!("CONFIG GET was refused ({code})")),
        Err(Unavailable) => Durability::Unknown("Redis did not answer".into()),
    }
}

/// Checks at start-up that Redis keeps the outbox across its restart, and says what it
/// found: `store_redis_durable` (info), or a warning, `store_redis_not_durable` (no AOF:
/// a Redis restart loses every queued message) or `store_redis_durability_unknown`.
pub async fn check_durability(link: &Link) -> Durability {
    let found = durability(link).await;
    match &found {
        Durability::Aof { fsync } => {
            tracing::info!(event = "store_redis_durable", appendfsync = %fsync);
            if fsync == "no" {
                tracing::warn!(
                    event = "store_redis_not_durable",
                    appendonly = "yes",
                    appendfsync = %fsync,
                    "Redis leaves the AOF's flush to the OS: a crash of the machine may lose the outbox's last messages; set `appendfsync everysec`"
                );
            }
        }
        Durability::NotDurable { save } => tracing::warn!(
            event = "store_redis_not_durable",
            appendonly = "no",
            save = %save,
            "Redis does not persist its writes (AOF): a Redis restart loses every customer-service message queued in the outbox; set `appendonly yes` and `appendfsync everysec`"
        ),
        Durability::Unknown(why) => tracing::warn!(
            event = "store_redis_durability_unknown",
            reason = %why,
            "could not check that Redis persists its writes; the outbox needs AOF (`appendonly yes`, `appendfsync everysec`) to survive a Redis restart"
        ),
    }
    found
}
