//! What only the thread back-end does: tasks that capture and borrow, maps
//! nested inside tasks of the same pool, a running task that cannot be
//! cancelled, worker-thread names.

use std::sync::Arc;
use std::time::Duration;

use crew::{Executor, Pool};

use crate::common::tasks::{double, gated};
use crate::common::{Gate, LONG, returns_within_long};

#[test]
fn zero_workers_is_invalid_input() {
    assert!(Pool::threads(0).unwrap_err().is_invalid_input());
    assert!(Executor::threads(0).unwrap_err().is_invalid_input());
    assert!(
        Pool::builder()
            .threads(0)
            .build()
            .unwrap_err()
            .is_invalid_input()
    );
}

#[test]
fn blocking_map_borrows_local_data() {
    let pool = Pool::threads(2).unwrap();
    let table: Vec<u64> = (0..1000).map(|i| i * 3).collect();
    let got = pool.map(|i: usize| table[i] + 1, 0..table.len()).unwrap();
    assert_eq!(got, table.iter().map(|x| x + 1).collect::<Vec<_>>());
    let words = ["a", "bb", "ccc"];
    let lens = pool.map(|w: &str| w.len(), words.iter().copied()).unwrap();
    assert_eq!(lens, [1, 2, 3]);
    let total = pool
        .apply(|xs: &[u64]| xs.iter().sum::<u64>(), (&table[..],))
        .unwrap();
    assert_eq!(total, table.iter().sum::<u64>());
}

#[test]
fn async_calls_and_futures_accept_capturing_closures() {
    let pool = Pool::threads(2).unwrap();
    let offset = Arc::new(100u64);
    let o = offset.clone();
    let r = pool.map_async(move |x: u64| x + *o, 0..5u64);
    assert_eq!(r.get_timeout(LONG).unwrap(), [100, 101, 102, 103, 104]);
    let o = offset.clone();
    let lazy: Vec<u64> = pool
        .imap(move |x: u64| x * *o, 0..3u64)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lazy, [0, 100, 200]);
    let ex = Executor::threads(2).unwrap();
    let o = offset.clone();
    assert_eq!(
        ex.submit(move || *o + 1, ()).result_timeout(LONG).unwrap(),
        101
    );
}

#[test]
fn nested_map_inside_a_task_does_not_deadlock() {
    for workers in [1, 2] {
        let pool = Pool::threads(workers).unwrap();
        let inner = pool.clone();
        // Every worker blocks in an inner map: the inner chunks must still run.
        let r = pool.map_async(
            move |x: u64| inner.map(double, 0..x).unwrap().iter().sum::<u64>(),
            0..8u64,
        );
        let expected: Vec<u64> = (0..8u64).map(|x| x * x.saturating_sub(1)).collect();
        assert_eq!(r.get_timeout(LONG).unwrap(), expected, "{workers} workers");

        let p = pool.clone();
        let got = returns_within_long("a blocking map nested two deep", move || {
            p.map(
                |x: u64| {
                    p.map(|y: u64| p.apply(double, (y,)).unwrap() + x, 0..4u64)
                        .unwrap()
                        .iter()
                        .sum::<u64>()
                },
                0..6u64,
            )
            .unwrap()
        });
        assert_eq!(got, (0..6).map(|x| 12 + 4 * x).collect::<Vec<u64>>());
    }
}

#[test]
fn nested_imap_inside_a_task_does_not_deadlock() {
    let pool = Pool::threads(2).unwrap();
    let inner = pool.clone();
    let r = pool.map_async(
        move |x: u64| inner.imap(double, 0..x).map(|r| r.unwrap()).sum::<u64>(),
        0..4u64,
    );
    let expected: Vec<u64> = (0..4u64).map(|x| x * x.saturating_sub(1)).collect();
    assert_eq!(r.get_timeout(LONG).unwrap(), expected);
}

#[test]
fn a_running_task_cannot_be_cancelled_on_threads() {
    let ex = Executor::threads(1).unwrap();
    let gate = Gate::new();
    let f = ex.submit(gated, (gate.key(), 0u64));
    gate.wait_started(0);
    crate::common::eventually("the future reports running", || f.running());
    assert!(!f.cancel(), "a thread cannot be stopped mid-task");
    assert!(!f.cancelled());
    gate.open();
    assert_eq!(f.result_timeout(LONG).unwrap(), 0);
}

#[test]
fn join_from_inside_a_worker_is_invalid_input() {
    let pool = Pool::threads(1).unwrap();
    let gate = Gate::new();
    let p = pool.clone();
    let key = gate.key();
    let r = pool.apply_async(
        move || {
            gated(key.clone(), 0);
            p.join()
        },
        (),
    );
    gate.wait_started(0);
    pool.close();
    gate.open();
    let joined = r.get_timeout(LONG).unwrap();
    assert!(joined.unwrap_err().is_invalid_input());
    assert!(pool.join_timeout(LONG).unwrap());
}

#[test]
fn worker_threads_carry_the_builder_name() {
    let pool = Pool::builder()
        .threads(2)
        .name("conformance")
        .stack_size(1 << 20)
        .build()
        .unwrap();
    let names = pool
        .map(
            |_: u32| std::thread::current().name().map(str::to_owned),
            0..64u32,
        )
        .unwrap();
    for name in names {
        let name = name.expect("named worker");
        assert!(
            name == "conformance-0" || name == "conformance-1",
            "unexpected worker name {name}"
        );
    }
}

/// Panics when dropped: a task capturing one fails when the worker drops it.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropping the guard");
        }
    }
}

#[test]
fn a_task_whose_capture_panics_on_drop_fails_and_its_worker_survives() {
    let pool = Pool::threads(1).unwrap();
    let guard = PanicsOnDrop;
    let first = pool.apply_async(
        move || {
            let _keep = &guard;
            1
        },
        (),
    );
    let e = first.get_timeout(Duration::from_secs(30)).unwrap_err();
    assert!(e.is_panic(), "{e}");
    // The one worker is still there to run the next task.
    let next = pool.apply_async(|| 2, ());
    assert_eq!(next.get_timeout(Duration::from_secs(30)).unwrap(), 2);
    // A map whose task panics on drop: whichever thread drops the task last
    // (a worker: the map fails; the caller: the panic is the caller's), the
    // pool lives on.
    let guard = PanicsOnDrop;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.map(
            move |x: u32| {
                let _keep = &guard;
                x
            },
            0..4,
        )
    }));
    assert!(r.is_err() || r.unwrap().is_err());
    assert_eq!(pool.map(|x: u32| x + 1, 0..3).unwrap(), [1, 2, 3]);
    pool.close();
    assert!(pool.join_timeout(Duration::from_secs(3)).unwrap());
}
