//! Loom models of the sleep/wake protocol (see README.md): whatever the
//! interleaving, a submitted job runs and its waiter wakes, and `close`
//! wakes sleeping workers so `join` returns. A lost wake-up shows as a
//! deadlock, which loom reports.

use super::*;
use crate::Future;
use crate::Star;
use crate::engine::spawn_call;

#[test]
fn loom_a_job_submitted_as_the_worker_falls_asleep_runs() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        let (promise, future) = Future::pending();
        spawn_call(&t, Star(|| 7u32), (), promise);
        assert_eq!(future.result().unwrap(), 7);
        t.close();
        assert!(t.join(None));
    });
}

#[test]
fn loom_two_jobs_back_to_back_both_run() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        let (p1, f1) = Future::pending();
        let (p2, f2) = Future::pending();
        spawn_call(&t, Star(|| 1u32), (), p1);
        spawn_call(&t, Star(|| 2u32), (), p2);
        assert_eq!(f2.result().unwrap(), 2);
        assert_eq!(f1.result().unwrap(), 1);
        t.close();
        assert!(t.join(None));
    });
}

#[test]
fn loom_close_wakes_idle_workers() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        t.close();
        assert!(t.join(None));
    });
}

#[test]
fn loom_terminate_cancels_queued_jobs_and_ends() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        let (promise, future) = Future::pending();
        spawn_call(&t, Star(|| 3u32), (), promise);
        t.terminate();
        assert!(t.join(None));
        // Ran before the terminate, or dropped by it: either way, an outcome.
        match future.result() {
            Ok(v) => assert_eq!(v, 3),
            Err(e) => assert!(e.is_cancelled()),
        }
    });
}

#[test]
fn loom_two_workers_share_two_jobs() {
    // Three threads: at most one preemption (with two, the model ran
    // past seven minutes without finishing).
    let mut model = ::loom::model::Builder::new();
    model.preemption_bound = Some(model.preemption_bound.unwrap_or(1).min(1));
    model.check(|| {
        let t = Threads::new(2).unwrap();
        let (p1, f1) = Future::pending();
        let (p2, f2) = Future::pending();
        spawn_call(&t, Star(|| 1u32), (), p1);
        spawn_call(&t, Star(|| 2u32), (), p2);
        assert_eq!(f1.result().unwrap() + f2.result().unwrap(), 3);
        drop(t); // the last handle closes the pool
    });
}
