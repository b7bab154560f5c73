//! Runs every example in `examples/` with `CREW_EXAMPLE_SMALL=1` and checks
//! that it succeeds and prints what a person would check.
//!
//! The examples are built once per test run with `cargo build --examples`
//! into this test's own target folder (a no-op after a full `cargo test`,
//! which builds them anyway): `cargo test --test examples` alone would
//! otherwise run stale binaries, or none. Cargo does not hold the build
//! lock while tests run, so the nested build does not wait on its parent.

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

/// Builds every example into `target/<profile>/examples/`, once.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile = profile_dir();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--examples", "--target-dir"])
            .arg(profile.parent().expect("target folder"))
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Not the variables cargo sets for a test: build scripts watch
        // some (ring's, `CARGO_MANIFEST_DIR`), and would rebuild here and
        // again in the next `cargo test`.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k == "OUT_DIR"
                || (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
            {
                cargo.env_remove(&*k);
            }
        }
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
        profile.join("examples")
    })
}

fn example_binary(name: &str) -> PathBuf {
    let exe = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.is_file(), "no example binary at {}", exe.display());
    exe
}

/// Runs the example with small sizes; fails on a non-zero exit or after
/// [`TIMEOUT`] (the child is killed).
fn run(name: &str) -> String {
    run_with(name, &[])
}

/// [`run`] with more environment variables.
fn run_with(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let mut child = Command::new(example_binary(name))
        .env("CREW_EXAMPLE_SMALL", "1")
        .envs(env.iter().copied())
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
fn kde_cache() {
    // A folder of its own, so the first sweep computes every width.
    let dir = std::env::temp_dir().join(format!("crew-kde-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = run_with("kde_cache", &[("CREW_CACHE_DIR", dir.as_os_str())]);
    let _ = std::fs::remove_dir_all(&dir);
    for line in [
        "widths computed, 0 from the cache",
        "second sweep: ",
        "0 widths computed, 10 from the cache",
        "h = 1.0: mean density",
        "cached densities equal computed ones",
    ] {
        assert!(
            stdout.contains(line),
            "kde_cache did not print {line:?}:\n{stdout}"
        );
    }
    assert!(stdout.contains("first sweep: ") && stdout.contains("10 widths computed, 0 from"));
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

/// The README's *Scale out* program, run as it says: a Redis, a node (the
/// program with `CREW_WORKER`), then the driver (with `CREW_CLUSTER`).
#[test]
fn scale_out() {
    /// Kills the node when the test ends, however it ends.
    struct Node(std::process::Child);
    impl Drop for Node {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let redis = crew::cluster::LocalRedis::start().expect("start redis-server");
    let url = redis.tcp_url();
    let queue = format!("readme-{}", std::process::id());
    let _node = Node(
        Command::new(example_binary("scale_out"))
            .env("CREW_WORKER", &url)
            .env("CREW_CONCURRENCY", "1")
            .env("CREW_QUEUE", &queue)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the node"),
    );
    let stdout = run_with(
        "scale_out",
        &[
            ("CREW_CLUSTER", url.as_ref()),
            ("CREW_QUEUE", queue.as_ref()),
        ],
    );
    assert!(
        stdout.contains("squares on the cluster: [0, 1, 4, 9]"),
        "{stdout}"
    );
}

/// A driver on a queue no node serves (a `CREW_QUEUE` typed differently on
/// the two sides) does not wait in silence: it says on stderr what to do.
#[test]
fn scale_out_on_a_queue_no_node_serves_says_so() {
    use std::io::BufRead;
    let redis = crew::cluster::LocalRedis::start().expect("start redis-server");
    let url = redis.tcp_url();
    let queue = format!("unserved-{}", std::process::id());
    let mut driver = Command::new(example_binary("scale_out"))
        .env("CREW_CLUSTER", &url)
        .env("CREW_QUEUE", &queue)
        .env("CREW_HEARTBEAT_MS", "50")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the driver");
    let stderr = driver.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    let told = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("no live node") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let still_waiting = driver.try_wait().expect("poll the driver").is_none();
    let _ = driver.kill();
    let _ = driver.wait();
    let told =
        told.unwrap_or_else(|| panic!("the driver never said why it waits; stderr: {seen:?}"));
    assert!(
        still_waiting,
        "the driver ended instead of waiting for a node"
    );
    assert!(told.contains(&format!("CREW_QUEUE={queue}")), "{told}");
    assert!(told.contains("crew status"), "{told}");
}

/// The examples with a test of their own above.
const TESTED: [&str; 9] = [
    "scale_out",
    "howmany",
    "pi",
    "kde",
    "crunch_sleep",
    "cube",
    "primes",
    "joblib_sqrt",
    "futures",
];

/// Every other file in `examples/` (added without a test above) must at
/// least run to success and print something.
#[test]
fn other_examples_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .expect("examples/")
        .filter_map(|entry| {
            let path = entry.expect("entry").path();
            let stem = path.file_stem()?.to_str()?.to_string();
            let is_rs = path.extension().is_some_and(|e| e == "rs");
            (is_rs && !TESTED.contains(&stem.as_str())).then_some(stem)
        })
        .collect();
    others.sort();
    for name in others {
        let stdout = run(&name);
        assert!(!stdout.trim().is_empty(), "example {name} printed nothing");
    }
}
