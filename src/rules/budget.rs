//! What the regexes of a rule set may take, compiled, and what those of every rule set
//! alive in the process may take together. Each regex's compiled size is estimated at load
//! from its syntax (`matcher::size`), without compiling it; a load whose regexes would
//! take more than `RULE_SET_BYTES`, or would take the process past `PROCESS_BYTES` with
//! the rule sets already held (every account's, and the ones a reload is replacing), is
//! refused, naming the largest regexes. A `Reservation` is held by its `RuleSet` and given
//! back when the set is dropped. No IO.

use std::sync::atomic::{AtomicU64, Ordering};

/// The most the regexes of one rule set may take compiled: their programs (each compiled
/// on first use, and kept) and the index's `RegexSet`s (compiled at load). A thousand
/// keyword regexes of `\w{8}` to `\w{17}` (a fair, if heavy, file) are some 300 MiB, and
/// the 10,000 light ones of a 100,000-rule file (`^re123-(?P<n>\d+)$`, 10% of its rules,
/// the scale the benchmarks hold the server to) some 610 MiB; four thousand of the heavy
/// ones are refused. Half of `PROCESS_BYTES`, so that a reload of the biggest file allowed
/// fits beside the set it replaces.
pub const RULE_SET_BYTES: u64 = 1 << 30;

/// The most the regexes of every rule set in the process may take together: a fleet of
/// accounts, and during a reload both an account's old and new rule sets.
pub const PROCESS_BYTES: u64 = 2 << 30;

/// What the rule sets alive in the process have reserved.
static RESERVED: AtomicU64 = AtomicU64::new(0);

/// A rule set's share of `PROCESS_BYTES`, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    bytes: u64,
}

/// Why a reservation was refused: what the other rule sets hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    pub(crate) held: u64,
}

impl Reservation {
    /// Reserves `bytes` of the process's budget, if they fit beside what is held.
    pub(crate) fn take(bytes: u64) -> Result<Reservation, Full> {
        RESERVED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes)
                    .filter(|&total| total <= PROCESS_BYTES)
            })
            .map(|_| Reservation { bytes })
            .map_err(|held| Full { held })
    }

    /// The bytes reserved.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        RESERVED.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What the rule sets alive in the process have reserved, in bytes.
pub fn reserved() -> u64 {
    RESERVED.load(Ordering::Acquire)
}

/// `bytes` for people: `312 MiB`, `430 KiB`.
pub(crate) fn size(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{} KiB", bytes.div_ceil(1 << 10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_to_the_process_budget_and_are_given_back() {
        // Other tests hold rule sets at the same time: measure from what is held now, with
        // room for them to come and go.
        let first = Reservation::take(PROCESS_BYTES / 2).unwrap();
        assert!(reserved() >= PROCESS_BYTES / 2);
        let Err(full) = Reservation::take(PROCESS_BYTES / 2 + (64 << 20)) else {
            panic!("past the budget");
        };
        assert!(full.held >= PROCESS_BYTES / 2);
        drop(first);
        let again = Reservation::take(PROCESS_BYTES / 2 + (64 << 20)).unwrap();
        assert_eq!(again.bytes(), PROCESS_BYTES / 2 + (64 << 20));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(312 << 20), "312 MiB");
        assert_eq!(size(3 << 19), "1.5 MiB");
        assert_eq!(size(430_000), "420 KiB");
    }
}
