//! A burst of small submits on worker processes: the parent sends them to a
//! busy worker many at a time (each worker holds up to its allowance, and
//! one write carries every frame queued), and the worker answers many at a
//! time. Whatever goes wrong with one task of such a batch stays with that
//! task: a crash, a timeout and a cancel each end only their own, the others
//! of the batch run (again on the next worker if theirs died), and
//! `as_completed` yields every one exactly once, in the order they finish.

use std::collections::HashSet;
use std::time::Duration;

use crew::{Executor, Future, ProcessConfig, Processes};

use crate::support::{LONG, eventually};

/// Tasks of a burst.
const BURST: u32 = 400;
/// The task of the burst that misbehaves.
const FAULTY: u32 = 200;

/// Runs enough tiny tasks on `ex` that its workers' allowance is large:
/// the burst that follows is sent ahead, many tasks to a worker.
fn warm(ex: &Executor<Processes>) {
    let warm: Vec<_> = (0..200u32).map(|i| ex.submit(|x: u32| x, (i,))).collect();
    for (i, f) in warm.into_iter().enumerate() {
        assert_eq!(f.result_timeout(LONG).unwrap(), i as u32);
    }
}

fn aborts_at_faulty(x: u32) -> u32 {
    if x == FAULTY {
        std::process::abort();
    }
    x * 2
}

fn loops_at_faulty(x: u32) -> u32 {
    if x == FAULTY {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    x * 2
}

/// Waits (at most [`LONG`]) for the file `gate`, then returns `x * 2`.
fn waits_for_gate(gate: String, x: u32) -> u32 {
    let until = std::time::Instant::now() + LONG;
    while !std::path::Path::new(&gate).exists() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    x * 2
}

/// On a warm pool of one worker: a task held at a new gate named `name`,
/// running, and a burst of tiny tasks submitted behind it (sent ahead to
/// that worker). Returns the pool, the gate, the held task and the burst.
fn held_task_and_burst(name: &str) -> (Executor<Processes>, String, Future<u32>, Vec<Future<u32>>) {
    let ex = Executor::processes(1).unwrap();
    warm(&ex);
    let gate = gate_path(name);
    let first = ex.submit(waits_for_gate, (gate.clone(), 0u32));
    let burst: Vec<_> = (1..BURST)
        .map(|x| ex.submit(|x: u32| x * 2, (x,)))
        .collect();
    eventually(LONG, "the first task runs", || first.running());
    (ex, gate, first, burst)
}

/// Marks that it started (the file `{gate}.started`), then
/// [`waits_for_gate`].
fn marks_then_waits_for_gate(gate: String, x: u32) -> u32 {
    std::fs::write(format!("{gate}.started"), b"").expect("mark the start");
    waits_for_gate(gate, x)
}

fn gate_path(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("crew-burst-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_str().expect("a utf-8 temp dir").to_owned()
}

/// Checks that task `FAULTY` of `futures` failed as `expect` says and every
/// other returned `x * 2`.
fn only_the_faulty_task_failed(futures: Vec<crew::Future<u32>>, expect: fn(&crew::Error)) {
    for (x, f) in (0..).zip(futures) {
        let outcome = f.result_timeout(LONG);
        if x == FAULTY {
            expect(&outcome.expect_err("the faulty task failed"));
        } else {
            assert_eq!(outcome.ok(), Some(x * 2), "task {x}");
        }
    }
}

#[test]
fn a_crash_inside_a_burst_fails_only_its_task() {
    let ex = Executor::processes(1).unwrap();
    warm(&ex);
    let futures: Vec<_> = (0..BURST)
        .map(|x| ex.submit(aborts_at_faulty, (x,)))
        .collect();
    only_the_faulty_task_failed(futures, |e| assert!(e.is_worker_lost(), "{e}"));
    // The pool goes on.
    assert_eq!(
        ex.submit(|x: u32| x + 1, (1,))
            .result_timeout(LONG)
            .unwrap(),
        2
    );
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn a_timeout_inside_a_burst_fails_only_its_task() {
    let ex = Executor::from_backend(
        Processes::with_config(ProcessConfig {
            workers: 1,
            task_timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        })
        .unwrap(),
    );
    warm(&ex);
    let futures: Vec<_> = (0..BURST)
        .map(|x| ex.submit(loops_at_faulty, (x,)))
        .collect();
    only_the_faulty_task_failed(futures, |e| assert!(e.is_timeout(), "{e}"));
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn cancelling_one_task_sent_ahead_cancels_only_it() {
    // The first task holds the only worker until its gate opens; the burst
    // behind it is sent ahead to that worker. One of the burst is cancelled
    // while it waits there: it ends cancelled (its worker is killed when it
    // reaches it), every other task runs.
    let (ex, gate, first, burst) = held_task_and_burst("cancel-ahead");
    // The first of the burst: sent ahead at once (after the warm-up the
    // worker's allowance is many tiny tasks), so the parent counts it as
    // started, though the worker has not reached it.
    let victim = &burst[0];
    eventually(LONG, "the task behind the first is sent ahead", || {
        victim.running()
    });
    assert!(victim.cancel(), "a task sent ahead can be cancelled");
    std::fs::write(&gate, b"open").unwrap();
    let first = first.result_timeout(LONG);
    let _ = std::fs::remove_file(&gate);
    assert_eq!(first.ok(), Some(0));
    for (x, f) in (1..).zip(burst) {
        let outcome = f.result_timeout(LONG);
        if x == 1 {
            assert!(outcome.is_err_and(|e| e.is_cancelled()), "task {x}");
        } else {
            assert_eq!(outcome.ok(), Some(x * 2), "task {x}");
        }
    }
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn cancelling_the_running_task_of_a_batch_spares_the_rest() {
    // The running task is cancelled: its worker is killed, and the tasks
    // sent ahead behind it run on the next worker.
    let (ex, gate, first, burst) = held_task_and_burst("cancel-running");
    assert!(first.cancel(), "a running process task can be cancelled");
    let first = first.result_timeout(LONG);
    let _ = std::fs::remove_file(&gate);
    assert!(first.is_err_and(|e| e.is_cancelled()));
    for (x, f) in (1..).zip(burst) {
        assert_eq!(f.result_timeout(LONG).ok(), Some(x * 2), "task {x}");
    }
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn as_completed_yields_a_burst_once_each_in_the_order_it_finishes() {
    // Task 0 cannot finish before its gate opens, which happens only once
    // every other task has come out of `as_completed`: so it comes last,
    // after the burst submitted behind it, which the idle worker takes back
    // from the busy one. Every task comes out exactly once.
    let ex = Executor::processes(2).unwrap();
    warm(&ex);
    let gate = gate_path("as-completed");
    let mut futures = vec![ex.submit(waits_for_gate, (gate.clone(), 0u32))];
    futures.extend((1..BURST).map(|x| ex.submit(|x: u32| x * 2, (x,))));
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for f in crew::as_completed_timeout(futures, LONG) {
        let f = f.expect("the burst completes in time");
        let v = f.result().expect("no task fails");
        assert!(seen.insert(v), "{v} came out twice");
        order.push(v);
        if order.len() == (BURST - 1) as usize {
            std::fs::write(&gate, b"open").unwrap();
        }
    }
    let _ = std::fs::remove_file(&gate);
    assert_eq!(order.len(), BURST as usize);
    assert_eq!(order.last(), Some(&0), "the gated task finished last");
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn tasks_cancelled_while_sent_ahead_stay_cancelled_when_their_worker_is_killed() {
    // The first task holds the only worker; every task of the burst behind
    // it is cancelled (sent ahead or still queued: `cancel()` returns true
    // either way). The worker is killed when it reaches the first of them;
    // the others, never started, must end cancelled too, not go back to
    // the queue and run on the next worker.
    let (ex, gate, first, burst) = held_task_and_burst("cancel-all-ahead");
    for f in &burst {
        assert!(f.cancel(), "a queued or sent-ahead task can be cancelled");
    }
    std::fs::write(&gate, b"open").unwrap();
    let first = first.result_timeout(LONG);
    let _ = std::fs::remove_file(&gate);
    assert_eq!(first.ok(), Some(0));
    for (x, f) in (1..).zip(burst) {
        let outcome = f.result_timeout(LONG);
        assert!(outcome.is_err_and(|e| e.is_cancelled()), "task {x}");
    }
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn tasks_cancelled_while_sent_ahead_stay_cancelled_when_taken_back() {
    // Two workers, each held at its own gate, and a burst sent ahead
    // behind them, every task of it cancelled. The second gate opens: that
    // worker, once through its own cancelled tasks, idles and takes back
    // what the other still holds. Taken back, a cancelled task must end
    // cancelled, not run on the idle worker.
    let ex = Executor::processes(2).unwrap();
    warm(&ex);
    let (one, two) = (gate_path("take-back-1"), gate_path("take-back-2"));
    let a = ex.submit(marks_then_waits_for_gate, (one.clone(), 0u32));
    let b = ex.submit(marks_then_waits_for_gate, (two.clone(), 0u32));
    // Both started, so on both workers (one sent behind the other is taken
    // back by the idle worker): the burst can only queue behind them.
    eventually(LONG, "both held tasks start", || {
        [&one, &two]
            .iter()
            .all(|g| std::path::Path::new(&format!("{g}.started")).exists())
    });
    let burst: Vec<_> = (1..BURST)
        .map(|x| ex.submit(|x: u32| x * 2, (x,)))
        .collect();
    for f in &burst {
        assert!(f.cancel(), "a queued or sent-ahead task can be cancelled");
    }
    std::fs::write(&two, b"open").unwrap();
    assert_eq!(b.result_timeout(LONG).ok(), Some(0));
    // The worker freed by the second gate has had time to take back what
    // the first still holds once every cancelled task is settled.
    for (x, f) in (1..).zip(&burst) {
        let outcome = f.result_timeout(LONG);
        assert!(
            matches!(&outcome, Err(e) if e.is_cancelled()),
            "task {x}: {outcome:?}"
        );
    }
    std::fs::write(&one, b"open").unwrap();
    assert_eq!(a.result_timeout(LONG).ok(), Some(0));
    for g in [&one, &two] {
        let _ = std::fs::remove_file(g);
        let _ = std::fs::remove_file(format!("{g}.started"));
    }
    ex.shutdown_timeout(LONG, true);
}
