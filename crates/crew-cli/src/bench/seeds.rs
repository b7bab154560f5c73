//! The seed workloads as benchmark cases, serial vs crew threads vs rayon vs
//! bare std threads with the work split up front:
//! `crew bench seeds` runs all of them, `crew demo` the serial and crew
//! ones. Every variant of a workload returns the same checksum, which the
//! runner checks.

use std::hint::black_box;
use std::ops::Range;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use crew::shm::Frozen;
use crew::{Executor, Parallel, Pool, Prefer, Processes, delayed};
use rayon::prelude::*;

use super::harness::Case;
use crate::workloads::{
    Kde, P3, count_inside, crunch_numbers, howmany_within_range, only_sleep, parzen_density,
    pi_sample_inside, split_range, total,
};

/// What runs a variant. Each back-end is one more row per workload in the
/// demo table and one more bar in its chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// One thread, no pool: the reference of every speed-up.
    Serial,
    /// crew's thread back-end (`Pool::threads`, `Executor::threads`, `Parallel`).
    Threads,
    /// crew's worker processes (`Pool::processes`, `Executor::processes`):
    /// arguments and results cross as serialised bytes.
    Processes,
    /// rayon, the Rust baseline.
    Rayon,
    /// Plain `std::thread::scope` threads, the work cut into one equal
    /// contiguous part per thread up front: no pool, no queue, no
    /// scheduling. For work that splits evenly (π, crunch), what this
    /// machine gives with nothing in the way; for uneven work (the KDE's
    /// widths), what a split made up front loses to dynamic scheduling.
    Bare,
}

impl Backend {
    /// The name used in case names and tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Serial => "serial",
            Backend::Threads => "threads",
            Backend::Processes => "processes",
            Backend::Rayon => "rayon",
            Backend::Bare => "std",
        }
    }
}

/// One variant of a workload: its back-end, the suffix that makes its case
/// name unique (`howmany.threads_per_row`), what it calls, the workers it
/// uses, and the case itself.
pub(crate) struct Variant<'a> {
    pub(crate) backend: Backend,
    pub(crate) key: String,
    pub(crate) how: String,
    pub(crate) workers: usize,
    pub(crate) case: Case<'a>,
}

fn variant<'a>(
    workload: &str,
    backend: Backend,
    suffix: &str,
    how: &str,
    workers: usize,
    run: impl FnMut() -> f64 + 'a,
) -> Variant<'a> {
    let key = format!("{}{suffix}", backend.name());
    Variant {
        case: Case::new(format!("{workload}.{key}"), run),
        backend,
        key,
        how: how.into(),
        workers,
    }
}

/// The `Bare` variant's runner: `items` cut into `parts` contiguous parts
/// of (nearly) equal length, each run by `f` on its own scoped thread; the
/// parts' outputs in order.
fn static_split<I: Sync, T: Send>(
    items: &[I],
    parts: usize,
    f: impl Fn(&[I]) -> T + Sync,
) -> Vec<T> {
    let per = items.len().div_ceil(parts.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(|| f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bare thread panicked"))
            .collect()
    })
}

/// Sizes of the seed workloads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) rows: usize,
    pub(crate) pi_samples: u64,
    pub(crate) kde: (usize, usize, usize),
    pub(crate) crunch: u64,
    pub(crate) sleep: Duration,
}

impl Sizes {
    /// The anchors' sizes (π at 10,000,000) and a crunch of ~0.5 s a call.
    pub(crate) fn full() -> Sizes {
        Sizes {
            rows: 200_000,
            pi_samples: 10_000_000,
            kde: (10_000, 1_000, 10),
            crunch: crate::workloads::CRUNCH_HALF_SECOND,
            sleep: Duration::from_secs(1),
        }
    }

    /// The demo's sizes: the anchors' ones, with a crunch of ~0.25 s a call
    /// so that the whole demo stays well under 2 minutes on 2 CPUs.
    pub(crate) fn demo() -> Sizes {
        Sizes {
            crunch: crate::workloads::CRUNCH_HALF_SECOND / 2,
            ..Sizes::full()
        }
    }

    /// Tiny sizes that run in well under a second (tests).
    pub(crate) fn quick() -> Sizes {
        Sizes {
            rows: 2_000,
            pi_samples: 100_000,
            kde: (500, 50, 10),
            crunch: 1_000_000,
            sleep: Duration::from_millis(10),
        }
    }
}

/// The pools the variants run on, created (and warmed by the harness's
/// warm-up run) before any clock starts.
pub(crate) struct Pools {
    pub(crate) pool: Pool,
    pub(crate) sleep_executor: Executor,
    pub(crate) rayon: rayon::ThreadPool,
    /// Worker processes, unless `--no-processes`.
    pub(crate) processes: Option<Pool<Processes>>,
    pub(crate) sleep_processes: Option<Executor<Processes>>,
}

impl Pools {
    /// `workers` crew threads, and as many rayon threads and (if asked)
    /// worker processes; 4 workers for the sleeping workload, as the seed's
    /// `ThreadPoolExecutor` with 4 workers.
    pub(crate) fn new(workers: usize, processes: bool) -> anyhow::Result<Pools> {
        Ok(Pools {
            pool: Pool::threads(workers)?,
            sleep_executor: Executor::threads(4)?,
            processes: processes.then(|| Pool::processes(workers)).transpose()?,
            sleep_processes: processes.then(|| Executor::processes(4)).transpose()?,
            rayon: rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()?,
        })
    }
}

/// Seed 000: count-in-range per row of a `rows` × 5 matrix.
pub(crate) fn howmany<'a>(
    data: &'a Arc<Vec<Vec<i64>>>,
    p: &'a Pools,
    extended: bool,
) -> Vec<Variant<'a>> {
    let w = p.pool.workers();
    let rows: &'a [Vec<i64>] = data;
    let sum = |v: Vec<usize>| v.iter().sum::<usize>() as f64;
    let count = |row: &Vec<i64>| howmany_within_range(row, 4, 8);
    let per_row = p.pool.with_chunksize(1);
    let mut v = vec![
        variant("howmany", Backend::Serial, "", "loop", 1, move || {
            sum(rows.iter().map(count).collect())
        }),
        variant(
            "howmany",
            Backend::Threads,
            "",
            "Pool.map, automatic chunks",
            w,
            move || sum(p.pool.map(count, rows.iter()).expect("no task fails")),
        ),
        variant(
            "howmany",
            Backend::Threads,
            "_per_row",
            "Pool.map, chunksize=1 (a task per row)",
            w,
            move || sum(per_row.map(count, rows.iter()).expect("no task fails")),
        ),
    ];
    if let Some(pp) = &p.processes {
        v.push(variant(
            "howmany",
            Backend::Processes,
            "",
            "Pool.map, automatic chunks (rows serialised)",
            w,
            move || {
                let counts = pp.map(
                    |row: Vec<i64>| howmany_within_range(&row, 4, 8),
                    rows.to_vec(),
                );
                sum(counts.expect("no task fails"))
            },
        ));
    }
    if extended {
        v.push(variant(
            "howmany",
            Backend::Threads,
            ".starmap",
            "Pool.starmap (row, 4, 8)",
            w,
            move || {
                let args = rows.iter().map(|r| (r.as_slice(), 4, 8));
                sum(p
                    .pool
                    .starmap(howmany_within_range, args)
                    .expect("no task fails"))
            },
        ));
        v.push(variant(
            "howmany",
            Backend::Threads,
            ".apply_async",
            "Pool.apply_async per row",
            w,
            move || {
                let handles: Vec<_> = (0..rows.len())
                    .map(|i| {
                        let d = data.clone();
                        p.pool
                            .apply_async(move |i: usize| howmany_within_range(&d[i], 4, 8), (i,))
                    })
                    .collect();
                sum(handles.into_iter().map(|h| h.get().expect("ok")).collect())
            },
        ));
        v.push(variant(
            "howmany",
            Backend::Rayon,
            ".par_iter",
            "par_iter per row",
            w,
            move || sum(p.rayon.install(|| rows.par_iter().map(count).collect())),
        ));
    }
    v
}

/// Seeds 002/003: Monte Carlo π over `n` samples.
pub(crate) fn pi<'a>(n: u64, p: &'a Pools, extended: bool) -> Vec<Variant<'a>> {
    let w = p.pool.workers();
    // 10 chunk tasks, as the anchors and the Python seeds (at least 4 per
    // worker on bigger machines).
    let chunks = split_range(n, 10.max(4 * w as u64));
    let how = format!("Pool.map over {} chunk tasks", chunks.len());
    let mut v = vec![
        variant("pi", Backend::Serial, "", "loop", 1, move || {
            count_inside(0, n) as f64
        }),
        variant("pi", Backend::Threads, "", &how, w, {
            let chunks = chunks.clone();
            move || {
                let counts = p
                    .pool
                    .map(|(lo, hi)| count_inside(lo, hi), chunks.iter().copied());
                counts.expect("no task fails").iter().sum::<u64>() as f64
            }
        }),
    ];
    if let Some(pp) = &p.processes {
        let chunks = chunks.clone();
        let how = how.clone();
        v.push(variant("pi", Backend::Processes, "", &how, w, move || {
            let counts = pp.map(
                |(lo, hi): (u64, u64)| count_inside(lo, hi),
                chunks.iter().copied(),
            );
            counts.expect("no task fails").iter().sum::<u64>() as f64
        }));
    }
    // rayon on the same chunk tasks: what the machine gives a Rust pool.
    v.push(variant(
        "pi",
        Backend::Rayon,
        "",
        "par_iter over the same chunk tasks",
        w,
        {
            let chunks = chunks.clone();
            move || {
                p.rayon.install(|| {
                    chunks
                        .par_iter()
                        .map(|&(lo, hi)| count_inside(lo, hi))
                        .sum::<u64>()
                }) as f64
            }
        },
    ));
    v.push(variant(
        "pi",
        Backend::Bare,
        "",
        "std threads, one equal part each",
        w,
        move || {
            let parts = split_range(n, w as u64);
            static_split(&parts, w, |part| {
                part.iter()
                    .map(|&(lo, hi)| count_inside(lo, hi))
                    .sum::<u64>()
            })
            .iter()
            .sum::<u64>() as f64
        },
    ));
    if extended {
        v.push(variant(
            "pi",
            Backend::Threads,
            ".per_sample",
            "Pool.map over 0..n, automatic chunks",
            w,
            move || {
                let inside = p.pool.map(
                    |i: u64| pi_sample_inside(crate::workloads::PI_SEED, i),
                    0..n,
                );
                inside
                    .expect("no task fails")
                    .iter()
                    .filter(|&&b| b)
                    .count() as f64
            },
        ));
        v.push(variant(
            "pi",
            Backend::Rayon,
            ".par_iter",
            "par_iter per sample",
            w,
            move || {
                p.rayon.install(|| {
                    (0..n)
                        .into_par_iter()
                        .filter(|&i| pi_sample_inside(crate::workloads::PI_SEED, i))
                        .count() as f64
                })
            },
        ));
    }
    v
}

/// Seed 002: Parzen-window density at every query point for every width.
///
/// # Errors
///
/// Fails if the processes' shared copy of the points cannot be created.
pub(crate) fn kde<'a>(
    k: &'a Kde,
    p: &'a Pools,
    extended: bool,
) -> anyhow::Result<Vec<Variant<'a>>> {
    let w = p.pool.workers();
    let (s, q) = (&k.samples[..], &k.queries[..]);
    let how = format!(
        "Pool.map over {} (width, query block) tasks",
        kde_tasks(k, 10).len()
    );
    let mut v = vec![
        variant(
            "kde",
            Backend::Serial,
            "",
            "loop over widths",
            1,
            move || {
                let d: Vec<Vec<f64>> = k.widths.iter().map(|&h| parzen_density(s, q, h)).collect();
                total(&d)
            },
        ),
        variant("kde", Backend::Threads, "", &how, w, move || {
            total(&kde_on(&p.pool, k))
        }),
    ];
    if let Some(pp) = &p.processes {
        // The points go into shared memory once, before any clock starts (as
        // joblib memory-maps big arrays for its process workers); each of
        // the same tasks as on threads carries two handles of ~40 bytes, and
        // the workers read the points in place.
        let (samples, queries) = (Frozen::from_slice(s)?, Frozen::from_slice(q)?);
        let tasks = kde_tasks(k, 10);
        let how = format!(
            "Pool.map over the same {} tasks, the points in shared memory (shm::Frozen)",
            tasks.len()
        );
        v.push(variant("kde", Backend::Processes, "", &how, w, move || {
            let args = tasks
                .iter()
                .map(|(h, block)| (*h, samples.clone(), queries.clone(), block.clone()));
            let d = pp.map(
                |(h, s, q, block): (f64, Frozen<P3>, Frozen<P3>, Range<usize>)| {
                    parzen_density(&s, &q[block], h)
                },
                args,
            );
            total(&d.expect("no task fails"))
        }));
    }
    v.push(variant(
        "kde",
        Backend::Rayon,
        "",
        "par_iter over the same (width, query block) tasks",
        w,
        {
            let tasks = kde_tasks(k, 10);
            move || {
                let d: Vec<Vec<f64>> = p.rayon.install(|| {
                    tasks
                        .par_iter()
                        .map(|(h, block)| parzen_density(s, &q[block.clone()], *h))
                        .collect()
                });
                total(&d)
            }
        },
    ));
    v.push(variant(
        "kde",
        Backend::Bare,
        "",
        "std threads, the same tasks in one equal part each",
        w,
        {
            let tasks = kde_tasks(k, 10);
            move || {
                let d: Vec<Vec<f64>> = static_split(&tasks, w, |part| {
                    part.iter()
                        .map(|(h, block)| parzen_density(s, &q[block.clone()], *h))
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .flatten()
                .collect();
                total(&d)
            }
        },
    ));
    if extended {
        v.push(variant(
            "kde",
            Backend::Threads,
            ".widths",
            "Pool.map over the widths",
            w,
            move || {
                let d = p
                    .pool
                    .map(|h: f64| parzen_density(s, q, h), k.widths.iter().copied());
                total(&d.expect("no task fails"))
            },
        ));
        v.push(variant(
            "kde",
            Backend::Rayon,
            ".widths",
            "par_iter over the widths",
            w,
            move || {
                let d: Vec<Vec<f64>> = p.rayon.install(|| {
                    k.widths
                        .par_iter()
                        .map(|&h| parzen_density(s, q, h))
                        .collect()
                });
                total(&d)
            },
        ));
        v.push(variant(
            "kde",
            Backend::Rayon,
            ".nested",
            "par_iter over widths × query points",
            w,
            move || {
                let d: Vec<Vec<f64>> = p.rayon.install(|| {
                    k.widths
                        .par_iter()
                        .map(|&h| {
                            q.par_iter()
                                .map(|x| parzen_density(s, std::slice::from_ref(x), h)[0])
                                .collect()
                        })
                        .collect()
                });
                total(&d)
            },
        ));
    }
    Ok(v)
}

/// The KDE's tasks: every width × blocks of a tenth of the query points,
/// width-major so that the densities come back in the serial order and the
/// checksums agree to the bit. Ten tasks (one per width) leave a worker
/// idle at the end whenever the widths' costs do not split evenly.
fn kde_tasks(k: &Kde, blocks: usize) -> Vec<(f64, Range<usize>)> {
    let n = k.queries.len();
    let block = n.div_ceil(blocks).max(1);
    k.widths
        .iter()
        .flat_map(|&h| {
            (0..n)
                .step_by(block)
                .map(move |at| (h, at..(at + block).min(n)))
        })
        .collect()
}

/// The KDE on a crew pool, over [`kde_tasks`].
pub(crate) fn kde_on(pool: &Pool, k: &Kde) -> Vec<Vec<f64>> {
    let (s, q) = (&k.samples[..], &k.queries[..]);
    pool.map(
        |(h, block): (f64, Range<usize>)| parzen_density(s, &q[block], h),
        kde_tasks(k, 10),
    )
    .expect("no task fails")
}

/// Seeds 001/003: four calls of `crunch_numbers(n)`.
pub(crate) fn crunch<'a>(n: u64, p: &'a Pools, extended: bool) -> Vec<Variant<'a>> {
    let w = p.pool.workers();
    let mut v = vec![
        variant(
            "crunch",
            Backend::Serial,
            "",
            "4 calls in a loop",
            1,
            move || (0..4).map(|_| crunch_numbers(black_box(n))).sum::<u64>() as f64,
        ),
        variant(
            "crunch",
            Backend::Threads,
            "",
            "Parallel(n_jobs=-1, prefer=threads), 4 delayed calls",
            crew::cpu_count().min(4),
            move || {
                let calls = (0..4).map(|_| delayed(crunch_numbers, (black_box(n),)));
                let out = Parallel::new()
                    .n_jobs(-1)
                    .prefer(Prefer::Threads)
                    .run(calls);
                out.expect("no task fails").iter().sum::<u64>() as f64
            },
        ),
    ];
    if let Some(pp) = &p.processes {
        v.push(variant(
            "crunch",
            Backend::Processes,
            "",
            "Pool.map, chunksize=1",
            w,
            move || {
                let out = pp.with_chunksize(1).map(crunch_numbers, [n; 4]);
                out.expect("no task fails").iter().sum::<u64>() as f64
            },
        ));
    }
    v.push(variant(
        "crunch",
        Backend::Rayon,
        "",
        "par_iter over the same 4 calls",
        w,
        move || {
            p.rayon.install(|| {
                (0..4)
                    .into_par_iter()
                    .map(|_| crunch_numbers(black_box(n)))
                    .sum::<u64>()
            }) as f64
        },
    ));
    v.push(variant(
        "crunch",
        Backend::Bare,
        "",
        "std threads, the 4 calls in one equal part each",
        w,
        move || {
            static_split(&[n; 4], w, |part| {
                part.iter()
                    .map(|&n| crunch_numbers(black_box(n)))
                    .sum::<u64>()
            })
            .iter()
            .sum::<u64>() as f64
        },
    ));
    if extended {
        v.push(variant(
            "crunch",
            Backend::Threads,
            ".pool",
            "Pool.map, chunksize=1",
            w,
            move || {
                let out = p.pool.with_chunksize(1).map(crunch_numbers, [n; 4]);
                out.expect("no task fails").iter().sum::<u64>() as f64
            },
        ));
    }
    v
}

/// Seeds 001/003: four calls of `only_sleep(d)`.
pub(crate) fn sleep<'a>(d: Duration, p: &'a Pools, extended: bool) -> Vec<Variant<'a>> {
    let w = p.pool.workers();
    let mut v = vec![
        variant(
            "sleep",
            Backend::Serial,
            "",
            "4 calls in a loop",
            1,
            move || (0..4).map(|_| only_sleep(d)).sum::<u64>() as f64,
        ),
        variant(
            "sleep",
            Backend::Threads,
            "",
            "Executor::threads(4), 4 submits",
            p.sleep_executor.workers(),
            move || {
                let fs: Vec<_> = (0..4)
                    .map(|_| p.sleep_executor.submit(only_sleep, (d,)))
                    .collect();
                fs.into_iter().map(|f| f.result().expect("ok")).sum::<u64>() as f64
            },
        ),
    ];
    if let Some(pe) = &p.sleep_processes {
        v.push(variant(
            "sleep",
            Backend::Processes,
            "",
            "Executor::processes(4), 4 submits",
            pe.workers(),
            move || {
                let fs: Vec<_> = (0..4).map(|_| pe.submit(only_sleep, (d,))).collect();
                fs.into_iter().map(|f| f.result().expect("ok")).sum::<u64>() as f64
            },
        ));
    }
    if extended {
        v.push(variant(
            "sleep",
            Backend::Threads,
            ".pool",
            "Pool.map, chunksize=1",
            w,
            move || {
                let out = p.pool.with_chunksize(1).map(only_sleep, [d; 4]);
                out.expect("no task fails").iter().sum::<u64>() as f64
            },
        ));
        v.push(variant(
            "sleep",
            Backend::Rayon,
            "",
            "par_iter",
            w,
            move || {
                p.rayon
                    .install(|| (0..4).into_par_iter().map(|_| only_sleep(d)).sum::<u64>())
                    as f64
            },
        ));
    }
    v
}

/// A rayon `spawn` per item plus a channel back: the anchors' baseline for
/// one-task-per-item dispatch.
pub(crate) fn rayon_spawn_channel(pool: &rayon::ThreadPool, n: u64, f: fn(u64) -> u64) -> u64 {
    let (tx, rx) = mpsc::channel::<u64>();
    for x in 0..n {
        let tx = tx.clone();
        pool.spawn(move || {
            let _ = tx.send(f(black_box(x)));
        });
    }
    drop(tx);
    rx.iter().fold(0u64, u64::wrapping_add)
}
