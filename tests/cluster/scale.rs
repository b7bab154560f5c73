//! Adding nodes never lowers throughput: nodes that outnumber their host's
//! CPUs add no map chunks, hence no Redis entries, round trips or context
//! switches, that could not run in parallel anyway.

use crew::cluster::ClusterConfig;
use crew::core::engine::auto_chunksize;
use redis::Value;

use crate::common::cluster::{HEARTBEAT_MS, fresh_queue, redis};
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
    let env = [
        ("CREW_HEARTBEAT_MS", HEARTBEAT_MS),
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
    // no more than its CPUs, however many nodes share it.
    let expected = |nodes: usize| {
        let parallel = nodes.min(cpus);
        (items as usize).div_ceil(auto_chunksize(items as usize, parallel)) as u64
    };
    let two = map_entries(2, items);
    assert_eq!(two, expected(2), "2 nodes of 1 worker on {cpus} CPU(s)");
    let four = map_entries(4, items);
    assert_eq!(four, expected(4), "4 nodes of 1 worker on {cpus} CPU(s)");
    if cpus <= 2 {
        assert_eq!(
            four, two,
            "4 nodes on {cpus} CPU(s) write as many entries as 2"
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
    // Slow heartbeats: a killed node's hash outlives it by 6 s, long after
    // the node started in its place has sized itself.
    let env = [("CREW_HEARTBEAT_MS", "2000")];
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
