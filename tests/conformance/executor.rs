//! `Executor` and `Future`: submit, results, state, cancellation, done
//! callbacks, `.await`, shutdown, `map_timeout`.

macro_rules! executor_tests {
    ($executor:expr) => {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        use crate::common::tasks::*;
        use crate::common::{Gate, LONG, block_on, eventually};

        /// Submits `task` (`gated`) once per worker and waits until all run.
        fn occupy_every_worker<B, F>(
            ex: &crew::Executor<B>,
            gate: &Gate,
            task: F,
        ) -> Vec<crew::Future<u64>>
        where
            B: crew::core::Runs<'static, crew::core::Star<F>, (String, u64), u64>,
            F: Copy + 'static,
        {
            let futures: Vec<_> = (0..ex.workers() as u64)
                .map(|i| ex.submit(task, (gate.key(), i)))
                .collect();
            for i in 0..ex.workers() as u64 {
                gate.wait_started(i);
            }
            futures
        }

        #[test]
        fn submit_and_result() {
            let ex = $executor;
            let a = ex.submit(double, (21u64,));
            let b = ex.submit(three, ("ab".to_string(), 3usize, '!'));
            let c = ex.submit(answer, ());
            let d = ex.submit(six, (1u64, 2u64, 3u64, 4u64, 5u64, 6u64));
            assert_eq!(a.result().unwrap(), 42);
            assert_eq!(b.result_timeout(LONG).unwrap(), "ababab!");
            assert_eq!(c.result_timeout(LONG).unwrap(), 42);
            assert_eq!(d.result_timeout(LONG).unwrap(), 123_456);
        }

        #[test]
        fn result_timeout_times_out_on_a_running_task() {
            let ex = $executor;
            let gate = Gate::new();
            let f = ex.submit(gated, (gate.key(), 0u64));
            assert!(f.result_timeout(Duration::ZERO).unwrap_err().is_timeout());
            let g = ex.submit(gated, (gate.key(), 1u64));
            // The gate is closed: the task cannot finish, so a wait that
            // ends at once reports it not done (no clock involved).
            assert!(!g.wait_timeout(Duration::ZERO));
            gate.open();
            assert!(g.wait_timeout(LONG));
            assert_eq!(g.result().unwrap(), 1);
            // The timed-out handle was kept: waiting again gets the value,
            // once.
            assert_eq!(f.result_timeout(LONG).unwrap(), 0);
            assert!(f.result_timeout(LONG).unwrap_err().is_invalid_input());
            assert!(f.exception().is_none());
        }

        #[test]
        fn done_and_running_follow_the_task() {
            let ex = $executor;
            let gate = Gate::new();
            let f = ex.submit(gated, (gate.key(), 0u64));
            gate.wait_started(0);
            eventually("the future reports running", || f.running());
            assert!(!f.done());
            assert!(!f.cancelled());
            gate.open();
            assert!(f.wait_timeout(LONG));
            f.wait();
            assert!(f.done());
            assert!(!f.running());
            assert!(!f.cancelled());
            assert_eq!(f.result().unwrap(), 0);
        }

        #[test]
        fn cancel_pending_futures() {
            let ex = $executor;
            let gate = Gate::new();
            let running = occupy_every_worker(&ex, &gate, gated);
            let queued: Vec<_> = (0..4u64).map(|i| ex.submit(double, (i,))).collect();
            for f in &queued {
                assert!(!f.running());
                assert!(f.cancel(), "a queued future can be cancelled");
                assert!(f.cancelled());
                assert!(f.done());
                assert!(f.cancel(), "cancelling twice still reports cancelled");
            }
            gate.open();
            for (i, f) in running.into_iter().enumerate() {
                assert_eq!(f.result_timeout(LONG).unwrap(), i as u64);
            }
            for f in queued {
                assert!(f.result_timeout(LONG).unwrap_err().is_cancelled());
            }
            // Cancelled jobs left no hole: the executor still runs work.
            assert_eq!(ex.submit(double, (8u64,)).result_timeout(LONG).unwrap(), 16);
        }

        #[test]
        fn cancel_of_a_finished_future_is_false() {
            let ex = $executor;
            let f = ex.submit(double, (1u64,));
            assert!(f.wait_timeout(LONG));
            assert!(!f.cancel());
            assert!(!f.cancelled());
            assert_eq!(f.result().unwrap(), 2);
        }

        #[test]
        fn add_done_callback_fires_exactly_once() {
            let ex = $executor;
            let gate = Gate::new();
            let before = Arc::new(AtomicUsize::new(0));
            let after = Arc::new(AtomicUsize::new(0));
            let f = ex.submit(gated, (gate.key(), 5u64));
            let b = before.clone();
            f.add_done_callback(move |r: &crew::Result<u64>| {
                assert_eq!(*r.as_ref().unwrap(), 5);
                b.fetch_add(1, Ordering::SeqCst);
            });
            gate.open();
            assert!(f.wait_timeout(LONG));
            let a = after.clone();
            // Done already: runs now, on this thread, after the earlier
            // callback has finished.
            f.add_done_callback(move |r: &crew::Result<u64>| {
                assert_eq!(*r.as_ref().unwrap(), 5);
                a.fetch_add(1, Ordering::SeqCst);
            });
            assert_eq!(after.load(Ordering::SeqCst), 1);
            assert_eq!(before.load(Ordering::SeqCst), 1);
            assert_eq!(f.result().unwrap(), 5);
            assert_eq!(before.load(Ordering::SeqCst), 1);
            assert_eq!(after.load(Ordering::SeqCst), 1);

            // Failures and cancellations reach the done callbacks too.
            let failed = Arc::new(AtomicUsize::new(0));
            let fl = failed.clone();
            let f = ex.submit(fail_now, ("cb".to_string(),));
            f.add_done_callback(move |r: &crew::Result<u64>| {
                if r.as_ref().is_err_and(|e| e.is_panic()) {
                    fl.fetch_add(1, Ordering::SeqCst);
                }
            });
            assert!(f.result_timeout(LONG).is_err());
            assert_eq!(failed.load(Ordering::SeqCst), 1);
        }

        #[test]
        fn await_a_future() {
            let ex = $executor;
            let ready = ex.submit(double, (2u64,));
            assert!(ready.wait_timeout(LONG));
            assert_eq!(
                block_on(async { ready.await }, LONG)
                    .expect("no hang")
                    .unwrap(),
                4
            );

            let gate = Gate::new();
            let slow = ex.submit(gated, (gate.key(), 9u64));
            let other = ex.submit(double, (10u64,));
            let opener = std::thread::spawn(move || {
                // Open only once the task runs, so the first poll is pending.
                gate.wait_started(9);
                std::thread::sleep(Duration::from_millis(20));
                gate.open();
            });
            let sum = block_on(
                async { Ok::<u64, crew::Error>(slow.await? + other.await?) },
                LONG,
            )
            .expect("the waker was woken");
            assert_eq!(sum.unwrap(), 29);
            opener.join().unwrap();

            let failing = ex.submit(fail_now, ("awaited".to_string(),));
            let e = block_on(failing.into_future(), LONG)
                .expect("no hang")
                .unwrap_err();
            assert_eq!(e.panic_message(), Some("awaited"));
        }

        #[test]
        fn shutdown_with_wait_runs_queued_tasks() {
            let ex = $executor;
            let futures: Vec<_> = (0..8u64).map(|i| ex.submit(sleep_ms, (5 + i,))).collect();
            ex.shutdown(true, false);
            for f in &futures {
                assert!(f.done(), "shutdown(wait) returned before the queue drained");
            }
            for (i, f) in futures.into_iter().enumerate() {
                assert_eq!(f.result().unwrap(), 5 + i as u64);
            }
            // Idempotent.
            ex.shutdown(true, false);
            assert!(ex.shutdown_timeout(LONG, false));
        }

        #[test]
        fn shutdown_with_cancel_futures_cancels_queued_tasks() {
            let ex = $executor;
            let gate = Gate::new();
            let running = occupy_every_worker(&ex, &gate, gated);
            let queued: Vec<_> = (0..4u64).map(|i| ex.submit(double, (i,))).collect();
            ex.shutdown(false, true);
            for f in &queued {
                assert!(f.cancelled(), "queued future not cancelled by shutdown");
            }
            gate.open();
            for (i, f) in running.into_iter().enumerate() {
                assert_eq!(f.result_timeout(LONG).unwrap(), i as u64);
            }
            for f in queued {
                assert!(f.result_timeout(LONG).unwrap_err().is_cancelled());
            }
            assert!(ex.shutdown_timeout(LONG, true));
        }

        #[test]
        fn submit_after_shutdown_is_shutdown() {
            let ex = $executor;
            ex.shutdown(true, false);
            let f = ex.submit(double, (1u64,));
            assert!(f.done());
            assert!(f.result_timeout(LONG).unwrap_err().is_shutdown());
            let results: Vec<_> = ex.map(double, 0..3u64).collect();
            assert!(
                results
                    .iter()
                    .all(|r| r.as_ref().is_err_and(|e| e.is_shutdown()))
            );
        }

        #[test]
        fn dropping_the_executor_waits_for_queued_tasks() {
            // Python: leaving `with ProcessPoolExecutor() as ex:` is
            // `shutdown(wait=True)`: the block ends once every submitted
            // call has run.
            let ex = $executor;
            let gate = Gate::new();
            let running = occupy_every_worker(&ex, &gate, gated);
            let queued: Vec<_> = (0..4u64).map(|i| ex.submit(double, (i,))).collect();
            let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = dropped.clone();
            let dropper = std::thread::spawn(move || {
                drop(ex);
                flag.store(true, Ordering::SeqCst);
            });
            // The gate is closed, so the running tasks cannot have finished
            // and the drop cannot have returned; the pause only gives a
            // wrong drop the chance to show itself.
            std::thread::sleep(Duration::from_millis(50));
            assert!(!dropped.load(Ordering::SeqCst), "the drop did not wait");
            gate.open();
            eventually("the drop returns", || dropped.load(Ordering::SeqCst));
            dropper.join().unwrap();
            for f in running.iter().chain(&queued) {
                assert!(f.done(), "a task was still pending after the drop");
            }
            for (i, f) in running.into_iter().enumerate() {
                assert_eq!(f.result_timeout(LONG).unwrap(), i as u64);
            }
            for (i, f) in queued.into_iter().enumerate() {
                assert_eq!(f.result_timeout(LONG).unwrap(), 2 * i as u64);
            }
        }

        #[test]
        fn map_timeout_yields_one_timeout_then_ends() {
            let ex = $executor;
            let open = Gate::opened();
            let closed = Gate::new();
            // The deadline counts from the call (as Python's), so the short
            // bound covers only the first item, which the closed gate holds:
            // no item before it must finish in time, however slow the
            // machine.
            let items = vec![(closed.key(), 2u64), (open.key(), 3)];
            let mut it = ex.map_timeout(gated_item, items, Duration::from_millis(200));
            assert!(it.next().unwrap().unwrap_err().is_timeout());
            assert!(it.next().is_none());
            assert!(it.next().is_none());
            drop(it);
            closed.open();
            // Finishes in time: no timeout error.
            let got: Vec<u64> = ex
                .map_timeout(double, 0..50u64, LONG)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..50).map(|x| 2 * x).collect::<Vec<u64>>());
        }

        #[test]
        fn a_panicking_done_callback_does_not_stop_the_others() {
            let ex = $executor;
            let gate = Gate::new();
            let hits = Arc::new(AtomicUsize::new(0));
            let f = ex.submit(gated, (gate.key(), 1u64));
            f.add_done_callback(|_: &crew::Result<u64>| panic!("callback panics on purpose"));
            let h = hits.clone();
            f.add_done_callback(move |_: &crew::Result<u64>| {
                h.fetch_add(1, Ordering::SeqCst);
            });
            gate.open();
            assert_eq!(f.result_timeout(LONG).unwrap(), 1);
            assert_eq!(hits.load(Ordering::SeqCst), 1);
            assert_eq!(ex.submit(double, (2u64,)).result_timeout(LONG).unwrap(), 4);
        }

        #[test]
        fn future_timeouts_accept_duration_max() {
            let ex = $executor;
            let f = ex.submit(double, (3u64,));
            assert!(f.wait_timeout(Duration::MAX));
            assert_eq!(f.result_timeout(Duration::MAX).unwrap(), 6);
        }

        #[test]
        fn map_timeout_accepts_duration_max() {
            let ex = $executor;
            let got: Vec<u64> = ex
                .map_timeout(double, 0..3u64, Duration::MAX)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, [0, 2, 4]);
        }

        #[test]
        fn shutdown_timeout_accepts_duration_max() {
            let ex = $executor;
            assert!(ex.shutdown_timeout(Duration::MAX, false));
        }
    };
}
