//! `crew bench startup`: from creating a pool of 2 workers to its first
//! result (`processes.first_result`, `threads.first_result`), beside rayon's
//! pool start (`rayon.first_result`), as the anchors measure "to first
//! result"; the pool is shut down after each round, outside the clock, and
//! `processes.first_result_with_shutdown` counts that shutdown in (the
//! anchors' "incl. shutdown/join").
//!
//! From its second process pool on, a program forks pool workers from its
//! fork server, so `processes.first_result` (a new pool per round in this
//! process) measures that path; `processes.first_result_cold` measures a
//! program's *first* pool, whose workers are started afresh: each round
//! re-executes this binary ([`COLD_ENV`]), which times its first pool from
//! creation to first result and drop, and reports it (its own start is not
//! counted).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crew::Pool;

use super::harness::{Case, IdleGate, interleave};
use super::report::{self, Record};

/// Options of `crew bench startup`.
#[derive(Debug, Clone)]
pub(crate) struct StartupOptions {
    pub(crate) rounds: usize,
    pub(crate) workers: usize,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
}

/// Set (to the number of workers) in a re-executed copy of this binary that
/// times its first process pool ([`cold_child`]).
pub(crate) const COLD_ENV: &str = "CREW_BENCH_COLD_FIRST_RESULT";

/// In a copy of this binary started with [`COLD_ENV`]: times this process's
/// first pool from its creation to its first result, prints the
/// nanoseconds, drops the pool and exits.
pub(crate) fn cold_child(workers: &std::ffi::OsStr) -> ! {
    let w: usize = workers.to_str().and_then(|w| w.parse().ok()).unwrap_or(2);
    let (to_result, _) = first_process_pool(w);
    println!("{}", to_result.as_nanos());
    std::process::exit(0);
}

/// Creates a process pool of `w`, runs one task (checked to run in a
/// worker) and drops the pool; returns the time from creation to the
/// result, and to the end of the drop.
fn first_process_pool(w: usize) -> (Duration, Duration) {
    let start = Instant::now();
    let pool = Pool::processes(w).expect("a process pool");
    let pid = pool.apply(std::process::id, ()).expect("the first task");
    let to_result = start.elapsed();
    drop(pool);
    let with_drop = start.elapsed();
    assert_ne!(pid, std::process::id(), "ran in a worker process");
    (to_result, with_drop)
}

/// Re-executes this binary to time a fresh process's first pool of `w`.
fn cold_round(w: usize) -> Duration {
    let exe = std::env::current_exe().expect("this binary's path");
    let out = std::process::Command::new(exe)
        .env(COLD_ENV, w.to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("re-executing the bench binary");
    assert!(
        out.status.success(),
        "the cold round failed: {}",
        out.status
    );
    let ns: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the cold round prints its nanoseconds");
    Duration::from_nanos(ns)
}

/// Runs the suite, prints the table and writes `startup.json`.
pub(crate) fn run(o: &StartupOptions) -> anyhow::Result<Vec<Record>> {
    let w = o.workers;
    let mut processes = Case::self_timed("processes.first_result", move || first_process_pool(w).0);
    let mut with_shutdown = Case::self_timed("processes.first_result_with_shutdown", move || {
        first_process_pool(w).1
    });
    let mut cold = Case::self_timed("processes.first_result_cold", move || cold_round(w));
    let mut threads = Case::self_timed("threads.first_result", move || {
        let start = Instant::now();
        let pool = Pool::threads(w).expect("a thread pool");
        pool.apply(|| 1u8, ()).expect("the first task");
        let took = start.elapsed();
        drop(pool);
        took
    });
    let mut rayon = Case::new("rayon.first_result", move || {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(w)
            .build()
            .expect("a rayon pool");
        pool.install(|| 1.0)
    });
    let mut cases = vec![
        &mut processes,
        &mut with_shutdown,
        &mut cold,
        &mut threads,
        &mut rayon,
    ];
    let measured = interleave(&mut cases, 2, o.rounds, &o.gate, "startup");
    let records: Vec<Record> = measured
        .iter()
        .map(|m| Record::from_measured("startup", m, "ms", 1e3))
        .collect();
    let notes = vec![
        (
            "processes.first_result".to_string(),
            format!(
                "Pool::processes({w}) + apply, to the result (drop outside the clock); not the program's first pool: workers forked from the fork server"
            ),
        ),
        (
            "processes.first_result_with_shutdown".to_string(),
            "the same with the pool's drop (kill and reap its workers) inside the clock"
                .to_string(),
        ),
        (
            "processes.first_result_cold".to_string(),
            "a fresh program's first pool, to its first result: workers started afresh (posix_spawn + exec); the bench binary re-executed per round, its own start not counted".to_string(),
        ),
        (
            "threads.first_result".to_string(),
            format!("Pool::threads({w}) + apply, to the result (drop outside the clock)"),
        ),
        (
            "rayon.first_result".to_string(),
            format!("rayon ThreadPoolBuilder({w}) + install"),
        ),
    ];
    let md = report::markdown(
        &format!(
            "pool of {w} workers to its first result, median of {} interleaved rounds",
            o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    let p = records
        .iter()
        .find(|r| r.case == "processes.first_result")
        .map_or(f64::NAN, |r| r.median);
    println!(
        "targets:\n- [{}] processes.first_result {p:.2} ms <= 1.5",
        if p <= 1.5 { "met" } else { "MISSED" }
    );
    let dir = report::bench_dir(&o.target);
    std::fs::write(dir.join("startup.md"), &md).ok();
    let path = report::write_json(&dir, "startup", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}
