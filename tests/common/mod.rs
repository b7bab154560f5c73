//! What the tests share: [`Gate`]s that hold a task until the test lets it
//! go, a std-only [`block_on`], a [`Counted`] iterator that tells how much of
//! its input a lazy map pulled, and the task functions of the conformance
//! suite (`tasks`).
//!
//! Why gates and not sleeps: a test that needs a task to be *running* (to
//! cancel the ones queued behind it, to time out waiting for it, to terminate
//! a pool under it) holds it on a gate, a file that the task polls for. The
//! test decides when the task ends, so no assertion depends on how fast the
//! machine is. A file, not a channel, because the same task must work when it
//! runs in a worker process: the gate travels as a path (`String`) argument.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

pub(crate) mod cluster;
pub(crate) mod tasks;

/// How long a test waits for something that must happen before it calls it
/// a hang. Generous: the suite runs on 2 shared cores.
pub(crate) const LONG: Duration = Duration::from_secs(30);

/// How long a gated task waits for its gate before giving up (and
/// panicking), so that a failed test never leaves a worker blocked forever.
pub(crate) const GATE_LIMIT: Duration = Duration::from_secs(60);

/// A file-backed latch: tasks given [`Gate::key`] block until [`Gate::open`].
///
/// Dropping the gate opens it, so a failing test releases its tasks.
#[derive(Debug)]
pub(crate) struct Gate {
    path: PathBuf,
}

impl Gate {
    /// A closed gate with a path no other gate uses.
    pub(crate) fn new() -> Gate {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        static SWEEP: std::sync::Once = std::sync::Once::new();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crew-gates");
        std::fs::create_dir_all(&dir).expect("create the gate directory");
        // Gate files cannot be removed while a task may still poll them;
        // instead each run sweeps what runs older than an hour left behind.
        SWEEP.call_once(|| sweep_stale_gates(&dir, Duration::from_secs(3600)));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}", std::process::id()));
        let gate = Gate { path };
        // A stale gate from an earlier run with the same pid must not count.
        let _ = std::fs::remove_file(&gate.path);
        gate
    }

    /// A gate that is already open: its tasks run straight through.
    pub(crate) fn opened() -> Gate {
        let gate = Gate::new();
        gate.open();
        gate
    }

    /// What to pass to a gated task.
    pub(crate) fn key(&self) -> String {
        self.path.to_str().expect("utf-8 temp path").to_owned()
    }

    /// Lets every task waiting on this gate go.
    pub(crate) fn open(&self) {
        std::fs::write(&self.path, b"open").expect("open the gate");
    }

    /// Blocks until the gated task `id` has started; panics after [`LONG`].
    pub(crate) fn wait_started(&self, id: u64) {
        let marker = tasks::started_marker(&self.key(), id);
        let deadline = Instant::now() + LONG;
        while !Path::new(&marker).exists() {
            assert!(
                Instant::now() < deadline,
                "gated task {id} did not start within {LONG:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, b"open");
    }
}

fn sweep_stale_gates(dir: &Path, older_than: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > older_than));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Spins until `cond` holds; panics after [`LONG`] with `what`.
pub(crate) fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` on a helper thread and returns its value, or panics if it takes
/// longer than [`LONG`]: for calls whose failure mode is blocking.
pub(crate) fn returns_within_long<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LONG)
        .unwrap_or_else(|_| panic!("{what} did not return within {LONG:?}"))
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` to completion on this thread, parking between polls; `None`
/// if it is not done within `limit`. A minimal executor: no tokio needed to
/// check that crew's futures wake their waker.
pub(crate) fn block_on<F: std::future::Future>(fut: F, limit: Duration) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + limit;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// An iterator adaptor that counts the items pulled from `inner`: the parent
/// side of a lazy map, where capturing is allowed.
#[derive(Debug)]
pub(crate) struct Counted<I> {
    inner: I,
    pulled: Arc<AtomicUsize>,
}

impl<I> Counted<I> {
    /// Wraps `inner`; read the count from the returned handle.
    pub(crate) fn new(inner: I) -> (Counted<I>, Arc<AtomicUsize>) {
        let pulled = Arc::new(AtomicUsize::new(0));
        (
            Counted {
                inner,
                pulled: pulled.clone(),
            },
            pulled,
        )
    }
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next();
        if item.is_some() {
            self.pulled.fetch_add(1, Ordering::Relaxed);
        }
        item
    }
}

/// An input that yields `0..n` and then panics, as a Python generator that
/// raises after `n` items.
#[derive(Debug)]
pub(crate) struct FailsAfter {
    next: u64,
    n: u64,
}

impl FailsAfter {
    pub(crate) fn new(n: u64) -> FailsAfter {
        FailsAfter { next: 0, n }
    }
}

impl Iterator for FailsAfter {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.next == self.n {
            panic!("the input failed after {} items", self.n);
        }
        self.next += 1;
        Some(self.next - 1)
    }
}
