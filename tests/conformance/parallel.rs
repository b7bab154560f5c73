//! joblib's `Parallel` on each back-end, as joblib's own `test_parallel`
//! checks it: the first error ends the run, `timeout`, `pre_dispatch`, and
//! settings out of range.

macro_rules! parallel_conformance_tests {
    ($parallel:expr) => {
        use std::sync::atomic::Ordering;
        use std::time::Duration;

        use crew::{BatchSize, delayed};

        use crate::common::tasks::*;
        use crate::common::{Counted, Gate, eventually, returns_within_long};

        /// joblib: on the first error, `Parallel` raises it at once and
        /// drops the calls not yet dispatched. The first call fails; every
        /// other one, of an endless input, waits on a gate that stays
        /// closed until the run has returned: a run that waited for the
        /// other calls, or read the whole input, would never return.
        #[test]
        fn the_first_error_ends_the_run() {
            let gate = Gate::new();
            let key = gate.key();
            let p = $parallel.batch_size(BatchSize::Fixed(1)).pre_dispatch(4);
            let (input, pulled) = Counted::new(
                (0u64..).map(move |i| delayed(fails_first_then_gated, (key.clone(), i))),
            );
            let err = returns_within_long("a run that fails", move || {
                p.run(input).map(|v: Vec<u64>| v.len())
            })
            .unwrap_err();
            assert!(err.first().is_panic(), "{}", err.first());
            assert_eq!(err.first().index(), Some(0));
            // Nothing finished but the failure, so no more than the
            // batches dispatched ahead, and one read to replace the failed
            // call, were read.
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(pulled <= 5, "read {pulled} calls");
        }

        /// crew's option: every call runs and every outcome is reported.
        #[test]
        fn every_outcome_runs_every_call() {
            let err = $parallel
                .every_outcome(true)
                .run((0..10u64).map(|i| delayed(fails_on_3, (i,))))
                .unwrap_err();
            assert_eq!(err.len(), 10);
            assert_eq!(err.failed(), 1);
            assert_eq!(err.first().index(), Some(3));
        }

        /// joblib's `return_as="generator"`: the results before the error,
        /// then the error, then nothing.
        #[test]
        fn run_iter_ends_at_the_first_error() {
            let results: Vec<_> = $parallel
                .batch_size(BatchSize::Fixed(1))
                .run_iter((0..10u64).map(|i| delayed(fails_on_3, (i,))))
                .unwrap()
                .collect();
            assert_eq!(results.len(), 4);
            for (i, r) in results.iter().take(3).enumerate() {
                assert_eq!(*r.as_ref().unwrap(), 10 * i as u64);
            }
            assert_eq!(results[3].as_ref().unwrap_err().index(), Some(3));
        }

        /// joblib's `pre_dispatch`: the input is read as calls finish, at
        /// most `pre_dispatch` batches ahead. Every call here waits on a
        /// closed gate, so no result comes and exactly that many are read.
        #[test]
        fn pre_dispatch_bounds_what_is_read_ahead() {
            let gate = Gate::new();
            let key = gate.key();
            let (input, pulled) =
                Counted::new((0..50u64).map(move |i| delayed(gated, (key.clone(), i))));
            let p = $parallel.batch_size(BatchSize::Fixed(1)).pre_dispatch(3);
            let run = std::thread::spawn(move || p.run(input));
            gate.wait_started(0);
            gate.wait_started(1);
            eventually("three calls read", || pulled.load(Ordering::Relaxed) >= 3);
            assert_eq!(pulled.load(Ordering::Relaxed), 3);
            gate.open();
            let v = run.join().unwrap().unwrap();
            assert_eq!(v, (0..50).collect::<Vec<u64>>());
        }

        /// joblib's `timeout`: a call that runs too long fails the run with
        /// a timeout (on processes its worker is killed).
        #[test]
        fn a_call_running_too_long_times_out() {
            let gate = Gate::new();
            let key = gate.key();
            let p = $parallel.timeout(Duration::from_millis(200));
            let err = returns_within_long("a run with a timeout", move || {
                p.run([delayed(gated, (key, 0u64))])
            })
            .unwrap_err();
            assert!(err.first().is_timeout(), "{}", err.first());
        }

        /// joblib raises `ValueError` for `batch_size=0`, `pre_dispatch=0`.
        #[test]
        fn settings_out_of_range_are_refused() {
            let calls = || (0..3u64).map(|i| delayed(double, (i,)));
            let bad = [
                $parallel.batch_size(BatchSize::Fixed(0)),
                $parallel.pre_dispatch(0),
                $parallel.timeout(Duration::ZERO),
            ];
            for p in bad {
                assert!(p.run(calls()).unwrap_err().first().is_invalid_input());
                assert!(p.run_iter(calls()).unwrap_err().is_invalid_input());
            }
        }
    };
}
