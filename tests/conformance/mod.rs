//! The back-end conformance suite: every behaviour of `Pool` and `Executor`
//! written once, against the back-end-neutral API, and expanded for each
//! back-end by [`conformance_suite!`].
//!
//! Rules for the tests in here, so the same bodies run on every back-end:
//! - tasks are `fn` items from `common::tasks` (or non-capturing closures)
//!   over plain data; only callbacks, which run in the parent, may capture;
//! - they assert behaviour, never timing: a task that must be running is
//!   held on a `Gate`, and every wait whose failure mode is a hang uses a
//!   `_timeout` variant with `LONG`;
//! - a test that needs concurrency asserts `workers() >= 2` first.

#[macro_use]
mod async_results;
#[macro_use]
mod executor;
#[macro_use]
mod imap;
#[macro_use]
mod lifecycle;
#[macro_use]
mod map;
#[macro_use]
mod panics;
#[macro_use]
mod parallel;
#[macro_use]
mod python;
#[macro_use]
mod timeline;
#[macro_use]
mod wait;

/// Expands to `mod $name { … }` holding the whole suite for one back-end.
///
/// - `pool`: an expression building a fresh `crew::Pool` with 2 workers;
/// - `executor`: the same for a `crew::Executor`;
/// - `timeline_pool`: a 2-worker `Pool` built with `.timeline(true)`;
/// - `parallel` (optional): a `crew::Parallel` with 2 jobs on the back-end,
///   for joblib's behaviours;
/// - `span_per_task` (optional): an `#[ignore = "bug: …"]` for the tests
///   that expect one timeline span per map item, where a back-end has that
///   bug.
///
/// Each expression is evaluated once per test, so tests never share workers.
macro_rules! conformance_suite {
    (
        $name:ident,
        pool: $pool:expr,
        executor: $executor:expr,
        timeline_pool: $timeline_pool:expr
        $(, parallel: $parallel:expr)?
        $(, span_per_task: #[$span_per_task:meta])?
        $(,)?
    ) => {
        mod $name {
            mod map {
                map_tests!($pool);
            }
            mod imap {
                imap_tests!($pool, $executor);
            }
            mod async_results {
                async_result_tests!($pool);
            }
            mod panics {
                panic_tests!($pool, $executor);
            }
            mod executor {
                executor_tests!($executor);
            }
            mod wait {
                wait_tests!($executor);
            }
            mod lifecycle {
                lifecycle_tests!($pool);
            }
            mod python {
                python_tests!($pool, $executor);
            }
            $(
                mod parallel {
                    parallel_conformance_tests!($parallel);
                }
            )?
            mod timeline {
                timeline_tests!(
                    $pool,
                    $timeline_pool,
                    span_per_task: [$(#[$span_per_task])?],
                );
            }
        }
    };
}

// One line per back-end.
conformance_suite!(
    threads,
    pool: crew::Pool::threads(2).unwrap(),
    executor: crew::Executor::threads(2).unwrap(),
    timeline_pool: crew::Pool::builder().threads(2).timeline(true).build().unwrap(),
    parallel: crew::Parallel::new().n_jobs(2).prefer(crew::Prefer::Threads),
);
conformance_suite!(
    processes,
    pool: crew::Pool::processes(2).unwrap(),
    executor: crew::Executor::processes(2).unwrap(),
    timeline_pool: crew::Pool::builder().processes(2).timeline(true).build().unwrap(),
    parallel: crew::Parallel::new().n_jobs(2).prefer(crew::Prefer::Processes),
);
conformance_suite!(
    cluster,
    pool: crate::common::cluster::pool(),
    executor: crate::common::cluster::executor(),
    timeline_pool: crate::common::cluster::timeline_pool(),
    parallel: crate::common::cluster::parallel(),
);
