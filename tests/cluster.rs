//! Fault tests of the cluster back-end, against a real `redis-server`: a
//! node killed (`kill -9`) or stopped (`SIGSTOP`) in the middle of the work,
//! garbage in the task stream, a task that kills every node that takes it,
//! the driver's connections cut (`CLIENT KILL`), Redis itself killed and
//! restarted with an append-only file, `task_timeout`, `cancel` and retries
//! across machines. Each asserts that every task is reported exactly once,
//! with its value or a typed error, and that nothing hangs.
//!
//! Nodes are this test binary re-executed with `CREW_WORKER` (see
//! `common/cluster.rs`). Run with `cargo test -p crew --test cluster`.

#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

#[path = "cluster/api.rs"]
mod api;
#[path = "cluster/faults.rs"]
mod faults;
#[path = "cluster/named.rs"]
mod named;
#[path = "cluster/scale.rs"]
mod scale;
