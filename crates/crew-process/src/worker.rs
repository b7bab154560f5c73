//! The worker side: entered before `main` when the binary was started as a
//! worker, serves tasks until its parent says stop or goes away, and exits.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crew_core::Error;

use crate::bulk::Out;
use crate::entry::{build_fingerprint, entry_at};
use crate::wire::{self, Fields, Inbox, Outbox, Read};

/// Names the socket fd of a worker; its presence makes a process a worker.
pub(crate) const ENV_FD: &str = "CREW_WORKER_FD";
/// Names the fd of the worker's control page.
pub(crate) const ENV_CONTROL: &str = "CREW_WORKER_CONTROL";
/// The parent's pid, to detect a parent that died before we started.
pub(crate) const ENV_PARENT: &str = "CREW_WORKER_PARENT";
/// The worker's memory limit in bytes (`RLIMIT_AS`), if any.
pub(crate) const ENV_MEMORY: &str = "CREW_WORKER_MEMORY";

/// A page shared by a worker and its parent: what the worker is running, so
/// the parent can attribute a crash, enforce a timeout, or cancel the right
/// task without asking the (possibly stuck) worker.
pub(crate) struct Control {
    words: *const AtomicU64,
    /// The worker's copy of word `TIMED`, read once per job rather than
    /// once per item.
    timed: std::cell::Cell<bool>,
    /// The parent keeps a timeline: report when each item ran.
    spans: std::cell::Cell<bool>,
}

// SAFETY: the page is a shared mapping of atomics; every access is atomic.
// (`timed` is a `Cell`, so `Control` is not `Sync`: one thread per worker.)
unsafe impl Send for Control {}

/// Word 0: sequence number of the job running (0: none).
const SEQ: usize = 0;
/// Word 1: index of the item running within the job.
const ITEM: usize = 1;
/// Word 2: CLOCK_MONOTONIC nanoseconds when that item started (if timed).
const STARTED: usize = 2;
/// Word 3: non-zero when the parent enforces a timeout (the worker then
/// stamps every item; otherwise it skips the clock read).
const TIMED: usize = 3;
/// Word 4: which jobs the worker may start. Low 48 bits: the number (from
/// 1, in the order sent, the initializer not counted) of the last job the
/// worker reached; high 16 bits: how far beyond it lies the first job the
/// parent took back (0: none). The worker claims a job and the parent takes
/// jobs back with a compare-and-swap on this one word, so each job is either
/// started or taken back, never both (see `claim` and `take_back`).
const CLAIM: usize = 4;
const LOW: u64 = (1 << 48) - 1;
/// The sequence number of a worker's initializer run.
pub(crate) const INIT_SEQ: u64 = u64::MAX;
pub(crate) const CONTROL_LEN: usize = 4096;
/// Task flag: the parent enforces a timeout.
pub(crate) const FLAG_TIMED: u8 = 1;
/// Task flag: the parent keeps a timeline.
pub(crate) const FLAG_SPANS: u8 = 2;
/// Task flag: this worker is a `crew::Process` running one task. As in
/// Python, a task that panics then prints its panic on stderr and the
/// process exits with code 1 (a pool worker returns the panic silently).
pub(crate) const FLAG_SOLO: u8 = 4;

/// Set once this worker saw `FLAG_SOLO`.
static SOLO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set once a task of this worker panicked.
static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Control {
    /// Maps the control page held by `fd`.
    pub(crate) fn map(fd: RawFd) -> io::Result<Control> {
        // SAFETY: mapping a page-sized memfd read-write and shared.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CONTROL_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Control {
            words: ptr.cast(),
            timed: std::cell::Cell::new(false),
            spans: std::cell::Cell::new(false),
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: the page holds CONTROL_LEN / 8 aligned u64 words, mapped
        // for as long as `self` lives.
        unsafe { &*self.words.add(i) }
    }

    pub(crate) fn begin(&self, seq: u64) {
        self.word(ITEM).store(0, Ordering::Relaxed);
        self.word(SEQ).store(seq, Ordering::Release);
    }

    #[inline]
    pub(crate) fn set_item(&self, item: u64) {
        if self.timed.get() {
            self.word(STARTED).store(monotonic_ns(), Ordering::Relaxed);
        }
        self.word(ITEM).store(item, Ordering::Release);
    }

    /// Sets the job's flags from its frame: bit 0 timed, bit 1 spans.
    pub(crate) fn set_flags(&self, flags: u8) {
        self.set_timed(flags & FLAG_TIMED != 0);
        self.spans.set(flags & FLAG_SPANS != 0);
        if flags & FLAG_SOLO != 0 {
            SOLO.store(true, Ordering::Relaxed);
        }
    }

    /// The clock, if the parent wants spans.
    #[inline]
    pub(crate) fn span_clock(&self) -> Option<u64> {
        self.spans.get().then(monotonic_ns)
    }

    pub(crate) fn set_timed(&self, timed: bool) {
        self.timed.set(timed);
        self.word(TIMED).store(timed as u64, Ordering::Relaxed);
    }

    /// The worker reached job `number`: true if it may run it, false if the
    /// parent took it back (skip it: the parent runs it elsewhere).
    pub(crate) fn claim(&self, number: u64) -> bool {
        let word = self.word(CLAIM);
        let mut w = word.load(Ordering::Acquire);
        loop {
            let (reached, gap) = (w & LOW, w >> 48);
            let (run, gap) = match gap {
                0 => (true, 0),
                _ if number < reached + gap => (true, reached + gap - number),
                // Taken back, and so is every later job until the parent
                // clears the mark.
                _ => (false, 1),
            };
            let next = (gap << 48) | (number & LOW);
            match word.compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return run,
                Err(now) => w = now,
            }
        }
    }

    /// The parent takes back the jobs numbered `from` to `last` that the
    /// worker has not reached yet (`last - from` is at most the jobs in
    /// flight, far below 2^16): returns the first job taken back, or `None`
    /// if the worker already reached `last`.
    pub(crate) fn take_back(&self, from: u64, last: u64) -> Option<u64> {
        let word = self.word(CLAIM);
        let mut w = word.load(Ordering::Acquire);
        loop {
            let reached = w & LOW;
            let first = from.max(reached + 1);
            if first > last {
                return None;
            }
            let next = ((first - reached) << 48) | reached;
            match word.compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(first),
                Err(now) => w = now,
            }
        }
    }

    /// The number of the last job the worker reached (run or skipped).
    pub(crate) fn reached(&self) -> u64 {
        self.word(CLAIM).load(Ordering::Acquire) & LOW
    }

    /// Ends a take-back once the worker reached every job taken back, so
    /// that the jobs sent next run.
    pub(crate) fn clear_take_back(&self) {
        let word = self.word(CLAIM);
        let mut w = word.load(Ordering::Acquire);
        while let Err(now) =
            word.compare_exchange_weak(w, w & LOW, Ordering::AcqRel, Ordering::Acquire)
        {
            w = now;
        }
    }

    /// `(seq, item, started_ns)` of what is running.
    pub(crate) fn running(&self) -> (u64, u64, u64) {
        let seq = self.word(SEQ).load(Ordering::Acquire);
        let item = self.word(ITEM).load(Ordering::Acquire);
        (seq, item, self.word(STARTED).load(Ordering::Relaxed))
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in `map`.
        unsafe { libc::munmap(self.words as *mut libc::c_void, CONTROL_LEN) };
    }
}

thread_local! {
    /// The last panic on this thread: message and backtrace, captured by
    /// the worker's panic hook (the payload alone has no backtrace).
    static LAST_PANIC: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// Turns a caught panic into an error, with the backtrace the hook captured.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let from_payload = Error::from_panic(payload);
    match LAST_PANIC.with(|p| p.borrow_mut().take()) {
        Some((message, Some(bt))) => Error::panic_with_backtrace(message, bt),
        Some((message, None)) => Error::panic(message),
        None => from_payload,
    }
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = Error::panic_payload_message(info.payload());
        let bt = std::backtrace::Backtrace::capture();
        let bt = (bt.status() == std::backtrace::BacktraceStatus::Captured).then(|| {
            match info.location() {
                Some(l) => format!("panicked at {l}\n{bt}"),
                None => bt.to_string(),
            }
        });
        PANICKED.store(true, Ordering::Relaxed);
        if SOLO.load(Ordering::Relaxed) {
            match info.location() {
                Some(l) => eprintln!(
                    "crew process {}: task panicked at {l}:\n{message}",
                    std::process::id()
                ),
                None => eprintln!(
                    "crew process {}: task panicked: {message}",
                    std::process::id()
                ),
            }
        }
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, bt)));
    }));
}

// Enter worker mode before `main` runs, so no code of `main` runs twice.
// glibc calls `.init_array` entries with (argc, argv, envp); a function
// taking no arguments is compatible with that C call.
#[used]
#[unsafe(link_section = ".init_array")]
static ENTER_WORKER: extern "C" fn() = enter_worker;

extern "C" fn enter_worker() {
    run_if_worker();
}

/// Serves as a worker (or as the fork server that starts pool workers) if
/// this process was started as one (never returns then); otherwise returns at once. Called before `main` automatically;
/// `crew::init()` calls it too.
///
/// # Examples
///
/// ```
/// // In a program that was not started as a worker, this returns at once.
/// crew_process::run_if_worker();
/// ```
pub fn run_if_worker() {
    if std::env::var_os(ENV_FD).is_some() {
        run_worker();
    }
    crate::forkserver::run_if_server();
}

fn env_fd(name: &str) -> Option<RawFd> {
    std::env::var(name).ok()?.parse().ok()
}

/// Serves as a worker set up by its environment (`CREW_WORKER_*`) and fds.
pub(crate) fn run_worker() -> ! {
    // Read before `serve_from_env` clears the environment.
    let sock = env_fd(ENV_FD);
    let code = match serve_from_env() {
        Ok(()) if SOLO.load(Ordering::Relaxed) && PANICKED.load(Ordering::Relaxed) => 1,
        Ok(()) => 0,
        Err(e) => {
            let message = format!("cannot start: {e}");
            eprintln!("crew worker {}: {message}", std::process::id());
            // Tell the parent why, if the socket is there: a frame built by
            // hand, with no allocation beyond the message (memory may be
            // what failed).
            if let Some(sock) = sock {
                let mut frame = Vec::with_capacity(5 + message.len());
                frame.extend_from_slice(&(1 + message.len() as u32).to_le_bytes());
                frame.push(wire::FATAL);
                frame.extend_from_slice(message.as_bytes());
                // SAFETY: writing our own bytes to the socket fd we were given.
                unsafe { libc::write(sock, frame.as_ptr().cast(), frame.len()) };
            }
            2
        }
    };
    std::process::exit(code);
}

fn serve_from_env() -> io::Result<()> {
    let sock = env_fd(ENV_FD)
        .ok_or_else(|| io::Error::other(format!("{ENV_FD} is not a file descriptor")))?;
    let control =
        env_fd(ENV_CONTROL).ok_or_else(|| io::Error::other(format!("{ENV_CONTROL} is missing")))?;
    let parent: Option<i32> = std::env::var(ENV_PARENT).ok().and_then(|p| p.parse().ok());
    let memory: Option<u64> = std::env::var(ENV_MEMORY).ok().and_then(|p| p.parse().ok());
    // SAFETY: we run before `main`, single-threaded: nothing reads the
    // environment concurrently. Removing the variables keeps processes that
    // tasks start from becoming workers themselves.
    unsafe {
        for name in [ENV_FD, ENV_CONTROL, ENV_PARENT, ENV_MEMORY] {
            std::env::remove_var(name);
        }
    }
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // SAFETY: sets a signal's disposition to "ignore", installing no
    // handler. Workers ignore SIGINT: a Ctrl-C the parent's group gets is
    // the parent's to decide (by default it dies, and its workers with it;
    // a parent that handles SIGINT can `terminate` its pools). Pool
    // workers lead groups of their own, so only `Process` children, in the
    // parent's group, would see it.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    if let Some(parent) = parent
        && rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent)
    {
        // The parent died before we could ask to die with it.
        return Ok(());
    }
    if let Some(bytes) = memory {
        let lim = rustix::process::Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        let _ = rustix::process::setrlimit(rustix::process::Resource::As, lim);
    }
    keep_freed_memory();
    // Processes that tasks start must not inherit the socket or the control
    // page: a child holding the socket open would hide our death.
    for fd in [sock, control] {
        // SAFETY: setting a descriptor flag on an fd we were given.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: the parent gave us the control page's fd; we own it now.
    let control_fd = unsafe { OwnedFd::from_raw_fd(control) };
    let control = Control::map(control)?;
    drop(control_fd);
    // The socket is taken over only now: on an error above it stays open,
    // so `run_worker` can still tell the parent why we cannot start.
    // SAFETY: the parent gave us this fd; we own it from now on.
    let sock_owned = unsafe { OwnedFd::from_raw_fd(sock) };
    install_panic_hook();
    start_watchdog(sock);
    serve(sock, &control);
    drop(sock_owned);
    Ok(())
}

/// Exits the moment the parent's end of the socket closes, even while a
/// task is running: a killed parent leaves no worker behind, whatever thread
/// spawned us (`PR_SET_PDEATHSIG` follows the spawning *thread*).
fn start_watchdog(sock: RawFd) {
    let spawned = std::thread::Builder::new()
        .name("crew-watchdog".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            loop {
                let mut pfd = libc::pollfd {
                    fd: sock,
                    events: libc::POLLRDHUP,
                    revents: 0,
                };
                // SAFETY: polling one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, -1) };
                if n > 0
                    && pfd.revents
                        & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL)
                        != 0
                {
                    // SAFETY: immediate exit, no unwinding or destructors.
                    unsafe { libc::_exit(0) };
                }
            }
        });
    if spawned.is_err() {
        // Without a watchdog the socket EOF still ends us between tasks.
    }
}

/// Flush results at least this often while busy, so the parent hears of
/// results promptly (and loses fewer if the worker dies).
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_micros(100);
/// A task at least this long has its result sent at once: the write costs
/// ~1 µs, little next to the task, and the result is not held hostage by
/// the next task (nor lost with it if that one crashes).
const FLUSH_AFTER_TASK: std::time::Duration = std::time::Duration::from_micros(20);
/// Results still waiting when a task starts are sent by the flusher thread
/// if that task is still running this long after it started: a burst of
/// tiny tasks keeps sending its results in batches (one write per
/// `FLUSH_EVERY`), and a result never waits behind a long task for longer
/// than this. (Flushing before every task instead would cost a write per
/// result in a burst.)
const HELD_AT_MOST: std::time::Duration = std::time::Duration::from_micros(200);

/// The worker's outbox, shared by the loop that runs tasks and the flusher
/// thread that sends results a long task would otherwise hold back.
struct Post {
    outbox: std::sync::Mutex<Outbox>,
    /// Number of the task running (counted from 1), 0 between tasks.
    running: AtomicU64,
    /// The task the flusher watches (0: none), and when it started.
    watch: std::sync::Mutex<(u64, Option<Instant>)>,
    wake: std::sync::Condvar,
    /// Set (under the outbox lock) when `serve` returns: the socket is
    /// about to close, and the flusher must not touch it any more.
    closed: std::sync::atomic::AtomicBool,
}

/// Stops the flusher when `serve` returns, however it returns.
struct StopFlusher<'a>(&'a Post);

impl Drop for StopFlusher<'_> {
    fn drop(&mut self) {
        let _outbox = self.0.outbox();
        self.0.closed.store(true, Ordering::Release);
    }
}

impl Post {
    /// An empty outbox, no task running, nothing watched, open.
    fn new() -> Post {
        Post {
            outbox: std::sync::Mutex::new(Outbox::default()),
            running: AtomicU64::new(0),
            watch: std::sync::Mutex::new((0, None)),
            wake: std::sync::Condvar::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Task `task` starts while results wait: have the flusher send them if
    /// it runs long. The newest task replaces a task still watched: that
    /// one has ended, and a flusher that woke for it would find another task
    /// running and send nothing, leaving the results behind this one. The
    /// flusher is woken only when it watched nothing; otherwise it is
    /// already waiting for a deadline, after which it reads the new one.
    fn watch(&self, task: u64, started: Instant) {
        let mut w = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        let idle = w.0 == 0;
        *w = (task, Some(started));
        if idle {
            self.wake.notify_one();
        }
    }
}

/// The flusher: sleeps until a task starts with results waiting, then, if
/// that task still runs `HELD_AT_MOST` after it started, sends them.
fn start_flusher(sock: RawFd, post: std::sync::Arc<Post>) -> bool {
    std::thread::Builder::new()
        .name("crew-flusher".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut w = post.watch.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let (task, started) = *w;
                let Some(started) = started else {
                    w = post.wake.wait(w).unwrap_or_else(|p| p.into_inner());
                    continue;
                };
                let due = started + HELD_AT_MOST;
                let now = Instant::now();
                if now < due {
                    w = post
                        .wake
                        .wait_timeout(w, due - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    continue;
                }
                *w = (0, None);
                drop(w);
                if post.running.load(Ordering::Acquire) == task {
                    let mut outbox = post.outbox();
                    if !post.closed.load(Ordering::Acquire) && !outbox.is_empty() {
                        // SAFETY: `serve` owns the socket open until it
                        // returns, and sets `closed` (under the lock we
                        // hold) before it does.
                        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock) };
                        // A failed write means the parent is gone; the
                        // watchdog ends us.
                        let _ = outbox.flush(sock);
                    }
                }
                w = post.watch.lock().unwrap_or_else(|p| p.into_inner());
            }
        })
        .is_ok()
}

/// The worker's loop. `pub(crate)` so its address can serve the fingerprint.
pub(crate) fn serve(sock: RawFd, control: &Control) {
    // SAFETY: `run_worker` owns this fd (`sock_owned`) until we return.
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock) };
    let mut inbox = Inbox::new();
    let post = std::sync::Arc::new(Post::new());
    // Results: a large one is encoded straight into a shared region.
    let mut out = Out::new(true);
    let mut hello = Vec::with_capacity(16);
    hello.extend_from_slice(&wire::VERSION.to_le_bytes());
    hello.extend_from_slice(&build_fingerprint().to_le_bytes());
    hello.extend_from_slice(&std::process::id().to_le_bytes());
    {
        let mut outbox = post.outbox();
        if outbox.push(wire::HELLO, wire::HELLO, &hello, &[]).is_err()
            || outbox.flush(sock).is_err()
        {
            return;
        }
    }
    // The flusher starts the first time it is needed (a task starts while
    // results wait): a worker that serves one call at a time never needs
    // it, and every worker starts one thread fewer on its way to its first
    // result. Without a flusher thread (none could start), results wait for
    // the next flush point, as they did before the flusher existed.
    let mut flusher: Option<bool> = None;
    let _stop = StopFlusher(&post);
    let mut last_flush = Instant::now();
    let mut tasks = 0u64;
    let mut jobs = 0u64;
    loop {
        // BUSY: run every complete frame we have.
        loop {
            let frame = match inbox.next_frame_in_place() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(wire::Garbage(msg)) => {
                    fatal(sock, &post, &format!("garbage from the parent: {msg}"));
                    return;
                }
            };
            match frame.kind {
                wire::RUN | wire::RUN_SHM => {
                    let mut fields = Fields::new(frame.body);
                    let header =
                        (|| Ok::<_, wire::Garbage>((fields.u64()?, fields.u64()?, fields.u8()?)))();
                    let Ok((seq, entry, flags)) = header else {
                        fatal(sock, &post, "a task frame too short for its header");
                        return;
                    };
                    if seq != INIT_SEQ {
                        jobs += 1;
                        if !control.claim(jobs) {
                            // Taken back by the parent, which runs it on a
                            // worker that was idle.
                            continue;
                        }
                    }
                    let task_start = Instant::now();
                    tasks += 1;
                    post.running.store(tasks, Ordering::Release);
                    if !post.outbox().is_empty()
                        && *flusher
                            .get_or_insert_with(|| start_flusher(sock.as_raw_fd(), post.clone()))
                    {
                        post.watch(tasks, task_start);
                    }
                    control.set_flags(flags);
                    control.begin(seq);
                    // SAFETY: the handshake established that the parent runs
                    // this same executable, so `entry` is a trampoline here.
                    let run = unsafe { entry_at(entry) };
                    out.clear();
                    let region = frame.fd;
                    let ran = wire::read_payload(region.as_ref(), fields, |input| {
                        run(input, control, &mut out)
                    });
                    // Read: the caller's region is not ours to hold (the
                    // mapping stays cached), so its descriptor closes before
                    // the result goes.
                    drop(region);
                    if let Err(wire::Garbage(msg)) = ran {
                        fatal(sock, &post, &msg);
                        return;
                    }
                    control.begin(0);
                    post.running.store(0, Ordering::Release);
                    let mut outbox = post.outbox();
                    let pushed = outbox.push_payload(
                        wire::DONE,
                        wire::DONE_SHM,
                        &seq.to_le_bytes(),
                        out.as_payload(),
                    );
                    // The `Vec` keeps its capacity for the next result; a
                    // region goes back to the pool, to be written again
                    // once the parent has read it.
                    out.clear();
                    if pushed.is_err() {
                        drop(outbox);
                        fatal(
                            sock,
                            &post,
                            "cannot create a shared-memory buffer for a result",
                        );
                        return;
                    }
                    // One clock read for both checks (a tiny task's
                    // clock reads are a good share of its cost here).
                    let now = Instant::now();
                    if now.saturating_duration_since(task_start) >= FLUSH_AFTER_TASK
                        || now.saturating_duration_since(last_flush) >= FLUSH_EVERY
                    {
                        if outbox.flush(sock).is_err() {
                            return;
                        }
                        last_flush = Instant::now();
                    }
                }
                wire::STOP => {
                    let _ = post.outbox().flush(sock);
                    return;
                }
                other => {
                    fatal(
                        sock,
                        &post,
                        &format!("unexpected frame kind {other} from the parent"),
                    );
                    return;
                }
            }
        }
        // IDLE: send what we have, then wait for more.
        if post.outbox().flush(sock).is_err() {
            return;
        }
        last_flush = Instant::now();
        // Poll for the next frame a while (crew's spin-then-park policy:
        // waking a sleeping vCPU costs ~60 µs here), then block.
        let mut spin = crew_core::SpinWait::new();
        let got = loop {
            match inbox.read_nonblocking(sock) {
                Ok(Read::Data) => break Ok(true),
                Ok(Read::Eof) => break Ok(false),
                Ok(Read::WouldBlock) if spin.spin() => {}
                Ok(Read::WouldBlock) => {
                    if !readable_within(sock, IDLE_TRIM) {
                        // Idle for a while: let go of the shared memory kept
                        // for large payloads but the largest region each
                        // way (a caller that sends a large payload now and
                        // then pays no new region, mapping or page fault for
                        // it); after a longer while, of those too and of the
                        // memory the allocator keeps. Then wait as long as
                        // it takes.
                        crate::shm::trim_to_largest();
                        if !readable_within(sock, crate::shm::KEEP_IDLE - IDLE_TRIM) {
                            crate::shm::trim();
                            release_freed_memory();
                        }
                    }
                    break inbox.read(sock).map(|r| matches!(r, Read::Data));
                }
                Err(e) => break Err(e),
            }
        };
        match got {
            Ok(true) => {}
            // SHUTDOWN: the parent closed its end, or the socket broke.
            Ok(false) | Err(_) => {
                if inbox.has_partial() {
                    eprintln!(
                        "crew worker {}: the parent's last frame was truncated",
                        std::process::id()
                    );
                }
                return;
            }
        }
    }
}

/// Has the allocator keep the memory tasks free for the next ones, rather
/// than hand it back to the kernel at once: a large argument is decoded
/// into a new buffer for each task, and with glibc's defaults each buffer
/// of 32 MiB or more is a fresh mapping whose pages the kernel faults in
/// and zeroes one by one (a third of the time of a 100 MB echo). Kept in
/// the heap instead, the next task's buffer reuses pages already there.
/// What is kept goes back when the worker sits idle
/// ([`release_freed_memory`]). Only with glibc's allocator (a program with
/// another global allocator is not affected).
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `mallopt` only sets tuning parameters of glibc's allocator,
    // before any task runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Hands the memory kept by [`keep_freed_memory`] back to the kernel.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `malloc_trim` returns free heap memory to the kernel; it is
    // safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long a worker waits for its next task before it lets go of the
/// shared memory it keeps for large payloads, but the largest region each
/// way (those go after `shm::KEEP_IDLE`).
const IDLE_TRIM: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits up to `timeout` for `sock` to have something to read (or to close).
fn readable_within(sock: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &sock,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            // Let the blocking read that follows report the error.
            Err(_) => return true,
        }
    }
}

fn fatal(sock: std::os::fd::BorrowedFd<'_>, post: &Post, message: &str) {
    eprintln!("crew worker {}: {message}", std::process::id());
    let mut outbox = post.outbox();
    let _ = outbox.push(wire::FATAL, wire::FATAL, message.as_bytes(), &[]);
    let _ = outbox.flush(sock);
}

#[cfg(test)]
mod flusher_test {
    use super::*;
    use std::io::Read as _;
    use std::os::unix::net::UnixStream;

    /// A task watched by the flusher ends and the next one starts before
    /// the flusher has looked (it had not been scheduled yet): the results
    /// waiting behind the new task are still sent. Before, the new task's
    /// watch was ignored while the old one was set, and the flusher, finding
    /// another task running, sent nothing: the results waited for the end
    /// of the new task however long it ran.
    #[test]
    fn results_are_sent_behind_a_task_that_started_after_the_watched_one() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let post = std::sync::Arc::new(Post::new());
        post.outbox()
            .push(wire::DONE, wire::DONE_SHM, &7u64.to_le_bytes(), b"result")
            .unwrap();
        let long_ago = Instant::now() - std::time::Duration::from_secs(1);
        // Task 1 started with results waiting, then ended; task 2 started.
        post.watch(1, long_ago);
        post.running.store(2, Ordering::Release);
        post.watch(2, long_ago);
        assert!(start_flusher(ours.as_raw_fd(), post.clone()));
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut got = [0u8; 4];
        theirs
            .read_exact(&mut got)
            .expect("the flusher sends the waiting result");
        // The socket closes only after the flusher is told to let go of it.
        drop(StopFlusher(&post));
        drop(ours);
    }
}
