//! Python and Rust in one Celery deployment, on Redis.
//!
//! - **Python → Rust:** a [`Worker`] (a "crew node") consumes Celery
//!   queues and runs the functions registered with
//!   `#[crew::task(name = "tasks.add")]` under those Celery task names, in
//!   crash-isolated worker processes. Python's `app.send_task("tasks.add",
//!   (2, 3)).get()` returns 5; a panic, a segfault, a hard time limit or
//!   the `Err` of a task returning `Result` becomes a `FAILURE` that
//!   `.get()` raises. A task sees its soft time limit with
//!   [`soft_limit_exceeded`]. A program becomes a node before `main`
//!   when started with `CREW_CELERY=redis://…` (see [`run_if_node`]).
//! - **Rust → Python:** a [`Client`] sends a task by name to Celery's
//!   Python workers and returns an [`AsyncResult`].
//!
//! Wire formats follow Celery's protocol 2 (task messages in JSON or
//! msgpack, read and written (see [`Client::serializer`]); a pickled one
//! fails with kombu's `ContentDisallowed` and is never unpickled; a body
//! compressed with zlib is read, another compression fails the task with
//! kombu's `DecodeError`; results in JSON, Celery's default, or msgpack, see
//! [`ResultSerializer`]) and
//! kombu's Redis transport: a queue is four lists (priorities 0, 3, 6, 9;
//! **0 is the highest**), a delivered message sits in kombu's `unacked`
//! hash and `unacked_index` until acknowledged (the node pops and records
//! it in one Lua script, and acknowledges after the result is written), and
//! results are `celery-task-meta-<id>` keys on the result backend. An idle
//! node waits with `BLMOVE`, which moves the message that wakes it into the
//! node's own list in Redis: it runs at once, and the node's next script
//! call records it in `unacked`. A node renews the delivery time of the
//! messages it holds and puts back those of consumers that stopped, after
//! the visibility timeout, as kombu's `restore_visible` does (and those
//! left in the list of a crew node that died). A chain that passes through a Rust task goes on:
//! the node publishes the chain's next signature with the result prepended;
//! a group there starts each of its members (its id their group, so
//! Python's `GroupResult` completes), and a chord there (Celery makes a
//! group followed by another step one) records its size and starts its
//! header, its body carrying the rest of the chain.
//! A chord whose header a Rust task completes starts its body, also when
//! the body is a group or a chain.
//! Signatures linked with `link` / `link_error` (a group among them too)
//! are sent after a Rust task succeeds (with its result prepended) or
//! fails (with its id prepended).
//! A node answers Celery's remote control (`celery inspect ping`, `active`,
//! `reserved`, `scheduled`, `stats`, `registered`; `celery control enable_events`, `disable_events`,
//! `shutdown`) on the mailbox's pub/sub channel.
//!
//! # Examples
//!
//! ```no_run
//! #[crew::task(name = "tasks.add")]
//! fn add(x: i64, y: i64) -> i64 { x + y }
//!
//! # fn main() -> crew::Result<()> {
//! // Serve Celery's `celery` queue (Python: `app.send_task("tasks.add", (2, 3))`).
//! let config = crew::celery::WorkerConfig::new("redis://127.0.0.1:6379/0");
//! # if false {
//! crew::celery::Worker::start(config)?.serve()?;
//! # }
//! // Call a Python task, on a queue only Python workers serve (a crew node
//! // that took it would fail it as `NotRegistered`).
//! let client = crew::celery::Client::new("redis://127.0.0.1:6379/0")?.queue("python");
//! let n: i64 = client.send("tasks.mul", (6, 7))?.get_timeout(std::time::Duration::from_secs(10))?;
//! # let _ = n;
//! # Ok(())
//! # }
//! ```

mod client;
mod control;
mod events;
mod limits;
mod node;
mod wire;

use std::time::Duration;

pub use client::{AsyncResult, Client, Send};
pub use limits::{SoftTimeLimitExceeded, check_soft_limit, soft_limit_exceeded};
pub use node::{Worker, WorkerConfig};
pub use wire::{ResultSerializer, Serializer};

/// The broker URL that makes a program a Celery node before `main`.
pub const ENV_CELERY: &str = "CREW_CELERY";
/// The result backend's URL (the broker's unless set).
pub const ENV_CELERY_BACKEND: &str = "CREW_CELERY_BACKEND";
/// The queues a node consumes, comma-separated (default `celery`).
pub const ENV_CELERY_QUEUES: &str = "CREW_CELERY_QUEUES";
/// The visibility timeout in milliseconds (default 3 600 000, kombu's).
pub const ENV_CELERY_VISIBILITY_MS: &str = "CREW_CELERY_VISIBILITY_MS";
/// How many messages a node holds at most (default 4 × concurrency).
pub const ENV_CELERY_PREFETCH: &str = "CREW_CELERY_PREFETCH";
/// `1` makes a node send task events from the start (`celery worker -E`).
pub const ENV_CELERY_EVENTS: &str = "CREW_CELERY_EVENTS";
/// How a node writes results: `json` (default) or `msgpack`, the
/// deployment's `result_serializer`.
pub const ENV_CELERY_RESULT_SERIALIZER: &str = "CREW_CELERY_RESULT_SERIALIZER";

pub(crate) use crew_redis::hostname;

/// Serves as a Celery node if this process was started as one
/// (`CREW_CELERY` set, with `CREW_CELERY_QUEUES`, `CREW_CELERY_BACKEND`,
/// `CREW_CONCURRENCY`, `CREW_CELERY_VISIBILITY_MS`, `CREW_CELERY_PREFETCH`,
/// `CREW_CELERY_EVENTS` and `CREW_CELERY_RESULT_SERIALIZER` optional): never
/// returns then. Otherwise returns at once. Called before `main`
/// automatically; `crew::init()` calls it too.
///
/// # Examples
///
/// ```
/// // In a program that was not started as a node, this returns at once.
/// crew::celery::run_if_node();
/// ```
pub fn run_if_node() {
    // A worker process of a node is crew-process's to serve.
    if std::env::var_os("CREW_WORKER_FD").is_some() {
        return;
    }
    let Some(url) = std::env::var_os(ENV_CELERY) else {
        return;
    };
    let url = url.to_string_lossy().into_owned();
    // SAFETY: we run before `main` (or at its very start), single-threaded:
    // nothing reads the environment concurrently. Removing the variable
    // keeps this node's worker processes from becoming nodes.
    unsafe { std::env::remove_var(ENV_CELERY) };
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let mut config = WorkerConfig::new(url);
    if let Some(b) = var(ENV_CELERY_BACKEND) {
        config = config.backend(b);
    }
    if let Some(q) = var(ENV_CELERY_QUEUES) {
        config = config.queues(q.split(',').map(str::trim).filter(|q| !q.is_empty()));
    }
    // A mistyped number stops the node with a message, rather than being
    // replaced by the default nobody asked for.
    let number = |k: &str| var(k).map(|v| whole_number(k, &v).unwrap_or_else(|e| refuse(e)));
    if let Some(n) = number(crew_redis::ENV_CONCURRENCY) {
        if let Err(e) = at_least_one(crew_redis::ENV_CONCURRENCY, n) {
            refuse(e);
        }
        config = config.concurrency(n as usize);
    }
    if let Some(ms) = number(ENV_CELERY_VISIBILITY_MS) {
        config = config.visibility_timeout(Duration::from_millis(ms));
    }
    if let Some(n) = number(ENV_CELERY_PREFETCH) {
        config = config.prefetch(n as usize);
    }
    if let Some(on) = var(ENV_CELERY_EVENTS) {
        config = config.task_events(matches!(on.trim(), "1" | "true" | "yes" | "on"));
    }
    if let Some(ser) = var(ENV_CELERY_RESULT_SERIALIZER) {
        match ser.parse() {
            Ok(ser) => config = config.result_serializer(ser),
            Err(e) => refuse(format!("{ENV_CELERY_RESULT_SERIALIZER}={ser:?}: {e}")),
        }
    }
    crew_redis::serve_and_exit("crew celery node", Worker::start(config), Worker::serve);
}

/// Stops a node whose settings are wrong, saying why (exit status 2).
fn refuse(why: impl std::fmt::Display) -> ! {
    eprintln!("crew celery node {}: {why}", std::process::id());
    std::process::exit(2);
}

/// The whole number the setting `name` holds, or why it does not hold one.
fn whole_number(name: &str, value: &str) -> std::result::Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}={value:?}: expected a whole number"))
}

/// Refuses a worker count of 0 (a node of no worker processes would take
/// messages and never run them), saying how to get the default.
fn at_least_one(name: &str, n: u64) -> std::result::Result<(), String> {
    if n == 0 {
        Err(format!(
            "{name}=\"0\": expected a whole number of at least 1 \
             (or unset it: one worker process per CPU)"
        ))
    } else {
        Ok(())
    }
}

// Enter node mode before `main`, as worker processes do (crew-process).
// This crate's constructors run after those of the program that uses it,
// so the program's `#[crew::task]`s are registered by then.
#[used]
#[unsafe(link_section = ".init_array")]
static ENTER_NODE: extern "C" fn() = enter_node;

extern "C" fn enter_node() {
    run_if_node();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mistyped_number_is_refused_with_the_setting_named() {
        assert_eq!(super::whole_number("CREW_CONCURRENCY", " 8 "), Ok(8));
        for bad in ["8x", "-1", "two", "1.5"] {
            assert_eq!(
                super::whole_number("CREW_CELERY_PREFETCH", bad),
                Err(format!(
                    "CREW_CELERY_PREFETCH={bad:?}: expected a whole number"
                ))
            );
        }
    }

    #[test]
    fn no_worker_processes_is_refused_saying_how_to_get_the_default() {
        assert_eq!(super::at_least_one("CREW_CONCURRENCY", 2), Ok(()));
        assert_eq!(
            super::at_least_one("CREW_CONCURRENCY", 0),
            Err(
                "CREW_CONCURRENCY=\"0\": expected a whole number of at least 1 \
                 (or unset it: one worker process per CPU)"
                    .to_owned()
            )
        );
    }
}
