//! A worker node: this program, started with `CREW_WORKER=redis://…`,
//! serving a queue's tasks in its own crash-isolated worker processes.
//!
//! Threads: the *fetcher* (the caller's) reads new entries with
//! `XREADGROUP` while the node has room; the *reporter* sends start notices
//! and results (owner-checked, see `proto::FINISH`); the *keeper* renews the
//! heartbeat and the leases every heartbeat and reclaims the entries of dead
//! or stalled nodes; the *listener* hears cancel requests. Each has its own
//! connection, which reconnects on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crew_core::{Backend, Error, Result};
use crew_process::remote::{ErrorWire, RawHandle, RawJob, RawOutcome};
use crew_process::{ProcessConfig, Processes};
use redis::Value;

use crate::config::{
    CONCURRENCY_UNSET_HINT, ClusterConfig, ENV_CONCURRENCY, ENV_WORKER, GROUP, Keys, env_count,
};
use crate::link::{Link, redis_error};
use crate::proto::{self, CancelMsg, Note, TaskMsg, node_fields};
use crate::reply::{self, Entry};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set by SIGTERM/SIGINT: stop taking tasks, finish the running ones, exit.
static STOP_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_SIGNAL.store(true, Ordering::SeqCst);
}

/// A unique consumer name: `host:pid:nonce`, so that a restarted node never
/// inherits (and hides) the entries of its dead predecessor.
fn consumer_name() -> String {
    let nonce = proto::clock_shift() as u64 ^ crew_process::remote::monotonic_ns();
    format!("{}:{}:{:08x}", hostname(), std::process::id(), nonce as u32)
}

/// The name of this machine, as nodes report it (`localhost` when the
/// system will not say).
///
/// # Examples
///
/// ```
/// assert!(!crew_redis::hostname().is_empty());
/// ```
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The tasks a node serves by name, across builds: made by the `crew`
/// crate from its registry of `#[crew::task]` functions.
#[derive(Clone, Copy, Debug)]
pub struct NamedTasks {
    /// The registered tasks.
    pub list: fn() -> Vec<NamedTask>,
    /// The wire name (see `crew_process::remote::call_task`) of the task
    /// that runs a `crew_process::remote::NamedCall` through the registry
    /// and returns its result encoded (`Verbatim`).
    pub entry: fn() -> u64,
}

/// One task registered by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedTask {
    /// Its name.
    pub name: String,
    /// The fingerprint of its signature.
    pub fingerprint: u64,
    /// Its signature in words, `(args) -> result`.
    pub signature: String,
}

/// Serves as a worker node if this process was started as one
/// (`CREW_WORKER` set): never returns then. Otherwise returns at once.
/// The `crew` crate calls it before `main` (and in `crew::init()`), with
/// its registry of named tasks.
///
/// # Examples
///
/// ```
/// // In a program that was not started as a node, this returns at once.
/// crew_redis::run_if_node(None);
/// ```
pub fn run_if_node(named: Option<NamedTasks>) {
    // A worker process of a node is started with the node's environment
    // minus `CREW_WORKER` (the node removes it), and with `CREW_WORKER_FD`:
    // it is crew-process's to serve.
    if std::env::var_os("CREW_WORKER_FD").is_some() {
        return;
    }
    let Some(url) = std::env::var_os(ENV_WORKER) else {
        return;
    };
    let url = url.to_string_lossy().into_owned();
    // SAFETY: we run before `main` (or at its very start), single-threaded:
    // nothing reads the environment concurrently. Removing the variable
    // keeps this node's worker processes from becoming nodes.
    unsafe { std::env::remove_var(ENV_WORKER) };
    // A mistyped count stops the node with a message, rather than giving
    // it a number of workers nobody asked for. None given: the node takes
    // the CPUs of its host that other nodes there do not use yet.
    let given = match std::env::var(ENV_CONCURRENCY) {
        Ok(v) if !v.trim().is_empty() => {
            env_count(ENV_CONCURRENCY, 1, 1, CONCURRENCY_UNSET_HINT).map(Some)
        }
        _ => Ok(None),
    };
    let started = given
        .and_then(|concurrency| Node::start_sized(ClusterConfig::new(url), concurrency, named));
    serve_and_exit("crew node", started, Node::serve);
}

/// The end of a node process: serves the node `started` (if it started)
/// and exits, with 0 when it served until told to stop, or 2 after a line
/// on stderr (`<label> <pid>: …`) saying why it could not start or failed.
///
/// # Examples
///
/// ```no_run
/// let node = crew_redis::Node::start(crew_redis::ClusterConfig::new("redis://127.0.0.1:6379"), 2);
/// crew_redis::serve_and_exit("my node", node, crew_redis::Node::serve);
/// ```
pub fn serve_and_exit<N>(
    label: &str,
    started: Result<N>,
    serve: impl FnOnce(N) -> Result<()>,
) -> ! {
    let pid = std::process::id();
    let code = match started.map(serve) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("{label} {pid}: {e}");
            2
        }
        Err(e) => {
            eprintln!("{label} {pid}: cannot start: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// An entry this node holds: the index of its stream among the node's
/// streams, and its id there.
type Held = (usize, String);

/// A stream a node serves: its build's, or one named task's.
struct Served {
    key: String,
    named: Option<NamedTask>,
}

/// One entry this node holds.
struct Local {
    driver: String,
    id: u64,
    handle: Option<RawHandle>,
}

enum Report {
    Started {
        driver: String,
        id: u64,
    },
    Done {
        entry: Held,
        driver: String,
        id: u64,
        outcome: RawOutcome,
    },
    /// An entry went to the dead-letter stream: tell its driver.
    Dead {
        driver: String,
        id: u64,
        reason: String,
    },
    /// An entry was refused (too large, another version, not what its
    /// stream serves) and went to the dead-letter stream: tell its driver.
    Refused {
        driver: String,
        id: u64,
        reason: String,
    },
}

struct Shared {
    config: ClusterConfig,
    keys: Keys,
    name: String,
    /// The build's stream first, then one per named task.
    streams: Vec<Served>,
    /// The wire name of the task that runs named calls (0: none).
    named_entry: u64,
    build: String,
    concurrency: usize,
    prefetch: usize,
    processes: Processes,
    local: Mutex<HashMap<Held, Local>>,
    room: Condvar,
    reports: Mutex<Option<Sender<Report>>>,
    stop: AtomicBool,
    done: AtomicU64,
    failed: AtomicU64,
    shift: i64,
    /// The worker processes of the live nodes of this build and of all
    /// live nodes, and the size of the nodes set, as of the last
    /// heartbeat: `FETCH` splits by them (see `proto::FETCH`).
    seen: Mutex<(usize, usize, usize)>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || STOP_SIGNAL.load(Ordering::Relaxed)
    }

    fn report(&self, r: Report) {
        if let Some(tx) = lock(&self.reports).as_ref() {
            let _ = tx.send(r);
        }
    }
}

/// A worker node serving one queue.
///
/// # Examples
///
/// A node is normally this program started with `CREW_WORKER=redis://…`;
/// see [`run_if_node`]. Started by hand (Redis must be running):
///
/// ```no_run
/// let node = crew_redis::Node::start(crew_redis::ClusterConfig::new("redis://127.0.0.1:6379"), 4)?;
/// node.serve()?; // until SIGTERM
/// # Ok::<(), crew_core::Error>(())
/// ```
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl Node {
    /// Connects, joins the queue's consumer group for this build, and
    /// starts `concurrency` worker processes; 0 lets the node choose, as a
    /// node started with no `CREW_CONCURRENCY` does (the CPUs of its host
    /// that the queue's live nodes there do not use yet, at least 1; see
    /// [`ENV_CONCURRENCY`]), and as [`LocalRedis::spawn_node`](crate::LocalRedis::spawn_node)
    /// reads 0.
    ///
    /// # Errors
    ///
    /// `is_io` if Redis cannot be reached within 30 s; `is_invalid_input`
    /// for a bad URL, or a `CREW_PREFETCH` that is not a whole number.
    pub fn start(config: ClusterConfig, concurrency: usize) -> Result<Node> {
        Node::start_with(config, concurrency, None)
    }

    /// [`Node::start`], also serving the tasks `named` lists by name, for
    /// drivers of any build that register them with the same signature.
    ///
    /// # Errors
    ///
    /// As [`Node::start`].
    pub fn start_with(
        config: ClusterConfig,
        concurrency: usize,
        named: Option<NamedTasks>,
    ) -> Result<Node> {
        Node::start_sized(config, (concurrency > 0).then_some(concurrency), named)
    }

    /// [`Node::start_with`]; with `concurrency` `None`, the node runs as
    /// many worker processes as its host has CPUs that the queue's live
    /// nodes there do not use yet, at least 1 (see [`ENV_CONCURRENCY`]).
    fn start_sized(
        config: ClusterConfig,
        concurrency: Option<usize>,
        named: Option<NamedTasks>,
    ) -> Result<Node> {
        let prefetch = env_count(crate::config::ENV_PREFETCH, 0, 0, "")?;
        let keys = Keys::new(&config.queue);
        let build = crew_process::remote::fingerprint();
        let mut streams = vec![Served {
            key: keys.tasks(build),
            named: None,
        }];
        let mut named_entry = 0;
        if let Some(n) = named {
            let mut seen = std::collections::HashSet::new();
            for t in (n.list)() {
                let key = keys.named(&t.name, t.fingerprint);
                if seen.insert(key.clone()) {
                    streams.push(Served {
                        key,
                        named: Some(t),
                    });
                }
            }
            named_entry = (n.entry)();
        }
        let mut link = config.link(Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        ensure_groups(&mut link, &keys, &streams, deadline)?;
        let name = consumer_name();
        let concurrency = match concurrency {
            Some(n) => n.max(1),
            None => host_share(&mut link, &config, &keys, &name, build, deadline)?,
        };
        let processes = Processes::with_config(ProcessConfig {
            workers: concurrency,
            ..ProcessConfig::default()
        })?;
        // SAFETY: a plain signal disposition change; the handler only
        // stores to an atomic.
        unsafe {
            libc::signal(
                libc::SIGTERM,
                on_stop_signal as *const () as libc::sighandler_t,
            );
        }
        Ok(Node {
            shared: Arc::new(Shared {
                keys,
                name,
                streams,
                named_entry,
                build: format!("{build:016x}"),
                concurrency,
                prefetch,
                processes,
                local: Mutex::new(HashMap::new()),
                room: Condvar::new(),
                reports: Mutex::new(None),
                stop: AtomicBool::new(false),
                done: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                shift: proto::clock_shift(),
                seen: Mutex::new((0, 0, 0)),
                config,
            }),
        })
    }

    /// This node's consumer name (`host:pid:nonce`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many worker processes this node runs: the count it was given,
    /// or the one it chose (given 0).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = crew_redis::ClusterConfig::new("redis://127.0.0.1:6379");
    /// let node = crew_redis::Node::start(config, 0)?; // the node chooses
    /// println!("{} worker processes", node.concurrency());
    /// # Ok::<(), crew_core::Error>(())
    /// ```
    pub fn concurrency(&self) -> usize {
        self.shared.concurrency
    }

    /// Serves until SIGTERM or SIGINT, then finishes the tasks it holds and
    /// returns.
    ///
    /// # Errors
    ///
    /// `is_io` if a thread cannot start.
    pub fn serve(self) -> Result<()> {
        let shared = self.shared;
        let (tx, rx) = mpsc::channel();
        *lock(&shared.reports) = Some(tx);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(f)
                .map_err(|e| Error::io("starting a node thread", e))
        };
        // Heartbeat first, so drivers count this node as soon as it reads.
        let mut keeper_link = shared.config.link(Duration::from_secs(10))?;
        let _ = keep_once(&shared, &mut keeper_link, false);
        let reporter = {
            let s = shared.clone();
            spawn("crew-node-report", Box::new(move || report_loop(&s, rx)))?
        };
        let keeper = {
            let s = shared.clone();
            spawn(
                "crew-node-keep",
                Box::new(move || keep_loop(&s, keeper_link)),
            )?
        };
        {
            let s = shared.clone();
            spawn("crew-node-cancel", Box::new(move || listen_loop(&s)))?;
        }
        fetch_loop(&shared)?;
        // SHUTDOWN: wait for the tasks we hold, then let the reporter drain.
        {
            let mut local = lock(&shared.local);
            while !local.is_empty() {
                local = shared
                    .room
                    .wait_timeout(local, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        shared.stop.store(true, Ordering::SeqCst);
        *lock(&shared.reports) = None;
        let _ = reporter.join();
        let _ = keeper.join();
        shared.processes.close();
        Ok(())
    }
}

/// The worker processes of a node told none, reserved in its hash at once
/// (`proto::RESERVE`): the CPUs of this host that the queue's live nodes
/// here do not use yet, at least 1. A node of this host whose process is
/// gone (killed; its hash lives on for three heartbeats) uses none: a node
/// restarted in its place gets its CPUs back.
fn host_share(
    link: &mut Link,
    config: &ClusterConfig,
    keys: &Keys,
    name: &str,
    build: u64,
    deadline: Instant,
) -> Result<usize> {
    let host = hostname();
    let names: Vec<String> = link.call_until(deadline, "reading the nodes", |con| {
        redis::cmd("SMEMBERS").arg(keys.nodes()).query(con)
    })?;
    let seen: Vec<(Option<String>, Option<u32>)> = if names.is_empty() {
        Vec::new()
    } else {
        link.call_until(deadline, "reading the nodes", |con| {
            let mut pipe = redis::pipe();
            for n in &names {
                pipe.cmd("HMGET")
                    .arg(keys.node(n))
                    .arg(node_fields::HOST)
                    .arg(node_fields::PID);
            }
            pipe.query(con)
        })?
    };
    let gone: Vec<&String> = names
        .iter()
        .zip(&seen)
        .filter(|(_, (h, pid))| h.as_deref() == Some(host.as_str()) && pid.is_some_and(is_gone))
        .map(|(n, _)| n)
        .collect();
    let hb_ttl = (config.heartbeat * 3).as_millis() as u64;
    let script = redis::Script::new(proto::RESERVE);
    link.call_until(deadline, "sizing the node to its host", |con| {
        let mut inv = script.key(keys.nodes());
        inv.key(keys.node(name))
            .arg(keys.node_prefix())
            .arg(&host)
            .arg(crew_core::cpu_count())
            .arg(hb_ttl)
            .arg(format!("{build:016x}"))
            .arg(std::process::id())
            .arg(name);
        for n in &gone {
            inv.arg(*n);
        }
        inv.invoke::<usize>(con)
    })
}

/// True if no process `pid` runs on this machine (or it is this very
/// process: an earlier node that had our pid is gone).
fn is_gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks that the
    // process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Creates the consumer group of each stream the node serves (if needed),
/// lists the streams for `status`, and records what each named stream
/// serves.
fn ensure_groups(
    link: &mut Link,
    keys: &Keys,
    streams: &[Served],
    deadline: Instant,
) -> Result<()> {
    link.call_until(deadline, "creating the consumer groups", |con| {
        for s in streams {
            crate::driver::create_group(con, keys, &s.key)?;
            if let Some(t) = &s.named {
                redis::cmd("HSET")
                    .arg(keys.signatures())
                    .arg(stream_id(&s.key))
                    .arg(format!("{}: {}", t.name, t.signature))
                    .query::<()>(con)?;
            }
        }
        Ok(())
    })
}

/// The last part of a stream's key: a build fingerprint or a named
/// task's id, in hex.
pub(crate) fn stream_id(key: &str) -> &str {
    key.rsplit(':').next().unwrap_or_default()
}

/// How many entries a node holds: one per worker process, plus
/// `CREW_PREFETCH` (default 0). Without prefetch a task never waits behind
/// another on a busy node while another node idles, and a task not yet
/// started stays in Redis, where `cancel_pending` can still take it back;
/// with it, many short tasks submitted one by one pay fewer round trips.
fn capacity(shared: &Shared) -> usize {
    shared.concurrency + shared.prefetch
}

// FETCH: read new entries while there is room.
fn fetch_loop(shared: &Arc<Shared>) -> Result<()> {
    let mut link = shared.config.link(Duration::from_secs(5))?;
    let stop = || shared.stopping();
    let fetch = redis::Script::new(proto::FETCH);
    // The last blocking read ended with nothing: the stream had nothing
    // new for us, and the next blocking read returns at once with what
    // comes; `FETCH` before it would only ask again (an idle node makes
    // one round trip per 500 ms, not two).
    let mut idle = false;
    while !shared.stopping() {
        let (want, free) = {
            let mut local = lock(&shared.local);
            while local.len() >= capacity(shared) && !shared.stopping() {
                local = shared
                    .room
                    .wait_timeout(local, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            (
                capacity(shared).saturating_sub(local.len()),
                shared.concurrency.saturating_sub(local.len()),
            )
        };
        if want == 0 {
            continue;
        }
        // With prefetch, take a fair share of what waits first (one round
        // trip, no blocking); block only when nothing waits, and then for
        // no more than the free worker processes.
        if want > free && !idle {
            let held = lock(&shared.local).len();
            let got = link.call(&stop, |con| {
                let mut inv = fetch.key(shared.keys.nodes());
                for s in &shared.streams {
                    inv.key(&s.key);
                }
                inv.arg(GROUP)
                    .arg(&shared.name)
                    .arg(free)
                    .arg(want)
                    .arg(held)
                    .arg(shared.concurrency)
                    .arg(shared.keys.node_prefix())
                    .arg(&shared.build);
                let (build, all, members) = *lock(&shared.seen);
                inv.arg(build).arg(all).arg(members).invoke::<Value>(con)
            });
            match got {
                None => break,
                Some(Ok(v)) => {
                    let (waiting, read) = match reply::array(&v).split_first() {
                        Some((w, rest)) => (
                            reply::string(w)
                                .and_then(|w| w.parse::<u64>().ok())
                                .unwrap_or(0),
                            reply::read_reply_by_stream(&Value::Array(rest.to_vec())),
                        ),
                        None => (0, Vec::new()),
                    };
                    let took = !read.is_empty();
                    for (key, e) in read {
                        if let Some(at) = shared.streams.iter().position(|s| s.key == key) {
                            accept(shared, &mut link, at, e);
                        }
                    }
                    if took {
                        continue;
                    }
                    if waiting > 0 {
                        // Entries wait, and this node holds its share of
                        // them with every worker busy: wait for one to
                        // finish (or for the share to change) instead of
                        // taking more from the other nodes.
                        let local = lock(&shared.local);
                        let _ = shared
                            .room
                            .wait_timeout(local, Duration::from_millis(20))
                            .unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                }
                Some(Err(e)) if e.to_string().contains("NOGROUP") => {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    ensure_groups(&mut link, &shared.keys, &shared.streams, deadline)?;
                    continue;
                }
                Some(Err(e)) => {
                    eprintln!("crew node {}: reading tasks: {e}", shared.name);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let want = want.min(free.max(1));
        // One read over every stream served (COUNT is per stream: with
        // named tasks a read may bring more than `want`; the surplus waits
        // in the node's process pool).
        let read = link.call(&stop, |con| {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(GROUP)
                .arg(&shared.name)
                .arg("COUNT")
                .arg(want)
                .arg("BLOCK")
                .arg(500)
                .arg("STREAMS");
            for s in &shared.streams {
                cmd.arg(&s.key);
            }
            for _ in &shared.streams {
                cmd.arg(">");
            }
            cmd.query::<Value>(con)
        });
        idle = false;
        match read {
            None => break,
            Some(Ok(v)) => {
                let read = reply::read_reply_by_stream(&v);
                idle = read.is_empty();
                for (key, e) in read {
                    if let Some(at) = shared.streams.iter().position(|s| s.key == key) {
                        accept(shared, &mut link, at, e);
                    }
                }
            }
            Some(Err(e)) if e.code() == Some("NOGROUP") => {
                // A stream or its group is gone (Redis restarted without
                // its data, or someone deleted it): make them again.
                let deadline = Instant::now() + Duration::from_secs(30);
                ensure_groups(&mut link, &shared.keys, &shared.streams, deadline)?;
            }
            Some(Err(e)) => {
                eprintln!("crew node {}: reading tasks: {e}", shared.name);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Takes an entry of stream `at`: runs it, or sends it to the dead-letter
/// stream if it cannot be read or is not what its stream serves.
fn accept(shared: &Arc<Shared>, link: &mut Link, at: usize, (entry, fields): Entry) {
    let msg = match reply::field(&fields, "t") {
        None => Err("the entry has no task field `t`".to_owned()),
        Some(t) if t.len() > shared.config.max_entry_bytes => Err(format!(
            "the entry has {} bytes, more than the limit of {}",
            t.len(),
            shared.config.max_entry_bytes
        )),
        // The version first: another version's layout may not decode.
        Some(t) if t.first().is_some_and(|&v| v != proto::VERSION) => Err(format!(
            "the entry is of protocol version {}, this node speaks {}",
            t[0],
            proto::VERSION
        )),
        Some(t) => match postcard::from_bytes::<TaskMsg>(t) {
            Ok(m) if m.version == proto::VERSION => {
                let serves = shared.streams[at].named.as_ref();
                match (&m.named, serves) {
                    (None, None) => Ok(m),
                    (Some((n, f)), Some(t)) if *n == t.name && *f == t.fingerprint => Ok(m),
                    (Some((n, _)), _) => Err(format!(
                        "the entry calls task `{n}` by name, which this stream does not serve"
                    )),
                    (None, Some(t)) => Err(format!(
                        "the entry is not a call by name, but its stream serves task `{}`",
                        t.name
                    )),
                }
            }
            Ok(m) => Err(format!(
                "the entry is of protocol version {}, this node speaks {}",
                m.version,
                proto::VERSION
            )),
            Err(e) => Err(format!("the entry cannot be decoded: {e}")),
        },
    };
    let msg = match msg {
        Ok(m) => m,
        Err(reason) => {
            dead_letter(shared, link, at, &entry, &fields, &reason);
            // Tell its driver, if the entry says who that is.
            let header = reply::field(&fields, "t")
                .and_then(|t| postcard::take_from_bytes::<proto::Header>(t).ok());
            if let Some(((_, driver, id), _)) = header {
                shared.report(Report::Refused { driver, id, reason });
            }
            return;
        }
    };
    run(shared, (at, entry), msg);
}

fn dead_letter(
    shared: &Shared,
    link: &mut Link,
    at: usize,
    entry: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
    reason: &str,
) {
    eprintln!(
        "crew node {}: entry {entry} to the dead-letter stream: {reason}",
        shared.name
    );
    let stop = || shared.stopping();
    let stream = &shared.streams[at].key;
    let _ = link.call(&stop, |con| {
        let mut add = redis::cmd("XADD");
        add.arg(shared.keys.dead())
            .arg("*")
            .arg("reason")
            .arg(reason)
            .arg("stream")
            .arg(stream)
            .arg("entry")
            .arg(entry)
            .arg("node")
            .arg(&shared.name);
        for (k, v) in fields {
            // The original entry, kept whole unless huge.
            if v.len() <= 1 << 20 {
                add.arg(k.as_slice()).arg(v.as_slice());
            }
        }
        redis::pipe()
            .add_command(add)
            .cmd("XACK")
            .arg(stream)
            .arg(GROUP)
            .arg(entry)
            .cmd("XDEL")
            .arg(stream)
            .arg(entry)
            .query::<()>(con)
    });
}

fn run(shared: &Arc<Shared>, entry: Held, msg: TaskMsg) {
    {
        let mut local = lock(&shared.local);
        if local.contains_key(&entry) {
            return; // already ours (reclaimed back): it is running here
        }
        local.insert(
            entry.clone(),
            Local {
                driver: msg.driver.clone(),
                id: msg.id,
                handle: None,
            },
        );
    }
    let on_start: Option<Box<dyn FnOnce() + Send>> = if msg.notify_start {
        let s = shared.clone();
        let (driver, id) = (msg.driver.clone(), msg.id);
        Some(Box::new(move || s.report(Report::Started { driver, id })))
    } else {
        None
    };
    let on_done = {
        let s = shared.clone();
        let (entry, driver, id) = (entry.clone(), msg.driver.clone(), msg.id);
        Box::new(move |outcome| {
            s.report(Report::Done {
                entry,
                driver,
                id,
                outcome,
            })
        })
    };
    let job = RawJob {
        entry: if entry.0 == 0 {
            msg.entry
        } else {
            shared.named_entry
        },
        input: msg.input,
        timeout: msg.timeout_ms.map(Duration::from_millis),
        retries: msg.retries,
        backoff: Duration::from_millis(msg.backoff_ms),
        spans: msg.spans,
        on_start,
        on_done,
    };
    // SAFETY: entries of the build's stream name tasks of this very build:
    // the stream's key carries the build fingerprint, and drivers write only
    // to the stream of their own fingerprint (see README.md, "Trust":
    // whoever may write to the queue's keys on Redis may run this build's
    // tasks). Entries of a named task's stream run this build's own
    // trampoline, which decodes a `NamedCall` and checks it against the
    // registry (`accept` checked the name and fingerprint already).
    // On a closed pool `run_raw` fails and `on_done` reports the job
    // cancelled: nothing more to do here.
    if let Ok(handle) = unsafe { shared.processes.run_raw(job) }
        && let Some(l) = lock(&shared.local).get_mut(&entry)
    {
        l.handle = Some(handle);
    }
}

// REPORT: start notices and results, batched into one round trip.
fn report_loop(shared: &Arc<Shared>, rx: Receiver<Report>) {
    let Ok(mut link) = shared.config.link(Duration::from_secs(10)) else {
        return;
    };
    let finish = redis::Script::new(proto::FINISH);
    let notify = redis::Script::new(NOTIFY);
    // Keep trying while the node is up; once it stops, give Redis a while.
    let give_up = Mutex::new(None::<Instant>);
    let stop = || {
        if !shared.stopping() {
            return false;
        }
        let mut g = lock(&give_up);
        let at = *g.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
        Instant::now() >= at
    };
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let mut finished = Vec::new();
        for r in batch {
            match r {
                Report::Started { driver, id } => {
                    let note = Note::Started {
                        id,
                        node: shared.name.clone(),
                    };
                    let bytes = postcard::to_allocvec(&note).expect("a note encodes");
                    pipe.invoke_script(notify.key(shared.keys.results(&driver)).arg(bytes));
                }
                Report::Dead { driver, id, reason } => {
                    let e = Error::worker_lost(reason);
                    let note = done_note(shared, id, RawOutcome::Failed(ErrorWire::from(&e)));
                    let bytes = postcard::to_allocvec(&note).expect("a note encodes");
                    pipe.invoke_script(notify.key(shared.keys.results(&driver)).arg(bytes));
                }
                Report::Refused { driver, id, reason } => {
                    let e = Error::protocol(format!(
                        "a node refused the task (it is in the dead-letter stream): {reason}"
                    ));
                    let note = done_note(shared, id, RawOutcome::Failed(ErrorWire::from(&e)));
                    let bytes = postcard::to_allocvec(&note).expect("a note encodes");
                    pipe.invoke_script(notify.key(shared.keys.results(&driver)).arg(bytes));
                }
                Report::Done {
                    entry,
                    driver,
                    id,
                    outcome,
                } => {
                    let failed = matches!(outcome, RawOutcome::Failed(_));
                    // The outcome moves into the note: a chunk's output is
                    // not copied on its way out.
                    let note = done_note(shared, id, outcome);
                    let bytes = postcard::to_allocvec(&note).expect("a note encodes");
                    pipe.invoke_script(
                        finish
                            .key(&shared.streams[entry.0].key)
                            .key(shared.keys.results(&driver))
                            .arg(GROUP)
                            .arg(&shared.name)
                            .arg(&entry.1)
                            .arg(bytes),
                    );
                    finished.push((entry, failed));
                }
            }
        }
        // A pipeline runs scripts by hash only: when Redis does not know
        // them (first use, or it restarted), load them and send again. The
        // failed pipeline ran none of its scripts (each one failed alone,
        // with NOSCRIPT), so sending again repeats nothing.
        let sent = link.call(&stop, |con| match pipe.query::<Vec<Value>>(con) {
            Err(e) if e.to_string().to_ascii_lowercase().contains("noscript") => {
                finish.load(con)?;
                notify.load(con)?;
                pipe.query::<Vec<Value>>(con)
            }
            other => other,
        });
        if let Some(Err(e)) = &sent {
            eprintln!("crew node {}: reporting results: {e}", shared.name);
        }
        let mut local = lock(&shared.local);
        for (entry, failed) in finished {
            local.remove(&entry);
            if failed {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(local);
        shared.room.notify_all();
    }
}

/// Adds a note to a driver's result stream if that stream still exists.
/// KEYS: result stream. ARGV: note.
const NOTIFY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[1])
  return 1
end
return 0
"#;

fn done_note(shared: &Shared, id: u64, outcome: RawOutcome) -> Note {
    Note::Done {
        id,
        node: shared.name.clone(),
        concurrency: shared.concurrency as u32,
        shift: shared.shift,
        outcome,
    }
}

// KEEP: heartbeat, leases, reclaim.
fn keep_loop(shared: &Arc<Shared>, mut link: Link) {
    let mut next = Instant::now();
    while !(shared.stop.load(Ordering::Relaxed)) {
        next += shared.config.heartbeat;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
        let reclaim = !shared.stopping();
        if let Err(e) = keep_once(shared, &mut link, reclaim) {
            eprintln!("crew node {}: keeping leases: {e}", shared.name);
        }
    }
    // Leaving: drop the heartbeat so that drivers stop counting us.
    let _ = link.call(&|| true, |con| {
        redis::pipe()
            .cmd("DEL")
            .arg(shared.keys.node(&shared.name))
            .cmd("SREM")
            .arg(shared.keys.nodes())
            .arg(&shared.name)
            .query::<()>(con)
    });
}

fn keep_once(shared: &Arc<Shared>, link: &mut Link, reclaim: bool) -> Result<()> {
    let stop = || shared.stop.load(Ordering::Relaxed);
    let hb_ttl = (shared.config.heartbeat * 3).as_millis() as u64;
    let held: Vec<Held> = lock(&shared.local).keys().cloned().collect();
    let running = held.len();
    let named: Vec<&str> = shared.streams[1..]
        .iter()
        .map(|s| stream_id(&s.key))
        .collect();
    let fields: Vec<(&str, String)> = vec![
        (node_fields::BUILD, shared.build.clone()),
        (node_fields::HOST, hostname()),
        (node_fields::PID, std::process::id().to_string()),
        (node_fields::CONCURRENCY, shared.concurrency.to_string()),
        (node_fields::CPUS, crew_core::cpu_count().to_string()),
        (node_fields::RUNNING, running.to_string()),
        (
            node_fields::DONE,
            shared.done.load(Ordering::Relaxed).to_string(),
        ),
        (
            node_fields::FAILED,
            shared.failed.load(Ordering::Relaxed).to_string(),
        ),
        (node_fields::STARTED, started_at().to_string()),
        (node_fields::NAMED, named.join(",")),
    ];
    let renew = redis::Script::new(proto::RENEW);
    // One RENEW per stream holding entries (the first, with the heartbeat,
    // always).
    let mut lost: Vec<Held> = Vec::new();
    for (at, served) in shared.streams.iter().enumerate() {
        let ids: Vec<&String> = held
            .iter()
            .filter(|(i, _)| *i == at)
            .map(|(_, id)| id)
            .collect();
        if at > 0 && ids.is_empty() {
            continue;
        }
        let beat: &[(&str, String)] = if at == 0 { &fields } else { &[] };
        match link.call(&stop, |con| {
            let mut inv = renew.key(&served.key);
            inv.key(shared.keys.node(&shared.name))
                .key(shared.keys.nodes())
                .arg(GROUP)
                .arg(&shared.name)
                .arg(hb_ttl)
                .arg(shared.keys.node_prefix())
                .arg(&shared.build)
                .arg(beat.len());
            for (k, v) in beat {
                inv.arg(*k).arg(v);
            }
            for id in &ids {
                inv.arg(*id);
            }
            inv.invoke::<(Vec<String>, usize, usize, usize)>(con)
        }) {
            Some(Ok((l, build, all, members))) => {
                if !beat.is_empty() {
                    *lock(&shared.seen) = (build, all, members);
                }
                lost.extend(l.into_iter().map(|id| (at, id)));
            }
            Some(Err(e)) => return Err(redis_error("renewing leases", e)),
            None => return Ok(()),
        }
    }
    // Entries no longer ours ran (or run) elsewhere: stop ours; its result
    // would be dropped anyway.
    for held in lost {
        let handle = lock(&shared.local)
            .get(&held)
            .and_then(|l| l.handle.clone());
        if let Some(h) = handle {
            h.cancel();
        }
    }
    if !reclaim {
        return Ok(());
    }
    for at in 0..shared.streams.len() {
        recover_own(shared, link, at, hb_ttl)?;
        reclaim_stream(shared, link, at, hb_ttl)?;
    }
    Ok(())
}

/// Runs `RECLAIM` on stream `at`: takes the entries of dead or stalled
/// nodes, and tells the drivers of those dead-lettered.
fn reclaim_stream(shared: &Arc<Shared>, link: &mut Link, at: usize, hb_ttl: u64) -> Result<()> {
    let stop = || shared.stop.load(Ordering::Relaxed);
    let script = redis::Script::new(proto::RECLAIM);
    let got = link.call(&stop, |con| {
        script
            .key(&shared.streams[at].key)
            .key(shared.keys.dead())
            .key(shared.keys.nodes())
            .key(shared.keys.stats())
            .arg(GROUP)
            .arg(&shared.name)
            .arg(shared.config.lease.as_millis() as u64)
            .arg(shared.config.max_deliveries)
            .arg(100)
            .arg(shared.keys.node_prefix())
            .arg(hb_ttl)
            .invoke::<Value>(con)
    });
    let v = match got {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(redis_error("reclaiming tasks", e)),
        None => return Ok(()),
    };
    for item in reply::array(&v) {
        let [kind, id, fields, reason] = reply::array(item) else {
            continue;
        };
        let (Some(kind), Some(id), Some(reason)) = (
            reply::string(kind),
            reply::string(id),
            reply::string(reason),
        ) else {
            continue;
        };
        let fields = reply::fields(fields);
        if kind == "dead" {
            eprintln!(
                "crew node {}: entry {id} to the dead-letter stream: {reason}",
                shared.name
            );
            if let Some(msg) =
                reply::field(&fields, "t").and_then(|t| postcard::from_bytes::<TaskMsg>(t).ok())
            {
                shared.report(Report::Dead {
                    driver: msg.driver,
                    id: msg.id,
                    reason,
                });
            }
        } else {
            accept(shared, link, at, (id, fields));
        }
    }
    Ok(())
}

/// Takes back entries Redis delivered to this node that never reached it:
/// a connection cut after `XREADGROUP` moved them into our pending list but
/// before we read the reply. Nobody else would take them (we are alive and
/// renewing), so we run them now. An entry idle for less than `min_idle_ms`
/// may still be on its way through the fetcher, and is left alone.
fn recover_own(shared: &Arc<Shared>, link: &mut Link, at: usize, min_idle_ms: u64) -> Result<()> {
    let stop = || shared.stop.load(Ordering::Relaxed);
    let stream = &shared.streams[at].key;
    let pending = match link.call(&stop, |con| {
        redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg("IDLE")
            .arg(min_idle_ms)
            .arg("-")
            .arg("+")
            .arg(100)
            .arg(&shared.name)
            .query::<Value>(con)
    }) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(redis_error("reading our pending entries", e)),
        None => return Ok(()),
    };
    let lost: Vec<String> = {
        let local = lock(&shared.local);
        reply::array(&pending)
            .iter()
            .filter_map(|p| reply::array(p).first().and_then(reply::string))
            .filter(|id| !local.contains_key(&(at, id.clone())))
            .collect()
    };
    if lost.is_empty() {
        return Ok(());
    }
    let got = link.call(&stop, |con| {
        redis::cmd("XCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(&shared.name)
            .arg(0)
            .arg(lost.as_slice())
            .query::<Value>(con)
    });
    if let Some(Ok(v)) = got {
        for e in reply::array(&v).iter().filter_map(reply::entry) {
            accept(shared, link, at, e);
        }
    }
    Ok(())
}

fn started_at() -> u64 {
    static AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

// LISTEN: cancel requests.
fn listen_loop(shared: &Arc<Shared>) {
    let Ok(sub) = crate::Subscriber::new(
        &shared.config.url,
        shared.config.tls_ca.as_deref(),
        &shared.keys.cancel_channel(),
    ) else {
        return;
    };
    let sub = sub.poll(Duration::from_millis(500));
    sub.run(
        || shared.stop.load(Ordering::Relaxed),
        |payload| {
            if let Ok(c) = postcard::from_bytes::<CancelMsg>(payload) {
                cancel_local(shared, &c);
            }
        },
    );
}

fn cancel_local(shared: &Shared, c: &CancelMsg) {
    let handles: Vec<RawHandle> = lock(&shared.local)
        .values()
        .filter(|l| l.driver == c.driver && c.ids.contains(&l.id))
        .filter_map(|l| l.handle.clone())
        .collect();
    for h in handles {
        h.cancel();
    }
}
