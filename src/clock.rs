//! The time source: the wall clock in production, a fixed one in tests, so that replies and
//! the replay window are testable without sleeping; and times shown as RFC 3339.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock stopped at one instant.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0
    }
}

/// A clock that moves only when told to: tests of what expires (cooldowns) move it.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn new(now: u64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicU64::new(now))
    }

    /// Moves the clock `seconds` forward.
    pub fn advance(&self, seconds: u64) {
        self.0
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Unix seconds as an RFC 3339 time in UTC (`2026-11-30T06:02:43Z`), for serde's
/// `serialize_with`: `/healthz` and the dashboard show times so.
pub fn rfc3339<S: serde::Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
    match format_rfc3339(*secs) {
        Some(at) => s.serialize_str(&at),
        None => s.serialize_u64(*secs),
    }
}

fn format_rfc3339(secs: u64) -> Option<String> {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// Unix seconds as an RFC 3339 string (the number, should it be out of range).
pub fn rfc3339_string(secs: u64) -> String {
    format_rfc3339(secs).unwrap_or_else(|| secs.to_string())
}
