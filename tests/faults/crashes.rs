//! A task that crashes its worker (segfault, abort, stack overflow, memory
//! limit, exit, endless loop under a timeout) or panics fails alone: the
//! other tasks of the same map succeed, including those that shared its
//! chunk, and the pool still works afterwards.

use std::hint::black_box;
use std::time::Duration;

use crew::core::{Runs, Unary};
use crew::{Error, Pool, Processes};

use crate::support::{
    LONG, Registry, SIGKILL, SIGSEGV, eventually, is_dead, raise_signal, register_pid, send_signal,
    within,
};

/// The item that faults in every map below; with chunks of 4 it shares its
/// chunk with items 4, 6 and 7, which must be re-run on the next worker.
const FAULTY: u32 = 5;
const ITEMS: u32 = 16;

/// Maps `task` over `0..ITEMS` in chunks of 4 and checks that exactly item
/// [`FAULTY`] failed, as `expect` says, and every other item returned
/// `x * 2`; then checks the pool still runs a map. `F` is generic, not a
/// `fn` pointer: a process task must be zero-sized.
fn only_the_faulty_item_fails<F>(pool: Pool<Processes>, task: F, expect: fn(&Error))
where
    F: Send + 'static,
    Processes: Runs<'static, Unary<F>, u32, u32>,
{
    let outcome = within(LONG, "a map with a crashing task", {
        let pool = pool.clone();
        move || pool.with_chunksize(4).map(task, 0..ITEMS)
    });
    let err = outcome.expect_err("the faulty item must fail the map");
    assert_eq!(err.len(), ITEMS as usize);
    let failed: Vec<usize> = err.errors().map(|(i, _)| i).collect();
    assert_eq!(failed, [FAULTY as usize], "only the faulty item fails");
    for (i, r) in err.results().iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u32 * 2, "item {i}"),
            Err(e) => {
                assert_eq!(e.index(), Some(i), "{e}");
                expect(e);
            }
        }
    }
    still_works(pool);
}

/// Separate from the generic caller, whose `Runs` bound would take this
/// closure for its `F`.
fn still_works(pool: Pool<Processes>) {
    let after = within(LONG, "a map after the crash", move || {
        pool.map(|x: u32| x + 1, 0..8)
    });
    assert_eq!(
        after.expect("the pool still works"),
        (1..9).collect::<Vec<_>>()
    );
}

fn lost_with(e: &Error, causes: &[&str]) {
    assert!(e.is_worker_lost(), "{e}");
    let cause = e.worker_lost_cause().expect("a lost worker has a cause");
    assert!(
        causes.iter().any(|c| cause.contains(c)),
        "cause {cause:?} names none of {causes:?}"
    );
    assert!(e.worker().is_some(), "the error names its worker: {e}");
}

fn segfaults(x: u32) -> u32 {
    if x == FAULTY {
        // SAFETY: none; this write is the fault under test. It is volatile
        // so that it is not optimised out.
        unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
    }
    x * 2
}

#[test]
fn segfaulting_task_fails_alone() {
    only_the_faulty_item_fails(Pool::processes(2).unwrap(), segfaults, |e| {
        lost_with(e, &["SIGSEGV"])
    });
}

fn raises_sigsegv(x: u32) -> u32 {
    if x == FAULTY {
        raise_signal(SIGSEGV);
    }
    x * 2
}

#[test]
fn task_raising_sigsegv_fails_alone() {
    only_the_faulty_item_fails(Pool::processes(2).unwrap(), raises_sigsegv, |e| {
        lost_with(e, &["SIGSEGV"])
    });
}

fn aborts(x: u32) -> u32 {
    if x == FAULTY {
        std::process::abort();
    }
    x * 2
}

#[test]
fn aborting_task_fails_alone() {
    only_the_faulty_item_fails(Pool::processes(2).unwrap(), aborts, |e| {
        lost_with(e, &["SIGABRT"])
    });
}

fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth as u8; 512]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(frame[(depth % 512) as usize])
}

fn overflows_stack(x: u32) -> u32 {
    if x == FAULTY {
        black_box(recurse(0));
    }
    x * 2
}

#[test]
fn stack_overflowing_task_fails_alone() {
    // The task runs on the worker's main thread, entered before `main`,
    // where std's guard-page handler (which prints "has overflowed its
    // stack" and aborts) may not be installed: either signal is a crash.
    only_the_faulty_item_fails(Pool::processes(2).unwrap(), overflows_stack, |e| {
        lost_with(e, &["SIGSEGV", "SIGABRT"])
    });
}

fn allocates_2_gib(x: u32) -> u32 {
    if x == FAULTY {
        // Touch it page by page in 64 MiB steps, so that the test does not
        // take 2 GiB of this machine should the limit not hold.
        let mut blocks = Vec::new();
        for _ in 0..32 {
            let mut block = vec![0u8; 64 << 20];
            for page in block.iter_mut().step_by(4096) {
                *page = 1;
            }
            blocks.push(black_box(block));
        }
        black_box(&blocks);
    }
    x * 2
}

#[test]
#[cfg_attr(
    crew_asan,
    ignore = "AddressSanitizer reserves terabytes of address space: no RLIMIT_AS can apply"
)]
fn task_over_the_memory_limit_fails_alone() {
    let pool = Pool::builder()
        .processes(2)
        .memory_limit(512 << 20)
        .build()
        .unwrap();
    // An allocation that fails aborts the process (`handle_alloc_error`).
    only_the_faulty_item_fails(pool, allocates_2_gib, |e| {
        lost_with(e, &["SIGABRT", "SIGSEGV", "SIGKILL"])
    });
}

fn exits_3(x: u32) -> u32 {
    if x == FAULTY {
        std::process::exit(3);
    }
    x * 2
}

#[test]
fn exiting_task_fails_alone() {
    only_the_faulty_item_fails(Pool::processes(2).unwrap(), exits_3, |e| {
        lost_with(e, &["exited with code 3"])
    });
}

fn loops_forever(x: u32) -> u32 {
    if x == FAULTY {
        let mut n = 0u64;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
    x * 2
}

#[test]
fn endless_task_times_out_alone() {
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    only_the_faulty_item_fails(pool, loops_forever, |e| {
        assert!(e.is_timeout(), "{e}");
        assert!(e.worker().is_some(), "{e}");
    });
}

fn panics(x: u32) -> u32 {
    if x == FAULTY {
        panic!("boom at {x}");
    }
    x * 2
}

#[test]
fn panicking_task_fails_alone_with_its_message() {
    only_the_faulty_item_fails(Pool::processes(2).unwrap(), panics, |e| {
        assert!(e.is_panic(), "{e}");
        assert_eq!(e.panic_message(), Some("boom at 5"));
        assert!(e.worker().is_some(), "{e}");
    });
}

fn panics_on_odd(x: u32) -> u32 {
    assert!(x.is_multiple_of(2), "odd item {x}");
    x * 2
}

#[test]
fn every_panic_keeps_its_message() {
    // Panics are caught in the worker, one per item, each with its own
    // message, while the same chunk's other items succeed.
    let pool = Pool::processes(1).unwrap();
    let err = within(LONG, "a map of panicking tasks", move || {
        pool.with_chunksize(3).map(panics_on_odd, 0..12)
    })
    .expect_err("odd items panic");
    assert_eq!(err.failed(), 6);
    for (i, r) in err.results().iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v as usize, i * 2),
            Err(e) => {
                assert_eq!(i % 2, 1, "{e}");
                let message = e.panic_message().expect("a panic");
                assert!(message.contains(&format!("odd item {i}")), "{message}");
            }
        }
    }
}

fn starts_a_sleeper_then_aborts(x: u32) -> u32 {
    if x == FAULTY {
        let sleeper = std::process::Command::new("sleep")
            .arg("120")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start sleep");
        register_pid("sleeper", sleeper.id());
        std::process::abort();
    }
    x * 2
}

#[test]
fn crash_is_noticed_while_a_subprocess_of_the_task_lives() {
    // The task's subprocess inherits the worker's socket; the worker's
    // death must still be noticed at once, not when the subprocess ends.
    let sleepers = Registry::new("sleeper");
    let _cleanup = KillOnDrop(&sleepers);
    only_the_faulty_item_fails(
        Pool::processes(2).unwrap(),
        starts_a_sleeper_then_aborts,
        |e| lost_with(e, &["SIGABRT"]),
    );
    let sleeper = sleepers.wait_for(1)[0];
    assert!(
        !is_dead(sleeper),
        "the map returned before the sleeper ended"
    );
}

/// Kills every process registered in a [`Registry`] when dropped.
struct KillOnDrop<'a>(&'a Registry);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        for pid in self.0.pids() {
            send_signal(pid, SIGKILL);
        }
    }
}

fn always_aborts_on_faulty(x: u32) -> u32 {
    if x == FAULTY {
        crate::support::register_worker("always-aborts");
        std::process::abort();
    }
    x * 2
}

#[test]
fn retries_give_up_on_a_task_that_always_crashes() {
    // Two retries: the faulty item runs three times, on three workers, then
    // fails like any lost task; the rest of the map is unaffected.
    let attempts = Registry::new("always-aborts");
    let pool = Pool::builder()
        .processes(2)
        .retries(2, Duration::from_millis(1))
        .build()
        .unwrap();
    only_the_faulty_item_fails(pool, always_aborts_on_faulty, |e| {
        lost_with(e, &["SIGABRT"])
    });
    assert_eq!(attempts.pids().len(), 3, "1 run + 2 retries");
}

#[test]
fn retried_timeouts_still_time_out() {
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(200))
        .retries(1, Duration::from_millis(1))
        .build()
        .unwrap();
    only_the_faulty_item_fails(pool, loops_forever, |e| assert!(e.is_timeout(), "{e}"));
}

#[test]
fn imap_goes_on_past_a_crash() {
    let pool = Pool::processes(2).unwrap();
    let results: Vec<crew::Result<u32>> = within(LONG, "imap over a crash", move || {
        pool.imap(segfaults, 0..ITEMS).collect()
    });
    assert_eq!(results.len(), ITEMS as usize);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u32 * 2),
            Err(e) => {
                assert_eq!(i, FAULTY as usize, "{e}");
                lost_with(e, &["SIGSEGV"]);
            }
        }
    }
    assert!(results[FAULTY as usize].is_err());
}

fn quick() -> u32 {
    crate::support::register_worker("held-result");
    std::process::id()
}

/// Waits until the file `gate` exists (for at most [`LONG`]).
fn wait_for_gate(gate: &str) {
    let until = std::time::Instant::now() + LONG;
    while !std::path::Path::new(gate).exists() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn waits_for_gate(gate: String) -> u32 {
    wait_for_gate(&gate);
    0
}

fn waits_for_gate_then_aborts(gate: String) -> u32 {
    wait_for_gate(&gate);
    std::process::abort();
}

/// A path for a gate file; remove it with the returned guard.
fn gate_path(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("crew-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_str().expect("a utf-8 temp dir").to_owned()
}

fn open_gate(gate: &str) {
    std::fs::write(gate, b"open").expect("open a gate");
}

#[test]
fn finished_result_survives_the_next_task_crashing() {
    // One worker, warmed up so that it is sent several tasks at a time. While
    // a first task holds it, a quick task and one that crashes on request
    // queue up in the worker. The quick task's result must reach us while
    // the crashing one still runs, and it must not run again when its
    // worker dies.
    let runs = Registry::new("held-result");
    let ex = crew::Executor::processes(1).unwrap();
    for i in 0..20u32 {
        let echo = ex.submit(|x: u32| x, (i,));
        assert_eq!(echo.result_timeout(LONG).unwrap(), i);
    }
    let (first_gate, crash_gate) = (gate_path("first"), gate_path("crash"));
    let first = ex.submit(waits_for_gate, (first_gate.clone(),));
    let quick = ex.submit(quick, ());
    let crashing = ex.submit(waits_for_gate_then_aborts, (crash_gate.clone(),));
    eventually(LONG, "the first task runs", || first.running());
    open_gate(&first_gate);
    let arrived_while_running = quick.wait_timeout(Duration::from_secs(10));
    open_gate(&crash_gate);
    let crashed = crashing.result_timeout(LONG);
    for gate in [first_gate, crash_gate] {
        let _ = std::fs::remove_file(gate);
    }
    assert_eq!(first.result_timeout(LONG).unwrap(), 0);
    assert!(crashed.is_err_and(|e| e.is_worker_lost()));
    assert!(
        arrived_while_running,
        "the result came only after the next task ended"
    );
    let quick = quick.result_timeout(LONG);
    assert!(quick.is_ok(), "{quick:?}");
    assert_eq!(runs.pids().len(), 1, "the finished task ran again");
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn calls_queued_on_a_dead_worker_run_on_the_next() {
    // While a first task holds the (warmed-up) worker, five more calls are
    // sent to it. The first crashes: the five never started, so they must
    // run on the replacement worker, not end cancelled.
    let ex = crew::Executor::processes(1).unwrap();
    for i in 0..20u32 {
        let echo = ex.submit(|x: u32| x, (i,));
        assert_eq!(echo.result_timeout(LONG).unwrap(), i);
    }
    let crash_gate = gate_path("queued-crash");
    let crashing = ex.submit(waits_for_gate_then_aborts, (crash_gate.clone(),));
    let queued: Vec<_> = (0..5u32).map(|i| ex.submit(|x: u32| x + 1, (i,))).collect();
    eventually(LONG, "the crashing task runs", || crashing.running());
    open_gate(&crash_gate);
    let crashed = crashing.result_timeout(LONG);
    let _ = std::fs::remove_file(&crash_gate);
    assert!(crashed.is_err_and(|e| e.is_worker_lost()));
    for (i, f) in queued.into_iter().enumerate() {
        let outcome = f.result_timeout(LONG);
        assert_eq!(
            outcome.as_ref().ok(),
            Some(&(i as u32 + 1)),
            "call {i}: {outcome:?}"
        );
    }
    ex.shutdown_timeout(LONG, true);
}

fn crashes_on_first_attempt() -> u32 {
    let marker = std::env::temp_dir().join(format!(
        "crew-faults-{}-first-attempt",
        std::os::unix::process::parent_id()
    ));
    if !marker.exists() {
        std::fs::write(&marker, b"").expect("mark the first attempt");
        std::process::abort();
    }
    std::process::id()
}

#[test]
fn retried_call_succeeds() {
    let marker = gate_path("first-attempt");
    let pool = Pool::builder()
        .processes(1)
        .retries(2, Duration::from_millis(10))
        .build()
        .unwrap();
    let outcome = pool
        .apply_async(crashes_on_first_attempt, ())
        .get_timeout(LONG);
    let _ = std::fs::remove_file(&marker);
    assert!(outcome.is_ok(), "the retry succeeds: {outcome:?}");
}
