//! A pool's life: `close` and `join`, `terminate` and drop with work in
//! flight. Nothing may hang, and every outstanding result completes.

macro_rules! lifecycle_tests {
    ($pool:expr) => {
        use crate::common::tasks::*;
        use crate::common::{Gate, LONG, returns_within_long};

        #[test]
        fn close_then_join() {
            let pool = $pool;
            let pending: Vec<_> = (0..6u64)
                .map(|i| pool.apply_async(sleep_ms, (i,)))
                .collect();
            pool.close();
            // Work queued before `close` still runs.
            pool.join().unwrap();
            for (i, r) in pending.into_iter().enumerate() {
                assert_eq!(r.get_timeout(LONG).unwrap(), i as u64);
            }
            assert!(pool.join_timeout(LONG).unwrap(), "join is repeatable");
        }

        #[test]
        fn join_on_an_open_pool_is_invalid_input() {
            let pool = $pool;
            assert!(pool.join().unwrap_err().is_invalid_input());
            assert!(pool.join_timeout(LONG).unwrap_err().is_invalid_input());
            // And the pool is still fine.
            assert_eq!(pool.apply(answer, ()).unwrap(), 42);
        }

        #[test]
        fn a_closed_pool_refuses_work() {
            let pool = $pool;
            pool.close();
            let refused = pool.map(double, 0..3u64).unwrap_err();
            assert!(refused.first().is_shutdown());
            assert_eq!(refused.to_string(), "pool is shut down");
            assert!(
                pool.starmap(add, vec![(1u64, 2u64)])
                    .unwrap_err()
                    .first()
                    .is_shutdown()
            );
            assert!(pool.apply(answer, ()).unwrap_err().is_shutdown());
            assert!(
                pool.apply_async(answer, ())
                    .get_timeout(LONG)
                    .unwrap_err()
                    .is_shutdown()
            );
            assert!(
                pool.map_async(double, 0..3u64)
                    .get_timeout(LONG)
                    .unwrap_err()
                    .first()
                    .is_shutdown()
            );
            assert!(
                pool.starmap_async(add, vec![(1u64, 2u64)])
                    .get_timeout(LONG)
                    .unwrap_err()
                    .first()
                    .is_shutdown()
            );
            let lazy: Vec<_> = pool.imap(double, 0..3u64).collect();
            assert_eq!(lazy.len(), 3);
            assert!(
                lazy.iter()
                    .all(|r| r.as_ref().is_err_and(|e| e.is_shutdown()))
            );
            let lazy: Vec<_> = pool.imap_unordered(double, 0..3u64).collect();
            assert!(
                lazy.iter()
                    .all(|r| r.as_ref().is_err_and(|e| e.is_shutdown()))
            );
            pool.join().unwrap();
        }

        #[test]
        fn terminate_with_tasks_in_flight_returns_and_cancels_queued_ones() {
            let pool = $pool;
            let gate = Gate::new();
            let running: Vec<_> = (0..pool.workers() as u64)
                .map(|i| pool.apply_async(gated, (gate.key(), i)))
                .collect();
            for i in 0..pool.workers() as u64 {
                gate.wait_started(i);
            }
            let queued: Vec<_> = (0..4u64).map(|i| pool.apply_async(double, (i,))).collect();
            let queued_map = pool.map_async(double, 0..4u64);
            let handle = pool.clone();
            returns_within_long("terminate() with running tasks", move || handle.terminate());
            // `terminate` returned although the running tasks are held on a
            // gate that stays closed for longer than `LONG`: it did not wait
            // for them. (Threads finish them later; processes kill them.)
            for r in queued {
                assert!(r.get_timeout(LONG).unwrap_err().is_cancelled());
            }
            let err = queued_map.get_timeout(LONG).unwrap_err();
            assert_eq!(err.len(), 4);
            assert!(
                err.results()
                    .iter()
                    .all(|r| r.as_ref().is_err_and(|e| e.is_cancelled()))
            );
            assert!(pool.apply(answer, ()).unwrap_err().is_shutdown());
            gate.open();
            // Running tasks end one way or another (done on threads, lost
            // with their process elsewhere), never by timing out.
            for r in running {
                if let Err(e) = r.get_timeout(LONG) {
                    assert!(!e.is_timeout(), "a running task's result never arrived");
                }
            }
            assert!(pool.join_timeout(LONG).unwrap());
            pool.terminate();
        }

        #[test]
        fn dropping_a_pool_with_tasks_in_flight_does_not_hang() {
            let pool = $pool;
            let gate = Gate::new();
            let running: Vec<_> = (0..pool.workers() as u64)
                .map(|i| pool.apply_async(gated, (gate.key(), i)))
                .collect();
            for i in 0..pool.workers() as u64 {
                gate.wait_started(i);
            }
            let queued: Vec<_> = (0..4u64).map(|i| pool.apply_async(double, (i,))).collect();
            let queued_map = pool.map_async(double, 0..4u64);
            returns_within_long("dropping the pool", move || drop(pool));
            for r in queued {
                assert!(r.get_timeout(LONG).unwrap_err().is_cancelled());
            }
            assert!(
                queued_map
                    .get_timeout(LONG)
                    .unwrap_err()
                    .first()
                    .is_cancelled()
            );
            gate.open();
            for r in running {
                if let Err(e) = r.get_timeout(LONG) {
                    assert!(!e.is_timeout(), "a running task's result never arrived");
                }
            }
        }

        #[test]
        fn dropping_a_pool_keeps_its_lazy_maps_working() {
            // A lazy iterator holds the pool's workers: dropping the last
            // `Pool` handle terminates only once the iterator is gone too.
            let pool = $pool;
            let it = pool.imap(double, 0..100u64);
            drop(pool);
            let mut it = it;
            let mut got = Vec::new();
            while let Some(r) = it.next_timeout(LONG) {
                got.push(r.unwrap());
            }
            assert_eq!(got, (0..100).map(|x| 2 * x).collect::<Vec<u64>>());
        }

        #[test]
        fn terminate_on_an_idle_pool_then_join() {
            let pool = $pool;
            assert_eq!(pool.map(double, 0..10u64).unwrap().len(), 10);
            pool.terminate();
            pool.terminate();
            assert!(pool.join_timeout(LONG).unwrap());
            pool.close();
            assert!(pool.map(double, 0..3u64).unwrap_err().first().is_shutdown());
        }

        #[test]
        fn join_timeout_accepts_duration_max() {
            let pool = $pool;
            pool.close();
            assert!(pool.join_timeout(std::time::Duration::MAX).unwrap());
        }
    };
}
