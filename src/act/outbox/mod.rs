//! The outbox: customer-service messages waiting to go out through WeChat's API, and the
//! tasks that send them. A push only queues (never waits on the network); the messages of
//! one push go out in order, and so do all of one user's, each user being served by one
//! shard. Within a shard each user has a lane (`lanes`): a user whose sends fail with an
//! error worth retrying is parked with a due time while the shard serves the others, so
//! one user's retries never hold up another's messages. Final errcodes are not retried.
//! A message WeChat refuses because the user's customer-service quota is spent (45047)
//! is handed, with the user's messages behind it, to the account's `OverQuota` (the
//! server keeps them for the user's next message): the outbox knows nothing of rules or
//! kept answers.
//!
//! In process (the default) it is bounded, and what it holds when the process dies is lost
//! (on SIGTERM it drains for a few seconds and logs what is left). With Redis it is a
//! Redis Stream per shard, each capped: any instance delivers, nothing is lost when one
//! dies; while Redis is away, pushes queue in process. The streams themselves (keys,
//! consumer group, leases, the cap) are `store::outbox`'s; here are the jobs, the sending
//! and retries (`shard`).

mod lanes;
mod shard;

pub use crate::store::outbox::LEASE;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::store::outbox::{Added, Entry, Reader, ShardStream, BATCH};
use crate::store::quota::Window;
use crate::store::Unavailable;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::recent::Followup;
use crate::wechat_api::{Api, CustomMessage};
use shard::Shard;

/// How the outbox behaves.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Senders working at once; a user always goes to the same one.
    pub shards: usize,
    /// Messages held at most in process; a push whose messages do not fit is refused
    /// (logged, counted). With Redis, each shard's stream holds `capacity / shards` pushes
    /// at most, past which a push is refused likewise.
    pub capacity: usize,
    /// The first wait before a retry, doubled each time up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A message not sent this long after it was queued is given up (failed).
    pub give_up_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 8,
            capacity: 10_000,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            give_up_after: Duration::from_secs(15 * 60),
        }
    }
}

impl Config {
    /// The entries one shard's stream holds at most.
    fn stream_cap(&self) -> usize {
        (self.capacity / self.shards.max(1)).max(1)
    }
}

/// How many pushes' messages the outbox keeps a `Followup` for (with Redis, where a job
/// crosses the stream): the dashboard's ring shows the last 200 pushes.
const FOLLOWUPS: usize = 256;

/// The messages of one push, for one user.
#[derive(Debug)]
struct Job {
    rule: Arc<str>,
    messages: Vec<CustomMessage>,
    /// The window of WeChat's quota they were counted against, if they were.
    window: Option<Window>,
    queued_at: Instant,
    followup: Option<Arc<Followup>>,
}

/// One push's messages as a shard's stream keeps them (as JSON).
#[derive(Debug, Serialize, Deserialize)]
struct StoredJob {
    rule: String,
    messages: Vec<CustomMessage>,
    /// Absent from the entries of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<Window>,
    /// Unix milliseconds when it was queued.
    queued_at_ms: u64,
}

/// Messages to one user that WeChat refused because the user's customer-service quota is
/// spent (45047): the first one tried, and every message of the user's queued behind it,
/// in order (WeChat would refuse them too, until the user's next action).
#[derive(Debug)]
pub struct Spent<'a> {
    /// The account's scope (`Account::scope`), which the keys of its stores carry.
    pub scope: &'a str,
    /// The account's metrics; `account()` is its name in log lines.
    pub metrics: &'a Metrics,
    pub user: &'a str,
    /// The rule of the first message.
    pub rule: &'a str,
    /// The windows of the quota the messages were counted against (`store::quota`), each
    /// once, in the order they were queued; empty when none was.
    pub windows: Vec<Window>,
    pub messages: Vec<CustomMessage>,
}

/// What becomes of messages refused with 45047 (`Spent`): the server's slow answers count
/// the user's quota as spent and keep the messages for the user's next message
/// (`server::slow`). Set per account with `Outbox::keep_over_quota`; without it such a
/// message fails as any final errcode does.
pub trait OverQuota: Send + Sync + std::fmt::Debug {
    /// Counts `spent.user`'s quota as used up and keeps `spent.messages` for their next
    /// message. Whether they were kept: if not, they are lost (the outbox counts them as
    /// failed).
    fn keep<'a>(&'a self, spent: Spent<'a>) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// An account's `OverQuota`, with the account's scope. Set once, after the outbox starts
/// (the account that knows its scope is made after its outbox), and read by every shard.
#[derive(Debug)]
struct Keeper {
    over_quota: Arc<dyn OverQuota>,
    scope: Box<str>,
}

type KeeperCell = Arc<OnceLock<Keeper>>;

impl StoredJob {
    /// The job of an entry, if it reads as one.
    fn of(entry: &Entry) -> Option<StoredJob> {
        serde_json::from_slice(entry.job.as_deref()?).ok()
    }
}

/// Why messages were not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the outbox is full ({0} messages)")]
    Full(usize),
    /// With Redis: the user's shard's stream holds as many pushes as it may.
    #[error("the outbox's Redis stream for this user is full ({0} pushes waiting)")]
    StreamFull(usize),
    #[error("the server is stopping")]
    Closing,
    #[error(
        "no AppSecret configured (WXRULES_APPSECRET): customer-service messages cannot be sent"
    )]
    NoCredentials,
}

/// The queue side, shared by every request handler.
#[derive(Debug)]
pub struct Outbox {
    shards: Vec<mpsc::UnboundedSender<Job>>,
    /// With Redis: the shard streams, tried before the in-process queues.
    streams: Vec<Arc<ShardStream>>,
    /// With Redis: the followups of the jobs this instance added, by entry id, for its
    /// own shards to fill in when they send them (another instance's cannot).
    followups: Arc<quick_cache::sync::Cache<String, Arc<Followup>>>,
    queued: Arc<AtomicUsize>,
    closing: AtomicBool,
    capacity: usize,
    stream_cap: usize,
    can_send: bool,
    metrics: Metrics,
    /// Where messages refused with 45047 go; shared with the shards.
    keeper: KeeperCell,
}

/// The sending side: the shard tasks, and how to stop them.
#[derive(Debug)]
pub struct Senders {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// Starts the shard tasks on the current tokio runtime, sending through `api`.
    pub fn start(api: &Arc<Api>, config: Config, metrics: Metrics) -> (Outbox, Senders) {
        let queued = Arc::new(AtomicUsize::new(0));
        let keeper = KeeperCell::default();
        let (stop, stopping) = watch::channel(false);
        let mut shards = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..config.shards.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            shards.push(tx);
            let shard = Shard::new(api, config, &metrics, Arc::clone(&queued), &keeper);
            tasks.push(tokio::spawn(shard.run(rx, stopping.clone())));
        }
        let outbox = Outbox {
            shards,
            streams: Vec::new(),
            followups: Arc::new(quick_cache::sync::Cache::new(FOLLOWUPS)),
            queued: Arc::clone(&queued),
            closing: AtomicBool::new(false),
            capacity: config.capacity,
            stream_cap: config.stream_cap(),
            can_send: api.can_send(),
            metrics,
            keeper,
        };
        (
            outbox,
            Senders {
                tasks,
                stop,
                queued,
            },
        )
    }

    /// The outbox in Redis: as `start`, plus one stream per shard in `redis` for the account
    /// `account`, read by this instance while it holds the shard's lease. The in-process
    /// shards stay for when Redis is away.
    pub fn start_shared(
        api: &Arc<Api>,
        config: Config,
        metrics: &Metrics,
        redis: &Arc<crate::store::Link>,
        account: &str,
    ) -> (Outbox, Senders) {
        use rand::distributions::{Alphanumeric, DistString};
        let (mut outbox, mut senders) = Outbox::start(api, config, metrics.clone());
        let consumer = Alphanumeric.sample_string(&mut rand::thread_rng(), 12);
        let reader = Arc::new(Reader::new(Arc::clone(redis), &consumer));
        let mut feeds = Vec::new();
        for i in 0..config.shards.max(1) {
            let stream = Arc::new(ShardStream::new(Arc::clone(redis), account, i, &consumer));
            let stopping = senders.stop.subscribe();
            senders.tasks.push(tokio::spawn(
                Arc::clone(&stream).keep_lease(stopping.clone()),
            ));
            let unqueued = Arc::new(AtomicUsize::new(0));
            let shard = Shard::new(api, config, metrics, unqueued, &outbox.keeper);
            let followups = Arc::clone(&outbox.followups);
            // What the reader has read and the shard not yet taken: bounded by the
            // stream's read-ahead.
            let (feed, fed) = mpsc::channel(config.stream_cap().max(BATCH));
            feeds.push(feed);
            senders.tasks.push(tokio::spawn(shard.run_stream(
                Arc::clone(&stream),
                Arc::clone(&reader),
                fed,
                followups,
                stopping,
            )));
            outbox.streams.push(stream);
        }
        senders.tasks.push(tokio::spawn(read_streams(
            reader,
            outbox.streams.clone(),
            feeds,
            senders.stop.subscribe(),
        )));
        (outbox, senders)
    }

    /// An outbox that sends nothing: every message is refused as unsendable (counted). For
    /// a server without an AppSecret, and for tests that do not send.
    pub fn disabled(metrics: Metrics) -> Outbox {
        Outbox {
            shards: Vec::new(),
            streams: Vec::new(),
            followups: Arc::new(quick_cache::sync::Cache::new(1)),
            queued: Arc::new(AtomicUsize::new(0)),
            closing: AtomicBool::new(false),
            capacity: 0,
            stream_cap: 0,
            can_send: false,
            metrics,
            keeper: KeeperCell::default(),
        }
    }

    /// Messages WeChat refuses with 45047 go to `over_quota` from now on, for the account
    /// whose keys carry `scope`, instead of failing. Set once: later calls do nothing.
    pub fn keep_over_quota(&self, over_quota: Arc<dyn OverQuota>, scope: &str) {
        let _ = self.keeper.set(Keeper {
            over_quota,
            scope: scope.into(),
        });
    }

    /// Queues `messages` (all to one user) in order, after whatever that user has queued.
    /// Never waits. Refused when the outbox is full, stopping, or cannot send at all; the
    /// refusal is counted, and the caller logs it.
    pub async fn enqueue(
        &self,
        rule: &Arc<str>,
        messages: Vec<CustomMessage>,
    ) -> Result<(), Refused> {
        self.enqueue_followed(rule, messages, None, None).await
    }

    /// `enqueue`, with the push's `Followup` told what becomes of each message (queued,
    /// refused, then sent, failed or kept), and the `window` of WeChat's quota the
    /// messages were counted against (spent if WeChat answers 45047).
    pub async fn enqueue_followed(
        &self,
        rule: &Arc<str>,
        messages: Vec<CustomMessage>,
        followup: Option<Arc<Followup>>,
        window: Option<Window>,
    ) -> Result<(), Refused> {
        let Some(first) = messages.first() else {
            return Ok(());
        };
        if self.can_send && !self.closing.load(Ordering::Acquire) && !self.streams.is_empty() {
            let stream = &self.streams[shard_of(&first.touser, self.streams.len())];
            let job = StoredJob {
                rule: rule.to_string(),
                messages,
                window,
                queued_at_ms: unix_millis(),
            };
            let added = match serde_json::to_string(&job) {
                Ok(json) => stream.add(&json, self.stream_cap).await,
                Err(_) => Err(Unavailable),
            };
            let n = job.messages.len();
            return match added {
                Ok(Added::Entry(id)) => {
                    if let Some(followup) = followup {
                        followup.queued(n);
                        self.followups.insert(id, followup);
                    }
                    Ok(())
                }
                // Never trimmed: what waits in the stream is unsent. The push's messages
                // are refused instead, as a full outbox in process refuses them.
                Ok(Added::Full) => self.refuse(Refused::StreamFull(self.stream_cap), n, followup),
                // Redis is away: this push's messages wait in process instead.
                Err(Unavailable) => self.enqueue_here(rule, job.messages, followup, window),
            };
        }
        self.enqueue_here(rule, messages, followup, window)
    }

    fn enqueue_here(
        &self,
        rule: &Arc<str>,
        messages: Vec<CustomMessage>,
        followup: Option<Arc<Followup>>,
        window: Option<Window>,
    ) -> Result<(), Refused> {
        let n = messages.len();
        let Some(first) = messages.first() else {
            return Ok(());
        };
        if !self.can_send {
            return self.refuse(Refused::NoCredentials, n, followup);
        }
        if self.closing.load(Ordering::Acquire) {
            return self.refuse(Refused::Closing, n, followup);
        }
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return self.refuse(Refused::Full(self.capacity), n, followup);
        }
        let shard = &self.shards[shard_of(&first.touser, self.shards.len())];
        if let Some(followup) = &followup {
            followup.queued(n);
        }
        let job = Job {
            rule: Arc::clone(rule),
            messages,
            window,
            queued_at: Instant::now(),
            followup,
        };
        // Counted before the send: the shard may take and send it at once.
        self.metrics.outbox_state("queued", n as i64);
        if let Err(mpsc::error::SendError(job)) = shard.send(job) {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.metrics.outbox_state("queued", -(n as i64));
            if let Some(followup) = &job.followup {
                followup.unqueue(n);
            }
            return self.refuse(Refused::Closing, n, job.followup);
        }
        Ok(())
    }

    /// Counts `n` messages refused for `why` (on the push's followup too).
    fn refuse(
        &self,
        why: Refused,
        n: usize,
        followup: Option<Arc<Followup>>,
    ) -> Result<(), Refused> {
        let outcome = match why {
            Refused::NoCredentials => "unsendable",
            _ => "refused",
        };
        self.metrics.outbox_result(outcome, n as u64);
        if let Some(followup) = followup {
            followup.refused(n);
        }
        Err(why)
    }

    /// Whether it sends at all (an AppSecret is configured).
    pub fn can_send(&self) -> bool {
        self.can_send
    }

    /// Refuses new messages from now on (the server is stopping).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }
}

impl Senders {
    /// Sends what is queued for `within` at most, then stops the tasks. Returns how many
    /// messages were left unsent.
    pub async fn drain(self, within: Duration) -> usize {
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(within, all).await;
        // A user still parked for a retry past the drain is not waited for: its messages
        // are counted as left (and with Redis stay in the stream for the next owner).
        for abort in aborts {
            abort.abort();
        }
        self.queued.load(Ordering::Acquire)
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads the owned shards' streams for their senders, one blocking read at a time
/// (`Reader::read`), of the streams whose sender has room for a batch, until told to stop.
async fn read_streams(
    reader: Arc<Reader>,
    streams: Vec<Arc<ShardStream>>,
    feeds: Vec<mpsc::Sender<Entry>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = None;
    while !*stop.borrow() {
        let (at, reading): (Vec<usize>, Vec<&ShardStream>) = streams
            .iter()
            .zip(&feeds)
            .enumerate()
            .filter(|(_, (stream, feed))| stream.reading() && feed.capacity() >= BATCH)
            .map(|(i, (stream, _))| (i, &**stream))
            .unzip();
        let read = async {
            if reading.is_empty() {
                // No shard of this instance's to read: until one is.
                reader.wait_for_change(NOTHING_TO_READ).await;
                return Vec::new();
            }
            reader.read(&mut conn, &reading).await
        };
        let got = tokio::select! {
            got = read => got,
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        for (j, entries) in got {
            let Some(feed) = at.get(j).and_then(|&i| feeds.get(i)) else {
                continue;
            };
            for entry in entries {
                // Room for a batch was there, and only this task fills the feed: a send
                // fails only when its shard has stopped, and the entry then stays pending
                // for the shard's next owner.
                let _ = feed.try_send(entry);
            }
        }
    }
}

/// How long the reader waits, with no stream to read, before it looks again unbidden.
const NOTHING_TO_READ: Duration = Duration::from_secs(1);

/// The shard that serves `openid`: the same one every time, so one user's messages keep
/// their order.
fn shard_of(openid: &str, shards: usize) -> usize {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0x5eed).hash_one(openid);
    (hash % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_always_has_the_same_shard() {
        let a = shard_of("oUserA", 8);
        for _ in 0..10 {
            assert_eq!(shard_of("oUserA", 8), a);
        }
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| shard_of(&format!("oUser{i}"), 8))
            .collect();
        assert!(spread.len() > 4, "{spread:?}");
    }
}
