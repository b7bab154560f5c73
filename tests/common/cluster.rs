//! The cluster back-end's test harness: one private `redis-server` per test
//! binary, and for each test a queue of its own with a worker node of its
//! own (this test binary re-executed with `CREW_WORKER`), so that tests
//! running side by side never share workers.
//!
//! `redis-server` must be installed (`ci/test.sh` installs it); without it
//! the cluster tests fail saying how to install it.

use std::ops::Deref;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crew::cluster::{Cluster, LocalRedis, NodeProcess};

use super::LONG;

/// Heartbeats every 100 ms in tests: dead nodes are noticed in 300 ms.
pub(crate) const HEARTBEAT_MS: &str = "100";

/// The Redis of this test binary (started on first use).
pub(crate) fn redis() -> &'static LocalRedis {
    static REDIS: OnceLock<LocalRedis> = OnceLock::new();
    REDIS.get_or_init(|| {
        LocalRedis::start().unwrap_or_else(|e| {
            panic!("the cluster tests need redis-server (Redis 7 or newer): {e}")
        })
    })
}

/// A queue name no other test of this run uses.
pub(crate) fn fresh_queue() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A handle that stops the test's node once the handle (a pool or an
/// executor) is gone and its queue holds no more tasks (some tests drop
/// the handle and then wait for the work it queued), or after `2 * LONG`.
pub(crate) struct WithNode<T> {
    inner: Option<T>,
    node: NodeProcess,
    queue: String,
}

impl<T> Deref for WithNode<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.inner.as_ref().expect("present until drop")
    }
}

impl<T> Drop for WithNode<T> {
    fn drop(&mut self) {
        drop(self.inner.take());
        let (node, queue) = (self.node, self.queue.clone());
        std::thread::spawn(move || {
            let config = crew::cluster::ClusterConfig::new(redis().url()).queue(queue);
            let deadline = Instant::now() + 2 * LONG;
            while Instant::now() < deadline {
                match crew::cluster::status(&config) {
                    Ok(s) if s.streams.iter().all(|s| s.length == 0) => break,
                    _ => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
            redis().kill_node(node);
        });
    }
}

/// Starts a node with `workers` worker processes on a fresh queue, builds
/// the driver with `build(url, queue)`, and waits until the driver sees the
/// node's workers.
pub(crate) fn with_node<T>(
    workers: usize,
    build: impl FnOnce(&str, &str) -> T,
    live: impl Fn(&T) -> usize,
) -> WithNode<T> {
    let queue = fresh_queue();
    let node = redis()
        .spawn_node(&queue, workers, &[("CREW_HEARTBEAT_MS", HEARTBEAT_MS)])
        .expect("start a node");
    let inner = build(&redis().url(), &queue);
    let deadline = Instant::now() + LONG;
    while live(&inner) < workers {
        assert!(
            Instant::now() < deadline,
            "the node did not come up within {LONG:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    WithNode {
        inner: Some(inner),
        node,
        queue,
    }
}

/// A 2-worker cluster pool.
pub(crate) fn pool() -> WithNode<crew::Pool<Cluster>> {
    with_node(
        2,
        |url, queue| {
            crew::Pool::builder()
                .cluster(url)
                .queue(queue)
                .build()
                .unwrap()
        },
        |p| p.workers(),
    )
}

/// A 2-worker cluster pool with a timeline.
pub(crate) fn timeline_pool() -> WithNode<crew::Pool<Cluster>> {
    with_node(
        2,
        |url, queue| {
            crew::Pool::builder()
                .cluster(url)
                .queue(queue)
                .timeline(true)
                .build()
                .unwrap()
        },
        |p| p.workers(),
    )
}

/// A 2-worker cluster executor.
pub(crate) fn executor() -> WithNode<crew::Executor<Cluster>> {
    with_node(
        2,
        |url, queue| {
            crew::Executor::cluster_config(crew::cluster::ClusterConfig::new(url).queue(queue))
                .unwrap()
        },
        |e| e.workers(),
    )
}

/// A `Parallel` with 2 jobs on a 2-worker node of a fresh queue. Each run
/// makes its own driver; the node stops once drivers came and all are gone
/// (their result streams deleted) for a second, or after `2 * LONG`.
pub(crate) fn parallel() -> crew::Parallel {
    let queue = fresh_queue();
    let node = redis()
        .spawn_node(&queue, 2, &[("CREW_HEARTBEAT_MS", HEARTBEAT_MS)])
        .expect("start a node");
    let config = crew::cluster::ClusterConfig::new(redis().url()).queue(&queue);
    let deadline = Instant::now() + LONG;
    while crew::cluster::status(&config)
        .map_or(0, |s| s.nodes.iter().map(|n| n.concurrency).sum::<usize>())
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the node did not come up within {LONG:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pattern = format!("crew:{{{queue}}}:results:*");
    std::thread::spawn(move || {
        let deadline = Instant::now() + 2 * LONG;
        let mut con = redis::Client::open(redis().url())
            .and_then(|c| c.get_connection())
            .ok();
        let (mut seen, mut quiet_since) = (false, None::<Instant>);
        while Instant::now() < deadline {
            let drivers = con.as_mut().map_or(1, |c| {
                redis::cmd("KEYS")
                    .arg(&pattern)
                    .query::<Vec<String>>(c)
                    .map_or(1, |k| k.len())
            });
            if drivers > 0 {
                seen = true;
                quiet_since = None;
            } else if seen {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= std::time::Duration::from_secs(1) {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        redis().kill_node(node);
    });
    crew::Parallel::new().n_jobs(2).cluster(config)
}
