//! `crew bench overhead`: what crew costs per task on a trivial task (`x*x`),
//! next to rayon and a serial loop, all cases interleaved in one run.
//!
//! Two kinds of figure, each divided by its own task count:
//! - one task per call, many in flight: `threads.submit` (N = 100,000
//!   `Executor::submit`, then `result()` each) against `rayon.spawn_channel`
//!   (a `spawn` per task plus an `mpsc` channel back, the anchors' 0.52 µs);
//! - per element of a map with automatic chunking: `threads.map`
//!   (`Pool::map` over 10,000,000 elements) against `rayon.par_iter`
//!   (`into_par_iter().map().collect()`) and `serial`;
//! - the same on worker processes: `processes.submit`, `processes.map`,
//!   and `processes.apply_latency` (one `apply` at a time, nothing else in
//!   flight), beside `procspawn.pool` (procspawn's pool, one `spawn` per
//!   task, joined by a second thread as the anchors do);
//! - how process cost grows with workers: `processes.apply_latency_<W>_workers`
//!   and `processes.submit_<W>_workers` for each `W` of `--scaling-workers`
//!   (2, 8 and 32 by default);
//! - `processes.submit_as_completed_1m`: a million `Executor::submit`s
//!   gathered by `as_completed`, per task (`--submits` sets the count).

use std::hint::black_box;
use std::path::PathBuf;

use crew::{Executor, Pool};

/// Tasks of `procspawn.pool`: at ~40 µs a task, 10,000 take 0.4 s a round.
const PROCSPAWN_TASKS: usize = 10_000;
/// Calls of `processes.apply_latency`.
const LATENCY_CALLS: usize = 2_000;
use rayon::prelude::*;

use super::harness::{Case, IdleGate, check_same, interleave};
use super::python::{self, PythonOptions};
use super::report::{self, Record};
use super::seeds::rayon_spawn_channel;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn fold(v: &[u64]) -> f64 {
    v.iter().fold(0u64, |a, &b| a.wrapping_add(b)) as f64
}

/// Options of `crew bench overhead`.
#[derive(Debug, Clone)]
pub(crate) struct OverheadOptions {
    /// Tasks of the one-task-per-call cases.
    pub(crate) tasks: usize,
    /// Elements of the map cases.
    pub(crate) elements: usize,
    pub(crate) rounds: usize,
    pub(crate) workers: usize,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
    /// Python anchor rows, if asked for.
    pub(crate) python: Option<PythonOptions>,
    /// Worker counts of the scaling cases.
    pub(crate) scaling_workers: Vec<usize>,
    /// Submits of `processes.submit_as_completed_1m`.
    pub(crate) submits: usize,
}

/// Runs the suite, prints the table and writes `overhead.json` and
/// `overhead.md`.
pub(crate) fn run(o: &OverheadOptions) -> anyhow::Result<Vec<Record>> {
    let (n, m, w) = (o.tasks, o.elements, o.workers);
    let ex = Executor::threads(w)?;
    let pool = Pool::threads(w)?;
    let rp = rayon::ThreadPoolBuilder::new().num_threads(w).build()?;
    let (ex, pool, rp) = (&ex, &pool, &rp);
    let pex = Executor::processes(w)?;
    let ppool = Pool::processes(w)?;
    let spool = procspawn::Pool::new(w)?;
    let (pex, ppool, spool) = (&pex, &ppool, &spool);
    // Warm the worker processes before the clock starts.
    pex.submit(|x: u64| x, (1,)).result()?;
    ppool.map(|x: u64| x, 0..1000u64)?;
    // The scaling pools, warm before the clock starts.
    let scaling: Vec<(usize, Executor<crew::Processes>, Pool<crew::Processes>)> = o
        .scaling_workers
        .iter()
        .map(|&k| -> anyhow::Result<_> {
            let ex = Executor::processes(k)?;
            let pool = Pool::processes(k)?;
            let warm: Vec<crew::Future<u64>> = (0..4 * k as u64)
                .map(|x| ex.submit(|x: u64| x, (x,)))
                .collect();
            for f in warm {
                f.result()?;
            }
            pool.map(|x: u64| x, 0..4 * k as u64)?;
            Ok((k, ex, pool))
        })
        .collect::<anyhow::Result<_>>()?;

    let mut submit = Case::new("threads.submit", move || {
        let futures: Vec<crew::Future<u64>> = (0..n as u64)
            .map(|x| ex.submit(|x: u64| square(black_box(x)), (x,)))
            .collect();
        futures.into_iter().fold(0u64, |a, f| {
            a.wrapping_add(f.result().expect("no task fails"))
        }) as f64
    })
    .per(n);
    let mut spawn = Case::new("rayon.spawn_channel", move || {
        rayon_spawn_channel(rp, n as u64, square) as f64
    })
    .per(n);
    let mut map = Case::new("threads.map", move || {
        let v = pool.map(|x: u64| square(black_box(x)), 0..m as u64);
        fold(&v.expect("no task fails"))
    })
    .per(m);
    let mut par_iter = Case::new("rayon.par_iter", move || {
        let v: Vec<u64> = rp.install(|| {
            (0..m as u64)
                .into_par_iter()
                .map(|x| square(black_box(x)))
                .collect()
        });
        fold(&v)
    })
    .per(m);
    let mut serial = Case::new("serial", move || {
        let v: Vec<u64> = (0..m as u64).map(|x| square(black_box(x))).collect();
        fold(&v)
    })
    .per(m);

    let mut psubmit = Case::new("processes.submit", move || {
        let futures: Vec<crew::Future<u64>> = (0..n as u64)
            .map(|x| pex.submit(|x: u64| square(black_box(x)), (x,)))
            .collect();
        futures.into_iter().fold(0u64, |a, f| {
            a.wrapping_add(f.result().expect("no task fails"))
        }) as f64
    })
    .per(n);
    let mut pmap = Case::new("processes.map", move || {
        let v = ppool.map(|x: u64| square(black_box(x)), 0..m as u64);
        fold(&v.expect("no task fails"))
    })
    .per(m);
    let mut latency = Case::new("processes.apply_latency", move || {
        (0..LATENCY_CALLS as u64).fold(0u64, |a, x| {
            a.wrapping_add(
                ppool
                    .apply(|x: u64| square(x), (x,))
                    .expect("no task fails"),
            )
        }) as f64
    })
    .per(LATENCY_CALLS);
    let mut procspawn_pool = Case::new("procspawn.pool", move || {
        procspawn_tasks(spool, PROCSPAWN_TASKS as u64) as f64
    })
    .per(PROCSPAWN_TASKS);

    let submits = o.submits;
    let mut as_completed = Case::new("processes.submit_as_completed_1m", move || {
        let futures: Vec<crew::Future<u64>> = (0..submits as u64)
            .map(|x| pex.submit(|x: u64| square(black_box(x)), (x,)))
            .collect();
        crew::as_completed(futures).fold(0u64, |a, f| {
            a.wrapping_add(f.result().expect("no task fails"))
        }) as f64
    })
    .per(submits);
    let mut scaling_cases: Vec<Case<'_>> = Vec::new();
    for (k, ex, pool) in &scaling {
        scaling_cases.push(
            Case::new(format!("processes.apply_latency_{k}_workers"), move || {
                (0..LATENCY_CALLS as u64).fold(0u64, |a, x| {
                    a.wrapping_add(pool.apply(|x: u64| square(x), (x,)).expect("no task fails"))
                }) as f64
            })
            .per(LATENCY_CALLS),
        );
        scaling_cases.push(
            Case::new(format!("processes.submit_{k}_workers"), move || {
                let futures: Vec<crew::Future<u64>> = (0..n as u64)
                    .map(|x| ex.submit(|x: u64| square(black_box(x)), (x,)))
                    .collect();
                futures.into_iter().fold(0u64, |a, f| {
                    a.wrapping_add(f.result().expect("no task fails"))
                }) as f64
            })
            .per(n),
        );
    }

    let mut cases = vec![
        &mut submit,
        &mut spawn,
        &mut psubmit,
        &mut map,
        &mut par_iter,
        &mut serial,
        &mut pmap,
        &mut latency,
        &mut procspawn_pool,
        &mut as_completed,
    ];
    cases.extend(scaling_cases.iter_mut());
    let measured = interleave(&mut cases, 1, o.rounds, &o.gate, "overhead");
    check_same(&measured[..3], "one task per call")?;
    check_same(&measured[3..7], "map per element")?;

    let mut records: Vec<Record> = measured
        .iter()
        .map(|r| Record::from_measured("overhead", r, "us/task", 1e6))
        .collect();
    let mut notes = vec![
        (
            "threads.submit".to_string(),
            format!("Executor::threads({w}).submit × {n}, then result() each"),
        ),
        (
            "rayon.spawn_channel".to_string(),
            format!("rayon pool({w}).spawn + mpsc × {n}"),
        ),
        (
            "threads.map".to_string(),
            format!("Pool::threads({w}).map over {m} elements (automatic chunks)"),
        ),
        (
            "rayon.par_iter".to_string(),
            format!("into_par_iter().map().collect() over {m}, {w} threads"),
        ),
        ("serial".to_string(), format!("map().collect() over {m}")),
        (
            "processes.submit".to_string(),
            format!("Executor::processes({w}).submit × {n}, then result() each"),
        ),
        (
            "processes.map".to_string(),
            format!("Pool::processes({w}).map over {m} elements (automatic chunks)"),
        ),
        (
            "processes.apply_latency".to_string(),
            format!("Pool::processes({w}).apply, one at a time, × {LATENCY_CALLS}"),
        ),
        (
            "procspawn.pool".to_string(),
            format!("procspawn::Pool({w}).spawn × {PROCSPAWN_TASKS}, joined by a second thread"),
        ),
        (
            "processes.submit_as_completed_1m".to_string(),
            format!("Executor::processes({w}).submit × {submits}, gathered by as_completed"),
        ),
    ];
    for (k, _, _) in &scaling {
        notes.push((
            format!("processes.apply_latency_{k}_workers"),
            format!("Pool::processes({k}).apply, one at a time, × {LATENCY_CALLS}"),
        ));
        notes.push((
            format!("processes.submit_{k}_workers"),
            format!("Executor::processes({k}).submit × {n}, then result() each"),
        ));
    }
    if let Some(py) = &o.python {
        match python::overhead_rows(py) {
            Ok(rows) => {
                for (record, label) in rows {
                    notes.push((record.case.clone(), format!("Python: {label}")));
                    records.push(record);
                }
            }
            Err(skip) => eprintln!("python rows skipped: {skip}"),
        }
    }

    let md = report::markdown(
        &format!(
            "per-task overhead, x*x, {w} workers, median of {} interleaved rounds",
            o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    println!("{}", verdict(&records));
    let dir = report::bench_dir(&o.target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("overhead.md"),
        format!("{md}\n{}\n", verdict(&records)),
    )?;
    let path = report::write_json(&dir, "overhead", &records)?;
    eprintln!("wrote {} and overhead.md", path.display());
    Ok(records)
}

/// The targets of the overhead suite, each with the figure it was held to.
fn verdict(records: &[Record]) -> String {
    let get = |case: &str| records.iter().find(|r| r.case == case).map(|r| r.median);
    let mut out = String::from("targets:\n");
    let mut line = |ok: bool, text: String| {
        out.push_str(&format!(
            "- [{}] {text}\n",
            if ok { "met" } else { "MISSED" }
        ));
    };
    if let (Some(s), Some(r)) = (get("threads.submit"), get("rayon.spawn_channel")) {
        line(s <= 0.25, format!("threads.submit {s:.3} µs/task <= 0.25"));
        line(
            s < r,
            format!("threads.submit {s:.3} < rayon.spawn_channel {r:.3} µs/task"),
        );
    }
    if let Some(s) = get("processes.submit") {
        line(s <= 1.0, format!("processes.submit {s:.3} µs/task <= 1"));
    }
    if let Some(m) = get("processes.map") {
        line(
            m <= 0.02,
            format!("processes.map {m:.4} µs/element <= 0.02"),
        );
    }
    if let Some(l) = get("processes.apply_latency") {
        line(
            l <= 10.0,
            format!("processes.apply_latency {l:.1} µs <= 10"),
        );
    }
    if let Some(s) = get("processes.submit_as_completed_1m") {
        line(
            s <= 0.4,
            format!("processes.submit_as_completed_1m {s:.3} µs/task <= 0.4"),
        );
    }
    if let (Some(m), Some(p)) = (get("threads.map"), get("rayon.par_iter")) {
        line(
            m <= 2.0 * p,
            format!(
                "threads.map {m:.4} µs/element within 2x of rayon.par_iter {p:.4} ({:.2}x)",
                m / p
            ),
        );
    }
    out
}

/// procspawn's pool, one `spawn` per task: a second thread joins the
/// handles while this one spawns, with at most 1,000 in flight (each
/// pending handle holds file descriptors; spawning all before joining
/// deadlocks with large arguments, anchors/RESULTS.md).
fn procspawn_tasks(pool: &procspawn::Pool, n: u64) -> u64 {
    let (tx, rx) = std::sync::mpsc::sync_channel::<procspawn::JoinHandle<u64>>(1_000);
    std::thread::scope(|s| {
        let joiner = s.spawn(move || {
            rx.iter().fold(0u64, |a, h| {
                a.wrapping_add(h.join().expect("a procspawn task"))
            })
        });
        for x in 0..n {
            let h = pool.spawn(x, |x: u64| x.wrapping_mul(x));
            if tx.send(h).is_err() {
                break;
            }
        }
        drop(tx);
        joiner.join().expect("the joiner thread")
    })
}
