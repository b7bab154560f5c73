//! Shared memory between processes for crew: Python's `multiprocessing`
//! `Value`, `Array`, `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Event`, `Barrier`, `Condition`, `Queue` and `Pipe`, on Linux.
//!
//! Every object lives in its own sealed memfd mapped `MAP_SHARED`, and every
//! handle is `Serialize + Deserialize + Send + Sync + Clone`: send it to a
//! worker process as part of a task's arguments and the worker maps the same
//! memory (nothing is copied). See [`Region`] for the rule that governs
//! crossing: a process holding the handle must be alive when another opens
//! it; after that the memory lives as long as anyone maps it, and nothing is
//! ever left behind in `/dev/shm`.
//!
//! Locks are robust: a process that dies holding one (even by `SIGKILL`)
//! hands it to the next acquirer together with the news
//! ([`AcquireError::is_owner_dead`]), never a deadlock. Every blocking call
//! has a `_timeout` variant that returns by its timeout.
//!
//! ```
//! # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
//! use crew::Queue;
//! use crew::shm::Value;
//!
//! let counter = Value::new(0u64)?;
//! let results = Queue::<String>::new()?;
//! // In a worker, after receiving both handles:
//! counter.update(|n| *n += 1);
//! results.put("done".to_string()).unwrap();
//! // Back in the parent:
//! assert_eq!(results.get().unwrap(), "done");
//! assert_eq!(counter.get(), 1);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The protocols (lock recovery, the queue's commit rule) are described in
//! the crate's `src/README.md`.
#![deny(missing_docs)]

// crew's worker processes and shared memory are built on Linux kernel
// interfaces (see the README, "Supported systems"): say so, rather than let
// the build fail on a missing system item.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "crew runs on Linux only (kernel 3.17+: memfd, robust futexes, PR_SET_PDEATHSIG; pidfd from 5.3): \
     this target is not supported; see the README, \"Supported systems\""
);

mod array;
mod barrier;
mod condition;
mod error;
mod event;
mod frozen;
mod lock;
mod monitor;
mod pipe;
mod pod;
mod queue;
mod region;
mod semaphore;
mod sys;
mod value;

pub use array::{Array, ArrayGuard};
pub use barrier::Barrier;
pub use condition::Condition;
pub use error::{AcquireError, Error, PutError};
pub use event::Event;
pub use frozen::Frozen;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use pipe::{Connection, Pipe};
pub use pod::Pod;
pub use queue::{Queue, QueueBuilder};
pub use region::{Held, Region, hold_serialized};
pub use semaphore::{BoundedSemaphore, Semaphore};
pub use value::{Value, ValueGuard};

/// Entry points of the fuzz targets (`fuzz/` at the top of the repository)
/// and of their stable runs in the tests. Not part of the API: enabled by the
/// `fuzzing` feature.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::queue::fuzz::queue_recovery;
}
