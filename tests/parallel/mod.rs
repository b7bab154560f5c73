//! joblib's `Parallel` and `delayed`: `n_jobs` (sequential, fixed, every
//! CPU, invalid), the three ways to collect results, `verbose` lines, and
//! `batch_size`. Every test runs with each `Prefer` (threads and processes).

use std::sync::{Arc, Mutex};

use crew::{BatchSize, Parallel, Prefer, ProgressStyle, delayed};

use crate::common::tasks::{add, answer, double, fails_on_3, jitter, six};

const PREFER: [Prefer; 2] = [Prefer::Threads, Prefer::Processes];

/// `Parallel::new()` with `prefer`.
fn parallel(prefer: Prefer) -> Parallel {
    Parallel::new().prefer(prefer)
}

/// The process and thread a call ran on, as a comparable string.
fn thread_id(_: u64) -> String {
    format!("{}/{:?}", std::process::id(), std::thread::current().id())
}

#[test]
fn n_jobs_1_runs_every_call_in_order_on_the_calling_thread() {
    for prefer in PREFER {
        let here = thread_id(0);
        let ids = parallel(prefer)
            .n_jobs(1)
            .run((0..20u64).map(|i| delayed(thread_id, (i,))))
            .unwrap();
        assert!(
            ids.iter().all(|id| *id == here),
            "ran off the calling thread"
        );
        let v = parallel(prefer)
            .n_jobs(1)
            .run((0..50u64).map(|i| delayed(jitter, (i,))))
            .unwrap();
        assert_eq!(v, (0..50).collect::<Vec<u64>>());
    }
}

#[test]
fn n_jobs_2_and_every_cpu_keep_input_order() {
    for prefer in PREFER {
        for n_jobs in [2, -1] {
            let v = parallel(prefer)
                .n_jobs(n_jobs)
                .run((0..200u64).map(|i| delayed(jitter, (i,))))
                .unwrap();
            assert_eq!(v, (0..200).collect::<Vec<u64>>(), "n_jobs={n_jobs}");
        }
        let here = thread_id(0);
        let ids = parallel(prefer)
            .n_jobs(2)
            .run((0..8u64).map(|i| delayed(thread_id, (i,))))
            .unwrap();
        assert!(ids.iter().all(|id| *id != here), "n_jobs=2 runs on workers");
    }
}

#[test]
fn delayed_takes_zero_to_six_arguments() {
    for prefer in PREFER {
        let p = parallel(prefer).n_jobs(2);
        assert_eq!(p.run(vec![delayed(answer, ()); 3]).unwrap(), [42, 42, 42]);
        assert_eq!(
            p.run(vec![delayed(add, (1u64, 2u64)), delayed(add, (3, 4))])
                .unwrap(),
            [3, 7]
        );
        assert_eq!(
            p.run(vec![delayed(six, (1u64, 2u64, 3u64, 4u64, 5u64, 6u64))])
                .unwrap(),
            [123_456]
        );
        assert!(
            p.run((0..0u64).map(|i| delayed(double, (i,))))
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn invalid_n_jobs_is_invalid_input() {
    for prefer in PREFER {
        let too_negative = -(crew::cpu_count() as isize) - 1;
        for n_jobs in [0, too_negative] {
            let p = parallel(prefer).n_jobs(n_jobs);
            let err = p.run((0..3u64).map(|i| delayed(double, (i,)))).unwrap_err();
            assert!(err.first().is_invalid_input(), "n_jobs={n_jobs}");
            assert!(
                p.run_iter((0..3u64).map(|i| delayed(double, (i,))))
                    .unwrap_err()
                    .is_invalid_input()
            );
            assert!(
                p.run_unordered((0..3u64).map(|i| delayed(double, (i,))))
                    .unwrap_err()
                    .is_invalid_input()
            );
        }
    }
}

#[test]
fn run_iter_is_ordered_and_lazy() {
    for prefer in PREFER {
        let v: Vec<u64> = parallel(prefer)
            .n_jobs(2)
            .run_iter((0..200u64).map(|i| delayed(jitter, (i,))))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(v, (0..200).collect::<Vec<u64>>());
        // An endless input, consumed partially.
        let first: Vec<u64> = parallel(prefer)
            .n_jobs(2)
            .run_iter((0u64..).map(|i| delayed(double, (i,))))
            .unwrap()
            .take(10)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(first, (0..10).map(|x| 2 * x).collect::<Vec<u64>>());
    }
}

#[test]
fn no_calls_give_no_results() {
    for prefer in PREFER {
        let none = || (0..0u64).map(|i| delayed(double, (i,)));
        let v: Vec<u64> = parallel(prefer).n_jobs(2).run(none()).unwrap();
        assert!(v.is_empty());
        assert_eq!(
            parallel(prefer).n_jobs(2).run_iter(none()).unwrap().count(),
            0
        );
        assert_eq!(
            parallel(prefer)
                .n_jobs(2)
                .run_unordered(none())
                .unwrap()
                .count(),
            0
        );
    }
}

#[test]
fn run_unordered_yields_every_result_once() {
    for prefer in PREFER {
        let mut v: Vec<u64> = parallel(prefer)
            .n_jobs(2)
            .run_unordered((0..200u64).map(|i| delayed(jitter, (i,))))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        v.sort_unstable();
        assert_eq!(v, (0..200).collect::<Vec<u64>>());
    }
}

#[test]
fn a_panicking_call_fails_alone_with_every_outcome() {
    for prefer in PREFER {
        for n_jobs in [1, 2] {
            let err = parallel(prefer)
                .n_jobs(n_jobs)
                .every_outcome(true)
                .run((0..10u64).map(|i| delayed(fails_on_3, (i,))))
                .unwrap_err();
            assert_eq!(err.failed(), 1, "n_jobs={n_jobs}");
            assert_eq!(err.first().index(), Some(3));
            assert_eq!(err.first().panic_message(), Some("boom at 3"));
            assert_eq!(err.results().iter().filter(|r| r.is_ok()).count(), 9);
        }
        let results: Vec<_> = parallel(prefer)
            .n_jobs(2)
            .every_outcome(true)
            .run_iter((0..10u64).map(|i| delayed(fails_on_3, (i,))))
            .unwrap()
            .collect();
        assert!(results[3].as_ref().is_err_and(|e| e.is_panic()));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 9);
    }
}

/// Checks one joblib-style progress line and returns (done, total).
fn parse_progress_line(line: &str, label: &str) -> (usize, usize) {
    let rest = line
        .strip_prefix(&format!("[{label}]: Done "))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let (done, rest) = rest.split_once(" out of ").expect("`out of`");
    let (total, rest) = rest.split_once(" | elapsed: ").expect("`| elapsed:`");
    let (rest, rate) = rest.rsplit_once(" | ").expect("`| <rate>`");
    assert!(
        rest.ends_with(" finished") || rest.contains(" remaining: "),
        "unexpected tail {rest:?}"
    );
    assert!(
        rate.ends_with(" it/s") || rate.ends_with(" s/it"),
        "unexpected rate {rate:?}"
    );
    (
        done.trim().parse().expect("done count"),
        total.trim().parse().expect("total count"),
    )
}

#[test]
fn verbose_lines_look_like_joblib() {
    for prefer in PREFER {
        for n_jobs in [1, 2] {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let v = parallel(prefer)
                .n_jobs(n_jobs)
                .verbose(5)
                .progress_style(Some(ProgressStyle::Capture(lines.clone())))
                .run((0..10u64).map(|i| delayed(jitter, (i,))))
                .unwrap();
            assert_eq!(v.len(), 10);
            let lines = lines.lock().unwrap().clone();
            assert!(lines.len() >= 2, "n_jobs={n_jobs}: {lines:?}");
            let label = format!("Parallel(n_jobs={n_jobs})");
            let counts: Vec<(usize, usize)> = lines
                .iter()
                .map(|l| parse_progress_line(l, &label))
                .collect();
            assert!(counts.iter().all(|&(_, total)| total == 10));
            assert!(
                counts.windows(2).all(|w| w[0].0 <= w[1].0),
                "done counts never go back: {lines:?}"
            );
            let last = lines.last().unwrap();
            assert!(
                last.contains(" finished | "),
                "last line {last:?} ends the run"
            );
            assert_eq!(counts.last().unwrap().0, 10);
        }
    }
}

#[test]
fn fixed_batches_run_together_and_keep_order() {
    for prefer in PREFER {
        let v = parallel(prefer)
            .n_jobs(2)
            .batch_size(BatchSize::Fixed(3))
            .run((0..100u64).map(|i| delayed(jitter, (i,))))
            .unwrap();
        assert_eq!(v, (0..100).collect::<Vec<u64>>());
        // The calls of one batch are one job: they run on the same worker.
        let ids = parallel(prefer)
            .n_jobs(2)
            .batch_size(BatchSize::Fixed(3))
            .run((0..30u64).map(|i| delayed(thread_id, (i,))))
            .unwrap();
        for batch in ids.chunks(3) {
            assert!(batch.iter().all(|id| *id == batch[0]), "batch {batch:?}");
        }
        // Batches do not change results.
        for size in [1, 7, 1000] {
            let v = parallel(prefer)
                .n_jobs(2)
                .batch_size(BatchSize::Fixed(size))
                .run((0..50u64).map(|i| delayed(double, (i,))))
                .unwrap();
            assert_eq!(v, (0..50).map(|x| 2 * x).collect::<Vec<u64>>());
        }
    }
}
