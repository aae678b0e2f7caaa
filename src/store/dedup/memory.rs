//! The dedup store's in-process tier: answers weighed by their bytes in a sharded cache,
//! with a placeholder per key being answered that later attempts wait on.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::{Cache, DefaultLifecycle, EntryAction, EntryResult, PlaceholderGuard};
use quick_cache::{OptionsBuilder, Weighter};
use tokio::time::Instant;

use super::{Answer, Key};

/// An answer in the in-process store, and when it was stored: older than the TTL, it
/// counts as absent.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) answer: Arc<Answer>,
    pub(super) at: Instant,
}

/// Weighs entries by their bytes, so the capacity bounds memory, not a count.
#[derive(Debug, Clone, Copy)]
pub(super) struct ByBytes;

impl Weighter<Key, Stored> for ByBytes {
    fn weight(&self, key: &Key, stored: &Stored) -> u64 {
        stored.answer.weight(key)
    }
}

pub(super) type Hasher = foldhash::fast::RandomState;
/// The in-process store. quick_cache keeps, per key being answered, a placeholder that later
/// attempts wait on: of concurrent attempts exactly one gets its guard, and a guard dropped
/// without an answer passes to a waiter, so a cancelled request never strands a retry.
pub(super) type Memory = Cache<Key, Stored, ByBytes, Hasher>;
/// The first attempt's hold on its key in process.
pub(super) type Guard<'a> =
    PlaceholderGuard<'a, Key, Stored, ByBytes, Hasher, DefaultLifecycle<Key, Stored>>;

pub(super) fn store_in(guard: Guard<'_>, answer: Arc<Answer>) {
    // `Err` means the placeholder was removed meanwhile (nothing here removes one); an
    // answer heavier than a shard is dropped with `Ok`. Either way it is not kept, and the
    // answer still goes out.
    let _ = guard.insert(Stored {
        answer,
        at: Instant::now(),
    });
}

/// The in-process store, holding up to `capacity` bytes of answers.
pub(super) fn memory_store(capacity: u64) -> Memory {
    // About 1 KiB an answer: enough to size the shards, not a limit.
    let estimated_items = usize::try_from(capacity / 1024)
        .unwrap_or(usize::MAX)
        .max(64);
    // quick_cache keeps nothing heavier than about one shard, and a waiter then finds no
    // answer and runs the rules again: keep shards of 1 MiB or more (16 times the largest
    // request), however many cores set the default count.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let by_size = usize::try_from(capacity >> 20).unwrap_or(usize::MAX).max(1);
    let shards = (cores * 4).min(by_size).max(1);
    let options = OptionsBuilder::new()
        .estimated_items_capacity(estimated_items)
        .weight_capacity(capacity)
        .shards(shards)
        .build();
    // Keys are built from verified pushes only, so a fast hash not keyed against attackers
    // is safe; SipHash was a tenth of a request's CPU under load.
    match options {
        Ok(options) => Cache::with_options(
            options,
            ByBytes,
            Hasher::default(),
            DefaultLifecycle::default(),
        ),
        // Only a builder missing a field fails, and every field is set above.
        Err(_) => Cache::with(
            estimated_items,
            capacity,
            ByBytes,
            Hasher::default(),
            DefaultLifecycle::default(),
        ),
    }
}

/// Claims `key` in process: `Ok` holds it for this attempt, `Err` is the answer of an
/// earlier one (waited for if still being answered). An answer older than `ttl` is
/// replaced, as if absent.
pub(super) async fn claim_local<'a>(
    memory: &'a Memory,
    key: &Key,
    ttl: Duration,
) -> Result<Guard<'a>, Arc<Answer>> {
    loop {
        let found = memory
            .entry_async(key, |_, stored| {
                if stored.at.elapsed() < ttl {
                    EntryAction::Retain(Arc::clone(&stored.answer))
                } else {
                    EntryAction::ReplaceWithGuard
                }
            })
            .await;
        match found {
            EntryResult::Retained(answer) => return Err(answer),
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => return Ok(guard),
            // Neither is asked for (no `Remove` action, no timeout): look again.
            EntryResult::Removed(..) | EntryResult::Timeout => {}
        }
    }
}
