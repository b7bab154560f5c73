//! The seam every back-end implements: [`Backend`] runs opaque jobs, and
//! [`Runs`] builds a job from a typed call. `Pool`, `Executor`, `Parallel`,
//! the map machinery, futures and progress are written once against these two
//! traits; threads, processes and (later) a broker each implement them.
//!
//! Why two traits: what a job *is* differs per back-end (a boxed closure on
//! threads; a function id and serialized bytes across processes), and so do
//! the bounds a task must meet (`Send + Sync` closures on threads;
//! non-capturing functions with serde arguments on processes). `Backend`
//! hides the first difference behind an associated type; `Runs` carries the
//! second as the bounds of each back-end's impl, so a process pool rejects a
//! capturing closure at compile time while a thread pool accepts it.

use std::sync::Arc;
use std::time::Instant;

use crate::engine::{Chunk, ChunkSink};
use crate::error::Result;
use crate::slot::Promise;
use crate::timeline::Timeline;

/// A set of workers that runs jobs: the one trait every back-end implements.
///
/// Jobs are opaque to callers; they are built by [`Runs`]. A back-end must
/// eventually run or drop every job it accepted: dropping a job completes
/// its result slots as cancelled, so nobody waits forever.
///
/// # Examples
///
/// [`Threads`](crate::Threads) used through the trait: queue a job, then
/// close the back-end and wait for its workers to exit.
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::mpsc;
/// use crew::core::{Backend, ThreadJob, Threads};
///
/// let threads = Threads::new(2)?;
/// assert_eq!(threads.workers(), 2);
///
/// let (tx, rx) = mpsc::channel();
/// threads.spawn(ThreadJob::new(move |ctx| tx.send(ctx.worker).unwrap())).unwrap();
/// assert!(rx.recv().unwrap() < 2); // the index of the worker that ran it
///
/// threads.close();
/// assert!(threads.is_closed());
/// // A closed back-end gives the job back instead of queueing it.
/// assert!(threads.spawn(ThreadJob::new(|_| {})).is_err());
/// assert!(threads.join(None));
/// # Ok::<(), crew::core::Error>(())
/// ```
pub trait Backend: Send + Sync + 'static {
    /// A unit of work, possibly borrowing data for `'s` (blocking maps on
    /// threads borrow; process jobs own everything).
    type Job<'s>: Send + 's;

    /// The number of workers.
    fn workers(&self) -> usize;

    /// How many of the workers can run at the same time: what a map of
    /// known length sizes its chunks by. The number of workers, unless some
    /// of them share CPUs (several cluster nodes on one machine), where
    /// more chunks would only cost more dispatches.
    fn parallelism(&self) -> usize {
        self.workers()
    }

    /// Queues a job. Never blocks for long: the queue is unbounded (callers
    /// bound what they have in flight). Gives the job back if the back-end is
    /// closed.
    ///
    /// # Safety
    ///
    /// If `'s` is shorter than `'static`, the caller must keep everything the
    /// job borrows alive until the job has run or been dropped, which it can
    /// observe through the job's result sinks (see `engine::map_blocking`).
    unsafe fn execute<'s>(&self, job: Self::Job<'s>) -> std::result::Result<(), Self::Job<'s>>;

    /// Queues a job whose caller waits for it at once (a blocking call such
    /// as `apply`), as [`execute`](Backend::execute) does. A back-end may
    /// instead drive the exchange on the calling thread, which waits anyway:
    /// the process back-end sends the job to an idle worker and reads the
    /// result itself, sparing a hand-off to its proxy thread and back. When
    /// this returns, the job is done or queued.
    ///
    /// # Safety
    ///
    /// As for [`execute`](Backend::execute).
    unsafe fn execute_blocking<'s>(
        &self,
        job: Self::Job<'s>,
    ) -> std::result::Result<(), Self::Job<'s>> {
        // SAFETY: the caller upholds `execute`'s contract.
        unsafe { self.execute(job) }
    }

    /// Queues a job that borrows nothing.
    fn spawn(&self, job: Self::Job<'static>) -> std::result::Result<(), Self::Job<'static>> {
        // SAFETY: a `'static` job borrows nothing that could expire.
        unsafe { self.execute(job) }
    }

    /// Stops accepting jobs; queued jobs still run, then workers exit.
    fn close(&self);

    /// True once `close` or `terminate` was called.
    fn is_closed(&self) -> bool;

    /// Drops every queued job (their results complete as cancelled) and
    /// returns how many there were.
    ///
    /// Running jobs are not affected.
    fn cancel_pending(&self) -> usize;

    /// Stops now: closes, drops queued jobs, and stops running ones where the
    /// back-end can (processes are killed; threads finish their current job
    /// in the background).
    ///
    /// Never blocks on a running task.
    fn terminate(&self);

    /// Waits until every worker has exited (after `close` or `terminate`) or
    /// `deadline` passes; true if they all exited.
    fn join(&self, deadline: Option<Instant>) -> bool;

    /// Runs one queued job on the calling thread if it is one of this
    /// back-end's workers and a job is queued; true if it ran one.
    ///
    /// Blocking calls made from inside a task use this to avoid waiting on work
    /// queued behind themselves.
    fn help(&self) -> bool {
        false
    }

    /// The recorder of what each worker did, if the pool keeps one.
    fn timeline(&self) -> Option<&Arc<Timeline>> {
        None
    }

    /// The pids of the worker processes running now (one per live worker,
    /// in worker order; a worker being replaced is missing for a moment).
    /// Empty for a back-end whose workers are threads of this process.
    fn worker_pids(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// Builds this back-end's jobs for task `T` on inputs `X` with results `R`.
///
/// The bounds of each implementation are the rules a task must follow on
/// that back-end.
///
/// # Examples
///
/// [`Threads`](crate::Threads) used through the trait: a call job completes
/// the promise of a [`Future`](crate::Future); the map machinery
/// ([`engine::map_blocking`](crate::engine::map_blocking)) builds chunk jobs.
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::engine::{MapOptions, map_blocking};
/// use crew::core::{Backend, Future, Runs, Star, Threads, Unary};
///
/// let threads = Threads::new(2)?;
/// let (promise, future) = Future::pending();
/// let job = threads.call_job(Star(|a: u32, b: u32| a + b), (2, 3), promise);
/// threads.spawn(job).unwrap();
/// assert_eq!(future.result()?, 5);
///
/// let squares = map_blocking(&threads, Unary(|x: u32| x * x), vec![1, 2, 3], &MapOptions::default());
/// assert_eq!(squares.unwrap(), [1, 4, 9]);
/// # Ok::<(), crew::core::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "this task cannot run on `{Self}`",
    label = "the function, its arguments or its result do not meet the bounds of this back-end",
    note = "a thread pool needs a `Send + Sync` function with `Send` arguments and result (`'static` for the async calls)",
    note = "a process pool needs a non-capturing fn or closure whose arguments and result are `Serialize + DeserializeOwned`: pass captured data as an argument instead"
)]
pub trait Runs<'s, T, X, R>: Backend {
    /// A job that runs `task(input)` and completes `promise`.
    fn call_job(&self, task: T, input: X, promise: Promise<Result<R>>) -> Self::Job<'s>;

    /// A job that runs `task` on every input of `chunk` and delivers the
    /// outcomes, in order, to `sink`.
    ///
    /// The task is shared by the chunks of one map; a job must drop its clone
    /// of it *before* delivering to `sink` (the blocking calls return as soon
    /// as the last chunk is delivered, and the task may borrow data that then
    /// goes away).
    fn chunk_job(&self, task: Arc<T>, chunk: Chunk<X>, sink: ChunkSink<'s, R>) -> Self::Job<'s>;
}
