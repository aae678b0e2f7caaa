//! The outbox in Redis (`--store redis://…`): one Redis Stream per shard, read through a
//! consumer group. A shard has one owner at a time among the instances, by a lease
//! (`…:owner`, 10 s, renewed every 3 s while its instance lives), so one user's messages
//! go out in order whichever instance queued them. An entry is acknowledged and deleted
//! once sent or given up; an instance that dies leaves its entries pending, and the next
//! owner of the shard claims them (`XAUTOCLAIM`) before reading new ones. Delivery is at
//! least once: a message sent just before its instance died is sent again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::Cmd;
use serde::{Deserialize, Serialize};

use crate::store::{Lease, Redis};
use crate::wechat_api::CustomMessage;

/// The consumer group every instance reads through.
const GROUP: &str = "senders";
/// How long a shard's lease lasts without renewal: how long a dead instance's messages wait.
pub const LEASE: Duration = Duration::from_secs(10);
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How often an owner with nothing to send looks again.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Entries read at once.
const BATCH: usize = 16;

/// One push's messages as the stream keeps them.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredJob {
    pub(super) rule: String,
    pub(super) messages: Vec<CustomMessage>,
    /// Unix milliseconds when it was queued.
    pub(super) queued_at_ms: u64,
}

/// One shard's stream.
#[derive(Debug)]
pub(super) struct Stream {
    redis: Arc<Redis>,
    key: String,
    /// The shard's lease, under this instance's name in the group.
    lease: Lease,
    /// This instance's name in the group.
    consumer: String,
    /// The lease is ours now.
    owned: AtomicBool,
}

impl Stream {
    pub(super) fn new(redis: Arc<Redis>, account: &str, shard: usize, consumer: &str) -> Stream {
        let key = format!("wxrules:outbox:{account}:{shard}");
        Stream {
            lease: Lease::new(
                Arc::clone(&redis),
                format!("{key}:owner"),
                consumer.to_owned(),
            ),
            redis,
            key,
            consumer: consumer.to_owned(),
            owned: AtomicBool::new(false),
        }
    }

    /// Runs one command on the stream; `None` when Redis did not answer.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Option<T> {
        self.redis
            .run(|mut conn| async move { conn.query::<T>(cmd).await })
            .await
            .ok()
    }

    /// Adds a job; false when Redis did not take it (the caller queues it in process).
    pub(super) async fn add(&self, job: &StoredJob) -> bool {
        let Ok(json) = serde_json::to_string(job) else {
            return false;
        };
        let add = Cmd::xadd(&self.key, "*", &[("job", json)]);
        self.query::<String>(&add).await.is_some()
    }

    pub(super) fn owned(&self) -> bool {
        self.owned.load(Ordering::Acquire)
    }

    /// Takes or renews the lease; true if this instance owns the shard now.
    pub(super) async fn hold(&self) -> bool {
        let owned = if self.owned() {
            self.lease.renew(LEASE).await
        } else {
            self.lease.take(LEASE).await
        } == Ok(true);
        self.owned.store(owned, Ordering::Release);
        owned
    }

    /// Keeps the lease while the instance lives: a task of its own, so that a long send
    /// does not let it lapse.
    pub(super) async fn keep_lease(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            self.hold().await;
            tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
        // Stopping: another instance may take the shard at once rather than after `LEASE`
        // (what this one had not acknowledged, it claims).
        if self.owned.swap(false, Ordering::AcqRel) {
            self.lease.release().await;
        }
    }

    /// Creates the group (and the stream) if they are not there yet.
    pub(super) async fn ensure_group(&self) {
        let create = Cmd::xgroup_create_mkstream(&self.key, GROUP, "0");
        // Redis away: the next owner of the shard creates it.
        let _ = self
            .redis
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

    /// Claims every entry left pending by earlier owners, oldest first.
    pub(super) async fn claim(&self) -> Vec<StreamId> {
        let claim = Cmd::xautoclaim_options(
            &self.key,
            GROUP,
            &self.consumer,
            0,
            "0-0",
            StreamAutoClaimOptions::default().count(1000),
        );
        self.query::<StreamAutoClaimReply>(&claim)
            .await
            .map(|reply| reply.claimed)
            .unwrap_or_default()
    }

    /// New entries, oldest first (none when there are none or Redis is away).
    pub(super) async fn read(&self) -> Vec<StreamId> {
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .count(BATCH);
        let read = Cmd::xread_options(&[&self.key], &[">"], &options);
        self.query::<Option<StreamReadReply>>(&read)
            .await
            .flatten()
            .map(|reply| reply.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default()
    }

    /// The entry is done with: acknowledged and deleted.
    pub(super) async fn done(&self, id: &str) {
        let mut pipe = redis::pipe();
        pipe.add_command(Cmd::xack(&self.key, GROUP, &[id]))
            .ignore()
            .add_command(Cmd::xdel(&self.key, &[id]))
            .ignore();
        // Redis away: the entry stays pending, and is sent again (at least once).
        let _ = self
            .redis
            .run(|mut conn| {
                let pipe = &pipe;
                async move { conn.pipe::<()>(pipe).await }
            })
            .await;
    }

    pub(super) const fn idle_poll() -> Duration {
        IDLE_POLL
    }
}

/// The job of an entry, if it reads as one.
pub(super) fn job_of(entry: &StreamId) -> Option<StoredJob> {
    match entry.map.get("job")? {
        redis::Value::BulkString(bytes) => serde_json::from_slice(bytes).ok(),
        _ => None,
    }
}
