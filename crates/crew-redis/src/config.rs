//! Settings of a cluster: where Redis is, which queue, and the timings of
//! leases and heartbeats; from code or from the environment.

use std::time::Duration;

use crew_core::{Error, Result};

/// The environment variable naming the Redis a driver uses
/// (`Pool::cluster_from_env`).
pub const ENV_CLUSTER: &str = "CREW_CLUSTER";
/// The environment variable that makes a program a worker node: its value
/// is the Redis URL. Read before `main`.
pub const ENV_WORKER: &str = "CREW_WORKER";
/// The queue name (default `default`), for drivers and nodes.
pub const ENV_QUEUE: &str = "CREW_QUEUE";
/// The number of worker processes of a node. Default: the CPUs of its
/// host that the queue's live nodes there do not use yet, at least 1 (the
/// CPU count for the first node of a host).
pub const ENV_CONCURRENCY: &str = "CREW_CONCURRENCY";
/// Entries a node takes beyond one per worker process (default 0).
pub const ENV_PREFETCH: &str = "CREW_PREFETCH";
/// The lease of a running task, in milliseconds (default 30,000).
pub const ENV_LEASE_MS: &str = "CREW_LEASE_MS";
/// How often a node proves it is alive, in milliseconds (default 1,000);
/// a node silent for three periods is dead and its tasks are reclaimed.
pub const ENV_HEARTBEAT_MS: &str = "CREW_HEARTBEAT_MS";
/// How many deliveries a task gets before it goes to the dead-letter
/// stream (default 5).
pub const ENV_MAX_DELIVERIES: &str = "CREW_MAX_DELIVERIES";
/// The largest task entry a node accepts, in bytes (default 64 MiB); larger
/// ones go to the dead-letter stream.
pub const ENV_MAX_ENTRY_BYTES: &str = "CREW_MAX_ENTRY_BYTES";

/// Where a cluster lives and how it keeps time.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::{Error, Result}; pub mod cluster { pub use crew_redis::*; } }
/// let c = crew::cluster::ClusterConfig::new("redis://127.0.0.1:6379").queue("images");
/// assert_eq!(c.queue_name(), "images");
/// ```
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub(crate) url: String,
    pub(crate) queue: String,
    pub(crate) lease: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) max_entry_bytes: usize,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) timeline: bool,
    pub(crate) tls_ca: Option<std::path::PathBuf>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// What a refused [`ENV_CONCURRENCY`] adds: unset, the node sizes itself,
/// and `0` is the usual guess at "choose for me".
pub(crate) const CONCURRENCY_UNSET_HINT: &str = " (or unset it: the node then takes the CPUs of \
     its host that the queue's other live nodes there leave free)";

/// A count from the environment variable `name`: `default` when unset or
/// empty; a value that is not a whole number of at least `min` is refused,
/// naming the variable (and adding `hint`), rather than silently replaced
/// by the default.
pub(crate) fn env_count(name: &str, default: usize, min: usize, hint: &str) -> Result<usize> {
    parse_count(
        name,
        std::env::var(name).ok().as_deref(),
        default,
        min,
        hint,
    )
}

/// [`env_count`] of a given value.
pub(crate) fn parse_count(
    name: &str,
    value: Option<&str>,
    default: usize,
    min: usize,
    hint: &str,
) -> Result<usize> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(Error::invalid_input(format!(
                "{name}={v:?}: expected a whole number of at least {min}{hint}"
            ))),
        },
    }
}

impl ClusterConfig {
    /// Settings for the Redis at `url` (`redis://[user:password@]host:port[/db]`,
    /// `rediss://…` for TLS, or `redis+unix:///path/to/socket`), with the
    /// queue and timings from the environment where set, else the defaults.
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        let heartbeat = Duration::from_millis(env_u64(ENV_HEARTBEAT_MS).unwrap_or(1000).max(10));
        ClusterConfig {
            url: url.into(),
            queue: std::env::var(ENV_QUEUE).unwrap_or_else(|_| "default".to_owned()),
            lease: Duration::from_millis(env_u64(ENV_LEASE_MS).unwrap_or(30_000).max(50)),
            heartbeat,
            max_deliveries: env_u64(ENV_MAX_DELIVERIES).unwrap_or(5).clamp(1, 1000) as u32,
            max_entry_bytes: env_u64(ENV_MAX_ENTRY_BYTES).map_or(64 << 20, |n| n as usize),
            task_timeout: None,
            retries: 0,
            retry_backoff: Duration::from_millis(100),
            timeline: false,
            tls_ca: None,
        }
    }

    /// Trust the certificate authorities in this PEM file for `rediss://`
    /// (default: `CREW_TLS_CA`, else the system's).
    pub fn tls_ca(mut self, pem: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// A link to this cluster's Redis.
    pub(crate) fn link(&self, read_timeout: Duration) -> Result<crate::Link> {
        crate::Link::open_with_ca(&self.url, self.tls_ca.as_deref(), read_timeout)
    }

    /// Settings from `CREW_CLUSTER` (and the other `CREW_*` variables).
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if `CREW_CLUSTER` is not set.
    pub fn from_env() -> Result<ClusterConfig> {
        match std::env::var(ENV_CLUSTER) {
            Ok(url) if !url.is_empty() => Ok(ClusterConfig::new(url)),
            _ => Err(Error::invalid_input(format!(
                "{ENV_CLUSTER} is not set: set it to the Redis URL of the cluster, e.g. redis://127.0.0.1:6379"
            ))),
        }
    }

    /// The queue: drivers and nodes of one queue share work; other queues
    /// on the same Redis are independent.
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = name.into();
        self
    }

    /// The queue's name.
    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long a node may hold a running task without renewing its lease
    /// before another node takes it (nodes renew every heartbeat).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(50));
        self
    }

    /// How often nodes prove they are alive; one silent for three
    /// heartbeats is dead and its tasks are reclaimed at once.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// Deliveries before a task goes to the dead-letter stream.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// The largest task entry a node accepts; larger ones go to the
    /// dead-letter stream.
    pub fn max_entry_bytes(mut self, n: usize) -> Self {
        self.max_entry_bytes = n;
        self
    }

    /// Kill the worker process running a task (or map item) after this long;
    /// the task fails with `is_timeout`.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Re-run a task whose worker process died or timed out up to `n` times,
    /// after `backoff`, doubled each time, plus up to half again at random.
    pub fn retries(mut self, n: u32, backoff: Duration) -> Self {
        self.retries = n;
        self.retry_backoff = backoff;
        self
    }

    /// Record a timeline: spans from every node, in one trace.
    pub fn timeline(mut self, on: bool) -> Self {
        self.timeline = on;
        self
    }
}

/// The keys of one queue. All share the hash tag `{queue}`, so on a Redis
/// Cluster they live in one slot and the scripts stay single-slot.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(queue: &str) -> Keys {
        Keys {
            prefix: format!("crew:{{{queue}}}"),
        }
    }

    /// The task stream of one build.
    pub(crate) fn tasks(&self, build: u64) -> String {
        format!("{}:tasks:{build:016x}", self.prefix)
    }

    /// The task stream of the task registered as `name` with the signature
    /// `fingerprint`, for every build that registers it.
    pub(crate) fn named(&self, name: &str, fingerprint: u64) -> String {
        format!("{}:named:{:016x}", self.prefix, named_id(name, fingerprint))
    }

    /// What each named stream serves, in words (`name: (args) -> result`),
    /// by the stream's id (for `status`).
    pub(crate) fn signatures(&self) -> String {
        format!("{}:signatures", self.prefix)
    }

    /// Counters of the queue (`reclaimed`: entries taken over from dead or
    /// stalled nodes), for `status`.
    pub(crate) fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    /// Every task stream ever used on this queue (for `status`).
    pub(crate) fn streams(&self) -> String {
        format!("{}:streams", self.prefix)
    }

    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    pub(crate) fn results(&self, driver: &str) -> String {
        format!("{}:results:{driver}", self.prefix)
    }

    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub(crate) fn node_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    pub(crate) fn node(&self, name: &str) -> String {
        format!("{}{name}", self.node_prefix())
    }

    pub(crate) fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }
}

/// The id of a named task's stream: FNV-1a of the name and the signature's
/// fingerprint.
pub(crate) fn named_id(name: &str, fingerprint: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes().chain([0]).chain(fingerprint.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The consumer group of every task stream.
pub(crate) const GROUP: &str = "nodes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mistyped_count_is_refused_with_the_variable_named() {
        assert_eq!(
            parse_count(ENV_CONCURRENCY, None, 4, 1, CONCURRENCY_UNSET_HINT).unwrap(),
            4
        );
        assert_eq!(
            parse_count(ENV_CONCURRENCY, Some(" "), 4, 1, CONCURRENCY_UNSET_HINT).unwrap(),
            4
        );
        assert_eq!(
            parse_count(ENV_CONCURRENCY, Some(" 8 "), 4, 1, CONCURRENCY_UNSET_HINT).unwrap(),
            8
        );
        assert_eq!(parse_count(ENV_PREFETCH, Some("0"), 0, 0, "").unwrap(), 0);
        for bad in ["8x", "-1", "0", "two"] {
            let e =
                parse_count(ENV_CONCURRENCY, Some(bad), 4, 1, CONCURRENCY_UNSET_HINT).unwrap_err();
            assert!(e.is_invalid_input(), "{e:?}");
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid input: CREW_CONCURRENCY={bad:?}: expected a whole number of at least 1 \
                     (or unset it: the node then takes the CPUs of its host that the queue's \
                     other live nodes there leave free)"
                )
            );
        }
        let e = parse_count(ENV_PREFETCH, Some("-1"), 0, 0, "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid input: CREW_PREFETCH=\"-1\": expected a whole number of at least 0"
        );
    }
}
