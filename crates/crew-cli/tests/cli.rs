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
    let out = Command::new(env!("CARGO_BIN_EXE_crew"))
        .args(args)
        .arg("--target-dir")
        .arg(target)
        .output()
        .expect("run crew");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "crew {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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

#[test]
fn demo_quick_writes_records_chart_and_trace() {
    let dir = scratch("demo");
    let trace = dir.join("trace.json");
    let stdout = crew(
        &["demo", "--quick", "--trace", trace.to_str().expect("utf-8")],
        &dir,
    );
    assert!(stdout.contains("| pi | threads |"), "{stdout}");
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

    let png = std::fs::read(dir.join("crew-demo/speedup.png")).expect("speedup.png");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "speedup.png is not a PNG"
    );
    assert!(png.len() > 10_000, "speedup.png is suspiciously small");

    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("trace.json")).expect("JSON");
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    assert!(
        events.iter().any(|e| e["ph"] == "X"),
        "no task span in the trace"
    );
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
            "procspawn.pool"
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
            ][..],
        ),
        (
            "shm",
            &["rust.queue.items_per_s", "rust.lock.increments_per_s"][..],
        ),
    ] {
        crew(&["bench", suite, "--rounds", "1", "--no-idle-gate"], &dir);
        let got = cases(&dir.join(format!("crew-bench/{suite}.json")));
        assert_eq!(got, expected, "{suite}");
    }
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
