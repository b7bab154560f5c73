//! `crew bench startup`: from creating a pool of 2 workers to its first
//! result, pool shut down after each round (`processes.first_result`,
//! `threads.first_result`), beside rayon's pool start (`rayon.first_result`).

use std::path::PathBuf;

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

/// Runs the suite, prints the table and writes `startup.json`.
pub(crate) fn run(o: &StartupOptions) -> anyhow::Result<Vec<Record>> {
    let w = o.workers;
    let mut processes = Case::new("processes.first_result", move || {
        let pool = Pool::processes(w).expect("a process pool");
        let pid = pool.apply(std::process::id, ()).expect("the first task");
        assert_ne!(pid, std::process::id(), "ran in a worker process");
        drop(pool);
        1.0
    });
    let mut threads = Case::new("threads.first_result", move || {
        let pool = Pool::threads(w).expect("a thread pool");
        pool.apply(|| 1u8, ()).expect("the first task");
        1.0
    });
    let mut rayon = Case::new("rayon.first_result", move || {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(w)
            .build()
            .expect("a rayon pool");
        pool.install(|| 1.0)
    });
    let mut cases = vec![&mut processes, &mut threads, &mut rayon];
    let measured = interleave(&mut cases, 2, o.rounds, &o.gate, "startup");
    let records: Vec<Record> = measured
        .iter()
        .map(|m| Record::from_measured("startup", m, "ms", 1e3))
        .collect();
    let notes = vec![
        (
            "processes.first_result".to_string(),
            format!("Pool::processes({w}) + apply, then drop"),
        ),
        (
            "threads.first_result".to_string(),
            format!("Pool::threads({w}) + apply, then drop"),
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
        "targets:\n- [{}] processes.first_result {p:.2} ms <= 2",
        if p <= 2.0 { "met" } else { "MISSED" }
    );
    let dir = report::bench_dir(&o.target);
    std::fs::write(dir.join("startup.md"), &md).ok();
    let path = report::write_json(&dir, "startup", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}
