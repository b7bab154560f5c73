//! Runs every example in `examples/` with `CREW_EXAMPLE_SMALL=1` and checks
//! that it succeeds and prints what a person would check.
//!
//! `cargo test` builds the examples before it runs tests, into
//! `target/<profile>/examples/` beside this test's `deps/` folder; they run
//! from there. When they are missing (`cargo test --test examples` builds
//! only this target) they are built once with cargo into a separate target
//! folder, because the running `cargo test` may hold the lock on its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(180);

/// `target/<profile>`: the test binary lives in its `deps/` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Builds every example into a private target folder, once.
fn build_examples() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = profile_dir().join("examples-test");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--examples", "--target-dir"])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
        target
            .join(if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            })
            .join("examples")
    })
    .clone()
}

fn example_binary(name: &str) -> PathBuf {
    let exe = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let beside = profile_dir().join("examples").join(&exe);
    if beside.is_file() {
        beside
    } else {
        build_examples().join(exe)
    }
}

/// Runs the example with small sizes; fails on a non-zero exit or after
/// [`TIMEOUT`] (the child is killed).
fn run(name: &str) -> String {
    let mut child = Command::new(example_binary(name))
        .env("CREW_EXAMPLE_SMALL", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start example {name}: {e}"));
    let start = Instant::now();
    while child.try_wait().expect("poll example").is_none() {
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("example {name} still running after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("example output");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "example {name} failed with {status}\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

fn assert_prints(name: &str, expected: &[&str]) {
    let stdout = run(name);
    for line in expected {
        assert!(
            stdout.contains(line),
            "example {name} did not print {line:?}:\n{stdout}"
        );
    }
}

#[test]
fn howmany() {
    assert_prints("howmany", &["map_async    [", "all methods agree: true"]);
}

#[test]
fn pi() {
    assert_prints("pi", &["π ≈ 3.1", "the same count all three ways"]);
}

#[test]
fn kde() {
    assert_prints(
        "kde",
        &[
            "h = 1.0: mean density",
            "parallel densities equal the serial ones",
        ],
    );
}

#[test]
fn crunch_sleep() {
    assert_prints(
        "crunch_sleep",
        &["only_sleep    threads time", "crunch_numbers threads time"],
    );
}

#[test]
fn cube() {
    assert_prints(
        "cube",
        &[
            "map:         [1, 8, 27, 64, 125, 216]",
            "apply_async: [1, 8, 27, 64, 125, 216]",
        ],
    );
}

#[test]
fn primes() {
    assert_prints(
        "primes",
        &[
            "1000003 is prime: true",
            "999999 is prime: false",
            "5 of 6 numbers are prime",
        ],
    );
}

#[test]
fn joblib_sqrt() {
    assert_prints(
        "joblib_sqrt",
        &[
            "[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]",
            "n_jobs=-1, prefer=threads",
        ],
    );
}

#[test]
fn futures() {
    assert_prints(
        "futures",
        &[
            "as_completed order: [100, 150, 300]",
            "cancelled 5 of 5 queued tasks",
            "callbacks run: 1",
        ],
    );
}

/// Every file in `examples/` has a test above: a new example without one fails here.
#[test]
fn every_example_is_tested() {
    let tested = [
        "howmany",
        "pi",
        "kde",
        "crunch_sleep",
        "cube",
        "primes",
        "joblib_sqrt",
        "futures",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            assert!(
                tested.contains(&stem.as_str()),
                "examples/{stem}.rs has no test in tests/examples.rs"
            );
        }
    }
}
