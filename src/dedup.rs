//! Moved to [crate::store::dedup].

pub use crate::store::dedup::*;
pub use crate::store::link::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_RETRY_AFTER};
pub use crate::store::{RedisUrl, Store, StoreError as DedupError};
