//! `Parallel` and `delayed`: joblib's interface.

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

use crew_core::engine::{self, OnDrop, Owned};
use crew_core::{
    Call, Error, Imap, MapError, MapOptions, ProgressStyle, Result, Runs, Star, Threads,
    resolve_n_jobs,
};
use crew_process::Processes;

/// A call waiting to be run: `f` and its arguments, built by [`delayed`].
///
/// # Examples
///
/// ```
/// use crew::{Parallel, delayed};
/// let calls = vec![delayed(u32::pow, (2, 10)), delayed(u32::pow, (3, 2))];
/// assert_eq!(Parallel::new().n_jobs(2).run(calls)?, [1024, 9]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The function must capture nothing, so that it is the same in a worker
/// process; pass the data as an argument instead:
///
/// ```compile_fail
/// use crew::{Parallel, delayed};
/// let offset = 10;
/// Parallel::new().run(vec![delayed(move |x: i32| x + offset, (1,))]);
/// ```
///
/// A `Delayed` is not itself (de)serializable: on processes only its
/// arguments cross, and the worker re-creates the function from the task
/// the pool was given, so no value of an arbitrary type can be conjured
/// from bytes:
///
/// ```compile_fail,E0277
/// let d = postcard::from_bytes::<crew::Delayed<std::convert::Infallible, ()>>(&[]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Delayed<F, A> {
    f: F,
    args: A,
}

/// Wraps a call for [`Parallel`]: joblib's `delayed(f)(a, b)` is
/// `delayed(f, (a, b))` here.
///
/// # Examples
///
/// ```
/// use crew::{Parallel, delayed};
/// let roots = Parallel::new().n_jobs(2).run((0..10).map(|i| delayed(|x: f64| x.sqrt(), ((i * i) as f64,))))?;
/// assert_eq!(roots[3], 3.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn delayed<F, A>(f: F, args: A) -> Delayed<F, A> {
    Delayed { f, args }
}

/// The task that runs a [`Delayed`] call.
///
/// # Examples
///
/// ```
/// use crew::core::Call;
/// use crew::{RunDelayed, delayed};
/// assert_eq!(RunDelayed.call(delayed(|a: i32, b: i32| a - b, (5, 3))), 2);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RunDelayed;

impl<F, A, R> Call<Delayed<F, A>, R> for RunDelayed
where
    Star<F>: Call<A, R>,
{
    fn call(&self, d: Delayed<F, A>) -> R {
        Star(d.f).call(d.args)
    }

    fn name(&self) -> Option<&'static str> {
        Some(std::any::type_name::<F>())
    }
}

/// Which workers [`Parallel`] uses, as joblib's `prefer`.
///
/// # Examples
///
/// ```
/// use crew::{Parallel, Prefer, delayed};
///
/// assert_eq!(Prefer::default(), Prefer::Processes);
/// let calls = || (0..4).map(|_| delayed(std::process::id, ()));
/// let on_threads = Parallel::new().n_jobs(2).prefer(Prefer::Threads).run(calls())?;
/// assert!(on_threads.iter().all(|&pid| pid == std::process::id()));
/// let on_processes = Parallel::new().n_jobs(2).prefer(Prefer::Processes).run(calls())?;
/// assert!(on_processes.iter().all(|&pid| pid != std::process::id()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Prefer {
    /// Worker processes (joblib's default, loky): a crash, abort or
    /// runaway allocation in one call fails that call alone.
    #[default]
    Processes,
    /// Threads: no start-up cost and no copying of arguments; Rust has no
    /// GIL, so threads run CPU-bound calls in parallel too.
    Threads,
}

/// How many calls each job carries, as joblib's `batch_size`.
///
/// # Examples
///
/// ```
/// use crew::{BatchSize, Parallel, Prefer, delayed};
///
/// let names = Parallel::new()
///     .n_jobs(2)
///     .prefer(Prefer::Threads)
///     .batch_size(BatchSize::Fixed(10))
///     .run((0..10).map(|_| delayed(|| std::thread::current().name().map(String::from), ())))?;
/// assert!(names.iter().all(|n| *n == names[0])); // one batch: one worker ran it all
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BatchSize {
    /// Chosen from the number of calls and workers (about 16 batches per
    /// worker), and grown from measured durations for the lazy results.
    #[default]
    Auto,
    /// Exactly this many calls per job.
    Fixed(usize),
}

/// Runs many [`delayed`] calls in parallel: joblib's `Parallel`.
///
/// Tasks are fn items or non-capturing closures whose arguments and
/// results are `Serialize + DeserializeOwned`, so that the same code runs on
/// processes (the default, as in joblib) and on threads
/// ([`Prefer::Threads`]); a capturing closure is a compile error (reported
/// by `cargo build` and `cargo test`, not by `cargo check`, which stops
/// before the check runs).
///
/// `n_jobs` counts workers as joblib does: a positive number is taken as
/// is, `-1` means every CPU ([`cpu_count`](crate::cpu_count)), `-2` all but
/// one. Unlike joblib, whose default is one job, the default here is `-1`.
/// `n_jobs(1)` runs the calls one after another in the calling thread, with
/// no pool at all (joblib's sequential back-end, handy when debugging).
///
/// Results come back as a `Vec` ([`run`](Parallel::run)), an ordered lazy
/// iterator ([`run_iter`](Parallel::run_iter), joblib's
/// `return_as="generator"`) or an unordered one
/// ([`run_unordered`](Parallel::run_unordered)).
///
/// # Examples
///
/// ```
/// use crew::{Parallel, Prefer, delayed};
///
/// let out = Parallel::new()
///     .n_jobs(-1)
///     .prefer(Prefer::Threads)
///     .run((1..=4).map(|i| delayed(|a: u32, b: u32| a * b, (i, 10))))?;
/// assert_eq!(out, [10, 20, 30, 40]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Parallel {
    n_jobs: isize,
    prefer: Prefer,
    /// Run on these cluster nodes instead of local workers.
    cluster: Option<crew_redis::ClusterConfig>,
    verbose: u32,
    batch_size: BatchSize,
    progress: Option<ProgressStyle>,
}

impl Default for Parallel {
    fn default() -> Self {
        Parallel::new()
    }
}

impl Parallel {
    /// `n_jobs = -1`, processes, quiet, automatic batches.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, delayed};
    /// let squares = Parallel::new().run((1..=3).map(|i| delayed(|x: u64| x * x, (i,))))?;
    /// assert_eq!(squares, [1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Parallel {
        Parallel {
            n_jobs: -1,
            prefer: Prefer::default(),
            cluster: None,
            verbose: 0,
            batch_size: BatchSize::Auto,
            progress: None,
        }
    }

    /// The number of workers, joblib-style (negative counts back from the
    /// number of CPUs).
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, delayed};
    ///
    /// let square = |x: i64| x * x;
    /// assert_eq!(Parallel::new().n_jobs(2).run((0..4).map(|i| delayed(square, (i,))))?, [0, 1, 4, 9]);
    /// // One job: the calls run in this very process, one after another.
    /// assert_eq!(Parallel::new().n_jobs(1).run([delayed(std::process::id, ())])?, [std::process::id()]);
    /// // No worker at all is refused when the calls run.
    /// let err = Parallel::new().n_jobs(0).run([delayed(square, (1,))]).unwrap_err();
    /// assert!(err.first().is_invalid_input());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn n_jobs(mut self, n_jobs: isize) -> Parallel {
        self.n_jobs = n_jobs;
        self
    }

    /// The kind of workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, Prefer, delayed};
    /// let out = Parallel::new().prefer(Prefer::Threads).run([delayed(|s: String| s.len(), ("four".into(),))])?;
    /// assert_eq!(out, [4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefer(mut self, prefer: Prefer) -> Parallel {
        self.prefer = prefer;
        self
    }

    /// Runs the calls on the nodes of a cluster (see
    /// [`Pool::cluster`](crate::Pool::cluster)) instead of local workers:
    /// the rules of [`Prefer::Processes`] apply, `n_jobs` is ignored (the
    /// nodes decide how many run at once). `ClusterConfig::from_env()`
    /// takes the settings from `CREW_CLUSTER` and `CREW_QUEUE`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use crew::{Parallel, cluster::ClusterConfig, delayed};
    /// let squares = Parallel::new()
    ///     .cluster(ClusterConfig::from_env()?)
    ///     .run((1..=3).map(|i| delayed(|x: u64| x * x, (i,))))?;
    /// assert_eq!(squares, [1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cluster(mut self, config: crew_redis::ClusterConfig) -> Parallel {
        self.cluster = Some(config);
        self
    }

    /// Prints joblib-style progress lines on stderr
    /// (`[Parallel(n_jobs=2)]: Done   4 out of  10 | elapsed: 0.1s
    /// remaining: 0.2s | 40.0 it/s`): 0 is quiet, 1–9 about every tenth of the work, 10
    /// and more also at least once a second, above 50 after every task.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, Prefer, delayed};
    /// // Prints `[Parallel(n_jobs=2)]: Using backend Threads with 2 concurrent workers.`
    /// // and then a line about every tenth of the calls.
    /// let out = Parallel::new().n_jobs(2).prefer(Prefer::Threads).verbose(5).run((0..20).map(|i| delayed(|x: u8| x, (i,))))?;
    /// assert_eq!(out.len(), 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verbose(mut self, level: u32) -> Parallel {
        self.verbose = level;
        self
    }

    /// Calls per job; see [`BatchSize`].
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{BatchSize, Parallel, delayed};
    /// let out = Parallel::new().n_jobs(2).batch_size(BatchSize::Fixed(50)).run((0..100u32).map(|i| delayed(|x: u32| x + 1, (i,))))?;
    /// assert_eq!(out[99], 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch_size(mut self, batch_size: BatchSize) -> Parallel {
        self.batch_size = batch_size;
        self
    }

    /// Shows a progress bar on a terminal (plain lines elsewhere), like
    /// wrapping joblib's input in tqdm.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, Prefer, delayed};
    /// let out = Parallel::new().n_jobs(2).prefer(Prefer::Threads).progress(true).run((0..10).map(|i| delayed(|x: u8| x * 2, (i,))))?;
    /// assert_eq!(out[9], 18);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress(mut self, on: bool) -> Parallel {
        self.progress = on.then_some(ProgressStyle::Auto);
        self
    }

    /// The progress reporting of this `Parallel`, explicitly.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use crew::{Parallel, Prefer, ProgressStyle, delayed};
    ///
    /// let lines = Arc::new(Mutex::new(Vec::new()));
    /// let out = Parallel::new()
    ///     .n_jobs(2)
    ///     .prefer(Prefer::Threads)
    ///     .progress_style(Some(ProgressStyle::Capture(lines.clone())))
    ///     .run((0..20).map(|i| delayed(|x: u32| x, (i,))))?;
    /// assert_eq!(out.len(), 20);
    /// let last = lines.lock().unwrap().last().unwrap().clone();
    /// assert!(last.starts_with("[Parallel(n_jobs=2)]: Done  20 out of  20"), "{last}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress_style(mut self, style: Option<ProgressStyle>) -> Parallel {
        self.progress = style;
        self
    }

    fn options(&self, workers: usize) -> MapOptions {
        let label = format!("Parallel(n_jobs={workers})");
        let progress = self
            .progress
            .clone()
            .or_else(|| (self.verbose > 0).then_some(ProgressStyle::Lines(self.verbose)));
        if self.verbose > 0 {
            eprintln!(
                "[{label}]: Using backend {:?} with {workers} concurrent workers.",
                self.prefer
            );
        }
        MapOptions {
            chunksize: match self.batch_size {
                BatchSize::Auto => None,
                BatchSize::Fixed(n) => Some(n.max(1)),
            },
            progress,
            label,
        }
    }

    /// Runs every call and returns the results in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, delayed};
    /// let double = |x: i32| 2 * x;
    /// let v = Parallel::new().n_jobs(1).run(vec![delayed(double, (1,)), delayed(double, (2,))])?;
    /// assert_eq!(v, [2, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`MapError`] with every call's outcome if any call failed (all calls
    /// still ran); one whose only error is `is_invalid_input` for a bad
    /// `n_jobs`; `is_io` if the workers could not start.
    pub fn run<F, A, R>(
        &self,
        tasks: impl IntoIterator<Item = Delayed<F, A>>,
    ) -> std::result::Result<Vec<R>, MapError<R>>
    where
        Star<F>: Call<A, R>,
        F: Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let tasks: Vec<Delayed<F, A>> = tasks.into_iter().collect();
        if let Some(config) = &self.cluster {
            let Some(f) = tasks.first().map(|d| d.f) else {
                return Ok(Vec::new());
            };
            let cluster = crew_redis::Cluster::new(config.clone())?;
            let opts = self.options(crew_core::Backend::workers(&cluster));
            let args: Vec<A> = tasks.into_iter().map(args_of).collect();
            return run_on(cluster, Star(f), args, &opts);
        }
        let workers = resolve_n_jobs(self.n_jobs)?;
        let opts = self.options(workers);
        if workers == 1 {
            return run_serial(tasks, &opts);
        }
        let workers = workers.min(tasks.len().max(1));
        match self.prefer {
            Prefer::Threads => run_on(Threads::new(workers)?, RunDelayed, tasks, &opts),
            Prefer::Processes => {
                // Every call has the same zero-sized function (the process
                // back-end refuses any other), so the pool runs that one
                // function and only the arguments cross.
                let Some(f) = tasks.first().map(|d| d.f) else {
                    return Ok(Vec::new());
                };
                let args: Vec<A> = tasks.into_iter().map(args_of).collect();
                run_on(Processes::new(workers)?, Star(f), args, &opts)
            }
        }
    }

    /// Runs the calls lazily and yields their results in order (joblib's
    /// `return_as="generator"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, delayed};
    /// let total: u64 = Parallel::new()
    ///     .n_jobs(2)
    ///     .run_iter((0..100u64).map(|i| delayed(|x: u64| x, (i,))))?
    ///     .map(|r| r.unwrap())
    ///     .sum();
    /// assert_eq!(total, 4950);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for a bad `n_jobs`, `is_io` if the workers could
    /// not start; each call's own error comes through the iterator.
    pub fn run_iter<F, A, R, I>(&self, tasks: I) -> Result<ParallelIter<R>>
    where
        I: IntoIterator<Item = Delayed<F, A>>,
        I::IntoIter: 'static,
        Star<F>: Call<A, R>,
        F: Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.lazy(tasks, true)
    }

    /// Runs the calls lazily and yields their results as they finish
    /// (joblib's `return_as="generator_unordered"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, delayed};
    /// let mut v: Vec<u8> = Parallel::new()
    ///     .n_jobs(2)
    ///     .run_unordered((0..5u8).map(|i| delayed(|x: u8| x, (i,))))?
    ///     .collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, [0, 1, 2, 3, 4]);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`run_iter`](Parallel::run_iter).
    pub fn run_unordered<F, A, R, I>(&self, tasks: I) -> Result<ParallelIter<R>>
    where
        I: IntoIterator<Item = Delayed<F, A>>,
        I::IntoIter: 'static,
        Star<F>: Call<A, R>,
        F: Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.lazy(tasks, false)
    }

    fn lazy<F, A, R, I>(&self, tasks: I, ordered: bool) -> Result<ParallelIter<R>>
    where
        I: IntoIterator<Item = Delayed<F, A>>,
        I::IntoIter: 'static,
        Star<F>: Call<A, R>,
        F: Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let tasks = tasks.into_iter();
        if let Some(config) = &self.cluster {
            let mut tasks = tasks.peekable();
            let Some(f) = tasks.peek().map(|d| d.f) else {
                return Ok(ParallelIter {
                    inner: Box::new(std::iter::empty()),
                });
            };
            let cluster = crew_redis::Cluster::new(config.clone())?;
            let opts = self.options(crew_core::Backend::workers(&cluster));
            let args = tasks.map(args_of::<F, A> as fn(Delayed<F, A>) -> A);
            return Ok(ParallelIter {
                inner: Box::new(lazy_on(cluster, Star(f), args, ordered, &opts)),
            });
        }
        let workers = resolve_n_jobs(self.n_jobs)?;
        let opts = self.options(workers);
        if workers == 1 {
            // Sequential, in the calling thread, as `run` with one job.
            let inner = tasks.enumerate().map(|(i, d)| call_here(i, d));
            return Ok(ParallelIter {
                inner: Box::new(inner),
            });
        }
        let inner: Box<dyn Iterator<Item = Result<R>>> = match self.prefer {
            Prefer::Threads => Box::new(lazy_on(
                Threads::new(workers)?,
                RunDelayed,
                tasks,
                ordered,
                &opts,
            )),
            Prefer::Processes => {
                // As in `run`: one function, only the arguments cross.
                let mut tasks = tasks.peekable();
                let Some(f) = tasks.peek().map(|d| d.f) else {
                    return Ok(ParallelIter {
                        inner: Box::new(std::iter::empty()),
                    });
                };
                let args = tasks.map(args_of::<F, A> as fn(Delayed<F, A>) -> A);
                Box::new(lazy_on(
                    Processes::new(workers)?,
                    Star(f),
                    args,
                    ordered,
                    &opts,
                ))
            }
        };
        Ok(ParallelIter { inner })
    }
}

/// The lazy results of [`Parallel::run_iter`] and
/// [`Parallel::run_unordered`]; dropping it stops the workers.
///
/// # Examples
///
/// ```
/// use crew::{Parallel, Prefer, delayed};
/// let mut results = Parallel::new()
///     .n_jobs(2)
///     .prefer(Prefer::Threads)
///     .run_iter((0..).map(|i| delayed(|x: u64| x * 3, (i,))))?; // an endless input
/// assert_eq!(results.next().unwrap()?, 0);
/// assert_eq!(results.next().unwrap()?, 3);
/// drop(results); // stops the workers; the rest never runs
/// # Ok::<(), crew::Error>(())
/// ```
pub struct ParallelIter<R> {
    inner: Box<dyn Iterator<Item = Result<R>>>,
}

impl<R> std::fmt::Debug for ParallelIter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelIter").finish_non_exhaustive()
    }
}

impl<R> Iterator for ParallelIter<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.inner.next()
    }
}

/// The arguments of a delayed call.
fn args_of<F, A>(d: Delayed<F, A>) -> A {
    d.args
}

fn run_on<B, T, X, R>(
    backend: B,
    task: T,
    items: Vec<X>,
    opts: &MapOptions,
) -> std::result::Result<Vec<R>, MapError<R>>
where
    B: for<'s> Runs<'s, T, X, R>,
    R: Send,
{
    let out = engine::map_blocking(&backend, task, items, opts);
    backend.terminate();
    out
}

fn lazy_on<B, T, I, R>(
    backend: B,
    task: T,
    items: I,
    ordered: bool,
    opts: &MapOptions,
) -> Imap<B, T, I, R>
where
    B: Runs<'static, T, I::Item, R>,
    T: Send + Sync + 'static,
    I: Iterator,
    I::Item: 'static,
    R: Send + 'static,
{
    let owned = Arc::new(Owned::new(backend, OnDrop::Terminate));
    Imap::new(owned, task, items, ordered, opts, None)
}

/// Runs one delayed call on this thread; a panic fails that call alone.
fn call_here<F, A, R>(index: usize, d: Delayed<F, A>) -> Result<R>
where
    Star<F>: Call<A, R>,
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| RunDelayed.call(d)))
        .map_err(|p| Error::from_panic(p).with_index(index))
}

fn run_serial<F, A, R>(
    tasks: Vec<Delayed<F, A>>,
    opts: &MapOptions,
) -> std::result::Result<Vec<R>, MapError<R>>
where
    Star<F>: Call<A, R>,
{
    let progress = opts
        .progress
        .clone()
        .map(|s| crew_core::Progress::start(s, &opts.label, Some(tasks.len())));
    let results: Vec<Result<R>> = tasks
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let r = call_here(i, d);
            if let Some(p) = &progress {
                p.advance(1);
            }
            r
        })
        .collect();
    if let Some(p) = progress {
        p.finish();
    }
    if results.iter().all(|r| r.is_ok()) {
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|_| unreachable!()))
            .collect())
    } else {
        Err(MapError::new(results))
    }
}
