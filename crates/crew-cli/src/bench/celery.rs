//! `crew bench celery`: no-op Celery tasks sent by a Python client through
//! one local Redis, served by a crew node (this program, started with
//! `CREW_CELERY`) and by a Celery prefork worker with as many processes.
//! Writes `celery.json`: `crew_node.noop`, `celery_worker.noop` (tasks/s:
//! the client queues N tasks aside, releases them to the worker at once,
//! and counts from the release to the last result's `date_done`, so the
//! client's own speed is not measured) and `crew_node.roundtrip_p50`,
//! `celery_worker.roundtrip_p50` (ms, `send_task(...).get()` one task at a
//! time).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use crew::cluster::LocalRedis;

use super::harness::{IdleGate, summarize};
use super::report::{self, Record};

/// The task both workers serve: the crew node runs this one.
#[crew::task(name = "bench.noop")]
fn noop(x: u64) -> u64 {
    x
}

/// Options of `crew bench celery`.
#[derive(Debug, Clone)]
pub(crate) struct CeleryOptions {
    pub(crate) rounds: usize,
    /// Tasks queued, then released to the worker at once.
    pub(crate) tasks: usize,
    /// Round trips one after the other.
    pub(crate) roundtrips: usize,
    /// Worker processes of each side.
    pub(crate) processes: usize,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
}

/// A child killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(serde::Deserialize)]
struct Line {
    noop: f64,
    p50_ms: f64,
}

fn rounds(
    o: &CeleryOptions,
    script: &Path,
    url: &str,
    queue: &str,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut noop, mut p50) = (Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        o.gate.wait();
        let out = Command::new("python3")
            .arg(script)
            .args([
                "client",
                url,
                &o.tasks.to_string(),
                &o.roundtrips.to_string(),
                queue,
            ])
            .current_dir(script.parent().expect("a folder"))
            .stderr(Stdio::inherit())
            .output()
            .context("running the Celery client (pip install \"celery[redis]\")")?;
        anyhow::ensure!(
            out.status.success(),
            "the Celery client failed on queue {queue}"
        );
        let line: Line = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading {}", String::from_utf8_lossy(&out.stdout)))?;
        noop.push(line.noop);
        p50.push(line.p50_ms);
    }
    Ok((noop, p50))
}

/// Runs the suite, prints the table and writes `celery.json`.
pub(crate) fn run(o: &CeleryOptions) -> anyhow::Result<Vec<Record>> {
    let redis = LocalRedis::start().context("starting redis-server")?;
    let url = redis.tcp_url();
    let script = super::embedded_script(
        &o.target,
        "celery_bench.py",
        include_str!("../../python/celery_bench.py"),
    )?;
    let procs = o.processes.max(1).to_string();
    let mut records = Vec::new();
    let mut notes = Vec::new();
    {
        let _node = Kid(Command::new("/proc/self/exe")
            .env(crew::celery::ENV_CELERY, format!("{url}/4"))
            .env(crew::celery::ENV_CELERY_BACKEND, format!("{url}/5"))
            .env(crew::celery::ENV_CELERY_QUEUES, "crew")
            .env("CREW_CONCURRENCY", &procs)
            .stdin(Stdio::null())
            .spawn()
            .context("starting a crew Celery node")?);
        let (noop, p50) = rounds(o, &script, &url, "crew")?;
        records.push(Record::new(
            "celery",
            "crew_node.noop",
            "tasks/s",
            summarize(&noop),
        ));
        records.push(Record::new(
            "celery",
            "crew_node.roundtrip_p50",
            "ms",
            summarize(&p50),
        ));
    }
    {
        let _worker = Kid(Command::new("python3")
            .arg(&script)
            .args(["worker", &url, &procs, "python"])
            .current_dir(script.parent().expect("a folder"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting a Celery worker (pip install \"celery[redis]\")")?);
        let (noop, p50) = rounds(o, &script, &url, "python")?;
        records.push(Record::new(
            "celery",
            "celery_worker.noop",
            "tasks/s",
            summarize(&noop),
        ));
        records.push(Record::new(
            "celery",
            "celery_worker.roundtrip_p50",
            "ms",
            summarize(&p50),
        ));
    }
    for r in &records {
        let who = if r.case.starts_with("crew") {
            "crew node"
        } else {
            "Celery prefork worker"
        };
        notes.push((r.case.clone(), format!("{who}, {procs} process(es)")));
    }
    let md = report::markdown(
        &format!(
            "no-op Celery tasks from a Python client through one local Redis: {} queued then released at once (tasks/s from the release to the last result), {} round trips; median of {} rounds",
            o.tasks, o.roundtrips, o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    let dir = report::bench_dir(&o.target);
    std::fs::write(dir.join("celery.md"), &md).ok();
    let path = report::write_json(&dir, "celery", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}
