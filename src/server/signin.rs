//! Failed sign-ins (a wrong admin or editor token), counted per client address: past
//! `MAX_FAILURES` within `WINDOW`, the address is refused (429, `Retry-After`) until its
//! window ends, so that a token cannot be guessed at the speed of the network. Each failure
//! is logged within a rate limit; the token tried never is. Bounded in addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::telemetry::limit::LogLimit;

/// Failures an address may make within `WINDOW`.
pub const MAX_FAILURES: u32 = 10;
/// How long failures are remembered, and an address past them refused.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it, those whose window has ended are forgotten first,
/// then the oldest.
pub const MAX_ADDRESSES: usize = 10_000;

/// Lines about failed sign-ins, per second.
static FAILURES: LogLimit = LogLimit::new(crate::telemetry::limit::PER_SECOND);

#[derive(Debug, Clone, Copy)]
struct Tries {
    since: Instant,
    failures: u32,
}

/// The failed sign-ins of each client address.
#[derive(Debug, Default)]
pub struct Attempts {
    by_address: Mutex<HashMap<IpAddr, Tries>>,
}

impl Attempts {
    /// How long `address` is still refused, if it is.
    pub fn refused(&self, address: IpAddr) -> Option<Duration> {
        let map = self.by_address.lock();
        let tries = map.get(&address)?;
        let left = WINDOW.checked_sub(tries.since.elapsed())?;
        (tries.failures >= MAX_FAILURES).then_some(left)
    }

    /// Counts a failed sign-in from `address` at `path`, and logs it (within the limit).
    pub fn failed(&self, address: IpAddr, path: &str) {
        let failures = {
            let mut map = self.by_address.lock();
            if map.len() >= MAX_ADDRESSES && !map.contains_key(&address) {
                forget_some(&mut map);
            }
            let tries = map.entry(address).or_insert(Tries {
                since: Instant::now(),
                failures: 0,
            });
            if tries.since.elapsed() >= WINDOW {
                *tries = Tries {
                    since: Instant::now(),
                    failures: 0,
                };
            }
            tries.failures += 1;
            tries.failures
        };
        if let Some(suppressed) = FAILURES.admit() {
            let path: String = path.chars().take(80).collect();
            tracing::warn!(
                event = "signin_refused",
                client = %address,
                path,
                failures,
                blocked = failures >= MAX_FAILURES,
                suppressed,
                "a request with a wrong token"
            );
        }
    }

    /// Forgets `address`'s failures (it signed in).
    pub fn succeeded(&self, address: IpAddr) {
        self.by_address.lock().remove(&address);
    }
}

/// Makes room: the addresses whose window has ended go; if none has, the oldest.
fn forget_some(map: &mut HashMap<IpAddr, Tries>) {
    let before = map.len();
    map.retain(|_, tries| tries.since.elapsed() < WINDOW);
    if map.len() == before {
        if let Some(oldest) = map.iter().min_by_key(|(_, t)| t.since).map(|(a, _)| *a) {
            map.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_past_its_failures_and_others_are_not() {
        let attempts = Attempts::default();
        let bad: IpAddr = "10.0.0.9".parse().unwrap();
        let good: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            attempts.failed(bad, "/api/overview");
        }
        assert!(attempts.refused(bad).is_none());
        attempts.failed(bad, "/api/overview");
        assert!(attempts.refused(bad).is_some_and(|left| left <= WINDOW));
        assert!(attempts.refused(good).is_none());
        attempts.succeeded(bad);
        assert!(attempts.refused(bad).is_none());
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let attempts = Attempts::default();
        for i in 0..(MAX_ADDRESSES as u32 + 5) {
            attempts.failed(IpAddr::from(i.to_be_bytes()), "/");
        }
        assert!(attempts.by_address.lock().len() <= MAX_ADDRESSES);
    }
}
