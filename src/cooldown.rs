//! Moved to [crate::store::cooldown].

pub use crate::store::cooldown::*;
