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
