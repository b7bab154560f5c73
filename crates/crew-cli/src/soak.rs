//! `crew soak`: maps, imap, submit, apply_async and `Parallel` on both
//! back-ends, round after round, while a chaos thread kills worker processes
//! (SIGKILL, SIGSEGV) and the rounds inject panics, crashes, timeouts,
//! cancels and pool drops at random (seeded; the seed is printed). The
//! invariants are checked as it goes:
//!
//! * every task is reported exactly once, as its value or as an error of a
//!   kind its faults explain (`is_panic` for a panic, `is_timeout`,
//!   `is_worker_lost`, `is_cancelled`, `is_shutdown`);
//! * no call blocks longer than its bound (a watchdog ends the run if one
//!   does);
//! * no process is left behind once a round's pools are gone;
//! * the open file descriptors and the RSS, sampled between rounds, do not
//!   grow after warm-up.
//!
//! It prints a summary and exits non-zero on any violation. The chaos
//! thread's timing makes a run irreproducible in detail; the seed fixes the
//! rounds' choices.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crew::{Error, Executor, Parallel, Pool, Prefer, delayed};

/// How long any one call may block before it counts as a hang. Generous:
/// the machine may be loaded; a real hang blocks forever.
const BOUND: Duration = Duration::from_secs(60);

/// How long the workers of dropped pools may take to be gone.
const EXIT_GRACE: Duration = Duration::from_secs(5);

const OK: u8 = 0;
const PANIC: u8 = 1;
const HANG: u8 = 2;
const SEGV: u8 = 3;

/// The task of every round: a value, or the fault it was told to be.
fn work(x: u64, mode: u8) -> u64 {
    match mode {
        PANIC => panic!("soak: injected panic"),
        HANG => {
            // Only sent to a pool with a task timeout, which kills it.
            std::thread::sleep(Duration::from_secs(3600));
            x
        }
        SEGV => {
            // SAFETY: raising a signal has no memory effect; SIGSEGV ends
            // this worker process, which is the point.
            unsafe { libc::raise(libc::SIGSEGV) };
            x
        }
        _ => expected(x),
    }
}

fn work1(input: (u64, u8)) -> u64 {
    work(input.0, input.1)
}

fn expected(x: u64) -> u64 {
    x.wrapping_mul(2).wrapping_add(1)
}

/// xorshift64*: the rounds' choices, from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Options of `crew soak`.
#[derive(Debug, Clone)]
pub(crate) struct SoakOptions {
    pub(crate) duration: Duration,
    pub(crate) seed: u64,
    pub(crate) workers: usize,
}

/// What faults a call was exposed to, so its errors can be judged.
#[derive(Clone, Copy, Default)]
struct Exposure {
    processes: bool,
    timeout: bool,
    cancel: bool,
    dropped: bool,
}

#[derive(Default)]
struct Tally {
    tasks: u64,
    ops: BTreeMap<String, u64>,
    faults: BTreeMap<&'static str, u64>,
    violations: Vec<String>,
}

impl Tally {
    fn op(&mut self, name: String) {
        *self.ops.entry(name).or_default() += 1;
    }

    fn fault(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.faults.entry(name).or_default() += n;
        }
    }

    fn violation(&mut self, what: String) {
        eprintln!("soak: VIOLATION: {what}");
        self.violations.push(what);
    }

    /// Checks one task's outcome against what it was and what hit it.
    fn check(&mut self, op: &str, x: u64, mode: u8, outcome: &Result<u64, Error>, ex: Exposure) {
        self.tasks += 1;
        let ok = match outcome {
            Ok(v) => mode == OK && *v == expected(x),
            Err(e) => {
                (e.is_panic() && mode == PANIC)
                    || (e.is_worker_lost() && ex.processes)
                    || (e.is_timeout() && ex.timeout)
                    || ((e.is_cancelled() || e.is_shutdown()) && (ex.cancel || ex.dropped))
            }
        };
        if !ok {
            self.violation(format!(
                "{op}: task {x} (mode {mode}) ended with {outcome:?}, which its faults do not explain"
            ));
        }
    }
}

/// The call now blocking, watched by the watchdog.
struct Watch {
    current: Mutex<Option<(String, Instant)>>,
}

impl Watch {
    fn enter(&self, what: String) {
        *self.current.lock().unwrap() = Some((what, Instant::now()));
    }

    fn leave(&self) {
        *self.current.lock().unwrap() = None;
    }
}

/// The processes whose parent is this one.
fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // After the command's closing parenthesis: state, ppid.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(me)
        })
        .collect()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Modes for `n` tasks: mostly values, some panics, and on processes some
/// crashes; `hang` adds tasks that only a timeout ends.
fn modes(rng: &mut Rng, n: usize, processes: bool, hang: bool) -> Vec<(u64, u8)> {
    (0..n)
        .map(|i| {
            let roll = rng.below(100);
            let mode = if roll < 4 {
                PANIC
            } else if processes && roll < 6 {
                SEGV
            } else if hang && roll < 8 {
                HANG
            } else {
                OK
            };
            (i as u64 * 7 + rng.below(1000), mode)
        })
        .collect()
}

fn count_faults(t: &mut Tally, items: &[(u64, u8)]) {
    t.fault(
        "task panic",
        items.iter().filter(|i| i.1 == PANIC).count() as u64,
    );
    t.fault(
        "task SIGSEGV",
        items.iter().filter(|i| i.1 == SEGV).count() as u64,
    );
    t.fault(
        "task timeout",
        items.iter().filter(|i| i.1 == HANG).count() as u64,
    );
}

/// Runs `crew soak`; true if no invariant broke.
pub(crate) fn run(opts: &SoakOptions) -> bool {
    println!(
        "crew soak: {} s, seed {}, {} workers per pool",
        opts.duration.as_secs(),
        opts.seed,
        opts.workers
    );
    // The injected panics of thread tasks would each print a message and a
    // backtrace; every other panic still does.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"soak: injected panic") {
            default_hook(info);
        }
    }));
    let start = Instant::now();
    let end = start + opts.duration;
    let warmup = start + (opts.duration / 4).max(Duration::from_secs(3));
    let stop = Arc::new(AtomicBool::new(false));
    let watch = Arc::new(Watch {
        current: Mutex::new(None),
    });
    let kills = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);

    // The watchdog: a call blocked past its bound ends the run.
    let watchdog = {
        let (stop, watch) = (stop.clone(), watch.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if let Some((what, since)) = &*watch.current.lock().unwrap()
                    && since.elapsed() > BOUND + Duration::from_secs(30)
                {
                    eprintln!(
                        "soak: VIOLATION: {what} blocked for {:?}, past its bound of {BOUND:?}",
                        since.elapsed()
                    );
                    println!("soak: FAILED (a call hung)");
                    std::process::exit(1);
                }
            }
        })
    };

    // The chaos thread: kills a worker process now and then.
    let chaos = {
        let (stop, kills) = (stop.clone(), kills.clone());
        let mut rng = Rng(opts.seed ^ 0x5DEE_CE66_D1CE_5EED | 1);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20 + rng.below(180)));
                let kids = children();
                if kids.is_empty() {
                    continue;
                }
                let pid = kids[rng.below(kids.len() as u64) as usize];
                let (signal, slot) = if rng.chance(50) {
                    (libc::SIGKILL, 0)
                } else {
                    (libc::SIGSEGV, 1)
                };
                // SAFETY: sending a signal to our own child; no memory effect here.
                if unsafe { libc::kill(pid, signal) } == 0 {
                    kills[slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut rng = Rng(opts.seed | 1);
    let mut t = Tally::default();
    let mut samples: Vec<(Instant, usize, u64)> = Vec::new();
    let mut rounds = 0u64;
    let mut max_exit_lag = Duration::ZERO;
    while Instant::now() < end {
        rounds += 1;
        let processes = rng.chance(50);
        let scenario = rng.below(6);
        if let Err(e) = round(&mut rng, &mut t, &watch, opts.workers, processes, scenario) {
            t.violation(format!("round {rounds}: a pool could not start: {e}"));
        }
        // Every pool of the round is gone: so must its workers be.
        let gone = Instant::now();
        loop {
            let left = children();
            if left.is_empty() {
                max_exit_lag = max_exit_lag.max(gone.elapsed());
                break;
            }
            if gone.elapsed() > EXIT_GRACE {
                t.violation(format!(
                    "round {rounds}: {} process(es) still alive {EXIT_GRACE:?} after their pools were dropped: {left:?}",
                    left.len()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        samples.push((Instant::now(), open_fds(), rss_bytes()));
        if rounds.is_multiple_of(50) {
            let (_, fds, rss) = samples[samples.len() - 1];
            println!(
                "soak: {:>5.0} s, {rounds} rounds, {} tasks, {} fds, RSS {} MiB, {} violations",
                start.elapsed().as_secs_f64(),
                t.tasks,
                fds,
                rss >> 20,
                t.violations.len()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    chaos.join().expect("the chaos thread ends");
    watchdog.join().expect("the watchdog ends");
    t.fault("worker SIGKILL (chaos)", kills[0].load(Ordering::Relaxed));
    t.fault("worker SIGSEGV (chaos)", kills[1].load(Ordering::Relaxed));

    // Stable after warm-up: the least of the last samples (a leak raises
    // them all) against the most seen during warm-up, with slack.
    let base: Vec<_> = samples.iter().filter(|s| s.0 <= warmup).collect();
    let after: Vec<_> = samples.iter().filter(|s| s.0 > warmup).collect();
    let (mut fd_base, mut rss_base, mut fd_end, mut rss_end) = (0, 0, 0, 0);
    if !base.is_empty() && after.len() >= 5 {
        fd_base = base.iter().map(|s| s.1).max().unwrap_or(0);
        rss_base = base.iter().map(|s| s.2).max().unwrap_or(0);
        let tail = &after[after.len().saturating_sub(10)..];
        fd_end = tail.iter().map(|s| s.1).min().unwrap_or(0);
        rss_end = tail.iter().map(|s| s.2).min().unwrap_or(0);
        if fd_end > fd_base + 8 {
            t.violation(format!(
                "open fds grew after warm-up: {fd_base} then {fd_end}"
            ));
        }
        let slack = (rss_base / 2).max(64 << 20);
        if rss_end > rss_base + slack {
            t.violation(format!(
                "RSS grew after warm-up: {} MiB then {} MiB",
                rss_base >> 20,
                rss_end >> 20
            ));
        }
    } else {
        t.violation(format!(
            "too few rounds to judge fd and RSS stability ({} during warm-up, {} after): run longer",
            base.len(),
            after.len()
        ));
    }

    println!("crew soak summary (seed {})", opts.seed);
    println!(
        "  ran {:.0} s, {rounds} rounds, {} tasks checked",
        start.elapsed().as_secs_f64(),
        t.tasks
    );
    let ops: Vec<String> = t.ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  calls: {}", ops.join(", "));
    let faults: Vec<String> = t.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "  faults injected ({} in all): {}",
        t.faults.values().sum::<u64>(),
        faults.join(", ")
    );
    println!(
        "  fds {fd_base} after warm-up, {fd_end} at the end; RSS {} MiB, {} MiB",
        rss_base >> 20,
        rss_end >> 20
    );
    println!("  slowest exit of a dropped pool's workers: {max_exit_lag:?}");
    println!("  violations: {}", t.violations.len());
    for v in t.violations.iter().take(20) {
        println!("    {v}");
    }
    t.violations.is_empty()
}

/// Binds `$name` to the value for the back-end the round chose and runs
/// `$body` with it: pools (and executors) of processes and of threads are
/// different types, so the body is written once and compiled for each.
macro_rules! on_backend {
    ($processes:expr, $name:ident = $on_processes:expr, $on_threads:expr => $body:expr) => {
        if $processes {
            let $name = $on_processes;
            $body
        } else {
            let $name = $on_threads;
            $body
        }
    };
}

/// The name of a call in the summary: `op` and its back-end.
fn op_name(op: &str, processes: bool) -> String {
    format!("{op} ({})", if processes { "processes" } else { "threads" })
}

/// Runs `body` (one call of a round, and whatever it checks meanwhile)
/// under the watchdog as `what`, then counts the call as `op`.
fn watched<T>(
    t: &mut Tally,
    watch: &Watch,
    op: &str,
    processes: bool,
    what: String,
    body: impl FnOnce(&mut Tally) -> crew::Result<T>,
) -> crew::Result<T> {
    watch.enter(what);
    let out = body(t);
    watch.leave();
    if out.is_ok() {
        t.op(op_name(op, processes));
    }
    out
}

/// A result on its way: an executor's future or a pool's async result.
trait Pending {
    fn wait_timeout(&self, timeout: Duration) -> bool;
    fn outcome(self) -> crew::Result<u64>;
}

impl Pending for crew::Future<u64> {
    fn wait_timeout(&self, timeout: Duration) -> bool {
        crew::Future::wait_timeout(self, timeout)
    }

    fn outcome(self) -> crew::Result<u64> {
        self.result()
    }
}

impl Pending for crew::AsyncResult<u64> {
    fn wait_timeout(&self, timeout: Duration) -> bool {
        crew::AsyncResult::wait_timeout(self, timeout)
    }

    fn outcome(self) -> crew::Result<u64> {
        self.get()
    }
}

/// Waits for each result (within the bound) and checks it against its
/// item; `exposure` says what faults item `i` was exposed to.
fn judge_pending<H: Pending>(
    t: &mut Tally,
    op: &str,
    items: &[(u64, u8)],
    pending: Vec<H>,
    exposure: impl Fn(usize) -> Exposure,
) {
    for (i, (h, &(x, mode))) in pending.into_iter().zip(items).enumerate() {
        if !h.wait_timeout(BOUND) {
            t.violation(format!("{op}: task {x} not done within {BOUND:?}"));
            continue;
        }
        t.check(op, x, mode, &h.outcome(), exposure(i));
    }
}

/// Tasks for a round: `modes`, counted as the faults they inject.
fn tasks(rng: &mut Rng, t: &mut Tally, n: usize, processes: bool, hang: bool) -> Vec<(u64, u8)> {
    let items = modes(rng, n, processes, hang);
    count_faults(t, &items);
    items
}

/// One round: fresh pools, one scenario, every outcome checked, pools
/// dropped.
fn round(
    rng: &mut Rng,
    t: &mut Tally,
    watch: &Watch,
    workers: usize,
    processes: bool,
    scenario: u64,
) -> crew::Result<()> {
    let n = 1 + rng.below(120) as usize;
    let ex = Exposure {
        processes,
        ..Exposure::default()
    };
    let what = |op: &str, n: usize| format!("{op} of {n} (processes: {processes})");
    match scenario {
        // map (some rounds with a task timeout on processes)
        0 => {
            let timeout = processes && rng.chance(30);
            let items = tasks(rng, t, n, processes, timeout);
            let ex = Exposure { timeout, ..ex };
            let chunk = 1 + rng.below(8) as usize;
            let out = watched(t, watch, "map", processes, what("map", n), |_| {
                Ok(on_backend!(processes, pool = {
                    let mut b = Pool::builder().processes(workers);
                    if timeout {
                        b = b.task_timeout(Duration::from_millis(300));
                    }
                    b.build()?
                }, Pool::threads(workers)? => {
                    pool.with_chunksize(chunk).map(work1, items.clone())
                }))
            })?;
            judge_all(t, "map", &items, out, ex);
        }
        // imap, sometimes dropped half-way
        1 => {
            let items = tasks(rng, t, n, processes, false);
            let take = if rng.chance(20) {
                t.fault("imap dropped half-way", 1);
                n / 2
            } else {
                n
            };
            let check =
                |t: &mut Tally, it: &mut dyn FnMut(Duration) -> Option<crew::Result<u64>>| {
                    for (i, &(x, mode)) in items.iter().enumerate().take(take) {
                        match it(BOUND) {
                            Some(Err(e)) if e.is_timeout() => {
                                t.violation(format!("imap: item {i} not ready within {BOUND:?}"));
                                return;
                            }
                            Some(r) => t.check("imap", x, mode, &r, ex),
                            None => {
                                t.violation(format!("imap: ended after {i} of {n} items"));
                                return;
                            }
                        }
                    }
                    if take == n && it(BOUND).is_some() {
                        t.violation(format!("imap: more than {n} items"));
                    }
                };
            watched(t, watch, "imap", processes, what("imap", n), |t| {
                on_backend!(processes, pool = Pool::processes(workers)?, Pool::threads(workers)? => {
                    let mut it = pool.imap(work1, items.clone());
                    check(t, &mut |d| it.next_timeout(d));
                });
                Ok(())
            })?;
        }
        // submit, with cancels
        2 => {
            let items = tasks(rng, t, n.min(40), processes, false);
            let cancel: Vec<bool> = items.iter().map(|_| rng.chance(15)).collect();
            t.fault("cancel", cancel.iter().filter(|&&c| c).count() as u64);
            let what = what("submit", items.len());
            watched(t, watch, "submit", processes, what, |t| {
                on_backend!(processes, exec = Executor::processes(workers)?, Executor::threads(workers)? => {
                    let futures: Vec<_> = items
                        .iter()
                        .map(|&(x, mode)| exec.submit(work, (x, mode)))
                        .collect();
                    for (f, _) in futures.iter().zip(&cancel).filter(|(_, c)| **c) {
                        f.cancel();
                    }
                    judge_pending(t, "submit", &items, futures, |i| Exposure {
                        cancel: cancel[i],
                        ..ex
                    });
                });
                Ok(())
            })?;
        }
        // apply_async, on a pool kept (3) or dropped or terminated with the
        // work in flight (5)
        3 | 5 => {
            let dropped = scenario == 5;
            let items = tasks(
                rng,
                t,
                n.min(if dropped { 30 } else { 40 }),
                processes,
                false,
            );
            // A dropped pool is terminated first, sometimes.
            let terminate = dropped && rng.chance(50);
            let (op, what) = if dropped {
                t.fault(
                    if terminate {
                        "pool terminate"
                    } else {
                        "pool drop"
                    },
                    1,
                );
                let what = format!(
                    "pool drop with {} in flight (processes: {processes})",
                    items.len()
                );
                ("pool drop", what)
            } else {
                ("apply_async", what("apply_async", items.len()))
            };
            let ex = Exposure { dropped, ..ex };
            watched(t, watch, op, processes, what, |t| {
                on_backend!(processes, pool = Pool::processes(workers)?, Pool::threads(workers)? => {
                    let handles: Vec<_> = items
                        .iter()
                        .map(|&(x, mode)| pool.apply_async(work, (x, mode)))
                        .collect();
                    if dropped {
                        if terminate {
                            pool.terminate();
                        }
                        drop(pool);
                    }
                    judge_pending(t, op, &items, handles, |_| ex);
                });
                Ok(())
            })?;
        }
        // Parallel
        _ => {
            let items = tasks(rng, t, n, processes, false);
            let prefer = if processes {
                Prefer::Processes
            } else {
                Prefer::Threads
            };
            let out = watched(t, watch, "Parallel", processes, what("Parallel", n), |_| {
                Ok(Parallel::new()
                    .n_jobs(workers as isize)
                    .prefer(prefer)
                    // Every outcome, so that each task is judged.
                    .every_outcome(true)
                    .run(items.iter().map(|&(x, mode)| delayed(work, (x, mode)))))
            })?;
            judge_all(t, "Parallel", &items, out, ex);
        }
    }
    Ok(())
}

/// Checks a whole map's outcome: one per item.
fn judge_all(
    t: &mut Tally,
    op: &str,
    items: &[(u64, u8)],
    out: Result<Vec<u64>, crew::MapError<u64>>,
    ex: Exposure,
) {
    let results: Vec<crew::Result<u64>> = match out {
        Ok(v) => v.into_iter().map(Ok).collect(),
        Err(e) => e.into_results(),
    };
    if results.len() != items.len() {
        t.violation(format!(
            "{op}: {} outcomes for {} items",
            results.len(),
            items.len()
        ));
        return;
    }
    for (r, &(x, mode)) in results.iter().zip(items) {
        t.check(op, x, mode, r, ex);
    }
}
