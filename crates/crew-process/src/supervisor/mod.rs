//! The parent side of a process pool: one *proxy* thread per worker slot
//! spawns its worker, feeds it jobs from the shared queue (many frames per
//! write), reads results, notices death at once (socket EOF), attributes it
//! to the task that was running (the control page says which), restarts the
//! worker, and re-queues what the dead worker had not finished. See
//! `README.md` beside this file for the protocol and the rules.
//!
//! Here: the jobs, the pool's shared state (queue, slots, shutdown) and the
//! proxy thread's outer loop; `conn` drives one worker incarnation through
//! its phases; `settle` reaps a dead worker and decides its jobs' fate.

#[cfg(test)]
mod completion_tests;
mod conn;
mod settle;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wake_tests;

use conn::Conn;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use rustix::event::{PollFd, PollFlags};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crew_core::{Error, MarkKind, Timeline};

use crate::spawn::{has_exited, kill_group, spawn_worker};
use crate::wire::Payload;

/// A job's owner-side half: how its outcome reaches the caller. Every
/// method delivers at most once; dropping an undelivered completion reports
/// the task cancelled.
pub(crate) trait Completion: Send {
    /// Marks the task running; false if it was cancelled while queued.
    fn start(&mut self) -> bool;
    /// Installs the hook `Future::cancel` calls while the task runs.
    fn set_interrupt(&mut self, _hook: Option<Arc<dyn Fn() + Send + Sync>>) {}
    /// True once a cancel of the running task was asked for (the hook
    /// then ran).
    fn cancel_requested(&self) -> bool {
        false
    }
    /// The job goes back to the queue (its worker died before running it,
    /// or it will be retried): it is pending again, and cancellable as such.
    fn requeued(&mut self) {}
    /// The worker's output for the job; spans go to `timeline` if kept.
    fn finish(&mut self, output: &[u8], worker: usize, timeline: Option<&Timeline>);
    /// The whole job failed.
    fn fail(&mut self, error: Error);
    /// The job was stopped on request (its worker killed).
    fn cancelled(&mut self);
    /// Lets go of memory kept for the result that only a caller waiting
    /// for the job needs (see `CallCompletion::spare`).
    fn drop_spare(&mut self) {}
    /// The worker died while running item `item` of the job. Returns true
    /// if the job should run again with the (rewritten) `payload`: the items
    /// not done, and the failed one too if `retry`.
    fn lost(&mut self, payload: &mut Payload, item: usize, error: Error, retry: bool) -> bool;
}

/// A job's [`Completion`]: kept in the job itself when it is small (a
/// call's is a promise and a few words), so that a submit allocates
/// nothing for it; boxed otherwise.
pub(crate) struct CompletionBox<'s>(CompletionRepr<'s>);

enum CompletionRepr<'s> {
    Inline(InlineCompletion<'s>),
    Boxed(Box<dyn Completion + 's>),
}

/// Room for a completion of up to seven words (a call's takes seven; one
/// word more would take a job past 128 bytes, beyond which moving it is a
/// call to `memcpy`).
const COMPLETION_WORDS: usize = 7;
type CompletionBytes = [std::mem::MaybeUninit<usize>; COMPLETION_WORDS];

struct InlineCompletion<'s> {
    data: CompletionBytes,
    /// Views `data` (which holds the completion `new` stored) as the trait
    /// object; computed from the current address, so the job may move.
    view: unsafe fn(*mut CompletionBytes) -> *mut (dyn Completion + 's),
}

// SAFETY: `data` holds a `Completion`, which is `Send`.
unsafe impl Send for InlineCompletion<'_> {}

impl Drop for InlineCompletion<'_> {
    fn drop(&mut self) {
        // SAFETY: `data` holds the completion `new` stored (never moved
        // out), dropped here once.
        unsafe { (self.view)(&mut self.data).drop_in_place() }
    }
}

impl<'s> CompletionBox<'s> {
    pub(crate) fn new<C: Completion + 's>(c: C) -> CompletionBox<'s> {
        if std::mem::size_of::<C>() > std::mem::size_of::<CompletionBytes>()
            || std::mem::align_of::<C>() > std::mem::align_of::<CompletionBytes>()
        {
            return CompletionBox(CompletionRepr::Boxed(Box::new(c)));
        }
        unsafe fn view<'s, C: Completion + 's>(
            data: *mut CompletionBytes,
        ) -> *mut (dyn Completion + 's) {
            data.cast::<C>()
        }
        let mut data: CompletionBytes = [std::mem::MaybeUninit::uninit(); COMPLETION_WORDS];
        // SAFETY: `C` fits in `data` and its alignment is at most `usize`'s
        // (checked above).
        unsafe { (&mut data as *mut CompletionBytes).cast::<C>().write(c) };
        CompletionBox(CompletionRepr::Inline(InlineCompletion {
            data,
            view: view::<'s, C>,
        }))
    }
}

impl CompletionBox<'_> {
    /// True if the completion lives in the job itself.
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, CompletionRepr::Inline(_))
    }
}

impl<'s> std::ops::Deref for CompletionBox<'s> {
    type Target = dyn Completion + 's;

    fn deref(&self) -> &(dyn Completion + 's) {
        match &self.0 {
            // SAFETY: `data` holds the completion (see `new`); `view` only
            // casts the pointer, and the shared borrow of `self` covers it.
            CompletionRepr::Inline(i) => unsafe {
                &*(i.view)(std::ptr::from_ref(&i.data).cast_mut())
            },
            CompletionRepr::Boxed(b) => &**b,
        }
    }
}

impl std::ops::DerefMut for CompletionBox<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.0 {
            // SAFETY: as in `deref`, under the exclusive borrow of `self`.
            CompletionRepr::Inline(i) => unsafe { &mut *(i.view)(&mut i.data) },
            CompletionRepr::Boxed(b) => &mut **b,
        }
    }
}

/// A job of the process back-end: a trampoline offset, the encoded input,
/// and where the outcome goes. Built by the back-end's `Runs` impl; opaque
/// to everyone else.
///
/// # Examples
///
/// ```
/// use crew_core::{Backend, Future, Runs, Star};
/// let p = crew_process::Processes::new(1)?;
/// let (promise, future) = Future::pending();
/// let job: crew_process::ProcJob<'static> = p.call_job(Star(|x: u8| x + 1), (1,), promise);
/// p.spawn(job).unwrap();
/// assert_eq!(future.result()?, 2);
/// # Ok::<(), crew_core::Error>(())
/// ```
pub struct ProcJob<'s> {
    pub(crate) entry: u64,
    pub(crate) payload: Payload,
    pub(crate) completion: Option<CompletionBox<'s>>,
    pub(crate) attempt: u32,
    /// Was in flight when its worker garbled the stream, with others: it
    /// runs again alone, so that if it was the one, it is the one blamed.
    pub(crate) suspect: bool,
    /// Its caller blocks on it (`apply`) but found no idle worker to drive
    /// itself: once it is done, its proxy parks at once rather than watch
    /// the queue, so that the caller's next call finds the worker idle.
    pub(crate) caller_waits: bool,
    /// What only some jobs have, boxed: a job is moved several times on
    /// its way and a million of them may wait in the queue, so it is kept
    /// small (128 bytes).
    pub(crate) extra: Option<Box<JobExtra>>,
}

/// The rarer parts of a [`ProcJob`].
#[derive(Default)]
pub(crate) struct JobExtra {
    /// Not to run before then (a retry's backoff).
    pub(crate) not_before: Option<Instant>,
    /// This job's own limits, overriding the pool's (a cluster node runs
    /// jobs of many callers, each with its own settings).
    pub(crate) limits: Option<JobLimits>,
    /// The shared-memory regions whose handles the payload names: kept
    /// until the job is done, so that a worker can open them even if the
    /// caller moved its only handle into the task.
    pub(crate) _held: Option<crew_shm::Held>,
}

impl JobExtra {
    /// The extra of a job whose payload names the regions `held` (none if
    /// it names none).
    pub(crate) fn holding(held: crew_shm::Held) -> Option<Box<JobExtra>> {
        (!held.is_empty()).then(|| {
            Box::new(JobExtra {
                _held: Some(held),
                ..JobExtra::default()
            })
        })
    }
}

/// Per-job overrides of a pool's timeout and retries, for jobs that come
/// from elsewhere (see `remote`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JobLimits {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    /// Record when each item ran, for the caller's timeline.
    pub(crate) spans: bool,
}

impl std::fmt::Debug for ProcJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcJob")
            .field("entry", &self.entry)
            .field("bytes", &self.payload.bytes().len())
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl<'s> ProcJob<'s> {
    /// See [`Completion::drop_spare`].
    pub(crate) fn drop_spare(&mut self) {
        if let Some(c) = &mut self.completion {
            c.drop_spare();
        }
    }

    pub(crate) fn new(
        entry: u64,
        payload: Payload,
        completion: impl Completion + 's,
    ) -> ProcJob<'s> {
        ProcJob {
            entry,
            payload,
            completion: Some(CompletionBox::new(completion)),
            attempt: 0,
            suspect: false,
            caller_waits: false,
            extra: None,
        }
    }

    /// A job whose outcome was already delivered (its input failed to
    /// encode); running it does nothing.
    pub(crate) fn settled() -> ProcJob<'s> {
        ProcJob {
            entry: 0,
            payload: Payload::default(),
            completion: None,
            attempt: 0,
            suspect: false,
            caller_waits: false,
            extra: None,
        }
    }

    /// The job's own limits, if it has any.
    pub(crate) fn limits(&self) -> Option<JobLimits> {
        self.extra.as_ref().and_then(|e| e.limits)
    }

    /// When the job may run again, if it waits for a retry's backoff.
    pub(crate) fn not_before(&self) -> Option<Instant> {
        self.extra.as_ref().and_then(|e| e.not_before)
    }

    /// Sets [`not_before`](ProcJob::not_before) (boxing the extra only
    /// for a time).
    pub(crate) fn set_not_before(&mut self, t: Option<Instant>) {
        match (&mut self.extra, t) {
            (Some(e), t) => e.not_before = t,
            (None, None) => {}
            (None, Some(t)) => {
                self.extra = Some(Box::new(JobExtra {
                    not_before: Some(t),
                    ..JobExtra::default()
                }))
            }
        }
    }

    fn completion(&mut self) -> &mut (dyn Completion + 's) {
        self.completion
            .as_deref_mut()
            .expect("a queued job has a completion")
    }
}

/// Options of a process pool.
///
/// # Examples
///
/// ```
/// let config = crew_process::ProcessConfig { workers: 4, max_tasks_per_child: Some(100), ..Default::default() };
/// assert_eq!(config.retries, 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProcessConfig {
    /// Number of workers (at least 1).
    pub workers: usize,
    /// Kill a worker whose current task (or chunk item) runs longer.
    pub task_timeout: Option<Duration>,
    /// Replace a worker after it ran this many jobs.
    pub max_tasks_per_child: Option<usize>,
    /// Re-run a task whose worker died (or timed out) up to this many times.
    pub retries: u32,
    /// Wait before the first retry; doubles with each further attempt.
    pub retry_backoff: Duration,
    /// Address-space limit of each worker, in bytes (`RLIMIT_AS`).
    pub memory_limit: Option<u64>,
    /// Record a timeline of the jobs.
    pub timeline: bool,
    /// Runs in each new worker before its first task: the offset of an
    /// initializer trampoline and its encoded arguments (see
    /// `Processes::initializer`).
    pub initializer: Option<(u64, Vec<u8>)>,
}

impl ProcessConfig {
    /// Checks every numeric setting, as Python raises `ValueError` for
    /// `Pool(0)` or `maxtasksperchild=0`.
    fn validate(&self) -> Result<(), Error> {
        if self.workers == 0 {
            return Err(Error::invalid_input("a pool needs at least one worker"));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::invalid_input(
                "max_tasks_per_child must be at least 1",
            ));
        }
        if self.task_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_input(
                "a task timeout must be longer than zero",
            ));
        }
        if self.memory_limit == Some(0) {
            return Err(Error::invalid_input(
                "a memory limit must be more than zero bytes",
            ));
        }
        Ok(())
    }
}

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const TERMINATED: u8 = 2;

/// After this many workers in a row fail to start, the pool fails its
/// queued jobs instead of respawning forever (Python's pool loops here).
const MAX_START_FAILURES: u32 = 3;
/// A worker that has not said hello by then is considered failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Target queue depth per worker, in time: enough queued work to hide a
/// round trip, little enough that a long task does not strand others.
const TARGET_QUEUE_TIME: Duration = Duration::from_micros(500);
const MAX_IN_FLIGHT: usize = 1024;
/// A partial frame that makes no progress this long while its worker is
/// idle is garbage.
const STALLED_FRAME: Duration = Duration::from_secs(1);
/// How long a proxy looks for its worker's answer before sleeping.
const SPIN: Duration = Duration::from_micros(15);
/// How long the one watching idle proxy looks for new work before sleeping.
const IDLE_WATCH: Duration = Duration::from_micros(60);
/// The sequence number of a worker's initializer run.
const INIT_SEQ: u64 = u64::MAX;

struct Queue {
    jobs: VecDeque<ProcJob<'static>>,
    delayed: Vec<ProcJob<'static>>,
    idle: Vec<usize>,
    /// The slot whose proxy was taken off `idle` and woken to look at the
    /// queue, and has not looked yet (README, "Waking proxies"): while
    /// there is one, a submission wakes nobody, since that proxy will see
    /// the job and wake the next. There is at most one.
    searcher: Option<usize>,
    broken: Option<Error>,
    start_failures: u32,
}

pub(crate) struct Proxy {
    wake: OwnedFd,
    /// Set by the interrupt hook: some task in flight asked to be
    /// cancelled (`Completion::cancel_requested` says which).
    cancels: std::sync::atomic::AtomicBool,
    /// The interrupt hook of this slot's tasks: one for all of them, made
    /// once, so sending a task allocates none.
    hook: std::sync::OnceLock<Arc<dyn Fn() + Send + Sync>>,
    /// Set by an idle proxy: take back the jobs your worker has not
    /// started, so that the idle worker runs them.
    steal: std::sync::atomic::AtomicBool,
    /// Jobs in flight to this proxy's worker, for idle proxies to look at.
    backlog: std::sync::atomic::AtomicUsize,
    /// The sequence number of the next job sent to this slot's workers.
    next_seq: std::sync::atomic::AtomicU64,
    /// The worker this proxy drives (`None` between incarnations). The proxy
    /// holds the lock except while it sleeps with its worker idle; then a
    /// blocking caller may take it and drive one exchange itself
    /// (`Shared::submit_blocking`).
    conn: Mutex<Option<Conn>>,
}

/// What a proxy's worker slot holds: read by `terminate` (which kills and
/// waits for every worker) and `worker_pids`. Changed under `Shared::pids`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// No worker.
    Empty,
    /// The proxy is starting a worker.
    Starting,
    /// A worker runs with this pid, which also names its process group.
    /// Not yet reaped, so anyone holding the lock may signal it.
    Running(u32),
    /// The proxy is reaping this worker: the pid may be freed any moment,
    /// so nobody else signals it.
    Reaping(u32),
}

/// How long `terminate` (and so dropping a pool) waits for the killed
/// workers to exit: a killed process exits within milliseconds; this only
/// bounds a machine in trouble.
const REAP_LIMIT: Duration = Duration::from_secs(10);

pub(crate) struct Shared {
    pub(crate) config: ProcessConfig,
    /// One entry per proxy; see [`Slot`]. Taken before `queue`, never after.
    pids: Mutex<Vec<Slot>>,
    pids_changed: Condvar,
    queue: Mutex<Queue>,
    /// Mirrors `queue.jobs.len()`, so a spinning proxy can look without
    /// taking the lock.
    queued: std::sync::atomic::AtomicUsize,
    /// Mirrors `queue.delayed.len()`, for the same reason.
    delayed: std::sync::atomic::AtomicUsize,
    /// 1 while an idle proxy is watching the queue (see `IDLE_WATCH`).
    idle_watchers: std::sync::atomic::AtomicUsize,
    state: AtomicU8,
    proxies: Vec<Proxy>,
    alive: Mutex<usize>,
    exited: Condvar,
    pub(crate) timeline: Option<Arc<Timeline>>,
    fingerprint: u64,
    /// Exchanges driven by a blocking caller, so tests can tell that path
    /// was taken.
    #[cfg(test)]
    caller_exchanges: std::sync::atomic::AtomicUsize,
    /// Proxies woken by a submission, and by a proxy that found more
    /// queued than it takes (the chain).
    #[cfg(test)]
    submit_wakes: std::sync::atomic::AtomicUsize,
    #[cfg(test)]
    chain_wakes: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes an idle proxy off the list to wake, as searching, unless one is
/// searching already (it will wake the next if there is more than it
/// takes); the caller signals the proxy returned once the lock is let go.
fn wake_searcher(q: &mut Queue) -> Option<usize> {
    if q.searcher.is_some() {
        return None;
    }
    let slot = q.idle.pop()?;
    q.searcher = Some(slot);
    Some(slot)
}

fn take_all(q: &mut Queue) -> Vec<ProcJob<'static>> {
    // (`queued` may briefly over-count: a spinning proxy then takes the lock
    // and finds nothing, which is harmless.)
    let mut jobs: Vec<_> = q.jobs.drain(..).collect();
    jobs.append(&mut q.delayed);
    jobs
}

fn eventfd() -> std::io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

fn signal(fd: &OwnedFd) {
    // A full counter (2^64 - 2 pending wake-ups) cannot happen; a failed
    // write would only mean the proxy is already being woken.
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

fn drain(fd: &OwnedFd) {
    let mut v = [0u8; 8];
    let _ = rustix::io::read(fd, &mut v);
}

/// `poll(2)` with a timeout in milliseconds (negative: none); interrupted
/// or failed polls return early, and callers re-check their state.
pub(crate) fn poll_ms(fds: &mut [rustix::event::PollFd<'_>], ms: i32) {
    let timeout = (ms >= 0).then(|| rustix::event::Timespec {
        tv_sec: (ms / 1000) as _,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    });
    let _ = rustix::event::poll(fds, timeout.as_ref());
}

impl Shared {
    pub(crate) fn start(config: ProcessConfig) -> Result<Arc<Shared>, Error> {
        config.validate()?;
        let workers = config.workers;
        crate::forkserver::pool_created();
        let proxies = (0..config.workers)
            .map(|slot| {
                Ok(Proxy {
                    wake: eventfd()?,
                    cancels: std::sync::atomic::AtomicBool::new(false),
                    hook: std::sync::OnceLock::new(),
                    steal: std::sync::atomic::AtomicBool::new(false),
                    backlog: std::sync::atomic::AtomicUsize::new(0),
                    next_seq: std::sync::atomic::AtomicU64::new(((slot as u64 + 1) << 40) + 1),
                    conn: Mutex::new(None),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("creating an eventfd", e))?;
        let shared = Arc::new(Shared {
            timeline: config.timeline.then(|| Arc::new(Timeline::new())),
            pids: Mutex::new(vec![Slot::Empty; config.workers]),
            pids_changed: Condvar::new(),
            config,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                delayed: Vec::new(),
                // Room for every proxy: parking allocates nothing.
                idle: Vec::with_capacity(workers),
                searcher: None,
                broken: None,
                start_failures: 0,
            }),
            queued: std::sync::atomic::AtomicUsize::new(0),
            delayed: std::sync::atomic::AtomicUsize::new(0),
            idle_watchers: std::sync::atomic::AtomicUsize::new(0),
            state: AtomicU8::new(OPEN),
            proxies,
            alive: Mutex::new(0),
            exited: Condvar::new(),
            fingerprint: crate::entry::build_fingerprint(),
            #[cfg(test)]
            caller_exchanges: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            submit_wakes: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            chain_wakes: std::sync::atomic::AtomicUsize::new(0),
        });
        for slot in 0..shared.config.workers {
            let s = shared.clone();
            *lock(&shared.alive) += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("crew-proxy-{slot}"))
                .spawn(move || proxy_main(s, slot));
            if let Err(e) = spawned {
                *lock(&shared.alive) -= 1;
                shared.terminate();
                return Err(Error::io("spawning a proxy thread", e));
            }
        }
        Ok(shared)
    }

    pub(crate) fn workers(&self) -> usize {
        self.config.workers
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) != OPEN
    }

    /// Queues `job`; gives it back (boxed: a job is large, and this is the
    /// rare path) if the pool is closed.
    pub(crate) fn submit(&self, mut job: ProcJob<'static>) -> Result<(), Box<ProcJob<'static>>> {
        if job.completion.is_none() {
            return Ok(());
        }
        let mut q = lock(&self.queue);
        if self.is_closed() {
            return Err(Box::new(job));
        }
        if let Some(e) = &q.broken {
            let e = e.clone();
            drop(q);
            job.completion().fail(e);
            return Ok(());
        }
        q.jobs.push_back(job);
        self.queued.store(q.jobs.len(), Ordering::Release);
        let idle = wake_searcher(&mut q);
        drop(q);
        if let Some(slot) = idle {
            #[cfg(test)]
            self.submit_wakes.fetch_add(1, Ordering::Relaxed);
            signal(&self.proxies[slot].wake);
        }
        Ok(())
    }

    /// Queues a job whose caller waits for it at once (`apply`). When a
    /// worker is idle and nothing else is queued, the caller drives the
    /// exchange itself (`Conn::exchange`) instead of waking that worker's
    /// proxy, which would relay the job and wake the caller in turn: two
    /// thread wake-ups, each up to ~60 µs on an idle vCPU here. Otherwise,
    /// or if that worker's proxy is busy, the job is queued as by `submit`.
    pub(crate) fn submit_blocking(
        self: &Arc<Self>,
        job: ProcJob<'static>,
    ) -> Result<(), Box<ProcJob<'static>>> {
        if job.completion.is_none() || PROXY_OF.with(|p| p.get()) == Arc::as_ptr(self) as usize {
            // A proxy (running a done-callback) keeps to the queue: it holds
            // its own connection.
            return self.submit(job);
        }
        let mut q = lock(&self.queue);
        if self.state.load(Ordering::Acquire) != OPEN || q.broken.is_some() || !q.jobs.is_empty() {
            drop(q);
            return self.submit(job);
        }
        let Some(slot) = q.idle.pop() else {
            drop(q);
            let mut job = job;
            job.caller_waits = true;
            return self.submit(job);
        };
        drop(q);
        let proxy = &self.proxies[slot];
        let mut guard = match proxy.conn.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(conn) = guard.as_mut().and_then(|g| g.as_mut())
            && conn.can_lend()
        {
            #[cfg(test)]
            self.caller_exchanges.fetch_add(1, Ordering::Relaxed);
            let clean = conn.exchange(self, job);
            // Back on the idle list (under the connection's lock, as the
            // proxy parks), or the proxy takes over.
            let mut q = lock(&self.queue);
            if clean && q.jobs.is_empty() && self.state.load(Ordering::Acquire) == OPEN {
                if !q.idle.contains(&slot) {
                    q.idle.push(slot);
                }
                drop(q);
            } else {
                drop(q);
                signal(&proxy.wake);
            }
            drop(guard);
            return Ok(());
        }
        drop(guard);
        // The proxy is awake (or its worker busy): queue the job, and wake
        // the proxy taken off the idle list.
        let mut job = job;
        job.caller_waits = true;
        let mut q = lock(&self.queue);
        q.jobs.push_back(job);
        self.queued.store(q.jobs.len(), Ordering::Release);
        drop(q);
        signal(&proxy.wake);
        Ok(())
    }

    fn pop(&self) -> Option<ProcJob<'static>> {
        let mut q = lock(&self.queue);
        if !q.delayed.is_empty() {
            let now = Instant::now();
            let mut i = 0;
            while i < q.delayed.len() {
                if q.delayed[i].not_before().is_none_or(|t| t <= now) {
                    let job = q.delayed.swap_remove(i);
                    q.jobs.push_front(job);
                } else {
                    i += 1;
                }
            }
        }
        let job = q.jobs.pop_front();
        self.queued.store(q.jobs.len(), Ordering::Release);
        self.delayed.store(q.delayed.len(), Ordering::Release);
        job
    }

    fn next_delay(&self) -> Option<Duration> {
        if self.delayed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let q = lock(&self.queue);
        let now = Instant::now();
        q.delayed
            .iter()
            .filter_map(|j| j.not_before())
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    /// Parks `slot` as idle unless work is queued; true if parked.
    fn park_idle(&self, slot: usize) -> bool {
        let mut q = lock(&self.queue);
        if !q.jobs.is_empty() {
            return false;
        }
        if !q.idle.contains(&slot) {
            q.idle.push(slot);
        }
        true
    }

    /// `slot` is idle with nothing queued: ask every proxy whose worker
    /// holds jobs it has not started to give them back.
    fn request_steal(&self, slot: usize) {
        for (i, p) in self.proxies.iter().enumerate() {
            if i != slot
                && p.backlog.load(Ordering::Acquire) >= 2
                && !p.steal.swap(true, Ordering::AcqRel)
            {
                signal(&p.wake);
            }
        }
    }

    /// `slot` woke up after parking. If it was woken to look at the queue,
    /// it looks now: if anything is queued, it wakes the next idle proxy
    /// itself (the chain; README, "Waking proxies"), even if it may take
    /// all that is queued: it may send the last job ahead to its worker,
    /// behind a running one, and the next proxy, finding nothing, parks
    /// and takes that job back (`request_steal`).
    fn unpark(&self, slot: usize) {
        let mut q = lock(&self.queue);
        q.idle.retain(|&s| s != slot);
        let mut next = None;
        if q.searcher == Some(slot) {
            q.searcher = None;
            if !q.jobs.is_empty() {
                next = wake_searcher(&mut q);
            }
        }
        drop(q);
        if let Some(next) = next {
            #[cfg(test)]
            self.chain_wakes.fetch_add(1, Ordering::Relaxed);
            signal(&self.proxies[next].wake);
        }
    }

    /// Puts `jobs` (oldest first) back at the front of the queue.
    fn requeue_front<I>(&self, jobs: I)
    where
        I: IntoIterator<Item = ProcJob<'static>>,
        I::IntoIter: DoubleEndedIterator,
    {
        let mut q = lock(&self.queue);
        for job in jobs.into_iter().rev() {
            if job.not_before().is_some() {
                q.delayed.push(job);
            } else {
                q.jobs.push_front(job);
            }
        }
        self.queued.store(q.jobs.len(), Ordering::Release);
        self.delayed.store(q.delayed.len(), Ordering::Release);
        // Woken under the lock (an eventfd write each), so the idle list
        // keeps its memory.
        for slot in q.idle.drain(..) {
            signal(&self.proxies[slot].wake);
        }
        drop(q);
    }

    fn wake_all(&self) {
        for p in &self.proxies {
            signal(&p.wake);
        }
    }

    pub(crate) fn close(&self) {
        let _ = self
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire);
        self.wake_all();
    }

    pub(crate) fn cancel_pending(&self) -> usize {
        let mut q = lock(&self.queue);
        let jobs = take_all(&mut q);
        drop(q);
        let n = jobs.len();
        drop(jobs);
        n
    }

    /// Stops the pool now: queued jobs are cancelled, and every worker is
    /// killed with its process group; returns once they have all exited
    /// (their proxies reap them), or after [`REAP_LIMIT`]. Never waits for
    /// a task: it kills it.
    pub(crate) fn terminate(&self) {
        {
            // Under the lock: a proxy that has not yet marked its slot
            // `Starting` sees the state and starts nothing.
            let _pids = lock(&self.pids);
            self.state.store(TERMINATED, Ordering::Release);
        }
        self.cancel_pending();
        self.wake_all();
        self.kill_and_wait(Instant::now() + REAP_LIMIT);
    }

    /// Kills every running worker's group and waits until each has exited
    /// or `deadline` passes. A worker counts as exited once it no longer
    /// runs, reaped or not, so this never waits on a proxy thread (which
    /// may be the caller, in a callback).
    fn kill_and_wait(&self, deadline: Instant) {
        let mut pids = lock(&self.pids);
        loop {
            let mut waiting = false;
            for slot in pids.iter() {
                match *slot {
                    Slot::Empty => {}
                    Slot::Starting => waiting = true,
                    Slot::Running(pid) => {
                        kill_group(pid);
                        waiting |= !has_exited(pid);
                    }
                    Slot::Reaping(pid) => waiting |= !has_exited(pid),
                }
            }
            let now = Instant::now();
            if !waiting || now >= deadline {
                return;
            }
            let step = (now + Duration::from_millis(1)).min(deadline);
            pids = match crew_core::engine::wait_deadline(&self.pids_changed, pids, Some(step)) {
                Ok(g) | Err(g) => g,
            };
        }
    }

    fn set_slot(&self, slot: usize, value: Slot) {
        lock(&self.pids)[slot] = value;
        self.pids_changed.notify_all();
    }

    /// The pids of the workers running now, in proxy order.
    ///
    /// A worker that has exited but whose proxy has not yet marked it (as
    /// right after `terminate`, which returns once the processes are gone)
    /// is left out: holding the lock keeps its pid unreaped, so the check
    /// cannot see a recycled pid.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        lock(&self.pids)
            .iter()
            .filter_map(|s| match *s {
                Slot::Running(pid) if !has_exited(pid) => Some(pid),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        if PROXY_OF.with(|p| p.get()) == self as *const Shared as usize {
            // A proxy (running a done-callback) cannot wait for itself.
            return false;
        }
        let mut alive = lock(&self.alive);
        while *alive > 0 {
            alive = match crew_core::engine::wait_deadline(&self.exited, alive, deadline) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
        true
    }

    fn start_failed(&self, error: Error) {
        let mut q = lock(&self.queue);
        q.start_failures += 1;
        if q.start_failures < MAX_START_FAILURES {
            return;
        }
        let e = Error::worker_lost(format!("workers fail to start: {}", error.detail()));
        q.broken = Some(e.clone());
        let jobs = take_all(&mut q);
        drop(q);
        for mut job in jobs {
            if let Some(c) = job.completion.as_deref_mut() {
                c.fail(e.clone());
            }
        }
    }

    fn started(&self) {
        let mut q = lock(&self.queue);
        q.start_failures = 0;
        q.broken = None;
    }

    /// The hook `Future::cancel` calls on a task of `slot` while it runs
    /// (after marking it `cancel_requested`): the proxy looks for such
    /// tasks among those in flight (`Conn::on_cancel`).
    fn interrupt_hook(self: &Arc<Self>, slot: usize) -> Arc<dyn Fn() + Send + Sync> {
        self.proxies[slot]
            .hook
            .get_or_init(|| {
                let weak: Weak<Shared> = Arc::downgrade(self);
                Arc::new(move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.proxies[slot].cancels.store(true, Ordering::Release);
                        signal(&shared.proxies[slot].wake);
                    }
                })
            })
            .clone()
    }
}

thread_local! {
    /// The address of the `Shared` whose proxy this thread is (0: none).
    static PROXY_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn proxy_main(shared: Arc<Shared>, slot: usize) {
    PROXY_OF.with(|p| p.set(Arc::as_ptr(&shared) as usize));
    let mut spawned = false;
    loop {
        {
            let mut pids = lock(&shared.pids);
            let state = shared.state.load(Ordering::Acquire);
            if state == TERMINATED {
                break;
            }
            if state == CLOSED
                && lock(&shared.queue).jobs.is_empty()
                && lock(&shared.queue).delayed.is_empty()
            {
                break;
            }
            pids[slot] = Slot::Starting;
        }
        let started = match spawn_worker(shared.config.memory_limit, true) {
            Ok(worker) => {
                shared.set_slot(slot, Slot::Running(worker.child.id()));
                if let (Some(t), true) = (&shared.timeline, spawned) {
                    t.mark(
                        slot,
                        MarkKind::Restart,
                        format!("pid {}", worker.child.id()),
                    );
                }
                spawned = true;
                conn::drive(&shared, Conn::new(&shared, slot, worker))
            }
            Err(e) => {
                shared.set_slot(slot, Slot::Empty);
                shared.start_failed(Error::io("starting a worker process", e));
                false
            }
        };
        if !started && shared.state.load(Ordering::Acquire) != TERMINATED {
            // Back off: 50 ms, doubling; once the pool gave up (its tasks
            // fail at once), try again only every 2 s. Wakes on terminate.
            let failures = lock(&shared.queue).start_failures;
            let pause = if failures >= MAX_START_FAILURES {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(50 << failures.min(5))
            };
            let wake = &shared.proxies[slot].wake;
            let mut pfd = [PollFd::new(wake, PollFlags::IN)];
            poll_ms(&mut pfd, pause.as_millis() as i32);
            drain(wake);
        }
    }
    let mut alive = lock(&shared.alive);
    *alive -= 1;
    shared.exited.notify_all();
}
