//! `Executor`: Python's `concurrent.futures` executors, over any back-end.

use std::sync::Arc;
use std::time::Duration;

use crew_core::engine::{self, OnDrop, Owned};
use crew_core::{
    Backend, Future, Imap, MapOptions, Result, Runs, Star, Threads, ThreadsConfig, Unary,
};
use crew_process::{ProcessConfig, Processes};

use crate::PoolBuilder;
use crate::registry::{ByName, NamedCall, named_call};

/// Runs submitted calls and hands out [`Future`]s: Python's
/// `ThreadPoolExecutor` (from [`Executor::threads`]) and
/// `ProcessPoolExecutor`.
///
/// Dropping the last handle is the end of Python's `with` block,
/// `shutdown(wait=True)`: it blocks until every task submitted has run
/// (and the workers have exited), so work submitted just before `main`
/// returns is not lost. Call [`shutdown`](Executor::shutdown) with
/// `wait = false` (or `cancel_futures`) first to leave without waiting.
/// (Handles held by the executor's own tasks or callbacks cannot wait for
/// themselves; dropped there, the last handle only closes the executor.)
/// A [`Pool`](crate::Pool), as Python's `Pool.__exit__`, terminates instead.
///
/// # Examples
///
/// ```
/// use crew::{Executor, ReturnWhen, as_completed, wait};
///
/// let ex = Executor::threads(2)?;
/// let futures: Vec<_> = (1..=5).map(|i| ex.submit(|x: u64| x * x, (i,))).collect();
/// let total: u64 = as_completed(futures).map(|f| f.result().unwrap()).sum();
/// assert_eq!(total, 55);
///
/// let f = ex.submit(|| "hello", ());
/// let w = wait(vec![f], ReturnWhen::AllCompleted, None);
/// assert_eq!(w.done.len(), 1);
/// # Ok::<(), crew::Error>(())
/// ```
#[derive(Debug)]
pub struct Executor<B: Backend = Threads> {
    backend: Arc<Owned<B>>,
    opts: MapOptions,
    buffersize: Option<usize>,
}

impl<B: Backend> Clone for Executor<B> {
    fn clone(&self) -> Self {
        Executor {
            backend: self.backend.clone(),
            opts: self.opts.clone(),
            buffersize: self.buffersize,
        }
    }
}

impl Executor {
    /// A builder for an executor with options (Python's `initializer`,
    /// `initargs` and `max_tasks_per_child`).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::builder().processes(1).max_tasks_per_child(1).build()?;
    /// let a = ex.submit(std::process::id, ()).result()?;
    /// let b = ex.submit(std::process::id, ()).result()?;
    /// assert_ne!(a, b); // a fresh worker for each task
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn builder() -> ExecutorBuilder<()> {
        ExecutorBuilder {
            pool: crate::Pool::builder(),
        }
    }
}

impl Executor<Threads> {
    /// An executor with `n` worker threads (Python's
    /// `ThreadPoolExecutor(max_workers=n)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::threads(2)?;
    /// assert_eq!(ex.submit(|| 1 + 1, ()).result()?, 2);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for `n == 0`; `is_io` if a thread cannot start.
    pub fn threads(n: usize) -> Result<Executor<Threads>> {
        Ok(Executor::from_backend(Threads::new(n)?))
    }
}

impl Executor<Processes> {
    /// An executor with `n` worker processes (Python's
    /// `ProcessPoolExecutor(max_workers=n)`); tasks follow the rules of
    /// [`Pool::processes`](crate::Pool::processes).
    ///
    /// A running task can be cancelled: its worker is killed and replaced.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::processes(2)?;
    /// let f = ex.submit(|n: u64| (2..n).filter(|d| n % d == 0).count() == 0, (97,));
    /// assert!(f.result()?);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for `n == 0`; `is_io` if a supervising thread
    /// cannot start.
    pub fn processes(n: usize) -> Result<Executor<Processes>> {
        Ok(Executor::from_backend(Processes::new(n)?))
    }
}

impl Executor<crew_redis::Cluster> {
    /// An executor over the nodes of the cluster at `url` (see
    /// [`Pool::cluster`](crate::Pool::cluster)). A running task can be
    /// cancelled: the node running it kills its worker process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let ex = crew::Executor::cluster("redis://10.0.0.1:6379")?;
    /// let f = ex.submit(|a: u64, b: u64| a + b, (2, 3));
    /// assert_eq!(f.result()?, 5);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Pool::cluster`](crate::Pool::cluster).
    pub fn cluster(url: &str) -> Result<Executor<crew_redis::Cluster>> {
        Executor::cluster_config(crew_redis::ClusterConfig::new(url))
    }

    /// An executor over the cluster `config` describes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = crew::cluster::ClusterConfig::new("redis://10.0.0.1:6379").queue("images");
    /// let ex = crew::Executor::cluster_config(config)?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Pool::cluster`](crate::Pool::cluster).
    pub fn cluster_config(
        config: crew_redis::ClusterConfig,
    ) -> Result<Executor<crew_redis::Cluster>> {
        Ok(Executor::from_backend(crew_redis::Cluster::new(config)?))
    }
}

impl<B: Backend> Executor<B> {
    /// An executor over any back-end.
    ///
    /// Dropping its last handle closes the back-end and waits for the tasks
    /// queued (see the type's documentation).
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Backend, Executor, Threads};
    ///
    /// let threads = Threads::new(2)?;
    /// let ex = Executor::from_backend(threads.clone());
    /// let f = ex.submit(|| 5, ());
    /// drop(ex); // waits, as the end of Python's `with` block
    /// assert!(threads.is_closed());
    /// assert!(f.done());
    /// assert_eq!(f.result()?, 5);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn from_backend(backend: B) -> Executor<B> {
        Executor {
            backend: Arc::new(Owned::new(backend, OnDrop::Wait)),
            opts: MapOptions::default(),
            buffersize: None,
        }
    }

    /// This executor with `n` items per job for its [`map`](Executor::map)
    /// (Python's `ProcessPoolExecutor.map(…, chunksize=n)`). Without it,
    /// `map` chooses: about 16 chunks per worker for an input of known
    /// length (per worker that can run at once: on a cluster, no more per
    /// machine than its CPUs), otherwise chunks that grow until each takes about half a
    /// millisecond.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::processes(2)?;
    /// let v: Vec<u64> = ex.with_chunksize(10).map(|x: u64| x * x, 0..100).collect::<Result<_, _>>()?;
    /// assert_eq!(v[9], 81);
    /// // As Python's `ValueError`: zero is refused by the map.
    /// assert!(ex.with_chunksize(0).map(|x: u64| x, 0..3).next().unwrap().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn with_chunksize(&self, n: usize) -> Executor<B> {
        let mut ex = self.clone();
        ex.opts.chunksize = Some(n);
        ex
    }

    /// This executor with at most `n` chunks of its [`map`](Executor::map)
    /// submitted ahead of the results consumed (Python 3.14's
    /// `map(…, buffersize=n)`): the input is read as results are taken, so
    /// an endless or very large input works in bounded memory.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::threads(2)?;
    /// let first: Vec<u64> = ex.with_buffersize(4).map(|x: u64| x + 1, 0..).take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [1, 2, 3]);
    /// // As Python's `ValueError`: zero is refused by the map.
    /// assert!(ex.with_buffersize(0).map(|x: u64| x, 0..3).next().unwrap().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn with_buffersize(&self, n: usize) -> Executor<B> {
        let mut ex = self.clone();
        ex.buffersize = Some(n);
        ex
    }

    fn map_with<F, I, R>(
        &self,
        f: F,
        items: I,
        timeout: Option<Duration>,
    ) -> Imap<B, Unary<F>, I::IntoIter, R>
    where
        I: IntoIterator,
        B: Runs<'static, Unary<F>, I::Item, R>,
        Unary<F>: Send + Sync + 'static,
        I::Item: 'static,
        R: Send + 'static,
    {
        Imap::new(
            self.backend.clone(),
            Unary(f),
            items.into_iter(),
            true,
            &self.opts,
            timeout,
        )
        .with_window(self.buffersize.unwrap_or(usize::MAX))
        .eager()
    }

    /// The number of workers.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(crew::Executor::threads(3)?.workers(), 3);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.backend.workers()
    }

    /// The pids of the worker processes running now, for monitoring (one
    /// per live worker; a worker being replaced is missing for a moment).
    ///
    /// On threads there are no worker processes: the list is empty (the
    /// workers are threads of [`std::process::id`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Executor::processes(2)?;
    /// # let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    /// # while pool.worker_pids().len() < 2 && std::time::Instant::now() < deadline {
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # }
    /// let pids = pool.worker_pids();
    /// assert_eq!(pids.len(), 2);
    /// assert!(!pids.contains(&std::process::id()));
    /// assert!(crew::Executor::threads(2)?.worker_pids().is_empty());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.backend.worker_pids()
    }

    /// Queues `f(args…)` and returns its [`Future`] (Python's `submit`).
    ///
    /// `args` is a tuple: `()`, `(x,)`, `(a, b)`, … After `shutdown`, the
    /// future fails with `is_shutdown` (Python raises `RuntimeError`).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::threads(1)?;
    /// let f = ex.submit(|s: String, n: usize| s.repeat(n), ("ab".to_string(), 3));
    /// assert_eq!(f.result()?, "ababab");
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Future<R>
    where
        B: Runs<'static, Star<F>, A, R>,
        F: 'static,
        A: 'static,
        R: Send + 'static,
    {
        let (promise, future) = Future::pending_recycled();
        engine::spawn_call(&**self.backend, Star(f), args, promise);
        future
    }

    /// Queues the task registered (with `#[crew::task]`) as `name`, with
    /// arguments `args` (a tuple), and returns its future.
    ///
    /// # Examples
    ///
    /// ```
    /// #[crew::task]
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    ///
    /// let ex = crew::Executor::threads(1)?;
    /// let name = crew::registry::tasks().find(|t| t.name().ends_with("::add")).unwrap().name();
    /// assert_eq!(ex.submit_named::<_, i32>(name, (2, 3)).result()?, 5);
    /// let px = crew::Executor::processes(1)?;
    /// assert_eq!(px.submit_named::<_, i32>(name, (4, 5)).result()?, 9);
    /// let wrong = ex.submit_named::<_, String>(name, (2, 3));
    /// assert!(wrong.result().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn submit_named<A, R>(&self, name: &str, args: A) -> Future<R>
    where
        A: serde::Serialize,
        B: Runs<'static, ByName<R>, NamedCall, R>,
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        match named_call::<A, R>(name, &args) {
            Ok(call) => {
                let (promise, future) = Future::pending_recycled();
                engine::spawn_call(&**self.backend, ByName::new(), call, promise);
                future
            }
            Err(e) => Future::ready(Err(e)),
        }
    }

    /// Submits `f(x)` for every item now and yields the results in input
    /// order (Python's `Executor.map`).
    ///
    /// As in Python, the whole input is read and every call submitted
    /// before this returns, so the calls run even if the results are never
    /// taken; dropping the iterator after taking a result cancels the calls
    /// not started. For an endless or very large input, bound what is
    /// submitted ahead with [`with_buffersize`](Executor::with_buffersize);
    /// without it an endless input never returns, as in Python. An input
    /// that panics yields its panic as the error of the item it failed to
    /// produce, after the results before it, and ends the map.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::threads(2)?;
    /// let v: Vec<i32> = ex.map(|x: i32| -x, vec![1, 2, 3]).collect::<Result<_, _>>()?;
    /// assert_eq!(v, [-1, -2, -3]);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn map<F, I, R>(&self, f: F, items: I) -> Imap<B, Unary<F>, I::IntoIter, R>
    where
        I: IntoIterator,
        B: Runs<'static, Unary<F>, I::Item, R>,
        Unary<F>: Send + Sync + 'static,
        I::Item: 'static,
        R: Send + 'static,
    {
        self.map_with(f, items, None)
    }

    /// Like [`map`](Executor::map), with Python's `timeout`: if a result is
    /// not ready `timeout` after this call, the iterator yields one error
    /// with `is_timeout()` and ends; the tasks not started are cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let ex = crew::Executor::threads(1)?;
    /// let mut it = ex.map_timeout(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), vec![0, 5_000], Duration::from_millis(200));
    /// assert!(it.next().unwrap().is_ok());
    /// assert!(it.next().unwrap().unwrap_err().is_timeout());
    /// assert!(it.next().is_none());
    /// # ex.shutdown(false, true);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn map_timeout<F, I, R>(
        &self,
        f: F,
        items: I,
        timeout: Duration,
    ) -> Imap<B, Unary<F>, I::IntoIter, R>
    where
        I: IntoIterator,
        B: Runs<'static, Unary<F>, I::Item, R>,
        Unary<F>: Send + Sync + 'static,
        I::Item: 'static,
        R: Send + 'static,
    {
        self.map_with(f, items, Some(timeout))
    }

    /// Stops accepting tasks (Python's `shutdown`).
    ///
    /// With `cancel_futures`, queued tasks are cancelled (their futures report
    /// `cancelled()`); with `wait`, blocks until running and remaining tasks
    /// are done and the workers have exited. Calling it again is harmless.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::threads(1)?;
    /// let f = ex.submit(|| 3, ());
    /// ex.shutdown(true, false);
    /// assert_eq!(f.result()?, 3);
    /// assert!(ex.submit(|| 4, ()).result().unwrap_err().is_shutdown());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.backend.close();
        if cancel_futures {
            self.backend.cancel_pending();
        }
        if wait {
            self.backend.join(None);
        }
    }

    /// Like [`shutdown`](Executor::shutdown) with `wait`, but gives up
    /// waiting after `timeout`; true if every worker exited.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::threads(1)?;
    /// assert!(ex.shutdown_timeout(std::time::Duration::from_secs(5), false));
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration, cancel_futures: bool) -> bool {
        self.backend.close();
        if cancel_futures {
            self.backend.cancel_pending();
        }
        self.backend.join(Some(engine::deadline(timeout)))
    }
}

/// Builds an [`Executor`] with options; start with [`Executor::builder`],
/// pick the back-end with [`threads`](ExecutorBuilder::threads) or
/// [`processes`](ExecutorBuilder::processes), then set options.
///
/// # Examples
///
/// ```
/// let ex = crew::Executor::builder().threads(2).initializer(|| 7u32, ()).build()?;
/// assert_eq!(ex.submit(|| *crew::worker_state::<u32>().unwrap(), ()).result()?, 7);
/// # Ok::<(), crew::Error>(())
/// ```
#[derive(Debug)]
pub struct ExecutorBuilder<K> {
    pool: PoolBuilder<K>,
}

impl ExecutorBuilder<()> {
    /// Runs tasks on `n` worker threads (Python's `ThreadPoolExecutor`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(crew::Executor::builder().threads(3).build()?.workers(), 3);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn threads(self, n: usize) -> ExecutorBuilder<ThreadsConfig> {
        ExecutorBuilder {
            pool: self.pool.threads(n),
        }
    }

    /// Runs tasks on `n` worker processes (Python's `ProcessPoolExecutor`).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::builder().processes(1).build()?;
    /// assert_ne!(ex.submit(std::process::id, ()).result()?, std::process::id());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn processes(self, n: usize) -> ExecutorBuilder<ProcessConfig> {
        ExecutorBuilder {
            pool: self.pool.processes(n),
        }
    }
}

impl ExecutorBuilder<ProcessConfig> {
    /// Runs `f(args…)` once in each worker process before its first task
    /// (Python's `initializer` and `initargs`); what it returns is that
    /// worker's state, read with [`worker_state`](crate::worker_state). As
    /// [`PoolBuilder::initializer`]: a worker whose initializer panics does
    /// not start, and after three in a row the tasks fail with
    /// `is_worker_lost` saying why (Python's executor becomes broken).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::builder().processes(2).initializer(|s: String| s.len(), ("four".to_string(),)).build()?;
    /// let f = ex.submit(|x: usize| x + *crew::worker_state::<usize>().unwrap(), (10,));
    /// assert_eq!(f.result()?, 14);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn initializer<F, A, S>(self, f: F, args: A) -> Self
    where
        Star<F>: crew_core::Call<A, S> + crew_process::NonCapturing,
        F: Send + Sync + 'static,
        A: serde::Serialize + serde::de::DeserializeOwned,
        S: std::any::Any + Send + Sync,
    {
        ExecutorBuilder {
            pool: self.pool.initializer(f, args),
        }
    }

    /// Replaces each worker after it has run `n` tasks (Python's
    /// `max_tasks_per_child`; a chunk of a `map` counts as one).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::builder().processes(1).max_tasks_per_child(2).build()?;
    /// let pids: Vec<u32> = (0..4).map(|_| ex.submit(std::process::id, ()).result().unwrap()).collect();
    /// assert_eq!(pids[0], pids[1]);
    /// assert_ne!(pids[1], pids[2]);
    /// // As Python's `ValueError`: zero is refused.
    /// assert!(crew::Executor::builder().processes(1).max_tasks_per_child(0).build().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn max_tasks_per_child(self, n: usize) -> Self {
        ExecutorBuilder {
            pool: self.pool.max_tasks_per_child(n),
        }
    }

    /// Kills a worker whose task runs longer than `timeout`; that task's
    /// future fails with `is_timeout()` and the worker is replaced (as
    /// [`PoolBuilder::task_timeout`]). Python's executors have no such
    /// setting: their `result(timeout)` only stops waiting, as
    /// [`Future::result_timeout`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let ex = crew::Executor::builder().processes(1).task_timeout(Duration::from_millis(200)).build()?;
    /// let nap = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    /// assert!(ex.submit(nap, (60_000,)).result().unwrap_err().is_timeout());
    /// assert!(ex.submit(nap, (0,)).result().is_ok()); // the worker was replaced
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn task_timeout(self, timeout: Duration) -> Self {
        ExecutorBuilder {
            pool: self.pool.task_timeout(timeout),
        }
    }

    /// Re-runs a task whose worker died or timed out, up to `n` times,
    /// waiting `backoff` before the first retry and twice as long before
    /// each next one (as [`PoolBuilder::retries`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let ex = crew::Executor::builder().processes(1).retries(2, Duration::from_millis(1)).build()?;
    /// // A task that always kills its worker fails after its retries.
    /// let f = ex.submit(|| -> u8 { std::process::exit(3) }, ());
    /// assert!(f.result().unwrap_err().is_worker_lost());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn retries(self, n: u32, backoff: Duration) -> Self {
        ExecutorBuilder {
            pool: self.pool.retries(n, backoff),
        }
    }

    /// Limits each worker's address space to `bytes` (as
    /// [`PoolBuilder::memory_limit`]): a task that allocates beyond it
    /// fails alone with `is_worker_lost`.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::builder().processes(1).memory_limit(512 << 20).build()?;
    /// let f = ex.submit(|gib: usize| vec![1u8; gib << 30].len(), (2,));
    /// assert!(f.result().unwrap_err().is_worker_lost());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn memory_limit(self, bytes: u64) -> Self {
        ExecutorBuilder {
            pool: self.pool.memory_limit(bytes),
        }
    }

    /// Starts the executor.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(crew::Executor::builder().processes(2).build()?.workers(), 2);
    /// assert!(crew::Executor::builder().processes(0).build().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for 0 workers, `max_tasks_per_child(0)`, or a
    /// zero `task_timeout` or `memory_limit`; `is_io` if a supervising
    /// thread cannot start; `is_protocol` if the initializer's arguments
    /// cannot be encoded.
    pub fn build(self) -> Result<Executor<Processes>> {
        let (processes, _) = self.pool.build_backend()?;
        Ok(Executor::from_backend(processes))
    }
}

impl ExecutorBuilder<ThreadsConfig> {
    /// Runs `f(args…)` once on each worker thread before its first task
    /// (Python's `initializer` and `initargs`); what it returns is that
    /// worker's state, read with [`worker_state`](crate::worker_state).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = crew::Executor::builder().threads(1).initializer(|a: u8, b: u8| a * b, (6, 7)).build()?;
    /// assert_eq!(ex.submit(|| *crew::worker_state::<u8>().unwrap(), ()).result()?, 42);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn initializer<F, A, S>(self, f: F, args: A) -> Self
    where
        Star<F>: crew_core::Call<A, S>,
        F: Send + Sync + 'static,
        A: Clone + Send + Sync + 'static,
        S: std::any::Any + Send + Sync,
    {
        ExecutorBuilder {
            pool: self.pool.initializer(f, args),
        }
    }

    /// Starts the executor.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(crew::Executor::builder().threads(0).build().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for 0 threads; `is_io` if a thread cannot start.
    pub fn build(self) -> Result<Executor<Threads>> {
        let (threads, _) = self.pool.build_backend()?;
        Ok(Executor::from_backend(threads))
    }
}
