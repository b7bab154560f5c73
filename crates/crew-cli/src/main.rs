//! The `crew` command: `crew demo` runs the seeds' workloads serially and in
//! parallel and draws the speed-ups; `crew bench` measures crew against
//! rayon (and, with `--python`, the Python anchors).

mod bench;
mod chart;
mod demo;
mod demo_cluster;
mod soak;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use bench::harness::IdleGate;
use bench::overhead::OverheadOptions;
use bench::python::{DEFAULT_METHODS, PythonOptions};
use bench::seeds::Sizes;
use bench::{SeedsOptions, default_anchors, default_target, prepare_dir};

/// crew: Python's multiprocessing, concurrent.futures and joblib, in Rust.
#[derive(Debug, Parser)]
#[command(name = "crew", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the seeds' workloads serially, on threads and on processes: a table of time,
    /// speed-up and efficiency, `crew-bench/demo.json` and
    /// `crew-demo/speedup.png` under the target folder.
    Demo {
        /// Tiny sizes, one round, no idle gate (for tests).
        #[arg(long)]
        quick: bool,
        /// Rounds per workload (default 5, crunch and sleep at most 3, pi 5 times
        /// and the KDE 3 times as many; 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Also runs the KDE on a pool that records a timeline and writes it
        /// here as a Chrome trace (Perfetto, chrome://tracing).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Leave out the worker-process rows.
        #[arg(long)]
        no_processes: bool,
        /// Instead: start a local redis-server and two worker nodes, and run
        /// pi and the KDE across them.
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Chaos soak: maps, imap, submit, apply_async and Parallel on threads and
    /// processes while workers are killed and faults injected; checks that
    /// every task is reported once, nothing hangs, no process is left and
    /// fds and RSS stay flat. Exits non-zero on any violation.
    Soak {
        /// How long to run, in seconds (default 60).
        #[arg(long, conflicts_with = "minutes")]
        seconds: Option<u64>,
        /// How long to run, in minutes.
        #[arg(long)]
        minutes: Option<u64>,
        /// Seed of the rounds' choices (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Workers of every pool.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// The state of a cluster queue: live nodes (build, host and its CPUs,
    /// pid, workers, running, done, failed), tasks waiting and why, rates,
    /// dead letters.
    Status {
        /// The Redis URL (default: $CREW_CLUSTER).
        url: Option<String>,
        /// The queue (default: $CREW_QUEUE, else `default`).
        #[arg(long)]
        queue: Option<String>,
        /// Seconds between the two looks that give the rates (0: one look,
        /// no rates).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        suite: Suite,
    },
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Per-task overhead of a trivial task: crew threads vs rayon vs serial.
    Overhead(OverheadArgs),
    /// The seed workloads: serial vs crew threads and processes vs rayon.
    Seeds(SeedsArgs),
    /// From creating a pool to its first result: processes, threads, rayon.
    Startup(SmallArgs),
    /// 10 MB into and out of a worker process (serde bytes vs shared memory),
    /// then echoes of 1 KB to 100 MB beside procspawn (and Python): a table
    /// and `transfer.png`.
    Transfer(TransferArgs),
    /// Shared Queue and locked Value across processes, beside Python's.
    Shm(ShmArgs),
    /// Cache hits of crew::Memory (small and 100 MB results), beside joblib.Memory.
    Memory(MemoryArgs),
    /// No-op tasks through a local Redis with 1, 2 and 4 worker nodes
    /// (map, submit, round trip), beside Celery with `--python`.
    Cluster(ClusterArgs),
    /// No-op Celery tasks from a Python client: a crew node beside a Celery
    /// prefork worker with as many processes (needs `pip install "celery[redis]"`).
    Celery(CeleryArgs),
    /// Every suite, one after the other.
    All {
        #[command(flatten)]
        overhead: OverheadArgs,
        /// Rounds of the seeds suite.
        #[arg(long, default_value_t = 5)]
        seeds_rounds: usize,
    },
}

#[derive(Debug, Clone, Args)]
struct CeleryArgs {
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tasks queued, then released to the worker at once.
    #[arg(long, default_value_t = 5000)]
    tasks: usize,
    /// Round trips measured one after the other.
    #[arg(long, default_value_t = 200)]
    roundtrips: usize,
    /// Worker processes of the crew node and of the Celery worker.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Items of the batched map (`cluster.map_noop`): 2,000,000, so that
    /// a map runs a few hundred ms and measures throughput, not the fixed
    /// costs of starting and ending one.
    #[arg(long, default_value_t = 2_000_000)]
    map_tasks: usize,
    /// Futures submitted one by one (also the Celery task count).
    #[arg(long, default_value_t = 20_000)]
    submit_tasks: usize,
    /// Round trips measured one after the other.
    #[arg(long, default_value_t = 500)]
    roundtrips: usize,
    /// Node counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    nodes: Vec<usize>,
    /// Entries each node takes beyond one per worker process
    /// (`CREW_PREFETCH`).
    #[arg(long, default_value_t = 64)]
    prefetch: usize,
    /// Adds Celery's rows (needs `pip install "celery[redis]"`).
    #[arg(long)]
    python: bool,
    /// Leaves out the 2-node rows on a one-shard Redis Cluster
    /// (`redis-server --cluster-enabled yes` holding every slot).
    #[arg(long)]
    no_one_shard: bool,
    /// Adds the churn simulation: 16 nodes (`--churn-nodes`), one killed
    /// and replaced at random every `--churn-every-ms` during a map of
    /// `--churn-tasks` items; reports tasks/s, kills and reclaims.
    #[arg(long)]
    churn: bool,
    /// Nodes of the churn simulation.
    #[arg(long, default_value_t = 16)]
    churn_nodes: usize,
    /// Items of the churn simulation's map.
    #[arg(long, default_value_t = 2_000_000)]
    churn_tasks: usize,
    /// How often a node is killed and replaced, in milliseconds.
    #[arg(long, default_value_t = 200)]
    churn_every_ms: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
struct SmallArgs {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Workers of every pool.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
struct TransferArgs {
    #[command(flatten)]
    small: SmallArgs,
    /// Payload sizes of the echo sweep (`1kb`, `10mb`, or bytes); `none`
    /// skips it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1kb,10kb,100kb,1mb,10mb,100mb"
    )]
    sizes: Vec<String>,
    /// Interleaved rounds of each size of the echo sweep.
    #[arg(long, default_value_t = 5)]
    echo_rounds: usize,
    /// Adds the Python rows (`crates/crew-cli/python/transfer_anchor.py`,
    /// standard library only).
    #[arg(long)]
    python: bool,
}

impl TransferArgs {
    fn sizes(&self) -> anyhow::Result<Vec<usize>> {
        if self.sizes.iter().any(|s| s == "none") {
            return Ok(Vec::new());
        }
        self.sizes
            .iter()
            .map(|s| bench::transfer::parse_size(s).map_err(anyhow::Error::msg))
            .collect()
    }
}

#[derive(Debug, Clone, Args)]
struct ShmArgs {
    /// Rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Adds the Python rows (`crates/crew-shm/bench/shm_anchor.py`).
    #[arg(long)]
    python: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
struct MemoryArgs {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Calls per round of the small case.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Size of the large result, in MB.
    #[arg(long, default_value_t = 100.0)]
    size_mb: f64,
    /// Adds joblib's rows (`crates/crew-cli/python/memory_anchor.py`). When
    /// python3 lacks joblib or numpy, a virtual environment is made under
    /// `<target>/crew-bench/python-env` and
    /// `crates/crew-cli/python/requirements.txt` installed into it.
    #[arg(long)]
    python: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// Where the reports go (`<DIR>/crew-bench/`, `<DIR>/crew-demo/`);
    /// default: `target/` of the Cargo project around the current folder,
    /// else the current folder.  Created if missing.
    #[arg(long, value_name = "DIR", global = true)]
    target_dir: Option<PathBuf>,
    /// Do not wait for idle CPUs before each round.
    #[arg(long, global = true)]
    no_idle_gate: bool,
    /// Give up waiting for idle CPUs after this many seconds
    /// (default: $ANCHORS_IDLE_TIMEOUT, else 120 for benchmarks, 2 for the demo).
    #[arg(long, value_name = "SECONDS", global = true)]
    idle_timeout: Option<f64>,
}

impl Common {
    /// The reports' folder, created, as a clean absolute path; if it cannot
    /// be created, the path as given (writing the first report says why).
    fn target(&self) -> PathBuf {
        let dir = self.target_dir.clone().unwrap_or_else(default_target);
        prepare_dir(&dir).unwrap_or(dir)
    }

    fn gate(&self, default: IdleGate) -> IdleGate {
        if self.no_idle_gate {
            return IdleGate::off();
        }
        match self.idle_timeout {
            Some(s) => IdleGate {
                timeout: Duration::from_secs_f64(s),
                enabled: true,
            },
            None => default,
        }
    }
}

#[derive(Debug, Clone, Args)]
struct OverheadArgs {
    /// Tasks of the one-task-per-call cases (threads.submit, rayon.spawn_channel).
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Elements of the map cases (threads.map, rayon.par_iter, serial).
    #[arg(long, default_value_t = 10_000_000)]
    elements: usize,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Workers of every pool.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Adds rows from the Python anchors (`python/overhead.py`).
    #[arg(long)]
    python: bool,
    /// The anchors folder; default `../shared/anchors` beside the Cargo
    /// project around the current folder.
    #[arg(long, value_name = "DIR")]
    anchors: Option<PathBuf>,
    /// The Python methods to run (names from overhead.py).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_METHODS.iter().map(|s| s.to_string()))]
    python_methods: Vec<String>,
    /// Rounds of the Python run.
    #[arg(long, default_value_t = 3)]
    python_rounds: usize,
    /// Worker counts of the scaling cases (apply latency and submit cost
    /// per worker count).
    #[arg(long, value_delimiter = ',', default_values_t = [2, 8, 32])]
    scaling_workers: Vec<usize>,
    /// Submits of `processes.submit_as_completed_1m`.
    #[arg(long, default_value_t = 1_000_000)]
    submits: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Args)]
struct SeedsArgs {
    /// Interleaved rounds (sleep: at most 3).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Workers of every pool.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tiny sizes.
    #[arg(long)]
    quick: bool,
    /// Leave out the worker-process cases.
    #[arg(long)]
    no_processes: bool,
    /// Adds rows from the Python anchors (`python/seeds.py`; needs numpy
    /// and joblib).
    #[arg(long)]
    python: bool,
    /// The anchors folder; default `../shared/anchors` beside the Cargo
    /// project around the current folder.
    #[arg(long, value_name = "DIR")]
    anchors: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

fn overhead_options(a: &OverheadArgs) -> OverheadOptions {
    let target = a.common.target();
    OverheadOptions {
        tasks: a.tasks,
        elements: a.elements,
        rounds: a.rounds,
        workers: a.workers,
        gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
        python: a.python.then(|| PythonOptions {
            anchors: a.anchors.clone().unwrap_or_else(default_anchors),
            tasks: a.tasks,
            rounds: a.python_rounds,
            methods: a.python_methods.clone(),
            jsonl: bench::report::bench_dir(&target).join("python-overhead.jsonl"),
        }),
        scaling_workers: a.scaling_workers.clone(),
        submits: a.submits.max(1),
        target,
    }
}

/// `crew status`: one look, or two `interval` apart for the rates.
fn status(url: Option<String>, queue: Option<String>, interval: f64) -> anyhow::Result<()> {
    let mut config = match url {
        Some(u) => crew::cluster::ClusterConfig::new(u),
        None => crew::cluster::ClusterConfig::from_env()?,
    };
    if let Some(q) = queue {
        config = config.queue(q);
    }
    let first = crew::cluster::status(&config)?;
    if interval <= 0.0 {
        print!("{first}");
        return Ok(());
    }
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs_f64(interval));
    let second = crew::cluster::status(&config)?;
    let secs = t.elapsed().as_secs_f64();
    print!("{second}");
    let finished =
        |s: &crew::cluster::QueueStatus| -> u64 { s.nodes.iter().map(|n| n.done + n.failed).sum() };
    let done = finished(&second).saturating_sub(finished(&first));
    println!(
        "rate: {:.0} tasks/s finished over {secs:.1} s",
        done as f64 / secs
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // In a re-executed worker process this serves tasks and never returns;
    // likewise for procspawn's workers (the `procspawn.pool` anchor).
    crew::init();
    procspawn::init();
    if let Some(workers) = std::env::var_os(bench::startup::COLD_ENV) {
        bench::startup::cold_child(&workers);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { quick, cluster, .. } if cluster => {
            demo_cluster::run(quick)?;
        }
        Command::Status {
            url,
            queue,
            interval,
        } => {
            status(url, queue, interval)?;
        }
        Command::Demo {
            quick,
            rounds,
            trace,
            no_processes,
            common,
            ..
        } => {
            demo::run(&demo::DemoOptions {
                quick,
                rounds: rounds.unwrap_or(if quick { 1 } else { 5 }).max(1),
                target: common.target(),
                trace,
                gate: common.gate(demo::demo_gate(quick)),
                processes: !no_processes,
            })?;
        }
        Command::Soak {
            seconds,
            minutes,
            seed,
            workers,
        } => {
            let secs = seconds.or(minutes.map(|m| m * 60)).unwrap_or(60);
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            let ok = soak::run(&soak::SoakOptions {
                duration: Duration::from_secs(secs),
                seed,
                workers: workers.max(1),
            });
            if !ok {
                anyhow::bail!("the soak found violations (seed {seed})");
            }
        }
        Command::Bench { suite } => match suite {
            Suite::Overhead(a) => {
                bench::overhead::run(&overhead_options(&a))?;
            }
            Suite::Seeds(a) => {
                bench::run_seeds(&SeedsOptions {
                    rounds: a.rounds.max(1),
                    workers: a.workers,
                    sizes: if a.quick {
                        Sizes::quick()
                    } else {
                        Sizes::full()
                    },
                    gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
                    target: a.common.target(),
                    processes: !a.no_processes,
                    python: a
                        .python
                        .then(|| a.anchors.clone().unwrap_or_else(default_anchors)),
                })?;
            }
            Suite::Startup(a) => {
                bench::startup::run(&bench::startup::StartupOptions {
                    rounds: a.rounds.max(1),
                    workers: a.workers,
                    gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
                    target: a.common.target(),
                })?;
            }
            Suite::Transfer(t) => {
                let a = &t.small;
                bench::transfer::run(&bench::transfer::TransferOptions {
                    rounds: a.rounds.max(1),
                    workers: a.workers,
                    gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
                    target: a.common.target(),
                    echo_sizes: t.sizes()?,
                    echo_rounds: t.echo_rounds.max(1),
                    python: t.python,
                })?;
            }
            Suite::Shm(a) => {
                bench::shm::run(&bench::shm::ShmOptions {
                    rounds: a.rounds.max(1),
                    gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
                    target: a.common.target(),
                    python: a.python,
                })?;
            }
            Suite::Celery(a) => {
                bench::celery::run(&bench::celery::CeleryOptions {
                    rounds: a.rounds.max(1),
                    tasks: a.tasks.max(1),
                    roundtrips: a.roundtrips.max(1),
                    processes: a.processes.max(1),
                    gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
                    target: a.common.target(),
                })?;
            }
            Suite::Cluster(a) => {
                bench::cluster::run(&bench::cluster::ClusterOptions {
                    rounds: a.rounds.max(1),
                    map_tasks: a.map_tasks.max(1),
                    submit_tasks: a.submit_tasks.max(1),
                    roundtrips: a.roundtrips.max(1),
                    nodes: a.nodes.clone(),
                    prefetch: a.prefetch,
                    gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
                    target: a.common.target(),
                    python: a.python,
                    redis_cluster: !a.no_one_shard,
                    churn_nodes: a.churn.then_some(a.churn_nodes.max(1)),
                    churn_tasks: a.churn_tasks.max(1),
                    churn_every: Duration::from_millis(a.churn_every_ms.max(1)),
                })?;
            }
            Suite::Memory(a) => {
                bench::memory::run(&bench::memory::MemoryOptions {
                    rounds: a.rounds.max(1),
                    calls: a.calls.max(1),
                    size_mb: a.size_mb,
                    gate: a.common.gate(IdleGate::new(Duration::from_secs(120))),
                    target: a.common.target(),
                    python: a.python,
                })?;
            }
            Suite::All {
                overhead,
                seeds_rounds,
            } => {
                let o = overhead_options(&overhead);
                bench::overhead::run(&o)?;
                bench::startup::run(&bench::startup::StartupOptions {
                    rounds: 15,
                    workers: o.workers,
                    gate: o.gate,
                    target: o.target.clone(),
                })?;
                bench::transfer::run(&bench::transfer::TransferOptions {
                    rounds: 15,
                    workers: o.workers,
                    gate: o.gate,
                    target: o.target.clone(),
                    echo_sizes: bench::transfer::ECHO_SIZES.to_vec(),
                    echo_rounds: 5,
                    python: o.python.is_some(),
                })?;
                bench::shm::run(&bench::shm::ShmOptions {
                    rounds: 5,
                    gate: o.gate,
                    target: o.target.clone(),
                    python: o.python.is_some(),
                })?;
                bench::memory::run(&bench::memory::MemoryOptions {
                    rounds: 5,
                    calls: 2000,
                    size_mb: 100.0,
                    gate: o.gate,
                    target: o.target.clone(),
                    python: o.python.is_some(),
                })?;
                bench::run_seeds(&SeedsOptions {
                    rounds: seeds_rounds.max(1),
                    workers: o.workers,
                    sizes: Sizes::full(),
                    gate: o.gate,
                    target: o.target.clone(),
                    processes: true,
                    python: o.python.as_ref().map(|p| p.anchors.clone()),
                })?;
            }
        },
    }
    Ok(())
}
