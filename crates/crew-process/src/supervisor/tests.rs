//! The blocking caller's own exchange (`Shared::submit_blocking`): it is
//! taken when a worker idles, and it keeps every guarantee of the proxy's
//! path (crash, timeout, long tasks, recycling, terminate, many callers).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crew_core::engine::call_blocking;
use crew_core::{Backend, Star};

use crate::{ProcessConfig, Processes};

fn pool(config: ProcessConfig) -> Processes {
    Processes::with_config(config).expect("a pool starts")
}

fn exchanges(p: &Processes) -> usize {
    p.shared.caller_exchanges.load(Ordering::Relaxed)
}

/// Calls until one is driven by the caller (the proxies must first park
/// with their workers idle), pausing between calls; panics after 10 s.
fn until_caller_drives(p: &Processes) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = exchanges(p);
    while exchanges(p) == before {
        assert!(
            Instant::now() < deadline,
            "no call was driven by its caller"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(call_blocking(p, Star(|x: u64| x + 1), (1u64,)).unwrap(), 2);
    }
}

#[test]
fn calls_on_an_idle_worker_are_driven_by_the_caller() {
    let p = pool(ProcessConfig {
        workers: 2,
        ..Default::default()
    });
    until_caller_drives(&p);
    for x in 0..200u64 {
        assert_eq!(
            call_blocking(&p, Star(|x: u64| x * x), (x,)).unwrap(),
            x * x
        );
    }
}

#[test]
fn a_crash_in_a_caller_driven_call_is_worker_lost_and_the_pool_goes_on() {
    let p = pool(ProcessConfig {
        workers: 1,
        ..Default::default()
    });
    // A call finds the proxy not yet parked now and then (it took the call
    // itself); repeat until a crashing call was the caller's to begin.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        until_caller_drives(&p);
        let before = exchanges(&p);
        let e = call_blocking(&p, Star(|| -> u8 { std::process::abort() }), ()).unwrap_err();
        assert!(e.is_worker_lost(), "{e}");
        if exchanges(&p) > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no crashing call was driven by its caller"
        );
    }
    assert_eq!(
        call_blocking(&p, Star(|x: u64| x * 3), (5u64,)).unwrap(),
        15
    );
}

#[test]
fn a_caller_driven_call_that_runs_long_is_handed_to_the_proxy() {
    // The timeout is far above the 30 ms task, so a loaded machine cannot
    // make that one time out.
    let p = pool(ProcessConfig {
        workers: 1,
        task_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    // Longer than the caller drives: the proxy finishes the exchange.
    let slow = |ms: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    };
    // A call finds the proxy not yet parked now and then (it took the call
    // itself); repeat until a long call was the caller's to begin.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        until_caller_drives(&p);
        let before = exchanges(&p);
        assert_eq!(call_blocking(&p, Star(slow), (30u64,)).unwrap(), 30);
        if exchanges(&p) > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no long call was driven by its caller"
        );
    }
    // And past the pool's timeout: the proxy kills the worker.
    until_caller_drives(&p);
    let e = call_blocking(&p, Star(slow), (60_000u64,)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(call_blocking(&p, Star(|x: u64| x + 2), (5u64,)).unwrap(), 7);
}

#[test]
fn caller_driven_calls_recycle_workers_after_max_tasks() {
    let p = pool(ProcessConfig {
        workers: 1,
        max_tasks_per_child: Some(2),
        ..Default::default()
    });
    until_caller_drives(&p);
    let mut pids = std::collections::HashSet::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(5));
        pids.insert(call_blocking(&p, Star(std::process::id), ()).unwrap());
    }
    // Six calls, at most two per worker.
    assert!(pids.len() >= 3, "{pids:?}");
}

#[test]
fn many_callers_share_the_workers() {
    let p = pool(ProcessConfig {
        workers: 2,
        ..Default::default()
    });
    until_caller_drives(&p);
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let p = &p;
            s.spawn(move || {
                for x in 0..100u64 {
                    let v = t * 1000 + x;
                    assert_eq!(call_blocking(p, Star(|v: u64| v * 2), (v,)).unwrap(), v * 2);
                }
            });
        }
    });
}

#[test]
fn terminate_ends_a_caller_driven_call() {
    let p = pool(ProcessConfig {
        workers: 1,
        ..Default::default()
    });
    until_caller_drives(&p);
    let before = exchanges(&p);
    std::thread::scope(|s| {
        let stopper = s.spawn(|| {
            // Once the call is under way (driven by its caller or handed
            // over), stop the pool.
            let deadline = Instant::now() + Duration::from_secs(10);
            while exchanges(&p) == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            p.terminate();
        });
        let sleepy = |ms: u64| -> u64 {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        };
        let e = call_blocking(&p, Star(sleepy), (60_000u64,)).unwrap_err();
        assert!(e.is_cancelled() || e.is_shutdown(), "{e}");
        stopper.join().unwrap();
    });
    assert!(p.worker_pids().is_empty());
}

#[test]
fn back_to_back_calls_on_one_worker_reach_the_caller_driven_path() {
    // The first call goes through the proxy (the worker is starting); the
    // proxy must then park at once, not watch the queue and keep relaying
    // every next call.
    let p = pool(ProcessConfig {
        workers: 1,
        ..Default::default()
    });
    let before = exchanges(&p);
    let mut calls = 0u64;
    while exchanges(&p) == before {
        assert!(
            calls < 100_000,
            "no back-to-back call was driven by its caller"
        );
        assert_eq!(
            call_blocking(&p, Star(|x: u64| x + 1), (calls,)).unwrap(),
            calls + 1
        );
        calls += 1;
    }
}
/// A job stays small: it is moved several times on its way (queue, flight
/// list, settling) and a burst of submits queues a million of them; at
/// 128 bytes a move is a few vector moves rather than a `memcpy` call.
#[test]
fn a_job_is_at_most_128_bytes() {
    assert!(
        std::mem::size_of::<super::ProcJob<'static>>() <= 128,
        "ProcJob is {} bytes",
        std::mem::size_of::<super::ProcJob<'static>>()
    );
}
