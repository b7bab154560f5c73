//! Tasks called by name across builds: a node that is *another program*
//! (the `named_tasks` example) runs the `#[crew::task]`s this test binary
//! calls by name, when both register the name with the same signature; a
//! call whose signature no live node has waits, `status` says why, and it
//! never runs on the wrong code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crew::cluster::ClusterConfig;

use crate::common::LONG;
use crate::common::cluster::{HEARTBEAT_MS, fresh_queue, redis};
use crate::common::eventually;

// The same names as in `examples/named_tasks.rs`: `weigh` and `program`
// with the same signatures (other bodies: which program ran is visible),
// `scale` with another one.

#[crew::task(name = "examples::named::weigh")]
fn weigh(items: Vec<u32>, factor: u32) -> u64 {
    items.iter().map(|&x| u64::from(x)).sum::<u64>() * u64::from(factor) + 1_000_000
}

#[crew::task(name = "examples::named::program")]
fn program() -> String {
    "the test binary".to_owned()
}

#[crew::task(name = "examples::named::scale")]
fn scale(x: u32) -> u32 {
    x * 10
}

/// The `named_tasks` example, built once into this test's target folder
/// (as `tests/examples.rs` does; a no-op after a full `cargo test`).
fn example() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>")
            .to_path_buf();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args([
                "build",
                "--quiet",
                "--example",
                "named_tasks",
                "--target-dir",
            ])
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
        let status = cargo.status().expect("run cargo build --example");
        assert!(status.success(), "cargo build --example named_tasks failed");
        let path = profile.join("examples").join("named_tasks");
        assert!(path.is_file(), "no example binary at {}", path.display());
        path
    })
}

#[test]
fn a_named_task_runs_on_a_node_of_another_build_only_with_the_same_signature() {
    let queue = fresh_queue();
    // Only the other program serves this queue.
    let node = redis()
        .spawn_node_of(example(), &queue, 2, &[("CREW_HEARTBEAT_MS", HEARTBEAT_MS)])
        .unwrap();
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    let ex = crew::Executor::cluster_config(config.clone()).unwrap();
    eventually("the other program's node comes up", || {
        crew::cluster::status(&config)
            .unwrap()
            .nodes
            .iter()
            .any(|n| !n.named.is_empty())
    });
    let s = crew::cluster::status(&config).unwrap();
    assert_eq!(s.nodes.len(), 1);
    assert_ne!(
        s.nodes[0].build,
        format!("{:016x}", crew_process::remote::fingerprint()),
        "the node is another build"
    );

    // Same name, same signature: runs there, with that program's code.
    let ran_in = ex
        .submit_named::<_, String>("examples::named::program", ())
        .result_timeout(LONG)
        .unwrap();
    assert_eq!(ran_in, "named_tasks");
    let futures: Vec<_> = (0..20u32)
        .map(|i| ex.submit_named::<_, u64>("examples::named::weigh", (vec![i, 1, 2], 3u32)))
        .collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.result_timeout(LONG).unwrap(), (i as u64 + 3) * 3);
    }

    // Same name, other signature: nobody runs it; it waits, and status
    // says why.
    let wrong = ex.submit_named::<_, u32>("examples::named::scale", (7u32,));
    eventually("status explains the wait", || {
        crew::cluster::status(&config)
            .unwrap()
            .problems()
            .iter()
            .any(|p| {
                p.contains("no live node has task `examples::named::scale` with this signature")
                    && p.contains("(u64,) -> u64")
            })
    });
    // Meanwhile the node keeps serving what it has.
    assert_eq!(
        ex.submit_named::<_, String>("examples::named::program", ())
            .result_timeout(LONG)
            .unwrap(),
        "named_tasks"
    );
    assert!(!wrong.done(), "a call no node can run waits");
    let s = crew::cluster::status(&config).unwrap();
    let line = s.to_string();
    assert!(line.contains("why tasks wait"), "{line}");
    // Shutting down with `cancel_futures` takes the waiting call back out
    // of Redis.
    ex.shutdown(false, true);
    assert!(wrong.result().unwrap_err().is_cancelled());
    eventually("the cancelled entry is gone from Redis", || {
        crew::cluster::status(&config)
            .unwrap()
            .streams
            .iter()
            .all(|s| s.length == 0)
    });
    assert_eq!(crew::cluster::status(&config).unwrap().dead, 0);
    drop(ex);
    redis().kill_node(node);
}

#[test]
fn a_node_of_this_build_serves_named_calls_too() {
    let queue = fresh_queue();
    let node = redis()
        .spawn_node(&queue, 1, &[("CREW_HEARTBEAT_MS", HEARTBEAT_MS)])
        .unwrap();
    let ex =
        crew::Executor::cluster_config(ClusterConfig::new(redis().url()).queue(&queue)).unwrap();
    eventually("the node comes up", || ex.workers() >= 1);
    let f = ex.submit_named::<_, u32>("examples::named::scale", (4u32,));
    assert_eq!(f.result_timeout(LONG).unwrap(), 40);
    assert_eq!(
        ex.submit_named::<_, String>("examples::named::program", ())
            .result_timeout(Duration::from_secs(30))
            .unwrap(),
        "the test binary"
    );
    drop(ex);
    redis().kill_node(node);
}
