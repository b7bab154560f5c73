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

/// A pool or an executor whose node lives as long as the test that made it.
///
/// The node is not stopped when the handle goes: a lazy iterator or a
/// dropped handle's queued work may still need it (the driver lives on in
/// every clone of the back-end). It is stopped when the test's thread ends
/// (and with the test binary at the latest), which is after every use of
/// the back-end the test could make.
pub(crate) struct WithNode<T> {
    inner: T,
}

impl<T> Deref for WithNode<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// The nodes this thread started, stopped when the thread ends.
struct ThreadNodes(std::cell::RefCell<Vec<NodeProcess>>);

impl Drop for ThreadNodes {
    fn drop(&mut self) {
        for node in self.0.get_mut().drain(..) {
            redis().kill_node(node);
        }
    }
}

thread_local! {
    static NODES: ThreadNodes = const { ThreadNodes(std::cell::RefCell::new(Vec::new())) };
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
    NODES.with(|n| n.0.borrow_mut().push(node));
    let inner = build(&redis().url(), &queue);
    let deadline = Instant::now() + LONG;
    while live(&inner) < workers {
        assert!(
            Instant::now() < deadline,
            "the node did not come up within {LONG:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    WithNode { inner }
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
/// makes its own driver; the node stops when the test's thread ends.
pub(crate) fn parallel() -> crew::Parallel {
    let queue = fresh_queue();
    let node = redis()
        .spawn_node(&queue, 2, &[("CREW_HEARTBEAT_MS", HEARTBEAT_MS)])
        .expect("start a node");
    NODES.with(|n| n.0.borrow_mut().push(node));
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
    crew::Parallel::new().n_jobs(2).cluster(config)
}
