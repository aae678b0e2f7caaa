//! State shared by instances through Redis: one connection layer (`Redis`) that the retry
//! dedup and the access token both use. Knows nothing of HTTP or rules; a Redis that is
//! down is reported once and tried again each second, and its users stand in for it.

mod redis;

pub use self::redis::Redis;
