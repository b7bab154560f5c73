//! A crew node consuming Celery queues on Redis: pops messages into kombu's
//! unacknowledged bookkeeping (one Lua script), runs the named Rust tasks in
//! crash-isolated worker processes, writes Celery results, continues
//! chains, acknowledges, and restores messages of dead consumers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crew_core::{Backend, Call, Error, Result};
use crew_process::remote::{self, RawInput, RawJob, RawOutcome};
use crew_process::{ProcessConfig, Processes};
use crew_redis::Link;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::control;
use super::events::{self, Events};
use super::wire::{self, Message, Outcome, Outgoing, ResultSerializer};
use crate::registry::{self, JsonError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set by SIGTERM: stop taking messages, finish the running ones, exit.
static STOP_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_SIGNAL.store(true, Ordering::SeqCst);
}

/// The settings of a Celery node.
///
/// # Examples
///
/// ```
/// let config = crew::celery::WorkerConfig::new("redis://127.0.0.1:6379/0")
///     .backend("redis://127.0.0.1:6379/1")
///     .queues(["celery", "rust"])
///     .concurrency(4);
/// assert_eq!(config.queues, ["celery", "rust"]);
/// ```
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The broker (`redis://…`).
    pub broker: String,
    /// The result backend (the broker's URL unless set).
    pub backend: String,
    /// The queues to consume, each in all four of kombu's priority lists.
    pub queues: Vec<String>,
    /// Worker processes.
    pub concurrency: usize,
    /// kombu's `visibility_timeout`: a message delivered this long ago and
    /// still unacknowledged, of a consumer that stopped renewing it, is put
    /// back on its queue (default 3600 s, as kombu's).
    pub visibility_timeout: Duration,
    /// How many messages the node holds at most, running or about to run
    /// (Celery's prefetch: `worker_prefetch_multiplier` (4) × concurrency
    /// by default; never fewer than `concurrency`). More takes more
    /// messages per round trip to Redis; fewer leaves more for other
    /// workers on the queue.
    pub prefetch: usize,
    /// How results are written: Celery's `result_serializer` of the
    /// deployment (JSON by default).
    pub result_serializer: ResultSerializer,
    /// Whether the node sends task events (`task-received`, `-started`,
    /// `-succeeded`, `-failed`) from the start, as a Celery worker started
    /// with `-E`; off by default, as in Celery, and switched by `celery
    /// control enable_events` / `disable_events`. Worker events
    /// (heartbeats) are always sent.
    pub task_events: bool,
}

impl WorkerConfig {
    /// A node of `broker`, consuming `celery` with one worker process per
    /// CPU.
    pub fn new(broker: impl Into<String>) -> WorkerConfig {
        let broker = broker.into();
        WorkerConfig {
            backend: broker.clone(),
            broker,
            queues: vec!["celery".into()],
            concurrency: crew_core::cpu_count(),
            visibility_timeout: Duration::from_secs(3600),
            prefetch: 4 * crew_core::cpu_count(),
            task_events: false,
            result_serializer: ResultSerializer::Json,
        }
    }

    /// Sets the result backend's URL.
    #[must_use]
    pub fn backend(mut self, url: impl Into<String>) -> Self {
        self.backend = url.into();
        self
    }

    /// Sets the queues.
    #[must_use]
    pub fn queues<S: Into<String>>(mut self, queues: impl IntoIterator<Item = S>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the number of worker processes (and the prefetch to 4 × `n`);
    /// 0 counts as 1. The default is the CPU count ([`crew::cpu_count`](crate::cpu_count)).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self.prefetch = 4 * self.concurrency;
        self
    }

    /// Sets how many messages the node holds at most (at least
    /// `concurrency`).
    #[must_use]
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Sets how results are written (Celery's `result_serializer`).
    #[must_use]
    pub fn result_serializer(mut self, s: ResultSerializer) -> Self {
        self.result_serializer = s;
        self
    }

    /// Sends task events from the start (`celery worker -E`).
    #[must_use]
    pub fn task_events(mut self, on: bool) -> Self {
        self.task_events = on;
        self
    }

    /// Sets the visibility timeout.
    #[must_use]
    pub fn visibility_timeout(mut self, t: Duration) -> Self {
        self.visibility_timeout = t;
        self
    }
}

/// What a worker process is given: a task name, its JSON arguments, and
/// its soft time limit in seconds.
#[derive(Serialize, Deserialize, Debug)]
struct JsonCall {
    name: String,
    args: String,
    kwargs: String,
    soft: Option<f64>,
}

/// The task a worker process runs for a Celery message.
#[derive(Clone, Copy, Debug)]
struct RunByName;

impl Call<JsonCall, std::result::Result<String, JsonError>> for RunByName {
    fn call(&self, c: JsonCall) -> std::result::Result<String, JsonError> {
        let Some(entry) = registry::lookup(&c.name) else {
            return Err(JsonError {
                exc_type: "NotRegistered".into(),
                exc_module: "celery.exceptions".into(),
                message: c.name,
            });
        };
        let args: Vec<Value> = serde_json::from_str(&c.args)
            .map_err(|e| JsonError::type_error(format!("args: {e}")))?;
        let kwargs = serde_json::from_str(&c.kwargs)
            .map_err(|e| JsonError::type_error(format!("kwargs: {e}")))?;
        let _soft = super::limits::SoftLimit::start(c.soft);
        entry.call_json(args, kwargs).map(|v| v.to_string())
    }
}

type JobOut = std::result::Result<String, JsonError>;

struct Shared {
    config: WorkerConfig,
    keys: Vec<String>,
    /// The list the wake-up moves a message into (see `wire::TAKING`).
    taking_key: String,
    /// The broker's and the backend's database numbers when both are on
    /// the same Redis server: results, next tasks, acknowledgements and
    /// events then go in one pipeline on one connection.
    same_server: Option<(i64, i64)>,
    hostname: String,
    processes: Processes,
    /// Delivery tags this node holds (running, or waiting for their eta).
    held: Mutex<HashSet<String>>,
    /// Held by the fetch loop from taking messages until they are in
    /// `held`, and by KEEP while it restores: a message just taken is never
    /// mistaken for one a dead consumer left.
    taking: Mutex<()>,
    running: Mutex<usize>,
    room: Condvar,
    stop: AtomicBool,
    events: Events,
    processed: std::sync::atomic::AtomicU64,
    /// What each running task is, by delivery tag (`celery inspect active`).
    active: Mutex<HashMap<String, Value>>,
    /// Tasks taken but not started, by delivery tag: whether each waits for
    /// its eta, and what it is (`celery inspect reserved`, `scheduled`).
    waiting: Mutex<HashMap<String, (bool, Value)>>,
    /// How many tasks of each name ended (`celery inspect stats`).
    totals: Mutex<HashMap<String, u64>>,
    started: std::time::Instant,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || STOP_SIGNAL.load(Ordering::Relaxed)
    }
}

struct Done {
    msg: Message,
    /// When the node took it.
    t0: std::time::Instant,
    /// `None`: the task never ran (the node is closing); the message stays
    /// unacknowledged, to be restored.
    outcome: Option<Outcome>,
}

/// A crew node serving Celery queues.
///
/// Tasks are the functions registered with `#[crew::task(name = "…")]`
/// under their Celery names; each message runs in one of the node's worker
/// processes.
///
/// # Examples
///
/// ```no_run
/// #[crew::task(name = "tasks.add")]
/// fn add(x: i64, y: i64) -> i64 { x + y }
///
/// let config = crew::celery::WorkerConfig::new("redis://127.0.0.1:6379/0").concurrency(2);
/// crew::celery::Worker::start(config)?.serve()?; // until SIGTERM
/// # Ok::<(), crew::Error>(())
/// ```
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("hostname", &self.shared.hostname)
            .field("queues", &self.shared.config.queues)
            .finish()
    }
}

impl Worker {
    /// Starts the worker processes and checks that the broker answers.
    ///
    /// # Errors
    ///
    /// `is_io` if Redis cannot be reached within 30 s; `is_invalid_input`
    /// for a bad URL or no queue.
    pub fn start(config: WorkerConfig) -> Result<Worker> {
        if config.queues.is_empty() {
            return Err(Error::invalid_input("a Celery node needs a queue"));
        }
        let mut link = Link::open(&config.broker, Duration::from_secs(10))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        link.call_until(deadline, "reaching the Celery broker", |con| {
            redis::cmd("PING").query::<()>(con)
        })?;
        let processes = Processes::with_config(ProcessConfig {
            workers: config.concurrency.max(1),
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
        let keys = config
            .queues
            .iter()
            .flat_map(|q| wire::STEPS.iter().map(move |&s| wire::queue_key(q, s)))
            .collect();
        let hostname = format!("crew@{}.{}", super::hostname(), std::process::id());
        let same_server = same_server(&config.broker, &config.backend);
        Ok(Worker {
            shared: Arc::new(Shared {
                taking_key: format!("{}.{hostname}", wire::TAKING),
                same_server,
                keys,
                processes,
                held: Mutex::new(HashSet::new()),
                taking: Mutex::new(()),
                running: Mutex::new(0),
                room: Condvar::new(),
                stop: AtomicBool::new(false),
                events: Events::start(hostname.clone(), &config.broker, config.task_events)?,
                processed: std::sync::atomic::AtomicU64::new(0),
                active: Mutex::new(HashMap::new()),
                waiting: Mutex::new(HashMap::new()),
                totals: Mutex::new(HashMap::new()),
                started: std::time::Instant::now(),
                hostname,
                config,
            }),
        })
    }

    /// The node's Celery hostname (`crew@host.pid`).
    pub fn hostname(&self) -> &str {
        &self.shared.hostname
    }

    /// Serves until SIGTERM, then finishes the tasks it runs and returns
    /// (messages waiting for their eta stay unacknowledged, to be restored).
    ///
    /// # Errors
    ///
    /// `is_io` if a thread cannot start or a connection cannot open.
    pub fn serve(self) -> Result<()> {
        let shared = self.shared;
        let (tx, rx) = mpsc::channel::<Done>();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(f)
                .map_err(|e| Error::io("starting a node thread", e))
        };
        let reporter = {
            let s = shared.clone();
            let broker = Link::open(&s.config.broker, Duration::from_secs(10))?;
            let backend = Link::open(&s.config.backend, Duration::from_secs(10))?;
            spawn(
                "crew-celery-report",
                Box::new(move || report_loop(&s, rx, broker, backend)),
            )?
        };
        let keeper = {
            let s = shared.clone();
            let link = Link::open(&s.config.broker, Duration::from_secs(10))?;
            spawn("crew-celery-keep", Box::new(move || keep_loop(&s, link)))?
        };
        let controller = {
            let s = shared.clone();
            let link = Link::open(&s.config.broker, Duration::from_secs(10))?;
            spawn(
                "crew-celery-control",
                Box::new(move || control_loop(&s, link)),
            )?
        };
        shared.events.send("worker-online", worker_fields(&shared));
        let r = fetch_loop(&shared, &tx);
        {
            let mut running = lock(&shared.running);
            while *running > 0 {
                running = shared
                    .room
                    .wait_timeout(running, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        drop(tx);
        let _ = reporter.join();
        shared.stop.store(true, Ordering::SeqCst);
        let _ = keeper.join();
        let _ = controller.join();
        // This node's taking list is empty now (or, should Redis have been
        // out of reach, put back by another node's KEEP): let it go.
        if let Ok(mut link) = Link::open(&shared.config.broker, Duration::from_secs(5)) {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let _ = link.call(&|| std::time::Instant::now() >= deadline, |con| {
                redis::cmd("DEL")
                    .arg(wire::alive_key(&shared.taking_key))
                    .query::<()>(con)
            });
        }
        shared.events.send("worker-offline", worker_fields(&shared));
        shared.events.close();
        shared.processes.close();
        r
    }
}

fn fetch_loop(shared: &Arc<Shared>, tx: &Sender<Done>) -> Result<()> {
    let mut link = Link::open(&shared.config.broker, Duration::from_secs(5))?;
    let script = redis::Script::new(wire::FETCH);
    let stop = || shared.stopping();
    let workers = shared.config.concurrency.max(1);
    let prefetch = shared.config.prefetch.max(workers);
    // Take messages in batches of about half the prefetch (one per script
    // call otherwise, as each task ends), but never leave a worker idle.
    let batch = (prefetch / 2).min(prefetch - workers + 1).max(1);
    // Messages taken (in kombu's unacked hash, renewed by KEEP) whose eta
    // is still ahead, and those ready to run once a worker is free.
    let mut later: Vec<Message> = Vec::new();
    let mut ready: VecDeque<Message> = VecDeque::new();
    let mut idle = Duration::ZERO;
    let mut blocking = true;
    // A message the wake-up moved into this node's taking list and that
    // the next script call records as unacknowledged.
    let mut to_book = false;
    // This node's taking list, known to the others (which put back what a
    // dead node's list holds), alive while KEEP renews it.
    let registered = link.call(&stop, |con| {
        redis::pipe()
            .cmd("HSET")
            .arg(wire::TAKING)
            .arg(&shared.taking_key)
            .arg(&shared.keys[0])
            .ignore()
            .cmd("SET")
            .arg(wire::alive_key(&shared.taking_key))
            .arg(1)
            .arg("PX")
            .arg(alive_ms(shared))
            .ignore()
            .query::<()>(con)
    });
    if let Some(Err(e)) = registered {
        eprintln!(
            "crew celery node {}: registering: {e}; waiting without taking",
            shared.hostname
        );
        blocking = false;
    }
    while !shared.stopping() {
        let now = wire::now();
        while let Some(i) = later.iter().position(|m| m.eta.is_some_and(|t| t <= now)) {
            let m = later.swap_remove(i);
            if let Some(w) = lock(&shared.waiting).get_mut(&m.tag) {
                w.0 = false;
            }
            ready.push_back(m);
        }
        while !ready.is_empty() && *lock(&shared.running) < workers {
            if let Some(m) = ready.pop_front() {
                lock(&shared.waiting).remove(&m.tag);
                dispatch(shared, tx, m);
            }
        }
        // Take up to `prefetch` messages ahead, in one script call.
        let mut want = prefetch.saturating_sub(ready.len() + *lock(&shared.running));
        if want < batch {
            if to_book {
                // No room for more, but what the wake-up took is recorded.
                want = 0;
            } else {
                let running = lock(&shared.running);
                if *running >= workers {
                    let _ = shared
                        .room
                        .wait_timeout(running, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner());
                }
                continue;
            }
        }
        // While the queues stay empty, a plain EXISTS (a microsecond of
        // Redis time) asks whether to run the script (tens of them). KEEP
        // waits while messages are taken and not yet in `held`, or it could
        // put them back as abandoned.
        let taking = lock(&shared.taking);
        let popped = link.call(&stop, |con| {
            if idle > Duration::ZERO
                && !to_book
                && redis::cmd("EXISTS").arg(&shared.keys).query::<u64>(con)? == 0
            {
                return Ok(Vec::new());
            }
            script
                .key(&shared.taking_key)
                .key(&shared.keys)
                .arg(wire::now())
                .arg(want)
                .invoke::<Vec<Vec<u8>>>(con)
        });
        if matches!(popped, Some(Ok(_))) {
            to_book = false;
        }
        match popped {
            None => break,
            Some(Ok(raws)) if !raws.is_empty() => {
                // Fewer than asked for: the queues are empty now, so the
                // next look is the cheap EXISTS, not the script.
                idle = if raws.len() < want {
                    Duration::from_nanos(1)
                } else {
                    Duration::ZERO
                };
                for raw in raws {
                    take(shared, &mut link, raw, false, &mut later, &mut ready);
                }
            }
            Some(Ok(_)) if want == 0 => {}
            Some(Ok(_)) => {
                drop(taking);
                // Nothing queued: wait for a message on the first list
                // (the first queue's default priority) and take it in the
                // wake-up itself: BLMOVE moves it into this node's taking
                // list, where it stays (restorable, should the node die)
                // until the next script call records it in kombu's unacked
                // hash; it runs at once. The other lists are looked at
                // again after at most `idle` (1 ms, growing to 20 ms while
                // the queues stay empty). Before Redis 6.2 (no BLMOVE) the
                // node polls instead.
                idle = idle
                    .mul_f64(1.5)
                    .clamp(Duration::from_millis(1), Duration::from_millis(20));
                if blocking {
                    // KEEP need not wait: a message taken here is in
                    // `held` before the script records it as unacked.
                    let first = &shared.keys[0];
                    let r = link.call(&stop, |con| {
                        redis::cmd("BLMOVE")
                            .arg(first)
                            .arg(&shared.taking_key)
                            .arg("RIGHT")
                            .arg("LEFT")
                            .arg(idle.as_secs_f64())
                            .query::<Option<Vec<u8>>>(con)
                    });
                    match r {
                        Some(Ok(Some(raw))) => {
                            idle = Duration::from_nanos(1);
                            to_book = true;
                            take(shared, &mut link, raw, true, &mut later, &mut ready);
                        }
                        // Redis before 6.2: no BLMOVE.
                        Some(Err(e))
                            if e.kind()
                                == redis::ErrorKind::Server(
                                    redis::ServerErrorKind::ResponseError,
                                ) =>
                        {
                            blocking = false;
                        }
                        _ => {}
                    }
                } else {
                    let running = lock(&shared.running);
                    let _ = shared
                        .room
                        .wait_timeout(running, idle)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            Some(Err(e)) => {
                drop(taking);
                eprintln!("crew celery node {}: reading tasks: {e}", shared.hostname);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // What the wake-up took is recorded, and what was taken but not
    // started goes back now.
    if to_book {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let r = link.call(&|| std::time::Instant::now() >= deadline, |con| {
            script
                .key(&shared.taking_key)
                .key(&shared.keys)
                .arg(wire::now())
                .arg(0)
                .invoke::<Vec<Vec<u8>>>(con)
        });
        if let Some(Err(e)) = r {
            eprintln!("crew celery node {}: recording: {e}", shared.hostname);
        }
    }
    later.extend(ready);
    if !later.is_empty() {
        give_back(shared, &mut link, &later);
    }
    Ok(())
}

/// The database numbers of `broker` and `backend` if both are on one Redis
/// server (same address and credentials).
fn same_server(broker: &str, backend: &str) -> Option<(i64, i64)> {
    use redis::IntoConnectionInfo as _;
    let a = broker.into_connection_info().ok()?;
    let b = backend.into_connection_info().ok()?;
    let (ra, rb) = (a.redis_settings(), b.redis_settings());
    (a.addr() == b.addr()
        && ra.username() == rb.username()
        && ra.password() == rb.password()
        && ra.protocol() == rb.protocol())
    .then(|| (ra.db(), rb.db()))
}

/// How long this node's taking list stays its own without KEEP renewing
/// it (the visibility timeout, at least a second).
fn alive_ms(shared: &Shared) -> u64 {
    (shared.config.visibility_timeout.as_millis() as u64).max(1000)
}

/// A message just taken (by the script, or by the wake-up: `woke`): held,
/// and queued to run now or at its eta; one that cannot be read is
/// dropped.
fn take(
    shared: &Shared,
    link: &mut Link,
    raw: Vec<u8>,
    woke: bool,
    later: &mut Vec<Message>,
    ready: &mut VecDeque<Message>,
) {
    match Message::parse(&raw) {
        Ok(mut m) => {
            shared.events.send_task_event(
                "task-received",
                serde_json::json!({
                    "uuid": m.id,
                    "name": m.task,
                    "args": Value::Array(m.args.clone()).to_string(),
                    "kwargs": Value::Object(m.kwargs.clone()).to_string(),
                    "retries": m.headers.get("retries").cloned().unwrap_or(0.into()),
                    "eta": m.headers.get("eta"),
                    "expires": m.headers.get("expires"),
                    "root_id": m.header("root_id"),
                    "parent_id": m.header("parent_id"),
                }),
            );
            if woke {
                m.woke = Some(raw);
            }
            lock(&shared.held).insert(m.tag.clone());
            let eta = m.eta.is_some_and(|t| t > wire::now());
            lock(&shared.waiting).insert(m.tag.clone(), (eta, active_info(shared, &m)));
            if eta {
                later.push(m);
            } else {
                ready.push_back(m);
            }
        }
        Err(reason) => reject(shared, link, &raw, woke, &reason),
    }
}

/// Puts messages this node took but will not run (waiting for their eta at
/// shutdown) back on their queues now, as kombu does at shutdown, rather
/// than after the visibility timeout.
fn give_back(shared: &Shared, link: &mut Link, msgs: &[Message]) {
    let restore = redis::Script::new(wire::RESTORE);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = link.call(&|| std::time::Instant::now() >= deadline, |con| {
        let mut p = redis::pipe();
        for m in msgs {
            p.cmd("ZADD")
                .arg(wire::UNACKED_INDEX)
                .arg("XX")
                .arg(0)
                .arg(&m.tag)
                .ignore();
        }
        p.query::<()>(con)?;
        restore.arg(0).arg(&shared.taking_key).invoke::<u64>(con)
    });
    if let Some(Err(e)) = r {
        eprintln!(
            "crew celery node {}: giving back {} message(s): {e}",
            shared.hostname,
            msgs.len()
        );
    }
    for m in msgs {
        lock(&shared.held).remove(&m.tag);
        lock(&shared.waiting).remove(&m.tag);
    }
}

/// A message that cannot be read: logged and acknowledged (kombu would
/// fail the same way on it), so it cannot block the queue; one the wake-up
/// took (`woke`) leaves the taking list too.
fn reject(shared: &Shared, link: &mut Link, raw: &[u8], woke: bool, reason: &str) {
    eprintln!(
        "crew celery node {}: dropping a message: {reason}: {}",
        shared.hostname,
        String::from_utf8_lossy(&raw[..raw.len().min(300)])
    );
    if woke {
        let _ = link.call(&|| shared.stopping(), |con| {
            redis::cmd("LREM")
                .arg(&shared.taking_key)
                .arg(1)
                .arg(raw)
                .query::<()>(con)
        });
    }
    if let Ok(v) = serde_json::from_slice::<Value>(raw)
        && let Some(tag) = v
            .pointer("/properties/delivery_tag")
            .and_then(Value::as_str)
    {
        let _ = link.call(&|| shared.stopping(), |con| ack(con, tag));
    }
}

fn ack(con: &mut redis::Connection, tag: &str) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("ZREM")
        .arg(wire::UNACKED_INDEX)
        .arg(tag)
        .ignore()
        .cmd("HDEL")
        .arg(wire::UNACKED)
        .arg(tag)
        .ignore()
        .query(con)
}

fn dispatch(shared: &Arc<Shared>, tx: &Sender<Done>, msg: Message) {
    let finish = |msg: Message, outcome: Outcome| {
        *lock(&shared.running) += 1;
        let _ = tx.send(Done {
            msg,
            t0: std::time::Instant::now(),
            outcome: Some(outcome),
        });
    };
    if let Some(exp) = msg.expires
        && exp <= wire::now()
    {
        finish(msg, Outcome::Revoked("expired".into()));
        return;
    }
    if let Some(err) = msg.refused.clone() {
        let tb = format!("crew task {}: {err}\n", msg.task);
        finish(msg, Outcome::Failure(err, tb));
        return;
    }
    // Only the hard limit kills; the task sees the soft one (earlier, or
    // alone) through `crew::celery::soft_limit_exceeded`.
    let limit = msg.hard;
    let input = JsonCall {
        name: msg.task.clone(),
        args: Value::Array(msg.args.clone()).to_string(),
        kwargs: Value::Object(msg.kwargs.clone()).to_string(),
        soft: msg.soft.filter(|s| limit.is_none_or(|h| *s < h)),
    };
    let input = match remote::encode(&input) {
        Ok(b) => b,
        Err(e) => {
            let err = JsonError {
                exc_type: "ValueError".into(),
                exc_module: "builtins".into(),
                message: e.to_string(),
            };
            finish(msg, Outcome::Failure(err, String::new()));
            return;
        }
    };
    *lock(&shared.running) += 1;
    lock(&shared.active).insert(msg.tag.clone(), active_info(shared, &msg));
    let tx = tx.clone();
    let t0 = std::time::Instant::now();
    let on_start = {
        let s = shared.clone();
        let id = msg.id.clone();
        Box::new(move || {
            s.events
                .send_task_event("task-started", serde_json::json!({"uuid": id}))
        })
    };
    let task = msg.task.clone();
    let s = shared.clone();
    let job = RawJob {
        entry: remote::call_task::<RunByName, JsonCall, JobOut>(&RunByName),
        input: RawInput::Call(input),
        timeout: limit.map(Duration::from_secs_f64),
        retries: 0,
        backoff: Duration::ZERO,
        spans: false,
        on_start: Some(on_start),
        on_done: Box::new(move |out: RawOutcome| {
            let outcome = match out {
                RawOutcome::Cancelled => None,
                out => Some(outcome_of(&task, out, limit)),
            };
            let done = Done { msg, t0, outcome };
            // The only task running (one at a time: the round trip that
            // waits for each result): report it here, now. Otherwise REPORT
            // writes what ended together, in fewer round trips.
            if done.outcome.is_some() && *lock(&s.running) == 1 {
                report_here(&s, done, &tx);
            } else {
                let _ = tx.send(done);
            }
        }),
    };
    // SAFETY: the entry was made by `call_task` in this very process, whose
    // worker processes run this executable.
    if let Err(e) = unsafe { shared.processes.run_raw(job) } {
        // The pool is closed: `on_done` hears `Cancelled`, and the message
        // stays unacknowledged for a restore.
        eprintln!("crew celery node {}: {e}", shared.hostname);
    }
}

fn outcome_of(task: &str, out: RawOutcome, limit: Option<f64>) -> Outcome {
    let fail = |exc_type: &str, exc_module: &str, message: String| {
        Outcome::Failure(
            JsonError {
                exc_type: exc_type.into(),
                exc_module: exc_module.into(),
                message: message.clone(),
            },
            format!("crew task {task}: {exc_type}: {message}\n"),
        )
    };
    match out {
        RawOutcome::Call { output, .. } => match remote::decode_call::<JobOut>(&output).0 {
            Ok(Ok(json)) => match serde_json::from_str(&json) {
                Ok(v) => Outcome::Success(v),
                Err(e) => fail("ValueError", "builtins", e.to_string()),
            },
            Ok(Err(e)) => Outcome::Failure(e.clone(), format!("crew task {task}: {e}\n")),
            Err(e) => error_outcome(task, &e, limit),
        },
        RawOutcome::Failed(e) => error_outcome(task, &e.into_error(), limit),
        RawOutcome::Chunk { .. } => fail(
            "RuntimeError",
            "builtins",
            "a chunk came back for a call".into(),
        ),
        RawOutcome::Cancelled => fail(
            "WorkerLostError",
            "billiard.exceptions",
            "the task was cancelled".into(),
        ),
    }
}

fn error_outcome(task: &str, e: &Error, limit: Option<f64>) -> Outcome {
    let (exc_type, exc_module, message) = if e.is_timeout() {
        match limit {
            Some(s) => (
                "TimeLimitExceeded",
                "billiard.exceptions",
                format!("TimeLimitExceeded({s})"),
            ),
            None => ("TimeLimitExceeded", "billiard.exceptions", e.to_string()),
        }
    } else if e.is_worker_lost() {
        ("WorkerLostError", "billiard.exceptions", e.to_string())
    } else {
        ("RuntimeError", "builtins", e.to_string())
    };
    Outcome::Failure(
        JsonError {
            exc_type: exc_type.into(),
            exc_module: exc_module.into(),
            message: message.clone(),
        },
        format!("crew task {task}: {exc_type}: {message}\n"),
    )
}

// REPORT: write the result, continue the chain, acknowledge.
fn report_loop(shared: &Arc<Shared>, rx: Receiver<Done>, mut broker: Link, mut backend: Link) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(255));
        report(shared, batch, &mut broker, &mut backend);
    }
}

thread_local! {
    /// The connections (broker, backend) of a thread of the worker pool
    /// that reports a task's end itself, by the node's broker URL.
    static HERE: std::cell::RefCell<Option<(String, Link, Link)>> =
        const { std::cell::RefCell::new(None) };
}

/// Reports a task's end on this thread (the worker pool's, which heard it
/// end), rather than handing it to REPORT: one thread wake-up less between
/// the task's end and its result. Hands it to REPORT (`tx`) if this thread
/// has no connections and cannot open them.
fn report_here(shared: &Shared, done: Done, tx: &Sender<Done>) {
    HERE.with(|here| {
        let mut here = here.borrow_mut();
        if here
            .as_ref()
            .is_none_or(|(url, ..)| *url != shared.config.broker)
        {
            let open = |url: &str| Link::open(url, Duration::from_secs(10));
            *here = match (open(&shared.config.broker), open(&shared.config.backend)) {
                (Ok(b), Ok(k)) => Some((shared.config.broker.clone(), b, k)),
                _ => None,
            };
        }
        match here.as_mut() {
            Some((_, broker, backend)) => report(shared, vec![done], broker, backend),
            None => {
                let _ = tx.send(done);
            }
        }
    });
}

/// Writes what ended: results, the next tasks, acknowledgements, events.
fn report(shared: &Shared, batch: Vec<Done>, broker: &mut Link, backend: &mut Link) {
    // Redis unreachable after SIGTERM: give up; what was not acknowledged
    // stays in `unacked`, to be restored and run again.
    let stop = || STOP_SIGNAL.load(Ordering::Relaxed);
    let origin = shared.hostname.clone();
    // What ended since the last round trip is written in one pipeline:
    // results first, then the next tasks, the acks and the task events.
    // With the backend on another server (or a chord to complete), the
    // results go first in a pipeline of their own.
    {
        let mut ended = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        for Done { msg, t0, outcome } in batch {
            match outcome {
                Some(outcome) => {
                    shared.processed.fetch_add(1, Ordering::Relaxed);
                    *lock(&shared.totals).entry(msg.task.clone()).or_insert(0) += 1;
                    events.extend(task_event(
                        shared,
                        &msg,
                        &outcome,
                        t0.elapsed().as_secs_f64(),
                    ));
                    ended.push((msg, outcome));
                }
                None => release(shared, &msg),
            }
        }
        if ended.is_empty() {
            return;
        }
        // A failed task's chain stops: its later steps fail with it, and
        // one of them that belongs to a chord counts as a failed member,
        // as Celery's `mark_as_failure` does, so the chord fails instead of
        // waiting for it.
        let stopped: Vec<(Message, Outcome)> = ended
            .iter()
            .flat_map(|(msg, outcome)| chain_stopped(msg, outcome))
            .collect();
        let results: Vec<(String, Vec<u8>)> = ended
            .iter()
            .chain(&stopped)
            .filter(|(msg, _)| {
                !msg.headers
                    .get("ignore_result")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
            .map(|(msg, outcome)| {
                (
                    format!("{}{}", wire::META, msg.id),
                    shared
                        .config
                        .result_serializer
                        .encode(&wire::meta(&msg.id, outcome)),
                )
            })
            .collect();
        let write_results = |p: &mut redis::Pipeline| {
            for (key, payload) in &results {
                p.cmd("SET")
                    .arg(key)
                    .arg(payload)
                    .arg("EX")
                    .arg(wire::RESULT_EXPIRES_S)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(key)
                    .arg(payload)
                    .ignore();
            }
        };
        let in_chord = ended
            .iter()
            .chain(&stopped)
            .any(|(msg, _)| msg.embed.get("chord").is_some_and(Value::is_object));
        // One pipeline on the broker's connection: the backend's database
        // is selected for the results, then the broker's again.
        let together = shared.same_server.filter(|_| !in_chord);
        if together.is_none() && !results.is_empty() {
            let r = backend.call(&stop, |con| {
                let mut p = redis::pipe();
                write_results(&mut p);
                p.query::<()>(con)
            });
            if let Some(Err(e)) = r {
                eprintln!("crew celery node {}: writing results: {e}", shared.hostname);
            }
        }
        let mut after = Vec::new();
        let mut chords = Vec::new();
        // The sizes of chords started here, recorded before their
        // members are sent.
        let mut sizes = Vec::new();
        for (msg, outcome) in &ended {
            after.extend(linked(msg, outcome, &mut sizes));
            if let Outcome::Success(v) = outcome {
                after.extend(next_in_chain(msg, v, &mut sizes));
            }
        }
        if in_chord {
            for (msg, outcome) in ended.iter().chain(&stopped) {
                if let Some(Chord::Fire(body, keys)) =
                    chord_member(shared, backend, msg, outcome, &mut sizes)
                {
                    after.extend(body);
                    chords.push(keys);
                }
            }
        }
        let chord_sizes = |p: &mut redis::Pipeline| {
            for (group_id, size) in &sizes {
                let key = |suffix: &str| format!("{}{group_id}{suffix}", wire::TASKSET);
                p.cmd("DEL")
                    .arg(key(".c"))
                    .ignore()
                    .cmd("SET")
                    .arg(key(".s"))
                    .arg(size)
                    .arg("EX")
                    .arg(wire::RESULT_EXPIRES_S)
                    .ignore();
            }
        };
        if together.is_none() && !sizes.is_empty() {
            let r = backend.call(&stop, |con| {
                let mut p = redis::pipe();
                chord_sizes(&mut p);
                p.query::<()>(con)
            });
            if let Some(Err(e)) = r {
                eprintln!(
                    "crew celery node {}: starting a chord: {e}",
                    shared.hostname
                );
            }
        }
        let r = broker.call(&stop, |con| {
            let mut p = redis::pipe();
            if let Some((broker_db, backend_db)) = together
                && !(results.is_empty() && sizes.is_empty())
            {
                if backend_db != broker_db {
                    p.cmd("SELECT").arg(backend_db).ignore();
                }
                write_results(&mut p);
                chord_sizes(&mut p);
                if backend_db != broker_db {
                    p.cmd("SELECT").arg(broker_db).ignore();
                }
            }
            for next in &after {
                let (list, raw) = next.encode(&origin);
                p.cmd("LPUSH").arg(list).arg(raw).ignore();
            }
            for (msg, _) in &ended {
                p.cmd("ZREM")
                    .arg(wire::UNACKED_INDEX)
                    .arg(&msg.tag)
                    .ignore()
                    .cmd("HDEL")
                    .arg(wire::UNACKED)
                    .arg(&msg.tag)
                    .ignore();
                // Taken by the wake-up: if the fetch loop has not recorded
                // it as unacknowledged yet, it never will.
                if let Some(raw) = &msg.woke {
                    p.cmd("LREM")
                        .arg(&shared.taking_key)
                        .arg(1)
                        .arg(raw)
                        .ignore();
                }
            }
            for (channel, message) in &events {
                p.cmd("PUBLISH").arg(channel).arg(message).ignore();
            }
            p.query::<()>(con)
        });
        if let Some(Err(e)) = r {
            eprintln!("crew celery node {}: acknowledging: {e}", shared.hostname);
        }
        for keys in chords {
            let cleanup = redis::Script::new(wire::CHORD_CLEANUP);
            let _ = backend.call(&stop, |con| {
                cleanup
                    .key(&keys[5])
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .arg(&keys[6])
                    .arg(300)
                    .invoke::<i64>(con)
            });
        }
        for (msg, _) in &ended {
            release(shared, msg);
        }
    }
}

/// The node no longer holds `msg`: room for another.
fn release(shared: &Shared, msg: &Message) {
    lock(&shared.held).remove(&msg.tag);
    lock(&shared.active).remove(&msg.tag);
    let mut running = lock(&shared.running);
    *running = running.saturating_sub(1);
    shared.room.notify_all();
}

/// What a chord header member's end did to its chord.
enum Chord {
    /// The header is complete and this node claimed the body: send it,
    /// then clean up with these keys (`.j .t .s .d` group `.c`, then the
    /// claim token).
    Fire(Vec<Outgoing>, Vec<String>),
}

/// Records the result of a chord header member; when it completes the
/// header, either sends back the body to run (all succeeded) or fails the
/// body with a `ChordError` (a member failed), as Celery's Redis backend
/// does.
fn chord_member(
    shared: &Shared,
    backend: &mut Link,
    msg: &Message,
    outcome: &Outcome,
    sizes: &mut Vec<ChordSize>,
) -> Option<Chord> {
    let callback = msg.embed.get("chord").and_then(Value::as_object)?;
    let gid = msg.header("group")?;
    let score = msg
        .headers
        .get("group_index")
        .and_then(Value::as_u64)
        .map_or_else(|| "+inf".to_owned(), |i| i.to_string());
    let key = |suffix: &str| format!("{}{gid}{suffix}", wire::TASKSET);
    let token = wire::new_id();
    let keys = vec![
        key(".j"),
        key(".t"),
        key(".s"),
        key(".d"),
        key(""),
        key(".c"),
        token.clone(),
    ];
    let part = shared
        .config
        .result_serializer
        .encode(&wire::chord_part(&msg.id, outcome));
    let script = redis::Script::new(wire::CHORD_PART);
    let stop = || STOP_SIGNAL.load(Ordering::Relaxed);
    let claimed = backend.call(&stop, |con| {
        script
            .key(&keys[..6])
            .arg(&msg.id)
            .arg(&part)
            .arg(&score)
            .arg(wire::RESULT_EXPIRES_S)
            .arg(10)
            .arg(&token)
            .invoke::<i64>(con)
    });
    match claimed {
        Some(Ok(1)) => {}
        Some(Err(e)) => {
            eprintln!("crew celery node {}: chord {gid}: {e}", shared.hostname);
            return None;
        }
        _ => return None,
    }
    let parts: Vec<Vec<u8>> = match backend.call(&stop, |con| {
        redis::cmd("ZRANGE").arg(&keys[0]).arg(0).arg(-1).query(con)
    }) {
        Some(Ok(p)) => p,
        _ => return None,
    };
    let mut results = Vec::with_capacity(parts.len());
    let mut failed = None;
    for p in &parts {
        let v = wire::decode_stored(p).unwrap_or(Value::Null);
        let state = v.get(2).and_then(Value::as_str).unwrap_or("");
        if matches!(state, "FAILURE" | "REVOKED") && failed.is_none() {
            let tid = v.get(1).and_then(Value::as_str).unwrap_or("?").to_owned();
            let exc = v.get(3).cloned().unwrap_or(Value::Null);
            let name = exc
                .get("exc_type")
                .and_then(Value::as_str)
                .unwrap_or("Exception");
            let text = match exc.get("exc_message") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            failed = Some(format!("Dependency {tid} raised {name}('{text}')"));
        }
        results.push(v.get(3).cloned().unwrap_or(Value::Null));
    }
    let callback_id = callback
        .get("options")
        .and_then(|o| o.get("task_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(reason) = failed {
        // Fail the body, and drop the chord size so a late copy of a
        // member cannot fail it again.
        if let Some(cid) = callback_id {
            let err = JsonError {
                exc_type: "ChordError".into(),
                exc_module: "celery.exceptions".into(),
                message: reason.clone(),
            };
            let payload = shared.config.result_serializer.encode(&wire::meta(
                &cid,
                &Outcome::Failure(err, format!("{reason}\n")),
            ));
            let meta_key = format!("{}{cid}", wire::META);
            let _ = backend.call(&stop, |con| {
                redis::pipe()
                    .cmd("SET")
                    .arg(&meta_key)
                    .arg(&payload)
                    .arg("EX")
                    .arg(wire::RESULT_EXPIRES_S)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(&meta_key)
                    .arg(&payload)
                    .ignore()
                    .cmd("DEL")
                    .arg(&keys[2])
                    .ignore()
                    .query::<()>(con)
            });
        }
        return None;
    }
    let body = start_signature(
        callback,
        Some(Value::Array(results)),
        msg,
        Vec::new(),
        sizes,
    );
    if body.is_empty() {
        return None;
    }
    Some(Chord::Fire(body, keys))
}

/// The tasks linked to this message's end, as Celery sends them: after a
/// success its `callbacks` (`link`) with the result prepended to their
/// arguments, after a failure its `errbacks` (`link_error`) with the
/// failed task's id prepended (unless a signature is immutable).
fn linked(msg: &Message, outcome: &Outcome, sizes: &mut Vec<ChordSize>) -> Vec<Outgoing> {
    let (key, prepend) = match outcome {
        Outcome::Success(v) => ("callbacks", v.clone()),
        Outcome::Failure(..) => ("errbacks", Value::String(msg.id.clone())),
        Outcome::Revoked(_) => return Vec::new(),
    };
    let Some(sigs) = msg.embed.get(key).and_then(Value::as_array) else {
        return Vec::new();
    };
    sigs.iter()
        .filter_map(Value::as_object)
        .flat_map(|sig| start_signature(sig, Some(prepend.clone()), msg, Vec::new(), sizes))
        .collect()
}

/// The later steps of the chain a failed message was part of, each as the
/// message it would have been (its task id, group and chord from its
/// signature's options) with the same failure: their results are stored as
/// that failure, and a step that is a chord member fails its chord. Plain
/// signatures only; a group or chain among them has no task id of its own
/// and is passed over, as Celery does.
fn chain_stopped(msg: &Message, outcome: &Outcome) -> Vec<(Message, Outcome)> {
    let Outcome::Failure(..) = outcome else {
        return Vec::new();
    };
    let Some(chain) = msg.embed.get("chain").and_then(Value::as_array) else {
        return Vec::new();
    };
    chain
        .iter()
        .filter_map(Value::as_object)
        .filter(|sig| canvas_kind(sig).is_none())
        .filter_map(|sig| {
            let options = sig.get("options").and_then(Value::as_object)?;
            let id = options.get("task_id")?.as_str()?.to_owned();
            let mut headers = serde_json::Map::new();
            for (from, to) in [("group_id", "group"), ("group_index", "group_index")] {
                if let Some(v) = options.get(from) {
                    headers.insert(to.into(), v.clone());
                }
            }
            let mut embed = serde_json::Map::new();
            if let Some(chord) = options.get("chord") {
                embed.insert("chord".into(), chord.clone());
            }
            let step = Message {
                tag: String::new(),
                id,
                task: sig.get("task")?.as_str()?.to_owned(),
                args: Vec::new(),
                kwargs: serde_json::Map::new(),
                embed,
                headers,
                hard: None,
                soft: None,
                eta: None,
                expires: None,
                refused: None,
                woke: None,
            };
            Some((step, outcome.clone()))
        })
        .collect()
}

/// What kind of canvas a signature dict is: `group`, `chain`, `chord`, or
/// `None` for a plain task.
fn canvas_kind(sig: &serde_json::Map<String, Value>) -> Option<&str> {
    match sig.get("subtask_type").and_then(Value::as_str) {
        Some(kind) => Some(kind),
        None => match sig.get("task").and_then(Value::as_str) {
            Some("celery.group") => Some("group"),
            Some("celery.chain") => Some("chain"),
            Some("celery.chord") => Some("chord"),
            _ => None,
        },
    }
}

/// The signatures a group or chain holds (`kwargs.tasks`), in order.
fn canvas_tasks(sig: &serde_json::Map<String, Value>) -> Vec<serde_json::Map<String, Value>> {
    sig.get("kwargs")
        .and_then(|k| k.get("tasks"))
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter_map(Value::as_object).cloned().collect())
        .unwrap_or_default()
}

/// A chord the node starts: its group id and how many results complete
/// its header, written (Celery's `set_chord_size`) before its header's
/// messages are sent.
type ChordSize = (String, u64);

/// How many results a chord header member adds to its chord (Celery's
/// `chord._descend`): a task one, a group the sum of its members, a chain
/// what its last step adds, a chord what its body adds.
fn chord_weight(sig: &serde_json::Map<String, Value>) -> u64 {
    match canvas_kind(sig) {
        Some("group") => canvas_tasks(sig).iter().map(chord_weight).sum(),
        Some("chain") => canvas_tasks(sig).last().map_or(1, chord_weight),
        Some("chord") => sig
            .get("kwargs")
            .and_then(|k| k.get("body"))
            .and_then(Value::as_object)
            .map_or(1, chord_weight),
        _ => 1,
    }
}

/// Makes `member` a member of the chord header `group_id` at `index`,
/// whose body is `body`: on a chain, its last step is the member.
fn join_chord(
    member: &mut serde_json::Map<String, Value>,
    group_id: &str,
    index: usize,
    body: &Value,
) {
    if canvas_kind(member) == Some("chain") {
        if let Some(last) = member
            .get_mut("kwargs")
            .and_then(|k| k.get_mut("tasks"))
            .and_then(Value::as_array_mut)
            .and_then(|ts| ts.last_mut())
            .and_then(Value::as_object_mut)
        {
            join_chord(last, group_id, index, body);
        }
        return;
    }
    let options = member
        .entry("options")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(o) = options {
        o.insert("group_id".into(), group_id.into());
        o.entry("group_index").or_insert(index.into());
        o.insert("chord".into(), body.clone());
    }
}

/// The messages that start a signature applied with `prepend` (a task's
/// result, or a chord header's results), as Celery applies a canvas, with
/// `rest` what remains of the chain it is a step of (reversed, as Celery
/// stores it): a plain signature is one message; a group starts each of
/// its members with `prepend` (its id their group); a chain its first step
/// with the rest of the chain in the message (a chain inside it is
/// flattened); a chord its header's members with `prepend`, each carrying
/// the body (which carries `rest`), after its size is recorded in `sizes`.
fn start_signature(
    sig: &serde_json::Map<String, Value>,
    prepend: Option<Value>,
    parent: &Message,
    rest: Vec<Value>,
    sizes: &mut Vec<ChordSize>,
) -> Vec<Outgoing> {
    let own_id = |sig: &serde_json::Map<String, Value>| {
        sig.get("options")
            .and_then(|o| o.get("task_id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match canvas_kind(sig) {
        None => signature_message(sig, prepend, parent, rest)
            .into_iter()
            .collect(),
        Some("group") => {
            if !rest.is_empty() {
                // Celery makes a group followed by more steps a chord.
                eprintln!(
                    "crew celery node: after task {} a group is followed by {} more step(s), which a chord would carry",
                    parent.id,
                    rest.len()
                );
            }
            let group_id = own_id(sig).unwrap_or_else(wire::new_id);
            canvas_tasks(sig)
                .into_iter()
                .enumerate()
                .flat_map(|(i, mut member)| {
                    if let Value::Object(o) = member
                        .entry("options")
                        .or_insert_with(|| Value::Object(serde_json::Map::new()))
                    {
                        o.entry("group_id").or_insert(group_id.clone().into());
                        o.entry("group_index").or_insert(i.into());
                    }
                    start_signature(&member, prepend.clone(), parent, Vec::new(), sizes)
                })
                .collect()
        }
        Some("chain") => {
            // Flatten nested chains: Celery runs them as one sequence.
            let mut steps = Vec::new();
            let mut todo = canvas_tasks(sig);
            todo.reverse();
            while let Some(step) = todo.pop() {
                if canvas_kind(&step) == Some("chain") {
                    let mut inner = canvas_tasks(&step);
                    inner.reverse();
                    todo.extend(inner);
                } else {
                    steps.push(step);
                }
            }
            if steps.is_empty() {
                return Vec::new();
            }
            let first = steps.remove(0);
            // The rest goes in the message reversed, as Celery sends it,
            // after (before, reversed) what follows this chain.
            let mut chain = rest;
            chain.extend(steps.into_iter().rev().map(Value::Object));
            start_signature(&first, prepend, parent, chain, sizes)
        }
        Some("chord") => {
            let kwargs = sig.get("kwargs").and_then(Value::as_object);
            let header = kwargs.and_then(|k| k.get("header"));
            let Some(mut body) = kwargs
                .and_then(|k| k.get("body"))
                .and_then(Value::as_object)
                .cloned()
            else {
                eprintln!(
                    "crew celery node: a chord after task {} has no body",
                    parent.id
                );
                return Vec::new();
            };
            let (members, header_id) = match header {
                Some(Value::Object(h)) if canvas_kind(h) == Some("group") => {
                    (canvas_tasks(h), own_id(h))
                }
                Some(Value::Object(h)) => (vec![h.clone()], None),
                Some(Value::Array(hs)) => (
                    hs.iter().filter_map(Value::as_object).cloned().collect(),
                    None,
                ),
                _ => (Vec::new(), None),
            };
            let group_id = header_id
                .or_else(|| own_id(sig))
                .unwrap_or_else(wire::new_id);
            // What follows the chord in the chain follows its body.
            if !rest.is_empty()
                && let Value::Object(o) = body
                    .entry("options")
                    .or_insert_with(|| Value::Object(serde_json::Map::new()))
            {
                o.entry("chain").or_insert(Value::Array(rest));
            }
            if members.is_empty() {
                // Nothing to wait for: the body runs now, on no results.
                return start_signature(
                    &body,
                    Some(Value::Array(Vec::new())),
                    parent,
                    Vec::new(),
                    sizes,
                );
            }
            let body = Value::Object(body);
            sizes.push((group_id.clone(), members.iter().map(chord_weight).sum()));
            members
                .into_iter()
                .enumerate()
                .flat_map(|(i, mut member)| {
                    join_chord(&mut member, &group_id, i, &body);
                    start_signature(&member, prepend.clone(), parent, Vec::new(), sizes)
                })
                .collect()
        }
        Some(kind) => {
            eprintln!(
                "crew celery node: task {} is followed by a {kind}, which crew does not start",
                parent.id
            );
            Vec::new()
        }
    }
}

/// The next step of a chain this message is part of, given its result:
/// the last signature of `chain` (Celery stores it reversed), with the
/// result prepended to its arguments unless it is immutable; a group or a
/// chord there starts as Celery starts one.
fn next_in_chain(msg: &Message, result: &Value, sizes: &mut Vec<ChordSize>) -> Vec<Outgoing> {
    let Some(mut chain) = msg.embed.get("chain").and_then(Value::as_array).cloned() else {
        return Vec::new();
    };
    let Some(Value::Object(sig)) = chain.pop() else {
        return Vec::new();
    };
    start_signature(&sig, Some(result.clone()), msg, chain, sizes)
}

/// The message of a signature (a dict of `task`, `args`, `kwargs`,
/// `options`, `immutable`) sent after `parent`: `prepend` goes before its
/// arguments unless it is immutable, `chain` is what remains of a chain.
fn signature_message(
    sig: &serde_json::Map<String, Value>,
    prepend: Option<Value>,
    parent: &Message,
    chain: Vec<Value>,
) -> Option<Outgoing> {
    let task = sig.get("task")?.as_str()?.to_owned();
    let options = sig
        .get("options")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut args: Vec<Value> = sig
        .get("args")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = prepend
        && !sig
            .get("immutable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    {
        args.insert(0, v);
    }
    let kwargs = sig
        .get("kwargs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut embed = serde_json::Map::new();
    for k in ["callbacks", "errbacks", "chord"] {
        embed.insert(k.into(), options.get(k).cloned().unwrap_or(Value::Null));
    }
    // A chord's body carries what follows the chord in a chain.
    let chain = if chain.is_empty() {
        options
            .get("chain")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    } else {
        chain
    };
    embed.insert(
        "chain".into(),
        if chain.is_empty() {
            Value::Null
        } else {
            Value::Array(chain)
        },
    );
    let text = |k: &str| options.get(k).and_then(Value::as_str).map(str::to_owned);
    let f = |k: &str| options.get(k).and_then(Value::as_f64);
    Some(Outgoing {
        id: text("task_id").unwrap_or_else(wire::new_id),
        task,
        args,
        kwargs,
        embed,
        queue: text("queue")
            .or_else(|| text("routing_key"))
            .unwrap_or_else(|| "celery".into()),
        priority: options
            .get("priority")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(9) as u8,
        root_id: parent
            .header("root_id")
            .map(str::to_owned)
            .or_else(|| Some(parent.id.clone())),
        parent_id: Some(parent.id.clone()),
        group: text("group_id"),
        group_index: options.get("group_index").and_then(Value::as_u64),
        countdown: f("countdown"),
        expires: None,
        timelimit: (f("time_limit"), f("soft_time_limit")),
        serializer: wire::Serializer::Json,
    })
}

/// The fields of a worker event.
fn worker_fields(shared: &Shared) -> Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<f64> = load
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    serde_json::json!({
        "freq": 2.0,
        "active": *lock(&shared.running),
        "processed": shared.processed.load(Ordering::Relaxed),
        "loadavg": loadavg,
        "sw_ident": "crew",
        "sw_ver": env!("CARGO_PKG_VERSION"),
        "sw_sys": "Linux",
    })
}

/// The event of a task's end, to publish in the pipeline that writes its
/// result (if task events are on).
fn task_event(
    shared: &Shared,
    msg: &Message,
    outcome: &Outcome,
    runtime: f64,
) -> Option<(String, String)> {
    match outcome {
        Outcome::Success(v) => shared.events.task_event_message(
            "task-succeeded",
            serde_json::json!({"uuid": msg.id, "result": v.to_string(), "runtime": runtime}),
        ),
        Outcome::Failure(e, tb) => shared.events.task_event_message(
            "task-failed",
            serde_json::json!({
                "uuid": msg.id,
                "exception": format!("{}({:?})", e.exc_type, e.message),
                "traceback": tb,
            }),
        ),
        Outcome::Revoked(_) => shared.events.task_event_message(
            "task-revoked",
            serde_json::json!({"uuid": msg.id, "terminated": false, "signum": null, "expired": true}),
        ),
    }
}

// KEEP: renew the delivery times of the messages this node holds and the
// life of its taking list, and put back those of consumers that stopped
// (older than the visibility timeout; in the taking list of a node whose
// life ran out).
fn keep_loop(shared: &Arc<Shared>, mut link: Link) {
    let restore = redis::Script::new(wire::RESTORE);
    let vt = shared.config.visibility_timeout.as_secs_f64();
    let alive = wire::alive_key(&shared.taking_key);
    let alive_ms = alive_ms(shared);
    let every = (shared.config.visibility_timeout / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(30));
    let stop = || shared.stopping();
    let mut beat = std::time::Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if beat.elapsed() >= Duration::from_secs(2) {
            shared
                .events
                .send("worker-heartbeat", worker_fields(shared));
            beat = std::time::Instant::now();
        }
        // Not while the fetch loop takes messages (see `taking`).
        let taking = lock(&shared.taking);
        let held: Vec<String> = lock(&shared.held).iter().cloned().collect();
        let now = wire::now();
        let r = link.call(&stop, |con| {
            let mut p = redis::pipe();
            for tag in &held {
                p.cmd("ZADD")
                    .arg(wire::UNACKED_INDEX)
                    .arg("XX")
                    .arg(now)
                    .arg(tag)
                    .ignore();
            }
            // This node's taking list stays its own.
            p.cmd("SET")
                .arg(&alive)
                .arg(1)
                .arg("PX")
                .arg(alive_ms)
                .ignore();
            p.query::<()>(con)?;
            restore
                .arg(now - vt)
                .arg(&shared.taking_key)
                .arg(&held)
                .invoke::<u64>(con)
        });
        drop(taking);
        match r {
            Some(Ok(n)) if n > 0 => eprintln!(
                "crew celery node {}: put {n} unacknowledged message(s) back on their queues",
                shared.hostname
            ),
            Some(Err(e)) => eprintln!("crew celery node {}: restoring: {e}", shared.hostname),
            _ => {}
        }
        let deadline = std::time::Instant::now() + every.min(Duration::from_secs(2));
        while std::time::Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running task as `celery inspect active` shows it (Celery's
/// `Request.info`).
fn active_info(shared: &Shared, msg: &Message) -> Value {
    serde_json::json!({
        "id": msg.id,
        "name": msg.task,
        "args": msg.args,
        "kwargs": msg.kwargs,
        "type": msg.task,
        "hostname": shared.hostname,
        "time_start": wire::now(),
        "acknowledged": false,
        "delivery_info": {
            "exchange": "",
            "routing_key": msg.headers.get("routing_key"),
            "priority": msg.headers.get("priority"),
            "redelivered": false,
        },
        "worker_pid": null,
        "eta": msg.headers.get("eta"),
    })
}

/// The answer to a remote control command; an unknown one is answered
/// with an error, as Celery's workers do.
fn control_reply(shared: &Shared, method: &str) -> Value {
    match method {
        "ping" => serde_json::json!({"ok": "pong"}),
        "active" => Value::Array(lock(&shared.active).values().cloned().collect()),
        "registered" => {
            let mut names: Vec<&str> = registry::tasks().map(|t| t.name()).collect();
            names.sort_unstable();
            names.dedup();
            serde_json::json!(names)
        }
        // Taken and waiting for a worker process, or for their eta.
        "reserved" => Value::Array(
            lock(&shared.waiting)
                .values()
                .filter(|(eta, _)| !eta)
                .map(|(_, info)| info.clone())
                .collect(),
        ),
        "scheduled" => Value::Array(
            lock(&shared.waiting)
                .values()
                .filter(|(eta, _)| *eta)
                .map(|(_, info)| {
                    serde_json::json!({
                        "eta": info.get("eta").cloned().unwrap_or(Value::Null),
                        "priority": info.pointer("/delivery_info/priority").cloned().unwrap_or(Value::Null),
                        "request": info,
                    })
                })
                .collect(),
        ),
        "revoked" => serde_json::json!([]),
        "stats" => {
            let totals = lock(&shared.totals).clone();
            serde_json::json!({
                "total": totals,
                "pid": std::process::id(),
                "clock": 0,
                "uptime": shared.started.elapsed().as_secs(),
                "pool": {
                    "implementation": "crew",
                    "max-concurrency": shared.config.concurrency,
                },
                "broker": {"transport": "redis"},
                "prefetch_count": shared.config.prefetch.max(shared.config.concurrency),
                "sw_ident": "crew",
                "sw_ver": env!("CARGO_PKG_VERSION"),
            })
        }
        "enable_events" => {
            shared.events.task_events(true);
            serde_json::json!({"ok": "task events enabled"})
        }
        "disable_events" => {
            shared.events.task_events(false);
            serde_json::json!({"ok": "task events disabled"})
        }
        "shutdown" => {
            STOP_SIGNAL.store(true, Ordering::SeqCst);
            serde_json::json!({"ok": "shutdown"})
        }
        other => serde_json::json!({"error": format!("No such control command: {other}")}),
    }
}

// CONTROL: answer `celery inspect` and `celery control` on the mailbox's
// pub/sub channel.
fn control_loop(shared: &Arc<Shared>, mut link: Link) {
    let channel = control::channel(events::db_of(&shared.config.broker));
    let Ok(sub) = crew_redis::Subscriber::new(&shared.config.broker, None, &channel) else {
        return;
    };
    let mut clock = 0u64;
    sub.run(
        || shared.stop.load(Ordering::Relaxed),
        |payload| {
            let Some(req) = control::decode(payload, &shared.hostname, wire::now()) else {
                return;
            };
            let data = control_reply(shared, &req.method);
            let Some((exchange, routing_key, ticket)) = req.reply else {
                return;
            };
            clock += 1;
            let raw = control::reply_envelope(
                &shared.hostname,
                data,
                &exchange,
                &routing_key,
                &ticket,
                clock,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let r = link.call(&|| std::time::Instant::now() >= deadline, |con| {
                let bound: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(format!("_kombu.binding.{exchange}"))
                    .query(con)?;
                let mut p = redis::pipe();
                for queue in control::direct_targets(&bound, &routing_key) {
                    p.cmd("LPUSH").arg(queue).arg(&raw).ignore();
                }
                p.query::<()>(con)
            });
            if let Some(Err(e)) = r {
                eprintln!("crew celery node {}: replying: {e}", shared.hostname);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_is_told_from_two() {
        let url = |rest: &str| format!("redis://{rest}");
        assert_eq!(
            same_server(&url("127.0.0.1:6379/4"), &url("127.0.0.1:6379/5")),
            Some((4, 5))
        );
        assert_eq!(
            same_server(&url("127.0.0.1:6379"), &url("127.0.0.1:6379")),
            Some((0, 0))
        );
        assert_eq!(
            same_server(&url("127.0.0.1:6379/0"), &url("127.0.0.1:6380/0")),
            None
        );
        assert_eq!(
            same_server(&url("127.0.0.1:6379/0"), &url("10.0.0.2:6379/0")),
            None
        );
        assert_eq!(
            same_server(&url(":a@127.0.0.1:6379/0"), &url(":b@127.0.0.1:6379/1")),
            None
        );
    }

    #[test]
    fn a_chord_weighs_what_completes_it() {
        let sig = |v: Value| v.as_object().unwrap().clone();
        let task = serde_json::json!({"task": "t", "args": []});
        let group = serde_json::json!({"task": "celery.group", "subtask_type": "group",
            "kwargs": {"tasks": [task, task, task]}});
        let chain = serde_json::json!({"task": "celery.chain", "subtask_type": "chain",
            "kwargs": {"tasks": [task, group]}});
        assert_eq!(chord_weight(&sig(task.clone())), 1);
        assert_eq!(chord_weight(&sig(group.clone())), 3);
        // A chain adds what its last step adds.
        assert_eq!(chord_weight(&sig(chain)), 3);
    }
}
