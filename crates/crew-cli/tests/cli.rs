//! Runs the `crew` binary: `demo --quick` writes the records, the chart and
//! the trace; the bench suites write their records (`memory` without its
//! Python rows, which need joblib).

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crew-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn crew(args: &[&str], target: &Path) -> String {
    let mut with_target: Vec<&str> = args.to_vec();
    with_target.extend(["--target-dir", target.to_str().expect("utf-8")]);
    crew_in(&with_target, &std::env::temp_dir()).0
}

/// Runs `crew args` in the folder `cwd`; returns its stdout and stderr.
fn crew_in(args: &[&str], cwd: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crew"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run crew");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "crew {args:?} failed: {}\n{stdout}\n{stderr}",
        out.status,
    );
    (stdout, stderr)
}

/// A scratch folder outside any Cargo project, as an installed `crew` would
/// be run from, resolved (`/tmp` may be a link).
fn outside_any_project(name: &str) -> PathBuf {
    let dir = scratch(name).canonicalize().expect("resolve scratch dir");
    let project = dir.ancestors().find(|d| d.join("Cargo.toml").exists());
    assert!(
        project.is_none(),
        "{} is inside a Cargo project ({project:?}); set TMPDIR elsewhere",
        dir.display()
    );
    dir
}

/// The paths printed after `wrote `, each checked to be absolute and clean.
fn written(out: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in out.lines() {
        let Some(rest) = line.trim().strip_prefix("wrote ") else {
            continue;
        };
        for part in rest.split(" and ") {
            let p = PathBuf::from(part.split(" (").next().expect("a path").trim());
            assert!(p.is_absolute(), "{line:?}: {} is not absolute", p.display());
            assert!(
                p.components().all(|c| matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )),
                "{line:?}: {} is not clean",
                p.display()
            );
            if p.extension().is_some() {
                paths.push(p);
            }
        }
    }
    paths
}

fn cases(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("records");
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON array");
    for r in &records {
        for field in ["suite", "case", "unit", "median", "min", "max", "runs"] {
            assert!(r.get(field).is_some(), "record {r} has no {field}");
        }
        assert!(
            r["median"].as_f64().is_some_and(|m| m > 0.0),
            "record {r} measured nothing"
        );
    }
    records
        .iter()
        .map(|r| r["case"].as_str().expect("case").to_string())
        .collect()
}

/// Run from a folder outside any project, as an installed `crew` is: the
/// demo writes under that folder and says so with clean absolute paths.
#[test]
fn demo_quick_writes_records_chart_and_trace() {
    let dir = outside_any_project("demo");
    let trace = dir.join("traces/kde.json");
    let (stdout, _) = crew_in(&["demo", "--quick", "--trace", "traces/kde.json"], &dir);
    assert!(stdout.contains("| pi | threads |"), "{stdout}");
    // The processes run the KDE's very tasks, the points in shared memory.
    assert!(
        stdout.contains(
            "| kde | processes | Pool.map over the same 100 tasks, the points in shared memory"
        ),
        "{stdout}"
    );
    let mut wrote = written(&stdout);
    wrote.sort();
    let mut expected = vec![
        dir.join("crew-bench/demo.json"),
        dir.join("crew-demo/speedup.png"),
        trace.clone(),
    ];
    expected.sort();
    assert_eq!(wrote, expected, "{stdout}");
    assert!(
        stdout.contains("KDE sweep through crew::Memory") && stdout.contains("read from the cache"),
        "{stdout}"
    );

    let cases = cases(&dir.join("crew-bench/demo.json"));
    for w in ["pi", "kde", "howmany", "crunch", "sleep"] {
        for case in [
            format!("{w}.threads.speedup"),
            format!("{w}.serial.ms"),
            format!("{w}.threads.ms"),
        ] {
            assert!(cases.contains(&case), "demo.json has no {case}: {cases:?}");
        }
    }
    assert!(cases.contains(&"howmany.threads_per_row.speedup".to_string()));
    assert!(cases.contains(&"kde.memory_rerun.ms".to_string()));
    assert!(
        cases.contains(&"pi.processes.speedup".to_string()),
        "{cases:?}"
    );
    // rayon and bare threads with the work split up front run the same
    // work in the same run, so a speed-up short of the core count can be
    // told apart from the machine's own limit.
    for w in ["pi", "kde", "crunch"] {
        for b in ["rayon", "std"] {
            let case = format!("{w}.{b}.speedup");
            assert!(cases.contains(&case), "demo.json has no {case}: {cases:?}");
        }
    }

    let png = std::fs::read(dir.join("crew-demo/speedup.png")).expect("speedup.png");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "speedup.png is not a PNG"
    );
    assert!(png.len() > 10_000, "speedup.png is suspiciously small");

    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("trace.json")).expect("JSON");
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let spans: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert!(!spans.is_empty(), "no task span in the trace");
    for span in spans {
        let name = span["name"].as_str().expect("a span name");
        assert!(
            name.starts_with("kde"),
            "a KDE span is named {name:?}, not after its task"
        );
        assert!(span["args"]["task"].is_u64(), "{span}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_overhead_writes_every_case() {
    let dir = scratch("overhead");
    let args = [
        "bench",
        "overhead",
        "--tasks",
        "2000",
        "--elements",
        "20000",
        "--rounds",
        "1",
        "--no-idle-gate",
        "--submits",
        "2000",
        "--scaling-workers",
        "2,3",
    ];
    let stdout = crew(&args, &dir);
    assert!(stdout.contains("targets:"), "{stdout}");
    let cases = cases(&dir.join("crew-bench/overhead.json"));
    assert_eq!(
        cases,
        [
            "threads.submit",
            "rayon.spawn_channel",
            "processes.submit",
            "threads.map",
            "rayon.par_iter",
            "serial",
            "processes.map",
            "processes.apply_latency",
            "procspawn.pool",
            "processes.submit_as_completed_1m",
            "processes.apply_latency_2_workers",
            "processes.submit_2_workers",
            "processes.apply_latency_3_workers",
            "processes.submit_3_workers",
        ]
    );
    assert!(dir.join("crew-bench/overhead.md").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_startup_transfer_and_shm_write_their_cases() {
    let dir = scratch("small-suites");
    for (suite, expected) in [
        (
            "startup",
            &[
                "processes.first_result",
                "processes.first_result_with_shutdown",
                "processes.first_result_cold",
                "threads.first_result",
                "rayon.first_result",
            ][..],
        ),
        (
            "transfer",
            &[
                "processes.roundtrip_10mb",
                "processes.roundtrip_10mb_shm",
                "memcpy_10mb",
                "processes.echo_vec_1kb",
                "processes.echo_bytebuf_1kb",
                "processes.echo_bytebuf_1kb_pipelined",
                "processes.echo_array_1kb",
                "procspawn.echo_bytebuf_1kb_pipelined",
                "processes.echo_vec_20kb",
                "processes.echo_bytebuf_20kb",
                "processes.echo_bytebuf_20kb_pipelined",
                "processes.echo_array_20kb",
                "procspawn.echo_bytebuf_20kb_pipelined",
            ][..],
        ),
        (
            "shm",
            &["rust.queue.items_per_s", "rust.lock.increments_per_s"][..],
        ),
    ] {
        let mut args = vec!["bench", suite, "--rounds", "1", "--no-idle-gate"];
        if suite == "transfer" {
            args.extend(["--sizes", "1kb,20kb", "--echo-rounds", "1"]);
        }
        crew(&args, &dir);
        let got = cases(&dir.join(format!("crew-bench/{suite}.json")));
        assert_eq!(got, expected, "{suite}");
    }
    // The echo sweep is drawn beside its table.
    let png = std::fs::read(dir.join("crew-bench/transfer.png")).expect("transfer.png");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "transfer.png is not a PNG"
    );
    assert!(png.len() > 10_000, "transfer.png is suspiciously small");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_seeds_quick_checks_every_variant() {
    let dir = scratch("seeds");
    crew(
        &[
            "bench",
            "seeds",
            "--quick",
            "--rounds",
            "1",
            "--no-idle-gate",
        ],
        &dir,
    );
    let cases = cases(&dir.join("crew-bench/seeds.json"));
    for case in [
        "howmany.serial",
        "pi.threads.per_sample",
        "kde.rayon.nested",
        "kde.processes",
        "crunch.threads",
        "sleep.rayon",
    ] {
        assert!(
            cases.contains(&case.to_string()),
            "seeds.json has no {case}: {cases:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every suite takes its folder from the same option: run from a folder
/// outside any project, a suite writes under it; `--target-dir` given as a
/// relative path with `..` is created and printed clean.
#[test]
fn bench_writes_under_the_current_folder_or_target_dir() {
    let dir = outside_any_project("where");
    let (_, stderr) = crew_in(
        &["bench", "startup", "--rounds", "1", "--no-idle-gate"],
        &dir,
    );
    assert_eq!(written(&stderr), [dir.join("crew-bench/startup.json")]);
    assert!(dir.join("crew-bench/startup.json").is_file());

    let (_, stderr) = crew_in(
        &[
            "bench",
            "startup",
            "--rounds",
            "1",
            "--no-idle-gate",
            "--target-dir",
            "new/../reports",
        ],
        &dir,
    );
    assert_eq!(
        written(&stderr),
        [dir.join("reports/crew-bench/startup.json")]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_memory_writes_its_cases() {
    let dir = scratch("memory");
    let stdout = crew(
        &[
            "bench",
            "memory",
            "--rounds",
            "1",
            "--calls",
            "20",
            "--size-mb",
            "2",
            "--no-idle-gate",
        ],
        &dir,
    );
    assert!(stdout.contains("crew::Memory vs joblib.Memory"), "{stdout}");
    let got = cases(&dir.join("crew-bench/memory.json"));
    assert_eq!(
        got,
        [
            "memory.hit_small",
            "memory.hit_100mb",
            "memory.hit_100mb_mapped"
        ]
    );
    // The cache is emptied afterwards.
    let left = dir.join("crew-bench/memory-cache/crew-memory");
    assert!(!left.exists(), "{} is left", left.display());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_cluster_runs_pi_and_kde_on_two_local_nodes() {
    let dir = scratch("demo-cluster");
    let out = crew(&["demo", "--cluster", "--quick"], &dir);
    assert!(out.contains("pi ~ 3.14"), "{out}");
    assert!(out.contains("KDE 500 points"), "{out}");
    assert!(out.contains("nodes: 2"), "{out}");
}

#[test]
fn bench_cluster_writes_its_records() {
    let dir = scratch("bench-cluster");
    let out = crew(
        &[
            "bench",
            "cluster",
            "--rounds",
            "1",
            "--map-tasks",
            "200",
            "--submit-tasks",
            "20",
            "--roundtrips",
            "5",
            "--nodes",
            "2",
            "--churn",
            "--churn-nodes",
            "3",
            "--churn-tasks",
            "20000",
            "--churn-every-ms",
            "50",
            "--no-idle-gate",
        ],
        &dir,
    );
    assert!(out.contains("cluster.map_noop"), "{out}");
    // The map's size is in its row, not only in the title.
    assert!(
        out.contains("| a map of 200 items, 2 node(s), 1 worker process each"),
        "{out}"
    );
    let json = std::fs::read_to_string(dir.join("crew-bench").join("cluster.json")).unwrap();
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cases: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["case"].as_str().unwrap())
        .collect();
    assert_eq!(
        cases,
        [
            "cluster.map_noop",
            "cluster.submit_noop",
            "cluster.roundtrip_p50",
            "cluster.map_noop.one_shard",
            "cluster.submit_noop.one_shard",
            "cluster.roundtrip_p50.one_shard",
            "cluster.churn_map",
            "cluster.churn_kills",
            "cluster.churn_reclaimed"
        ]
    );
}

#[test]
fn status_says_why_tasks_wait_without_a_node() {
    // A driver of this build queues a task; no node runs: `crew status`
    // (another build) shows the waiting task and why.
    let redis = crew::cluster::LocalRedis::start().expect("redis-server");
    let queue = "lonely";
    let pool = crew::Pool::builder()
        .cluster(&redis.url())
        .queue(queue)
        .build()
        .unwrap();
    let pending = pool.apply_async(|x: u64| x + 1, (1u64,));
    let config = crew::cluster::ClusterConfig::new(redis.url()).queue(queue);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while crew::cluster::status(&config).unwrap().waiting() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never reached Redis"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (out, _) = crew_in(
        &["status", &redis.url(), "--queue", queue, "--interval", "0"],
        &std::env::temp_dir(),
    );
    assert!(out.contains("nodes: 0"), "{out}");
    assert!(out.contains("tasks waiting: 1"), "{out}");
    assert!(out.contains("no live node has build"), "{out}");
    drop(pending);
}
