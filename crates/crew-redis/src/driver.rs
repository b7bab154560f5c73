//! The driver side: [`Cluster`], the back-end of `Pool::cluster` and
//! `Executor::cluster`. Jobs become entries of the queue's task stream (one
//! per call, one per map chunk); results come back on this driver's own
//! result stream, each taken once by task id (a duplicate or late result
//! finds no waiting task and is dropped).
//!
//! Threads: the *sender* writes entries, cancels and deletions, many per
//! round trip; the *receiver* reads the result stream and completes the
//! tasks. Each has its own connection and reconnects on its own; the
//! receiver resumes after the last result it read, so a dropped connection
//! loses nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use crew_core::engine::{Chunk, ChunkOut, ChunkSink};
use crew_core::{Backend, Call, Error, Promise, Result, Runs, Timeline};
use crew_process::remote::{self, RawInput, RawOutcome};
use redis::Value;

use crate::config::{ClusterConfig, GROUP, Keys};
use crate::link::Link;
use crate::proto::{self, CancelMsg, Note, TaskMsg};
use crate::reply;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const TERMINATED: u8 = 2;

/// The caller's half of a job: how its outcome reaches the caller.
trait Completion: Send {
    /// The task started on a node; false if it was cancelled meanwhile.
    fn started(&mut self, hook: Arc<dyn Fn() + Send + Sync>) -> bool;
    /// The task ended.
    fn finish(&mut self, outcome: RawOutcome, at: &Placement<'_>);
}

/// Where a result came from, to place its spans in the timeline.
struct Placement<'a> {
    /// The index of the node's first worker among all workers seen.
    base: usize,
    /// The node's clock shift minus ours.
    shift: i64,
    timeline: Option<&'a Timeline>,
}

impl Placement<'_> {
    fn instant(&self, ns: u64) -> Instant {
        remote::instant_of((ns as i64).saturating_add(self.shift).max(0) as u64)
    }
}

/// A job of the cluster back-end: a task's wire name, its encoded input,
/// and where its outcome goes. Built by the back-end's `Runs` impl; opaque
/// to everyone else.
pub struct ClusterJob<'s> {
    entry: u64,
    /// A call by name: where it goes instead of the build's stream.
    named: Option<Route>,
    input: RawInput,
    notify_start: bool,
    completion: Option<Box<dyn Completion + 's>>,
}

impl std::fmt::Debug for ClusterJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterJob")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl ClusterJob<'_> {
    fn settled() -> Self {
        ClusterJob {
            entry: 0,
            named: None,
            input: RawInput::Call(Vec::new()),
            notify_start: false,
            completion: None,
        }
    }
}

/// The stream of a named task, for calls by name from any build.
#[derive(Clone, Debug)]
struct Route {
    name: String,
    fingerprint: u64,
    /// `name: (args) -> result`, for `status`.
    describe: String,
    key: String,
}

/// A task whose entry is in Redis: its id, its stream (`None`: the
/// build's) and its entry.
type Written = (u64, Option<String>, String);

struct Slot {
    completion: Box<dyn Completion>,
    /// The entry as written, and where: sent again if Redis loses it.
    sent: (Arc<Vec<u8>>, Option<Route>),
    /// The named task's stream, or `None` for the build's.
    stream: Option<String>,
    /// The stream entry, once written.
    entry: Option<String>,
    /// Handed to Redis in a batch whose reply has not been read yet: a
    /// node may already run it, but `entry` is not known until the reply.
    sending: bool,
    started: bool,
}

enum Out {
    Task(u64, Arc<Vec<u8>>, Option<Route>),
    Cancel(Vec<u64>),
    /// Entries of a stream (`None`: the build's).
    Delete(Option<String>, Vec<String>),
}

pub(crate) struct Shared {
    config: ClusterConfig,
    keys: Keys,
    name: String,
    /// This machine's name, as nodes report theirs (see `proto::WORKERS`).
    host: String,
    stream: String,
    results: String,
    build: String,
    state: AtomicU8,
    slots: Mutex<HashMap<u64, Slot>>,
    /// Signalled whenever a slot is removed.
    emptied: Condvar,
    out: Mutex<VecDeque<Out>>,
    out_ready: Condvar,
    next_id: AtomicU64,
    workers: AtomicUsize,
    /// Of `workers`, how many can run at once (see `proto::WORKERS`).
    parallel: AtomicUsize,
    timeline: Option<Arc<Timeline>>,
    shift: i64,
    /// The first worker index of each node seen (for the timeline).
    nodes: Mutex<(HashMap<String, usize>, usize)>,
    threads: AtomicUsize,
    /// For the calls made from the caller's thread (`cancel_pending`).
    control: Mutex<Link>,
}

impl Shared {
    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn send(&self, out: Out) {
        lock(&self.out).push_back(out);
        self.out_ready.notify_one();
    }

    /// True when the threads may end: terminated, or closed with nothing
    /// left to wait for.
    fn finished(&self) -> bool {
        match self.state() {
            TERMINATED => true,
            CLOSED => lock(&self.slots).is_empty() && lock(&self.out).is_empty(),
            _ => false,
        }
    }

    fn interrupt_hook(self: &Arc<Self>, id: u64) -> Arc<dyn Fn() + Send + Sync> {
        let weak = Arc::downgrade(self);
        Arc::new(move || {
            if let Some(s) = weak.upgrade() {
                s.send(Out::Cancel(vec![id]));
            }
        })
    }

    fn base_of(&self, node: &str, concurrency: usize) -> usize {
        let mut g = lock(&self.nodes);
        let (map, next) = &mut *g;
        if let Some(&b) = map.get(node) {
            return b;
        }
        let b = *next;
        *next += concurrency.max(1);
        map.insert(node.to_owned(), b);
        b
    }
}

/// Workers on many machines, through Redis: the back-end of
/// `Pool::cluster` and `Executor::cluster`.
///
/// Tasks are the same as on a process pool (a fn item or a closure that
/// captures nothing, serde arguments and result); they run on worker nodes,
/// which are this same program started with `CREW_WORKER=redis://…` on any
/// machine (see [`run_if_node`](crate::run_if_node)). Only nodes of the
/// same build take them. Cloning gives another handle to the same driver.
///
/// # Examples
///
/// ```no_run
/// use crew_core::{Backend, Unary, engine::{MapOptions, map_blocking}};
/// let cluster = crew_redis::Cluster::new(crew_redis::ClusterConfig::new("redis://127.0.0.1:6379"))?;
/// let v = map_blocking(&cluster, Unary(|x: u32| x * 3), vec![1, 2, 3], &MapOptions::default()).unwrap();
/// assert_eq!(v, [3, 6, 9]);
/// # Ok::<(), crew_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Cluster {
    owner: Arc<Owner>,
}

/// Closes the driver when the last handle goes: queued tasks still finish
/// (their results have nowhere to go, but nothing is cut short), then the
/// threads end.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.shared.state() == OPEN {
            self.shared.state.store(CLOSED, Ordering::Release);
        }
        self.shared.out_ready.notify_all();
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.owner.shared;
        f.debug_struct("Cluster")
            .field("queue", &s.config.queue)
            .field("driver", &s.name)
            .field("workers", &s.workers.load(Ordering::Relaxed))
            .field("parallel", &s.parallel.load(Ordering::Relaxed))
            .finish()
    }
}

impl Cluster {
    /// Connects to the cluster `config` names, creates its task stream for
    /// this build (tasks wait there until a node comes), and starts the
    /// driver's two threads.
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for a bad URL; `is_io` if Redis cannot be reached
    /// within 30 s or refuses (authentication, ACL).
    pub fn new(config: ClusterConfig) -> Result<Cluster> {
        let keys = Keys::new(&config.queue);
        let build = remote::fingerprint();
        let stream = keys.tasks(build);
        let host = crate::node::hostname();
        let name = format!(
            "{}:{}:{:08x}",
            host,
            std::process::id(),
            next_driver_nonce()
        );
        let results = keys.results(&name);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut link = config.link(Duration::from_secs(10))?;
        let last: String = link.call_until(deadline, "creating the queue", |con| {
            create_group(con, &keys, &stream)?;
            // The result stream exists (empty) from now on: nodes write
            // results only to streams that exist, so a driver that is gone
            // gets none.
            let (id,): (String,) = redis::pipe()
                .cmd("XADD")
                .arg(&results)
                .arg("*")
                .arg("hello")
                .arg(1)
                .query(con)?;
            redis::cmd("XDEL").arg(&results).arg(&id).query::<()>(con)?;
            Ok(id)
        })?;
        let shared = Arc::new(Shared {
            timeline: config.timeline.then(|| Arc::new(Timeline::new())),
            keys,
            name,
            host,
            stream,
            results,
            build: format!("{build:016x}"),
            state: AtomicU8::new(OPEN),
            slots: Mutex::new(HashMap::new()),
            emptied: Condvar::new(),
            out: Mutex::new(VecDeque::new()),
            out_ready: Condvar::new(),
            next_id: AtomicU64::new(1),
            workers: AtomicUsize::new(0),
            parallel: AtomicUsize::new(0),
            shift: proto::clock_shift(),
            nodes: Mutex::new((HashMap::new(), 0)),
            threads: AtomicUsize::new(2),
            control: Mutex::new(config.link(Duration::from_secs(10))?),
            config,
        });
        refresh_workers(&shared, &mut link);
        let s = shared.clone();
        std::thread::Builder::new()
            .name("crew-cluster-send".into())
            .spawn(move || send_loop(&s, link))
            .map_err(|e| Error::io("starting the cluster sender", e))?;
        let s = shared.clone();
        let rlink = shared.config.link(Duration::from_secs(10))?;
        std::thread::Builder::new()
            .name("crew-cluster-receive".into())
            .spawn(move || receive_loop(&s, rlink, last))
            .map_err(|e| Error::io("starting the cluster receiver", e))?;
        Ok(Cluster {
            owner: Arc::new(Owner { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// The settings this driver runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared().config
    }

    /// The worker processes of live nodes of this build, as of the last
    /// look (the driver looks every heartbeat); may be 0.
    pub fn live_workers(&self) -> usize {
        self.shared().workers.load(Ordering::Acquire)
    }

    /// Of [`live_workers`](Cluster::live_workers), how many can run at the
    /// same time: on each host, no more than the CPUs there, however many
    /// nodes share it, and on this driver's own host no more than its CPUs
    /// less one (at least 1), which the driver takes itself: it encodes
    /// and decodes every item of a map. A map of known length cuts its
    /// chunks by this number, so nodes that outnumber the CPUs they can
    /// use add no chunks (and no Redis entries) that could not run in
    /// parallel anyway. May be 0 (no live node).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # mod crew { pub use crew_core::{Error, Result}; pub mod cluster { pub use crew_redis::*; } }
    /// use std::time::Duration;
    /// let cluster = crew::cluster::Cluster::new(crew::cluster::ClusterConfig::new("redis://127.0.0.1:6379"))?;
    /// if cluster.wait_for_workers(1, Duration::from_secs(10)) {
    ///     // Three nodes of 2 workers on one 4-CPU host: 6 workers, 4 at once
    ///     // (3 if this driver runs on that host too).
    ///     println!("{} workers, {} at once", cluster.live_workers(), cluster.live_parallelism());
    /// }
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn live_parallelism(&self) -> usize {
        self.shared().parallel.load(Ordering::Acquire)
    }

    /// Waits until live nodes of this build offer at least `n` worker
    /// processes, or `timeout` passes; true if they do.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.live_workers() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Creates a task stream with its consumer group (at `0`, so entries
/// written before any node came are delivered) unless it exists, and lists
/// it among the queue's streams.
pub(crate) fn create_group(
    con: &mut redis::Connection,
    keys: &Keys,
    stream: &str,
) -> redis::RedisResult<()> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }?;
    redis::cmd("SADD")
        .arg(keys.streams())
        .arg(stream)
        .query::<()>(con)
}

fn next_driver_nonce() -> u32 {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    (proto::clock_shift() as u64 ^ remote::monotonic_ns() ^ (n << 24)) as u32
}

impl Backend for Cluster {
    type Job<'s> = ClusterJob<'s>;

    fn workers(&self) -> usize {
        self.live_workers().max(1)
    }

    fn parallelism(&self) -> usize {
        self.live_parallelism().clamp(1, self.workers())
    }

    unsafe fn execute<'s>(&self, job: Self::Job<'s>) -> std::result::Result<(), Self::Job<'s>> {
        let shared = self.shared();
        if shared.state() != OPEN {
            return Err(job);
        }
        let ClusterJob {
            entry,
            named,
            input,
            notify_start,
            completion,
        } = job;
        let Some(completion) = completion else {
            return Ok(()); // settled when built
        };
        // SAFETY: per `Backend::execute`, what the completion borrows for
        // `'s` (a chunk sink) outlives the job; the table only needs the
        // lifetime erased while the job is out.
        let completion: Box<dyn Completion + 'static> = unsafe {
            std::mem::transmute::<Box<dyn Completion + 's>, Box<dyn Completion + 'static>>(
                completion,
            )
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = TaskMsg {
            version: proto::VERSION,
            driver: shared.name.clone(),
            id,
            entry,
            input,
            timeout_ms: shared.config.task_timeout.map(|t| t.as_millis() as u64),
            retries: shared.config.retries,
            backoff_ms: shared.config.retry_backoff.as_millis() as u64,
            spans: shared.timeline.is_some(),
            notify_start,
            named: named.as_ref().map(|r| (r.name.clone(), r.fingerprint)),
        };
        let bytes = Arc::new(postcard::to_allocvec(&msg).expect("a task entry always encodes"));
        lock(&shared.slots).insert(
            id,
            Slot {
                completion,
                sent: (bytes.clone(), named.clone()),
                stream: named.as_ref().map(|r| r.key.clone()),
                entry: None,
                sending: false,
                started: false,
            },
        );
        shared.send(Out::Task(id, bytes, named));
        Ok(())
    }

    fn close(&self) {
        let s = self.shared();
        let _ = s
            .state
            .compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire);
        s.out_ready.notify_all();
        s.emptied.notify_all();
    }

    fn is_closed(&self) -> bool {
        self.shared().state() != OPEN
    }

    fn cancel_pending(&self) -> usize {
        let s = self.shared();
        // Not started as far as we know; but a node may have taken one a
        // moment ago (its start notice is on its way). Ask Redis: an entry
        // no node has taken is deleted, atomically with respect to the
        // nodes' reads; one a node holds is running, or about to.
        // A task whose batch is on its way to Redis may already run on a
        // node: wait (bounded) for its entry, so the check below decides it
        // instead of cancelling a running task.
        let (unsent, written): (Vec<u64>, Vec<Written>) = {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut slots = lock(&s.slots);
            while slots
                .values()
                .any(|slot| !slot.started && slot.sending && slot.entry.is_none())
            {
                match crew_core::engine::wait_deadline(&s.emptied, slots, Some(deadline)) {
                    Ok(g) => slots = g,
                    Err(g) => {
                        slots = g;
                        break;
                    }
                }
            }
            let mut unsent = Vec::new();
            let mut written = Vec::new();
            for (&id, slot) in slots.iter().filter(|(_, slot)| !slot.started) {
                match &slot.entry {
                    None => unsent.push(id),
                    Some(e) => written.push((id, slot.stream.clone(), e.clone())),
                }
            }
            (unsent, written)
        };
        let mut cancel: Vec<u64> = unsent;
        let mut by_stream: HashMap<Option<String>, Vec<(u64, String)>> = HashMap::new();
        for (id, stream, e) in written {
            by_stream.entry(stream).or_default().push((id, e));
        }
        for (stream, written) in by_stream {
            let script = redis::Script::new(proto::CANCEL_WAITING);
            let deadline = Instant::now() + Duration::from_secs(10);
            let key = stream.as_deref().unwrap_or(&s.stream);
            let deleted = lock(&s.control).call_until(deadline, "cancelling tasks", |con| {
                let mut inv = script.key(key);
                inv.arg(GROUP);
                for (_, e) in &written {
                    inv.arg(e);
                }
                inv.invoke::<Vec<String>>(con)
            });
            match deleted {
                Ok(deleted) => cancel.extend(
                    written
                        .iter()
                        .filter(|(_, e)| deleted.contains(e))
                        .map(|(id, _)| *id),
                ),
                // Redis cannot say: cancel them here; a node that runs one
                // anyway has its result dropped.
                Err(_) => cancel.extend(written.iter().map(|(id, _)| *id)),
            }
        }
        let dropped: Vec<Slot> = {
            let mut slots = lock(&s.slots);
            cancel.iter().filter_map(|id| slots.remove(id)).collect()
        };
        let n = dropped.len();
        if n > 0 {
            s.send(Out::Cancel(cancel));
        }
        drop(dropped); // their results complete as cancelled
        s.emptied.notify_all();
        n
    }

    fn terminate(&self) {
        let s = self.shared();
        let all: Vec<(u64, Slot)> = lock(&s.slots).drain().collect();
        if !all.is_empty() {
            let ids = all.iter().map(|(id, _)| *id).collect();
            let mut by_stream: HashMap<Option<String>, Vec<String>> = HashMap::new();
            for (_, slot) in &all {
                if let Some(e) = &slot.entry {
                    by_stream
                        .entry(slot.stream.clone())
                        .or_default()
                        .push(e.clone());
                }
            }
            for (stream, entries) in by_stream {
                s.send(Out::Delete(stream, entries));
            }
            s.send(Out::Cancel(ids));
        }
        s.state.store(TERMINATED, Ordering::Release);
        drop(all);
        s.out_ready.notify_all();
        s.emptied.notify_all();
    }

    fn join(&self, deadline: Option<Instant>) -> bool {
        let s = self.shared();
        let mut slots = lock(&s.slots);
        loop {
            if slots.is_empty() && s.state() != OPEN {
                return true;
            }
            slots = match crew_core::engine::wait_deadline(
                &s.emptied,
                slots,
                Some(
                    deadline.map_or(Instant::now() + Duration::from_millis(100), |d| {
                        d.min(Instant::now() + Duration::from_millis(100))
                    }),
                ),
            ) {
                Ok(g) => g,
                Err(g) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return g.is_empty() && s.state() != OPEN;
                    }
                    g
                }
            };
        }
    }

    fn timeline(&self) -> Option<&Arc<Timeline>> {
        self.shared().timeline.as_ref()
    }
}

// SEND: task entries, cancels and deletions, batched.
fn send_loop(shared: &Arc<Shared>, mut link: Link) {
    let cancel_channel = shared.keys.cancel_channel();
    // The named tasks' streams made ready (created, listed, described).
    let mut ready: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let batch: Vec<Out> = {
            let mut out = lock(&shared.out);
            while out.is_empty() {
                drop(out);
                if shared.finished() {
                    shared.threads.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                out = lock(&shared.out);
                if out.is_empty() {
                    out = shared
                        .out_ready
                        .wait_timeout(out, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            out.drain(..).collect()
        };
        let mut pipe = redis::pipe();
        let mut adds = Vec::new();
        let live: Vec<bool> = {
            let mut slots = lock(&shared.slots);
            batch
                .iter()
                .map(|o| match o {
                    Out::Task(id, _, _) => match slots.get_mut(id) {
                        Some(slot) => {
                            slot.sending = true;
                            true
                        }
                        None => false,
                    },
                    _ => true,
                })
                .collect()
        };
        let new_routes: Vec<&Route> = batch
            .iter()
            .filter_map(|o| match o {
                Out::Task(_, _, Some(r)) if !ready.contains(&r.key) => Some(r),
                _ => None,
            })
            .collect();
        if !new_routes.is_empty() {
            let give_up = Instant::now() + Duration::from_secs(2);
            let stop = || shared.state() == TERMINATED && Instant::now() >= give_up;
            let made = link.call(&stop, |con| {
                for r in &new_routes {
                    create_group(con, &shared.keys, &r.key)?;
                    redis::cmd("HSETNX")
                        .arg(shared.keys.signatures())
                        .arg(crate::node::stream_id(&r.key))
                        .arg(&r.describe)
                        .query::<()>(con)?;
                }
                Ok(())
            });
            if let Some(Ok(())) = made {
                ready.extend(new_routes.iter().map(|r| r.key.clone()));
            }
        }
        for (o, _) in batch.iter().zip(&live).filter(|(_, live)| **live) {
            match o {
                Out::Task(id, bytes, route) => {
                    pipe.cmd("XADD")
                        .arg(route.as_ref().map_or(&shared.stream, |r| &r.key))
                        .arg("*")
                        .arg("t")
                        .arg(bytes.as_slice());
                    adds.push(Some(*id));
                }
                Out::Cancel(ids) => {
                    let msg = CancelMsg {
                        driver: shared.name.clone(),
                        ids: ids.clone(),
                    };
                    let bytes = postcard::to_allocvec(&msg).expect("a cancel encodes");
                    pipe.cmd("PUBLISH").arg(&cancel_channel).arg(bytes);
                    adds.push(None);
                }
                Out::Delete(stream, entries) => {
                    if entries.is_empty() {
                        continue;
                    }
                    pipe.cmd("XDEL")
                        .arg(stream.as_ref().unwrap_or(&shared.stream))
                        .arg(entries.as_slice());
                    adds.push(None);
                }
            }
        }
        // Once terminated, try for a moment only: the cancels are a
        // courtesy to the nodes, nobody waits for them.
        let give_up = Instant::now() + Duration::from_secs(2);
        let stop = || shared.state() == TERMINATED && Instant::now() >= give_up;
        match link.call(&stop, |con| pipe.query::<Vec<Value>>(con)) {
            Some(Ok(replies)) => {
                let mut slots = lock(&shared.slots);
                for (id, reply) in adds.iter().zip(&replies) {
                    if let Some(slot) = id.and_then(|id| slots.get_mut(&id)) {
                        slot.sending = false;
                        slot.entry = reply::string(reply);
                    }
                }
                drop(slots);
                // `cancel_pending` may wait for these entries.
                shared.emptied.notify_all();
            }
            Some(Err(e)) => {
                // Redis refused the batch (not a connection problem): the
                // tasks in it cannot run; say so to their callers.
                let mut slots = lock(&shared.slots);
                for id in adds.iter().flatten() {
                    if let Some(mut slot) = slots.remove(id) {
                        slot.completion.finish(
                            RawOutcome::Failed(remote::ErrorWire::from(&Error::io(
                                "queueing a task on Redis",
                                std::io::Error::other(e.to_string()),
                            ))),
                            &Placement {
                                base: 0,
                                shift: 0,
                                timeline: None,
                            },
                        );
                    }
                }
                drop(slots);
                shared.emptied.notify_all();
            }
            None => {
                // Terminated: nobody learns the entries; stop waiting.
                let mut slots = lock(&shared.slots);
                for id in adds.iter().flatten() {
                    if let Some(slot) = slots.get_mut(id) {
                        slot.sending = false;
                    }
                }
                drop(slots);
                shared.emptied.notify_all();
            }
        }
    }
}

// RECEIVE: results, each delivered once.
fn receive_loop(shared: &Arc<Shared>, mut link: Link, mut last: String) {
    let stop = || shared.finished();
    let mut looked = Instant::now();
    let mut run_id = server_run_id(&mut link);
    let mut unserved = Unserved::default();
    while !shared.finished() {
        let read = link.call(&stop, |con| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(4096)
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(&shared.results)
                .arg(&last)
                .query::<Value>(con)
        });
        let entries = match read {
            None => break,
            Some(Ok(v)) => reply::read_reply(&v),
            Some(Err(e)) => {
                eprintln!("crew cluster driver: reading results: {e}");
                std::thread::sleep(Duration::from_millis(50));
                Vec::new()
            }
        };
        if let Some((id, _)) = entries.last() {
            last = id.clone();
        }
        let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        for (_, fields) in entries {
            if let Some(note) =
                reply::field(&fields, "r").and_then(|r| postcard::from_bytes::<Note>(r).ok())
            {
                handle_note(shared, note);
            }
        }
        if !ids.is_empty() {
            let _ = link.call(&stop, |con| {
                redis::cmd("XDEL")
                    .arg(&shared.results)
                    .arg(ids.as_slice())
                    .query::<()>(con)
            });
        }
        if looked.elapsed() >= shared.config.heartbeat.min(Duration::from_millis(500)) {
            refresh_workers(shared, &mut link);
            let waiting = shared.workers.load(Ordering::Acquire) == 0
                && lock(&shared.slots).values().any(|s| s.stream.is_none());
            if let Some(warning) = unserved.look(waiting, Instant::now(), &shared.config) {
                eprintln!("{warning}");
            }
            if let Some(id) = server_run_id(&mut link) {
                if run_id.as_ref().is_some_and(|old| *old != id) {
                    // Another Redis (restarted, or a replica promoted):
                    // it may have lost what we wrote.
                    last = recover_lost(shared, &mut link).unwrap_or(last);
                }
                run_id = Some(id);
            }
            looked = Instant::now();
        }
    }
    let _ = link.call(&|| true, |con| {
        redis::cmd("DEL").arg(&shared.results).query::<()>(con)
    });
    shared.threads.fetch_sub(1, Ordering::AcqRel);
}

/// How long a driver's tasks may wait with no live node of its build on
/// its queue before it says so on stderr, in heartbeats.
const UNSERVED_HEARTBEATS: u32 = 10;

/// Tells, once per stretch, that this driver's tasks wait and no live node
/// of its build is on its queue: most often a node started on another
/// queue (a `CREW_QUEUE` that differs) or not started at all, which would
/// otherwise look like a hang.
#[derive(Debug, Default)]
struct Unserved {
    /// Since when tasks have waited with no node, if they do.
    since: Option<Instant>,
    /// Said for this stretch already.
    told: bool,
}

impl Unserved {
    /// One look: `waiting` is true if tasks of this build wait and no live
    /// node of the build is on the queue. Returns the warning to print,
    /// once a stretch has lasted [`UNSERVED_HEARTBEATS`].
    fn look(&mut self, waiting: bool, now: Instant, config: &ClusterConfig) -> Option<String> {
        if !waiting {
            *self = Unserved::default();
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let waited = now.duration_since(since);
        if self.told || waited < config.heartbeat * UNSERVED_HEARTBEATS {
            return None;
        }
        self.told = true;
        let queue = &config.queue;
        Some(format!(
            "crew cluster driver: tasks have waited {:.0} s on queue `{queue}` and no live node of this \
             build serves it: start this same program with CREW_WORKER=<the Redis URL> and \
             CREW_QUEUE={queue} (drivers and nodes must name the same queue); \
             `crew status <the Redis URL> --queue {queue}` shows the queue's nodes",
            waited.as_secs_f64()
        ))
    }
}

/// The `run_id` of the Redis server: another one after every restart, and
/// on a replica promoted in a failover.
fn server_run_id(link: &mut Link) -> Option<String> {
    let stop = || true;
    match link.call(&stop, |con| {
        redis::cmd("INFO").arg("server").query::<String>(con)
    }) {
        Some(Ok(info)) => info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|v| v.trim().to_owned()),
        _ => None,
    }
}

/// After Redis changed under us (a restart without all its data, a
/// failover that lost writes): makes our result stream again, and sends
/// again every task we wait for whose entry Redis no longer has. A task
/// that did run is at worst run twice; its result is taken once. Returns
/// the id to read results after.
fn recover_lost(shared: &Arc<Shared>, link: &mut Link) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stop = || Instant::now() >= deadline || shared.state() == TERMINATED;
    let written: Vec<(u64, Option<String>, String)> = lock(&shared.slots)
        .iter()
        .filter_map(|(&id, slot)| Some((id, slot.stream.clone(), slot.entry.clone()?)))
        .collect();
    let script = redis::Script::new(MISSING);
    let mut lost: Vec<u64> = Vec::new();
    let mut by_stream: HashMap<Option<String>, Vec<(u64, String)>> = HashMap::new();
    for (id, stream, e) in written {
        by_stream.entry(stream).or_default().push((id, e));
    }
    for (stream, entries) in by_stream {
        let key = stream.as_deref().unwrap_or(&shared.stream);
        let missing = link.call(&stop, |con| {
            let mut inv = script.key(key);
            for (_, e) in &entries {
                inv.arg(e);
            }
            inv.invoke::<Vec<String>>(con)
        });
        if let Some(Ok(missing)) = missing {
            lost.extend(
                entries
                    .iter()
                    .filter(|(_, e)| missing.contains(e))
                    .map(|(id, _)| *id),
            );
        }
    }
    let fresh = link.call(&stop, |con| {
        create_group(con, &shared.keys, &shared.stream)?;
        let id: String = redis::cmd("XADD")
            .arg(&shared.results)
            .arg("*")
            .arg("hello")
            .arg(1)
            .query(con)?;
        redis::cmd("XDEL")
            .arg(&shared.results)
            .arg(&id)
            .query::<()>(con)?;
        Ok(())
    });
    if !lost.is_empty() {
        eprintln!(
            "crew cluster driver: Redis changed (restart or failover); sending {} lost task(s) again",
            lost.len()
        );
    }
    let again: Vec<Out> = {
        let mut slots = lock(&shared.slots);
        lost.into_iter()
            .filter_map(|id| {
                let slot = slots.get_mut(&id)?;
                slot.entry = None;
                let (bytes, route) = slot.sent.clone();
                Some(Out::Task(id, bytes, route))
            })
            .collect()
    };
    for out in again {
        shared.send(out);
    }
    // Results are read again from the start of the stream: those read
    // before were deleted, and a duplicate finds no waiting task.
    matches!(fresh, Some(Ok(()))).then(|| "0-0".to_owned())
}

/// The entry ids (ARGV) that the stream (KEYS[1]) no longer holds.
const MISSING: &str = r#"
local out = {}
for i = 1, #ARGV do
  if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1) == 0 then
    table.insert(out, ARGV[i])
  end
end
return out
"#;

fn refresh_workers(shared: &Shared, link: &mut Link) {
    let script = redis::Script::new(proto::WORKERS);
    if let Some(Ok((workers, parallel))) = link.call(&|| true, |con| {
        script
            .key(shared.keys.nodes())
            .arg(shared.keys.node_prefix())
            .arg(&shared.build)
            .arg(&shared.host)
            .invoke::<(usize, usize)>(con)
    }) {
        // `parallel` first: a reader that sees the new worker count sees
        // the parallelism of the same look.
        shared.parallel.store(parallel, Ordering::Release);
        shared.workers.store(workers, Ordering::Release);
    }
}

fn handle_note(shared: &Arc<Shared>, note: Note) {
    match note {
        Note::Started { id, .. } => {
            let mut slots = lock(&shared.slots);
            let Some(slot) = slots.get_mut(&id) else {
                return;
            };
            if slot.started {
                return; // started again elsewhere after a reclaim
            }
            slot.started = true;
            if !slot.completion.started(shared.interrupt_hook(id)) {
                // Cancelled while it waited: stop it on its node.
                slots.remove(&id);
                drop(slots);
                shared.send(Out::Cancel(vec![id]));
                shared.emptied.notify_all();
            }
        }
        Note::Done {
            id,
            node,
            concurrency,
            shift,
            outcome,
        } => {
            let Some(mut slot) = lock(&shared.slots).remove(&id) else {
                return; // a duplicate, or the caller stopped waiting
            };
            let at = Placement {
                base: shared.base_of(&node, concurrency as usize),
                shift: shift - shared.shift,
                timeline: shared.timeline.as_deref(),
            };
            slot.completion.finish(outcome, &at);
            drop(slot);
            shared.emptied.notify_all();
        }
    }
}

/// The completion of a single call.
struct CallCompletion<R: Send> {
    promise: Option<Promise<Result<R>>>,
    number: Option<usize>,
    /// The task's name, for the timeline.
    name: &'static str,
}

impl<R: Send + DeserializeOwned> Completion for CallCompletion<R> {
    fn started(&mut self, hook: Arc<dyn Fn() + Send + Sync>) -> bool {
        let Some(p) = &self.promise else {
            return false;
        };
        // The hook goes in first, so a `cancel()` that sees the task running
        // always finds it.
        p.set_interrupt(Some(hook));
        p.start()
    }

    fn finish(&mut self, outcome: RawOutcome, at: &Placement<'_>) {
        let Some(p) = self.promise.take() else {
            return;
        };
        match outcome {
            RawOutcome::Call { output, worker } => {
                let worker = at.base + worker as usize;
                let (result, span) = remote::decode_call::<R>(&output);
                if let (Some(t), Some((start, end)), Some(n)) = (at.timeline, span, self.number) {
                    t.record(worker, n, self.name, at.instant(start), at.instant(end));
                }
                p.complete(result.map_err(|e| e.with_worker(worker)));
            }
            RawOutcome::Failed(e) => p.fail(e.into_error()),
            RawOutcome::Cancelled => p.cancelled(),
            RawOutcome::Chunk { .. } => p.fail(Error::protocol(
                "a node answered a call with a chunk's outcome",
            )),
        }
    }
}

/// The completion of a map chunk.
struct ChunkCompletion<'s, R> {
    sink: Option<ChunkSink<'s, R>>,
    /// The task's name, for the timeline.
    name: &'static str,
    len: usize,
    sent: Instant,
}

impl<R: Send + DeserializeOwned> Completion for ChunkCompletion<'_, R> {
    fn started(&mut self, _hook: Arc<dyn Fn() + Send + Sync>) -> bool {
        self.sink.as_ref().is_some_and(|s| !s.is_cancelled())
    }

    fn finish(&mut self, outcome: RawOutcome, at: &Placement<'_>) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        match outcome {
            RawOutcome::Chunk { segments, lost } => {
                let worker = at.base + segments.first().map_or(0, |s| s.worker as usize);
                let d = remote::decode_chunk::<R>(self.len, segments, lost);
                if let Some(t) = at.timeline {
                    for &(pos, start, end) in &d.spans {
                        t.record(
                            worker,
                            sink.offset() + pos,
                            self.name,
                            at.instant(start),
                            at.instant(end),
                        );
                    }
                }
                let errors = d
                    .errors
                    .into_iter()
                    .map(|(i, e)| (i, e.with_worker(worker)))
                    .collect();
                sink.deliver(ChunkOut::new(
                    self.len,
                    d.values,
                    errors,
                    self.sent.elapsed(),
                ));
            }
            RawOutcome::Failed(e) => sink.fail(e.into_error()),
            RawOutcome::Cancelled => sink.fail(Error::cancelled()),
            RawOutcome::Call { .. } => sink.fail(Error::protocol(
                "a node answered a chunk with a call's outcome",
            )),
        }
    }
}

impl<'s, T, X, R> Runs<'s, T, X, R> for Cluster
where
    T: Call<X, R> + crew_process::NonCapturing + Send + Sync + 'static,
    X: Serialize + DeserializeOwned + Send + 's,
    R: Serialize + DeserializeOwned + Send + 's,
{
    fn call_job(&self, task: T, input: X, promise: Promise<Result<R>>) -> ClusterJob<'s> {
        let entry = remote::call_task::<T, X, R>(&task);
        let name = task.name().and_then(crew_core::task_name).unwrap_or("call");
        let by_name = task.by_name();
        let _ = task;
        let encoded = remote::encode(&input).and_then(|bytes| {
            if !by_name {
                return Ok((bytes, None));
            }
            // A call by name goes to the stream of its name and signature,
            // which nodes of every build that registers them serve.
            let call: remote::NamedCall = remote::decode(&bytes)?;
            let route = Route {
                key: self.shared().keys.named(&call.name, call.fingerprint),
                describe: format!("{}: {}", call.name, call.signature),
                name: call.name,
                fingerprint: call.fingerprint,
            };
            Ok((bytes, Some(route)))
        });
        match encoded {
            Ok((bytes, named)) => ClusterJob {
                entry: if named.is_some() { 0 } else { entry },
                named,
                input: RawInput::Call(bytes),
                notify_start: true,
                completion: Some(Box::new(CallCompletion {
                    promise: Some(promise),
                    number: self.shared().timeline.as_ref().map(|t| t.next_call()),
                    name,
                })),
            },
            Err(e) => {
                promise.fail(e);
                ClusterJob::settled()
            }
        }
    }

    fn chunk_job(&self, task: Arc<T>, chunk: Chunk<X>, sink: ChunkSink<'s, R>) -> ClusterJob<'s> {
        let entry = remote::chunk_task::<T, X, R>(&*task);
        let name = task.name().and_then(crew_core::task_name).unwrap_or("map");
        drop(task);
        let len = chunk.len();
        let items = remote::encode_items(chunk.as_slice());
        drop(chunk);
        match items {
            Ok(items) => ClusterJob {
                entry,
                named: None,
                input: RawInput::Chunk(items),
                notify_start: false,
                completion: Some(Box::new(ChunkCompletion {
                    sink: Some(sink),
                    name,
                    len,
                    sent: Instant::now(),
                })),
            },
            Err(e) => {
                sink.fail(e);
                ClusterJob::settled()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_with_no_node_on_their_queue_are_told_once_per_stretch() {
        let config = ClusterConfig::new("redis://127.0.0.1:6379")
            .queue("imgaes")
            .heartbeat(Duration::from_millis(100));
        let stretch = config.heartbeat * UNSERVED_HEARTBEATS;
        let t0 = Instant::now();
        let mut u = Unserved::default();
        assert_eq!(u.look(true, t0, &config), None, "not before the stretch");
        assert_eq!(u.look(true, t0 + stretch / 2, &config), None);
        let told = u.look(true, t0 + stretch, &config).expect("told");
        assert!(told.contains("queue `imgaes`"), "{told}");
        assert!(told.contains("CREW_QUEUE=imgaes"), "{told}");
        assert!(told.contains("crew status"), "{told}");
        assert_eq!(u.look(true, t0 + stretch * 3, &config), None, "once");
        // A node came (or the tasks were done): a later stretch is told again.
        assert_eq!(u.look(false, t0 + stretch * 4, &config), None);
        assert_eq!(u.look(true, t0 + stretch * 5, &config), None);
        assert!(u.look(true, t0 + stretch * 6, &config).is_some());
        // Never told while nothing waits.
        let mut idle = Unserved::default();
        assert_eq!(idle.look(false, t0 + stretch * 100, &config), None);
    }
}
