//! crew's cluster back-end: the same `Pool` and `Executor` over Redis
//! Streams, with worker nodes that are your own program started with
//! `CREW_WORKER=redis://…`.
//!
//! - [`Cluster`] is the driver's back-end (`Pool::cluster` in the `crew`
//!   crate): tasks become stream entries, results come back on the
//!   driver's own result stream, each exactly once.
//! - [`Node`] serves a queue in crash-isolated worker processes; a program
//!   becomes one before `main` when `CREW_WORKER` is set ([`run_if_node`],
//!   which the `crew` crate calls with its registry of named tasks).
//! - [`LocalRedis`] starts a private `redis-server`, for tests and demos.
//! - [`status`] reads what `crew status` shows.
//!
//! Users name the `crew` crate. The protocol is described in `README.md`
//! beside this crate's sources.
#![deny(missing_docs)]

mod config;
mod driver;
mod link;
mod node;
mod proto;
mod reply;
mod server;
mod status;
mod subscriber;

pub use config::{
    ClusterConfig, ENV_CLUSTER, ENV_CONCURRENCY, ENV_HEARTBEAT_MS, ENV_LEASE_MS,
    ENV_MAX_DELIVERIES, ENV_MAX_ENTRY_BYTES, ENV_PREFETCH, ENV_QUEUE, ENV_WORKER,
};
pub use driver::{Cluster, ClusterJob};
pub use link::{ENV_TLS_CA, Link, client};
pub use node::{NamedTask, NamedTasks, Node, hostname, run_if_node, serve_and_exit};
pub use server::{LocalRedis, NodeProcess};
pub use status::{DeadLetter, NodeStatus, QueueStatus, StreamStatus, status};
pub use subscriber::Subscriber;
