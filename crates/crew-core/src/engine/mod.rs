//! The map machinery, written once for every back-end: chunking, ordered and
//! unordered collection, back-pressure for the lazy iterators, and the
//! blocking/async wrappers around single calls.
//!
//! A map splits its input into [`Chunk`]s; a back-end turns each chunk into
//! one job (see [`Runs::chunk_job`](crate::Runs::chunk_job)) that delivers a [`ChunkOut`] to the
//! chunk's [`ChunkSink`]. A sink dropped without delivering (its job was
//! discarded) delivers "cancelled" for every item, so collectors always learn
//! the fate of every chunk and never wait forever.

//!
//! The modules, one job each:
//! - `sink`: a chunk's outcome ([`ChunkOut`]) and where it goes ([`ChunkSink`]);
//! - `run`: running a chunk in the calling thread ([`run_chunk`]);
//! - `options` and `sizing`: [`MapOptions`] and the one chunk-sizing policy;
//! - `gather` and `map`: the eager maps ([`map_blocking`], [`map_async`])
//!   and their ordered gathering into one output buffer;
//! - `imap`: the lazy maps ([`Imap`]) with back-pressure;
//! - `calls`: single calls, blocking ([`call_blocking`]) or not ([`spawn_call`]);
//! - `owned`: a back-end's owner and what dropping it does ([`Owned`]).

mod calls;
mod gather;
mod imap;
mod map;
mod options;
mod owned;
mod run;
mod sink;
mod sizing;

use std::time::{Duration, Instant};

use crate::progress::Progress;
use crate::sync::{Condvar, Mutex, MutexGuard};

pub use calls::{call_blocking, spawn_call};
pub use imap::Imap;
pub use map::{map_async, map_blocking};
pub use options::MapOptions;
pub use owned::{OnDrop, Owned};
pub use run::run_chunk;
pub(crate) use run::run_chunk_into;
pub use sink::{ChunkOut, ChunkSink};
pub(crate) use sink::{Collect, Dest};
pub use sizing::auto_chunksize;
pub(crate) use sizing::even_split;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The instant `timeout` from now; a timeout too large to represent
/// (`Duration::MAX`) means a century, i.e. no deadline in practice.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::time::{Duration, Instant};
/// assert!(crew::core::engine::deadline(Duration::MAX) > Instant::now());
/// ```
pub fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

pub use crate::chunk::{Chunk, ChunkIter};

/// Waits once on `cv`, until notified (or woken spuriously) or until
/// `deadline`: `Ok` with the guard after a wait, `Err` with it, unwaited, if
/// the deadline has passed. The one place crew waits on a condition
/// variable with a deadline; callers loop re-checking their condition.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::{Condvar, Mutex};
/// use std::time::{Duration, Instant};
/// let (m, cv) = (Mutex::new(false), Condvar::new());
/// let mut ready = m.lock().unwrap();
/// let deadline = Some(Instant::now() + Duration::from_millis(5));
/// let timed_out = loop {
///     if *ready {
///         break false;
///     }
///     ready = match crew::core::engine::wait_deadline(&cv, ready, deadline) {
///         Ok(g) => g,
///         Err(_) => break true,
///     };
/// };
/// assert!(timed_out);
/// ```
///
/// # Errors
///
/// The guard, unwaited, once `deadline` has passed.
pub fn wait_deadline<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> std::result::Result<MutexGuard<'a, T>, MutexGuard<'a, T>> {
    match deadline {
        None => Ok(cv.wait(guard).unwrap_or_else(|p| p.into_inner())),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(guard);
            }
            Ok(cv
                .wait_timeout(guard, d - now)
                .unwrap_or_else(|p| p.into_inner())
                .0)
        }
    }
}

fn start_progress(opts: &MapOptions, total: Option<usize>) -> Option<Progress> {
    opts.progress
        .as_ref()
        .map(|style| Progress::start(style.clone(), &opts.label, total))
}

#[cfg(all(test, loom))]
mod loom;
