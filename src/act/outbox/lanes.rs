//! One shard's messages waiting to be sent, by user: a lane per user, whose messages go in
//! order; the users whose next message can be tried now, served in turn; and the users
//! parked until their next try is due. A user whose sends keep failing waits in its lane
//! without holding up anyone else. Data only: no IO, no clock (callers pass the time).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// How the first item of a lane has fared so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retry {
    /// Tries made so far.
    pub(super) attempts: u32,
    /// The wait before the next try, once one has failed; zero before.
    pub(super) delay: Duration,
}

/// One user's items, in order; only the first is ever tried.
#[derive(Debug)]
struct Lane<T> {
    items: VecDeque<T>,
    retry: Retry,
    /// Waiting for its retry (in `Lanes::parked`, not in `Lanes::ready`).
    parked: bool,
}

/// Every lane of a shard. A user with items is in exactly one of `ready` and `parked`.
#[derive(Debug)]
pub(super) struct Lanes<T> {
    lanes: HashMap<String, Lane<T>, foldhash::fast::RandomState>,
    /// Users whose first item may be tried now, in turn.
    ready: VecDeque<String>,
    /// Users waiting for their retry, soonest first (ties in the order they were parked).
    parked: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Parkings so far: the tie-breaker of `parked`.
    parkings: u64,
    /// Items held, in every lane.
    held: usize,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Lanes {
            lanes: HashMap::default(),
            ready: VecDeque::new(),
            parked: BinaryHeap::new(),
            parkings: 0,
            held: 0,
        }
    }
}

impl<T> Lanes<T> {
    /// Adds `item` after `user`'s others.
    pub(super) fn push(&mut self, user: &str, item: T) {
        self.held += 1;
        if let Some(lane) = self.lanes.get_mut(user) {
            lane.items.push_back(item);
            return;
        }
        self.lanes.insert(
            user.to_owned(),
            Lane {
                items: VecDeque::from([item]),
                retry: Retry::default(),
                parked: false,
            },
        );
        self.ready.push_back(user.to_owned());
    }

    /// Moves the users whose retry is due by `now` to the end of the turn; how many.
    pub(super) fn wake(&mut self, now: Instant) -> usize {
        let mut woken = 0;
        while let Some(Reverse((due, _, _))) = self.parked.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, user))) = self.parked.pop() else {
                break;
            };
            if let Some(lane) = self.lanes.get_mut(&user) {
                lane.parked = false;
                self.ready.push_back(user);
                woken += 1;
            }
        }
        woken
    }

    /// When the first parked user's retry is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.parked.peek().map(|Reverse((due, _, _))| *due)
    }

    /// The next user whose turn it is, taken out of the turn: `finish` or `park` it.
    pub(super) fn next_ready(&mut self) -> Option<String> {
        self.ready.pop_front()
    }

    /// `user`'s first item and how it has fared.
    pub(super) fn head(&mut self, user: &str) -> Option<(&T, &mut Retry)> {
        let lane = self.lanes.get_mut(user)?;
        let item = lane.items.front()?;
        Some((item, &mut lane.retry))
    }

    /// `user`'s first item is done with (sent, or given up): it is taken out, and the user
    /// goes to the end of the turn if it has more.
    pub(super) fn finish(&mut self, user: &str) -> Option<T> {
        let lane = self.lanes.get_mut(user)?;
        let item = lane.items.pop_front()?;
        self.held -= 1;
        lane.retry = Retry::default();
        if lane.items.is_empty() {
            self.lanes.remove(user);
        } else {
            self.ready.push_back(user.to_owned());
        }
        Some(item)
    }

    /// Every item of `user`, in order, taken out (WeChat will take none of them for now);
    /// the user is out of the turn (`next_ready` gave it, so it is not parked).
    pub(super) fn take(&mut self, user: &str) -> Vec<T> {
        let Some(lane) = self.lanes.remove(user) else {
            return Vec::new();
        };
        self.held -= lane.items.len();
        lane.items.into()
    }

    /// `user` waits until `due` for its next try; the others go on meanwhile.
    pub(super) fn park(&mut self, user: &str, due: Instant) {
        if let Some(lane) = self.lanes.get_mut(user) {
            lane.parked = true;
            self.parkings += 1;
            self.parked
                .push(Reverse((due, self.parkings, user.to_owned())));
        }
    }

    /// Items held in all lanes.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Users parked now.
    pub(super) fn parked(&self) -> usize {
        self.parked.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Lets everything go (the shard changed hands); the items, for the caller to count.
    pub(super) fn clear(&mut self) -> impl Iterator<Item = T> {
        self.ready.clear();
        self.parked.clear();
        self.held = 0;
        std::mem::take(&mut self.lanes)
            .into_values()
            .flat_map(|lane| lane.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves every ready user once, as a shard would: `fails` are parked for `wait`.
    fn round(lanes: &mut Lanes<u32>, fails: &[&str], now: Instant, wait: Duration) -> Vec<u32> {
        let mut sent = Vec::new();
        lanes.wake(now);
        while let Some(user) = lanes.next_ready() {
            if fails.contains(&user.as_str()) {
                let (_, retry) = lanes.head(&user).unwrap();
                retry.attempts += 1;
                lanes.park(&user, now + wait);
            } else {
                sent.push(lanes.finish(&user).unwrap());
            }
        }
        sent
    }

    #[test]
    fn a_failing_user_waits_alone_and_keeps_its_order() {
        let mut lanes = Lanes::default();
        let t0 = Instant::now();
        let wait = Duration::from_secs(1);
        lanes.push("stuck", 1);
        lanes.push("stuck", 2);
        for (i, user) in ["a", "b", "c"].into_iter().enumerate() {
            lanes.push(user, 10 + i as u32);
            lanes.push(user, 20 + i as u32);
        }
        // Everyone else goes, in turn, while `stuck` is parked.
        let sent = round(&mut lanes, &["stuck"], t0, wait);
        assert_eq!(sent, [10, 11, 12, 20, 21, 22]);
        assert_eq!(lanes.held(), 2);
        assert_eq!(lanes.parked(), 1);
        assert_eq!(lanes.next_due(), Some(t0 + wait));
        // Not due yet: nothing is tried.
        assert_eq!(round(&mut lanes, &[], t0, wait), Vec::<u32>::new());
        assert_eq!(
            lanes.head("stuck").map(|(i, r)| (*i, r.attempts)),
            Some((1, 1))
        );
        // Due: its messages go, in order, and a fresh item starts with no tries.
        assert_eq!(round(&mut lanes, &[], t0 + wait, wait), [1, 2]);
        assert!(lanes.is_empty());
        lanes.push("stuck", 3);
        assert_eq!(
            lanes.head("stuck").map(|(i, r)| (*i, r.attempts)),
            Some((3, 0))
        );
    }

    #[test]
    fn a_users_lane_is_taken_whole_and_the_others_stay() {
        let mut lanes = Lanes::default();
        for (user, item) in [("spent", 1), ("other", 2), ("spent", 3), ("spent", 4)] {
            lanes.push(user, item);
        }
        assert_eq!(lanes.next_ready().as_deref(), Some("spent"));
        assert_eq!(lanes.take("spent"), [1, 3, 4], "in order");
        assert_eq!(lanes.held(), 1);
        assert_eq!(lanes.take("spent"), Vec::<u32>::new());
        assert_eq!(lanes.next_ready().as_deref(), Some("other"));
        assert_eq!(lanes.finish("other"), Some(2));
        assert!(lanes.is_empty());
        assert_eq!(
            lanes.next_ready(),
            None,
            "the taken user is out of the turn"
        );
        // A user taken whole starts afresh.
        lanes.push("spent", 5);
        assert_eq!(lanes.next_ready().as_deref(), Some("spent"));
        assert_eq!(
            lanes.head("spent").map(|(i, r)| (*i, r.attempts)),
            Some((5, 0))
        );
    }

    #[test]
    fn parked_users_wake_soonest_first_and_clear_lets_all_go() {
        let mut lanes = Lanes::default();
        let t0 = Instant::now();
        for user in ["a", "b", "c"] {
            lanes.push(user, 1);
        }
        for (user, secs) in [("a", 3), ("b", 1), ("c", 2)] {
            assert_eq!(lanes.next_ready().as_deref(), Some(user));
            lanes.park(user, t0 + Duration::from_secs(secs));
        }
        assert_eq!(lanes.next_ready(), None);
        assert_eq!(lanes.wake(t0 + Duration::from_secs(2)), 2);
        assert_eq!(lanes.next_ready().as_deref(), Some("b"));
        assert_eq!(lanes.next_ready().as_deref(), Some("c"));
        assert_eq!(lanes.clear().count(), 3);
        assert!(lanes.is_empty());
        assert_eq!(lanes.next_due(), None);
        assert_eq!(lanes.wake(t0 + Duration::from_secs(9)), 0);
    }
}
