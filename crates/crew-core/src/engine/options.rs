//! The options of one map call.

use crate::error::{Error, Result};

/// Options of one map call.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// let opts = crew::core::MapOptions { chunksize: Some(64), ..Default::default() };
/// assert!(opts.progress.is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct MapOptions {
    /// Items per job; `None` chooses automatically.
    pub chunksize: Option<usize>,
    /// Progress reporting.
    pub progress: Option<crate::progress::ProgressStyle>,
    /// Label used in progress lines (`Pool(threads=2)`).
    pub label: String,
}

impl MapOptions {
    /// Checks the settings: a chunk size of zero is refused, as Python's
    /// `chunksize=0` raises `ValueError`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// let bad = crew::core::MapOptions { chunksize: Some(0), ..Default::default() };
    /// assert!(bad.validate().unwrap_err().is_invalid_input());
    /// assert!(crew::core::MapOptions::default().validate().is_ok());
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` naming the setting out of range.
    pub fn validate(&self) -> Result<()> {
        if self.chunksize == Some(0) {
            return Err(Error::invalid_input("chunksize must be at least 1"));
        }
        Ok(())
    }
}
