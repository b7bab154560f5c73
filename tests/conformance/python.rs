//! What the peers' own test suites check (CPython's `test_concurrent_futures`
//! and `_test_multiprocessing`, joblib's `test_parallel`), each test naming
//! the Python behaviour it matches.

macro_rules! python_tests {
    ($pool:expr, $executor:expr) => {
        use std::time::Duration;

        use crate::common::tasks::*;
        use crate::common::{FailsAfter, Gate, LONG};

        /// Python: a generator given to `imap` that raises after yielding
        /// 0, 1, 2 gives the results for 0, 1, 2 and then raises; nothing
        /// after it.
        #[test]
        fn imap_keeps_an_input_error_in_its_place() {
            let pool = $pool;
            for chunksize in [None, Some(1), Some(2), Some(4)] {
                let p = match chunksize {
                    Some(n) => pool.with_chunksize(n),
                    None => pool.clone(),
                };
                let mut it = p.imap(double, FailsAfter::new(3));
                for x in 0..3u64 {
                    assert_eq!(
                        it.next().unwrap().unwrap(),
                        2 * x,
                        "chunksize {chunksize:?}"
                    );
                }
                let e = it.next().unwrap().unwrap_err();
                assert!(e.is_panic(), "{e}");
                assert_eq!(e.index(), Some(3));
                assert!(it.next().is_none());
            }
            // Unordered: every result once, and the error once, at its index.
            let got: Vec<_> = pool.imap_unordered(double, FailsAfter::new(3)).collect();
            assert_eq!(got.len(), 4);
            let mut ok: Vec<u64> = got
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            ok.sort_unstable();
            assert_eq!(ok, [0, 2, 4]);
            let err: Vec<_> = got.iter().filter_map(|r| r.as_ref().err()).collect();
            assert_eq!(err[0].index(), Some(3));
        }

        /// Python: `Executor.map` over such a generator yields the results
        /// before the failure, then raises.
        #[test]
        fn executor_map_keeps_an_input_error_in_its_place() {
            let ex = $executor;
            let got: Vec<_> = ex.map(double, FailsAfter::new(3)).collect();
            assert_eq!(got.len(), 4);
            for (x, r) in got.iter().take(3).enumerate() {
                assert_eq!(*r.as_ref().unwrap(), 2 * x as u64);
            }
            assert_eq!(got[3].as_ref().unwrap_err().index(), Some(3));
        }

        /// Python (`_test_multiprocessing`): `chunksize=0` raises
        /// `ValueError`; 3.14's `buffersize=0` too.
        #[test]
        fn a_zero_chunksize_or_buffersize_is_refused() {
            let pool = $pool;
            let zero = pool.with_chunksize(0);
            assert!(
                zero.map(double, 0..4u64)
                    .unwrap_err()
                    .first()
                    .is_invalid_input()
            );
            assert!(
                zero.map_async(double, 0..4u64)
                    .get_timeout(LONG)
                    .unwrap_err()
                    .first()
                    .is_invalid_input()
            );
            let mut it = zero.imap(double, 0..4u64);
            assert!(it.next().unwrap().unwrap_err().is_invalid_input());
            assert!(it.next().is_none());
            let ex = $executor;
            let first = ex.with_chunksize(0).map(double, 0..4u64).next().unwrap();
            assert!(first.unwrap_err().is_invalid_input());
            let first = ex.with_buffersize(0).map(double, 0..4u64).next().unwrap();
            assert!(first.unwrap_err().is_invalid_input());
            // The pool itself is unharmed.
            assert_eq!(pool.map(double, 0..3u64).unwrap(), [0, 2, 4]);
        }

        /// Python (`test_map_submits_without_iteration`): `ex.map(f, xs)`
        /// submits every call at once; they run though nobody iterates.
        #[test]
        fn executor_map_submits_without_iteration() {
            let ex = $executor;
            let gate = Gate::opened();
            drop(ex.map(gated_item, (0..10u64).map(|i| (gate.key(), i))));
            ex.shutdown(true, false);
            for i in 0..10u64 {
                let marker = started_marker(&gate.key(), i);
                assert!(std::path::Path::new(&marker).exists(), "call {i} never ran");
            }
        }

        /// Python: `ProcessPoolExecutor.map(…, chunksize=n)` gives the same
        /// results, in order, for any chunk size.
        #[test]
        fn executor_map_with_chunksize_keeps_order() {
            let ex = $executor;
            for n in [1, 3, 50, 1000] {
                let got: Vec<u64> = ex
                    .with_chunksize(n)
                    .map(jitter, 0..100u64)
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(got, (0..100).collect::<Vec<u64>>(), "chunksize {n}");
            }
        }

        /// Python: `future.exception(timeout=0)` raises `TimeoutError` on a
        /// pending future, returns `None` on success and the exception on
        /// failure.
        #[test]
        fn future_exception_with_a_timeout() {
            let ex = $executor;
            let gate = Gate::new();
            let f = ex.submit(gated, (gate.key(), 0u64));
            assert!(
                f.exception_timeout(Duration::ZERO)
                    .unwrap_err()
                    .is_timeout()
            );
            gate.open();
            assert!(f.exception_timeout(LONG).unwrap().is_none());
            let g = ex.submit(fail_now, ("no".to_string(),));
            assert!(g.exception_timeout(LONG).unwrap().unwrap().is_panic());
        }

        /// Python: a result that is ready is delivered while a later task
        /// on the same worker still runs (seen wrong: `map_timeout` timing
        /// out on ready results, `imap_unordered` returning a fast call
        /// after a slow one). A fast call and a held one are queued
        /// together for the one worker not held otherwise; the fast one
        /// must complete while the held one runs.
        #[test]
        fn a_finished_result_is_not_held_behind_a_running_task() {
            let ex = $executor;
            // Warm up: the pool learns that tasks are short, and sends
            // them ahead.
            for f in (0..200u64)
                .map(|i| ex.submit(double, (i,)))
                .collect::<Vec<_>>()
            {
                f.result_timeout(LONG).unwrap();
            }
            let held = Gate::new();
            let first = Gate::new();
            let n = ex.workers() as u64;
            let mut blockers: Vec<_> = (1..n)
                .map(|i| ex.submit(gated, (held.key(), 100 + i)))
                .collect();
            blockers.push(ex.submit(gated, (first.key(), 100)));
            for i in 0..n {
                let gate = if i == 0 { &first } else { &held };
                gate.wait_started(100 + i);
            }
            // Every worker is busy: these two wait in the queue, then go
            // together to the worker that `first` frees.
            let fast = ex.submit(double, (21u64,));
            let slow = ex.submit(gated, (held.key(), 0u64));
            first.open();
            assert_eq!(fast.result_timeout(LONG).unwrap(), 42);
            assert!(!slow.done(), "the gate is closed");
            held.open();
            assert_eq!(slow.result_timeout(LONG).unwrap(), 0);
            for b in blockers {
                b.result_timeout(LONG).unwrap();
            }
        }

        /// Python: `imap_unordered` yields results as they finish, so nine
        /// fast calls come while a slow one (submitted first) still runs;
        /// no call waits behind another while a worker is free.
        #[test]
        fn imap_unordered_returns_the_fast_results_while_a_slow_one_runs() {
            let pool = $pool;
            assert!(pool.workers() >= 2);
            // Warm up, so the pool batches.
            pool.map(double, 0..2000u64).unwrap();
            let held = Gate::new();
            let open = Gate::opened();
            let items = std::iter::once((held.key(), 0u64)).chain((1..10).map(|i| (open.key(), i)));
            let mut it = pool.with_chunksize(1).imap_unordered(gated_item, items);
            let mut fast: Vec<u64> = (0..9)
                .map(|_| it.next_timeout(LONG).unwrap().unwrap())
                .collect();
            fast.sort_unstable();
            assert_eq!(fast, (1..10).collect::<Vec<u64>>());
            held.open();
            assert_eq!(it.next_timeout(LONG).unwrap().unwrap(), 0);
            assert!(it.next().is_none());
        }

        /// The same with `submit`: a burst of fast calls behind a slow one
        /// all complete while it runs, on the free worker.
        #[test]
        fn fast_calls_never_wait_behind_a_slow_one_while_a_worker_is_free() {
            let ex = $executor;
            assert!(ex.workers() >= 2);
            for f in (0..500u64)
                .map(|i| ex.submit(double, (i,)))
                .collect::<Vec<_>>()
            {
                f.result_timeout(LONG).unwrap();
            }
            let held = Gate::new();
            let slow = ex.submit(gated, (held.key(), 0u64));
            let fast: Vec<_> = (0..50u64).map(|i| ex.submit(double, (i,))).collect();
            for (i, f) in fast.into_iter().enumerate() {
                assert_eq!(f.result_timeout(LONG).unwrap(), 2 * i as u64);
            }
            assert!(!slow.done(), "the gate is closed");
            held.open();
            assert_eq!(slow.result_timeout(LONG).unwrap(), 0);
        }
    };
}

/// `ProcessPoolExecutor(initializer=…, initargs=…, max_tasks_per_child=…)`
/// and `ThreadPoolExecutor(initializer=…, initargs=…)`: the options are
/// per back-end, so these tests name their back-ends.
mod executor_builder {
    use crate::common::LONG;

    fn state_plus(x: u64) -> u64 {
        x + *crew::worker_state::<u64>().expect("the initializer ran")
    }

    fn times(a: u64, b: u64) -> u64 {
        a * b
    }

    /// Python: the initializer runs with `initargs` in every worker
    /// before its first task.
    #[test]
    fn the_initializer_runs_in_every_worker() {
        let threads = crew::Executor::builder()
            .threads(2)
            .initializer(times, (6u64, 7u64))
            .build()
            .unwrap();
        let processes = crew::Executor::builder()
            .processes(2)
            .initializer(times, (6u64, 7u64))
            .build()
            .unwrap();
        for i in 0..8u64 {
            assert_eq!(
                threads
                    .submit(state_plus, (i,))
                    .result_timeout(LONG)
                    .unwrap(),
                42 + i
            );
            assert_eq!(
                processes
                    .submit(state_plus, (i,))
                    .result_timeout(LONG)
                    .unwrap(),
                42 + i
            );
        }
    }

    /// Python (`test_max_tasks_per_child`): a worker is replaced after
    /// that many tasks; 0 raises `ValueError`.
    #[test]
    fn max_tasks_per_child_replaces_workers() {
        let ex = crew::Executor::builder()
            .processes(1)
            .max_tasks_per_child(2)
            .build()
            .unwrap();
        let pids: Vec<u32> = (0..6)
            .map(|_| {
                ex.submit(std::process::id, ())
                    .result_timeout(LONG)
                    .unwrap()
            })
            .collect();
        assert_eq!(pids[0], pids[1]);
        assert_ne!(pids[1], pids[2]);
        assert_eq!(pids[2], pids[3]);
        assert_ne!(pids[3], pids[4]);
        let zero = crew::Executor::builder()
            .processes(1)
            .max_tasks_per_child(0)
            .build();
        assert!(zero.unwrap_err().is_invalid_input());
        let zero = crew::Pool::builder()
            .processes(1)
            .max_tasks_per_child(0)
            .build();
        assert!(zero.unwrap_err().is_invalid_input());
    }
}
