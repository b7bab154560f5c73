//! Sending tasks to Celery workers (Python ones, or crew nodes) and
//! reading their results.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crew_core::{Error, Result};
use crew_redis::Link;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use super::wire::{self, Outgoing, Serializer};
use crate::registry::JsonError;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends Celery tasks by name over a Redis broker.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// let client = crew::celery::Client::new("redis://127.0.0.1:6379/0")?
///     .backend("redis://127.0.0.1:6379/1")?;
/// let r = client.send("tasks.add", (2, 3))?;
/// assert_eq!(r.get_timeout::<i64>(Duration::from_secs(10))?, 5);
/// # Ok::<(), crew::Error>(())
/// ```
pub struct Client {
    broker: Mutex<Link>,
    backend: String,
    queue: String,
    origin: String,
    serializer: Serializer,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// A task to send with options ([`Client::send_with`]).
///
/// # Examples
///
/// ```
/// use crew::registry::json::json;
/// let t = crew::celery::Send::new("tasks.add")
///     .args([json!(2), json!(3)])
///     .priority(0)
///     .queue("fast")
///     .time_limit(std::time::Duration::from_secs(5));
/// # let _ = t;
/// ```
#[derive(Clone, Debug)]
pub struct Send {
    out: Outgoing,
    queue: Option<String>,
    serializer: Option<Serializer>,
}

impl Send {
    /// The task named `task`, with no arguments.
    pub fn new(task: impl Into<String>) -> Send {
        Send {
            out: Outgoing {
                task: task.into(),
                ..Outgoing::default()
            },
            queue: None,
            serializer: None,
        }
    }

    /// Sets the positional arguments.
    #[must_use]
    pub fn args(mut self, args: impl IntoIterator<Item = Value>) -> Self {
        self.out.args = args.into_iter().collect();
        self
    }

    /// Sets a keyword argument.
    #[must_use]
    pub fn kwarg(mut self, name: impl Into<String>, value: Value) -> Self {
        self.out.kwargs.insert(name.into(), value);
        self
    }

    /// Sends it to `queue` instead of the client's.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets its priority, 0 (the highest, on Redis) to 9.
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.out.priority = priority.min(9);
        self
    }

    /// Runs it no sooner than `delay` from now (Celery's `countdown`).
    #[must_use]
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.out.countdown = Some(delay.as_secs_f64());
        self
    }

    /// Drops it (as revoked) if it has not started `after` from now.
    #[must_use]
    pub fn expires(mut self, after: Duration) -> Self {
        self.out.expires = Some(after.as_secs_f64());
        self
    }

    /// Writes it with `serializer` instead of the client's (the worker must
    /// accept it: see [`Client::serializer`]).
    #[must_use]
    pub fn serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// Kills it when it runs longer (Celery's hard `time_limit`).
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.out.timelimit.0 = Some(limit.as_secs_f64());
        self
    }
}

impl Client {
    /// A client of `broker` sending to the `celery` queue, reading results
    /// from the same Redis.
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if `broker` is not a Redis URL.
    pub fn new(broker: &str) -> Result<Client> {
        Ok(Client {
            broker: Mutex::new(Link::open(broker, Duration::from_secs(10))?),
            backend: broker.to_owned(),
            queue: "celery".into(),
            origin: format!("crew@{}.{}", super::hostname(), std::process::id()),
            serializer: Serializer::Json,
        })
    }

    /// Reads results from `url` (Celery's `result_backend`).
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if `url` is not a Redis URL.
    pub fn backend(mut self, url: &str) -> Result<Client> {
        Link::open(url, Duration::from_secs(1))?;
        self.backend = url.to_owned();
        Ok(self)
    }

    /// Sends to `queue` by default.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Client {
        self.queue = queue.into();
        self
    }

    /// Writes task messages with `serializer` (Celery's `task_serializer`;
    /// JSON by default). The Python workers must accept it: msgpack is not
    /// in Celery's default `accept_content` (`["json"]`), and a Python
    /// worker that does not accept a message's serializer logs
    /// `ContentDisallowed` and drops it, writing no result: [`AsyncResult::get`]
    /// then waits forever and `get_timeout` ends with `is_timeout`. Add
    /// `"msgpack"` to the workers' `accept_content` first (crew nodes read
    /// both).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use crew::celery::{Client, Serializer};
    /// let client = Client::new("redis://127.0.0.1:6379/0")?.serializer(Serializer::Msgpack);
    /// let r = client.send("tasks.mul", (6, 7))?; // a msgpack message
    /// # let _ = r;
    /// # Ok::<(), crew::Error>(())
    /// ```
    #[must_use]
    pub fn serializer(mut self, serializer: Serializer) -> Client {
        self.serializer = serializer;
        self
    }

    /// Sends task `name` with positional `args` (anything serde writes as
    /// a JSON list: a tuple, a `Vec`, an array).
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if `args` is not a list; `is_io` if Redis cannot
    /// be reached within 30 s.
    pub fn send<A: Serialize>(&self, name: &str, args: A) -> Result<AsyncResult> {
        let args = match serde_json::to_value(&args) {
            Ok(Value::Array(a)) => a,
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return Err(Error::invalid_input(format!(
                    "a task's arguments are a list (a tuple, a Vec), not {other}"
                )));
            }
            Err(e) => return Err(Error::invalid_input(format!("arguments: {e}"))),
        };
        self.send_with(Send::new(name).args(args))
    }

    /// Sends a task with options.
    ///
    /// # Errors
    ///
    /// `is_io` if Redis cannot be reached within 30 s.
    pub fn send_with(&self, task: Send) -> Result<AsyncResult> {
        let mut out = task.out;
        out.id = wire::new_id();
        out.queue = task.queue.unwrap_or_else(|| self.queue.clone());
        out.serializer = task.serializer.unwrap_or(self.serializer);
        if out.embed.is_empty() {
            let mut embed = Map::new();
            for k in ["callbacks", "errbacks", "chain", "chord"] {
                embed.insert(k.into(), Value::Null);
            }
            out.embed = embed;
        }
        let (list, raw) = out.encode(&self.origin);
        let deadline = Instant::now() + Duration::from_secs(30);
        lock(&self.broker).call_until(deadline, "sending a Celery task", |con| {
            redis::cmd("LPUSH").arg(&list).arg(&raw).query::<()>(con)
        })?;
        Ok(AsyncResult {
            id: out.id,
            backend: Mutex::new(Link::open(&self.backend, Duration::from_secs(10))?),
        })
    }
}

/// The result of a Celery task, read from the result backend.
///
/// `get` waits as long as it takes, as Celery's does: with no worker
/// serving the queue, that is forever. `get_timeout` bounds the wait and,
/// when it expires, leaves the result to be asked for again.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// let client = crew::celery::Client::new("redis://127.0.0.1:6379/0")?;
/// let r = client.send("tasks.mul", (6, 7))?;
/// println!("sent {}", r.id());
/// match r.get_timeout::<i64>(Duration::from_secs(10)) {
///     Ok(v) => assert_eq!(v, 42),
///     Err(e) if e.is_timeout() => println!("no answer yet: is a worker serving `celery`?"),
///     Err(e) => println!("{e}"), // "task panicked: builtins.ValueError: …"
/// }
/// # Ok::<(), crew::Error>(())
/// ```
pub struct AsyncResult {
    id: String,
    backend: Mutex<Link>,
}

impl std::fmt::Debug for AsyncResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("id", &self.id).finish()
    }
}

impl AsyncResult {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn poll(&self, deadline: Instant) -> Result<Option<std::result::Result<Value, JsonError>>> {
        let key = format!("{}{}", wire::META, self.id);
        let raw: Option<Vec<u8>> =
            lock(&self.backend).call_until(deadline, "reading a Celery result", |con| {
                redis::cmd("GET").arg(&key).query(con)
            })?;
        Ok(raw.as_deref().and_then(wire::read_meta))
    }

    /// True once the task has finished (succeeded or failed).
    ///
    /// # Errors
    ///
    /// `is_io` if the backend cannot be reached within 10 s.
    pub fn ready(&self) -> Result<bool> {
        Ok(self
            .poll(Instant::now() + Duration::from_secs(10))?
            .is_some())
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// As [`get_timeout`](AsyncResult::get_timeout), never `is_timeout`
    /// for the wait itself.
    pub fn get<T: DeserializeOwned>(&self) -> Result<T> {
        self.wait(None)
    }

    /// Waits for the result, at most `timeout`.
    ///
    /// # Errors
    ///
    /// `is_timeout` if it is not there in time, or the task hit its time
    /// limit; `is_panic` with `module.Exception: message` if the task
    /// raised (or was revoked); `is_protocol` if the value does not decode
    /// as `T`; `is_io` if the backend cannot be reached.
    pub fn get_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.wait(Some(Instant::now() + timeout))
    }

    fn wait<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T> {
        let mut pause = Duration::from_micros(200);
        loop {
            let call_deadline =
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            match self.poll(call_deadline)? {
                Some(Ok(v)) => {
                    return serde_json::from_value(v).map_err(|e| {
                        Error::protocol(format!(
                            "the result of task {} does not decode: {e}",
                            self.id
                        ))
                    });
                }
                Some(Err(e)) if e.exc_type.ends_with("TimeLimitExceeded") => {
                    return Err(Error::timeout());
                }
                Some(Err(e)) => {
                    return Err(Error::panic(format!(
                        "{}.{}: {}",
                        e.exc_module, e.exc_type, e.message
                    )));
                }
                None => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::timeout());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}
