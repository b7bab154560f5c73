//! crew in a Celery deployment, against real Celery (Python) and Redis:
//! Python clients calling Rust tasks on a crew node, a crew client calling
//! a Python worker, a node killed mid-task, and both kinds of worker on one
//! queue. Needs `python3` with `celery[redis,msgpack]` and `redis-server`
//! (`ci/test.sh` installs both).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crew::cluster::LocalRedis;
use serde_json::Value;

#[crew::task(name = "tasks.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[crew::task(name = "tasks.total")]
fn total(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[crew::task(name = "tasks.scale")]
fn scale(xs: Vec<f64>, by: f64) -> Vec<f64> {
    xs.iter().map(|x| x * by).collect()
}

#[crew::task(name = "tasks.panic")]
fn panics(message: String) -> i64 {
    panic!("{message}")
}

#[crew::task(name = "tasks.parse")]
fn parse(text: String) -> Result<i64, std::num::ParseIntError> {
    text.trim().parse()
}

#[crew::task(name = "tasks.checked_div")]
fn checked_div(a: i64, b: i64) -> Result<i64, String> {
    a.checked_div(b)
        .ok_or_else(|| format!("cannot divide {a} by {b}"))
}

#[crew::task(name = "tasks.positive")]
fn positive(x: i64) -> Result<i64, crew::registry::JsonError> {
    if x > 0 {
        Ok(x)
    } else {
        Err(crew::registry::JsonError {
            exc_type: "ValueError".into(),
            exc_module: "builtins".into(),
            message: format!("{x} is not positive"),
        })
    }
}

/// Works in 10 ms steps for up to `max_ms`, asking for the soft time
/// limit: `fail` returns its error (a FAILURE), otherwise the task winds
/// down and says how.
#[crew::task(name = "tasks.until_soft_limit")]
fn until_soft_limit(
    max_ms: u64,
    fail: bool,
) -> Result<String, crew::celery::SoftTimeLimitExceeded> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(max_ms) {
        if fail {
            crew::celery::check_soft_limit()?;
        } else if crew::celery::soft_limit_exceeded() {
            return Ok("wound down".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok("no soft limit seen".into())
}

/// Like `until_soft_limit`, but the asking is done by a thread the task
/// starts: the soft limit is the worker process's, not the task thread's.
#[crew::task(name = "tasks.soft_limit_in_thread")]
fn soft_limit_in_thread(max_ms: u64) -> String {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(max_ms) {
            if crew::celery::soft_limit_exceeded() {
                return "a thread wound down".to_owned();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        "no soft limit seen".to_owned()
    })
    .join()
    .expect("the task's thread")
}

#[crew::task(name = "tasks.segfault")]
fn segfault() -> i64 {
    // SAFETY: none: this is the crash the node must survive. The signal is
    // raised for real, as a null dereference would.
    unsafe { libc::raise(libc::SIGSEGV) };
    0
}

#[crew::task(name = "tasks.sleep_ms")]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Appends `line` to the file at `path`, then sleeps `ms`: the file tells
/// which tasks ran, in which order, and how often.
#[crew::task(name = "tasks.record")]
fn record(path: String, line: String, ms: u64) -> String {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the record file");
    writeln!(f, "{line}").expect("write the record file");
    drop(f);
    std::thread::sleep(Duration::from_millis(ms));
    line
}

#[crew::task(name = "mixed.who")]
fn who(_i: u64) -> String {
    std::thread::sleep(Duration::from_millis(20));
    "rust".into()
}

fn python() -> String {
    std::env::var("CREW_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/celery")
}

/// Fails, saying how to install it, if Python's Celery is missing.
fn require_celery() {
    let ok = Command::new(python())
        .args(["-c", "import celery, redis, msgpack"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "these tests need Python's Celery with its Redis and msgpack extras: run \
         `pip install \"celery[redis,msgpack]\"` (ci/test.sh does), or set \
         CREW_PYTHON to a python that has it"
    );
}

/// A child process, killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    redis: LocalRedis,
}

impl Setup {
    fn new() -> Setup {
        require_celery();
        Setup {
            redis: LocalRedis::start().expect("start redis-server"),
        }
    }

    fn url(&self) -> String {
        self.redis.tcp_url()
    }

    /// This test program, started as a crew Celery node.
    fn node(&self, concurrency: usize, visibility_ms: u64) -> Kid {
        self.node_on("celery", concurrency, visibility_ms)
    }

    /// A crew node consuming `queues` (comma-separated).
    fn node_on(&self, queues: &str, concurrency: usize, visibility_ms: u64) -> Kid {
        self.node_with(queues, concurrency, visibility_ms, &[])
    }

    /// A crew node with more environment variables.
    fn node_with(
        &self,
        queues: &str,
        concurrency: usize,
        visibility_ms: u64,
        env: &[(&str, &str)],
    ) -> Kid {
        let child = Command::new("/proc/self/exe")
            .envs(env.iter().copied())
            .env("CREW_CELERY_QUEUES", queues)
            .env("CREW_CELERY", format!("{}/0", self.url()))
            .env("CREW_CELERY_BACKEND", format!("{}/1", self.url()))
            .env("CREW_CONCURRENCY", concurrency.to_string())
            .env("CREW_CELERY_VISIBILITY_MS", visibility_ms.to_string())
            .env_remove("CREW_WORKER")
            .env_remove("CREW_WORKER_FD")
            .stdin(Stdio::null())
            .spawn()
            .expect("start a crew node");
        Kid(child)
    }

    /// A Python Celery worker (prefork, `concurrency` processes).
    fn python_worker(&self, concurrency: usize) -> Kid {
        self.python_worker_with(concurrency, &[])
    }

    /// A Python Celery worker with more environment variables.
    fn python_worker_with(&self, concurrency: usize, env: &[(&str, &str)]) -> Kid {
        let child = Command::new(python())
            .envs(env.iter().copied())
            .args([
                "-m", "celery", "-A", "crewtest", "worker", "--pool", "prefork",
            ])
            .args(["--concurrency", &concurrency.to_string()])
            .args([
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ])
            .current_dir(here())
            .env("CREW_TEST_REDIS", self.url())
            .stdin(Stdio::null())
            .spawn()
            .expect("start a Celery worker");
        Kid(child)
    }

    /// Runs `crewtest.py <args>` (a Python Celery client) and reads the
    /// JSON it prints.
    fn drive(&self, args: &[&str]) -> Value {
        self.drive_with(args, &[])
    }

    /// [`drive`](Setup::drive) with more environment variables.
    fn drive_with(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let out = Command::new(python())
            .arg("crewtest.py")
            .envs(env.iter().copied())
            .args(args)
            .current_dir(here())
            .env("CREW_TEST_REDIS", self.url())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the Python client");
        assert!(out.status.success(), "the Python client failed: {args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!("the Python client printed no JSON ({e}): {text}");
        })
    }
}

fn ok(v: &Value) -> &Value {
    assert_eq!(v[0], "ok", "expected a value, got {v}");
    &v[1]
}

fn err(v: &Value) -> &str {
    assert_eq!(v[0], "err", "expected an exception, got {v}");
    v[1].as_str().unwrap()
}

#[test]
fn python_client_runs_rust_tasks() {
    let s = Setup::new();
    let _node = s.node(2, 3_600_000);
    let r = s.drive(&["calls"]);
    assert_eq!(ok(&r["add"]), 5);
    assert_eq!(ok(&r["kwargs"]), 42);
    assert_eq!(ok(&r["scale"]), &serde_json::json!([3.0, 4.0]));
    let panic = err(&r["panic"]);
    assert!(
        panic.starts_with("builtins.RuntimeError") && panic.contains("boom"),
        "{panic}"
    );
    assert!(
        err(&r["missing"]).starts_with("builtins.TypeError"),
        "{}",
        r["missing"]
    );
    assert!(
        err(&r["unknown"]).contains("NotRegistered"),
        "{}",
        r["unknown"]
    );
    assert!(
        err(&r["segfault"]).contains("WorkerLostError"),
        "{}",
        r["segfault"]
    );
    assert!(
        err(&r["time_limit"]).contains("TimeLimitExceeded"),
        "{}",
        r["time_limit"]
    );
    assert_eq!(ok(&r["in_time"]), 10);
    // msgpack messages are read; pickle is refused with a FAILURE saying why.
    assert_eq!(ok(&r["msgpack"]), &serde_json::json!([3.0, 4.0]));
    assert_eq!(ok(&r["msgpack_chain"]), 113);
    // Compressed bodies: zlib is read; another compression fails the task
    // with a FAILURE naming it (the node lives on: later calls succeed).
    assert_eq!(ok(&r["zlib"]), &serde_json::json!([3.0, 4.0]));
    assert_eq!(ok(&r["zlib_msgpack"]), 42);
    let bz2 = err(&r["bz2"]);
    assert!(
        bz2.starts_with("kombu.exceptions.DecodeError") && bz2.contains("application/x-bz2"),
        "{bz2}"
    );
    let pickle = err(&r["pickle"]);
    assert!(
        pickle.starts_with("kombu.exceptions.ContentDisallowed")
            && pickle.contains("does not unpickle"),
        "{pickle}"
    );
    // A `Result` task: `Ok` is a SUCCESS, `Err` a FAILURE `.get()` raises.
    assert_eq!(ok(&r["parse_ok"]), 42);
    assert_eq!(r["parse_err_state"], "FAILURE");
    let parse_err = err(&r["parse_err"]);
    assert!(
        parse_err.starts_with("celery.exceptions.ParseIntError")
            && parse_err.contains("invalid digit"),
        "{parse_err}"
    );
    assert_eq!(
        err(&r["string_err"]),
        "builtins.RuntimeError: cannot divide 1 by 0"
    );
    assert_eq!(
        err(&r["value_error"]),
        "builtins.ValueError: -3 is not positive"
    );
    // Soft time limits: the task sees it and winds down (its result
    // stands) or fails with it; ignored, with no hard limit, the task runs
    // on; ignored, the hard limit kills it.
    assert_eq!(ok(&r["soft_wound_down"]), "wound down");
    let soft = err(&r["soft_failed"]);
    assert!(
        soft.starts_with("billiard.exceptions.SoftTimeLimitExceeded"),
        "{soft}"
    );
    assert_eq!(ok(&r["soft_in_thread"]), "a thread wound down");
    assert_eq!(ok(&r["soft_ignored"]), 1500);
    assert!(
        err(&r["soft_then_hard"]).contains("billiard.exceptions.TimeLimitExceeded"),
        "{}",
        r["soft_then_hard"]
    );
    assert!(
        err(&r["expired"]).contains("TaskRevokedError"),
        "{}",
        r["expired"]
    );
    assert_eq!(ok(&r["eta"]), 10);
    assert!(
        r["eta_waited"].as_f64().unwrap() >= 0.9,
        "{}",
        r["eta_waited"]
    );
    // The node outlived the segfault and the killed task.
    assert_eq!(ok(&r["after_crash"]), 15);
    assert_eq!(ok(&r["chain"]), 113);
    // A chord whose header and body are Rust tasks completes; a failed
    // member fails the body instead of hanging it.
    assert_eq!(ok(&r["chord"]), 12);
    let chord_failed = err(&r["chord_failed"]);
    assert!(
        chord_failed.contains("ChordError") && chord_failed.contains("member"),
        "{chord_failed}"
    );
}

#[test]
fn priorities_are_served_highest_first() {
    let s = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order");
    let p = path.to_str().unwrap();
    // Queued before any node runs: the node must take priority 0 first
    // (kombu on Redis: 0 is the highest), then 3, 6 and 9.
    let mut ids = Vec::new();
    for (line, pri) in [("nine", "9"), ("six", "6"), ("zero", "0"), ("three", "3")] {
        let args = serde_json::json!([p, line, 0]).to_string();
        let sent = s.drive(&["send", "tasks.record", &args, pri]);
        ids.push(sent["id"].as_str().unwrap().to_owned());
    }
    let _node = s.node(1, 3_600_000);
    for id in &ids {
        let r = s.drive(&["wait", id, "30"]);
        ok(&r["result"]);
    }
    let order = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["zero", "three", "six", "nine"]
    );
}

#[test]
fn rust_client_calls_a_python_worker() {
    let s = Setup::new();
    let _worker = s.python_worker(1);
    let client = crew::celery::Client::new(&format!("{}/0", s.url()))
        .unwrap()
        .backend(&format!("{}/1", s.url()))
        .unwrap();
    let r = client.send("py.mul", (6, 7)).unwrap();
    assert_eq!(r.get_timeout::<i64>(Duration::from_secs(60)).unwrap(), 42);
    assert!(r.ready().unwrap());
    let e = client
        .send("py.fail", ("no good",))
        .unwrap()
        .get_timeout::<i64>(Duration::from_secs(30))
        .unwrap_err();
    assert!(e.is_panic(), "{e}");
    assert!(
        e.to_string().contains("ValueError") && e.to_string().contains("no good"),
        "{e}"
    );
    // A chain from Python through a Rust task, then to a Python task: the
    // node publishes the next step.
    let _node = s.node_on("rust", 1, 3_600_000);
    let r = s.drive(&["chain_to_python"]);
    assert_eq!(ok(&r["chain"]), 30);
    // Nobody serves this queue: the wait ends with a timeout.
    let lost = client
        .send_with(
            crew::celery::Send::new("py.mul")
                .args([6.into(), 7.into()])
                .queue("nobody"),
        )
        .unwrap();
    assert!(!lost.ready().unwrap());
    assert!(
        lost.get_timeout::<i64>(Duration::from_millis(300))
            .unwrap_err()
            .is_timeout()
    );
}

#[test]
fn rust_client_sends_msgpack_to_a_python_worker() {
    let s = Setup::new();
    // This worker reads msgpack messages only: a JSON one would be refused
    // (and its result never written).
    let _worker = s.python_worker_with(1, &[("CREW_TEST_ACCEPT", "msgpack")]);
    let client = crew::celery::Client::new(&format!("{}/0", s.url()))
        .unwrap()
        .backend(&format!("{}/1", s.url()))
        .unwrap()
        .serializer(crew::celery::Serializer::Msgpack);
    let r = client.send("py.mul", (6, 7)).unwrap();
    assert_eq!(r.get_timeout::<i64>(Duration::from_secs(60)).unwrap(), 42);
    // Strings, floats, lists and keyword arguments arrive as Python's.
    let r = client
        .send_with(
            crew::celery::Send::new("py.echo")
                .args([
                    serde_json::json!("héllo"),
                    serde_json::json!([1.5, null, true]),
                ])
                .kwarg("k", serde_json::json!({"a": [1, 2]})),
        )
        .unwrap();
    assert_eq!(
        r.get_timeout::<Value>(Duration::from_secs(30)).unwrap(),
        serde_json::json!([["héllo", [1.5, null, true]], {"k": {"a": [1, 2]}}])
    );
    // A JSON message (the per-task choice) is refused by this worker.
    let refused = client
        .send_with(
            crew::celery::Send::new("py.mul")
                .args([2.into(), 3.into()])
                .serializer(crew::celery::Serializer::Json),
        )
        .unwrap();
    assert!(
        refused
            .get_timeout::<i64>(Duration::from_secs(2))
            .unwrap_err()
            .is_timeout()
    );
}

#[test]
fn a_killed_node_s_task_runs_again() {
    let s = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs");
    let p = path.to_str().unwrap();
    let mut first = s.node(1, 1000);
    let args = serde_json::json!([p, "run", 3000]).to_string();
    let sent = s.drive(&["send", "tasks.record", &args, "0"]);
    let id = sent["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .count()
        < 1
    {
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL the node (its worker processes die with it) mid-task.
    let _ = first.0.kill();
    let _ = first.0.wait();
    drop(first);
    // Another node puts the message back after the visibility timeout and
    // runs it once more.
    let _second = s.node(1, 1000);
    let r = s.drive(&["wait", &id, "60"]);
    assert_eq!(ok(&r["result"]), "run");
    let runs = std::fs::read_to_string(&path).unwrap();
    assert_eq!(runs.lines().count(), 2, "{runs}");
}

#[test]
fn a_python_worker_and_a_crew_node_share_a_queue() {
    let s = Setup::new();
    let _worker = s.python_worker(1);
    let _node = s.node(1, 3_600_000);
    // Rounds of 20 tasks until both have served some: either side may take
    // a while to start on a loaded machine, and one alone would take all.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "only {seen:?} served tasks");
        let r = s.drive(&["mixed", "20"]);
        let who = r["who"].as_array().unwrap();
        assert_eq!(who.len(), 20);
        for w in who {
            let w = w.as_str().unwrap();
            assert!(w == "rust" || w == "python", "{w}");
            seen.insert(w.to_owned());
        }
    }
}

#[test]
fn celery_events_dump_shows_the_node() {
    let s = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events");
    let dump = Command::new(python())
        .args(["-m", "celery", "-A", "crewtest", "events", "--dump"])
        .current_dir(here())
        .env("CREW_TEST_REDIS", s.url())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start celery events --dump");
    let _dump = Kid(dump);
    // Task events from the start, as `celery worker -E`.
    let _node = s.node_with("celery", 1, 3_600_000, &[("CREW_CELERY_EVENTS", "1")]);
    // Tasks until the dump has shown the node's events (it subscribes at
    // some point after starting; events sent before are not seen).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.drive(&["send", "tasks.add", "[20, 22]", "0"]);
        let id = r["id"].as_str().unwrap().to_owned();
        assert_eq!(ok(&s.drive(&["wait", &id, "30"])["result"]), 42);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mine = |what: &str| {
            text.lines()
                .any(|l| l.starts_with("crew@") && l.contains(what))
        };
        if mine("task received")
            && mine("task started")
            && mine("task succeeded")
            && mine(&id)
            && mine("heartbeat")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dump never showed the node:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn chords_with_canvas_bodies_and_chains_in_headers() {
    let s = Setup::new();
    let _worker = s.python_worker(1);
    let _node = s.node_on("rust", 1, 3_600_000);
    let r = s.drive(&["chord_canvas"]);
    // Header [2, 4]: py.sum([2, 4], 100) and tasks.total([2, 4]).
    assert_eq!(ok(&r["group_body"]), &serde_json::json!([106, 6]));
    // tasks.total([2, 4]) = 6, then py.mul(6, 10).
    assert_eq!(ok(&r["chain_body"]), 60);
    // [py.mul(tasks.add(1, 2), 10), tasks.add(5, 5)] = [30, 10].
    assert_eq!(ok(&r["chain_in_header"]), 40);
    // [tasks.add(py.mul(2, 3), 4), py.mul(1, 1)] = [10, 1].
    assert_eq!(ok(&r["chain_in_header_py_body"]), 11);
    let failed = err(&r["failed_in_header_chain"]);
    assert!(
        failed.contains("ChordError") && failed.contains("in a chain"),
        "{failed}"
    );
    let step = err(&r["failed_chain_step"]);
    assert!(step.contains("in a chain"), "{step}");
}

#[test]
fn groups_after_a_rust_task_start_as_celery_starts_them() {
    let s = Setup::new();
    let _worker = s.python_worker(1);
    let _node = s.node_on("rust", 1, 3_600_000);
    let r = s.drive(&["group_canvas"]);
    // add(1, 2) = 3, then [py.mul(3, 10), tasks.add(3, 100)].
    assert_eq!(ok(&r["chain_group"]), &serde_json::json!([30, 103]));
    // add(2, 3) = 5, linked to [py.mul(5, 10), tasks.add(5, 1000)].
    assert_eq!(ok(&r["link_add"]), 5);
    assert_eq!(ok(&r["link_group"]), &serde_json::json!([50, 1005]));
    // py.sum([30, 103]).
    assert_eq!(ok(&r["chain_chord_py"]), 133);
    // tasks.total([13, 23]) = 36, then py.mul(36, 2).
    assert_eq!(ok(&r["chain_chord_rust"]), 72);
    // add(1, 1) = 2; header [3, 4]; body [total = 7, py.sum = 107].
    assert_eq!(
        ok(&r["chain_chord_group_body"]),
        &serde_json::json!([7, 107])
    );
}

#[test]
fn results_in_msgpack_for_a_msgpack_deployment() {
    let s = Setup::new();
    let _node = s.node_with(
        "celery",
        1,
        3_600_000,
        &[("CREW_CELERY_RESULT_SERIALIZER", "msgpack")],
    );
    // The client accepts msgpack results only: JSON ones would be refused.
    let r = s.drive_with(&["results"], &[("CREW_TEST_RESULT_SERIALIZER", "msgpack")]);
    assert_eq!(ok(&r["add"]), 5);
    assert_eq!(ok(&r["scale"]), &serde_json::json!([3.0, 4.0]));
    assert!(
        err(&r["parse_err"]).starts_with("celery.exceptions.ParseIntError"),
        "{}",
        r["parse_err"]
    );
    assert_eq!(ok(&r["chord"]), 12);
    let mut con = redis::Client::open(format!("{}/1", s.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("celery-task-meta-*")
        .query(&mut con)
        .unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let raw: Vec<u8> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        assert!(
            serde_json::from_slice::<Value>(&raw).is_err(),
            "a result in JSON: {}",
            String::from_utf8_lossy(&raw)
        );
    }
}

#[test]
fn link_and_link_error_reach_python_tasks() {
    let s = Setup::new();
    let _worker = s.python_worker(1);
    let _node = s.node_on("rust", 1, 3_600_000);
    let r = s.drive(&["link"]);
    assert_eq!(ok(&r["add"]), 5);
    // The callback got the result prepended: py.mul(5, 10).
    assert_eq!(ok(&r["callback"]), 50);
    assert!(err(&r["panic"]).contains("linked"), "{}", r["panic"]);
    // The errback got the failed task's id, as Celery sends it.
    let expected = format!("failed {}", r["panic_id"].as_str().unwrap());
    assert_eq!(ok(&r["errback"]), &Value::String(expected));
    assert_eq!(ok(&r["ok_with_errback"]), 2);
    assert_eq!(r["unused_callback"], "PENDING");
    assert_eq!(r["unused_errback"], "PENDING");
}

#[test]
fn celery_inspect_and_control_see_the_node() {
    let s = Setup::new();
    let mut node = s.node(1, 3_600_000);
    let r = s.drive(&["inspect"]);
    let host = r["node"].as_str().unwrap().to_owned();
    assert_eq!(r["ping"], serde_json::json!({"ok": "pong"}));
    let active = r["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{}", r["active"]);
    assert_eq!(active[0]["id"], r["busy_id"]);
    assert_eq!(active[0]["name"], "tasks.sleep_ms");
    assert_eq!(active[0]["args"], serde_json::json!([4000]));
    // Taken ahead of the busy worker process: one to run next, one
    // waiting for its countdown.
    assert_eq!(r["reserved"], serde_json::json!([r["queued_id"]]));
    assert_eq!(r["scheduled"], serde_json::json!([r["later_id"]]));
    let registered: Vec<&str> = r["registered"]
        .as_array()
        .unwrap_or_else(|| panic!("no registered tasks: {}", r["registered"]))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in ["tasks.add", "tasks.panic", "tasks.sleep_ms", "mixed.who"] {
        assert!(registered.contains(&name), "{name} not in {registered:?}");
    }
    assert_eq!(r["stats"]["total"]["tasks.sleep_ms"], 1, "{}", r["stats"]);
    assert_eq!(r["stats"]["pid"], node.0.id(), "{}", r["stats"]);
    // The command line tools, addressed to the node by name.
    let celery = |args: &[&str]| {
        let out = Command::new(python())
            .args(["-m", "celery", "-A", "crewtest"])
            .args(args)
            .args(["-d", &host, "--timeout", "5"])
            .current_dir(here())
            .env("CREW_TEST_REDIS", s.url())
            .stdin(Stdio::null())
            .output()
            .expect("run celery");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pong = celery(&["inspect", "ping"]);
    assert!(pong.contains(&host) && pong.contains("pong"), "{pong}");
    let registered = celery(&["inspect", "registered"]);
    assert!(registered.contains("tasks.record"), "{registered}");
    let enabled = celery(&["control", "enable_events"]);
    assert!(enabled.contains("task events enabled"), "{enabled}");
    // `celery control shutdown` stops the node as SIGTERM does.
    celery(&["control", "shutdown"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "the node did not shut down");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stopping_node_gives_back_what_waits_for_its_eta() {
    let s = Setup::new();
    let mut node = s.node(1, 3_600_000);
    let client = crew::celery::Client::new(&format!("{}/0", s.url())).unwrap();
    let r = client
        .send_with(
            crew::celery::Send::new("tasks.add")
                .args([1.into(), 2.into()])
                .countdown(Duration::from_secs(600)),
        )
        .unwrap();
    let mut con = redis::Client::open(format!("{}/0", s.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The node takes it (into kombu's unacked hash) and holds it.
    while redis::cmd("HLEN")
        .arg("unacked")
        .query::<u64>(&mut con)
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "the node never took the task");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        redis::cmd("LLEN")
            .arg("celery")
            .query::<u64>(&mut con)
            .unwrap(),
        0
    );
    // SIGTERM: the node stops, and puts the message back on its queue.
    // SAFETY: a signal to a child process we started and have not reaped.
    unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) };
    let exit = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert_eq!(
        redis::cmd("HLEN")
            .arg("unacked")
            .query::<u64>(&mut con)
            .unwrap(),
        0
    );
    let back: Vec<String> = redis::cmd("LRANGE")
        .arg("celery")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    let m: Value = serde_json::from_str(&back[0]).unwrap();
    assert_eq!(m["headers"]["id"], r.id());
    assert_eq!(m["headers"]["redelivered"], true);
}

#[test]
fn a_message_a_dead_node_s_wake_up_took_runs_elsewhere() {
    let s = Setup::new();
    let client = crew::celery::Client::new(&format!("{}/0", s.url()))
        .unwrap()
        .backend(&format!("{}/1", s.url()))
        .unwrap();
    let mut con = redis::Client::open(format!("{}/0", s.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    // A node's wake-up moves a message into the node's taking list before
    // recording it as unacknowledged. Here is one that did and then died
    // (its life key still set, for now), and one that is alive.
    let sent = client.send("tasks.add", (40, 2)).unwrap();
    let dead = "_crew.celery.taking.crew@ghost.1";
    let _: Option<String> = redis::cmd("LMOVE")
        .arg("celery")
        .arg(dead)
        .arg("RIGHT")
        .arg("LEFT")
        .query(&mut con)
        .unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("_crew.celery.taking")
        .arg(dead)
        .arg("celery")
        .ignore()
        .cmd("SET")
        .arg(format!("{dead}.alive"))
        .arg(1)
        .arg("EX")
        .arg(600)
        .ignore()
        .query(&mut con)
        .unwrap();
    let _node = s.node(1, 1000);
    // The node has registered its own taking list and renewed it (KEEP
    // has run) a few times: the ghost's list is still the ghost's.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut watch = redis::Client::open(format!("{}/0", s.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut registered = || {
        redis::cmd("HKEYS")
            .arg("_crew.celery.taking")
            .query::<Vec<String>>(&mut watch)
            .unwrap()
    };
    let mine = loop {
        if let Some(k) = registered().into_iter().find(|k| k != dead) {
            break k;
        }
        assert!(Instant::now() < deadline, "the node never registered");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = client.send("tasks.add", (1, 1)).unwrap();
    assert_eq!(r.get_timeout::<i64>(Duration::from_secs(30)).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        redis::cmd("LLEN").arg(dead).query::<u64>(&mut con).unwrap(),
        1
    );
    assert!(!sent.ready().unwrap());
    // The ghost's life ends: the node puts its message back and runs it.
    let _: () = redis::cmd("DEL")
        .arg(format!("{dead}.alive"))
        .query(&mut con)
        .unwrap();
    assert_eq!(
        sent.get_timeout::<i64>(Duration::from_secs(60)).unwrap(),
        42
    );
    assert_eq!(
        redis::cmd("LLEN").arg(dead).query::<u64>(&mut con).unwrap(),
        0
    );
    assert!(
        !redis::cmd("HEXISTS")
            .arg("_crew.celery.taking")
            .arg(dead)
            .query::<bool>(&mut con)
            .unwrap()
    );
    // Nothing is left behind: each message the node took was recorded,
    // then acknowledged (just after its result was written).
    loop {
        let left: (u64, u64) = redis::pipe()
            .cmd("HLEN")
            .arg("unacked")
            .cmd("LLEN")
            .arg(&mine)
            .query(&mut con)
            .unwrap();
        if left == (0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts this test binary as a Celery node of an unreachable Redis with
/// `env` set (and no inherited `CREW_CONCURRENCY`); returns its exit code
/// and its standard error once it has exited.
fn misconfigured_node(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("CREW_CELERY", "redis://127.0.0.1:1/0")
        .env_remove("CREW_CONCURRENCY")
        .env_remove("CREW_WORKER_FD")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node told `CREW_CONCURRENCY=0` (the usual guess at "choose for me")
/// does not start with some other count: it exits with 2 and a line naming
/// the variable and saying to unset it, before it connects to anything.
#[test]
fn a_node_told_zero_workers_exits_saying_to_unset_it() {
    let (code, stderr) = misconfigured_node(&[("CREW_CONCURRENCY", "0")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CREW_CONCURRENCY=\"0\": expected a whole number of at least 1")
            && stderr.contains("or unset it"),
        "{stderr}"
    );
}

/// A node told a result serializer crew does not write stops naming the
/// variable and the serializers it can write.
#[test]
fn a_node_told_an_unknown_result_serializer_exits_naming_it() {
    let (code, stderr) = misconfigured_node(&[("CREW_CELERY_RESULT_SERIALIZER", "pickle")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CREW_CELERY_RESULT_SERIALIZER=\"pickle\"")
            && stderr.contains("`json` or `msgpack`, not `pickle`"),
        "{stderr}"
    );
}
