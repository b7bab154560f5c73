//! A task that panics fails alone: its error says so, every other result
//! still arrives, and the pool stays usable.

macro_rules! panic_tests {
    ($pool:expr, $executor:expr) => {
        use crate::common::LONG;
        use crate::common::tasks::*;

        #[test]
        fn panicking_task_fails_alone_in_map() {
            let pool = $pool;
            let err = pool.map(fails_on_3, 0..10u64).unwrap_err();
            assert_eq!(err.len(), 10);
            assert_eq!(err.failed(), 1);
            assert!(err.first().is_panic());
            assert_eq!(err.first().panic_message(), Some("boom at 3"));
            assert_eq!(err.first().index(), Some(3));
            assert_eq!(err.errors().map(|(i, _)| i).collect::<Vec<_>>(), [3]);
            let results = err.into_results();
            for (i, r) in results.iter().enumerate() {
                match r {
                    Ok(v) => assert_eq!(*v, i as u64 * 10),
                    Err(e) => {
                        assert_eq!(i, 3);
                        assert!(e.is_panic());
                    }
                }
            }
            // The pool is still usable.
            assert_eq!(pool.map(double, 0..4u64).unwrap(), [0, 2, 4, 6]);
        }

        #[test]
        fn a_non_string_panic_payload_is_named_as_such() {
            let pool = $pool;
            let e = pool
                .apply(|x: u32| -> u32 { std::panic::panic_any(x) }, (42u32,))
                .unwrap_err();
            assert!(e.is_panic());
            assert_eq!(e.panic_message(), Some("a non-string panic payload"));
            assert!(!e.to_string().contains("Box<dyn Any>"), "{e}");
        }

        #[test]
        fn map_error_reports_first_failure_and_count() {
            let pool = $pool;
            for size in [1usize, 4, 1000] {
                let err = pool
                    .with_chunksize(size)
                    .map(fails_on_3_mod_4, 0..20u64)
                    .unwrap_err();
                assert_eq!(err.failed(), 5, "chunksize {size}");
                assert_eq!(err.first().index(), Some(3), "chunksize {size}");
                assert_eq!(err.first().panic_message(), Some("bad item 3"));
                let positions: Vec<usize> = err.errors().map(|(i, _)| i).collect();
                assert_eq!(positions, [3, 7, 11, 15, 19], "chunksize {size}");
                for (i, e) in err.errors() {
                    assert_eq!(e.index(), Some(i));
                    assert_eq!(e.panic_message(), Some(format!("bad item {i}").as_str()));
                }
                let values: Vec<u64> = err.into_results().into_iter().flatten().collect();
                assert_eq!(values, (0..20).filter(|x| x % 4 != 3).collect::<Vec<u64>>());
            }
        }

        #[test]
        fn panicking_task_fails_alone_in_starmap_and_apply() {
            let pool = $pool;
            let err = pool
                .starmap(fails_on_3_pair, (0..6u64).map(|i| (i, 1)))
                .unwrap_err();
            assert_eq!(err.failed(), 1);
            assert_eq!(err.first().index(), Some(3));
            assert_eq!(
                err.results()
                    .iter()
                    .filter_map(|r| r.as_ref().ok().copied())
                    .collect::<Vec<_>>(),
                [1, 11, 21, 41, 51]
            );
            let e = pool.apply(fail_now, ("in apply".to_string(),)).unwrap_err();
            assert!(e.is_panic());
            assert_eq!(e.panic_message(), Some("in apply"));
            assert_eq!(pool.apply(answer, ()).unwrap(), 42);
        }

        #[test]
        fn panicking_task_fails_alone_in_imap() {
            let pool = $pool;
            let results: Vec<_> = pool.imap(fails_on_3, 0..10u64).collect();
            assert_eq!(results.len(), 10);
            for (i, r) in results.iter().enumerate() {
                match r {
                    Ok(v) => assert_eq!(*v, i as u64 * 10),
                    Err(e) => {
                        assert_eq!(i, 3);
                        assert!(e.is_panic());
                        assert_eq!(e.panic_message(), Some("boom at 3"));
                        assert_eq!(e.index(), Some(3));
                    }
                }
            }
            assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);

            let results: Vec<_> = pool.imap_unordered(fails_on_3, 0..10u64).collect();
            assert_eq!(results.len(), 10);
            let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            assert_eq!(errors.len(), 1);
            assert_eq!(
                errors[0].index(),
                Some(3),
                "unordered errors carry their position"
            );
            let mut values: Vec<u64> = results.into_iter().flatten().collect();
            values.sort_unstable();
            assert_eq!(values, [0, 10, 20, 40, 50, 60, 70, 80, 90]);
        }

        #[test]
        fn panicking_task_fails_alone_in_map_async() {
            let pool = $pool;
            let err = pool
                .map_async(fails_on_3, 0..10u64)
                .get_timeout(LONG)
                .unwrap_err();
            assert_eq!(err.failed(), 1);
            assert_eq!(err.first().index(), Some(3));
            assert_eq!(err.results().iter().filter(|r| r.is_ok()).count(), 9);
            let e = pool
                .apply_async(fail_now, ("async".to_string(),))
                .get_timeout(LONG)
                .unwrap_err();
            assert_eq!(e.panic_message(), Some("async"));
        }

        #[test]
        fn panic_with_a_non_string_payload_is_a_panic() {
            let pool = $pool;
            let e = pool
                .apply(|| -> u64 { std::panic::panic_any(7u8) }, ())
                .unwrap_err();
            assert!(e.is_panic());
            assert!(e.panic_message().is_some());
        }

        #[test]
        fn pool_stays_usable_after_many_panics() {
            let pool = $pool;
            for _ in 0..3 {
                let err = pool.map(fails_on_3_mod_4, 0..400u64).unwrap_err();
                assert_eq!(err.failed(), 100);
            }
            let sum: u64 = pool.map(double, 0..1000u64).unwrap().iter().sum();
            assert_eq!(sum, 999 * 1000);
        }

        #[test]
        fn panicking_future_fails_alone() {
            let ex = $executor;
            let bad = ex.submit(fail_now, ("future".to_string(),));
            let good = ex.submit(double, (4u64,));
            let e = bad.result_timeout(LONG).unwrap_err();
            assert!(e.is_panic());
            assert_eq!(e.panic_message(), Some("future"));
            assert_eq!(good.result_timeout(LONG).unwrap(), 8);
            let f = ex.submit(fail_now, ("exception".to_string(),));
            assert!(f.wait_timeout(LONG));
            assert_eq!(f.exception().unwrap().panic_message(), Some("exception"));
            assert!(ex.submit(answer, ()).exception().is_none());
            assert_eq!(ex.submit(answer, ()).result_timeout(LONG).unwrap(), 42);
        }
    };
}
