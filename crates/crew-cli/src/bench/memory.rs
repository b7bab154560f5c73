//! `crew bench memory`: cache hits of `crew::Memory`, beside joblib's
//! `Memory` on the same data in the same run with `--python`
//! (`crates/crew-cli/python/memory_anchor.py`):
//!
//! * `memory.hit_small` / `joblib.hit_small`: a cached `x * x` called with
//!   arguments already in the cache, µs per call;
//! * `memory.hit_100mb` / `joblib.hit_100mb`: a cached function returning
//!   100 MB of `f64`, called with arguments in the cache, the result loaded
//!   as a vector (a copy), MB/s;
//! * `memory.hit_100mb_mapped` / `joblib.hit_100mb_mmap`: the same result
//!   used in place from a memory map (`call_mapped`; joblib's
//!   `mmap_mode="r"`), MB/s.
//!
//! Every case is computed once before timing, so each timed call is a hit.
//! The Python side needs joblib and numpy: when `python3` lacks them, the
//! bench makes a virtual environment in `<target>/crew-bench/python-env`
//! and installs `crates/crew-cli/python/requirements.txt` into it.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use crew::Memory;

use super::harness::{Case, IdleGate, interleave, summarize};
use super::report::{self, Record};

/// Options of `crew bench memory`.
#[derive(Debug, Clone)]
pub(crate) struct MemoryOptions {
    pub(crate) rounds: usize,
    /// Calls per round of the small case.
    pub(crate) calls: usize,
    /// Size of the large result, in MB.
    pub(crate) size_mb: f64,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
    /// Also run the joblib anchor.
    pub(crate) python: bool,
}

fn square(x: u64) -> u64 {
    x * x
}

fn block(n: usize, seed: f64) -> Vec<f64> {
    (0..n).map(|i| i as f64 * seed).collect()
}

/// Runs the suite, prints the table and writes `memory.json`.
pub(crate) fn run(o: &MemoryOptions) -> anyhow::Result<Vec<Record>> {
    let dir = report::bench_dir(&o.target);
    let location = dir.join("memory-cache");
    let mem = Memory::new(&location)?;
    mem.clear()?;
    let n = (o.size_mb * 1e6 / 8.0) as usize;
    let bytes = (n * 8) as f64;
    let small = mem.cache(square);
    let big = mem.cache(block);
    for x in 0..o.calls as u64 {
        small.call((x,));
    }
    let expect = big.call((n, 3.0)).last().copied();
    let calls = o.calls as u64;
    let want: u64 = (0..calls).map(|x| x * x).sum();
    let mut hit_small = Case::new("memory.hit_small", || {
        let total: u64 = (0..calls).map(|x| small.call((black_box(x),))).sum();
        assert_eq!(total, want);
        1.0
    })
    .per(o.calls);
    let mut hit_big = Case::new("memory.hit_100mb", || {
        let v: Vec<f64> = big.call((n, 3.0));
        assert!(v.len() == n && v.last().copied() == expect);
        1.0
    });
    let mut hit_mapped = Case::new("memory.hit_100mb_mapped", || {
        let v = big.call_mapped((n, 3.0));
        assert!(v.len() == n && v.last().copied() == expect);
        1.0
    });
    let misses = mem.stats().misses;
    let mut cases = vec![&mut hit_small, &mut hit_big, &mut hit_mapped];
    let measured = interleave(&mut cases, 1, o.rounds, &o.gate, "memory");
    anyhow::ensure!(
        mem.stats().misses == misses && mem.stats().corrupt == 0,
        "a timed call missed the cache"
    );
    let mut records: Vec<Record> = measured
        .iter()
        .map(|m| {
            if m.name == "memory.hit_small" {
                Record::from_measured("memory", m, "µs/call", 1e6)
            } else {
                let rates: Vec<f64> = m.seconds.iter().map(|t| bytes / t / 1e6).collect();
                Record::new("memory", &m.name, "MB/s", summarize(&rates))
            }
        })
        .collect();
    let _ = mem.clear();
    if o.python {
        match python_rows(o, &dir) {
            Ok(rows) => records.extend(rows),
            Err(e) => eprintln!("python rows skipped: {e:#}"),
        }
    }
    let mb = o.size_mb;
    let notes = vec![
        (
            "memory.hit_small".to_string(),
            format!(
                "Memory::cache(x * x).call((x,)), {} calls in the cache",
                o.calls
            ),
        ),
        (
            "memory.hit_100mb".to_string(),
            format!("call((n, seed)) -> Vec<f64> of {mb} MB, read and decoded"),
        ),
        (
            "memory.hit_100mb_mapped".to_string(),
            format!("call_mapped: the {mb} MB used in place from a read-only map"),
        ),
        (
            "joblib.hit_small".to_string(),
            "joblib.Memory(...).cache(square)(x), same calls".to_string(),
        ),
        (
            "joblib.hit_100mb".to_string(),
            format!("numpy float64 array of {mb} MB, mmap_mode=None"),
        ),
        (
            "joblib.hit_100mb_mmap".to_string(),
            "the same with mmap_mode=\"r\"".to_string(),
        ),
    ];
    let md = report::markdown(
        &format!(
            "cache hits, crew::Memory vs joblib.Memory, median of {} rounds",
            o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    let get = |c: &str| records.iter().find(|r| r.case == c).map(|r| r.median);
    if let (Some(r), Some(p)) = (get("memory.hit_small"), get("joblib.hit_small")) {
        println!(
            "- [{}] hit_small: {:.1}x joblib (target >= 10x)",
            if p >= 10.0 * r { "met" } else { "MISSED" },
            p / r
        );
    }
    if let (Some(r), Some(p)) = (get("memory.hit_100mb"), get("joblib.hit_100mb")) {
        println!(
            "- [{}] hit_100mb: {:.1}x joblib (target >= 10x), {r:.0} MB/s (target >= 1000)",
            if r >= 10.0 * p && r >= 1000.0 {
                "met"
            } else {
                "MISSED"
            },
            r / p
        );
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("memory.md"), &md).ok();
    let path = report::write_json(&dir, "memory", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}

fn imports_ok(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import joblib, numpy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python with joblib and numpy: `python3` if it has them, else a
/// virtual environment under `dir` with `requirements.txt` installed.
fn python_with_joblib(o: &MemoryOptions, dir: &Path) -> anyhow::Result<PathBuf> {
    let system = PathBuf::from("python3");
    if imports_ok(&system) {
        return Ok(system);
    }
    let env = dir.join("python-env");
    let python = env.join("bin").join("python");
    if !python.exists() {
        eprintln!("python: creating {} for joblib and numpy", env.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&env)
            .status()
            .context("running python3 -m venv")?
            .success();
        anyhow::ensure!(ok, "python3 -m venv {} failed", env.display());
    }
    if !imports_ok(&python) {
        let requirements = super::embedded_script(
            &o.target,
            "requirements.txt",
            include_str!("../../python/requirements.txt"),
        )?;
        eprintln!("python: pip install -r {}", requirements.display());
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&requirements)
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .context("running pip")?
            .success();
        anyhow::ensure!(
            ok && imports_ok(&python),
            "pip could not install joblib and numpy"
        );
    }
    Ok(python)
}

/// Runs the joblib anchor and reads its JSON lines.
fn python_rows(o: &MemoryOptions, dir: &Path) -> anyhow::Result<Vec<Record>> {
    let script = super::embedded_script(
        &o.target,
        "memory_anchor.py",
        include_str!("../../python/memory_anchor.py"),
    )?;
    let python = python_with_joblib(o, dir)?;
    let out = Command::new(&python)
        .arg(&script)
        .args(["--rounds", &o.rounds.to_string()])
        .args(["--calls", &o.calls.to_string()])
        .args(["--size-mb", &o.size_mb.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running the joblib anchor")?;
    anyhow::ensure!(out.status.success(), "{} failed", script.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).context("a record of the anchor"))
        .collect()
}
