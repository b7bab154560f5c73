//! The lazy maps: the [`Stream`] collector and the [`Imap`] iterator with
//! its back-pressure window and adaptive chunk size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sizing::ChunkPolicy;
use super::{
    Chunk, ChunkOut, ChunkSink, Collect, MapOptions, Owned, deadline, lock, start_progress,
    wait_deadline,
};
use crate::backend::{Backend, Runs};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::sync::{AtomicBool, Condvar, Mutex, Ordering};

/// The collector of a lazy map: chunks arrive in any order; the consumer
/// takes them in input order (`imap`) or as they come (`imap_unordered`).
struct Stream<R> {
    ready: Mutex<BTreeMap<usize, (usize, ChunkOut<R>)>>,
    cv: Condvar,
    cancelled: AtomicBool,
}

impl<R: Send> Collect<R> for Stream<R> {
    fn deliver(&self, index: usize, offset: usize, out: ChunkOut<R>) {
        lock(&self.ready).insert(index, (offset, out));
        self.cv.notify_one();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

impl<R: Send> Stream<R> {
    /// The chunk `index` (or, if `None`, any chunk), or `None` at `deadline`.
    /// While waiting, runs queued jobs through `help` (when the consumer is
    /// itself a worker of the pool, its chunks may be queued behind it).
    fn take(
        &self,
        index: Option<usize>,
        deadline: Option<Instant>,
        help: &dyn Fn() -> bool,
    ) -> Option<(usize, ChunkOut<R>)> {
        let mut ready = lock(&self.ready);
        loop {
            let found = match index {
                Some(i) => ready.remove(&i),
                None => ready.pop_first().map(|(_, v)| v),
            };
            if found.is_some() {
                return found;
            }
            drop(ready);
            let helped = help();
            ready = lock(&self.ready);
            if helped || ready.keys().any(|&k| index.is_none_or(|i| i == k)) {
                continue;
            }
            ready = wait_deadline(&self.cv, ready, deadline).ok()?;
        }
    }
}

/// The lazy iterator behind `imap`, `imap_unordered` and `Executor::map`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::Arc;
/// use crew::core::{Imap, MapOptions, OnDrop, Owned, Threads, Unary};
/// let t = Arc::new(Owned::new(Threads::new(2)?, OnDrop::Terminate));
/// let it = Imap::new(t, Unary(|x: u64| x + 1), 0.., true, &MapOptions::default(), None);
/// let v: Vec<u64> = it.take(4).map(Result::unwrap).collect();
/// assert_eq!(v, [1, 2, 3, 4]);
/// # Ok::<(), crew::core::Error>(())
/// ```
///
/// Input is pulled on the consumer's thread only when fewer than a window
/// of chunks (4 per worker, or [`with_window`](Imap::with_window)) are in
/// flight, so an endless input works and memory stays flat. Dropping the
/// iterator cancels the chunks not started (once it was iterated, for an
/// [`eager`](Imap::eager) one).
///
/// If the input iterator panics, the panic becomes the error of the item it
/// failed to produce, in its place: the results of the items before it come
/// first (in order, for an ordered map), then that error, then the end, as
/// Python's `imap` raises the input's exception after the earlier results.
pub struct Imap<B: Backend, T, I: Iterator, R> {
    backend: Arc<Owned<B>>,
    task: Arc<T>,
    input: std::iter::Fuse<I>,
    stream: Arc<Stream<R>>,
    collector: Arc<dyn Collect<R>>,
    ordered: bool,
    next_index: usize,
    next_offset: usize,
    next_to_yield: usize,
    in_flight: usize,
    window: usize,
    policy: ChunkPolicy,
    current: Option<Box<dyn Iterator<Item = Result<R>> + Send>>,
    deadline: Option<Instant>,
    finished: bool,
    /// The input is used up, failed, or must not be read (a bad setting).
    input_done: bool,
    /// Dropping the iterator cancels the chunks not started.
    cancel_on_drop: bool,
    progress: Option<Progress>,
}

impl<B: Backend, T, I: Iterator, R> std::fmt::Debug for Imap<B, T, I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("in_flight", &self.in_flight)
            .field("chunksize", &self.policy.size)
            .finish()
    }
}

impl<B, T, I, R> Imap<B, T, I, R>
where
    B: Runs<'static, T, I::Item, R>,
    T: Send + Sync + 'static,
    I: Iterator,
    I::Item: 'static,
    R: Send + 'static,
{
    /// A lazy map of `task` over `input`: in input order if `ordered`, as
    /// they finish otherwise; with a `timeout`, one timeout error ends the
    /// iteration if a result is not ready that long after this call. See the
    /// type's example.
    pub fn new(
        backend: Arc<Owned<B>>,
        task: T,
        input: I,
        ordered: bool,
        opts: &MapOptions,
        timeout: Option<Duration>,
    ) -> Self {
        let stream = Arc::new(Stream {
            ready: Mutex::new(BTreeMap::new()),
            cv: Condvar::new(),
            cancelled: AtomicBool::new(false),
        });
        let mut it = Imap {
            task: Arc::new(task),
            input: input.fuse(),
            collector: stream.clone(),
            stream,
            ordered,
            next_index: 0,
            next_offset: 0,
            next_to_yield: 0,
            in_flight: 0,
            window: (backend.workers() * 4).max(2),
            backend,
            policy: ChunkPolicy::new(opts.chunksize),
            current: None,
            deadline: timeout.map(deadline),
            finished: false,
            input_done: false,
            cancel_on_drop: true,
            progress: start_progress(opts, None),
        };
        if let Err(e) = opts.validate() {
            it.fail_input(e);
        }
        it
    }

    /// Keeps at most `chunks` chunks in flight (dispatched, not yet
    /// consumed) instead of 4 per worker: `usize::MAX` reads the whole input
    /// as soon as results are asked for (or at once, with
    /// [`eager`](Imap::eager)).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::Arc;
    /// use crew::core::{Imap, MapOptions, OnDrop, Owned, Threads, Unary};
    /// let t = Arc::new(Owned::new(Threads::new(2)?, OnDrop::Terminate));
    /// let it = Imap::new(t.clone(), Unary(|x: u8| x), 0..4, true, &MapOptions::default(), None);
    /// assert_eq!(it.with_window(1).map(Result::unwrap).collect::<Vec<_>>(), [0, 1, 2, 3]);
    /// // No chunk at all in flight could never make progress: refused.
    /// let mut bad = Imap::new(t, Unary(|x: u8| x), 0..4, true, &MapOptions::default(), None).with_window(0);
    /// assert!(bad.next().unwrap().unwrap_err().is_invalid_input());
    /// assert!(bad.next().is_none());
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn with_window(mut self, chunks: usize) -> Self {
        if chunks == 0 {
            if !self.input_done {
                self.fail_input(Error::invalid_input(
                    "the number of tasks buffered ahead must be at least 1",
                ));
            }
        } else {
            self.window = chunks;
        }
        self
    }

    /// Dispatches the first window of chunks now, as Python's
    /// `Executor.map` submits its calls before returning; the chunks
    /// dispatched run even if the iterator is dropped without being
    /// iterated. With an unbounded window and an input of known length, the
    /// chunk size is chosen from that length as [`map_blocking`](super::map_blocking) does.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use crew::core::{Backend, Imap, MapOptions, OnDrop, Owned, Star, Threads, Unary};
    /// static RAN: AtomicUsize = AtomicUsize::new(0);
    /// let t = Threads::new(2)?;
    /// let owned = Arc::new(Owned::new(t.clone(), OnDrop::Close));
    /// let it = Imap::new(owned, Unary(|_: u8| RAN.fetch_add(1, Ordering::SeqCst)), 0..10, true, &MapOptions::default(), None);
    /// drop(it.with_window(usize::MAX).eager()); // never iterated: every call still runs
    /// t.join(None);
    /// assert_eq!(RAN.load(Ordering::SeqCst), 10);
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn eager(mut self) -> Self {
        if self.window == usize::MAX && !self.policy.fixed {
            let (lo, hi) = self.input.size_hint();
            if hi == Some(lo) {
                self.policy = ChunkPolicy::known(lo, self.backend.parallelism());
            }
        }
        self.cancel_on_drop = false;
        self.fill();
        self
    }

    /// Ends the input with `e` in the place of the next item.
    fn fail_input(&mut self, e: Error) {
        self.input_done = true;
        let sink = ChunkSink::new(self.collector.clone(), self.next_index, self.next_offset, 1);
        sink.fail(e);
        self.next_index += 1;
        self.next_offset += 1;
        self.in_flight += 1;
    }

    fn fill(&mut self) {
        while self.in_flight < self.window && !self.input_done {
            let mut items = Vec::new();
            let mut failure = None;
            let size = self.policy.size_of(self.next_index);
            while items.len() < size {
                let input = &mut self.input;
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| input.next())) {
                    Ok(Some(x)) => items.push(x),
                    Ok(None) => {
                        self.input_done = true;
                        break;
                    }
                    Err(payload) => {
                        failure = Some(Error::from_panic(payload));
                        break;
                    }
                }
            }
            if !items.is_empty() {
                self.dispatch(items);
            }
            if let Some(e) = failure {
                self.fail_input(e);
            }
        }
    }

    fn dispatch(&mut self, items: Vec<I::Item>) {
        let len = items.len();
        let sink = ChunkSink::new(
            self.collector.clone(),
            self.next_index,
            self.next_offset,
            len,
        );
        let chunk = Chunk::new(self.next_offset, items);
        if self.backend.is_closed() {
            sink.fail(Error::shutdown());
        } else if let Err(job) =
            self.backend
                .spawn(self.backend.chunk_job(self.task.clone(), chunk, sink))
        {
            drop(job);
        }
        self.next_index += 1;
        self.next_offset += len;
        self.in_flight += 1;
    }
}

impl<B, T, I, R> Iterator for Imap<B, T, I, R>
where
    B: Runs<'static, T, I::Item, R>,
    T: Send + Sync + 'static,
    I: Iterator,
    I::Item: 'static,
    R: Send + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }
}

impl<B, T, I, R> Imap<B, T, I, R>
where
    B: Runs<'static, T, I::Item, R>,
    T: Send + Sync + 'static,
    I: Iterator,
    I::Item: 'static,
    R: Send + 'static,
{
    /// The next result, waiting at most `timeout` for it (Python's
    /// `IMapIterator.next(timeout)`): `Some(Err(e))` with `e.is_timeout()`
    /// if it is not ready in time. Unlike the deadline of
    /// `Executor::map_timeout`, this one ends nothing: the result is still
    /// on its way, and a later call returns it.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use crew::core::{Imap, MapOptions, OnDrop, Owned, Threads, Unary};
    /// let t = Arc::new(Owned::new(Threads::new(1)?, OnDrop::Terminate));
    /// let slow = |ms: u64| { std::thread::sleep(Duration::from_millis(ms)); ms };
    /// let mut it = Imap::new(t, Unary(slow), vec![300u64].into_iter(), true, &MapOptions::default(), None);
    /// assert!(it.next_timeout(Duration::from_millis(1)).unwrap().unwrap_err().is_timeout());
    /// assert_eq!(it.next_timeout(Duration::from_secs(30)).unwrap().unwrap(), 300);
    /// assert!(it.next().is_none());
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(Some(deadline(timeout)))
    }

    /// `next` with an extra deadline for this call only.
    fn next_until(&mut self, call_deadline: Option<Instant>) -> Option<Result<R>> {
        self.cancel_on_drop = true;
        loop {
            if let Some(r) = self.current.as_mut().and_then(|c| c.next()) {
                if let Some(p) = &self.progress {
                    p.advance(1);
                }
                return Some(r);
            }
            self.current = None;
            if self.finished {
                return None;
            }
            self.fill();
            if self.in_flight == 0 {
                self.finished = true;
                if let Some(p) = self.progress.take() {
                    p.finish();
                }
                return None;
            }
            let want = self.ordered.then_some(self.next_to_yield);
            let backend = &self.backend;
            let until = match (self.deadline, call_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match self.stream.take(want, until, &|| backend.help()) {
                None if self.deadline.is_none_or(|d| Instant::now() < d) => {
                    // This call's own deadline: nothing ends.
                    return Some(Err(Error::timeout()));
                }
                None => {
                    self.finished = true;
                    self.stream.cancelled.store(true, Ordering::Relaxed);
                    return Some(Err(Error::timeout()));
                }
                Some((offset, out)) => {
                    self.in_flight -= 1;
                    if self.ordered {
                        self.next_to_yield += 1;
                    }
                    self.policy.observe(out.len, out.elapsed);
                    self.current = Some(Box::new(out.into_results(offset)));
                }
            }
        }
    }
}

impl<B: Backend, T, I: Iterator, R> Drop for Imap<B, T, I, R> {
    fn drop(&mut self) {
        if self.cancel_on_drop {
            self.stream.cancelled.store(true, Ordering::Relaxed);
        }
    }
}
