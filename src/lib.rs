//! crew placeholder
#![deny(missing_docs)]
pub use crew_core::*;
