//! A crew node consuming Celery queues on Redis: pops messages into kombu's
//! unacknowledged bookkeeping (one Lua script), runs the named Rust tasks in
//! crash-isolated worker processes, writes Celery results, continues
//! chains, acknowledges, and restores messages of dead consumers.

use std::collections::HashSet;
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

use super::wire::{self, Message, Outcome, Outgoing};
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

    /// Sets the number of worker processes.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the visibility timeout.
    #[must_use]
    pub fn visibility_timeout(mut self, t: Duration) -> Self {
        self.visibility_timeout = t;
        self
    }
}

/// What a worker process is given: a task name and its JSON arguments.
#[derive(Serialize, Deserialize, Debug)]
struct JsonCall {
    name: String,
    args: String,
    kwargs: String,
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
        entry.call_json(args, kwargs).map(|v| v.to_string())
    }
}

type JobOut = std::result::Result<String, JsonError>;

struct Shared {
    config: WorkerConfig,
    keys: Vec<String>,
    hostname: String,
    processes: Processes,
    /// Delivery tags this node holds (running, or waiting for their eta).
    held: Mutex<HashSet<String>>,
    running: Mutex<usize>,
    room: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || STOP_SIGNAL.load(Ordering::Relaxed)
    }
}

struct Done {
    msg: Message,
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
        Ok(Worker {
            shared: Arc::new(Shared {
                keys,
                hostname: format!("crew@{}.{}", super::hostname(), std::process::id()),
                processes,
                held: Mutex::new(HashSet::new()),
                running: Mutex::new(0),
                room: Condvar::new(),
                stop: AtomicBool::new(false),
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
        shared.processes.close();
        r
    }
}

fn fetch_loop(shared: &Arc<Shared>, tx: &Sender<Done>) -> Result<()> {
    let mut link = Link::open(&shared.config.broker, Duration::from_secs(5))?;
    let script = redis::Script::new(wire::FETCH);
    let stop = || shared.stopping();
    // Messages whose eta is still ahead, by delivery tag.
    let mut later: Vec<Message> = Vec::new();
    let mut idle = Duration::ZERO;
    while !shared.stopping() {
        {
            let mut running = lock(&shared.running);
            while *running >= shared.config.concurrency && !shared.stopping() {
                running = shared
                    .room
                    .wait_timeout(running, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        if shared.stopping() {
            break;
        }
        let now = wire::now();
        if let Some(i) = later.iter().position(|m| m.eta.is_some_and(|t| t <= now)) {
            let m = later.swap_remove(i);
            dispatch(shared, tx, m);
            continue;
        }
        let popped = link.call(&stop, |con| {
            script
                .key(&shared.keys)
                .arg(wire::now())
                .invoke::<Option<Vec<u8>>>(con)
        });
        match popped {
            None => break,
            Some(Ok(Some(raw))) => {
                idle = Duration::ZERO;
                match Message::parse(&raw) {
                    Ok(m) => {
                        lock(&shared.held).insert(m.tag.clone());
                        if m.eta.is_some_and(|t| t > wire::now()) {
                            later.push(m);
                        } else {
                            dispatch(shared, tx, m);
                        }
                    }
                    Err(reason) => reject(shared, &mut link, &raw, &reason),
                }
            }
            Some(Ok(None)) => {
                // Nothing queued: poll again soon, less often the longer
                // the queues stay empty.
                idle = (idle * 2).clamp(Duration::from_micros(500), Duration::from_millis(20));
                std::thread::sleep(idle);
            }
            Some(Err(e)) => {
                eprintln!("crew celery node {}: reading tasks: {e}", shared.hostname);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// A message that cannot be read: logged and acknowledged (kombu would
/// fail the same way on it), so it cannot block the queue.
fn reject(shared: &Shared, link: &mut Link, raw: &[u8], reason: &str) {
    eprintln!(
        "crew celery node {}: dropping a message: {reason}: {}",
        shared.hostname,
        String::from_utf8_lossy(&raw[..raw.len().min(300)])
    );
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
            outcome: Some(outcome),
        });
    };
    if let Some(exp) = msg.expires
        && exp <= wire::now()
    {
        finish(msg, Outcome::Revoked("expired".into()));
        return;
    }
    // A soft limit cannot interrupt Rust code: the task is stopped at the
    // lower of the two limits.
    let limit = match (msg.hard, msg.soft) {
        (Some(h), Some(s)) => Some((h.min(s), s < h)),
        (Some(h), None) => Some((h, false)),
        (None, Some(s)) => Some((s, true)),
        (None, None) => None,
    };
    let input = JsonCall {
        name: msg.task.clone(),
        args: Value::Array(msg.args.clone()).to_string(),
        kwargs: Value::Object(msg.kwargs.clone()).to_string(),
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
    let tx = tx.clone();
    let task = msg.task.clone();
    let job = RawJob {
        entry: remote::call_task::<RunByName, JsonCall, JobOut>(&RunByName),
        input: RawInput::Call(input),
        timeout: limit.map(|(s, _)| Duration::from_secs_f64(s)),
        retries: 0,
        backoff: Duration::ZERO,
        spans: false,
        on_start: None,
        on_done: Box::new(move |out: RawOutcome| {
            let outcome = match out {
                RawOutcome::Cancelled => None,
                out => Some(outcome_of(&task, out, limit)),
            };
            let _ = tx.send(Done { msg, outcome });
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

fn outcome_of(task: &str, out: RawOutcome, limit: Option<(f64, bool)>) -> Outcome {
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

fn error_outcome(task: &str, e: &Error, limit: Option<(f64, bool)>) -> Outcome {
    let (exc_type, exc_module, message) = if e.is_timeout() {
        match limit {
            Some((s, true)) => (
                "SoftTimeLimitExceeded",
                "billiard.exceptions",
                format!("SoftTimeLimitExceeded({s})"),
            ),
            Some((s, false)) => (
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
    let stop = || false;
    for Done { msg, outcome } in rx {
        let Some(outcome) = outcome else {
            lock(&shared.held).remove(&msg.tag);
            let mut running = lock(&shared.running);
            *running = running.saturating_sub(1);
            shared.room.notify_all();
            continue;
        };
        let key = format!("{}{}", wire::META, msg.id);
        let payload = wire::meta(&msg.id, &outcome);
        let ignore = msg
            .headers
            .get("ignore_result")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !ignore {
            let r = backend.call(&stop, |con| {
                redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&payload)
                    .arg("EX")
                    .arg(wire::RESULT_EXPIRES_S)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(&key)
                    .arg(&payload)
                    .ignore()
                    .query::<()>(con)
            });
            if let Some(Err(e)) = r {
                eprintln!(
                    "crew celery node {}: writing a result: {e}",
                    shared.hostname
                );
            }
        }
        let mut after = Vec::new();
        if let Outcome::Success(v) = &outcome
            && let Some(next) = next_in_chain(&msg, v)
        {
            after.push(next);
        }
        let origin = shared.hostname.clone();
        let r = broker.call(&stop, |con| {
            let mut p = redis::pipe();
            for next in &after {
                let (list, raw) = next.encode(&origin);
                p.cmd("LPUSH").arg(list).arg(raw).ignore();
            }
            p.cmd("ZREM")
                .arg(wire::UNACKED_INDEX)
                .arg(&msg.tag)
                .ignore()
                .cmd("HDEL")
                .arg(wire::UNACKED)
                .arg(&msg.tag)
                .ignore();
            p.query::<()>(con)
        });
        if let Some(Err(e)) = r {
            eprintln!("crew celery node {}: acknowledging: {e}", shared.hostname);
        }
        lock(&shared.held).remove(&msg.tag);
        let mut running = lock(&shared.running);
        *running = running.saturating_sub(1);
        shared.room.notify_all();
    }
}

/// The next task of a chain this message is part of, given its result:
/// the last signature of `chain` (Celery stores it reversed), with the
/// result prepended to its arguments unless it is immutable.
fn next_in_chain(msg: &Message, result: &Value) -> Option<Outgoing> {
    let mut chain = msg.embed.get("chain")?.as_array()?.clone();
    let sig = chain.pop()?;
    let sig = sig.as_object()?;
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
    if !sig
        .get("immutable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        args.insert(0, result.clone());
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
    embed.insert(
        "chain".into(),
        if chain.is_empty() {
            Value::Null
        } else {
            Value::Array(chain)
        },
    );
    let queue = options
        .get("queue")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            options
                .get("routing_key")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "celery".into());
    let f = |k: &str| options.get(k).and_then(Value::as_f64);
    Some(Outgoing {
        id: options
            .get("task_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(wire::new_id),
        task,
        args,
        kwargs,
        embed,
        queue,
        priority: options
            .get("priority")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(9) as u8,
        root_id: msg
            .header("root_id")
            .map(str::to_owned)
            .or_else(|| Some(msg.id.clone())),
        parent_id: Some(msg.id.clone()),
        group: options
            .get("group_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        group_index: options.get("group_index").and_then(Value::as_u64),
        countdown: f("countdown"),
        expires: None,
        timelimit: (f("time_limit"), f("soft_time_limit")),
    })
}

// KEEP: renew the delivery times of the messages this node holds, and put
// back those of consumers that stopped (older than the visibility timeout).
fn keep_loop(shared: &Arc<Shared>, mut link: Link) {
    let restore = redis::Script::new(wire::RESTORE);
    let vt = shared.config.visibility_timeout.as_secs_f64();
    let every = (shared.config.visibility_timeout / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(30));
    let stop = || shared.stopping();
    while !shared.stop.load(Ordering::Relaxed) {
        let held: Vec<String> = lock(&shared.held).iter().cloned().collect();
        let now = wire::now();
        let r = link.call(&stop, |con| {
            if !held.is_empty() {
                let mut p = redis::pipe();
                for tag in &held {
                    p.cmd("ZADD")
                        .arg(wire::UNACKED_INDEX)
                        .arg("XX")
                        .arg(now)
                        .arg(tag)
                        .ignore();
                }
                p.query::<()>(con)?;
            }
            restore.arg(now - vt).arg(&held).invoke::<u64>(con)
        });
        match r {
            Some(Ok(n)) if n > 0 => eprintln!(
                "crew celery node {}: put {n} unacknowledged message(s) back on their queues",
                shared.hostname
            ),
            Some(Err(e)) => eprintln!("crew celery node {}: restoring: {e}", shared.hostname),
            _ => {}
        }
        let deadline = std::time::Instant::now() + every;
        while std::time::Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
