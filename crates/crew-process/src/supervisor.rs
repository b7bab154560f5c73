//! The parent side of a process pool: one *proxy* thread per worker slot
//! spawns its worker, feeds it jobs from the shared queue (many frames per
//! write), reads results, notices death at once (socket EOF), attributes it
//! to the task that was running (the control page says which), restarts the
//! worker, and re-queues what the dead worker had not finished. See
//! `README.md` beside this file for the protocol and the rules.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crew_core::{Error, MarkKind, Timeline};

use crate::spawn::{Spawned, describe_exit, has_exited, kill_group, spawn_worker};
use crate::wire::{self, Fields, Inbox, Outbox, Payload, Read};
use crate::worker::{FLAG_SPANS, FLAG_TIMED, monotonic_ns};

/// A job's owner-side half: how its outcome reaches the caller. Every
/// method delivers at most once; dropping an undelivered completion reports
/// the task cancelled.
pub(crate) trait Completion: Send {
    /// Marks the task running; false if it was cancelled while queued.
    fn start(&mut self) -> bool;
    /// Installs the hook `Future::cancel` calls while the task runs.
    fn set_interrupt(&mut self, _hook: Option<Arc<dyn Fn() + Send + Sync>>) {}
    /// The job goes back to the queue (its worker died before running it,
    /// or it will be retried): it is pending again, and cancellable as such.
    fn requeued(&mut self) {}
    /// The worker's output for the job; spans go to `timeline` if kept.
    fn finish(&mut self, output: &[u8], worker: usize, timeline: Option<&Timeline>);
    /// The whole job failed.
    fn fail(&mut self, error: Error);
    /// The job was stopped on request (its worker killed).
    fn cancelled(&mut self);
    /// The worker died while running item `item` of the job. Returns true
    /// if the job should run again with the (rewritten) `payload`: the items
    /// not done, and the failed one too if `retry`.
    fn lost(&mut self, payload: &mut Payload, item: usize, error: Error, retry: bool) -> bool;
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
    pub(crate) completion: Option<Box<dyn Completion + 's>>,
    pub(crate) attempt: u32,
    pub(crate) not_before: Option<Instant>,
    /// Was in flight when its worker garbled the stream, with others: it
    /// runs again alone, so that if it was the one, it is the one blamed.
    pub(crate) suspect: bool,
    /// This job's own limits, overriding the pool's (a cluster node runs
    /// jobs of many callers, each with its own settings).
    pub(crate) limits: Option<JobLimits>,
    /// The shared-memory regions whose handles the payload names: kept
    /// until the job is done, so that a worker can open them even if the
    /// caller moved its only handle into the task.
    pub(crate) _held: Option<Box<crew_shm::Held>>,
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
    pub(crate) fn new(
        entry: u64,
        payload: Payload,
        completion: Box<dyn Completion + 's>,
    ) -> ProcJob<'s> {
        ProcJob {
            entry,
            payload,
            completion: Some(completion),
            attempt: 0,
            not_before: None,
            suspect: false,
            limits: None,
            _held: None,
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
            not_before: None,
            suspect: false,
            limits: None,
            _held: None,
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
    broken: Option<Error>,
    start_failures: u32,
}

pub(crate) struct Proxy {
    wake: OwnedFd,
    kills: Mutex<Vec<u64>>,
    /// Set by an idle proxy: take back the jobs your worker has not
    /// started, so that the idle worker runs them.
    steal: std::sync::atomic::AtomicBool,
    /// Jobs in flight to this proxy's worker, for idle proxies to look at.
    backlog: std::sync::atomic::AtomicUsize,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let proxies = (0..config.workers)
            .map(|_| {
                Ok(Proxy {
                    wake: eventfd()?,
                    kills: Mutex::new(Vec::new()),
                    steal: std::sync::atomic::AtomicBool::new(false),
                    backlog: std::sync::atomic::AtomicUsize::new(0),
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
                idle: Vec::new(),
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

    pub(crate) fn submit(&self, mut job: ProcJob<'static>) -> Result<(), ProcJob<'static>> {
        if job.completion.is_none() {
            return Ok(());
        }
        let mut q = lock(&self.queue);
        if self.is_closed() {
            return Err(job);
        }
        if let Some(e) = &q.broken {
            let e = e.clone();
            drop(q);
            job.completion().fail(e);
            return Ok(());
        }
        q.jobs.push_back(job);
        self.queued.store(q.jobs.len(), Ordering::Release);
        let idle = q.idle.pop();
        drop(q);
        if let Some(slot) = idle {
            signal(&self.proxies[slot].wake);
        }
        Ok(())
    }

    fn pop(&self) -> Option<ProcJob<'static>> {
        let mut q = lock(&self.queue);
        if !q.delayed.is_empty() {
            let now = Instant::now();
            let mut i = 0;
            while i < q.delayed.len() {
                if q.delayed[i].not_before.is_none_or(|t| t <= now) {
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
            .filter_map(|j| j.not_before)
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

    fn unpark(&self, slot: usize) {
        lock(&self.queue).idle.retain(|&s| s != slot);
    }

    fn requeue_front(&self, jobs: Vec<ProcJob<'static>>) {
        let mut q = lock(&self.queue);
        for job in jobs.into_iter().rev() {
            if job.not_before.is_some() {
                q.delayed.push(job);
            } else {
                q.jobs.push_front(job);
            }
        }
        self.queued.store(q.jobs.len(), Ordering::Release);
        self.delayed.store(q.delayed.len(), Ordering::Release);
        let idle: Vec<usize> = std::mem::take(&mut q.idle);
        drop(q);
        for slot in idle {
            signal(&self.proxies[slot].wake);
        }
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

    fn interrupt_hook(self: &Arc<Self>, slot: usize, seq: u64) -> Arc<dyn Fn() + Send + Sync> {
        let weak: Weak<Shared> = Arc::downgrade(self);
        Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                lock(&shared.proxies[slot].kills).push(seq);
                signal(&shared.proxies[slot].wake);
            }
        })
    }
}

thread_local! {
    /// The address of the `Shared` whose proxy this thread is (0: none).
    static PROXY_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn proxy_main(shared: Arc<Shared>, slot: usize) {
    PROXY_OF.with(|p| p.set(Arc::as_ptr(&shared) as usize));
    let mut seq = ((slot as u64 + 1) << 40) + 1;
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
                drive(&shared, slot, worker, &mut seq)
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

/// Why the parent killed a worker.
enum Kill {
    Timeout,
    Cancelled,
    Terminated,
    Protocol(String),
}

struct InFlight {
    seq: u64,
    /// The job's number in this worker's life (from 1; see `Control::claim`).
    number: u64,
    job: ProcJob<'static>,
    sent: Instant,
}

fn set_nonblocking(fd: &OwnedFd) {
    let _ = rustix::io::ioctl_fionbio(fd, true);
}

/// Jobs longer than this are sent one at a time (nothing is gained by
/// sending ahead); shorter ones are sent at least two at a time, so the
/// worker never waits for the parent between them. A job sent ahead that a
/// long one holds up is taken back when another worker idles (`STEAL` in
/// `drive`; README, "The rule").
const LONG_JOB: Duration = Duration::from_millis(5);

fn allowance(avg: Option<Duration>) -> usize {
    match avg {
        None => 1,
        Some(d) if d.is_zero() => MAX_IN_FLIGHT,
        Some(d) if d >= LONG_JOB => 1,
        Some(d) => ((TARGET_QUEUE_TIME.as_nanos() / d.as_nanos()) as usize).clamp(2, MAX_IN_FLIGHT),
    }
}

/// Runs one worker incarnation until it exits or dies, then settles its
/// jobs; true if the worker got through its handshake. See the README for
/// each state.
fn drive(shared: &Arc<Shared>, slot: usize, mut worker: Spawned, seq: &mut u64) -> bool {
    set_nonblocking(&worker.sock);
    let sock = worker.sock.as_fd();
    let proxy = &shared.proxies[slot];
    let timeout_ns = shared.config.task_timeout.map(|t| t.as_nanos() as u64);
    let mut inbox = Inbox::new();
    let mut outbox = Outbox::default();
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut hello = false;
    let spawned_at = Instant::now();
    let mut stopping = false;
    let mut sent_jobs = 0usize;
    let mut kill: Option<Kill> = None;
    let mut cancel_wanted: Vec<u64> = Vec::new();
    let mut avg: Option<Duration> = None;
    let mut last_done = Instant::now();
    let mut dead = false;
    // Results read but not yet decoded: the next jobs go out first, so the
    // worker does not wait while we decode.
    let mut finished: Vec<(ProcJob<'static>, wire::Frame)> = Vec::new();
    let mut partial_since: Option<Instant> = None;
    // A suspect job is in flight alone; nothing else is sent until it ends.
    let mut isolating = false;
    let mut exited = false;
    // The last job taken back from the worker, until it has reached it:
    // nothing new is sent meanwhile, or the worker would skip it too.
    let mut taken_back: Option<u64> = None;

    while !dead {
        // TOP UP: hand queued jobs to the worker, up to its allowance.
        if hello
            && !stopping
            && kill.is_none()
            && taken_back.is_none()
            && shared.state.load(Ordering::Acquire) != TERMINATED
        {
            let limit = allowance(avg);
            while inflight.len() < limit && !isolating {
                let Some(mut job) = shared.pop() else { break };
                if job.suspect {
                    if !inflight.is_empty() {
                        // A suspect runs alone: wait until the pipe is empty.
                        shared.requeue_front(vec![job]);
                        break;
                    }
                    isolating = true;
                }
                // The hook goes in before the task is marked running, so a
                // `cancel()` that sees it running always finds the hook.
                let s = *seq;
                *seq += 1;
                job.completion()
                    .set_interrupt(Some(shared.interrupt_hook(slot, s)));
                if !job.completion().start() {
                    continue;
                }
                let mut head = [0u8; 17];
                head[..8].copy_from_slice(&s.to_le_bytes());
                head[8..16].copy_from_slice(&job.entry.to_le_bytes());
                let limits = job.limits.unwrap_or_default();
                head[16] = if timeout_ns.is_some() || limits.timeout.is_some() {
                    FLAG_TIMED
                } else {
                    0
                } | if shared.timeline.is_some() || limits.spans {
                    FLAG_SPANS
                } else {
                    0
                };
                if let Err(e) =
                    outbox.push_payload(wire::RUN, wire::RUN_SHM, &head, job.payload.as_ref())
                {
                    job.completion()
                        .fail(Error::io("sending a task through shared memory", e));
                    continue;
                }
                sent_jobs += 1;
                inflight.push_back(InFlight {
                    seq: s,
                    number: sent_jobs as u64,
                    job,
                    sent: Instant::now(),
                });
                if shared
                    .config
                    .max_tasks_per_child
                    .is_some_and(|m| sent_jobs >= m)
                {
                    let _ = outbox.push(wire::STOP, wire::STOP, &[], &[]);
                    stopping = true;
                    break;
                }
            }
        }
        // SHUTDOWN (orderly): closed, nothing queued, nothing in flight.
        if hello
            && !stopping
            && inflight.is_empty()
            && shared.state.load(Ordering::Acquire) == CLOSED
            && lock(&shared.queue).jobs.is_empty()
        {
            let _ = outbox.push(wire::STOP, wire::STOP, &[], &[]);
            stopping = true;
        }
        proxy.backlog.store(inflight.len(), Ordering::Release);
        if !outbox.is_empty() && outbox.flush(sock).is_err() {
            dead = true;
            continue;
        }
        deliver(&mut finished, slot, shared.timeline.as_deref());
        // IDLE: wait for the worker, a wake-up, or the next deadline.
        // Wake up in time for whatever must be checked without an event:
        // timeouts, the handshake deadline, a pending cancel (the task may
        // start any moment), a stalled partial frame, a delayed retry.
        let mut wait: Option<u64> = None;
        let mut cap = |ms: u64| wait = Some(wait.map_or(ms, |w: u64| w.min(ms)));
        if !inflight.is_empty()
            && (timeout_ns.is_some()
                || inflight
                    .iter()
                    .any(|f| f.job.limits.is_some_and(|l| l.timeout.is_some())))
        {
            cap(10);
        }
        if !hello {
            cap(100);
        }
        if !cancel_wanted.is_empty() {
            cap(1);
        }
        if partial_since.is_some() {
            cap(100);
        }
        if taken_back.is_some() {
            cap(1);
        }
        if let Some(d) = shared.next_delay() {
            cap(d.as_millis() as u64 + 1);
        }
        let wait_ms: i32 = wait.map_or(-1, |w| w.min(i32::MAX as u64) as i32);
        // SPIN: a job or a result is often microseconds away, and a sleeping
        // vCPU takes ~60 µs to wake here (ipc-floor.md); look for ~15 µs
        // before sleeping.
        let mut got = false;
        // One idle proxy at a time watches the queue a little longer (a
        // caller's next `apply` is often tens of microseconds away); the
        // others sleep at once rather than compete for the CPUs.
        let idle_watch = hello
            && !stopping
            && kill.is_none()
            && inflight.is_empty()
            && shared
                .idle_watchers
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        if hello && !stopping && kill.is_none() && (idle_watch || !inflight.is_empty()) {
            let until = Instant::now() + if idle_watch { IDLE_WATCH } else { SPIN };
            let mut spins = 0u32;
            while Instant::now() < until {
                spins += 1;
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                }
                if inflight.is_empty() {
                    if shared.queued.load(Ordering::Acquire) > 0 {
                        got = true;
                        break;
                    }
                } else if matches!(
                    inbox.read_nonblocking(sock),
                    Ok(Read::Data | Read::Eof) | Err(_)
                ) {
                    got = true;
                    break;
                }
                std::hint::spin_loop();
            }
        }
        if idle_watch {
            shared.idle_watchers.store(0, Ordering::Release);
        }
        let parked = !got && hello && inflight.is_empty() && !stopping && shared.park_idle(slot);
        if parked {
            shared.request_steal(slot);
        }
        if !got && (!hello || !inflight.is_empty() || parked || stopping) {
            let sock_events = if outbox.is_empty() {
                PollFlags::IN
            } else {
                PollFlags::IN | PollFlags::OUT
            };
            // Without a pidfd (Linux before 5.3) the wake fd stands in
            // for it, watched twice; only a real pidfd says "exited".
            let mut fds = [
                PollFd::new(&worker.sock, sock_events),
                PollFd::new(&proxy.wake, PollFlags::IN),
                match &worker.pidfd {
                    Some(pidfd) => PollFd::new(pidfd, PollFlags::IN),
                    None => PollFd::new(&proxy.wake, PollFlags::IN),
                },
            ];
            poll_ms(&mut fds, wait_ms);
            let woken = !fds[1].revents().is_empty();
            // The worker exited; its socket may live on in a process it
            // started. Read what it sent, then settle.
            exited |= worker.pidfd.is_some() && !fds[2].revents().is_empty();
            if woken {
                drain(&proxy.wake);
            }
        }
        if parked {
            shared.unpark(slot);
        }
        // READ: every frame the worker sent.
        loop {
            match inbox.read_nonblocking(sock) {
                Ok(Read::Data) => {}
                Ok(Read::WouldBlock) => {
                    dead |= exited;
                    break;
                }
                Ok(Read::Eof) | Err(_) => {
                    dead = true;
                    break;
                }
            }
        }
        loop {
            let frame = match inbox.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(wire::Garbage(msg)) => {
                    kill = Some(Kill::Protocol(format!("garbage from worker {slot}: {msg}")));
                    break;
                }
            };
            match frame.kind {
                wire::HELLO => {
                    let mut f = Fields::new(&frame.body);
                    match (f.u32(), f.u64()) {
                        (Ok(wire::VERSION), Ok(fp)) if fp == shared.fingerprint => {
                            match &shared.config.initializer {
                                None => {
                                    hello = true;
                                    shared.started();
                                }
                                Some((entry, args)) => {
                                    let mut head = [0u8; 17];
                                    head[..8].copy_from_slice(&INIT_SEQ.to_le_bytes());
                                    head[8..16].copy_from_slice(&entry.to_le_bytes());
                                    if outbox.push(wire::RUN, wire::RUN_SHM, &head, args).is_err() {
                                        kill = Some(Kill::Protocol(
                                            "cannot send the initializer".into(),
                                        ));
                                    }
                                }
                            }
                        }
                        (Ok(v), Ok(fp)) => {
                            kill = Some(Kill::Protocol(format!(
                                "worker {slot} runs a different build or protocol (version {v}, fingerprint {fp:x}; expected {}, {:x})",
                                wire::VERSION,
                                shared.fingerprint
                            )));
                        }
                        _ => {
                            kill = Some(Kill::Protocol(format!("worker {slot} sent a short hello")))
                        }
                    }
                }
                wire::DONE | wire::DONE_SHM => {
                    let mut f = Fields::new(&frame.body);
                    let Ok(done_seq) = f.u64() else {
                        kill = Some(Kill::Protocol(format!(
                            "worker {slot} sent a result without a task number"
                        )));
                        break;
                    };
                    if done_seq == INIT_SEQ && !hello {
                        let outcome = wire::with_payload(&frame, f, |b| {
                            crate::bulk::from_slice::<Result<(), crate::entry::WireError>>(b)
                        });
                        match outcome {
                            Ok(Ok(Ok(()))) => {
                                hello = true;
                                shared.started();
                            }
                            Ok(Ok(Err(e))) => {
                                let e = e.into_error();
                                kill = Some(Kill::Protocol(format!(
                                    "the initializer failed in worker {slot}: {e}"
                                )));
                            }
                            _ => {
                                kill = Some(Kill::Protocol(format!(
                                    "worker {slot} sent a garbled initializer result"
                                )))
                            }
                        }
                        continue;
                    }
                    if inflight.front().map(|i| i.seq) != Some(done_seq) {
                        kill = Some(Kill::Protocol(format!(
                            "worker {slot} answered task {done_seq}, which is not the one it was running"
                        )));
                        break;
                    }
                    let done = inflight.pop_front().expect("checked above");
                    isolating = false;
                    let now = Instant::now();
                    let took = now - done.sent.max(last_done);
                    avg = Some(match avg {
                        None => took,
                        Some(a) => (a * 4 + took) / 5,
                    });
                    last_done = now;
                    if cancel_wanted.contains(&done_seq) {
                        // `cancel()` promised a cancellation; the result that
                        // raced it is dropped.
                        let mut job = done.job;
                        job.completion().cancelled();
                        cancel_wanted.retain(|&s| s != done_seq);
                    } else {
                        finished.push((done.job, frame));
                    }
                }
                wire::FATAL => {
                    let msg = String::from_utf8_lossy(&frame.body).into_owned();
                    kill = Some(Kill::Protocol(format!("worker {slot} gave up: {msg}")));
                }
                other => {
                    kill = Some(Kill::Protocol(format!(
                        "worker {slot} sent a frame of kind {other}, meant for workers"
                    )));
                }
            }
            if kill.is_some() {
                break;
            }
        }
        // A frame begun and never finished while the worker sits idle is
        // garbage (a task wrote to the worker's socket), not a slow sender:
        // the worker writes whole frames before it goes idle.
        partial_since = match (inbox.has_partial(), partial_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
        if let Some(since) = partial_since
            && kill.is_none()
            && since.elapsed() > STALLED_FRAME
            && worker.control.running().0 == 0
        {
            kill = Some(Kill::Protocol(format!(
                "worker {slot} began a frame and went silent for {STALLED_FRAME:?} (truncated frame)"
            )));
        }
        if dead && inbox.has_partial() && kill.is_none() {
            kill = Some(Kill::Protocol(format!(
                "worker {slot} died in the middle of a frame (truncated frame)"
            )));
        }
        // STEAL: an idle proxy asked for the jobs our worker has not
        // started; they go back to the front of the queue, for it.
        if let Some(last) = taken_back
            && worker.control.reached() >= last
        {
            worker.control.clear_take_back();
            taken_back = None;
        }
        if proxy.steal.swap(false, Ordering::AcqRel)
            && kill.is_none()
            && !dead
            && !isolating
            && taken_back.is_none()
            && inflight.len() >= 2
        {
            let from = inflight.front().map_or(0, |f| f.number);
            let last = inflight.back().map_or(0, |f| f.number);
            if let Some(first) = worker.control.take_back(from, last) {
                let mut back = Vec::new();
                while inflight.back().is_some_and(|f| f.number >= first) {
                    let mut f = inflight.pop_back().expect("checked");
                    f.job.completion().requeued();
                    back.push(f.job);
                }
                back.reverse();
                taken_back = Some(last);
                proxy.backlog.store(inflight.len(), Ordering::Release);
                shared.requeue_front(back);
            }
        }
        // CANCEL: kill the worker when the task to cancel is the one running.
        cancel_wanted.extend(lock(&proxy.kills).drain(..));
        let (running, _, started_ns) = worker.control.running();
        if kill.is_none() && running != 0 && cancel_wanted.contains(&running) {
            kill = Some(Kill::Cancelled);
        }
        // TIMEOUT
        let limit = inflight
            .iter()
            .find(|f| f.seq == running)
            .and_then(|f| f.job.limits)
            .and_then(|l| l.timeout)
            .map(|t| t.as_nanos() as u64)
            .or(timeout_ns);
        if let (None, Some(limit)) = (&kill, limit)
            && running != 0
            && started_ns != 0
            && monotonic_ns().saturating_sub(started_ns) > limit
        {
            kill = Some(Kill::Timeout);
        }
        if kill.is_none() && shared.state.load(Ordering::Acquire) == TERMINATED {
            kill = Some(Kill::Terminated);
        }
        if kill.is_none() && !hello && spawned_at.elapsed() > HANDSHAKE_TIMEOUT {
            kill = Some(Kill::Protocol(format!(
                "worker {slot} did not say hello within {HANDSHAKE_TIMEOUT:?}"
            )));
        }
        if kill.is_some() {
            // The whole group: what the task started dies with it.
            kill_group(worker.child.id());
            let _ = worker.child.kill();
            dead = true;
        }
    }
    proxy.backlog.store(0, Ordering::Release);
    deliver(&mut finished, slot, shared.timeline.as_deref());
    // REAP: the worker is gone or going; collect its exit status.
    shared.set_slot(slot, Slot::Reaping(worker.child.id()));
    let status = reap(&mut worker.child);
    shared.set_slot(slot, Slot::Empty);
    let (running, item, _) = worker.control.running();
    let mut cause = describe_exit(status);
    if let Some(limit) = shared.config.memory_limit {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(libc::SIGABRT) {
            cause.push_str(&format!(
                " (the worker's memory limit is {limit} bytes: an allocation beyond it aborts)"
            ));
        }
    }
    if let Some(t) = &shared.timeline {
        mark_exit(t, slot, &kill, stopping && status.success(), &cause, shared);
    }
    if !hello {
        let why = match &kill {
            Some(Kill::Protocol(m)) => m.clone(),
            _ => format!("worker {slot} {cause} before its handshake"),
        };
        if !matches!(kill, Some(Kill::Terminated)) {
            shared.start_failed(Error::protocol(why));
        }
    }
    settle(
        shared,
        slot,
        inflight,
        running,
        item as usize,
        kill,
        &cause,
        isolating,
    );
    hello
}

/// Marks on the timeline why a worker ended, unless it stopped as asked.
fn mark_exit(
    t: &Timeline,
    slot: usize,
    kill: &Option<Kill>,
    clean: bool,
    cause: &str,
    shared: &Shared,
) {
    let (kind, detail) = match kill {
        Some(Kill::Timeout) => (
            MarkKind::Timeout,
            format!(
                "a task ran past its {:?} timeout: worker killed",
                shared.config.task_timeout.unwrap_or_default()
            ),
        ),
        Some(Kill::Cancelled) => (
            MarkKind::Kill,
            "killed to cancel its running task".to_owned(),
        ),
        Some(Kill::Terminated) => (MarkKind::Kill, "killed: the pool terminated".to_owned()),
        Some(Kill::Protocol(m)) => (MarkKind::Kill, format!("killed: {m}")),
        None if clean => return,
        None => (MarkKind::Crash, format!("worker {cause}")),
    };
    t.mark(slot, kind, detail);
}

/// Decodes and delivers the results read from a worker.
fn deliver(
    finished: &mut Vec<(ProcJob<'static>, wire::Frame)>,
    slot: usize,
    timeline: Option<&Timeline>,
) {
    for (mut job, frame) in finished.drain(..) {
        let mut f = Fields::new(&frame.body);
        let _seq = f.u64();
        let read = wire::with_payload(&frame, f, |bytes| {
            job.completion().finish(bytes, slot, timeline)
        });
        if let Err(wire::Garbage(msg)) = read {
            job.completion()
                .fail(Error::protocol(msg).with_worker(slot));
        }
    }
}

fn reap(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => {
                // Closed its socket but did not exit: it must not linger.
                kill_group(child.id());
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    return status;
                }
                use std::os::unix::process::ExitStatusExt;
                return std::process::ExitStatus::from_raw(libc::SIGKILL);
            }
        }
    }
}

/// Decides the fate of every job the dead worker held.
/// A number in `[0, 1)` that differs between calls and processes: enough
/// randomness to spread retries, not for anything secret.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(monotonic_ns());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn settle(
    shared: &Arc<Shared>,
    slot: usize,
    inflight: VecDeque<InFlight>,
    running: u64,
    item: usize,
    kill: Option<Kill>,
    cause: &str,
    isolated: bool,
) {
    let terminated = matches!(kill, Some(Kill::Terminated));
    // Garbage on the stream: a task wrote to the worker's socket. With one
    // job in flight (isolated), that job did it. With several, any of them
    // may have (a result can sit in the worker's buffer while the next task
    // writes garbage ahead of it): none is blamed; all run again, each
    // alone, and the one that garbles the stream again is blamed then.
    if matches!(kill, Some(Kill::Protocol(_))) && !(isolated && inflight.len() == 1) {
        let mut again = Vec::new();
        for mut f in inflight {
            f.job.suspect = true;
            f.job.completion().requeued();
            again.push(f.job);
        }
        if !again.is_empty() {
            shared.requeue_front(again);
        }
        return;
    }
    let culprit = match (&kill, running) {
        (Some(Kill::Protocol(_)), 0) => inflight.front().map_or(0, |f| f.seq),
        _ => running,
    };
    let (running, item) = if culprit == running {
        (running, item)
    } else {
        (culprit, 0)
    };
    let mut again = Vec::new();
    for mut f in inflight {
        if terminated {
            continue; // dropped: reported cancelled
        }
        if f.seq != running {
            // Never started, or finished without its result reaching us:
            // it runs again on the next worker.
            f.job.completion().requeued();
            again.push(f.job);
            continue;
        }
        let error = match &kill {
            Some(Kill::Cancelled) => {
                f.job.completion().cancelled();
                continue;
            }
            Some(Kill::Timeout) => Error::timeout().with_worker(slot),
            Some(Kill::Protocol(m)) => Error::protocol(m.clone()).with_worker(slot),
            Some(Kill::Terminated) => unreachable!("handled above"),
            None => Error::worker_lost(cause.to_owned()).with_worker(slot),
        };
        let (retries, backoff, jitter) = match f.job.limits {
            Some(l) => (l.retries, l.backoff, true),
            None => (shared.config.retries, shared.config.retry_backoff, false),
        };
        let retry = (error.is_worker_lost() || error.is_timeout()) && f.job.attempt < retries;
        let mut payload = std::mem::take(&mut f.job.payload);
        if f.job.completion().lost(&mut payload, item, error, retry) {
            f.job.payload = payload;
            if retry {
                f.job.attempt += 1;
                let mut backoff = backoff * 2u32.saturating_pow(f.job.attempt - 1);
                if jitter {
                    // Up to half again, so that tasks failed together do not
                    // all come back at the same instant.
                    backoff += backoff.mul_f64(jitter_fraction() * 0.5);
                }
                f.job.not_before = (!backoff.is_zero()).then(|| Instant::now() + backoff);
            }
            f.job.completion().requeued();
            again.push(f.job);
        }
    }
    if !again.is_empty() {
        shared.requeue_front(again);
    }
}
