//! One shard's sender: it takes jobs (from its in-process queue, or from its Redis stream
//! while this instance owns the shard), puts each message in its user's lane, and sends
//! one message at a time, the users in turn. A send that fails with an error worth
//! retrying parks its user until the backoff is over; the others go on meanwhile. A send
//! refused because the user's quota is spent (45047) takes the user's whole lane to the
//! account's `OverQuota`. What is sent, kept or given up is counted, logged (with the
//! account's name, the user masked) and told to the push's `Followup`.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::lanes::{Lanes, Retry};
use super::{unix_millis, Config, Job, KeeperCell, Spent, StoredJob};
use crate::store::outbox::{Entry, Reader, ShardStream, BATCH};
use crate::store::quota::Window;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::recent::Followup;
use crate::wechat_api::{Api, ApiError, CustomMessage, Disposition};
use crate::wire::mask_openid;

/// How often a sender looks at its shard's lease without being told of a change: a lease
/// lost to Redis' expiry (this instance stalled) is not told.
const OWNERSHIP_CHECK: Duration = Duration::from_secs(1);

/// One message in its user's lane.
#[derive(Debug)]
struct Queued {
    rule: Arc<str>,
    message: CustomMessage,
    /// The window of WeChat's quota it was counted against, if it was.
    window: Option<Window>,
    queued_at: Instant,
    followup: Option<Arc<Followup>>,
    /// With Redis: the entry it came in, on the entry's last message (all of an entry's
    /// messages are one user's, so they are done in order): acknowledged once done.
    entry: Option<String>,
}

pub(super) struct Shard {
    api: Arc<Api>,
    config: Config,
    metrics: Metrics,
    /// Messages held in process, shared with the outbox (which bounds it).
    queued: Arc<AtomicUsize>,
    /// Where a user's messages go when WeChat says their quota is spent, once set.
    keeper: KeeperCell,
}

/// What one try of a message came to.
enum Tried {
    /// Sent, or failed for good: done with.
    Done,
    /// To be tried again then.
    Again(Instant),
    /// WeChat says the user's quota is spent (45047), and there is an `OverQuota`.
    QuotaSpent(ApiError),
}

impl Shard {
    pub(super) fn new(
        api: &Arc<Api>,
        config: Config,
        metrics: &Metrics,
        queued: Arc<AtomicUsize>,
        keeper: &KeeperCell,
    ) -> Shard {
        Shard {
            api: Arc::clone(api),
            config,
            metrics: metrics.clone(),
            queued,
            keeper: Arc::clone(keeper),
        }
    }

    /// Sends the in-process queue's jobs until told to stop, then what is left, until the
    /// drain gives up on it.
    pub(super) async fn run(
        self,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut lanes = Lanes::default();
        let mut open = true;
        let mut stopping = *stop.borrow();
        loop {
            while let Ok(job) = jobs.try_recv() {
                take_job(&mut lanes, job);
            }
            self.wake(&mut lanes);
            if let Some(user) = lanes.next_ready() {
                let done = self.serve(&mut lanes, &user).await.len();
                if done > 0 {
                    self.queued.fetch_sub(done, Ordering::AcqRel);
                    self.metrics.outbox_state("queued", -(done as i64));
                }
                continue;
            }
            // Nothing to send now. Stopping (or the outbox gone): done once nothing is
            // held; a parked user is waited for while the drain lasts.
            if lanes.is_empty() && (stopping || !open) {
                return;
            }
            let due = lanes.next_due();
            tokio::select! {
                job = jobs.recv(), if open => match job {
                    Some(job) => take_job(&mut lanes, job),
                    None => open = false,
                },
                () = sleep_until(due) => {}
                changed = stop.changed(), if !stopping => {
                    stopping = changed.is_err() || *stop.borrow();
                }
            }
        }
    }

    /// Sends what the shard's stream holds while this instance owns the shard: first what
    /// earlier owners left pending, then new entries as the outbox's `Reader` reads them
    /// (`feed`); each entry acknowledged once its messages are sent or given up. Entries
    /// are read ahead (up to the stream's cap), so a user being retried never keeps the
    /// entries behind it unread.
    pub(super) async fn run_stream(
        self,
        stream: Arc<ShardStream>,
        reader: Arc<Reader>,
        mut feed: mpsc::Receiver<Entry>,
        followups: Arc<quick_cache::sync::Cache<String, Arc<Followup>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut lanes = Lanes::default();
        let read_ahead = self.config.stream_cap();
        // Entries taken and not yet done with, and those done with lately (not taken again).
        let mut held = Held::new(read_ahead);
        let mut owned = false;
        // The reader's connections when this shard last claimed its pending entries.
        let mut claimed_at = None;
        let mut reading = false;
        while !*stop.borrow() {
            if !stream.owned() {
                if owned {
                    // Another instance has the shard now: it claims what was held here.
                    owned = false;
                    reading = false;
                    stream.set_reading(false, &reader).await;
                    self.let_go(&mut lanes);
                    held = Held::new(read_ahead);
                    claimed_at = None;
                }
                // Read before the reader knew: pending under this instance's name, for the
                // next owner to claim.
                while feed.try_recv().is_ok() {}
                tokio::select! {
                    () = stream.ownership_changed(OWNERSHIP_CHECK) => {}
                    changed = stop.changed() => if changed.is_err() { break },
                }
                continue;
            }
            if !owned {
                owned = true;
                stream.ensure_group().await;
            }
            // What earlier owners left pending, at first; then, after each new connection
            // of the reader, what a read lost with the connection before left pending here.
            let connections = reader.connections();
            if claimed_at != Some(connections) {
                held.acknowledge(&stream).await;
                let (entries, whole) = stream.claim(read_ahead).await;
                // Only while the reader reads this stream can a claimed entry have a copy
                // on its way (at the first claim of an ownership it does not yet).
                self.take_entries(&stream, &followups, &mut lanes, &mut held, entries, reading)
                    .await;
                if whole {
                    claimed_at = Some(connections);
                }
            }
            if !reading {
                reading = true;
                stream.set_reading(true, &reader).await;
            }
            // What the reader has read, as far as the read-ahead allows; a feed that was
            // too full to be read is read again.
            let was_full = feed.capacity() < BATCH;
            while held.open.len() < read_ahead {
                let Ok(entry) = feed.try_recv() else { break };
                self.take_entries(
                    &stream,
                    &followups,
                    &mut lanes,
                    &mut held,
                    vec![entry],
                    false,
                )
                .await;
            }
            if was_full && feed.capacity() >= BATCH {
                reader.changed().await;
            }
            self.wake(&mut lanes);
            if let Some(user) = lanes.next_ready() {
                for id in self
                    .serve(&mut lanes, &user)
                    .await
                    .into_iter()
                    .filter_map(|q| q.entry)
                {
                    followups.remove(&id);
                    let acknowledged = stream.done(&id).await;
                    held.finish(id, acknowledged);
                }
                continue;
            }
            // Nothing to send now: wait for the reader, the first retry due, a change of
            // owner, or the stop.
            let due = lanes.next_due();
            tokio::select! {
                entry = feed.recv(), if held.open.len() < read_ahead => {
                    if let Some(entry) = entry {
                        self.take_entries(&stream, &followups, &mut lanes, &mut held, vec![entry], false)
                            .await;
                    }
                }
                () = sleep_until(due) => {}
                () = stream.ownership_changed(OWNERSHIP_CHECK) => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        // Stopping: what is held stays pending in the stream, for the next owner.
        stream.set_reading(false, &reader).await;
        self.let_go(&mut lanes);
    }

    /// Puts stream entries in their users' lanes, each held until its messages are done (an
    /// entry without any is acknowledged at once); `claimed` when they come from a claim
    /// rather than the reader. One already held, or done with, is skipped: a claim after
    /// a lost read finds this shard's own entries too.
    async fn take_entries(
        &self,
        stream: &ShardStream,
        followups: &quick_cache::sync::Cache<String, Arc<Followup>>,
        lanes: &mut Lanes<Queued>,
        held: &mut Held,
        entries: Vec<Entry>,
        claimed: bool,
    ) {
        for entry in entries {
            if held.skips(&entry.id) {
                continue;
            }
            let Some(job) = StoredJob::of(&entry) else {
                tracing::error!(
                    event = "outbox_entry_unreadable",
                    account = self.metrics.account(),
                    id = %entry.id
                );
                stream.done(&entry.id).await;
                continue;
            };
            if job.messages.is_empty() {
                stream.done(&entry.id).await;
                continue;
            }
            let age = Duration::from_millis(unix_millis().saturating_sub(job.queued_at_ms));
            let queued_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            let rule: Arc<str> = job.rule.into();
            let followup = followups.get(&entry.id);
            let last = job.messages.len() - 1;
            for (i, message) in job.messages.into_iter().enumerate() {
                let user = message.touser.clone();
                let item = Queued {
                    rule: Arc::clone(&rule),
                    message,
                    window: job.window,
                    queued_at,
                    followup: followup.clone(),
                    entry: (i == last).then(|| entry.id.clone()),
                };
                lanes.push(&user, item);
            }
            held.take(entry.id, claimed);
        }
    }

    /// Lets every held message go (the shard changed hands, or the instance stops).
    fn let_go(&self, lanes: &mut Lanes<Queued>) {
        let parked = lanes.parked();
        self.metrics.outbox_state("retrying", -(parked as i64));
        lanes.clear().for_each(drop);
    }

    /// Moves the users whose retry is due back into the turn.
    fn wake(&self, lanes: &mut Lanes<Queued>) {
        let woken = lanes.wake(Instant::now());
        if woken > 0 {
            self.metrics.outbox_state("retrying", -(woken as i64));
        }
    }

    /// One try of `user`'s first message. Returns the messages done with: the one tried
    /// once it is sent or failed for good; every message of the user's when WeChat says
    /// their quota is spent (kept, `keep_over_quota`). Otherwise (none) the user is parked
    /// until its retry is due.
    async fn serve(&self, lanes: &mut Lanes<Queued>, user: &str) -> Vec<Queued> {
        let Some((item, retry)) = lanes.head(user) else {
            return Vec::new();
        };
        match self.try_once(item, retry).await {
            Tried::Done => lanes.finish(user).into_iter().collect(),
            Tried::Again(due) => {
                self.metrics.outbox_state("retrying", 1);
                lanes.park(user, due);
                Vec::new()
            }
            Tried::QuotaSpent(error) => {
                // WeChat takes none of this user's messages until their next action: the
                // ones behind are not tried, but kept with it, in order.
                let items = lanes.take(user);
                self.keep_over_quota(user, &items, &error).await;
                items
            }
        }
    }

    /// Hands `items` (all `user`'s, in order; the first refused with 45047) to the
    /// account's `OverQuota`, which spends the user's quota and keeps them for the user's
    /// next message. Those it could not keep fail, as before there was one.
    async fn keep_over_quota(&self, user: &str, items: &[Queued], error: &ApiError) {
        let Some(first) = items.first() else { return };
        let account = self.metrics.account();
        let n = items.len();
        let kept = match self.keeper.get() {
            Some(keeper) => {
                let mut windows: Vec<Window> = Vec::new();
                for window in items.iter().filter_map(|item| item.window) {
                    if !windows.contains(&window) {
                        windows.push(window);
                    }
                }
                let spent = Spent {
                    scope: &keeper.scope,
                    metrics: &self.metrics,
                    user,
                    rule: &first.rule,
                    windows,
                    messages: items.iter().map(|item| item.message.clone()).collect(),
                };
                keeper.over_quota.keep(spent).await
            }
            None => false,
        };
        if kept {
            self.metrics.outbox_result("kept", n as u64);
            for followup in items.iter().filter_map(|item| item.followup.as_ref()) {
                followup.kept();
            }
            tracing::info!(
                event = "quota_reached",
                source = "wechat",
                account,
                rule = &*first.rule,
                user = %mask_openid(user),
                errcode = error.errcode(),
                kept = n,
                "WeChat says this user's customer-service quota is spent: their messages wait for their next message"
            );
            return;
        }
        self.metrics.outbox_result("failed", n as u64);
        for followup in items.iter().filter_map(|item| item.followup.as_ref()) {
            followup.failed(error.errcode());
        }
        tracing::error!(
            event = "message_failed",
            account,
            rule = &*first.rule,
            kind = first.message.kind(),
            user = %mask_openid(user),
            errcode = error.errcode(),
            error = %error,
            messages = n,
            "the user's quota is spent and their messages could not be kept; not retried"
        );
    }

    /// Sends `item` once: whether it is done with (sent, or failed for good), to be tried
    /// again (its backoff, while `give_up_after` allows), or refused until the user's next
    /// action (45047, when the account keeps such messages).
    async fn try_once(&self, item: &Queued, retry: &mut Retry) -> Tried {
        let Queued {
            rule,
            message,
            queued_at,
            followup,
            ..
        } = item;
        let rule = &**rule;
        let account = self.metrics.account();
        retry.attempts += 1;
        let attempts = retry.attempts;
        let error = match self.api.send_custom(message).await {
            Ok(()) => {
                self.metrics.outbox_result("sent", 1);
                if let Some(followup) = followup {
                    followup.sent();
                }
                tracing::info!(
                    event = "message_sent",
                    account,
                    rule,
                    kind = message.kind(),
                    attempts,
                    ms = u64::try_from(queued_at.elapsed().as_millis()).unwrap_or(u64::MAX)
                );
                tracing::debug!(event = "message_sent", account, to_user = %message.touser);
                return Tried::Done;
            }
            Err(e) => e,
        };
        if error.disposition() == Disposition::QuotaSpent && self.keeper.get().is_some() {
            return Tried::QuotaSpent(error);
        }
        let delay = if retry.delay.is_zero() {
            self.config.backoff
        } else {
            retry.delay
        };
        let now = Instant::now();
        let retry_now = error.disposition() == Disposition::Retry
            && now + delay < *queued_at + self.config.give_up_after;
        if !retry_now {
            self.metrics.outbox_result("failed", 1);
            if let Some(followup) = followup {
                followup.failed(error.errcode());
            }
            tracing::error!(
                event = "message_failed",
                account,
                rule,
                kind = message.kind(),
                user = %mask_openid(&message.touser),
                errcode = error.errcode(),
                error = %error,
                attempts,
                "not sent; not retried"
            );
            return Tried::Done;
        }
        tracing::warn!(
            event = "message_retry",
            account,
            rule,
            kind = message.kind(),
            errcode = error.errcode(),
            error = %error,
            attempts,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
        );
        retry.delay = (delay * 2).min(self.config.max_backoff);
        Tried::Again(now + delay)
    }
}

/// The stream entries a shard's sender holds: taken and not yet done with (`open`), and
/// done with but not acknowledged, Redis having failed (`unacknowledged`). A claim after a
/// lost read finds this shard's own entries too, and may take one that the reader has
/// just read on its new connection: that one's copy may still be on its way through the
/// feed after it is sent, so claimed entries done with are remembered (`claimed_done`, as
/// many as the read-ahead) until their copy comes, and none is taken twice. Entries the
/// reader hands over have no other copy: nothing is remembered for them.
struct Held {
    open: HashSet<String>,
    unacknowledged: HashSet<String>,
    /// The open entries that came from a claim.
    claimed: HashSet<String>,
    claimed_done: HashSet<String>,
    /// `claimed_done` in the order done, oldest first (with ids since skipped).
    claimed_done_order: VecDeque<String>,
    remember: usize,
}

impl Held {
    fn new(remember: usize) -> Held {
        Held {
            open: HashSet::new(),
            unacknowledged: HashSet::new(),
            claimed: HashSet::new(),
            claimed_done: HashSet::new(),
            claimed_done_order: VecDeque::new(),
            remember,
        }
    }

    /// Whether entry `id` is not to be taken: held, or a claimed one done with whose copy
    /// this is (forgotten then).
    fn skips(&mut self, id: &str) -> bool {
        self.claimed_done.remove(id) || self.open.contains(id) || self.unacknowledged.contains(id)
    }

    fn take(&mut self, id: String, claimed: bool) {
        if claimed {
            self.claimed.insert(id.clone());
        }
        self.open.insert(id);
    }

    /// The entry `id` is done with; `acknowledged` when Redis took its acknowledgement.
    fn finish(&mut self, id: String, acknowledged: bool) {
        self.open.remove(&id);
        let claimed = self.claimed.remove(&id);
        if !acknowledged {
            self.unacknowledged.insert(id);
        } else if claimed {
            self.remember_claimed_done(id);
        }
    }

    fn remember_claimed_done(&mut self, id: String) {
        if !self.claimed_done.insert(id.clone()) {
            return;
        }
        self.claimed_done_order.push_back(id);
        while self.claimed_done_order.len() > self.remember {
            if let Some(oldest) = self.claimed_done_order.pop_front() {
                self.claimed_done.remove(&oldest);
            }
        }
    }

    /// Acknowledges again what Redis did not take; what it still does not stays.
    async fn acknowledge(&mut self, stream: &ShardStream) {
        let ids: Vec<String> = self.unacknowledged.iter().cloned().collect();
        for id in ids {
            if stream.done(&id).await {
                self.unacknowledged.remove(&id);
            }
        }
    }
}

/// Puts an in-process job's messages in its user's lane.
fn take_job(lanes: &mut Lanes<Queued>, job: Job) {
    let Job {
        rule,
        messages,
        window,
        queued_at,
        followup,
    } = job;
    let queued_at = Instant::from_std(queued_at);
    for message in messages {
        let user = message.touser.clone();
        let item = Queued {
            rule: Arc::clone(&rule),
            message,
            window,
            queued_at,
            followup: followup.clone(),
            entry: None,
        };
        lanes.push(&user, item);
    }
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::Held;

    #[test]
    fn a_claimed_entry_done_with_is_not_taken_again_when_its_copy_comes() {
        let mut held = Held::new(2);
        held.take("1-0".to_owned(), true);
        held.take("2-0".to_owned(), false);
        held.take("3-0".to_owned(), true);
        assert!(held.skips("1-0") && held.skips("2-0"), "held");
        held.finish("1-0".to_owned(), true);
        held.finish("2-0".to_owned(), true);
        held.finish("3-0".to_owned(), false);
        assert!(held.open.is_empty());
        assert!(held.skips("1-0"), "claimed and done: its copy is skipped");
        assert!(!held.skips("1-0"), "and forgotten once it came");
        assert!(
            !held.skips("2-0"),
            "the reader's entries have no copy to wait for"
        );
        assert!(held.skips("3-0"), "not acknowledged: still pending here");
    }

    #[test]
    fn claimed_entries_done_with_are_remembered_as_many_as_the_read_ahead() {
        let mut held = Held::new(2);
        for id in ["1-0", "2-0", "3-0"] {
            held.take(id.to_owned(), true);
            held.finish(id.to_owned(), true);
        }
        assert!(!held.skips("1-0"), "forgotten past the last two");
        assert!(held.skips("2-0") && held.skips("3-0"));
    }
}
