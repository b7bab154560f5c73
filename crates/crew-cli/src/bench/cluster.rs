//! `crew bench cluster`: no-op tasks through Redis on this machine, with 1,
//! 2 and 4 worker nodes (this program, started with `CREW_WORKER`, one
//! worker process each): a batched `map` (of 2,000,000 items by default,
//! `--map-tasks`: long enough that the fixed costs of a map, the nodes'
//! first reads, the first chunk's encoding and the last one's results,
//! weigh little beside its throughput) and unbatched `submit` (tasks/s),
//! and the submit-to-result round trip (ms); with `--python`, Celery with
//! its Redis broker and result backend and as many prefork processes; and
//! the 2-node rows again on a one-shard Redis Cluster (`.one_shard`: what
//! one shard sustains; `--no-one-shard` leaves them out); with `--churn`,
//! a simulation of nodes killed and restarted at random during a long map
//! (throughput, kills and reclaims). Writes `cluster.json`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crew::cluster::{Cluster, ClusterConfig, LocalRedis};
use crew::{Executor, Pool};

use super::harness::{IdleGate, summarize};
use super::report::{self, Record};

/// Options of `crew bench cluster`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterOptions {
    pub(crate) rounds: usize,
    /// Items of the map case.
    pub(crate) map_tasks: usize,
    /// Futures of the submit case.
    pub(crate) submit_tasks: usize,
    /// Round trips measured one after the other.
    pub(crate) roundtrips: usize,
    pub(crate) nodes: Vec<usize>,
    /// `CREW_PREFETCH` of the nodes.
    pub(crate) prefetch: usize,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
    pub(crate) python: bool,
    /// Adds the 2-node rows on a one-shard Redis Cluster.
    pub(crate) redis_cluster: bool,
    /// Adds the churn simulation: this many nodes, one killed and replaced
    /// at random every `churn_every` during a map of `churn_tasks` items.
    pub(crate) churn_nodes: Option<usize>,
    pub(crate) churn_tasks: usize,
    pub(crate) churn_every: Duration,
}

fn noop(x: u64) -> u64 {
    x
}

fn case_name(base: &str, nodes: usize) -> String {
    if nodes == 2 {
        format!("cluster.{base}")
    } else {
        format!(
            "cluster.{base}.{nodes}node{}",
            if nodes == 1 { "" } else { "s" }
        )
    }
}

/// Runs the suite, prints the table and writes `cluster.json`.
pub(crate) fn run(o: &ClusterOptions) -> anyhow::Result<Vec<Record>> {
    let redis = LocalRedis::start().context("starting redis-server")?;
    let mut records = Vec::new();
    let mut notes = Vec::new();
    for (round_queue, &n) in o.nodes.iter().enumerate() {
        let queue = format!("bench-{}-{round_queue}", std::process::id());
        let (map, submit, trip) = measure(o, &redis, &queue, n)?;
        for (base, unit, samples) in [
            ("map_noop", "tasks/s", &map),
            ("submit_noop", "tasks/s", &submit),
            ("roundtrip_p50", "ms", &trip),
        ] {
            let name = case_name(base, n);
            let what = match base {
                "map_noop" => format!("a map of {} items, ", o.map_tasks),
                _ => String::new(),
            };
            notes.push((
                name.clone(),
                format!(
                    "{what}{n} node(s), 1 worker process each, prefetch {}",
                    o.prefetch
                ),
            ));
            records.push(Record::new("cluster", &name, unit, summarize(samples)));
        }
    }
    // What one shard of a Redis Cluster sustains: the same 2-node rows
    // against `redis-server --cluster-enabled yes` holding every slot.
    if o.redis_cluster {
        let shard =
            LocalRedis::start_one_shard_cluster().context("starting a one-shard Redis Cluster")?;
        let queue = format!("bench-{}-shard", std::process::id());
        let (map, submit, trip) = measure(o, &shard, &queue, 2)?;
        for (base, unit, samples) in [
            ("map_noop", "tasks/s", &map),
            ("submit_noop", "tasks/s", &submit),
            ("roundtrip_p50", "ms", &trip),
        ] {
            let name = format!("cluster.{base}.one_shard");
            let what = match base {
                "map_noop" => format!("a map of {} items, ", o.map_tasks),
                _ => String::new(),
            };
            notes.push((
                name.clone(),
                format!(
                    "{what}2 nodes on a one-shard Redis Cluster (cluster-enabled yes), prefetch {}",
                    o.prefetch
                ),
            ));
            records.push(Record::new("cluster", &name, unit, summarize(samples)));
        }
    }
    if let Some(n) = o.churn_nodes {
        records.extend(churn_rows(o, &redis, n, &mut notes)?);
    }
    if o.python {
        match celery_rows(o, &redis) {
            Ok(rows) => records.extend(rows),
            Err(e) => eprintln!("crew bench cluster: no Celery rows: {e:#}"),
        }
    }
    let md = report::markdown(
        &format!(
            "no-op tasks through one local Redis: map of {} items, {} submits, {} round trips; median of {} rounds",
            o.map_tasks, o.submit_tasks, o.roundtrips, o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    let dir = report::bench_dir(&o.target);
    std::fs::write(dir.join("cluster.md"), &md).ok();
    let path = report::write_json(&dir, "cluster", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}

/// The churn simulation: `n` nodes of one worker process, one killed
/// (SIGKILL) and replaced at random every `churn_every` through each
/// round's map; the map's tasks/s, the nodes killed and the entries
/// reclaimed. Fails if any item is missing or wrong, or dead-lettered.
fn churn_rows(
    o: &ClusterOptions,
    redis: &LocalRedis,
    n: usize,
    notes: &mut Vec<(String, String)>,
) -> anyhow::Result<Vec<Record>> {
    let (mut rate, mut kills, mut reclaimed) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let queue = format!("bench-{}-churn-{round}", std::process::id());
        let config = ClusterConfig::new(redis.url()).queue(&queue);
        let pool: Pool<Cluster> = Pool::builder().cluster_config(config.clone()).build()?;
        o.gate.wait();
        let env = [(crew::cluster::ENV_HEARTBEAT_MS, "200")];
        let (out, killed) = redis.churn(&queue, n, 1, &env, o.churn_every, || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while pool.workers() < n {
                anyhow::ensure!(Instant::now() < deadline, "{n} nodes did not come up");
                std::thread::sleep(Duration::from_millis(10));
            }
            let t = Instant::now();
            let v = pool
                .with_chunksize(500)
                .map(noop, 0..o.churn_tasks as u64)?;
            let secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(
                v.len() == o.churn_tasks && v.iter().enumerate().all(|(i, &x)| x == i as u64),
                "the map under churn lost or garbled items"
            );
            Ok(o.churn_tasks as f64 / secs)
        })?;
        rate.push(out?);
        kills.push(killed as f64);
        let s = crew::cluster::status(&config)?;
        anyhow::ensure!(s.dead == 0, "{} entries dead-lettered under churn", s.dead);
        reclaimed.push(s.reclaimed as f64);
    }
    let note = format!(
        "{n} nodes of 1 worker process, one killed and replaced every {} ms; map of {} no-op items in chunks of 500",
        o.churn_every.as_millis(),
        o.churn_tasks
    );
    let mut rows = Vec::new();
    for (name, unit, samples) in [
        ("cluster.churn_map", "tasks/s", &rate),
        ("cluster.churn_kills", "nodes", &kills),
        ("cluster.churn_reclaimed", "entries", &reclaimed),
    ] {
        notes.push((name.to_owned(), note.clone()));
        rows.push(Record::new("cluster", name, unit, summarize(samples)));
    }
    Ok(rows)
}

/// Map, submit and round-trip samples with `n` nodes on `queue` of `redis`.
type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);

fn measure(
    o: &ClusterOptions,
    redis: &LocalRedis,
    queue: &str,
    n: usize,
) -> anyhow::Result<Samples> {
    let prefetch = o.prefetch.to_string();
    let nodes: Vec<_> = (0..n)
        .map(|_| redis.spawn_node(queue, 1, &[(crew::cluster::ENV_PREFETCH, &prefetch)]))
        .collect::<crew::Result<_>>()?;
    let config = ClusterConfig::new(redis.url()).queue(queue);
    let pool: Pool<Cluster> = Pool::builder().cluster_config(config.clone()).build()?;
    let ex: Executor<Cluster> = Executor::cluster_config(config)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.workers() < n || ex.workers() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{n} nodes did not come up within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Warm up: every node has run something.
    pool.with_chunksize(1).map(noop, 0..(4 * n as u64))?;
    let (mut map, mut submit, mut trip) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        o.gate.wait();
        let t = Instant::now();
        let v = pool.map(noop, 0..o.map_tasks as u64)?;
        map.push(o.map_tasks as f64 / t.elapsed().as_secs_f64());
        anyhow::ensure!(
            v.len() == o.map_tasks && v.iter().enumerate().all(|(i, &x)| x == i as u64)
        );
        let t = Instant::now();
        let fs: Vec<_> = (0..o.submit_tasks as u64)
            .map(|i| ex.submit(noop, (i,)))
            .collect();
        for (i, f) in fs.into_iter().enumerate() {
            anyhow::ensure!(f.result()? == i as u64);
        }
        submit.push(o.submit_tasks as f64 / t.elapsed().as_secs_f64());
        let mut lat = Vec::with_capacity(o.roundtrips);
        for i in 0..o.roundtrips as u64 {
            let t = Instant::now();
            anyhow::ensure!(ex.submit(noop, (i,)).result()? == i);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        trip.push(summarize(&lat).median);
    }
    drop((pool, ex));
    for node in nodes {
        redis.kill_node(node);
    }
    Ok((map, submit, trip))
}

#[derive(serde::Deserialize)]
struct CeleryLine {
    noop: f64,
    p50_ms: f64,
}

/// Celery with a prefork worker of 2 processes (as the 2-node rows), on
/// the same Redis.
fn celery_rows(o: &ClusterOptions, redis: &LocalRedis) -> anyhow::Result<Vec<Record>> {
    let script = super::embedded_script(
        &o.target,
        "celery_anchor.py",
        include_str!("../../python/celery_anchor.py"),
    )?;
    let url = redis.tcp_url();
    let mut worker = Command::new("python3")
        .arg(&script)
        .args(["worker", &url, "2"])
        .current_dir(script.parent().expect("a folder"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting a Celery worker (pip install \"celery[redis]\")")?;
    let mut noop = Vec::new();
    let mut p50 = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for _ in 0..o.rounds {
            o.gate.wait();
            let out = Command::new("python3")
                .arg(&script)
                .args([
                    "client",
                    &url,
                    &o.submit_tasks.to_string(),
                    &o.roundtrips.to_string(),
                ])
                .current_dir(script.parent().expect("a folder"))
                .output()
                .context("running the Celery client")?;
            anyhow::ensure!(
                out.status.success(),
                "the Celery client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line: CeleryLine = serde_json::from_slice(&out.stdout)?;
            noop.push(line.noop);
            p50.push(line.p50_ms);
        }
        Ok(())
    })();
    let _ = worker.kill();
    let _ = worker.wait();
    result?;
    Ok(vec![
        Record::new("cluster", "celery.noop", "tasks/s", summarize(&noop)),
        Record::new("cluster", "celery.roundtrip_p50", "ms", summarize(&p50)),
    ])
}
