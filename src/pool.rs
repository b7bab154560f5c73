//! `Pool`: Python's `multiprocessing.Pool` (and `ThreadPool`), over any
//! back-end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crew_core::engine::{self, OnDrop, Owned};
use crew_core::{
    AsyncResult, Backend, Error, Imap, MapAsyncResult, MapError, MapOptions, ProgressStyle, Result,
    Runs, Star, Threads, ThreadsConfig, Timeline, Unary,
};
use crew_process::{ProcessConfig, Processes};
use crew_redis::{Cluster, ClusterConfig};

/// A pool of workers with Python's `multiprocessing.Pool` interface: `map`,
/// `starmap`, `apply`, their `_async` variants, `imap`, `imap_unordered`,
/// `close`, `join`, `terminate`.
///
/// `B` is the back-end: [`Threads`] from [`Pool::threads`], or
/// [`Processes`] from [`Pool::processes`]. On threads, the blocking calls
/// (`map`, `starmap`, `apply`) may borrow local data, and the async calls
/// and the lazy iterators need `'static` tasks. On processes, a task is a fn
/// item or a closure that captures nothing, with `Serialize +
/// DeserializeOwned` arguments and result; a program whose tasks follow
/// those rules switches back-end by changing the constructor alone.
///
/// A task that panics fails alone: `map` still runs every other task and
/// returns a [`MapError`] holding every outcome; the pool stays usable.
///
/// Cloning a `Pool` gives another handle to the same workers (with its own
/// options, see [`with_chunksize`](Pool::with_chunksize)). When the last
/// handle is dropped the pool is terminated, as Python's `with Pool() as p:`
/// does: queued tasks are cancelled, nothing waits for a task, and no
/// worker process is left running once the drop returns.
///
/// # Examples
///
/// ```
/// use crew::Pool;
///
/// let pool = Pool::threads(4)?;
/// let squares = pool.map(|x: u64| x * x, 0..10)?;
/// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
///
/// let products = pool.starmap(|a: u32, b: u32| a * b, vec![(1, 2), (3, 4)])?;
/// assert_eq!(products, [2, 12]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pool<B: Backend = Threads> {
    backend: Arc<Owned<B>>,
    opts: MapOptions,
}

impl<B: Backend> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            backend: self.backend.clone(),
            opts: self.opts.clone(),
        }
    }
}

impl Pool<Threads> {
    /// A pool of `n` worker threads (Python's `ThreadPool(n)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// assert_eq!(pool.workers(), 2);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for `n == 0`; `is_io` if a thread cannot start.
    pub fn threads(n: usize) -> Result<Pool<Threads>> {
        Pool::builder().threads(n).build()
    }
}

impl Pool<Processes> {
    /// A pool of `n` worker processes (Python's `multiprocessing.Pool(n)`).
    ///
    /// Each worker is this program re-executed; a task must be a fn item or
    /// a closure that captures nothing, and its arguments and result must be
    /// `Serialize + DeserializeOwned`. A task that crashes its worker (panic
    /// aside: a segfault, an abort, `kill -9`) fails alone with
    /// `is_worker_lost`; the worker is replaced.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::processes(2)?;
    /// let pids = pool.map(|_: u32| std::process::id(), 0..4)?;
    /// assert!(pids.iter().all(|&p| p != std::process::id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A task may start a process pool of its own (its workers are the
    /// worker's children, started the same way); when the task's worker is
    /// killed (a timeout, `cancel`, `terminate`) they exit with it.
    ///
    /// A closure that captures a variable does not compile, with or without
    /// `move`; the error says "a process task cannot capture its
    /// environment … pass the data as an argument", and names the closure
    /// by its file and line (`{closure@src/main.rs:4:22: 4:30}`). A closure
    /// that moves in a value that is not `Copy` is refused by a trait bound
    /// ([`NonCapturing`](crew_process::NonCapturing), E0277), which `cargo
    /// check` (what an editor runs) reports too:
    ///
    /// ```compile_fail,E0277
    /// let pool = crew::Pool::processes(2)?;
    /// let prefix = String::from("n=");
    /// let v = pool.map(move |x: u32| format!("{prefix}{x}"), 0..4)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// That holds for a zero-sized captured value as well: a worker
    /// re-creates the task from its type alone, which would make a second
    /// value of a token or guard out of nothing.
    ///
    /// ```compile_fail,E0277
    /// struct Token; // zero-sized, not `Copy`
    /// let pool = crew::Pool::processes(2)?;
    /// let token = Token;
    /// let v = pool.map(move |x: u32| { let _ = &token; x }, 0..4)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A closure that borrows (or copies in a `Copy` value) is refused when
    /// the program is built (`cargo build`, `cargo test`, `cargo run`; not
    /// `cargo check`, E0080): the check looks at the size of the task's
    /// type, which only code generation computes, and stable Rust has no
    /// trait bound meaning "captures nothing" that `cargo check` could test.
    ///
    /// ```compile_fail,E0080
    /// let pool = crew::Pool::processes(2)?;
    /// let prefix = String::from("n=");
    /// let v = pool.map(|x: u32| format!("{prefix}{x}"), 0..4)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The fix: pass the data as an argument.
    ///
    /// ```
    /// let pool = crew::Pool::processes(2)?;
    /// let prefix = String::from("n=");
    /// let v = pool.starmap(|p: String, x: u32| format!("{p}{x}"), (0..2).map(|x| (prefix.clone(), x)))?;
    /// assert_eq!(v, ["n=0", "n=1"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The async calls (`apply_async`, `map_async`, `imap`, …) need a
    /// `'static` task on every back-end, so there a closure that borrows
    /// first meets rustc's E0373 ("use the `move` keyword"); with `move` it
    /// meets the checks above.
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for `n == 0`; `is_io` if a supervising thread
    /// cannot start.
    pub fn processes(n: usize) -> Result<Pool<Processes>> {
        Pool::builder().processes(n).build()
    }
}

impl Pool<Cluster> {
    /// A pool whose workers are the nodes of a cluster: this same program
    /// started with `CREW_WORKER=<url>` on any number of machines, sharing
    /// the queue through the Redis at `url` (`redis://[user:password@]host:port`,
    /// `rediss://…`, `redis+unix:///path`).
    ///
    /// Tasks follow the rules of [`Pool::processes`]; only nodes running
    /// this very build take them, and they wait in Redis until one does
    /// (when none of this build is on the queue for ten heartbeats, the
    /// driver says so on stderr, once: often the node was started with
    /// another `CREW_QUEUE`; bound the wait with `map_async(…).get_timeout(d)`
    /// or `Future::result_timeout`).
    /// Each task's result comes back exactly once; a node that dies or
    /// stalls has its tasks taken over by the others. The queue name and
    /// timings come from the environment (`CREW_QUEUE`, …) unless set with
    /// [`Pool::builder`]`().cluster(url)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// // On each worker machine: CREW_WORKER=redis://10.0.0.1:6379 ./myprog
    /// let pool = crew::Pool::cluster("redis://10.0.0.1:6379")?;
    /// let squares = pool.map(|x: u64| x * x, 0..1000)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for a bad URL; `is_io` if Redis cannot be reached
    /// within 30 s or refuses the credentials.
    pub fn cluster(url: &str) -> Result<Pool<Cluster>> {
        Pool::builder().cluster(url).build()
    }

    /// [`Pool::cluster`] with the URL from `CREW_CLUSTER`, so a program can
    /// be pointed at a cluster without a rebuild.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// // CREW_CLUSTER=redis://10.0.0.1:6379 CREW_QUEUE=images ./myprog
    /// let pool = crew::Pool::cluster_from_env()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if `CREW_CLUSTER` is not set; else as
    /// [`Pool::cluster`].
    pub fn cluster_from_env() -> Result<Pool<Cluster>> {
        let config = ClusterConfig::from_env()?;
        Pool::builder().cluster_config(config).build()
    }
}

impl Pool {
    /// A builder for a pool with options (timeline, default chunk size,
    /// progress, thread names and stack size).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(2).timeline(true).build()?;
    /// pool.map(|x: u8| x, 0..4)?;
    /// assert_eq!(pool.timeline().unwrap().spans().len(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> PoolBuilder<()> {
        PoolBuilder {
            kind: (),
            opts: MapOptions::default(),
            timeline: false,
            error: None,
        }
    }
}

/// Builds a [`Pool`]; start with [`Pool::builder`], pick the back-end with
/// [`threads`](PoolBuilder::threads), then set options.
///
/// # Examples
///
/// ```
/// let pool = crew::Pool::builder().threads(2).name("crunch").chunksize(4).build()?;
/// let names = pool.map(|_: u8| std::thread::current().name().map(String::from), 0..8)?;
/// assert!(names.iter().all(|n| n.as_deref().unwrap().starts_with("crunch-")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PoolBuilder<K> {
    kind: K,
    opts: MapOptions,
    timeline: bool,
    error: Option<Error>,
}

impl PoolBuilder<()> {
    /// Runs tasks on `n` worker threads.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(3).build()?;
    /// assert_eq!(pool.workers(), 3);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn threads(self, n: usize) -> PoolBuilder<ThreadsConfig> {
        PoolBuilder {
            kind: ThreadsConfig {
                workers: n,
                ..ThreadsConfig::default()
            },
            opts: self.opts,
            timeline: self.timeline,
            error: self.error,
        }
    }
}

impl PoolBuilder<()> {
    /// Runs tasks on `n` worker processes.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().processes(1).build()?;
    /// assert_ne!(pool.apply(std::process::id, ())?, std::process::id());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn processes(self, n: usize) -> PoolBuilder<ProcessConfig> {
        PoolBuilder {
            kind: ProcessConfig {
                workers: n,
                ..ProcessConfig::default()
            },
            opts: self.opts,
            timeline: self.timeline,
            error: self.error,
        }
    }
}

impl PoolBuilder<()> {
    /// Runs tasks on the nodes of the cluster at `url` (see
    /// [`Pool::cluster`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let pool = crew::Pool::builder()
    ///     .cluster("redis://10.0.0.1:6379")
    ///     .queue("images")
    ///     .task_timeout(Duration::from_secs(60))
    ///     .build()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn cluster(self, url: &str) -> PoolBuilder<ClusterConfig> {
        self.cluster_config(ClusterConfig::new(url))
    }

    /// Runs tasks on the cluster `config` describes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = crew::cluster::ClusterConfig::new("redis://10.0.0.1:6379").queue("images");
    /// let pool = crew::Pool::builder().cluster_config(config).build()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn cluster_config(self, config: ClusterConfig) -> PoolBuilder<ClusterConfig> {
        PoolBuilder {
            kind: config,
            opts: self.opts,
            timeline: self.timeline,
            error: self.error,
        }
    }
}

impl PoolBuilder<ClusterConfig> {
    /// The queue to use (default `CREW_QUEUE`, else `default`); nodes
    /// serve the queue named by their own `CREW_QUEUE`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let pool = crew::Pool::builder().cluster("redis://10.0.0.1:6379").queue("images").build()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn queue(mut self, name: &str) -> Self {
        self.kind = self.kind.queue(name);
        self
    }

    /// Kills the worker process (on whichever node) running a task (or map
    /// item) longer than `timeout`; that task fails with `is_timeout()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let pool = crew::Pool::builder().cluster("redis://10.0.0.1:6379").task_timeout(Duration::from_secs(5)).build()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.kind = self.kind.task_timeout(timeout);
        self
    }

    /// Re-runs a task whose worker process died or timed out up to `n`
    /// times, after `backoff`, doubled each time, plus up to half again at
    /// random (so that tasks that failed together do not return together).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let pool = crew::Pool::builder().cluster("redis://10.0.0.1:6379").retries(3, Duration::from_millis(100)).build()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn retries(mut self, n: u32, backoff: Duration) -> Self {
        self.kind = self.kind.retries(n, backoff);
        self
    }

    /// Connects and starts the pool.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let pool = crew::Pool::builder().cluster("redis://10.0.0.1:6379").build()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Pool::cluster`].
    pub fn build(self) -> Result<Pool<Cluster>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let queue = self.kind.queue_name().to_owned();
        let cluster = Cluster::new(self.kind.timeline(self.timeline))?;
        let mut opts = self.opts;
        opts.label = format!("Pool(cluster={queue})");
        Ok(Pool::from_backend(cluster, opts))
    }
}

impl PoolBuilder<ProcessConfig> {
    /// Runs `f(args…)` once in each worker process before its first task
    /// (Python's `initializer`/`initargs`); what it returns is that worker's
    /// state, which tasks read with [`worker_state`](crate::worker_state).
    ///
    /// If it panics, the worker does not start; after three workers in a row
    /// fail so, the pool's tasks fail with `is_worker_lost` saying why.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().processes(2).initializer(|n: usize| vec![1u8; n], (3,)).build()?;
    /// let lens = pool.map(|_: u8| crew::worker_state::<Vec<u8>>().unwrap().len(), 0..4)?;
    /// assert_eq!(lens, [3, 3, 3, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn initializer<F, A, S>(mut self, f: F, args: A) -> Self
    where
        Star<F>: crew_core::Call<A, S> + crew_process::NonCapturing,
        F: Send + Sync + 'static,
        A: serde::Serialize + serde::de::DeserializeOwned,
        S: std::any::Any + Send + Sync,
    {
        match Processes::initializer(f, args) {
            Ok(init) => self.kind.initializer = Some(init),
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Kills a worker whose task (or map item) runs longer than `timeout`;
    /// that task fails with `is_timeout()` and the worker is replaced.
    ///
    /// The kill reaches the worker's process group, so processes the task
    /// started die with it, unless they left the group (`setsid`, a
    /// daemon): see the process back-end's notes on process groups.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = crew::Pool::builder().processes(1).task_timeout(Duration::from_millis(50)).build()?;
    /// let nap = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    /// // The 2-second nap is cut short after 50 ms; the other naps still run.
    /// let err = pool.with_chunksize(1).map(nap, [0, 2_000, 0]).unwrap_err();
    /// assert_eq!(err.failed(), 1);
    /// assert!(err.first().is_timeout());
    /// assert_eq!(err.first().index(), Some(1));
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.kind.task_timeout = Some(timeout);
        self
    }

    /// Replaces each worker after it has run `n` jobs (Python's
    /// `maxtasksperchild`; a chunk of a map counts as one job).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashSet;
    /// let pool = crew::Pool::builder().processes(1).max_tasks_per_child(1).build()?;
    /// let pids = pool.with_chunksize(1).map(|_: u8| std::process::id(), 0..3)?;
    /// assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 3); // a fresh worker per job
    /// // As Python's `ValueError`: zero is refused.
    /// assert!(crew::Pool::builder().processes(1).max_tasks_per_child(0).build().unwrap_err().is_invalid_input());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.kind.max_tasks_per_child = Some(n);
        self
    }

    /// Re-runs a task whose worker died or timed out, up to `n` times,
    /// waiting `backoff` before the first retry and twice as long before
    /// each next one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use std::time::Duration;
    ///
    /// // Kills its worker the first time it runs, succeeds the second time.
    /// fn crash_once(marker: PathBuf) -> String {
    ///     if std::fs::File::create_new(&marker).is_ok() {
    ///         std::process::exit(3);
    ///     }
    ///     "second attempt".to_owned()
    /// }
    ///
    /// let marker = std::env::temp_dir().join(format!("crew-retries-{}", std::process::id()));
    /// # let _ = std::fs::remove_file(&marker);
    /// let pool = crew::Pool::builder().processes(1).retries(1, Duration::from_millis(1)).build()?;
    /// assert_eq!(pool.apply(crash_once, (marker.clone(),))?, "second attempt");
    /// # std::fs::remove_file(&marker)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retries(mut self, n: u32, backoff: Duration) -> Self {
        self.kind.retries = n;
        self.kind.retry_backoff = backoff;
        self
    }

    /// Limits each worker's address space to `bytes` (`RLIMIT_AS`): a task
    /// that allocates beyond it kills its worker (the allocation aborts) and
    /// fails alone with `is_worker_lost`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().processes(1).memory_limit(512 << 20).build()?;
    /// let e = pool.apply(|gib: usize| vec![1u8; gib << 30].len(), (2,)).unwrap_err();
    /// assert!(e.is_worker_lost());
    /// assert_eq!(pool.apply(|x: u8| x + 1, (1,))?, 2); // the worker was replaced
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.kind.memory_limit = Some(bytes);
        self
    }

    /// Starts the pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().processes(2).build()?;
    /// assert_eq!(pool.workers(), 2);
    /// assert!(crew::Pool::builder().processes(0).build().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for 0 workers or any other setting out of range
    /// (`max_tasks_per_child(0)`, `chunksize(0)`, a zero `task_timeout` or
    /// `memory_limit`); `is_io` if a supervising thread cannot start;
    /// `is_protocol` if the initializer's arguments cannot be
    /// encoded.
    pub fn build(self) -> Result<Pool<Processes>> {
        let (processes, opts) = self.build_backend()?;
        Ok(Pool::from_backend(processes, opts))
    }

    /// The back-end and map options this builder describes.
    pub(crate) fn build_backend(self) -> Result<(Processes, MapOptions)> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.opts.validate()?;
        let workers = self.kind.workers;
        let processes = Processes::with_config(ProcessConfig {
            timeline: self.timeline,
            ..self.kind
        })?;
        let mut opts = self.opts;
        opts.label = format!("Pool(processes={workers})");
        Ok((processes, opts))
    }
}

impl<K> PoolBuilder<K> {
    /// Records what each worker did; read it with [`Pool::timeline`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(1).timeline(true).build()?;
    /// pool.apply(|| 1, ())?;
    /// assert_eq!(pool.timeline().unwrap().spans().len(), 1);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn timeline(mut self, on: bool) -> Self {
        self.timeline = on;
        self
    }

    /// The default number of items per job for `map` and friends (Python's
    /// `chunksize`); without it, crew chooses (see
    /// [`with_chunksize`](Pool::with_chunksize)).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(2).chunksize(10).build()?;
    /// let names = pool.map(|_: u8| std::thread::current().name().map(String::from), 0..10)?;
    /// assert!(names.iter().all(|n| *n == names[0])); // one chunk: one worker ran it all
    /// // Zero is refused when the pool is built.
    /// assert!(crew::Pool::builder().threads(2).chunksize(0).build().unwrap_err().is_invalid_input());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn chunksize(mut self, n: usize) -> Self {
        self.opts.chunksize = Some(n);
        self
    }

    /// Shows the progress of every map: a bar on a terminal, joblib-style
    /// lines otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(2).progress(true).build()?;
    /// // Reports on stderr: `[Pool(threads=2)]: Done 100 out of 100 | elapsed: 0.0s finished | 1.2M it/s`.
    /// assert_eq!(pool.map(|x: u32| x, 0..100)?.len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress(mut self, on: bool) -> Self {
        self.opts.progress = on.then_some(ProgressStyle::Auto);
        self
    }
}

impl PoolBuilder<ThreadsConfig> {
    /// Runs `f(args…)` once on each worker thread before its first task
    /// (Python's `initializer`/`initargs`); what it returns is that worker's
    /// state, which tasks read with [`worker_state`](crate::worker_state).
    ///
    /// If it panics, the panic is reported on stderr and that worker runs
    /// its tasks without state (`worker_state` gives `None`); a thread cannot
    /// be replaced the way a process is.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(2).initializer(|base: u64| base * 100, (7,)).build()?;
    /// let v = pool.map(|x: u64| x + *crew::worker_state::<u64>().unwrap(), 0..3)?;
    /// assert_eq!(v, [700, 701, 702]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn initializer<F, A, S>(mut self, f: F, args: A) -> Self
    where
        Star<F>: crew_core::Call<A, S>,
        F: Send + Sync + 'static,
        A: Clone + Send + Sync + 'static,
        S: std::any::Any + Send + Sync,
    {
        let task = Star(f);
        self.kind.initializer = Some(Arc::new(move || {
            let state: Arc<dyn std::any::Any + Send + Sync> =
                Arc::new(crew_core::Call::call(&task, args.clone()));
            state
        }));
        self
    }

    /// Names the worker threads `{prefix}-0`, `{prefix}-1`, …
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(1).name("io").build()?;
    /// assert_eq!(pool.apply(|| std::thread::current().name().map(String::from), ())?.as_deref(), Some("io-0"));
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.kind.name = Some(prefix.into());
        self
    }

    /// Sets each worker thread's stack size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// // A task with 4 MiB on its stack, more than a thread gets by default.
    /// let pool = crew::Pool::builder().threads(1).stack_size(32 << 20).build()?;
    /// let last = pool.apply(|| std::hint::black_box([7u8; 4 << 20])[(4 << 20) - 1], ())?;
    /// assert_eq!(last, 7);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.kind.stack_size = Some(bytes);
        self
    }

    /// Starts the pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(2).build()?;
    /// assert_eq!(pool.workers(), 2);
    /// assert!(crew::Pool::builder().threads(0).build().unwrap_err().is_invalid_input());
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for 0 threads or any other setting out of range
    /// (`chunksize(0)`, `stack_size(0)`); `is_io` if a thread cannot start.
    pub fn build(self) -> Result<Pool<Threads>> {
        let (threads, opts) = self.build_backend()?;
        Ok(Pool::from_backend(threads, opts))
    }

    /// The back-end and map options this builder describes.
    pub(crate) fn build_backend(self) -> Result<(Threads, MapOptions)> {
        self.opts.validate()?;
        let workers = self.kind.workers;
        let threads = Threads::with_config(ThreadsConfig {
            timeline: self.timeline,
            ..self.kind
        })?;
        let mut opts = self.opts;
        opts.label = format!("Pool(threads={workers})");
        Ok((threads, opts))
    }
}

impl<B: Backend> Pool<B> {
    /// A pool over any back-end, terminated when its last handle is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::core::MapOptions;
    /// use crew::{Backend, Pool, Threads};
    ///
    /// let threads = Threads::new(2)?;
    /// let pool = Pool::from_backend(threads.clone(), MapOptions::default());
    /// assert_eq!(pool.map(|x: u8| x * 2, 0..3)?, [0, 2, 4]);
    /// drop(pool);
    /// assert!(threads.is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_backend(backend: B, opts: MapOptions) -> Pool<B> {
        Pool {
            backend: Arc::new(Owned::new(backend, OnDrop::Terminate)),
            opts,
        }
    }

    /// The number of workers.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(crew::Pool::threads(3)?.workers(), 3);
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
    /// let pool = crew::Pool::processes(2)?;
    /// # let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    /// # while pool.worker_pids().len() < 2 && std::time::Instant::now() < deadline {
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # }
    /// let pids = pool.worker_pids();
    /// assert_eq!(pids.len(), 2);
    /// assert!(!pids.contains(&std::process::id()));
    /// assert!(crew::Pool::threads(2)?.worker_pids().is_empty());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.backend.worker_pids()
    }

    /// The back-end, for what the pool itself does not offer.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let threads = pool.backend().clone();
    /// let on_workers = pool.map(move |_: u8| threads.current_worker().is_some(), 0..4)?;
    /// assert_eq!(on_workers, [true; 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// This pool with `n` items per job for the calls made through it
    /// (Python's `chunksize`).
    ///
    /// Without it, `map` splits its input into about 16 chunks per worker
    /// (per worker that can run at once: on a cluster, no more per machine
    /// than its CPUs), the first about twice the average size and the last
    /// single items, so that no worker is left alone with a big chunk at the
    /// end; a size set here is kept exactly. The lazy iterators start with one item per job and grow chunks until
    /// each takes about half a millisecond.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let v: Vec<u32> = pool.with_chunksize(100).map(|x: u32| x + 1, 0..1000)?;
    /// assert_eq!(v[999], 1000);
    /// // Zero, which Python refuses with `ValueError`, fails every call made
    /// // through the pool it returns with `is_invalid_input`.
    /// assert!(pool.with_chunksize(0).map(|x: u32| x, 0..10).unwrap_err().first().is_invalid_input());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_chunksize(&self, n: usize) -> Pool<B> {
        let mut p = self.clone();
        p.opts.chunksize = Some(n);
        p
    }

    /// This pool, showing (or not) the progress of the calls made through it:
    /// an indicatif bar with rate and ETA on a terminal, joblib-style lines
    /// (`[Pool(threads=2)]: Done  40 out of 100 | elapsed: 1.2s remaining:
    /// 1.8s | 33.3 it/s`) when stderr is not a terminal.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let v = pool.with_progress(true).map(|x: u32| x, 0..10)?;
    /// assert_eq!(v.len(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_progress(&self, on: bool) -> Pool<B> {
        self.with_progress_style(on.then_some(ProgressStyle::Auto))
    }

    /// This pool with an explicit progress style (`None` for none).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use crew::ProgressStyle;
    ///
    /// let lines = Arc::new(Mutex::new(Vec::new()));
    /// let pool = crew::Pool::threads(2)?;
    /// pool.with_progress_style(Some(ProgressStyle::Capture(lines.clone()))).map(|x: u32| x, 0..100)?;
    /// let last = lines.lock().unwrap().last().unwrap().clone();
    /// assert!(last.starts_with("[Pool(threads=2)]: Done 100 out of 100"), "{last}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_progress_style(&self, style: Option<ProgressStyle>) -> Pool<B> {
        let mut p = self.clone();
        p.opts.progress = style;
        p
    }

    /// Applies `f` to every item and returns the results in input order
    /// (Python's `Pool.map`).
    ///
    /// Blocks until every task is done. The input is collected first, split
    /// into chunks, and the chunks run on the workers.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let words = vec!["a", "bb", "ccc"];
    /// let lens = pool.map(|w: &str| w.len(), words.iter().copied())?;
    /// assert_eq!(lens, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// If any task fails, a [`MapError`] with every task's outcome (the other
    /// tasks still ran); if the pool is closed, a `MapError` whose only error
    /// is `is_shutdown`.
    pub fn map<'s, F, X, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = X>,
    ) -> std::result::Result<Vec<R>, MapError<R>>
    where
        B: Runs<'s, Unary<F>, X, R>,
        F: 's,
        X: 's,
        R: Send + 's,
    {
        engine::map_blocking(&**self.backend, Unary(f), items, &self.opts)
    }

    /// `map` with a task that is not a plain function (the cache's).
    pub(crate) fn run_map<'s, T, X, R>(
        &self,
        task: T,
        items: impl IntoIterator<Item = X>,
    ) -> std::result::Result<Vec<R>, MapError<R>>
    where
        B: Runs<'s, T, X, R>,
        T: 's,
        X: 's,
        R: Send + 's,
    {
        engine::map_blocking(&**self.backend, task, items, &self.opts)
    }

    /// `imap` (`ordered`) or `imap_unordered` with a task that is not a
    /// plain function (the cache's).
    pub(crate) fn run_imap<T, I, R>(&self, task: T, items: I, ordered: bool) -> Imap<B, T, I, R>
    where
        I: Iterator,
        B: Runs<'static, T, I::Item, R>,
        T: Send + Sync + 'static,
        I::Item: 'static,
        R: Send + 'static,
    {
        Imap::new(self.backend.clone(), task, items, ordered, &self.opts, None)
    }

    /// Like [`map`](Pool::map), for a function of several arguments: each
    /// item is a tuple of arguments, `f(a, b, …)` (Python's `starmap`).
    ///
    /// Up to 8 arguments.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let rows = vec![(vec![1, 5, 9], 4, 8), (vec![4, 4, 0], 4, 8)];
    /// let counts = pool.starmap(
    ///     |row: Vec<i32>, lo: i32, hi: i32| row.iter().filter(|&&x| lo <= x && x <= hi).count(),
    ///     rows,
    /// )?;
    /// assert_eq!(counts, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map).
    pub fn starmap<'s, F, X, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = X>,
    ) -> std::result::Result<Vec<R>, MapError<R>>
    where
        B: Runs<'s, Star<F>, X, R>,
        F: 's,
        X: 's,
        R: Send + 's,
    {
        engine::map_blocking(&**self.backend, Star(f), items, &self.opts)
    }

    /// Runs `f(args…)` on a worker and waits for the result (Python's
    /// `apply`).
    ///
    /// `args` is a tuple: `()`, `(x,)`, `(a, b)`, …
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(1)?;
    /// assert_eq!(pool.apply(|a: i32, b: i32| a + b, (2, 3))?, 5);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The task's error (`is_panic`, …), or `is_shutdown` for a closed pool.
    pub fn apply<'s, F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        B: Runs<'s, Star<F>, A, R>,
        F: 's,
        A: 's,
        R: Send + 's,
    {
        engine::call_blocking(&**self.backend, Star(f), args)
    }

    /// Queues `f(args…)` and returns at once (Python's `apply_async`); attach
    /// `callback`/`error_callback` to the [`AsyncResult`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let pool = crew::Pool::threads(2)?;
    /// let results = Arc::new(Mutex::new(Vec::new()));
    /// let handles: Vec<_> = (0..4)
    ///     .map(|i| {
    ///         let r = results.clone();
    ///         pool.apply_async(|x: u32| x * 10, (i,)).callback(move |v| r.lock().unwrap().push(*v))
    ///     })
    ///     .collect();
    /// for h in handles {
    ///     h.wait();
    /// }
    /// let mut got = results.lock().unwrap().clone();
    /// got.sort();
    /// assert_eq!(got, [0, 10, 20, 30]);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> AsyncResult<R>
    where
        B: Runs<'static, Star<F>, A, R>,
        F: 'static,
        A: 'static,
        R: Send + 'static,
    {
        let (promise, result) = AsyncResult::pending_recycled();
        engine::spawn_call(&**self.backend, Star(f), args, promise);
        result
    }

    /// Queues a whole map and returns at once (Python's `map_async`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let r = pool.map_async(|x: i64| x - 1, vec![1, 2, 3]);
    /// assert_eq!(r.get()?, [0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async<F, X, R>(&self, f: F, items: impl IntoIterator<Item = X>) -> MapAsyncResult<R>
    where
        B: Runs<'static, Unary<F>, X, R>,
        F: 'static,
        X: 'static,
        R: Send + 'static,
    {
        engine::map_async(
            &**self.backend,
            Unary(f),
            items.into_iter().collect(),
            &self.opts,
        )
    }

    /// Queues a whole starmap and returns at once (Python's `starmap_async`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let r = pool.starmap_async(|a: u8, b: u8| a + b, vec![(1, 1), (2, 2)]);
    /// assert_eq!(r.get()?, [2, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap_async<F, X, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = X>,
    ) -> MapAsyncResult<R>
    where
        B: Runs<'static, Star<F>, X, R>,
        F: 'static,
        X: 'static,
        R: Send + 'static,
    {
        engine::map_async(
            &**self.backend,
            Star(f),
            items.into_iter().collect(),
            &self.opts,
        )
    }

    /// A lazy map whose results come in input order (Python's `imap`).
    ///
    /// The input is read only as results are consumed, with at most 4 chunks
    /// per worker in flight, so an endless iterator works; dropping the
    /// iterator cancels the work not started. The iterator holds its own
    /// handle to the workers: dropping the pool while it is alive ends
    /// nothing, and the pool is terminated once both are gone.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// // An endless input, consumed partially.
    /// let first: Vec<u64> = pool.imap(|x: u64| x * 2, 0..).take(5).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 2, 4, 6, 8]);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn imap<F, I, R>(&self, f: F, items: I) -> Imap<B, Unary<F>, I::IntoIter, R>
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
            None,
        )
    }

    /// A lazy map whose results come as they finish (Python's
    /// `imap_unordered`); each result appears exactly once.
    ///
    /// Errors carry their task's input position ([`Error::index`]). As with
    /// [`imap`](Pool::imap), the iterator keeps the workers while it lives.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(2)?;
    /// let mut v: Vec<u32> = pool.imap_unordered(|x: u32| x + 1, 0..100).collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, (1..=100).collect::<Vec<_>>());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn imap_unordered<F, I, R>(&self, f: F, items: I) -> Imap<B, Unary<F>, I::IntoIter, R>
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
            false,
            &self.opts,
            None,
        )
    }

    /// Stops accepting tasks; queued tasks still run (Python's `close`).
    ///
    /// Later calls fail with `is_shutdown`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(1)?;
    /// pool.close();
    /// assert!(pool.apply(|| 1, ()).unwrap_err().is_shutdown());
    /// pool.join()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn close(&self) {
        self.backend.close();
    }

    /// Cancels queued tasks and stops the workers without waiting for
    /// running tasks (Python's `terminate`).
    ///
    /// Outstanding results complete as cancelled. On processes, the
    /// workers are killed (with what their tasks started, see
    /// [`PoolBuilder::task_timeout`]) and have exited when this returns, as
    /// after dropping the pool. On threads, a running task cannot be
    /// stopped: its thread ends after it.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(1)?;
    /// pool.terminate();
    /// pool.join()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn terminate(&self) {
        self.backend.terminate();
    }

    /// Waits for the workers to exit, after [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate) (Python's `join`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(1)?;
    /// assert!(pool.join().unwrap_err().is_invalid_input()); // still open
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if the pool is still open (Python raises
    /// `ValueError`), or if called from one of the pool's own workers.
    pub fn join(&self) -> Result<()> {
        self.join_deadline(None).map(|_| ())
    }

    /// Like [`join`](Pool::join), but gives up after `timeout`; true if every
    /// worker exited.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::threads(1)?;
    /// pool.close();
    /// assert!(pool.join_timeout(std::time::Duration::from_secs(5))?);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if the pool is still open. Called from one of the
    /// pool's own workers it returns `Ok(false)` at once (a worker cannot
    /// outwait itself), where [`join`](Pool::join) reports an error.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.join_deadline(Some(engine::deadline(timeout)))
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        if !self.backend.is_closed() {
            return Err(Error::invalid_input(
                "join() needs close() or terminate() first",
            ));
        }
        let joined = self.backend.join(deadline);
        if deadline.is_none() && !joined {
            return Err(Error::invalid_input("a worker cannot join its own pool"));
        }
        Ok(joined)
    }

    /// What each worker did, if the pool was built with
    /// [`timeline(true)`](PoolBuilder::timeline); export it with
    /// [`Timeline::to_chrome_trace`] and open it in Perfetto or
    /// `chrome://tracing`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = crew::Pool::builder().threads(2).timeline(true).build()?;
    /// pool.map(|x: u64| x + 1, 0..10)?;
    /// let trace = pool.timeline().unwrap().to_chrome_trace();
    /// assert!(trace.contains("\"ph\":\"X\""));
    /// assert!(crew::Pool::threads(1)?.timeline().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeline(&self) -> Option<Arc<Timeline>> {
        self.backend.timeline().cloned()
    }
}
