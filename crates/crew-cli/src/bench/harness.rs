//! Timing as the anchors do it (`shared/anchors/rust/src/util.rs`): warm-up,
//! cases run interleaved round by round behind an idle gate, median/min/max.

use std::time::{Duration, Instant};

/// One benchmark case: a name, the number of tasks or elements a run
/// performs (times are divided by it), and a closure that runs the workload
/// once and returns a checksum, so that the optimiser cannot drop the work
/// and so that variants of one workload can be checked against each other.
pub(crate) struct Case<'a> {
    pub(crate) name: String,
    pub(crate) per: f64,
    /// The checksum, and the time the run measured itself (if it did).
    run: Box<dyn FnMut() -> (f64, Option<Duration>) + 'a>,
}

impl<'a> Case<'a> {
    /// A case whose run does one unit of work.
    pub(crate) fn new(name: impl Into<String>, mut run: impl FnMut() -> f64 + 'a) -> Case<'a> {
        Case {
            name: name.into(),
            per: 1.0,
            run: Box::new(move || (run(), None)),
        }
    }

    /// A case whose run times itself: the time it returns is the round's
    /// (for work done in another process, whose own start is not counted).
    pub(crate) fn self_timed(
        name: impl Into<String>,
        mut run: impl FnMut() -> Duration + 'a,
    ) -> Case<'a> {
        Case {
            name: name.into(),
            per: 1.0,
            run: Box::new(move || (1.0, Some(run()))),
        }
    }

    /// A case whose run does `n` tasks (or elements).
    pub(crate) fn per(mut self, n: usize) -> Case<'a> {
        self.per = n as f64;
        self
    }
}

/// The seconds each round took, and the last checksum.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) name: String,
    pub(crate) per: f64,
    pub(crate) seconds: Vec<f64>,
    pub(crate) checksum: f64,
}

impl Measured {
    /// The round times divided by the work per run and multiplied by `scale`.
    pub(crate) fn scaled(&self, scale: f64) -> Vec<f64> {
        self.seconds.iter().map(|t| t / self.per * scale).collect()
    }
}

/// Median, minimum, maximum and count of some samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) runs: usize,
}

/// Summarises `samples` (which must not be empty).
pub(crate) fn summarize(samples: &[f64]) -> Summary {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Summary {
        median,
        min: v[0],
        max: v[n - 1],
        runs: n,
    }
}

/// Waits before each round until the CPUs have been at least 90% idle for
/// one second, because other sessions share the project machine; gives up
/// after `timeout` and says so on stderr.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleGate {
    pub(crate) timeout: Duration,
    pub(crate) enabled: bool,
}

impl IdleGate {
    /// A gate with the anchors' timeout: `$ANCHORS_IDLE_TIMEOUT` seconds,
    /// else `default`.
    pub(crate) fn new(default: Duration) -> IdleGate {
        let timeout = std::env::var("ANCHORS_IDLE_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(default, Duration::from_secs_f64);
        IdleGate {
            timeout,
            enabled: true,
        }
    }

    /// A gate that lets every round through at once (`--quick`).
    pub(crate) fn off() -> IdleGate {
        IdleGate {
            timeout: Duration::ZERO,
            enabled: false,
        }
    }

    /// Blocks until the machine is idle or the timeout passes.
    pub(crate) fn wait(&self) {
        if !self.enabled {
            return;
        }
        let start = Instant::now();
        loop {
            let (total_a, idle_a) = cpu_jiffies();
            std::thread::sleep(Duration::from_secs(1));
            let (total_b, idle_b) = cpu_jiffies();
            let idle = (idle_b - idle_a) as f64 / (total_b - total_a).max(1) as f64;
            if idle >= 0.9 {
                return;
            }
            if start.elapsed() >= self.timeout {
                eprintln!(
                    "idle gate: gave up after {:.0} s (CPUs {:.0}% idle); figures may be noisy",
                    start.elapsed().as_secs_f64(),
                    idle * 100.0
                );
                return;
            }
        }
    }
}

/// Total and idle (idle + iowait) jiffies of all CPUs, from `/proc/stat`;
/// `(1, 1)` where there is no `/proc` (the gate then opens at once).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return (1, 1);
    }
    (v.iter().sum(), v[3] + v[4])
}

/// Runs every case `warmup` times, then `rounds` rounds in which each case
/// runs once, so that load drifting on the machine hits all cases alike
/// (the order rotates by one case per round). Prints one progress line per
/// round on stderr.
pub(crate) fn interleave(
    cases: &mut [&mut Case<'_>],
    warmup: usize,
    rounds: usize,
    gate: &IdleGate,
    label: &str,
) -> Vec<Measured> {
    interleave_gated(cases, warmup, rounds, gate, 1, label)
}

/// [`interleave`], waiting at the idle gate before every `gate_every`-th
/// round only (the first included): for workloads of a few milliseconds a
/// round, whose many rounds would otherwise spend most of their time at
/// the gate (a second each).
pub(crate) fn interleave_gated(
    cases: &mut [&mut Case<'_>],
    warmup: usize,
    rounds: usize,
    gate: &IdleGate,
    gate_every: usize,
    label: &str,
) -> Vec<Measured> {
    let mut out: Vec<Measured> = cases
        .iter()
        .map(|c| Measured {
            name: c.name.clone(),
            per: c.per,
            seconds: Vec::with_capacity(rounds),
            checksum: 0.0,
        })
        .collect();
    for c in cases.iter_mut() {
        for _ in 0..warmup {
            std::hint::black_box((c.run)());
        }
    }
    let k = cases.len();
    for round in 0..rounds {
        if round % gate_every.max(1) == 0 {
            gate.wait();
        }
        // Each round starts one case further on, so that what the first case
        // after the idle gate pays (CPUs waking up: a woken thread may share
        // a CPU for a few ms before Linux migrates it, RESULTS.md) is spread
        // over every case instead of always falling on the same one.
        for j in 0..k {
            let i = (round + j) % k;
            let start = Instant::now();
            let (checksum, took) = (cases[i].run)();
            let took = took.unwrap_or_else(|| start.elapsed());
            out[i].seconds.push(took.as_secs_f64());
            out[i].checksum = checksum;
        }
        eprintln!("{label}: round {}/{rounds} done", round + 1);
    }
    out
}

/// Fails if the cases do not all agree on their checksum: a parallel
/// variant that computes something else measures nothing.
pub(crate) fn check_same(measured: &[Measured], what: &str) -> anyhow::Result<f64> {
    let first = measured
        .first()
        .ok_or_else(|| anyhow::anyhow!("{what}: no case ran"))?;
    for m in measured {
        anyhow::ensure!(
            m.checksum == first.checksum,
            "{what}: case {} computed {} but {} computed {}",
            m.name,
            m.checksum,
            first.name,
            first.checksum
        );
    }
    Ok(first.checksum)
}

/// Formats a figure with 3 significant digits, as the anchors' tables do.
pub(crate) fn fmt(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}
