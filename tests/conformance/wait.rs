//! `wait` with each `ReturnWhen` and a timeout; `as_completed` and
//! `as_completed_timeout`.

macro_rules! wait_tests {
    ($executor:expr) => {
        use std::time::Duration;

        use crew::ReturnWhen;

        use crate::common::tasks::*;
        use crate::common::{Gate, LONG};

        #[test]
        fn wait_first_completed_returns_with_the_finished_future() {
            let ex = $executor;
            assert!(ex.workers() >= 2, "this test needs two workers");
            let gate = Gate::new();
            let slow = ex.submit(gated, (gate.key(), 0u64));
            gate.wait_started(0);
            let fast = ex.submit(gated, (Gate::opened().key(), 1u64));
            let w = crew::wait(vec![slow, fast], ReturnWhen::FirstCompleted, Some(LONG));
            assert_eq!(w.done.len(), 1);
            assert_eq!(w.not_done.len(), 1);
            assert!(!w.not_done[0].done());
            gate.open();
            let done: Vec<u64> = w.done.into_iter().map(|f| f.result().unwrap()).collect();
            assert_eq!(done, [1]);
            let rest: Vec<u64> = w
                .not_done
                .into_iter()
                .map(|f| f.result_timeout(LONG).unwrap())
                .collect();
            assert_eq!(rest, [0]);
        }

        #[test]
        fn wait_first_exception_returns_while_others_still_run() {
            let ex = $executor;
            assert!(ex.workers() >= 2, "this test needs two workers");
            let gate = Gate::new();
            let slow = ex.submit(gated, (gate.key(), 0u64));
            gate.wait_started(0);
            let ok = ex.submit(double, (1u64,));
            assert!(ok.wait_timeout(LONG));
            let bad = ex.submit(fail_now, ("first exception".to_string(),));
            let w = crew::wait(vec![ok, slow, bad], ReturnWhen::FirstException, Some(LONG));
            assert_eq!(w.not_done.len(), 1, "the gated task is still running");
            assert_eq!(w.done.len(), 2);
            assert!(w.not_done[0].running());
            let failures: Vec<_> = w.done.iter().filter_map(|f| f.exception()).collect();
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].panic_message(), Some("first exception"));
            gate.open();
            for f in w.not_done {
                assert_eq!(f.result_timeout(LONG).unwrap(), 0);
            }
        }

        #[test]
        fn wait_first_exception_without_failures_waits_for_all() {
            let ex = $executor;
            let futures: Vec<_> = (0..6u64).map(|i| ex.submit(sleep_ms, (i,))).collect();
            let w = crew::wait(futures, ReturnWhen::FirstException, Some(LONG));
            assert_eq!(w.done.len(), 6);
            assert!(w.not_done.is_empty());
        }

        #[test]
        fn wait_all_completed_returns_every_future_done() {
            let ex = $executor;
            let futures: Vec<_> = (0..10u64).map(|i| ex.submit(jitter, (i,))).collect();
            let w = crew::wait(futures, ReturnWhen::AllCompleted, Some(LONG));
            assert!(w.not_done.is_empty());
            // `done` keeps the order the futures were given in.
            let values: Vec<u64> = w.done.into_iter().map(|f| f.result().unwrap()).collect();
            assert_eq!(values, (0..10).collect::<Vec<u64>>());
            let empty = crew::wait(
                Vec::<crew::Future<u64>>::new(),
                ReturnWhen::AllCompleted,
                None,
            );
            assert!(empty.done.is_empty() && empty.not_done.is_empty());
        }

        #[test]
        fn wait_with_timeout_returns_the_futures_not_done() {
            let ex = $executor;
            let gate = Gate::new();
            let slow = ex.submit(gated, (gate.key(), 0u64));
            let fast = ex.submit(double, (3u64,));
            assert!(fast.wait_timeout(LONG));
            let w = crew::wait(
                vec![slow, fast],
                ReturnWhen::AllCompleted,
                Some(Duration::from_millis(50)),
            );
            assert_eq!(w.done.len(), 1);
            assert_eq!(w.not_done.len(), 1);
            assert_eq!(w.done.into_iter().next().unwrap().result().unwrap(), 6);
            gate.open();
            let slow = w.not_done.into_iter().next().unwrap();
            assert_eq!(slow.result_timeout(LONG).unwrap(), 0);
        }

        #[test]
        fn as_completed_yields_every_future() {
            let ex = $executor;
            let futures: Vec<_> = (1..=20u64).map(|i| ex.submit(jitter, (i,))).collect();
            let mut got: Vec<u64> = crew::as_completed(futures)
                .map(|f| {
                    assert!(f.done(), "as_completed yields done futures");
                    f.result().unwrap()
                })
                .collect();
            got.sort_unstable();
            assert_eq!(got, (1..=20).collect::<Vec<u64>>());
        }

        #[test]
        fn as_completed_yields_in_completion_order() {
            let ex = $executor;
            assert!(ex.workers() >= 2, "this test needs two workers");
            let gates: Vec<Gate> = (0..3).map(|_| Gate::new()).collect();
            let futures: Vec<_> = gates
                .iter()
                .enumerate()
                .map(|(i, g)| ex.submit(gated, (g.key(), i as u64)))
                .collect();
            let mut it = crew::as_completed_timeout(futures, LONG);
            // Finish them in the order 1, 2, 0: each only after the previous
            // one was yielded, so completion order is the one chosen here.
            let mut order = Vec::new();
            for i in [1usize, 2, 0] {
                gates[i].open();
                let f = it.next().expect("a future").expect("no timeout");
                order.push(f.result().unwrap());
            }
            assert_eq!(order, [1, 2, 0]);
            assert!(it.next().is_none());
        }

        #[test]
        fn as_completed_timeout_yields_a_timeout_error() {
            let ex = $executor;
            let gate = Gate::new();
            let slow = ex.submit(gated, (gate.key(), 0u64));
            let fast = ex.submit(double, (4u64,));
            // Done before the clock starts: the 100 ms bound below is only
            // for the gated task, however slow the machine is.
            assert!(fast.wait_timeout(LONG));
            let mut it = crew::as_completed_timeout(vec![slow, fast], Duration::from_millis(100));
            assert_eq!(it.next().unwrap().unwrap().result().unwrap(), 8);
            assert!(it.next().unwrap().unwrap_err().is_timeout());
            assert!(it.next().is_none());
            let rest = it.into_remaining();
            assert_eq!(rest.len(), 1);
            gate.open();
            assert_eq!(
                rest.into_iter()
                    .next()
                    .unwrap()
                    .result_timeout(LONG)
                    .unwrap(),
                0
            );
        }

        #[test]
        fn wait_and_as_completed_accept_duration_max() {
            let ex = $executor;
            let w = crew::wait(
                vec![ex.submit(double, (1u64,))],
                ReturnWhen::AllCompleted,
                Some(Duration::MAX),
            );
            assert_eq!(w.done.len(), 1);
            let mut it =
                crew::as_completed_timeout(vec![ex.submit(double, (2u64,))], Duration::MAX);
            assert_eq!(it.next().unwrap().unwrap().result().unwrap(), 4);
            assert!(it.next().is_none());
        }

        #[test]
        fn wait_first_exception_does_not_stop_at_a_cancellation() {
            let ex = $executor;
            let gate = Gate::new();
            let running: Vec<_> = (0..ex.workers() as u64)
                .map(|i| ex.submit(gated, (gate.key(), i)))
                .collect();
            for i in 0..ex.workers() as u64 {
                gate.wait_started(i);
            }
            let cancelled = ex.submit(double, (1u64,));
            assert!(cancelled.cancel());
            let mut futures = running;
            futures.push(cancelled);
            let opener = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                drop(gate); // opens it
            });
            // No future raises: FIRST_EXCEPTION is ALL_COMPLETED here.
            let w = crew::wait(futures, ReturnWhen::FirstException, Some(LONG));
            opener.join().unwrap();
            assert!(w.not_done.is_empty(), "wait returned at the cancellation");
        }
    };
}
