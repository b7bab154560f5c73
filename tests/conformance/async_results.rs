//! `map_async`, `starmap_async`, `apply_async` and their `AsyncResult`:
//! `get`, the timeouts, `wait`, `ready`, `successful`, the callbacks.

macro_rules! async_result_tests {
    ($pool:expr) => {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        use crate::common::tasks::*;
        use crate::common::{Gate, LONG};

        #[test]
        fn map_async_starmap_async_and_apply_async_get() {
            let pool = $pool;
            let m = pool.map_async(double, 0..100u64);
            let s = pool.starmap_async(add, (0..100u64).map(|i| (i, 1)));
            let a = pool.apply_async(three, ("xy".to_string(), 2usize, '!'));
            let z = pool.apply_async(answer, ());
            assert_eq!(
                m.get_timeout(LONG).unwrap(),
                (0..100).map(|x| 2 * x).collect::<Vec<u64>>()
            );
            assert_eq!(s.get_timeout(LONG).unwrap(), (1..101).collect::<Vec<u64>>());
            assert_eq!(a.get_timeout(LONG).unwrap(), "xyxy!");
            assert_eq!(z.get().unwrap(), 42);
        }

        #[test]
        fn get_timeout_times_out_on_a_task_still_running() {
            let pool = $pool;
            let gate = Gate::new();
            let r = pool.apply_async(gated, (gate.key(), 0u64));
            let m = pool.map_async(gated_item, vec![(gate.key(), 1u64)]);
            let s = pool.starmap_async(gated, vec![(gate.key(), 2u64)]);
            assert!(r.get_timeout(Duration::ZERO).unwrap_err().is_timeout());
            assert!(
                m.get_timeout(Duration::ZERO)
                    .unwrap_err()
                    .first()
                    .is_timeout()
            );
            assert!(
                s.get_timeout(Duration::ZERO)
                    .unwrap_err()
                    .first()
                    .is_timeout()
            );
            // The tasks go on running: a fresh call still completes.
            gate.open();
            assert_eq!(
                pool.apply_async(gated, (gate.key(), 3u64))
                    .get_timeout(LONG)
                    .unwrap(),
                3
            );
            // The timed-out handles were kept: waiting again gets the values.
            assert_eq!(r.get_timeout(LONG).unwrap(), 0);
            assert_eq!(m.get_timeout(LONG).unwrap(), [1]);
            assert_eq!(s.get_timeout(LONG).unwrap(), [2]);
            assert_eq!(r.successful(), Some(true));
            assert!(r.get_timeout(LONG).unwrap_err().is_invalid_input());
        }

        #[test]
        fn wait_ready_and_successful_track_the_call() {
            let pool = $pool;
            let gate = Gate::new();
            let r = pool.apply_async(gated, (gate.key(), 7u64));
            let m = pool.map_async(gated_item, vec![(gate.key(), 8u64), (gate.key(), 9u64)]);
            gate.wait_started(7);
            assert!(!r.ready());
            assert_eq!(r.successful(), None);
            // The gate is closed: the task cannot finish, so a wait that
            // ends at once reports it not done (no clock involved).
            assert!(!r.wait_timeout(Duration::ZERO));
            assert!(!m.ready());
            assert_eq!(m.successful(), None);
            gate.open();
            assert!(r.wait_timeout(LONG));
            r.wait();
            assert!(r.ready());
            assert_eq!(r.successful(), Some(true));
            assert_eq!(r.get().unwrap(), 7);
            assert!(m.wait_timeout(LONG));
            assert_eq!(m.successful(), Some(true));
            assert_eq!(m.get().unwrap(), [8, 9]);

            let failed = pool.apply_async(fail_now, ("nope".to_string(),));
            assert!(failed.wait_timeout(LONG));
            assert!(failed.ready());
            assert_eq!(failed.successful(), Some(false));
            let failed_map = pool.map_async(fails_on_3, 0..5u64);
            assert!(failed_map.wait_timeout(LONG));
            assert_eq!(failed_map.successful(), Some(false));
        }

        #[test]
        fn callback_fires_once_on_success_and_error_callback_never() {
            let pool = $pool;
            let values = Arc::new(Mutex::new(Vec::new()));
            let errors = Arc::new(AtomicUsize::new(0));
            let (v, e) = (values.clone(), errors.clone());
            let r = pool
                .apply_async(double, (21u64,))
                .callback(move |x| v.lock().unwrap().push(*x))
                .error_callback(move |_| {
                    e.fetch_add(1, Ordering::SeqCst);
                });
            // `get` returns after the callbacks have run.
            assert_eq!(r.get_timeout(LONG).unwrap(), 42);
            assert_eq!(*values.lock().unwrap(), [42]);
            assert_eq!(errors.load(Ordering::SeqCst), 0);
        }

        #[test]
        fn error_callback_fires_once_on_failure_and_callback_never() {
            let pool = $pool;
            let oks = Arc::new(AtomicUsize::new(0));
            let errors = Arc::new(Mutex::new(Vec::new()));
            let (o, e) = (oks.clone(), errors.clone());
            let r = pool
                .apply_async(fail_now, ("kaput".to_string(),))
                .callback(move |_| {
                    o.fetch_add(1, Ordering::SeqCst);
                })
                .error_callback(move |err: &crew::Error| {
                    e.lock()
                        .unwrap()
                        .push(err.panic_message().map(str::to_owned))
                });
            let err = r.get_timeout(LONG).unwrap_err();
            assert!(err.is_panic());
            assert_eq!(oks.load(Ordering::SeqCst), 0);
            assert_eq!(*errors.lock().unwrap(), [Some("kaput".to_string())]);
        }

        #[test]
        fn map_async_callbacks_get_the_whole_outcome() {
            let pool = $pool;
            let seen = Arc::new(Mutex::new(Vec::new()));
            let failures = Arc::new(Mutex::new(Vec::new()));
            let (s, f) = (seen.clone(), failures.clone());
            let ok = pool
                .map_async(double, 0..10u64)
                .callback(move |v: &Vec<u64>| s.lock().unwrap().push(v.clone()))
                .error_callback(move |e: &crew::MapError<u64>| f.lock().unwrap().push(e.failed()));
            assert_eq!(ok.get_timeout(LONG).unwrap().len(), 10);
            assert_eq!(
                *seen.lock().unwrap(),
                [(0..10).map(|x| 2 * x).collect::<Vec<u64>>()]
            );
            assert!(failures.lock().unwrap().is_empty());

            let (s, f) = (seen.clone(), failures.clone());
            let bad = pool
                .starmap_async(fails_on_3_pair, (0..10u64).map(|i| (i, 1)))
                .callback(move |v: &Vec<u64>| s.lock().unwrap().push(v.clone()))
                .error_callback(move |e: &crew::MapError<u64>| f.lock().unwrap().push(e.failed()));
            let err = bad.get_timeout(LONG).unwrap_err();
            assert_eq!(err.failed(), 1);
            assert_eq!(seen.lock().unwrap().len(), 1, "callback did not fire again");
            assert_eq!(*failures.lock().unwrap(), [1]);
        }

        #[test]
        fn callback_registered_after_completion_fires_once() {
            let pool = $pool;
            let hits = Arc::new(AtomicUsize::new(0));
            let r = pool.apply_async(double, (5u64,));
            assert!(r.wait_timeout(LONG));
            let h = hits.clone();
            let r = r.callback(move |x| {
                assert_eq!(*x, 10);
                h.fetch_add(1, Ordering::SeqCst);
            });
            // Already done: the callback ran on this thread, before returning.
            assert_eq!(hits.load(Ordering::SeqCst), 1);
            let h = hits.clone();
            let r = r.error_callback(move |_| {
                h.fetch_add(100, Ordering::SeqCst);
            });
            assert_eq!(r.get().unwrap(), 10);
            assert_eq!(hits.load(Ordering::SeqCst), 1);
        }

        #[test]
        fn callbacks_fire_for_every_call_of_a_batch() {
            let pool = $pool;
            let got = Arc::new(Mutex::new(Vec::new()));
            let handles: Vec<_> = (0..20u64)
                .map(|i| {
                    let g = got.clone();
                    pool.apply_async(double, (i,))
                        .callback(move |v| g.lock().unwrap().push(*v))
                })
                .collect();
            for h in handles {
                h.get_timeout(LONG).unwrap();
            }
            let mut got = got.lock().unwrap().clone();
            got.sort_unstable();
            assert_eq!(got, (0..20).map(|x| 2 * x).collect::<Vec<u64>>());
        }

        #[test]
        fn wait_returns_only_after_the_callback_has_run() {
            // Python's AsyncResult runs `callback` before it sets the event
            // that `wait`/`ready` read, and the `Pool::apply_async` example
            // relies on that: it reads what the callbacks pushed after `wait`.
            let pool = $pool;
            let gate = Gate::new();
            let (running_tx, running_rx) = std::sync::mpsc::channel();
            let finished = Arc::new(AtomicUsize::new(0));
            let f = finished.clone();
            let r = pool
                .apply_async(gated, (gate.key(), 1u64))
                .callback(move |_| {
                    running_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                    f.fetch_add(1, Ordering::SeqCst);
                });
            gate.open();
            running_rx.recv_timeout(LONG).expect("the callback started");
            // The callback is running now (and will for a while).
            r.wait();
            assert_eq!(
                finished.load(Ordering::SeqCst),
                1,
                "wait() returned before the callback finished"
            );
            assert!(r.ready());
            assert_eq!(r.get().unwrap(), 1);
        }

        #[test]
        fn unbounded_timeouts_mean_no_deadline() {
            let pool = $pool;
            let r = pool.apply_async(double, (1u64,));
            assert!(r.wait_timeout(Duration::MAX));
            assert_eq!(r.get_timeout(Duration::MAX).unwrap(), 2);
            let m = pool.map_async(double, 0..3u64);
            assert_eq!(m.get_timeout(Duration::MAX).unwrap(), [0, 2, 4]);
        }
    };
}
