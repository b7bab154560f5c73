//! crew: Python's parallel-processing toolkit — `multiprocessing`,
//! `concurrent.futures` and `joblib` — in Rust, behind one API.
//!
//! | Python | crew |
//! |---|---|
//! | `multiprocessing.cpu_count()` | [`cpu_count()`] (honours affinity and cgroup quotas) |
//! | `Pool(n)` / `ThreadPool(n)` | [`Pool::processes(n)`](Pool::processes) / [`Pool::threads(n)`](Pool::threads), [`Pool::builder`] |
//! | `pool.map / starmap / apply` | [`Pool::map`], [`Pool::starmap`], [`Pool::apply`] |
//! | `apply_async / map_async / starmap_async` | [`AsyncResult`] with `callback` / `error_callback` |
//! | `imap / imap_unordered` | lazy iterators of `Result<T>` with bounded work in flight |
//! | `ProcessPoolExecutor(n)` / `ThreadPoolExecutor(n)` | [`Executor::processes(n)`](Executor::processes) / [`Executor::threads(n)`](Executor::threads), [`Executor::builder`] (initializer, `max_tasks_per_child`) |
//! | `executor.submit(f, *args)` → `Future` | [`Executor::submit`]`(f, args)` → [`Future`] (`result`, `result_timeout`, `cancel`, `add_done_callback`, `.await`) |
//! | `executor.map(f, xs)`, `shutdown(wait, cancel_futures)` | [`Executor::map`], [`Executor::map_timeout`], [`Executor::shutdown`] |
//! | `Process(target=f, args=…)` | [`Process`] |
//! | `Value`, `Array`, `Lock`, `Event`, …, `Queue`, `Pipe` | [`shm`], [`sync`], [`Queue`], [`Pipe`] |
//! | `wait`, `as_completed` | [`wait`], [`as_completed`] |
//! | `joblib.Parallel(n_jobs=-1)(delayed(f)(x) for x in xs)` | `Parallel::new().n_jobs(-1).run(xs.map(\|x\| delayed(f, (x,))))` |
//! | `joblib.Memory(location).cache(f)(x)` | [`Memory::new(dir)?.cache(f).call((x,))`](Memory), [`Cached::map`] over a pool |
//! | Cython `prange` / OpenMP `parallel for` | [`prange`], [`par_for_each_mut`] with a [`Schedule`] |
//! | Celery workers and `app.send_task(name, args)` on Redis | [`celery`]: a node serving `#[crew::task(name = "…")]` functions, and a [`celery::Client`] |
//! | invalid settings raise `ValueError` | errors with `is_invalid_input()` (`processes(0)`, `n_jobs(0)`, `chunksize(0)`, …) |
//! | `BrokenProcessPool` | none: a dead worker fails only its own task (`is_worker_lost()`), the pool carries on |
//!
//! # Which back-end
//!
//! | back-end | pick it when | constructors |
//! |---|---|---|
//! | threads | the default choice in Rust: no start-up cost, no copying, and no GIL, so CPU-bound tasks run in parallel; tasks may borrow local data in blocking calls | [`Pool::threads`], [`Executor::threads`], [`Parallel`] with [`Prefer::Threads`] |
//! | processes | a task may crash (segfault, abort, out of memory) or must be stopped (`task_timeout`, `cancel` kill its worker), or calls code that is not thread-safe; arguments and results cross as serde values (big data: [`shm::Array`]) | [`Pool::processes`], [`Executor::processes`], [`Parallel`] (joblib's default) |
//! | cluster | the work outgrows one machine: nodes on other machines share a queue through Redis 7+; the rules of processes apply | [`Pool::cluster`], [`Executor::cluster`], [`Parallel::cluster`], [`cluster`] |
//! | Celery | Python programs call Rust functions, or Rust calls Python tasks, through a Celery deployment on Redis | [`celery`] |
//!
//! A thread cannot be killed: on threads, `cancel` stops a task only before
//! it starts, there is no `task_timeout`, and a `_timeout` wait that gives
//! up leaves the task running to its end. Where a task must be stopped,
//! use processes.
//!
//! The same calls run on threads or on worker processes; only the
//! constructor changes. On processes a task is a fn item or a closure that
//! captures nothing, and its arguments and result are serde types (derive
//! `serde::Serialize` and `Deserialize` for your own); a worker is this
//! program re-executed (from the second process pool on, forked from one
//! such copy: [`fork_server_pid`]), entered before `main`, so nothing in
//! `main` runs twice and tests need no set-up ([`init`] spells it out).
//!
//! A task that panics fails alone, with an [`Error`] that says so
//! (`is_panic()`, with the message); a task that crashes its worker process
//! fails alone too (`is_worker_lost()`, with the signal); every other task
//! still runs and the pool stays usable. Every blocking call can be bounded: a `_timeout` variant
//! (`result_timeout`, `get_timeout`, `join_timeout`, `wait(…, timeout)`,
//! [`Imap::next_timeout`]), or, for `map` and `apply`, their `_async` form
//! and `get_timeout`.
//!
//! # Examples
//!
//! ```
//! use crew::{Executor, Pool};
//!
//! fn howmany_within_range(row: Vec<i64>, minimum: i64, maximum: i64) -> usize {
//!     row.iter().filter(|&&x| minimum <= x && x <= maximum).count()
//! }
//!
//! let data = vec![vec![1, 5, 9, 4, 7], vec![0, 0, 4, 8, 8]];
//! let pool = Pool::threads(crew::cpu_count())?;
//! let counts = pool.starmap(howmany_within_range, data.iter().map(|row| (row.clone(), 4, 8)))?;
//! assert_eq!(counts, [3, 3]);
//!
//! let ex = Executor::threads(2)?;
//! let future = ex.submit(|a: u64, b: u64| a.pow(b as u32), (2, 10));
//! assert_eq!(future.result()?, 1024);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # In your own program
//!
//! Add `crew` to `[dependencies]` (and `serde = { version = "1", features =
//! ["derive"] }` to send your own types to worker processes). Worker
//! processes are your program itself, re-executed: mark `main` with
//! [`#[crew::main]`](macro@main), or call [`init`] as its first line, and a
//! worker never runs your `main`. A task that runs too long is stopped
//! with [`PoolBuilder::task_timeout`] (its worker is killed and replaced);
//! any wait is bounded with a `_timeout` variant; [`Future::cancel`] stops a
//! queued task, and on processes a running one. Every failure is an
//! [`Error`] you ask questions of (`is_timeout()`, `is_panic()`,
//! `is_worker_lost()`, `is_cancelled()`, …); a `map` in which some tasks
//! failed returns a [`MapError`] that keeps every outcome.
//!
//! ```
//! use std::time::Duration;
//! use crew::{Executor, Pool};
//!
//! fn nap(ms: u64) -> u64 {
//!     std::thread::sleep(Duration::from_millis(ms));
//!     ms
//! }
//!
//! fn check(x: u32) -> u32 {
//!     assert!(x != 3, "bad input {x}");
//!     x
//! }
//!
//! #[crew::main] // or `crew::init();` as the first line of `main`
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // A task past its timeout: its worker is killed, the pool carries on.
//!     let pool = Pool::builder().processes(2).task_timeout(Duration::from_millis(500)).build()?;
//!     assert!(pool.apply(nap, (60_000,)).unwrap_err().is_timeout());
//!
//!     // One failed task: the others' results are kept.
//!     let err = pool.map(check, 0..5).unwrap_err();
//!     assert!(err.first().is_panic());
//!     assert_eq!(err.first().index(), Some(3));
//!     assert!(err.results()[4].is_ok());
//!
//!     // A bounded wait, then cancelling a running task (its worker is killed).
//!     let ex = Executor::processes(1)?;
//!     let f = ex.submit(nap, (60_000,));
//!     assert!(f.result_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
//!     assert!(f.cancel());
//!     assert!(f.result().unwrap_err().is_cancelled());
//!     Ok(())
//! }
//! ```
//!
//! The same program runs on many machines through Redis: make the pool
//! with [`Pool::cluster`] (or [`Pool::cluster_from_env`], reading
//! `CREW_CLUSTER`) and start the program on each worker machine with
//! `CREW_WORKER=redis://host:6379`; see [`cluster`].
#![deny(missing_docs)]

// crew's worker processes and shared memory are built on Linux kernel
// interfaces (see the README, "Supported systems"): say so, rather than let
// the build fail on a missing system item.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "crew runs on Linux only (kernel 3.17+: memfd, robust futexes, PR_SET_PDEATHSIG; pidfd from 5.3): \
     this target is not supported; see the README, \"Supported systems\""
);

pub mod celery;
mod executor;
pub mod memory;
mod parallel;
mod pool;
pub mod registry;

pub use crew_core::engine::Imap;
pub use crew_core::{
    AsCompleted, AsCompletedTimeout, AsyncResult, Backend, Error, Future, MapAsyncResult, MapError,
    Mark, MarkKind, ParRange, ProgressStyle, Result, ReturnWhen, Schedule, Span, Threads, Timeline,
    Waited, as_completed, as_completed_timeout, cpu_count, par_for_each_mut, prange, wait,
    worker_state,
};
pub use crew_macros::{main, task};
pub use crew_process::{Process, ProcessConfig, Processes};

/// The pid of the fork server, if this program runs one. A program's first
/// process pool starts its workers afresh (the program re-executed); from
/// its second pool on, pool workers are forked from the fork server, a
/// small single-threaded copy of the program started then, which skips the
/// loader and the C library's start-up for each worker.
///
/// `None` before the second pool, with `CREW_NO_FORK_SERVER=1` in the
/// environment (every worker started afresh), or once the server was given
/// up (it could not start, died or stopped answering: said once on stderr;
/// pools carry on, their new workers started afresh). Nothing else
/// changes for a task: a forked worker is the program's child and is
/// supervised, killed and reaped as any other.
///
/// # Examples
///
/// ```
/// assert_eq!(crew::fork_server_pid(), None); // no process pool yet
/// let first = crew::Pool::processes(1)?;
/// let second = crew::Pool::processes(1)?; // its worker comes from the fork server
/// assert_eq!(second.apply(|x: u32| x + 1, (1,))?, 2);
/// match crew::fork_server_pid() {
///     Some(pid) => println!("fork server {pid}"),
///     None => println!("every worker started afresh"),
/// }
/// # drop(first);
/// # Ok::<(), crew::Error>(())
/// ```
pub fn fork_server_pid() -> Option<u32> {
    crew_process::fork_server_pid()
}
pub use executor::{Executor, ExecutorBuilder};
pub use memory::{Cached, Memory};
pub use parallel::{BatchSize, Delayed, Parallel, ParallelIter, Prefer, RunDelayed, delayed};
pub use pool::{Pool, PoolBuilder};

/// Shared memory across processes (Python's `multiprocessing.Value` and
/// `Array`): memfd regions that cross to workers as handles, so a 1 GB
/// array reaches every worker without a copy. [`Frozen`](shm::Frozen) is
/// read-only data (what joblib memory-maps for its workers): copied in
/// once, read by every task as a plain slice, with no lock.
///
/// # Examples
///
/// ```
/// use crew::shm::Value;
/// let counter = Value::new(0i64)?;
/// let pool = crew::Pool::processes(2)?;
/// pool.map(|c: Value<i64>| c.update(|v| *v += 1), vec![counter.clone(); 8])?;
/// assert_eq!(counter.get(), 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod shm {
    pub use crew_shm::{Array, ArrayGuard, Error, Frozen, Pod, Region, Value, ValueGuard};
}

/// Process-shared synchronisation (Python's `multiprocessing.Lock`,
/// `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`, `Barrier`,
/// `Condition`), every wait with a timeout variant. A lock whose holder dies
/// is recovered by the next acquirer, who is told (`is_owner_dead`) that the
/// data may be inconsistent — never a deadlock.
///
/// # Examples
///
/// ```
/// use crew::sync::Event;
/// let ready = Event::new()?;
/// let mut p = crew::Process::new(|e: Event| e.set(), (ready.clone(),));
/// p.start()?;
/// assert!(ready.wait_timeout(std::time::Duration::from_secs(30)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod sync {
    pub use crew_shm::{
        AcquireError, Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock,
        RLockGuard, Semaphore,
    };
}

pub use crew_shm::{Connection, Pipe, PutError, Queue, QueueBuilder};

/// Makes this program able to serve as a crew worker process; call it as
/// the first line of `main`.
///
/// Worker processes are this program re-executed (or, from its second
/// process pool on, forked from one such copy: [`fork_server_pid`]). On Linux crew enters
/// worker mode from a constructor that runs *before* `main`, so code in
/// `main` never runs in a worker, and process pools work in `cargo test`
/// binaries and doctests with no set-up at all. `init()` is the explicit,
/// portable spelling of that contract: in a worker it serves tasks and
/// never returns; in the parent it returns at once.
///
/// # Examples
///
/// ```
/// fn main() {
///     crew::init();
///     let pool = crew::Pool::processes(2).unwrap();
///     assert_eq!(pool.apply(|x: u8| x + 1, (1,)).unwrap(), 2);
/// }
/// ```
// The example is about `main`: it has to show one.
#[allow(clippy::needless_doctest_main)]
pub fn init() {
    crew_process::run_if_worker();
    crew_redis::run_if_node(Some(registry::cluster_named_tasks()));
    celery::run_if_node();
}

/// Many machines through Redis: the settings of a cluster, the back-end,
/// worker nodes, a private `redis-server` for tests and demos, and the
/// status `crew status` prints. Start with [`Pool::cluster`].
///
/// A node is this program started with `CREW_WORKER=redis://host:port`
/// (and `CREW_CONCURRENCY=n` worker processes, by default the CPUs of its
/// host that the queue's other nodes there leave free; `CREW_QUEUE=name`);
/// it becomes a node before `main`, like worker processes do.
///
/// # Examples
///
/// ```no_run
/// let redis = crew::cluster::LocalRedis::start()?;
/// redis.spawn_node("default", 2, &[])?;
/// let pool = crew::Pool::builder().cluster(&redis.url()).build()?;
/// assert_eq!(pool.map(|x: u32| x + 1, 0..3)?, [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod cluster {
    pub use crew_redis::{
        Cluster, ClusterConfig, DeadLetter, ENV_CLUSTER, ENV_CONCURRENCY, ENV_HEARTBEAT_MS,
        ENV_LEASE_MS, ENV_MAX_DELIVERIES, ENV_MAX_ENTRY_BYTES, ENV_PREFETCH, ENV_QUEUE, ENV_WORKER,
        LocalRedis, NodeProcess, NodeStatus, QueueStatus, StreamStatus, status,
    };
}

/// The engine behind the facade, for back-end authors: the [`Backend`] and
/// [`Runs`](crew_core::Runs) seam, jobs, chunks and sinks.
pub mod core {
    pub use crew_core::*;
}

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
