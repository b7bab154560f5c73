//! What `crew status` shows: the live nodes of a queue, its task streams
//! (one per build) with their depth, and the dead-letter stream.

use std::time::{Duration, Instant};

use crew_core::Result;
use redis::Value;

use crate::config::{ClusterConfig, GROUP, Keys};
use crate::proto::node_fields as f;
use crate::reply;

/// A live worker node.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    /// Its consumer name, `host:pid:nonce`.
    pub name: String,
    /// The build fingerprint of its program (hex).
    pub build: String,
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its worker processes.
    pub concurrency: usize,
    /// The CPUs it may use on its host (0: it did not say).
    pub cpus: usize,
    /// Tasks it holds now.
    pub running: u64,
    /// Tasks it finished.
    pub done: u64,
    /// Tasks that failed on it.
    pub failed: u64,
    /// The named task streams it serves (their ids, hex).
    pub named: Vec<String>,
}

/// A task stream: one build's, or one named task's (for every build that
/// registers it with that signature).
#[derive(Clone, Debug, Default)]
pub struct StreamStatus {
    /// The build fingerprint (hex) whose tasks it holds; for a named task's
    /// stream, the stream's id (hex).
    pub build: String,
    /// For a named task's stream: `name: (args) -> result`.
    pub task: Option<String>,
    /// Entries in the stream: waiting or running.
    pub length: u64,
    /// Entries a node holds (running or about to).
    pub pending: u64,
    /// Worker processes of live nodes that can run them.
    pub workers: usize,
}

/// An entry of the dead-letter stream.
#[derive(Clone, Debug, Default)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// Why it is there.
    pub reason: String,
}

/// A queue at one instant.
#[derive(Clone, Debug, Default)]
pub struct QueueStatus {
    /// The queue's name.
    pub queue: String,
    /// Live nodes.
    pub nodes: Vec<NodeStatus>,
    /// Task streams, one per build that ever used the queue.
    pub streams: Vec<StreamStatus>,
    /// Entries in the dead-letter stream.
    pub dead: u64,
    /// Entries taken over from dead or stalled nodes to run again, since
    /// the queue was first used.
    pub reclaimed: u64,
    /// The latest few of them.
    pub recent_dead: Vec<DeadLetter>,
}

impl QueueStatus {
    /// Tasks waiting: entries in task streams not yet taken by a node.
    pub fn waiting(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.length.saturating_sub(s.pending))
            .sum()
    }

    /// Why tasks wait, in words: a build, or a task called by name, with
    /// waiting tasks and no live node that can run it.
    pub fn problems(&self) -> Vec<String> {
        self.streams
            .iter()
            .filter(|s| s.length > s.pending && s.workers == 0)
            .map(|s| match &s.task {
                None => format!(
                    "{} task(s) of build {} wait: no live node has build {} (start the same program with CREW_WORKER=…)",
                    s.length - s.pending,
                    s.build,
                    s.build
                ),
                Some(task) => {
                    let name = task.split(": ").next().unwrap_or(task);
                    // The same name with another signature, served by a
                    // live node: the likely mistake.
                    let others: Vec<&str> = self
                        .streams
                        .iter()
                        .filter(|o| o.workers > 0)
                        .filter_map(|o| o.task.as_deref())
                        .filter(|t| t.split(": ").next() == Some(name) && *t != task)
                        .collect();
                    let mut m = format!(
                        "{} call(s) of task {task} wait: no live node has task `{name}` with this signature",
                        s.length - s.pending
                    );
                    if !others.is_empty() {
                        m.push_str(&format!(
                            " (live nodes have {}; a program calling it must register the same argument and result types)",
                            others.join(", ")
                        ));
                    }
                    m
                }
            })
            .collect()
    }
}

impl std::fmt::Display for QueueStatus {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(out, "queue {}", self.queue)?;
        writeln!(out, "nodes: {}", self.nodes.len())?;
        for n in &self.nodes {
            let cpus = if n.cpus > 0 {
                format!(" ({} cpus)", n.cpus)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {}  build {}  host {}{cpus}  pid {}  workers {}  running {}  done {}  failed {}",
                n.name, n.build, n.host, n.pid, n.concurrency, n.running, n.done, n.failed
            )?;
        }
        writeln!(out, "tasks waiting: {}", self.waiting())?;
        for s in &self.streams {
            let what = match &s.task {
                Some(t) => format!("task {t}"),
                None => format!("build {}", s.build),
            };
            writeln!(
                out,
                "  {what}: {} in stream, {} held by nodes, {} live workers",
                s.length, s.pending, s.workers
            )?;
        }
        writeln!(
            out,
            "reclaimed from dead or stalled nodes: {}",
            self.reclaimed
        )?;
        writeln!(out, "dead-letter: {}", self.dead)?;
        for d in &self.recent_dead {
            writeln!(out, "  {}: {}", d.id, d.reason)?;
        }
        for p in self.problems() {
            writeln!(out, "why tasks wait: {p}")?;
        }
        Ok(())
    }
}

/// Reads the status of the queue `config` names.
///
/// # Examples
///
/// ```no_run
/// # mod crew { pub use crew_core::{Error, Result}; pub mod cluster { pub use crew_redis::*; } }
/// let s = crew::cluster::status(&crew::cluster::ClusterConfig::new("redis://127.0.0.1:6379"))?;
/// println!("{s}");
/// # Ok::<(), crew::Error>(())
/// ```
///
/// # Errors
///
/// `is_io` if Redis cannot be reached within 10 s.
pub fn status(config: &ClusterConfig) -> Result<QueueStatus> {
    let keys = Keys::new(&config.queue);
    let mut link = config.link(Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let names: Vec<String> = link.call_until(deadline, "reading the nodes", |con| {
        redis::cmd("SMEMBERS").arg(keys.nodes()).query(con)
    })?;
    let mut nodes = Vec::new();
    for name in names {
        let h: Vec<(String, String)> = link.call_until(deadline, "reading a node", |con| {
            redis::cmd("HGETALL").arg(keys.node(&name)).query(con)
        })?;
        if h.is_empty() {
            continue; // its heartbeat expired
        }
        let get = |k: &str| {
            h.iter()
                .find(|(a, _)| a == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        nodes.push(NodeStatus {
            name: name.clone(),
            build: get(f::BUILD),
            host: get(f::HOST),
            pid: get(f::PID).parse().unwrap_or(0),
            concurrency: get(f::CONCURRENCY).parse().unwrap_or(0),
            cpus: get(f::CPUS).parse().unwrap_or(0),
            running: get(f::RUNNING).parse().unwrap_or(0),
            done: get(f::DONE).parse().unwrap_or(0),
            failed: get(f::FAILED).parse().unwrap_or(0),
            named: get(f::NAMED)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let stream_keys: Vec<String> = link.call_until(deadline, "reading the streams", |con| {
        redis::cmd("SMEMBERS").arg(keys.streams()).query(con)
    })?;
    let signatures: std::collections::HashMap<String, String> =
        link.call_until(deadline, "reading the named tasks", |con| {
            redis::cmd("HGETALL").arg(keys.signatures()).query(con)
        })?;
    let mut streams = Vec::new();
    for key in stream_keys {
        let (length, pending): (u64, Value) =
            link.call_until(deadline, "reading a stream", |con| {
                redis::pipe()
                    .cmd("XLEN")
                    .arg(&key)
                    .cmd("XPENDING")
                    .arg(&key)
                    .arg(GROUP)
                    .query(con)
            })?;
        let pending = reply::array(&pending)
            .first()
            .and_then(reply::string)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let build = crate::node::stream_id(&key).to_owned();
        let named = key.contains(":named:");
        let workers = nodes
            .iter()
            .filter(|n| {
                if named {
                    n.named.contains(&build)
                } else {
                    n.build == build
                }
            })
            .map(|n| n.concurrency)
            .sum();
        streams.push(StreamStatus {
            task: named.then(|| {
                signatures
                    .get(&build)
                    .cloned()
                    .unwrap_or_else(|| format!("with id {build}"))
            }),
            build,
            length,
            pending,
            workers,
        });
    }
    let reclaimed: Option<u64> = link.call_until(deadline, "reading the counters", |con| {
        redis::cmd("HGET")
            .arg(keys.stats())
            .arg("reclaimed")
            .query(con)
    })?;
    let (dead, recent): (u64, Value) =
        link.call_until(deadline, "reading the dead letters", |con| {
            redis::pipe()
                .cmd("XLEN")
                .arg(keys.dead())
                .cmd("XREVRANGE")
                .arg(keys.dead())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(5)
                .query(con)
        })?;
    let recent_dead = reply::array(&recent)
        .iter()
        .filter_map(reply::entry)
        .map(|(id, fields)| DeadLetter {
            id,
            reason: reply::field(&fields, "reason")
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .unwrap_or_default(),
        })
        .collect();
    Ok(QueueStatus {
        queue: config.queue.clone(),
        nodes,
        streams,
        dead,
        reclaimed: reclaimed.unwrap_or(0),
        recent_dead,
    })
}
