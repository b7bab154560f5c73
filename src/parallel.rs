//! `Parallel` and `delayed`: joblib's interface.

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crew_core::engine::{OnDrop, Owned};
use crew_core::{
    Call, Error, Imap, MapError, MapOptions, ProgressStyle, Result, Runs, Star, Threads,
    resolve_n_jobs,
};
use crew_process::{NonCapturing, ProcessConfig, Processes};

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
/// ([`Prefer::Threads`]); a capturing closure is a compile error, with
/// the message "a process task cannot capture its environment … pass the
/// data as an argument", as on [`Pool::processes`](crate::Pool::processes):
/// `cargo check` reports a closure that moves in a value that is not
/// `Copy`; one that borrows or copies in a value is reported by `cargo
/// build` and `cargo test` (not by `cargo check`, which stops before that
/// check runs).
///
/// ```compile_fail,E0277
/// use crew::{Parallel, delayed};
/// let prefix = String::from("n=");
/// let calls = (0..4).map(|x: u32| {
///     let prefix = prefix.clone();
///     delayed(move |x: u32| format!("{prefix}{x}"), (x,))
/// });
/// let out = Parallel::new().run(calls)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Pass the data as an argument instead:
///
/// ```
/// use crew::{Parallel, delayed};
/// let prefix = String::from("n=");
/// let calls = (0..2).map(|x: u32| delayed(|p: String, x: u32| format!("{p}{x}"), (prefix.clone(), x)));
/// assert_eq!(Parallel::new().n_jobs(2).run(calls)?, ["n=0", "n=1"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    timeout: Option<Duration>,
    pre_dispatch: Option<usize>,
    every_outcome: bool,
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
            timeout: None,
            pre_dispatch: None,
            every_outcome: false,
        }
    }

    /// Fails the run when a call runs longer than `timeout` (joblib's
    /// `timeout`): on processes the worker running it is killed and the
    /// call fails with `is_timeout()` (on a cluster, on its node); on
    /// threads, which cannot be stopped, the run fails with `is_timeout()`
    /// when no call has finished for `timeout`, and the call goes on in
    /// the background. Ignored with
    /// `n_jobs(1)`, as in joblib.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use crew::{Parallel, delayed};
    /// let nap = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    /// let err = Parallel::new().n_jobs(2).timeout(Duration::from_millis(100))
    ///     .run([delayed(nap, (0,)), delayed(nap, (10_000,))])
    ///     .unwrap_err();
    /// assert!(err.first().is_timeout()); // the 10-second nap was killed
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Parallel {
        self.timeout = Some(timeout);
        self
    }

    /// How many batches are dispatched ahead of the results (joblib's
    /// `pre_dispatch`; default `2 * n_jobs`): the input is read as the
    /// calls finish, so producing the calls and running them interleave
    /// and memory stays bounded. `usize::MAX` dispatches everything at once
    /// (joblib's `"all"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, Prefer, delayed};
    /// // An endless input: only what is taken, plus a few batches, is read.
    /// let first: Vec<u64> = Parallel::new().n_jobs(2).prefer(Prefer::Threads).pre_dispatch(4)
    ///     .run_iter((0..).map(|i| delayed(|x: u64| x * x, (i,))))?
    ///     .take(3)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4]);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn pre_dispatch(mut self, batches: usize) -> Parallel {
        self.pre_dispatch = Some(batches);
        self
    }

    /// Runs every call even when some fail, and reports every outcome
    /// (a [`MapError`] holding each call's result or error). By default,
    /// as in joblib, the first error ends the run: it is returned at once,
    /// the calls not yet started are dropped and, on processes, the calls
    /// running are killed.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::{Parallel, Prefer, delayed};
    /// let check = |x: u32| if x == 2 { panic!("two") } else { x };
    /// let calls = || (0..5).map(|i| delayed(check, (i,)));
    /// let p = Parallel::new().n_jobs(2).prefer(Prefer::Threads);
    /// // By default: the first error alone.
    /// assert_eq!(p.clone().run(calls()).unwrap_err().first().index(), Some(2));
    /// // Every outcome: the others ran too.
    /// let all = p.every_outcome(true).run(calls()).unwrap_err();
    /// assert_eq!(all.len(), 5);
    /// assert_eq!(all.failed(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn every_outcome(mut self, on: bool) -> Parallel {
        self.every_outcome = on;
        self
    }

    /// Checks the numeric settings, as joblib raises `ValueError`.
    fn check(&self) -> Result<()> {
        if self.batch_size == BatchSize::Fixed(0) {
            return Err(Error::invalid_input("batch_size must be at least 1"));
        }
        if self.pre_dispatch == Some(0) {
            return Err(Error::invalid_input("pre_dispatch must be at least 1"));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_input("a timeout must be longer than zero"));
        }
        Ok(())
    }

    /// The workers for `hint` calls, and the window of batches.
    fn sizes(&self, workers: usize, hint: (usize, Option<usize>)) -> (usize, usize) {
        let workers = match hint.1 {
            Some(hi) => workers.min(hi.max(1)),
            None => workers,
        };
        let window = self.pre_dispatch.unwrap_or(2 * workers);
        (workers, window)
    }

    /// Takes the progress reporting out of `opts` (the lazy map would
    /// count without a total) and starts it with the total, if known.
    fn progress_of(
        &self,
        opts: &mut MapOptions,
        (lo, hi): (usize, Option<usize>),
    ) -> Option<crew_core::Progress> {
        let total = (hi == Some(lo)).then_some(lo);
        opts.progress
            .take()
            .map(|style| crew_core::Progress::start(style, &opts.label, total))
    }

    fn processes(&self, workers: usize) -> Result<Processes> {
        Processes::with_config(ProcessConfig {
            workers,
            task_timeout: self.timeout,
            ..ProcessConfig::default()
        })
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
    /// assert!(err.to_string().contains("n_jobs=0 leaves no worker"));
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

    /// The cluster's settings with this run's: a call's `timeout` kills the
    /// worker process running it on its node, as on processes.
    fn cluster_config(&self, config: &crew_redis::ClusterConfig) -> crew_redis::ClusterConfig {
        match self.timeout {
            Some(t) => config.clone().task_timeout(t),
            None => config.clone(),
        }
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
                BatchSize::Fixed(n) => Some(n),
            },
            progress,
            label,
        }
    }

    /// Runs every call and returns the results in order.
    ///
    /// The input is read as the calls finish (see
    /// [`pre_dispatch`](Parallel::pre_dispatch)); the first call to fail
    /// ends the run, as in joblib, unless
    /// [`every_outcome`](Parallel::every_outcome) is set.
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
    /// A [`MapError`] whose only error is the first call's failure (or,
    /// with `every_outcome`, holding every call's outcome); one whose only
    /// error is `is_timeout` when a call ran too long (see
    /// [`timeout`](Parallel::timeout)); `is_invalid_input` for a bad
    /// `n_jobs`, `batch_size`, `pre_dispatch` or `timeout`; `is_io` if the
    /// workers could not start.
    pub fn run<F, A, R>(
        &self,
        tasks: impl IntoIterator<Item = Delayed<F, A>>,
    ) -> std::result::Result<Vec<R>, MapError<R>>
    where
        Star<F>: Call<A, R>,
        F: NonCapturing + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check()?;
        let tasks = tasks.into_iter();
        if let Some(config) = &self.cluster {
            let mut tasks = tasks.peekable();
            let Some(f) = tasks.peek().map(|d| d.f) else {
                return Ok(Vec::new());
            };
            let cluster = crew_redis::Cluster::new(self.cluster_config(config))?;
            let workers = crew_core::Backend::workers(&cluster);
            let mut opts = self.options(workers);
            let progress = self.progress_of(&mut opts, tasks.size_hint());
            let window = self.pre_dispatch.unwrap_or(2 * workers);
            let args = tasks.map(args_of::<F, A>).enumerate();
            let it = lazy_on(cluster, Indexed(Star(f)), args, false, &opts, window);
            return gather(it, None, progress, self.every_outcome);
        }
        let workers = resolve_n_jobs(self.n_jobs)?;
        let mut opts = self.options(workers);
        let (lo, hi) = tasks.size_hint();
        let progress = self.progress_of(&mut opts, (lo, hi));
        if workers == 1 {
            let calls = tasks
                .enumerate()
                .map(|(i, d)| call_here(i, d).map(|r| (i, r)));
            return gather(Serial(calls), None, progress, self.every_outcome);
        }
        let (workers, window) = self.sizes(workers, (lo, hi));
        match self.prefer {
            Prefer::Threads => {
                let it = lazy_on(
                    Threads::new(workers)?,
                    Indexed(RunDelayed),
                    tasks.enumerate(),
                    false,
                    &opts,
                    window,
                );
                gather(it, self.timeout, progress, self.every_outcome)
            }
            Prefer::Processes => {
                // Every call has the same zero-sized function (the process
                // back-end refuses any other), so the pool runs that one
                // function and only the arguments cross.
                let mut tasks = tasks.peekable();
                let Some(f) = tasks.peek().map(|d| d.f) else {
                    return Ok(Vec::new());
                };
                let args = tasks.map(args_of::<F, A>).enumerate();
                let it = lazy_on(
                    self.processes(workers)?,
                    Indexed(Star(f)),
                    args,
                    false,
                    &opts,
                    window,
                );
                // A call's timeout kills its worker; the call fails alone.
                gather(it, None, progress, self.every_outcome)
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
        F: NonCapturing + Send + Sync + 'static,
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
        F: NonCapturing + Send + Sync + 'static,
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
        F: NonCapturing + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check()?;
        let tasks = tasks.into_iter();
        let stop = !self.every_outcome;
        if let Some(config) = &self.cluster {
            let mut tasks = tasks.peekable();
            let Some(f) = tasks.peek().map(|d| d.f) else {
                return Ok(ParallelIter::new(
                    Box::new(Serial(std::iter::empty())),
                    None,
                    stop,
                ));
            };
            let cluster = crew_redis::Cluster::new(self.cluster_config(config))?;
            let workers = crew_core::Backend::workers(&cluster);
            let opts = self.options(workers);
            let window = self.pre_dispatch.unwrap_or(2 * workers);
            let args = tasks.map(args_of::<F, A> as fn(Delayed<F, A>) -> A);
            let it = lazy_on(cluster, Star(f), args, ordered, &opts, window);
            return Ok(ParallelIter::new(Box::new(it), None, stop));
        }
        let workers = resolve_n_jobs(self.n_jobs)?;
        let opts = self.options(workers);
        if workers == 1 {
            // Sequential, in the calling thread, as `run` with one job.
            let inner = Serial(tasks.enumerate().map(|(i, d)| call_here(i, d)));
            return Ok(ParallelIter::new(Box::new(inner), None, stop));
        }
        let (workers, window) = self.sizes(workers, tasks.size_hint());
        let inner: Box<dyn Pull<R>> = match self.prefer {
            Prefer::Threads => {
                let it = lazy_on(
                    Threads::new(workers)?,
                    RunDelayed,
                    tasks,
                    ordered,
                    &opts,
                    window,
                );
                return Ok(ParallelIter::new(Box::new(it), self.timeout, stop));
            }
            Prefer::Processes => {
                // As in `run`: one function, only the arguments cross.
                let mut tasks = tasks.peekable();
                let Some(f) = tasks.peek().map(|d| d.f) else {
                    return Ok(ParallelIter::new(
                        Box::new(Serial(std::iter::empty())),
                        None,
                        stop,
                    ));
                };
                let args = tasks.map(args_of::<F, A> as fn(Delayed<F, A>) -> A);
                Box::new(lazy_on(
                    self.processes(workers)?,
                    Star(f),
                    args,
                    ordered,
                    &opts,
                    window,
                ))
            }
        };
        Ok(ParallelIter::new(inner, None, stop))
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
    inner: Option<Box<dyn Pull<R>>>,
    /// Threads only: how long to wait for the next result.
    timeout: Option<Duration>,
    /// End after the first error (dropping `inner` stops the workers).
    stop_on_error: bool,
}

impl<R> ParallelIter<R> {
    fn new(inner: Box<dyn Pull<R>>, timeout: Option<Duration>, stop_on_error: bool) -> Self {
        ParallelIter {
            inner: Some(inner),
            timeout,
            stop_on_error,
        }
    }
}

impl<R> std::fmt::Debug for ParallelIter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelIter").finish_non_exhaustive()
    }
}

impl<R> Iterator for ParallelIter<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        let next = self.inner.as_mut()?.pull(self.timeout);
        match &next {
            // The first error ends the results (joblib raises it); a wait
            // that timed out (no index: no call's own error) always does.
            Some(Err(e)) if self.stop_on_error || e.index().is_none() => self.inner = None,
            None => self.inner = None,
            _ => {}
        }
        next
    }
}

/// A source of results that can wait with a bound: the lazy map, or calls
/// run one after another on this thread.
trait Pull<R> {
    fn pull(&mut self, timeout: Option<Duration>) -> Option<Result<R>>;
}

impl<B, T, I, R> Pull<R> for Imap<B, T, I, R>
where
    B: Runs<'static, T, I::Item, R>,
    T: Send + Sync + 'static,
    I: Iterator,
    I::Item: 'static,
    R: Send + 'static,
{
    fn pull(&mut self, timeout: Option<Duration>) -> Option<Result<R>> {
        match timeout {
            Some(t) => self.next_timeout(t),
            None => self.next(),
        }
    }
}

/// Calls run on this thread (`n_jobs(1)`): no timeout, as in joblib.
struct Serial<I>(I);

impl<R, I: Iterator<Item = Result<R>>> Pull<R> for Serial<I> {
    fn pull(&mut self, _timeout: Option<Duration>) -> Option<Result<R>> {
        self.0.next()
    }
}

/// A task that returns its input's position with its result, so that
/// results gathered as they finish can be put back in order.
#[derive(Clone, Copy, Debug, Default)]
struct Indexed<T>(T);

impl<T: Call<X, R>, X, R> Call<(usize, X), (usize, R)> for Indexed<T> {
    fn call(&self, (i, x): (usize, X)) -> (usize, R) {
        (i, self.0.call(x))
    }

    fn name(&self) -> Option<&'static str> {
        self.0.name()
    }
}

/// Collects `(position, result)`s as they finish into input order. The
/// first error ends it unless `every_outcome`; a wait that timed out
/// (threads) always does. Returning drops `source`, which stops the
/// workers: calls not started are dropped, running ones killed on
/// processes.
fn gather<R>(
    mut source: impl Pull<(usize, R)>,
    timeout: Option<Duration>,
    progress: Option<crew_core::Progress>,
    every_outcome: bool,
) -> std::result::Result<Vec<R>, MapError<R>> {
    let mut slots: Vec<Option<Result<R>>> = Vec::new();
    let mut failed = false;
    let outcome = loop {
        let (i, outcome) = match source.pull(timeout) {
            None => break Ok(()),
            Some(Ok((i, r))) => (i, Ok(r)),
            Some(Err(e)) => match e.index() {
                Some(i) if every_outcome => {
                    failed = true;
                    (i, Err(e))
                }
                _ => break Err(e),
            },
        };
        if slots.len() <= i {
            slots.resize_with(i + 1, || None);
        }
        slots[i] = Some(outcome);
        if let Some(p) = &progress {
            p.advance(1);
        }
    };
    drop(source);
    if let Some(p) = progress {
        p.finish();
    }
    if let Err(e) = outcome {
        return Err(MapError::from(e));
    }
    let results = slots
        .into_iter()
        .map(|s| s.expect("every call has an outcome"));
    if failed {
        Err(MapError::new(results.collect()))
    } else {
        Ok(results
            .map(|r| r.unwrap_or_else(|_| unreachable!("no call failed")))
            .collect())
    }
}

/// The arguments of a delayed call.
fn args_of<F, A>(d: Delayed<F, A>) -> A {
    d.args
}

fn lazy_on<B, T, I, R>(
    backend: B,
    task: T,
    items: I,
    ordered: bool,
    opts: &MapOptions,
    window: usize,
) -> Imap<B, T, I, R>
where
    B: Runs<'static, T, I::Item, R>,
    T: Send + Sync + 'static,
    I: Iterator,
    I::Item: 'static,
    R: Send + 'static,
{
    let owned = Arc::new(Owned::new(backend, OnDrop::Terminate));
    Imap::new(owned, task, items, ordered, opts, None).with_window(window)
}

/// Runs one delayed call on this thread; a panic fails that call alone.
fn call_here<F, A, R>(index: usize, d: Delayed<F, A>) -> Result<R>
where
    Star<F>: Call<A, R>,
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| RunDelayed.call(d)))
        .map_err(|p| Error::from_panic(p).with_index(index))
}
