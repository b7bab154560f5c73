//! The thread back-end: a fixed set of worker threads sharing one FIFO
//! injector queue. See `README.md` beside this file for the sleep protocol.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

#[cfg(not(loom))]
use crossbeam_deque::{Injector, Steal};

use crate::sync::thread;
use crate::sync::{AtomicU8, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, fence};
#[cfg(loom)]
use crate::sync::{Injector, Steal};

use crate::backend::{Backend, Runs};
use crate::call::Call;
use crate::engine::{Chunk, ChunkOut, ChunkSink, run_chunk_into};
use crate::error::{Error, Result};
use crate::slot::Promise;
use crate::spin::SpinWait;
use crate::timeline::Timeline;

#[cfg(all(test, loom))]
mod loom;
#[cfg(test)]
mod test;

/// A job of the thread back-end: a closure run on a worker thread.
///
/// A job runs once, or is dropped without running (the back-end was
/// terminated, or `cancel_pending` discarded it); a job built by [`Runs`]
/// then completes its result as cancelled.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Future, Runs, Star, ThreadJob, Threads};
///
/// let threads = Threads::new(1)?;
/// let (promise, future) = Future::pending();
/// let job: ThreadJob<'static> = threads.call_job(Star(|| "hi"), (), promise);
/// drop(job); // discarded without running
/// assert!(future.result().unwrap_err().is_cancelled());
/// # Ok::<(), crew::core::Error>(())
/// ```
pub struct ThreadJob<'s>(Repr<'s>);

/// A small job lives inline in the queue's slot: no allocation, and none
/// freed on another thread, which is what glibc's allocator charges most
/// for (submit with a boxed job: ~0.6 µs/task; inline: see the README).
enum Repr<'s> {
    Inline(InlineJob<'s>),
    Boxed(Box<dyn FnOnce(&WorkerCtx<'_>) + Send + 's>),
}

/// Room for a closure of up to six words (a call job: the task, its
/// arguments, the promise's pointer).
type InlineBytes = [std::mem::MaybeUninit<usize>; 6];

struct InlineJob<'s> {
    data: InlineBytes,
    /// Runs (and consumes) the closure stored in `data`.
    run: unsafe fn(*mut InlineBytes, &WorkerCtx<'_>),
    /// Drops the closure stored in `data` without running it.
    drop: unsafe fn(*mut InlineBytes),
    live: bool,
    _send: std::marker::PhantomData<Box<dyn Send + 's>>,
}

// SAFETY: the stored closure is `Send` (required by `ThreadJob::new`).
unsafe impl Send for InlineJob<'_> {}

impl InlineJob<'_> {
    fn run(mut self, ctx: &WorkerCtx<'_>) {
        self.live = false;
        // SAFETY: `data` holds a live closure of the type `run` was made for
        // (set in `ThreadJob::new`); clearing `live` first hands it over.
        unsafe { (self.run)(&mut self.data, ctx) };
    }
}

impl Drop for InlineJob<'_> {
    fn drop(&mut self) {
        if self.live {
            // SAFETY: as in `run`; the closure was never taken out.
            unsafe { (self.drop)(&mut self.data) };
        }
    }
}

impl std::fmt::Debug for ThreadJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadJob")
    }
}

impl<'s> ThreadJob<'s> {
    /// A job running `f` on a worker.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::mpsc;
    /// use crew::core::{Backend, ThreadJob, Threads};
    ///
    /// let threads = Threads::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// threads.spawn(ThreadJob::new(move |ctx| tx.send(ctx.worker * 10).unwrap())).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 0);
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn new<F: FnOnce(&WorkerCtx<'_>) + Send + 's>(f: F) -> ThreadJob<'s> {
        if std::mem::size_of::<F>() > std::mem::size_of::<InlineBytes>()
            || std::mem::align_of::<F>() > std::mem::align_of::<InlineBytes>()
        {
            return ThreadJob(Repr::Boxed(Box::new(f)));
        }
        unsafe fn run<F: FnOnce(&WorkerCtx<'_>)>(data: *mut InlineBytes, ctx: &WorkerCtx<'_>) {
            // SAFETY: the caller passes the bytes `new` wrote an `F` into,
            // once; reading moves the closure out.
            let f = unsafe { data.cast::<F>().read() };
            f(ctx)
        }
        unsafe fn drop_it<F>(data: *mut InlineBytes) {
            // SAFETY: as in `run`; the closure is dropped in place once.
            unsafe { data.cast::<F>().drop_in_place() }
        }
        let mut data: InlineBytes = [std::mem::MaybeUninit::uninit(); 6];
        // SAFETY: `F` fits in `data` and its alignment is at most
        // `usize`'s (checked above).
        unsafe { (&mut data as *mut InlineBytes).cast::<F>().write(f) };
        ThreadJob(Repr::Inline(InlineJob {
            data,
            run: run::<F>,
            drop: drop_it::<F>,
            live: true,
            _send: std::marker::PhantomData,
        }))
    }

    fn run(self, ctx: &WorkerCtx<'_>) {
        match self.0 {
            Repr::Inline(job) => job.run(ctx),
            Repr::Boxed(f) => f(ctx),
        }
    }
}

/// What a job knows about the worker running it.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::mpsc;
/// use crew::core::{Backend, ThreadJob, Threads, ThreadsConfig, WorkerCtx};
///
/// let threads = Threads::with_config(ThreadsConfig { workers: 1, timeline: true, ..Default::default() })?;
/// let (tx, rx) = mpsc::channel();
/// let job = ThreadJob::new(move |ctx: &WorkerCtx<'_>| tx.send((ctx.worker, ctx.timeline.is_some())).unwrap());
/// threads.spawn(job).unwrap();
/// assert_eq!(rx.recv().unwrap(), (0, true));
/// # Ok::<(), crew::core::Error>(())
/// ```
#[derive(Debug)]
pub struct WorkerCtx<'a> {
    /// The worker's index in its pool, from 0.
    pub worker: usize,
    /// The pool's timeline, if it keeps one.
    pub timeline: Option<&'a Timeline>,
}

/// Accepting jobs.
const OPEN: u8 = 0;
/// `close()`d: queued jobs run, then workers exit.
const CLOSED: u8 = 1;
/// `terminate()`d: queued jobs dropped, workers exit after their current job.
const TERMINATED: u8 = 2;

#[cfg(not(loom))]
thread_local! {
    /// The pool (address of its `Shared`) and index of the current worker.
    static CURRENT: Cell<(usize, usize)> = const { Cell::new((0, usize::MAX)) };
}

#[cfg(loom)]
::loom::thread_local! {
    /// As above; loom's threads share one OS thread.
    static CURRENT: Cell<(usize, usize)> = Cell::new((0, usize::MAX));
}

/// A pool of worker threads: the back-end of `Pool::threads` and
/// `Executor::threads`.
///
/// Cloning gives another handle to the same workers. The workers run until
/// [`close`](Backend::close) or [`terminate`](Backend::terminate), or until
/// the last handle is dropped, which closes the pool: queued jobs still run,
/// then the threads end. Nothing waits for them.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Backend, Future, Star, Threads, engine::spawn_call};
///
/// let threads = Threads::new(2)?;
/// let handle = threads.clone(); // the same two workers
/// let (promise, future) = Future::pending();
/// spawn_call(&handle, Star(|a: u64, b: u64| a * b), (6, 7), promise);
/// assert_eq!(future.result()?, 42);
///
/// threads.close();
/// assert!(handle.is_closed());
/// assert!(handle.join(None));
/// # Ok::<(), crew::core::Error>(())
/// ```
#[derive(Clone)]
pub struct Threads {
    shared: Arc<Shared>,
    /// Shared by the handles only (not the workers): when the last handle
    /// goes, the pool closes, so its threads end once the queue is drained.
    _handles: Arc<LastHandle>,
}

/// Closes the pool when dropped; see `Threads::_handles`.
struct LastHandle(Arc<Shared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        let _ = self
            .0
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire);
        let _st = lock(&self.0.sleep.state);
        self.0.sleep.cv.notify_all();
    }
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads")
            .field("workers", &self.shared.workers)
            .field("state", &self.shared.state.load(Ordering::Relaxed))
            .finish()
    }
}

struct Shared {
    injector: Injector<ThreadJob<'static>>,
    workers: usize,
    state: AtomicU8,
    /// Workers awake and looking for work (spinning before they sleep).
    searching: AtomicUsize,
    sleep: Sleep,
    alive: Mutex<usize>,
    exited: Condvar,
    timeline: Option<Arc<Timeline>>,
}

/// Idle workers sleep on a condition variable. `hint` mirrors the number of
/// sleepers so a submitter can skip the lock when nobody sleeps; `tokens`
/// counts wake-ups handed out, so a burst of submissions wakes each sleeper
/// once instead of making a syscall per job.
struct Sleep {
    hint: AtomicUsize,
    state: Mutex<SleepState>,
    cv: Condvar,
}

struct SleepState {
    sleeping: usize,
    tokens: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes a worker's state; see [`worker_state`](crate::worker_state).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::any::Any;
/// use std::sync::{Arc, mpsc};
/// use crew::core::{Backend, Initializer, ThreadJob, Threads, ThreadsConfig};
///
/// let init: Initializer = Arc::new(|| -> Arc<dyn Any + Send + Sync> { Arc::new(String::from("connection")) });
/// let threads = Threads::with_config(ThreadsConfig { workers: 1, initializer: Some(init), ..Default::default() })?;
/// let (tx, rx) = mpsc::channel();
/// threads.spawn(ThreadJob::new(move |_| tx.send(crew::core::worker_state::<String>()).unwrap())).unwrap();
/// assert_eq!(rx.recv().unwrap().unwrap().as_str(), "connection");
/// # Ok::<(), crew::core::Error>(())
/// ```
pub type Initializer = Arc<dyn Fn() -> Arc<dyn std::any::Any + Send + Sync> + Send + Sync>;

/// Options of a thread pool.
///
/// The default has 0 workers, which [`Threads::with_config`] refuses: set
/// `workers`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::mpsc;
/// use crew::core::{Backend, ThreadJob, Threads, ThreadsConfig};
///
/// let config = ThreadsConfig { workers: 2, name: Some("render".into()), ..Default::default() };
/// let threads = Threads::with_config(config)?;
/// let (tx, rx) = mpsc::channel();
/// threads.spawn(ThreadJob::new(move |_| tx.send(std::thread::current().name().map(String::from)).unwrap())).unwrap();
/// assert!(rx.recv().unwrap().unwrap().starts_with("render-"));
/// assert!(Threads::with_config(ThreadsConfig::default()).unwrap_err().is_invalid_input());
/// # Ok::<(), crew::core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ThreadsConfig {
    /// Number of workers (at least 1).
    pub workers: usize,
    /// Prefix of the worker threads' names (`crew-worker-0`, …).
    pub name: Option<String>,
    /// Stack size of each worker thread in bytes.
    pub stack_size: Option<usize>,
    /// Record a timeline of the tasks.
    pub timeline: bool,
    /// Runs once on each worker thread before its first task. If it
    /// panics, the panic is reported on stderr and the worker runs without
    /// state.
    pub initializer: Option<Initializer>,
}

impl std::fmt::Debug for ThreadsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadsConfig")
            .field("workers", &self.workers)
            .field("name", &self.name)
            .field("stack_size", &self.stack_size)
            .field("timeline", &self.timeline)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}

impl Threads {
    /// Starts `workers` threads.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Backend, Threads};
    /// let t = Threads::new(2).unwrap();
    /// assert_eq!(t.workers(), 2);
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for 0 workers; `is_io` if a thread cannot start.
    pub fn new(workers: usize) -> Result<Threads> {
        Threads::with_config(ThreadsConfig {
            workers,
            ..ThreadsConfig::default()
        })
    }

    /// Starts a pool as `config` says.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use crew::core::{Backend, Threads, ThreadsConfig};
    /// let t = Threads::with_config(ThreadsConfig { workers: 1, timeline: true, ..Default::default() }).unwrap();
    /// assert!(t.timeline().is_some());
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for 0 workers; `is_io` if a thread cannot start.
    pub fn with_config(config: ThreadsConfig) -> Result<Threads> {
        if config.workers == 0 {
            return Err(Error::invalid_input("a pool needs at least one worker"));
        }
        if config.stack_size == Some(0) {
            return Err(Error::invalid_input(
                "a worker thread's stack size must be more than zero bytes",
            ));
        }
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            workers: config.workers,
            state: AtomicU8::new(OPEN),
            searching: AtomicUsize::new(0),
            sleep: Sleep {
                hint: AtomicUsize::new(0),
                state: Mutex::new(SleepState {
                    sleeping: 0,
                    tokens: 0,
                }),
                cv: Condvar::new(),
            },
            alive: Mutex::new(0),
            exited: Condvar::new(),
            timeline: config.timeline.then(|| Arc::new(Timeline::new())),
        });
        let prefix = config.name.as_deref().unwrap_or("crew-worker");
        for index in 0..config.workers {
            let mut builder = thread::Builder::new().name(format!("{prefix}-{index}"));
            if let Some(size) = config.stack_size {
                builder = builder.stack_size(size);
            }
            let s = shared.clone();
            let init = config.initializer.clone();
            *lock(&shared.alive) += 1;
            if let Err(e) = builder.spawn(move || {
                if let Some(init) = init {
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init())) {
                        Ok(state) => crate::state::set_worker_state(state),
                        Err(p) => eprintln!(
                            "crew: the initializer of worker {index} panicked: {}",
                            Error::from_panic(p)
                        ),
                    }
                }
                worker_main(s, index)
            }) {
                *lock(&shared.alive) -= 1;
                let t = Threads {
                    _handles: Arc::new(LastHandle(shared.clone())),
                    shared,
                };
                t.terminate();
                return Err(Error::io("spawning a worker thread", e));
            }
        }
        Ok(Threads {
            _handles: Arc::new(LastHandle(shared.clone())),
            shared,
        })
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// The index of the calling thread if it is one of this pool's workers.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::mpsc;
    /// use crew::core::{Backend, ThreadJob, Threads};
    ///
    /// let threads = Threads::new(2)?;
    /// assert_eq!(threads.current_worker(), None); // the calling thread is not a worker
    /// let (tx, rx) = mpsc::channel();
    /// let t = threads.clone();
    /// threads.spawn(ThreadJob::new(move |ctx| tx.send((t.current_worker(), ctx.worker)).unwrap())).unwrap();
    /// let (seen, index) = rx.recv().unwrap();
    /// assert_eq!(seen, Some(index));
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn current_worker(&self) -> Option<usize> {
        let (pool, index) = CURRENT.with(|c| c.get());
        (pool == self.id()).then_some(index)
    }

    fn wake_one(&self) {
        self.shared.wake_one();
    }

    fn wake_all(&self) {
        let _st = lock(&self.shared.sleep.state);
        self.shared.sleep.cv.notify_all();
    }
}

impl Shared {
    fn wake_one(&self) {
        let sleep = &self.sleep;
        // Dekker pair with `worker_main`'s sleep: we published the job, then
        // read the sleeper count; a worker announces itself, then re-checks
        // the queue. SeqCst fences make at least one side see the other.
        fence(Ordering::SeqCst);
        // A worker that is awake and looking for work (or woken to look)
        // will take the job: waking another would only add a context
        // switch (as rayon does).
        if sleep.hint.load(Ordering::Relaxed) == 0 || self.searching.load(Ordering::Relaxed) > 0 {
            return;
        }
        let mut st = lock(&sleep.state);
        if st.sleeping > st.tokens {
            st.tokens += 1;
            sleep.hint.fetch_sub(1, Ordering::Relaxed);
            // The sleeper wakes searching: until it has looked at the
            // queue, further submissions wake nobody. It wakes the next
            // sleeper itself if it finds more work than its job, so a burst
            // of submissions wakes workers one after another, each from a
            // worker's CPU: a caller that queues a map and then sleeps
            // wakes one worker while its own CPU is still busy, and the
            // scheduler would have put every sleeper it woke at once onto
            // the other CPU, to share it for milliseconds while this one
            // idles.
            self.searching.fetch_add(1, Ordering::SeqCst);
            sleep.cv.notify_one();
        }
    }

    fn find_job(&self) -> Option<ThreadJob<'static>> {
        loop {
            match self.injector.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Empty => return None,
                Steal::Retry => std::hint::spin_loop(),
            }
        }
    }
}

/// Runs a job; a panic that escapes it (a job dropped unrun whose captures
/// panic on drop: jobs built by [`Runs`] catch their task's own panics)
/// is reported and the worker carries on, so a pool never loses a thread.
fn run_job(job: ThreadJob<'static>, ctx: &WorkerCtx<'_>) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(ctx))) {
        eprintln!(
            "crew: a job of worker {} panicked outside its task: {}",
            ctx.worker,
            Error::from_panic(p)
        );
    }
}

fn worker_main(shared: Arc<Shared>, index: usize) {
    CURRENT.with(|c| c.set((Arc::as_ptr(&shared) as usize, index)));
    let ctx = WorkerCtx {
        worker: index,
        timeline: shared.timeline.as_deref(),
    };
    // An idle worker looks for work for a while (`SpinWait`'s budget) before
    // it sleeps; only one worker searches at a time.
    let mut spin = SpinWait::new();
    let mut searching = false;
    loop {
        // BUSY: run whatever is queued.
        if let Some(job) = shared.find_job() {
            if searching {
                searching = false;
                shared.searching.fetch_sub(1, Ordering::SeqCst);
                // Submitters saw us searching and woke nobody; if more work
                // waits, it needs another worker now that we are busy.
                if !shared.injector.is_empty() {
                    shared.wake_one();
                }
            }
            run_job(job, &ctx);
            spin.reset();
            continue;
        }
        // SHUTDOWN: closed and drained, or terminated.
        if shared.state.load(Ordering::Acquire) != OPEN && shared.injector.is_empty() {
            break;
        }
        // IDLE: spin and yield briefly (a job is often microseconds away),
        // counted as searching so submitters need not wake anyone, then
        // sleep until a submitter hands us a wake-up token.
        // One searcher is enough: it takes the next job; a second would
        // only burn the CPU the submitter needs.
        if !spin.is_spent() && (searching || shared.searching.load(Ordering::Relaxed) == 0) {
            if !searching {
                searching = true;
                shared.searching.fetch_add(1, Ordering::SeqCst);
            }
            if spin.spin() {
                continue;
            }
        }
        if searching {
            searching = false;
            shared.searching.fetch_sub(1, Ordering::SeqCst);
        }
        let sleep = &shared.sleep;
        let mut st = lock(&sleep.state);
        st.sleeping += 1;
        sleep.hint.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if shared.injector.is_empty() && shared.state.load(Ordering::Acquire) == OPEN {
            loop {
                st = sleep.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                if st.tokens > 0 {
                    // Woken on purpose: the waker already took us off `hint`
                    // and counted us as searching.
                    st.tokens -= 1;
                    st.sleeping -= 1;
                    searching = true;
                    break;
                }
                if shared.state.load(Ordering::Acquire) != OPEN {
                    st.sleeping -= 1;
                    sleep.hint.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                // Spurious wake-up: sleep again.
            }
        } else {
            st.sleeping -= 1;
            sleep.hint.fetch_sub(1, Ordering::Relaxed);
        }
        drop(st);
        spin.reset();
    }
    if searching {
        shared.searching.fetch_sub(1, Ordering::SeqCst);
    }
    let mut alive = lock(&shared.alive);
    *alive -= 1;
    shared.exited.notify_all();
}

impl Backend for Threads {
    type Job<'s> = ThreadJob<'s>;

    fn workers(&self) -> usize {
        self.shared.workers
    }

    unsafe fn execute<'s>(&self, job: Self::Job<'s>) -> std::result::Result<(), Self::Job<'s>> {
        if self.shared.state.load(Ordering::Acquire) != OPEN {
            return Err(job);
        }
        // SAFETY: the caller guarantees (see `Backend::execute`) that what the
        // job borrows for `'s` outlives the job's run or drop; erasing the
        // lifetime only lets it sit in our `'static` queue meanwhile.
        let job: ThreadJob<'static> =
            unsafe { std::mem::transmute::<ThreadJob<'s>, ThreadJob<'static>>(job) };
        self.shared.injector.push(job);
        self.wake_one();
        Ok(())
    }

    fn close(&self) {
        let _ =
            self.shared
                .state
                .compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire);
        self.wake_all();
    }

    fn is_closed(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) != OPEN
    }

    fn cancel_pending(&self) -> usize {
        let mut n = 0;
        while let Some(job) = self.shared.find_job() {
            drop(job);
            n += 1;
        }
        n
    }

    fn terminate(&self) {
        self.shared.state.store(TERMINATED, Ordering::Release);
        self.cancel_pending();
        self.wake_all();
    }

    fn join(&self, deadline: Option<Instant>) -> bool {
        if self.current_worker().is_some() {
            // A worker cannot wait for itself to exit.
            return false;
        }
        let mut alive = lock(&self.shared.alive);
        while *alive > 0 {
            alive = match crate::engine::wait_deadline(&self.shared.exited, alive, deadline) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
        true
    }

    fn help(&self) -> bool {
        let Some(worker) = self.current_worker() else {
            return false;
        };
        match self.shared.find_job() {
            Some(job) => {
                let ctx = WorkerCtx {
                    worker,
                    timeline: self.shared.timeline.as_deref(),
                };
                run_job(job, &ctx);
                true
            }
            None => false,
        }
    }

    fn timeline(&self) -> Option<&Arc<Timeline>> {
        self.shared.timeline.as_ref()
    }
}

/// A single call in flight: fields drop in order, so the task and its
/// input are gone before the promise (the last field) completes.
struct CallJob<T, X, R: Send> {
    task: Option<T>,
    input: Option<X>,
    promise: Promise<Result<R>>,
}

/// A chunk in flight; same drop order rule as [`CallJob`].
struct ChunkJob<'s, T, X, R> {
    task: Option<Arc<T>>,
    chunk: Option<Chunk<X>>,
    sink: ChunkSink<'s, R>,
}

impl<'s, T, X, R> Runs<'s, T, X, R> for Threads
where
    T: Call<X, R> + Send + Sync + 's,
    X: Send + 's,
    R: Send + 's,
{
    fn call_job(&self, task: T, input: X, promise: Promise<Result<R>>) -> ThreadJob<'s> {
        // Only the call's number is kept (its name is looked up when it
        // runs): with the task, its input and the promise, the job then
        // fits inline in the queue for small tasks and inputs.
        let number = self.shared.timeline.as_ref().map(|t| t.next_call());
        let mut job = CallJob {
            task: Some(task),
            input: Some(input),
            promise,
        };
        ThreadJob::new(move |ctx| {
            if !job.promise.start() {
                return;
            }
            let task = job.task.take().expect("job runs once");
            let input = job.input.take().expect("job runs once");
            let name = ctx
                .timeline
                .map(|_| task.name().and_then(crate::task_name).unwrap_or("call"));
            let start = ctx.timeline.map(|_| Instant::now());
            // The task is dropped inside the guard: what it captured may
            // panic on drop, which fails the task, not its worker.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let value = task.call(input);
                drop(task);
                value
            }))
            .map_err(|p| Error::from_panic(p).with_worker(ctx.worker));
            if let (Some(t), Some(start), Some(number), Some(name)) =
                (ctx.timeline, start, number, name)
            {
                t.record(ctx.worker, number, name, start, Instant::now());
            }
            let CallJob { promise, .. } = job;
            promise.complete(outcome);
        })
    }

    fn chunk_job(&self, task: Arc<T>, chunk: Chunk<X>, sink: ChunkSink<'s, R>) -> ThreadJob<'s> {
        let mut job = ChunkJob {
            task: Some(task),
            chunk: Some(chunk),
            sink,
        };
        ThreadJob::new(move |ctx| {
            if job.sink.is_cancelled() {
                return;
            }
            let task = job.task.take().expect("job runs once");
            let chunk = job.chunk.take().expect("job runs once");
            let dest = job.sink.take_dest();
            let out = run_chunk_into(&*task, chunk, ctx.worker, ctx.timeline, dest);
            // As in `call_job`: a task that panics on drop fails its chunk
            // (values already written in place are leaked, never read).
            let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                drop(task)
            })) {
                Ok(()) => out,
                Err(p) => ChunkOut::failed(out.len(), Error::from_panic(p).with_worker(ctx.worker)),
            };
            let ChunkJob { sink, .. } = job;
            sink.deliver(out);
        })
    }
}
