//! `crew demo`: the seeds' workloads run serially and on crew's back-ends,
//! with a table of time, speed-up and efficiency, `demo.json` and a chart.
//!
//! The rows come from [`Backend`]: serial, threads, processes, rayon and bare
//! std threads with the work split up front (no pool at all); a new
//! back-end adds its variants in `bench/seeds.rs` and shows up here as more
//! rows and more bars, with nothing else to change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crew::{Memory, Pool};

use crate::bench::harness::{IdleGate, fmt, summarize};
use crate::bench::report::{self, Record};
use crate::bench::run_variants;
use crate::bench::seeds::{self, Backend, Pools, Sizes, Variant};
use crate::chart::{self, Bar};
use crate::workloads::{Kde, P3, howmany_matrix, parzen_density};

/// Options of `crew demo`.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) target: PathBuf,
    pub(crate) trace: Option<PathBuf>,
    pub(crate) gate: IdleGate,
    /// Also run every workload on worker processes.
    pub(crate) processes: bool,
}

/// One row of the table.
struct Row {
    workload: &'static str,
    variant_key: String,
    backend: Backend,
    how: String,
    workers: usize,
    ms: crate::bench::harness::Summary,
    speedup: Option<crate::bench::harness::Summary>,
}

/// Runs the demo; returns the records written to `demo.json`.
pub(crate) fn run(o: &DemoOptions) -> anyhow::Result<Vec<Record>> {
    let started = Instant::now();
    let sizes = if o.quick {
        Sizes::quick()
    } else {
        Sizes::demo()
    };
    let cpus = crew::cpu_count();
    let pools = Pools::new(cpus, o.processes)?;
    let data = Arc::new(howmany_matrix(sizes.rows));
    let (ns, nq, nw) = sizes.kde;
    let kde = Kde::new(ns, nq, nw);
    println!(
        "crew demo: {cpus} CPUs; {} rows, pi {} samples, KDE {ns} points x {nq} queries x {nw} widths, \
         crunch_numbers({}) x4, only_sleep({:?}) x4; median of {} rounds (pi {}, KDE {}, crunch and sleep {})",
        sizes.rows,
        sizes.pi_samples,
        sizes.crunch,
        sizes.sleep,
        o.rounds,
        demo_rounds("pi", o.rounds, o.quick).0,
        demo_rounds("kde", o.rounds, o.quick).0,
        demo_rounds("crunch", o.rounds, o.quick).0,
    );
    let groups: Vec<(&'static str, Vec<Variant<'_>>)> = vec![
        ("pi", seeds::pi(sizes.pi_samples, &pools, false)),
        ("kde", seeds::kde(&kde, &pools, false)?),
        ("howmany", seeds::howmany(&data, &pools, false)),
        ("crunch", seeds::crunch(sizes.crunch, &pools, false)),
        ("sleep", seeds::sleep(sizes.sleep, &pools, false)),
    ];
    let mut rows = Vec::new();
    for (workload, mut variants) in groups {
        let warmup = usize::from(!o.quick && workload != "sleep");
        let (rounds, gate_every) = demo_rounds(workload, o.rounds, o.quick);
        let measured = run_variants(workload, &mut variants, warmup, rounds, &o.gate, gate_every)?;
        let serial = &measured[0].seconds;
        let serial_ms = summarize(serial).median * 1e3;
        for (m, v) in measured.iter().zip(&variants) {
            let ms = summarize(&m.scaled(1e3));
            // Speed-up: the ratio of the medians (as the anchors' tables);
            // its spread: the per-round ratios (the rounds are interleaved,
            // so round i of serial ran next to round i of this variant).
            let speedup = (v.backend != Backend::Serial).then(|| {
                let per_round: Vec<f64> =
                    serial.iter().zip(&m.seconds).map(|(s, t)| s / t).collect();
                let mut s = summarize(&per_round);
                s.median = serial_ms / ms.median;
                s
            });
            rows.push(Row {
                workload,
                variant_key: v.key.clone(),
                backend: v.backend,
                how: v.how.clone(),
                workers: v.workers,
                ms,
                speedup,
            });
        }
    }

    print_table(&rows);
    let mut records = cached_kde(o, &kde)?;
    let mut bars = Vec::new();
    for r in &rows {
        let case = format!("{}.{}", r.workload, r.variant_key);
        records.push(Record::new("demo", &format!("{case}.ms"), "ms", r.ms));
        if let Some(s) = r.speedup {
            records.push(Record::new("demo", &format!("{case}.speedup"), "x", s));
            let mut category = match r.variant_key.strip_prefix(r.backend.name()) {
                Some("") | None => r.workload.to_string(),
                Some(rest) => format!(
                    "{} ({})",
                    r.workload,
                    rest.trim_start_matches(['_', '.']).replace('_', " ")
                ),
            };
            if r.workers != cpus {
                category.push_str(&format!(" ({} workers)", r.workers));
            }
            bars.push(Bar {
                category,
                backend: r.backend,
                speedup: s.median,
            });
        }
    }
    let dir = report::bench_dir(&o.target);
    let json = report::write_json(&dir, "demo", &records)?;
    let png = o.target.join("crew-demo").join("speedup.png");
    std::fs::create_dir_all(png.parent().expect("has a parent"))?;
    chart::speedup_png(
        &png,
        &format!("crew demo: speed-up over serial on {cpus} CPUs"),
        &bars,
        cpus,
    )?;
    println!("\nwrote {} and {}", json.display(), png.display());
    if let Some(trace) = &o.trace {
        let trace = write_trace(trace, cpus, &kde)?;
        println!(
            "wrote {} (open it in https://ui.perfetto.dev)",
            trace.display()
        );
    }
    println!("demo took {:.1} s", started.elapsed().as_secs_f64());
    Ok(records)
}

/// The rounds of `workload` for `--rounds rounds`, and how often (in
/// rounds) it waits at the idle gate.
///
/// A round of π takes ~23 ms on 2 CPUs and one of the KDE ~150 ms, so with
/// only 5 rounds one hiccup of a shared machine moves a median: they get 5
/// and 3 times as many, interleaved as every workload's, with the idle
/// gate (a second each) before every 5th round only. The long workloads
/// get at most 3 rounds. The demo stays around a minute on 2 CPUs.
fn demo_rounds(workload: &str, rounds: usize, quick: bool) -> (usize, usize) {
    match workload {
        _ if quick => (rounds, 1),
        "pi" => (5 * rounds, 5),
        "kde" => (3 * rounds, 5),
        "crunch" | "sleep" => (rounds.min(3), 1),
        _ => (rounds, 1),
    }
}

/// The KDE sweep through a `crew::Memory` cache, twice: the re-run reads
/// every density back, which is what a cache saves a re-run of a pipeline.
/// Records `kde.memory_first.ms` and `kde.memory_rerun.ms`.
fn cached_kde(o: &DemoOptions, kde: &Kde) -> anyhow::Result<Vec<Record>> {
    let dir = o.target.join("crew-demo").join("memory-cache");
    let mem = Memory::new(&dir)?;
    mem.clear()?;
    let sweep = mem.cache(|s: Vec<P3>, q: Vec<P3>, h: f64| parzen_density(&s, &q, h));
    let pool = Pool::threads(crew::cpu_count())?;
    let calls = || {
        kde.widths
            .iter()
            .map(|&h| (kde.samples.clone(), kde.queries.clone(), h))
    };
    let t = Instant::now();
    let first = sweep.starmap(&pool, calls())?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let rerun = sweep.starmap(&pool, calls())?;
    let rerun_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(first == rerun, "the cached densities differ");
    let stats = mem.stats();
    println!(
        "\nKDE sweep through crew::Memory: first run {} ms ({} widths computed), \
         re-run {} ms ({} read from the cache): {:.0}x faster",
        fmt(first_ms),
        stats.misses,
        fmt(rerun_ms),
        stats.hits,
        first_ms / rerun_ms
    );
    mem.clear()?;
    Ok(vec![
        Record::new("demo", "kde.memory_first.ms", "ms", summarize(&[first_ms])),
        Record::new("demo", "kde.memory_rerun.ms", "ms", summarize(&[rerun_ms])),
    ])
}

/// Runs the KDE once on a pool that records its timeline and writes the
/// timeline as a Chrome trace; returns the file's absolute path.
fn write_trace(path: &std::path::Path, workers: usize, kde: &Kde) -> anyhow::Result<PathBuf> {
    let pool = Pool::builder().threads(workers).timeline(true).build()?;
    std::hint::black_box(seeds::kde_on(&pool, kde));
    let timeline = pool
        .timeline()
        .ok_or_else(|| anyhow::anyhow!("a pool built with timeline(true) has no timeline"))?;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => crate::bench::prepare_dir(dir)?,
        None => std::env::current_dir()?,
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("--trace {} names no file", path.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, timeline.to_chrome_trace())?;
    Ok(path)
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| workload | back-end | how | time ms (min-max) | speed-up (min-max) | efficiency |");
    println!("|---|---|---|---:|---:|---:|");
    for r in rows {
        let time = format!("{} ({}-{})", fmt(r.ms.median), fmt(r.ms.min), fmt(r.ms.max));
        let (speedup, efficiency) = match r.speedup {
            Some(s) => (
                format!("{:.2}x ({:.2}-{:.2})", s.median, s.min, s.max),
                format!(
                    "{:.0}% of {}",
                    100.0 * s.median / r.workers as f64,
                    r.workers
                ),
            ),
            None => ("1x".to_string(), String::new()),
        };
        println!(
            "| {} | {} | {} | {time} | {speedup} | {efficiency} |",
            r.workload, r.variant_key, r.how
        );
    }
}

/// The idle gate of the demo: a short wait, so that a busy machine delays
/// the demo by seconds, not minutes.
pub(crate) fn demo_gate(quick: bool) -> IdleGate {
    if quick {
        IdleGate::off()
    } else {
        IdleGate::new(Duration::from_secs(2))
    }
}

#[cfg(test)]
mod test {
    use super::demo_rounds;

    #[test]
    fn short_workloads_get_more_rounds_and_fewer_gates() {
        assert_eq!(demo_rounds("pi", 5, false), (25, 5));
        assert_eq!(demo_rounds("kde", 5, false), (15, 5));
        assert_eq!(demo_rounds("howmany", 5, false), (5, 1));
        assert_eq!(demo_rounds("crunch", 5, false), (3, 1));
        assert_eq!(demo_rounds("sleep", 2, false), (2, 1));
        for w in ["pi", "kde", "crunch"] {
            assert_eq!(demo_rounds(w, 1, true), (1, 1), "--quick runs one round");
        }
    }
}
