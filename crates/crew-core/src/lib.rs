//! The engine of crew: the [`Backend`] seam and [`Runs`] that every back-end
//! implements, futures ([`Future`], [`AsyncResult`]), `wait`/`as_completed`,
//! the map machinery (chunking, ordering, back-pressure), progress, the
//! timeline, errors, and the thread back-end ([`Threads`]).
//!
//! Users name the `crew` crate, which re-exports what is public here.
//!
//! # Examples
//!
//! A map written against the seam, run on the thread back-end:
//!
//! ```
//! # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
//! use crew::core::engine::{MapOptions, map_blocking};
//! use crew::core::{Threads, Unary};
//!
//! let threads = Threads::new(2)?;
//! let doubled = map_blocking(&threads, Unary(|x: u32| x * 2), vec![1, 2, 3], &MapOptions::default());
//! assert_eq!(doubled.unwrap(), [2, 4, 6]);
//! # Ok::<(), crew::core::Error>(())
//! ```
#![deny(missing_docs)]

mod backend;
mod call;
mod chunk;
mod cpu;
pub mod engine;
mod error;
mod future;
mod loops;
pub mod progress;
mod slot;
mod spin;
mod state;
mod sync;
mod threads;
mod timeline;
mod wait;

pub use backend::{Backend, Runs};
pub use call::{Call, Star, Unary};
pub use cpu::{cpu_count, resolve_n_jobs};
pub use engine::{Chunk, ChunkOut, ChunkSink, Imap, MapOptions, OnDrop, Owned};
pub use error::{Error, FromError, MapError, Result};
pub use future::{AsyncResult, Future, FutureOutput, MapAsyncResult};
pub use loops::{ParRange, Schedule, par_for_each_mut, prange};
pub use progress::{Progress, ProgressStyle};
pub use slot::Promise;
pub use spin::{SPIN, SpinWait};
pub use state::{set_worker_state, worker_state};
pub use threads::{Initializer, ThreadJob, Threads, ThreadsConfig, WorkerCtx};
pub use timeline::{Mark, MarkKind, Span, Timeline, task_name};
pub use wait::{
    AsCompleted, AsCompletedTimeout, ReturnWhen, Waited, as_completed, as_completed_timeout, wait,
};
