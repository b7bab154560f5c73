//! `crew bench`: the harness (interleaved rounds behind an idle gate, as the
//! anchors), the suites (`overhead`, `seeds`) and their reports.
//!
//! Sizes, repetitions and timing live here, not in `examples/` (STYLE:
//! examples are for reading, benches for measuring).

pub(crate) mod celery;
pub(crate) mod cluster;
pub(crate) mod harness;
pub(crate) mod memory;
pub(crate) mod overhead;
pub(crate) mod python;
pub(crate) mod report;
pub(crate) mod seeds;
pub(crate) mod shm;
pub(crate) mod startup;
pub(crate) mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use harness::{IdleGate, Measured, check_same};
use report::Record;
use seeds::{Pools, Sizes, Variant};

use crate::workloads::{Kde, howmany_matrix};

/// The Cargo project around the current folder: the nearest folder above
/// it whose `Cargo.toml` declares a `[workspace]`, else the nearest with a
/// `Cargo.toml`; `None` outside any project (an installed `crew` run
/// anywhere). Never the checkout the binary was built from.
pub(crate) fn project_root() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    let manifest = |d: &Path| std::fs::read_to_string(d.join("Cargo.toml")).ok();
    cwd.ancestors()
        .find(|d| manifest(d).is_some_and(|t| t.contains("[workspace]")))
        .or_else(|| cwd.ancestors().find(|d| manifest(d).is_some()))
        .map(Path::to_path_buf)
}

/// Where reports go by default: `target/` of the Cargo project around the
/// current folder (as `cargo` puts its output), else the current folder.
pub(crate) fn default_target() -> PathBuf {
    match project_root() {
        Some(root) => root.join("target"),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

/// The anchors folder by default: `../shared/anchors` beside the project
/// around the current folder.
pub(crate) fn default_anchors() -> PathBuf {
    project_root()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("../shared/anchors")
}

/// `dir`, created if missing, as a clean absolute path (no `..`, no
/// symbolic links), so that what the suites print can be pasted anywhere.
pub(crate) fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// Writes a script embedded in the binary to `<target>/crew-bench/scripts/`
/// and returns its path: the Python side of a suite runs the same from an
/// installed `crew` as from the checkout.
pub(crate) fn embedded_script(target: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let dir = prepare_dir(&report::bench_dir(target).join("scripts"))?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs the variants of one workload interleaved (waiting at the idle gate
/// before every `gate_every`-th round) and checks that they all computed the
/// same thing.
pub(crate) fn run_variants(
    what: &str,
    variants: &mut [Variant<'_>],
    warmup: usize,
    rounds: usize,
    gate: &IdleGate,
    gate_every: usize,
) -> anyhow::Result<Vec<Measured>> {
    let mut cases: Vec<_> = variants.iter_mut().map(|v| &mut v.case).collect();
    let measured = harness::interleave_gated(&mut cases, warmup, rounds, gate, gate_every, what);
    check_same(&measured, what)?;
    Ok(measured)
}

/// Options of `crew bench seeds`.
#[derive(Debug, Clone)]
pub(crate) struct SeedsOptions {
    pub(crate) rounds: usize,
    pub(crate) workers: usize,
    pub(crate) sizes: Sizes,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
    /// Also run every workload on worker processes.
    pub(crate) processes: bool,
    /// The anchors folder, to add Python rows (`python/seeds.py`).
    pub(crate) python: Option<PathBuf>,
}

/// `crew bench seeds`: every seed workload, serial vs crew threads vs
/// rayon, in ms; writes `seeds.json` and `seeds.md`.
pub(crate) fn run_seeds(o: &SeedsOptions) -> anyhow::Result<Vec<Record>> {
    let pools = Pools::new(o.workers, o.processes)?;
    let data = Arc::new(howmany_matrix(o.sizes.rows));
    let (ns, nq, nw) = o.sizes.kde;
    let kde = Kde::new(ns, nq, nw);
    let mut records = Vec::new();
    let mut notes = Vec::new();
    let groups: Vec<(&str, Vec<Variant<'_>>, usize)> = vec![
        ("howmany", seeds::howmany(&data, &pools, true), o.rounds),
        ("pi", seeds::pi(o.sizes.pi_samples, &pools, true), o.rounds),
        ("kde", seeds::kde(&kde, &pools, true)?, o.rounds),
        (
            "crunch",
            seeds::crunch(o.sizes.crunch, &pools, true),
            o.rounds,
        ),
        (
            "sleep",
            seeds::sleep(o.sizes.sleep, &pools, true),
            o.rounds.min(3),
        ),
    ];
    for (what, mut variants, rounds) in groups {
        let warmup = usize::from(what != "sleep");
        let measured = run_variants(what, &mut variants, warmup, rounds, &o.gate, 1)?;
        for (m, v) in measured.iter().zip(&variants) {
            records.push(Record::from_measured("seeds", m, "ms", 1e3));
            notes.push((m.name.clone(), format!("{} ({} workers)", v.how, v.workers)));
        }
    }
    let dir = report::bench_dir(&o.target);
    if let Some(anchors) = &o.python {
        let which = ["howmany", "pi", "parzen", "crunch"];
        let jsonl = dir.join("python-seeds.jsonl");
        match python::seeds_rows(anchors, &which, o.rounds.min(3), &jsonl) {
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
            "seeds: serial vs crew threads and processes vs rayon, {} workers, median of {} rounds",
            o.workers, o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("seeds.md"), &md)?;
    let path = report::write_json(&dir, "seeds", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}
