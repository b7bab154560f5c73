//! `crew demo --cluster`: a private `redis-server` and two worker nodes on
//! this machine (this very program, started with `CREW_WORKER`), then π and
//! the KDE across them, checked against a serial run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use crew::Pool;
use crew::cluster::LocalRedis;

use crate::bench::seeds::Sizes;
use crate::workloads::{Kde, P3, count_inside, parzen_density, split_range, total};

/// The π estimate from `inside` of `n` samples.
fn pi_of(inside: u64, n: u64) -> f64 {
    4.0 * inside as f64 / n as f64
}

fn kde_task(samples: Vec<P3>, queries: Vec<P3>, h: f64) -> Vec<f64> {
    parzen_density(&samples, &queries, h)
}

/// Runs the demo; `quick` uses tiny sizes.
pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    let sizes = if quick { Sizes::quick() } else { Sizes::demo() };
    let workers_per_node = (crew::cpu_count() / 2).max(1);
    println!(
        "crew demo --cluster: starting redis-server and 2 worker nodes of {workers_per_node} process(es)"
    );
    let redis = LocalRedis::start().context(
        "the cluster demo needs redis-server (Debian/Ubuntu: apt-get install redis-server)",
    )?;
    let queue = format!("demo-{}", std::process::id());
    for _ in 0..2 {
        redis.spawn_node(&queue, workers_per_node, &[])?;
    }
    let pool = Pool::builder()
        .cluster(&redis.url())
        .queue(&queue)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.workers() < 2 * workers_per_node {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes did not come up within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("  {} ({} worker processes)", redis.url(), pool.workers());

    let n = sizes.pi_samples;
    let t = Instant::now();
    let serial = count_inside(0, n);
    let serial_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let parts = split_range(n, 4 * pool.workers() as u64);
    let inside: u64 = pool.starmap(count_inside, parts)?.into_iter().sum();
    let cluster_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        inside == serial,
        "the cluster counted {inside}, serial {serial}"
    );
    println!(
        "  pi ~ {:.6} from {n} samples: serial {:.3} s, cluster {:.3} s",
        pi_of(inside, n),
        serial_s,
        cluster_s
    );

    let (ns, nq, nw) = sizes.kde;
    let kde = Kde::new(ns, nq, nw);
    let t = Instant::now();
    let serial: Vec<Vec<f64>> = kde
        .widths
        .iter()
        .map(|&h| parzen_density(&kde.samples, &kde.queries, h))
        .collect();
    let serial_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let args = kde
        .widths
        .iter()
        .map(|&h| (kde.samples.clone(), kde.queries.clone(), h));
    let densities = pool.with_chunksize(1).starmap(kde_task, args)?;
    let cluster_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        total(&densities) == total(&serial),
        "the cluster's KDE differs from serial"
    );
    println!(
        "  KDE {ns} points x {nq} queries x {nw} widths (total {:.6}): serial {:.3} s, cluster {:.3} s",
        total(&densities),
        serial_s,
        cluster_s
    );
    let status =
        crew::cluster::status(&crew::cluster::ClusterConfig::new(redis.url()).queue(&queue))?;
    println!("\n{status}");
    Ok(())
}
