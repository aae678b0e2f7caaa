//! Log lines a client can cause, bounded. Anyone can send requests as fast as the network
//! allows; a line for each would flood the log (and stall valid pushes behind a slow log
//! sink). A `LogLimit` admits a few lines a second for one site; the first line after a
//! quiet spell says how many were left out. `Callsites` does the same for every line of a
//! library's own (actix's, for one), by the place in the code that logs it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Lines admitted per second by a site's limit, unless it says otherwise.
pub const PER_SECOND: u32 = 20;

/// At most `per_second` lines a second for one site.
#[derive(Debug)]
pub struct LogLimit {
    per_second: u32,
    /// The second (since the Unix epoch) that `logged` counts.
    second: AtomicU64,
    logged: AtomicU32,
    suppressed: AtomicU64,
}

impl LogLimit {
    pub const fn new(per_second: u32) -> LogLimit {
        LogLimit {
            per_second,
            second: AtomicU64::new(0),
            logged: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this line may be written, and if so how many were left out before it. Races
    /// between threads at a second's turn may let a few more lines through; none is lost
    /// from the count.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(unix_second(), self.per_second)
    }

    fn admit_at(&self, now: u64, per_second: u32) -> Option<u64> {
        let second = self.second.load(Ordering::Relaxed);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.logged.store(0, Ordering::Relaxed);
        }
        if self.logged.fetch_add(1, Ordering::Relaxed) < per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Lines of other crates left out by their limit, for `wxrules_log_lines_suppressed_total`.
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Counts one line left out.
pub fn count_suppressed() {
    SUPPRESSED.fetch_add(1, Ordering::Relaxed);
}

/// Lines of other crates left out so far.
pub fn suppressed() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

fn unix_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many sites `Callsites` tells apart; sites that share a slot share its limit.
const SLOTS: usize = 64;

/// A `LogLimit` per place in the code, for lines whose sites are not ours to wrap: each
/// callsite (its `tracing` metadata, which lives as long as the program) hashes to one of
/// `SLOTS` limits.
#[derive(Debug)]
pub struct Callsites {
    per_second: u32,
    slots: [LogLimit; SLOTS],
}

impl Callsites {
    pub const fn new(per_second: u32) -> Callsites {
        Callsites {
            per_second,
            slots: [const { LogLimit::new(PER_SECOND) }; SLOTS],
        }
    }

    /// `LogLimit::admit` for the site `site` (a hash of where the line comes from).
    pub fn admit(&self, site: usize) -> Option<u64> {
        self.slots[slot(site)].admit_at(unix_second(), self.per_second)
    }
}

fn slot(site: usize) -> usize {
    // Hashes and addresses alike: the low bits may say little.
    (site >> 4).wrapping_mul(0x9E37_79B9) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_logs_twenty_a_second_and_counts_the_rest() {
        let log = LogLimit::new(PER_SECOND);
        let admitted: Vec<Option<u64>> = (0..25).map(|_| log.admit_at(7, PER_SECOND)).collect();
        assert!(admitted[..20].iter().all(|a| *a == Some(0)), "{admitted:?}");
        assert!(admitted[20..].iter().all(Option::is_none), "{admitted:?}");
        // The next second's first line says how many were left out.
        assert_eq!(log.admit_at(8, PER_SECOND), Some(5));
        assert_eq!(log.admit_at(8, PER_SECOND), Some(0));
    }

    #[test]
    fn callsites_are_limited_apart() {
        static A: u8 = 0;
        static B: [u64; 64] = [0; 64];
        let sites = Callsites::new(2);
        let (a, b) = (
            std::ptr::addr_of!(A) as usize,
            std::ptr::addr_of!(B[40]) as usize,
        );
        assert_eq!(sites.admit(a), Some(0));
        assert_eq!(sites.admit(a), Some(0));
        assert_eq!(sites.admit(a), None);
        // Another site has a budget of its own (unless it hashes to the same slot).
        if slot(a) != slot(b) {
            assert_eq!(sites.admit(b), Some(0));
        }
    }
}
