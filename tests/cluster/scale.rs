//! Adding nodes never lowers throughput: nodes that outnumber the CPUs
//! they can use (their host's, less the one the driver takes when it runs
//! there too) add no map chunks, hence no Redis entries, round trips or
//! context switches, that could not run in parallel anyway.

use crew::cluster::ClusterConfig;
use crew::core::engine::auto_chunksize;
use redis::Value;

use crate::common::cluster::{fresh_queue, redis};
use crate::common::eventually;

fn noop(x: u64) -> u64 {
    x
}

/// The `entries-added` of a stream (`XINFO STREAM`): every entry ever
/// written to it, deleted or not.
fn entries_added(con: &mut redis::Connection, stream: &str) -> u64 {
    let info: Vec<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query(con)
        .unwrap();
    info.chunks(2)
        .find_map(|kv| match kv {
            [Value::BulkString(k), Value::Int(v)] if k.as_slice() == b"entries-added" => {
                Some(*v as u64)
            }
            _ => None,
        })
        .expect("XINFO STREAM names entries-added (Redis 7.0 or newer)")
}

/// Runs a map of `items` no-op items with the default chunk size on `n`
/// fresh nodes of one worker process each (prefetch 64, as `crew bench
/// cluster`), all on this machine; returns the task entries it wrote.
fn map_entries(n: usize, items: u64) -> u64 {
    let queue = fresh_queue();
    // Heartbeats of 1 s: a node busy on a loaded machine never drops out
    // of the driver's count (which would cut fewer chunks).
    let env = [
        ("CREW_HEARTBEAT_MS", "1000"),
        (crew::cluster::ENV_PREFETCH, "64"),
    ];
    let nodes: Vec<_> = (0..n)
        .map(|_| redis().spawn_node(&queue, 1, &env).unwrap())
        .collect();
    let pool = crew::Pool::builder()
        .cluster_config(ClusterConfig::new(redis().url()).queue(&queue))
        .build()
        .unwrap();
    eventually("the nodes come up", || pool.workers() >= n);
    let stream = format!(
        "crew:{{{queue}}}:tasks:{:016x}",
        crew_process::remote::fingerprint()
    );
    let mut con = redis::Client::open(redis().url())
        .unwrap()
        .get_connection()
        .unwrap();
    let before = entries_added(&mut con, &stream);
    let v = pool.map(noop, 0..items).unwrap();
    assert_eq!(v, (0..items).collect::<Vec<_>>());
    let after = entries_added(&mut con, &stream);
    drop(pool);
    for node in nodes {
        redis().kill_node(node);
    }
    after - before
}

#[test]
fn nodes_beyond_the_hosts_cpus_add_no_map_entries() {
    let cpus = crew::cpu_count();
    let items = 20_000u64;
    // A map cuts 16 chunks per worker that can run at once: on one host,
    // no more than its CPUs, however many nodes share it; here the driver
    // shares it too, and takes one of them itself.
    let expected = |nodes: usize| {
        let parallel = nodes.min(cpus.saturating_sub(1).max(1));
        (items as usize).div_ceil(auto_chunksize(items as usize, parallel)) as u64
    };
    let one = map_entries(1, items);
    assert_eq!(one, expected(1), "1 node of 1 worker on {cpus} CPU(s)");
    let two = map_entries(2, items);
    assert_eq!(two, expected(2), "2 nodes of 1 worker on {cpus} CPU(s)");
    let four = map_entries(4, items);
    assert_eq!(four, expected(4), "4 nodes of 1 worker on {cpus} CPU(s)");
    if cpus <= 2 {
        // The driver takes one of 2 CPUs: a second node cannot add one.
        assert_eq!(
            two, one,
            "2 nodes on {cpus} CPU(s) beside the driver write as many entries as 1"
        );
        assert_eq!(
            four, one,
            "4 nodes on {cpus} CPU(s) beside the driver write as many entries as 1"
        );
    }
}

/// The worker processes of the node with process id `pid` on `queue`, once
/// it has said (0 until then).
fn concurrency_of(config: &ClusterConfig, pid: u32) -> usize {
    crew::cluster::status(config)
        .unwrap()
        .nodes
        .iter()
        .find(|n| n.pid == pid)
        .map_or(0, |n| n.concurrency)
}

/// Nodes told no `CREW_CONCURRENCY` split their host's CPUs: the first
/// takes them all, the next ones what is left (at least 1), so the nodes
/// of one host start no more worker processes than its CPUs beyond one
/// each; a node killed (its heartbeat not yet expired) gives its CPUs to
/// the one started in its place.
#[test]
fn nodes_sharing_a_host_split_its_cpus_by_default() {
    let cpus = crew::cpu_count();
    let queue = fresh_queue();
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    // Slow heartbeats: a killed node's hash outlives it by 15 s, long
    // after the node started in its place has sized itself.
    let env = [("CREW_HEARTBEAT_MS", "5000")];
    let first = redis().spawn_node(&queue, 0, &env).unwrap();
    eventually("the first node comes up", || {
        concurrency_of(&config, first.pid) > 0
    });
    assert_eq!(
        concurrency_of(&config, first.pid),
        cpus,
        "alone on its host"
    );
    let first_pid = first.pid;
    redis().kill_node(first);
    let again = redis().spawn_node(&queue, 0, &env).unwrap();
    eventually("the node started in its place comes up", || {
        concurrency_of(&config, again.pid) > 0
    });
    assert!(
        crew::cluster::status(&config)
            .unwrap()
            .nodes
            .iter()
            .any(|n| n.pid == first_pid),
        "the killed node's heartbeat is still there"
    );
    assert_eq!(
        concurrency_of(&config, again.pid),
        cpus,
        "a killed node's CPUs go to the one started in its place"
    );
    // Two more, started together.
    let more: Vec<_> = (0..2)
        .map(|_| redis().spawn_node(&queue, 0, &env).unwrap())
        .collect();
    eventually("the two nodes come up", || {
        more.iter().all(|n| concurrency_of(&config, n.pid) > 0)
    });
    let each: Vec<usize> = more
        .iter()
        .map(|n| concurrency_of(&config, n.pid))
        .collect();
    assert_eq!(
        each,
        [1, 1],
        "the CPUs of the host are taken: at least 1 each"
    );
    redis().kill_node(again);
    for n in more {
        redis().kill_node(n);
    }
}

/// The calls of each command Redis has run (`INFO commandstats`).
fn command_calls(con: &mut redis::Connection) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// A node with nothing to do blocks in `XREADGROUP` (500 ms at a time);
/// it does not ask again with `FETCH` (whose `XLEN` nothing else sends
/// here) between its blocking reads.
#[test]
fn an_idle_node_blocks_instead_of_polling() {
    // A Redis of its own: its counters are this test's alone.
    let own = crew::cluster::LocalRedis::start().unwrap();
    let queue = fresh_queue();
    let env = [
        ("CREW_HEARTBEAT_MS", "1000"),
        (crew::cluster::ENV_PREFETCH, "64"),
    ];
    let node = own.spawn_node(&queue, 1, &env).unwrap();
    let config = ClusterConfig::new(own.url()).queue(&queue);
    eventually("the node comes up", || {
        crew::cluster::status(&config).is_ok_and(|s| s.nodes.len() == 1)
    });
    let mut con = redis::Client::open(own.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // Past its first read (a `FETCH`, then a blocking read that ends
    // empty).
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let before = command_calls(&mut con);
    let idle = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let after = command_calls(&mut con);
    let secs = idle.elapsed().as_secs_f64();
    let delta = |c: &str| after.get(c).copied().unwrap_or(0) - before.get(c).copied().unwrap_or(0);
    assert_eq!(delta("xlen"), 0, "an idle node ran FETCH");
    let reads = delta("xreadgroup");
    assert!(
        reads >= 1 && reads as f64 <= secs / 0.5 + 2.0,
        "an idle node blocks 500 ms per read: {reads} reads in {secs:.1} s"
    );
    own.kill_node(node);
}

/// Prefetching nodes share a queued map by their worker processes, not
/// by their number: a node of 1 worker beside a node of 3 holds back no
/// more than its quarter, so adding it cannot slow the big one down.
#[test]
fn prefetching_nodes_share_a_map_by_their_workers() {
    let queue = fresh_queue();
    // Heartbeats of 1 s: neither node drops out of the count on a loaded
    // machine (the other would then take the whole map).
    let env = [
        ("CREW_HEARTBEAT_MS", "1000"),
        (crew::cluster::ENV_PREFETCH, "64"),
    ];
    let big = redis().spawn_node(&queue, 3, &env).unwrap();
    let small = redis().spawn_node(&queue, 1, &env).unwrap();
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    let pool = crew::Pool::builder()
        .cluster_config(config.clone())
        .build()
        .unwrap();
    eventually("the nodes come up", || pool.workers() >= 4);
    let v = pool
        .with_chunksize(1)
        .map(
            crate::common::tasks::sleep_ms,
            std::iter::repeat_n(20u64, 48),
        )
        .unwrap();
    assert_eq!(v.len(), 48);
    let done = |pid: u32| {
        crew::cluster::status(&config)
            .unwrap()
            .nodes
            .iter()
            .find(|n| n.pid == pid)
            .map_or(0, |n| n.done)
    };
    eventually("both nodes report their counts", || {
        done(big.pid) + done(small.pid) == 48
    });
    let (b, s) = (done(big.pid), done(small.pid));
    // A quarter is 12; split by nodes the small one would take 24.
    assert!(
        s <= 18 && b >= 30,
        "the node of 3 workers ran {b}, the node of 1 ran {s} of 48"
    );
    redis().kill_node(big);
    redis().kill_node(small);
}

/// `Node::start` given 0 worker processes sizes itself as a node started
/// with no `CREW_CONCURRENCY` does (alone on its host for a fresh queue:
/// every CPU), rather than running one worker or none.
#[test]
fn a_node_started_with_zero_workers_chooses_its_count() {
    let queue = fresh_queue();
    let config = ClusterConfig::new(redis().url()).queue(&queue);
    let chosen = crew_redis::Node::start(config.clone(), 0).unwrap();
    // `Node::start` makes SIGTERM stop a node's `serve`; this test process
    // serves nothing and must stay killable.
    // SAFETY: restoring the default disposition of a signal.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_DFL) };
    assert_eq!(chosen.concurrency(), crew::cpu_count());
    let given = crew_redis::Node::start(config, 2).unwrap();
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_DFL) };
    assert_eq!(given.concurrency(), 2);
}

/// A node told `CREW_CONCURRENCY=0` (the usual guess at "choose for me")
/// does not start: it exits with 2 and a line naming the variable and
/// saying to unset it, before it connects to anything.
#[test]
fn a_node_told_zero_workers_exits_saying_to_unset_it() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(crew::cluster::ENV_WORKER, redis().url())
        .env(crew::cluster::ENV_QUEUE, fresh_queue())
        .env(crew::cluster::ENV_CONCURRENCY, "0")
        .env_remove("CREW_WORKER_FD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CREW_CONCURRENCY=\"0\": expected a whole number of at least 1")
            && stderr.contains("or unset it"),
        "{stderr}"
    );
}
