//! The fault tests (see `tests/cluster.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use crew::cluster::{ClusterConfig, LocalRedis, NodeProcess};

use crate::common::cluster::{HEARTBEAT_MS, fresh_queue, redis};
use crate::common::{Gate, LONG, eventually};

const SIGSTOP: i32 = libc::SIGSTOP;
const SIGCONT: i32 = libc::SIGCONT;

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "signal {sig} to {pid}");
}

/// Starts `n` nodes of `workers` processes each on `queue` of `redis`.
fn nodes(
    redis: &LocalRedis,
    queue: &str,
    n: usize,
    workers: usize,
    env: &[(&str, &str)],
) -> Vec<NodeProcess> {
    let mut env = env.to_vec();
    env.push(("CREW_HEARTBEAT_MS", HEARTBEAT_MS));
    (0..n)
        .map(|_| {
            redis
                .spawn_node(queue, workers, &env)
                .expect("start a node")
        })
        .collect()
}

fn pool_on(redis: &LocalRedis, queue: &str, workers: usize) -> crew::Pool<crew::cluster::Cluster> {
    let pool = crew::Pool::builder()
        .cluster(&redis.url())
        .queue(queue)
        .build()
        .unwrap();
    eventually("the nodes come up", || pool.workers() >= workers);
    pool
}

fn con(redis: &LocalRedis) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

fn task_stream(queue: &str) -> String {
    format!(
        "crew:{{{queue}}}:tasks:{:016x}",
        crew_process::remote::fingerprint()
    )
}

/// A little work per item, so that a 10,000-item map lasts long enough to
/// be interrupted.
fn busy(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(200));
    x.wrapping_mul(3)
}

/// Runs `f` on a helper thread; panics if it takes longer than `limit`.
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what} did not end within {limit:?}"),
    }
}

#[test]
fn kill_9_of_a_node_mid_map_loses_nothing() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 2, 1, &[]);
    let pool = pool_on(redis(), &queue, 2);
    let got = within("a map whose node was killed", 4 * LONG, move || {
        let mut it = pool.with_chunksize(50).imap(busy, 0..10_000u64);
        let mut got = Vec::with_capacity(10_000);
        for r in it.by_ref().take(1_000) {
            got.push(r.unwrap());
        }
        redis().kill_node(ns[0]);
        for r in it {
            got.push(r.unwrap());
        }
        redis().kill_node(ns[1]);
        got
    });
    assert_eq!(got.len(), 10_000);
    assert_eq!(got, (0..10_000u64).map(|x| x * 3).collect::<Vec<_>>());
}

/// Marks its run in `dir` (named after its node's pid), then sleeps
/// `ms`; returns its node's pid.
fn marked_nap(dir: String, ms: u64) -> u32 {
    // SAFETY: getppid cannot fail.
    let node = unsafe { libc::getppid() } as u32;
    std::fs::write(
        Path::new(&dir).join(format!("{node}-{}", std::process::id())),
        b"",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    node
}

fn runs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_stopped_node_loses_its_task_and_its_late_result_is_dropped() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 2, 1, &[]);
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    let ex = crew::Executor::cluster_config(config.clone()).unwrap();
    eventually("the nodes come up", || ex.workers() >= 2);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().to_str().unwrap().to_owned();
    let f = ex.submit(marked_nap, (key, 1_500));
    eventually("the task starts", || !runs(dir.path()).is_empty());
    let first: u32 = runs(dir.path())[0]
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ns.iter().any(|n| n.pid == first));
    signal(first, SIGSTOP);
    // The stopped node's heartbeat expires; the other node takes the task.
    let ran_on = f.result_timeout(LONG).unwrap();
    assert_ne!(
        ran_on, first,
        "the result came from the node that was stopped"
    );
    assert_eq!(
        runs(dir.path()).len(),
        2,
        "the task ran once more elsewhere"
    );
    signal(first, SIGCONT);
    // The woken node finishes its copy; its result is dropped (it no
    // longer holds the entry), and it goes on serving.
    for i in 0..8u64 {
        assert_eq!(
            ex.submit(|x: u64| x + 1, (i,))
                .result_timeout(LONG)
                .unwrap(),
            i + 1
        );
    }
    eventually("the queue empties", || {
        crew::cluster::status(&config)
            .unwrap()
            .streams
            .iter()
            .all(|s| s.length == 0)
    });
    let s = crew::cluster::status(&config).unwrap();
    assert_eq!(s.dead, 0);
    assert_eq!(s.nodes.len(), 2, "both nodes are alive: {s}");
    for n in ns {
        redis().kill_node(n);
    }
}

#[test]
fn garbage_entries_go_to_the_dead_letter_stream_and_nodes_keep_serving() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 1, 2, &[]);
    let pool = pool_on(redis(), &queue, 2);
    let mut c = con(redis());
    let stream = task_stream(&queue);
    redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("t")
        .arg(b"\xff\x00garbage".as_slice())
        .query::<String>(&mut c)
        .unwrap();
    redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("no-task")
        .arg("x")
        .query::<String>(&mut c)
        .unwrap();
    redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("t")
        .arg(b"".as_slice())
        .query::<String>(&mut c)
        .unwrap();
    assert_eq!(
        pool.map(|x: u64| x * 2, 0..100u64).unwrap(),
        (0..100).map(|x| x * 2).collect::<Vec<_>>()
    );
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    eventually("three dead letters", || {
        crew::cluster::status(&config).unwrap().dead == 3
    });
    let s = crew::cluster::status(&config).unwrap();
    let reasons: Vec<&str> = s.recent_dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("cannot be decoded")),
        "{reasons:?}"
    );
    // The version comes first: garbage reads as another version.
    assert!(
        reasons.iter().any(|r| r.contains("protocol version 255")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no task field")),
        "{reasons:?}"
    );
    assert_eq!(pool.apply(|x: u64| x + 1, (1u64,)).unwrap(), 2);
    for n in ns {
        redis().kill_node(n);
    }
}

#[test]
fn an_oversized_entry_goes_to_the_dead_letter_stream_and_its_caller_learns_why() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 1, 1, &[("CREW_MAX_ENTRY_BYTES", "4096")]);
    let ex =
        crew::Executor::cluster_config(ClusterConfig::new(redis().url()).queue(&queue)).unwrap();
    eventually("the node comes up", || ex.workers() >= 1);
    let big = ex.submit(|v: Vec<u8>| v.len(), (vec![7u8; 10_000],));
    let e = big.result_timeout(LONG).unwrap_err();
    assert!(e.is_protocol(), "{e}");
    assert!(e.to_string().contains("more than the limit of 4096"), "{e}");
    let s = crew::cluster::status(&ClusterConfig::new(redis().url()).queue(&queue)).unwrap();
    assert_eq!(s.dead, 1);
    assert!(
        s.recent_dead[0]
            .reason
            .contains("more than the limit of 4096"),
        "{:?}",
        s.recent_dead
    );
    // The node carries on with entries under the limit.
    let small = ex.submit(|v: Vec<u8>| v.len(), (vec![7u8; 100],));
    assert_eq!(small.result_timeout(LONG).unwrap(), 100);
    for n in ns {
        redis().kill_node(n);
    }
}

#[test]
fn an_entry_of_another_protocol_version_goes_to_the_dead_letter_stream() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 1, 1, &[]);
    let pool = pool_on(redis(), &queue, 1);
    let mut c = con(redis());
    // Version 99, then what every version starts with: a driver and an id;
    // the rest is whatever that version holds.
    let mut entry = vec![99u8, 3];
    entry.extend_from_slice(b"old");
    entry.extend_from_slice(&[5, 0xde, 0xad, 0xbe, 0xef]);
    redis::cmd("XADD")
        .arg(task_stream(&queue))
        .arg("*")
        .arg("t")
        .arg(entry.as_slice())
        .query::<String>(&mut c)
        .unwrap();
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    eventually("a dead letter", || {
        crew::cluster::status(&config).unwrap().dead == 1
    });
    let s = crew::cluster::status(&config).unwrap();
    assert!(
        s.recent_dead[0]
            .reason
            .contains("protocol version 99, this node speaks"),
        "{:?}",
        s.recent_dead
    );
    assert_eq!(s.waiting(), 0, "the entry is acknowledged and deleted");
    assert_eq!(pool.map(|x: u64| x + 1, 0..10u64).unwrap()[9], 10);
    for n in ns {
        redis().kill_node(n);
    }
}

/// Kills the node that runs it (its worker process's parent).
fn kill_my_node() -> u64 {
    // SAFETY: kill(2) and getppid(2) have no memory-safety preconditions.
    unsafe { libc::kill(libc::getppid(), libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(60));
    0
}

#[test]
fn a_task_that_kills_its_nodes_is_dead_lettered_with_the_reason() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 3, 1, &[("CREW_MAX_DELIVERIES", "2")]);
    let ex =
        crew::Executor::cluster_config(ClusterConfig::new(redis().url()).queue(&queue)).unwrap();
    eventually("the nodes come up", || ex.workers() >= 3);
    let e = ex
        .submit(kill_my_node, ())
        .result_timeout(LONG)
        .unwrap_err();
    assert!(e.is_worker_lost(), "{e}");
    assert!(e.to_string().contains("delivered 2 times"), "{e}");
    // The third node took it only to dead-letter it, and still serves.
    assert_eq!(
        ex.submit(|x: u64| x * 5, (3u64,))
            .result_timeout(LONG)
            .unwrap(),
        15
    );
    let s = crew::cluster::status(&ClusterConfig::new(redis().url()).queue(&queue)).unwrap();
    assert_eq!(s.dead, 1);
    assert!(
        s.recent_dead[0]
            .reason
            .contains("stopped sending heartbeats"),
        "{s}"
    );
    for n in ns {
        redis().kill_node(n);
    }
}

#[test]
fn the_drivers_connections_cut_mid_map_reconnect_and_the_map_completes() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 1, 2, &[]);
    let pool = pool_on(redis(), &queue, 2);
    let got = within("a map whose connections were cut", 4 * LONG, move || {
        let mut it = pool.with_chunksize(20).imap(busy, 0..4_000u64);
        let mut got = Vec::new();
        let mut c = con(redis());
        for (i, r) in it.by_ref().enumerate() {
            got.push(r.unwrap());
            if i % 500 == 100 {
                // Every client but this one: the driver's and the nodes'.
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .query::<u64>(&mut c)
                    .unwrap();
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query::<u64>(&mut c)
                    .unwrap();
            }
        }
        got
    });
    assert_eq!(got, (0..4_000u64).map(|x| x * 3).collect::<Vec<_>>());
    for n in ns {
        redis().kill_node(n);
    }
}

/// Kills the Redis of a running 3,000-item map once 500 results are in,
/// starts it again 300 ms later (with its append-only file if `appendonly`,
/// empty otherwise), and checks that the map ends with every result.
fn map_survives_a_redis_restart(appendonly: bool) {
    let mut own = LocalRedis::start_with(appendonly, &[]).unwrap();
    let queue = fresh_queue();
    let _ns = nodes(&own, &queue, 1, 2, &[]);
    let pool = pool_on(&own, &queue, 2);
    let (tx, rx) = std::sync::mpsc::channel();
    let map = std::thread::spawn(move || {
        let mut it = pool.with_chunksize(20).imap(busy, 0..3_000u64);
        let mut got = Vec::new();
        for (i, r) in it.by_ref().enumerate() {
            got.push(r.unwrap());
            if i == 500 {
                tx.send(()).unwrap();
            }
        }
        got
    });
    rx.recv_timeout(LONG).expect("the map got going");
    own.kill();
    std::thread::sleep(Duration::from_millis(300));
    own.restart().unwrap();
    let deadline = Instant::now() + 4 * LONG;
    while !map.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the map did not end after Redis came back{}",
            if appendonly { "" } else { " empty" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = map.join().unwrap();
    assert_eq!(got, (0..3_000u64).map(|x| x * 3).collect::<Vec<_>>());
}

#[test]
fn redis_killed_and_restarted_mid_map_loses_no_accepted_task() {
    map_survives_a_redis_restart(true);
}

#[test]
fn redis_restarted_without_its_data_mid_map_gets_the_lost_tasks_again() {
    // As after a failover to a replica that had not yet received the
    // latest writes: a Redis with another run id and less (here: none) of
    // the data. The driver sends again what it waits for.
    map_survives_a_redis_restart(false);
}

#[test]
fn task_timeout_kills_the_worker_on_its_node() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 1, 1, &[]);
    let pool = crew::Pool::builder()
        .cluster(&redis().url())
        .queue(&queue)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    eventually("the node comes up", || pool.workers() >= 1);
    let nap = |ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    };
    let err = pool.with_chunksize(1).map(nap, [0, 20_000, 1]).unwrap_err();
    assert_eq!(err.failed(), 1);
    assert!(err.first().is_timeout(), "{}", err.first());
    assert_eq!(err.first().index(), Some(1));
    assert_eq!(pool.apply(nap, (2u64,)).unwrap(), 2);
    for n in ns {
        redis().kill_node(n);
    }
}

#[test]
fn cancel_of_a_running_task_kills_its_worker_on_the_node() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 1, 1, &[]);
    let ex =
        crew::Executor::cluster_config(ClusterConfig::new(redis().url()).queue(&queue)).unwrap();
    eventually("the node comes up", || ex.workers() >= 1);
    let gate = Gate::new();
    let f = ex.submit(crate::common::tasks::gated, (gate.key(), 0u64));
    gate.wait_started(0);
    eventually("the future reports running", || f.running());
    assert!(f.cancel());
    assert!(f.result_timeout(LONG).unwrap_err().is_cancelled());
    // The gate is still closed: only a killed worker frees the node's one
    // worker slot for this next task.
    assert_eq!(
        ex.submit(|x: u64| x + 1, (1u64,))
            .result_timeout(LONG)
            .unwrap(),
        2
    );
    for n in ns {
        redis().kill_node(n);
    }
}

/// Kills its worker process the first time it runs (per marker file).
fn crash_once(marker: String) -> String {
    if std::fs::File::create_new(&marker).is_ok() {
        std::process::exit(3);
    }
    "second attempt".to_owned()
}

#[test]
fn retries_run_a_task_again_after_its_worker_died() {
    let queue = fresh_queue();
    let ns = nodes(redis(), &queue, 1, 1, &[]);
    let pool = crew::Pool::builder()
        .cluster(&redis().url())
        .queue(&queue)
        .retries(1, Duration::from_millis(10))
        .build()
        .unwrap();
    eventually("the node comes up", || pool.workers() >= 1);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("m").to_str().unwrap().to_owned();
    assert_eq!(pool.apply(crash_once, (marker,)).unwrap(), "second attempt");
    // Without retries, the crash is the task's error.
    let bare = crew::Pool::builder()
        .cluster(&redis().url())
        .queue(&queue)
        .build()
        .unwrap();
    let marker = dir.path().join("n").to_str().unwrap().to_owned();
    assert!(
        bare.apply(crash_once, (marker,))
            .unwrap_err()
            .is_worker_lost()
    );
    for n in ns {
        redis().kill_node(n);
    }
}

/// A Redis Cluster of one shard (`cluster-enabled yes`, every slot on this
/// node): Redis then refuses any command or script whose keys are in
/// different slots (`CROSSSLOT`), so a map, calls by name, a reclaim after
/// `kill -9` and the status all running here shows every key of a queue
/// shares its slot.
#[test]
fn a_one_shard_redis_cluster_serves_a_queue_with_reclaims() {
    let own = LocalRedis::start_one_shard_cluster().unwrap();
    let mut c = con(&own);
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
    assert!(
        info.contains("cluster_enabled:1") || info.contains("cluster_state:ok"),
        "{info}"
    );
    let queue = fresh_queue();
    let ns = nodes(&own, &queue, 2, 1, &[]);
    let pool = pool_on(&own, &queue, 2);
    let config = ClusterConfig::new(own.url()).queue(&queue);
    let killed = ns[0];
    let got = within("a map on a Redis Cluster", 4 * LONG, move || {
        let mut it = pool.with_chunksize(50).imap(busy, 0..4_000u64);
        let mut got = Vec::with_capacity(4_000);
        for r in it.by_ref().take(500) {
            got.push(r.unwrap());
        }
        own.kill_node(killed);
        for r in it {
            got.push(r.unwrap());
        }
        let ex = crew::Executor::cluster_config(config.clone()).unwrap();
        let named = ex
            .submit_named::<_, String>("examples::named::program", ())
            .result_timeout(LONG)
            .unwrap();
        let s = crew::cluster::status(&config).unwrap();
        (got, named, s.dead, own)
    });
    let (got, named, dead, own) = got;
    // The killed node's chunks were reclaimed (by `RECLAIM`) and finished.
    assert_eq!(got, (0..4_000u64).map(|x| x * 3).collect::<Vec<_>>());
    assert_eq!(named, "the test binary");
    assert_eq!(dead, 0);
    own.kill_node(ns[1]);
}

/// Churn: six nodes, one killed (`kill -9`) and replaced at random every
/// 50 ms through a long map (10,000 items of 200 µs: at least a third of a
/// second on six workers). Every item is reported once with its value;
/// nothing goes to the dead-letter stream; the reclaims are counted.
#[test]
fn a_map_under_churn_loses_nothing() {
    let queue = fresh_queue();
    let env = [("CREW_HEARTBEAT_MS", HEARTBEAT_MS)];
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    let pool = crew::Pool::builder()
        .cluster_config(config.clone())
        .build()
        .unwrap();
    let (got, kills) = redis()
        .churn(&queue, 6, 1, &env, Duration::from_millis(50), || {
            within("a map under churn", 4 * LONG, move || {
                eventually("some nodes come up", || pool.workers() >= 2);
                pool.with_chunksize(20).map(busy, 0..10_000u64).unwrap()
            })
        })
        .unwrap();
    assert_eq!(got, (0..10_000u64).map(|x| x * 3).collect::<Vec<_>>());
    assert!(kills >= 1, "nodes were killed during the map");
    let s = crew::cluster::status(&config).unwrap();
    assert_eq!(s.dead, 0, "{s}");
    eprintln!(
        "churn: {kills} nodes killed, {} entries reclaimed",
        s.reclaimed
    );
}
