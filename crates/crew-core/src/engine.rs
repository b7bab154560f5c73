//! The map machinery, written once for every back-end: chunking, ordered and
//! unordered collection, back-pressure for the lazy iterators, and the
//! blocking/async wrappers around single calls.
//!
//! A map splits its input into [`Chunk`]s; a back-end turns each chunk into
//! one job (see [`Runs::chunk_job`]) that delivers a [`ChunkOut`] to the
//! chunk's [`ChunkSink`]. A sink dropped without delivering (its job was
//! discarded) delivers "cancelled" for every item, so collectors always learn
//! the fate of every chunk and never wait forever.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Runs};
use crate::call::Call;
use crate::error::{Error, MapError, Result};
use crate::future::{AsyncResult, Future, MapAsyncResult};
use crate::progress::Progress;
use crate::sync::{AtomicBool, Condvar, Mutex, MutexGuard, Ordering};
use crate::timeline::Timeline;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The instant `timeout` from now; a timeout too large to represent
/// (`Duration::MAX`) means a century, i.e. no deadline in practice.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// assert!(crew_core::engine::deadline(Duration::MAX) > Instant::now());
/// ```
pub fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

pub use crate::chunk::{Chunk, ChunkIter};

/// Waits once on `cv`, until notified (or woken spuriously) or until
/// `deadline`: `Ok` with the guard after a wait, `Err` with it, unwaited, if
/// the deadline has passed. The one place crew waits on a condition
/// variable with a deadline; callers loop re-checking their condition.
///
/// # Examples
///
/// ```
/// use std::sync::{Condvar, Mutex};
/// use std::time::{Duration, Instant};
/// let (m, cv) = (Mutex::new(false), Condvar::new());
/// let mut ready = m.lock().unwrap();
/// let deadline = Some(Instant::now() + Duration::from_millis(5));
/// let timed_out = loop {
///     if *ready {
///         break false;
///     }
///     ready = match crew_core::engine::wait_deadline(&cv, ready, deadline) {
///         Ok(g) => g,
///         Err(_) => break true,
///     };
/// };
/// assert!(timed_out);
/// ```
///
/// # Errors
///
/// The guard, unwaited, once `deadline` has passed.
pub fn wait_deadline<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> std::result::Result<MutexGuard<'a, T>, MutexGuard<'a, T>> {
    match deadline {
        None => Ok(cv.wait(guard).unwrap_or_else(|p| p.into_inner())),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(guard);
            }
            Ok(cv
                .wait_timeout(guard, d - now)
                .unwrap_or_else(|p| p.into_inner())
                .0)
        }
    }
}

/// What a chunk produced: the values of the items that succeeded, in order,
/// and the failures with their position in the chunk.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use crew_core::{ChunkOut, Error};
/// let out = ChunkOut::new(3, vec![1, 3], vec![(1, Error::panic("two"))], Duration::ZERO);
/// assert_eq!(out.len(), 3);
/// let all: Vec<_> = out.into_results(100).collect();
/// assert_eq!(all[1].as_ref().unwrap_err().index(), Some(101));
/// assert!(!ChunkOut::<u8>::failed(2, Error::cancelled()).is_empty());
/// ```
#[derive(Debug)]
pub struct ChunkOut<R> {
    len: usize,
    values: Vec<R>,
    errors: Vec<(usize, Error)>,
    elapsed: Duration,
    /// The values were written through the chunk's `Dest`, not returned.
    in_place: bool,
}

impl<R> ChunkOut<R> {
    /// The outcome of a chunk of `len` items that ran for `elapsed`.
    ///
    /// # Panics
    ///
    /// If `values.len() + errors.len() != len`, or if the errors are not
    /// sorted by position.
    pub fn new(len: usize, values: Vec<R>, errors: Vec<(usize, Error)>, elapsed: Duration) -> Self {
        assert_eq!(
            values.len() + errors.len(),
            len,
            "every item has one outcome"
        );
        assert!(
            errors.windows(2).all(|w| w[0].0 < w[1].0),
            "errors sorted by position"
        );
        ChunkOut {
            len,
            values,
            errors,
            elapsed,
            in_place: false,
        }
    }

    /// The outcome of a chunk that wrote its values through its `Dest`:
    /// every item not among `errors` was written.
    fn in_place(len: usize, errors: Vec<(usize, Error)>, elapsed: Duration) -> Self {
        ChunkOut {
            len,
            values: Vec::new(),
            errors,
            elapsed,
            in_place: true,
        }
    }

    /// A chunk of `len` items that all failed with `e`.
    pub fn failed(len: usize, e: Error) -> Self {
        ChunkOut {
            len,
            values: Vec::new(),
            errors: (0..len).map(|i| (i, e.clone())).collect(),
            elapsed: Duration::ZERO,
            in_place: false,
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a chunk of no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every item's outcome in order; errors learn their position in the map.
    ///
    /// # Panics
    ///
    /// On an outcome whose values were written in place (the map engine
    /// reads those from its buffer).
    pub fn into_results(self, offset: usize) -> impl Iterator<Item = Result<R>> {
        assert!(!self.in_place, "in-place values live in the map's buffer");
        let mut values = self.values.into_iter();
        let mut errors = self.errors.into_iter().peekable();
        (0..self.len).map(move |i| match errors.peek() {
            Some((at, _)) if *at == i => {
                let (_, e) = errors.next().expect("peeked");
                Err(if e.index().is_none() {
                    e.with_index(offset + i)
                } else {
                    e
                })
            }
            _ => Ok(values.next().expect("one value per successful item")),
        })
    }
}

/// Where a collector learns the outcome of its chunks.
pub(crate) trait Collect<R>: Send + Sync {
    fn deliver(&self, index: usize, offset: usize, out: ChunkOut<R>);
    fn is_cancelled(&self) -> bool;
}

/// A chunk's slice of its map's output buffer: the thread back-end writes
/// each value straight to its place, so a map of known length makes one
/// output allocation and no copy.
///
/// A raw pointer into a buffer that the map hands back to its caller, so it
/// never leaves this crate: only [`run_chunk_into`], called by a job of the
/// thread back-end while its sink is undelivered (the map cannot have
/// returned yet), writes through it. Back-ends outside the crate return
/// their values in a [`ChunkOut`] instead.
pub(crate) struct Dest<R> {
    ptr: *mut R,
    len: usize,
}

// SAFETY: a `Dest` is the only handle to its (disjoint) slice of the output
// buffer; values of `R: Send` may be written there from any thread.
unsafe impl<R: Send> Send for Dest<R> {}

impl<R> std::fmt::Debug for Dest<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dest").field("len", &self.len).finish()
    }
}

impl<R> Dest<R> {
    /// Writes item `i`'s value.
    ///
    /// # Safety
    ///
    /// Each `i < len` is written at most once, and only items later
    /// reported as successes (not among the chunk's errors) are written.
    unsafe fn write(&mut self, i: usize, value: R) {
        debug_assert!(i < self.len);
        // SAFETY: in bounds of this chunk's slice (caller), which the
        // output buffer reserves for it and nobody else writes.
        unsafe { self.ptr.add(i).write(value) };
    }
}

/// The receiving end of one chunk's outcome. Dropping it undelivered reports
/// every item of the chunk as cancelled. Back-ends receive sinks in
/// [`Runs::chunk_job`]; [`run_chunk`] shows the
/// whole round trip on the calling thread.
///
/// A sink hands out values only by [`deliver`](ChunkSink::deliver): the
/// in-place output the thread back-end uses is private to this crate, so a
/// back-end written elsewhere cannot keep a pointer into a map's output and
/// write through it after the map returned:
///
/// ```compile_fail,E0624
/// use crew_core::engine::ChunkSink;
/// fn keep<R>(mut sink: ChunkSink<'static, R>) {
///     let _escaped = sink.take_dest();
/// }
/// ```
///
/// # Examples
///
/// ```
/// use crew_core::{Backend, Runs, Unary, engine::{MapOptions, map_blocking}};
/// // A back-end's chunk jobs deliver to sinks; map_blocking collects them.
/// let t = crew_core::Threads::new(2)?;
/// let v = map_blocking(&t, Unary(|x: i8| -x), vec![1, 2], &MapOptions { chunksize: Some(1), ..Default::default() }).unwrap();
/// assert_eq!(v, [-1, -2]);
/// # Ok::<(), crew_core::Error>(())
/// ```
pub struct ChunkSink<'s, R> {
    collector: Option<Arc<dyn Collect<R> + 's>>,
    index: usize,
    offset: usize,
    len: usize,
    dest: Option<Dest<R>>,
}

impl<R> std::fmt::Debug for ChunkSink<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSink")
            .field("index", &self.index)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl<'s, R> ChunkSink<'s, R> {
    fn new(collector: Arc<dyn Collect<R> + 's>, index: usize, offset: usize, len: usize) -> Self {
        ChunkSink {
            collector: Some(collector),
            index,
            offset,
            len,
            dest: None,
        }
    }

    /// Takes the chunk's slice of the output buffer, if its map has one (a
    /// map of known length does); pass it to [`run_chunk_into`] before
    /// delivering. Back-ends that return values instead (processes) simply
    /// never take it.
    pub(crate) fn take_dest(&mut self) -> Option<Dest<R>> {
        self.dest.take()
    }

    /// True if nobody wants this chunk's outcome any more (the lazy iterator
    /// it belongs to was dropped, or timed out): skip the work.
    pub fn is_cancelled(&self) -> bool {
        self.collector.as_ref().is_none_or(|c| c.is_cancelled())
    }

    /// Position of the chunk's first item in the whole map.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Delivers the chunk's outcome.
    ///
    /// # Panics
    ///
    /// If `out` does not have one outcome per item of the chunk.
    pub fn deliver(mut self, out: ChunkOut<R>) {
        assert_eq!(out.len, self.len, "chunk outcome has the wrong length");
        if let Some(c) = self.collector.take() {
            c.deliver(self.index, self.offset, out);
        }
    }

    /// Reports every item of the chunk as failed with `e`.
    pub fn fail(self, e: Error) {
        let len = self.len;
        self.deliver(ChunkOut::failed(len, e));
    }
}

impl<R> Drop for ChunkSink<'_, R> {
    fn drop(&mut self) {
        if let Some(c) = self.collector.take() {
            c.deliver(
                self.index,
                self.offset,
                ChunkOut::failed(self.len, Error::cancelled()),
            );
        }
    }
}

/// Runs `task` over a chunk in the calling thread, catching each item's
/// panic so that it fails only that item: the shared helper of in-process
/// back-ends.
///
/// # Examples
///
/// ```
/// use crew_core::{Chunk, Unary, engine::run_chunk};
/// let out = run_chunk(&Unary(|x: u32| if x == 2 { panic!("two") } else { x }), Chunk::new(0, vec![1, 2, 3]), 0, None);
/// let r: Vec<_> = out.into_results(0).collect();
/// assert_eq!(*r[0].as_ref().unwrap(), 1);
/// assert!(r[1].as_ref().unwrap_err().is_panic());
/// assert_eq!(*r[2].as_ref().unwrap(), 3);
/// ```
pub fn run_chunk<T, X, R>(
    task: &T,
    chunk: Chunk<X>,
    worker: usize,
    timeline: Option<&Timeline>,
) -> ChunkOut<R>
where
    T: Call<X, R> + ?Sized,
{
    run_chunk_into(task, chunk, worker, timeline, None)
}

/// [`run_chunk`], writing the values through `dest` (the chunk's slice of
/// its map's output) when there is one.
pub(crate) fn run_chunk_into<T, X, R>(
    task: &T,
    chunk: Chunk<X>,
    worker: usize,
    timeline: Option<&Timeline>,
    mut dest: Option<Dest<R>>,
) -> ChunkOut<R>
where
    T: Call<X, R> + ?Sized,
{
    let started = Instant::now();
    let len = chunk.len();
    let offset = chunk.offset();
    if let Some(d) = &dest {
        assert_eq!(d.len, len, "a chunk's destination has its length");
    }
    let mut values = Vec::with_capacity(if dest.is_some() { 0 } else { len });
    let mut errors = Vec::new();
    let mut items = chunk.into_iter().enumerate();
    let name = match timeline {
        Some(_) => task.name().and_then(crate::task_name).unwrap_or("map"),
        None => "",
    };
    loop {
        let mut current = 0;
        let mut current_start = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match (timeline, &mut dest) {
                (None, None) => {
                    for (i, x) in &mut items {
                        current = i;
                        values.push(task.call(x));
                    }
                }
                (None, Some(d)) => {
                    for (i, x) in &mut items {
                        current = i;
                        let v = task.call(x);
                        // SAFETY: each `i` comes once from the chunk's iterator,
                        // and only after the call succeeded.
                        unsafe { d.write(i, v) };
                    }
                }
                (Some(t), _) => {
                    for (i, x) in &mut items {
                        current = i;
                        current_start = Instant::now();
                        let v = task.call(x);
                        t.record(worker, offset + i, name, current_start, Instant::now());
                        match &mut dest {
                            // SAFETY: as above.
                            Some(d) => unsafe { d.write(i, v) },
                            None => values.push(v),
                        }
                    }
                }
            }
        }));
        match run {
            Ok(()) => break,
            Err(payload) => {
                if let Some(t) = timeline {
                    t.record(
                        worker,
                        offset + current,
                        name,
                        current_start,
                        Instant::now(),
                    );
                }
                errors.push((current, Error::from_panic(payload).with_worker(worker)))
            }
        }
    }
    if dest.is_some() {
        ChunkOut::in_place(len, errors, started.elapsed())
    } else {
        ChunkOut::new(len, values, errors, started.elapsed())
    }
}

/// Options of one map call.
///
/// # Examples
///
/// ```
/// let opts = crew_core::MapOptions { chunksize: Some(64), ..Default::default() };
/// assert!(opts.progress.is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct MapOptions {
    /// Items per job; `None` chooses automatically.
    pub chunksize: Option<usize>,
    /// Progress reporting.
    pub progress: Option<crate::progress::ProgressStyle>,
    /// Label used in progress lines (`Pool(threads=2)`).
    pub label: String,
}

impl MapOptions {
    /// Checks the settings: a chunk size of zero is refused, as Python's
    /// `chunksize=0` raises `ValueError`.
    ///
    /// # Examples
    ///
    /// ```
    /// let bad = crew_core::MapOptions { chunksize: Some(0), ..Default::default() };
    /// assert!(bad.validate().unwrap_err().is_invalid_input());
    /// assert!(crew_core::MapOptions::default().validate().is_ok());
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` naming the setting out of range.
    pub fn validate(&self) -> Result<()> {
        if self.chunksize == Some(0) {
            return Err(Error::invalid_input("chunksize must be at least 1"));
        }
        Ok(())
    }
}

/// Chunks per worker for a map of known length: enough to even out uneven
/// tasks (the tail is at most 1/16 of a worker's share), few enough that
/// dispatch costs nothing next to the work.
const CHUNKS_PER_WORKER: usize = 16;

/// The automatic chunk size for `n` items on `workers` workers.
///
/// # Examples
///
/// ```
/// assert_eq!(crew_core::engine::auto_chunksize(10, 2), 1);
/// assert_eq!(crew_core::engine::auto_chunksize(10_000_000, 2), 312_500);
/// ```
pub fn auto_chunksize(n: usize, workers: usize) -> usize {
    n.div_ceil(workers.max(1) * CHUNKS_PER_WORKER).max(1)
}

fn split<X>(items: Vec<X>, chunksize: usize) -> Vec<Chunk<X>> {
    Chunk::split(items, chunksize)
}

/// The output buffer of a map of known length: one slot per item, written
/// in place by its chunk's `Dest` or filled from a chunk's returned
/// values when the map is assembled. Dropping it frees the memory only.
struct OutBuf<R> {
    ptr: *mut R,
    cap: usize,
    n: usize,
}

// SAFETY: the buffer is memory for `R`s written by the chunks' disjoint
// `Dest`s and read once by `assemble`; moving it between threads moves
// (future) `R`s, which needs `R: Send`.
unsafe impl<R: Send> Send for OutBuf<R> {}

impl<R> OutBuf<R> {
    fn new(n: usize) -> OutBuf<R> {
        let mut v = std::mem::ManuallyDrop::new(Vec::<R>::with_capacity(n));
        OutBuf {
            ptr: v.as_mut_ptr(),
            cap: v.capacity(),
            n,
        }
    }

    fn dest(&self, offset: usize, len: usize) -> Dest<R> {
        assert!(
            offset + len <= self.n,
            "a chunk's destination is in the buffer"
        );
        Dest {
            // SAFETY: in bounds of the allocation (checked above).
            ptr: unsafe { self.ptr.add(offset) },
            len,
        }
    }
}

impl<R> Drop for OutBuf<R> {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`cap` come from a `Vec<R>`; length 0 drops nothing
        // (values still in it, if any, are leaked rather than double-dropped).
        unsafe { drop(Vec::from_raw_parts(self.ptr, 0, self.cap)) };
    }
}

/// What a finished async map does with every chunk's outcome.
type OnComplete<'s, R> = Box<dyn FnOnce(Vec<Option<ChunkOut<R>>>, OutBuf<R>) + Send + 's>;

/// Gathers every chunk of a map of known length.
struct Gather<'s, R> {
    state: Mutex<GatherState<R>>,
    cv: Condvar,
    progress: Option<Progress>,
    on_complete: Mutex<Option<OnComplete<'s, R>>>,
}

struct GatherState<R> {
    outs: Vec<Option<ChunkOut<R>>>,
    remaining: usize,
    buf: Option<OutBuf<R>>,
}

impl<'s, R: Send + 's> Gather<'s, R> {
    fn new(chunks: usize, n: usize, progress: Option<Progress>) -> Self {
        Gather {
            state: Mutex::new(GatherState {
                outs: (0..chunks).map(|_| None).collect(),
                remaining: chunks,
                buf: Some(OutBuf::new(n)),
            }),
            cv: Condvar::new(),
            progress,
            on_complete: Mutex::new(None),
        }
    }

    /// Waits for every chunk, running queued jobs meanwhile if this thread is
    /// one of the back-end's workers (a map called from inside a task).
    fn wait_all(&self, backend: &impl Backend) -> (Vec<Option<ChunkOut<R>>>, OutBuf<R>) {
        let mut state = lock(&self.state);
        while state.remaining > 0 {
            drop(state);
            let helped = backend.help();
            state = lock(&self.state);
            if !helped && state.remaining > 0 {
                state = self.cv.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }
        let buf = state.buf.take().expect("a map is assembled once");
        (std::mem::take(&mut state.outs), buf)
    }

    /// A sink for chunk `index`, writing its values into the map's buffer.
    fn sink(self: &Arc<Self>, index: usize, offset: usize, len: usize) -> ChunkSink<'s, R> {
        let dest = lock(&self.state).buf.as_ref().map(|b| b.dest(offset, len));
        let mut sink = ChunkSink::new(self.clone(), index, offset, len);
        sink.dest = dest;
        sink
    }
}

impl<'s, R: Send + 's> Collect<R> for Gather<'s, R> {
    fn deliver(&self, index: usize, _offset: usize, out: ChunkOut<R>) {
        if let Some(p) = &self.progress {
            p.advance(out.len);
        }
        let mut state = lock(&self.state);
        debug_assert!(state.outs[index].is_none(), "chunk delivered twice");
        state.outs[index] = Some(out);
        state.remaining -= 1;
        if state.remaining == 0 {
            let outs_ready = lock(&self.on_complete).take();
            match outs_ready {
                Some(done) => {
                    let outs = std::mem::take(&mut state.outs);
                    let buf = state.buf.take().expect("a map is assembled once");
                    drop(state);
                    done(outs, buf);
                }
                None => self.cv.notify_all(),
            }
        }
    }

    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Turns the outcomes of every chunk into the map's result: without
/// failures, the output buffer itself becomes the result `Vec` (values
/// returned rather than written in place are moved into it first).
fn assemble<R>(
    outs: Vec<Option<ChunkOut<R>>>,
    buf: OutBuf<R>,
) -> std::result::Result<Vec<R>, MapError<R>> {
    let outs: Vec<ChunkOut<R>> = outs
        .into_iter()
        .map(|o| o.expect("every chunk delivered"))
        .collect();
    debug_assert_eq!(outs.iter().map(|o| o.len).sum::<usize>(), buf.n);
    if outs.iter().all(|o| o.errors.is_empty()) {
        let mut offset = 0;
        for o in outs {
            if !o.in_place {
                let mut values = o.values;
                assert_eq!(values.len(), o.len, "one value per item");
                // SAFETY: the chunk's slots are in bounds and unwritten (its
                // values were returned, not written in place); the values
                // move into them and leave `values` empty.
                unsafe {
                    std::ptr::copy_nonoverlapping(values.as_ptr(), buf.ptr.add(offset), o.len);
                    values.set_len(0);
                }
            }
            offset += o.len;
        }
        let buf = std::mem::ManuallyDrop::new(buf);
        // SAFETY: every one of the `n` slots now holds a value: written in
        // place by a chunk without failures, or moved in above.
        return Ok(unsafe { Vec::from_raw_parts(buf.ptr, buf.n, buf.cap) });
    }
    let mut results = Vec::with_capacity(buf.n);
    let mut offset = 0;
    for o in outs {
        let len = o.len;
        if o.in_place {
            let mut errors = o.errors.into_iter().peekable();
            for i in 0..len {
                match errors.peek() {
                    Some((at, _)) if *at == i => {
                        let (_, e) = errors.next().expect("peeked");
                        results.push(Err(if e.index().is_none() {
                            e.with_index(offset + i)
                        } else {
                            e
                        }));
                    }
                    // SAFETY: a success of an in-place chunk was written to
                    // its slot; each slot is read once, here.
                    _ => results.push(Ok(unsafe { buf.ptr.add(offset + i).read() })),
                }
            }
        } else {
            results.extend(o.into_results(offset));
        }
        offset += len;
    }
    drop(buf);
    Err(MapError::new(results))
}

fn start_progress(opts: &MapOptions, total: Option<usize>) -> Option<Progress> {
    opts.progress
        .as_ref()
        .map(|style| Progress::start(style.clone(), &opts.label, total))
}

/// `map` that blocks until every item is done; the task may borrow data
/// that outlives the call (`'s`).
///
/// # Examples
///
/// ```
/// use crew_core::{Threads, Unary, engine::{MapOptions, map_blocking}};
/// let t = Threads::new(2)?;
/// let table = vec![10, 20, 30];
/// let v = map_blocking(&t, Unary(|i: usize| table[i]), vec![2, 0], &MapOptions::default()).unwrap();
/// assert_eq!(v, [30, 10]);
/// # Ok::<(), crew_core::Error>(())
/// ```
///
/// # Errors
///
/// A [`MapError`] with every item's outcome if at least one item failed.
pub fn map_blocking<'s, B, T, X, R>(
    backend: &B,
    task: T,
    items: impl IntoIterator<Item = X>,
    opts: &MapOptions,
) -> std::result::Result<Vec<R>, MapError<R>>
where
    B: Runs<'s, T, X, R>,
    T: 's,
    X: 's,
    R: Send + 's,
{
    let mut items = items.into_iter();
    if backend.is_closed() {
        return Err(MapError::from(Error::shutdown()));
    }
    opts.validate()?;
    let (lo, hi) = items.size_hint();
    if hi != Some(lo) {
        // Unknown length: collect first, then cut the buffer into chunks
        // without copying.
        let all: Vec<X> = items.collect();
        let n = all.len();
        let chunksize = opts
            .chunksize
            .unwrap_or_else(|| auto_chunksize(n, backend.workers()));
        let mut chunks = split(all, chunksize).into_iter();
        return map_chunks(backend, task, n, chunksize, |_, _| chunks.next(), opts);
    }
    // Known length: chunks are cut from the iterator as they are dispatched,
    // so the workers start while the rest of the input is still being read.
    let n = lo;
    let chunksize = opts
        .chunksize
        .unwrap_or_else(|| auto_chunksize(n, backend.workers()));
    let mut short = false;
    let out = map_chunks(
        backend,
        task,
        n,
        chunksize,
        |offset, len| {
            let part: Vec<X> = items.by_ref().take(len).collect();
            if part.len() < len {
                short = true;
                return None;
            }
            Some(Chunk::new(offset, part))
        },
        opts,
    );
    if short {
        // The iterator promised `n` items and yielded fewer: its size hint
        // lied. Report it on the items that never came.
        return Err(match out {
            Ok(_) => unreachable!("a short input leaves chunks unfilled"),
            Err(e) => e,
        });
    }
    // More items than the size hint said: the hint lied; keep what was
    // mapped and report the first item beyond it.
    if items.next().is_none() {
        return out;
    }
    let e = Error::invalid_input(format!(
        "the input iterator yielded more items than its size hint ({n}) promised"
    ))
    .with_index(n);
    let mut results: Vec<Result<R>> = match out {
        Ok(values) => values.into_iter().map(Ok).collect(),
        Err(m) => m.into_results(),
    };
    results.push(Err(e));
    Err(MapError::new(results))
}

/// Dispatches the chunks `next(offset, len)` gives, in order, and waits for
/// all of them. A `None` (the input ran short) fails the chunks not given.
fn map_chunks<'s, B, T, X, R>(
    backend: &B,
    task: T,
    n: usize,
    chunksize: usize,
    mut next: impl FnMut(usize, usize) -> Option<Chunk<X>>,
    opts: &MapOptions,
) -> std::result::Result<Vec<R>, MapError<R>>
where
    B: Runs<'s, T, X, R>,
    T: 's,
    X: 's,
    R: Send + 's,
{
    if n == 0 {
        return Ok(Vec::new());
    }
    let chunks = n.div_ceil(chunksize);
    let progress = start_progress(opts, Some(n));
    let gather = Arc::new(Gather::new(chunks, n, progress.clone()));
    let task = Arc::new(task);
    // Every chunk gets its sink before any job is queued: should this
    // function unwind (the input iterator may panic), the sinks not yet used
    // are dropped, which reports their chunks; `wait_all` still sees every
    // chunk.
    let mut sinks: Vec<ChunkSink<'s, R>> = (0..chunks)
        .rev()
        .map(|i| {
            let offset = i * chunksize;
            gather.sink(i, offset, chunksize.min(n - offset))
        })
        .collect();
    let wait_guard = WaitGuard {
        gather: &gather,
        backend,
    };
    while let Some(sink) = sinks.pop() {
        let Some(chunk) = next(sink.offset(), sink.len) else {
            let e = Error::invalid_input(format!(
                "the input iterator yielded fewer items than its size hint ({n}) promised"
            ));
            sink.fail(e.clone());
            for s in sinks.drain(..) {
                s.fail(e.clone());
            }
            break;
        };
        debug_assert_eq!(chunk.len(), sink.len);
        let job = backend.chunk_job(task.clone(), chunk, sink);
        // SAFETY: `wait_guard` waits for every chunk's sink before this
        // function returns or unwinds, and a job drops its borrows before it
        // delivers (the `Runs::chunk_job` contract), so nothing borrowed for
        // `'s` is used after we return.
        if let Err(job) = unsafe { backend.execute(job) } {
            drop(job);
        }
    }
    let (outs, buf) = wait_guard.finish();
    drop(task);
    if let Some(p) = progress {
        p.finish();
    }
    assemble(outs, buf)
}

struct WaitGuard<'g, 's, R: Send + 's, B: Backend> {
    gather: &'g Arc<Gather<'s, R>>,
    backend: &'g B,
}

impl<R: Send, B: Backend> WaitGuard<'_, '_, R, B> {
    fn finish(self) -> (Vec<Option<ChunkOut<R>>>, OutBuf<R>) {
        let outs = self.gather.wait_all(self.backend);
        std::mem::forget(self);
        outs
    }
}

impl<R: Send, B: Backend> Drop for WaitGuard<'_, '_, R, B> {
    fn drop(&mut self) {
        drop(self.gather.wait_all(self.backend));
    }
}

/// `map_async`: queues every chunk and returns at once; the last chunk to
/// finish assembles the result.
///
/// # Examples
///
/// ```
/// use crew_core::{Threads, Unary, engine::{MapOptions, map_async}};
/// let t = Threads::new(2)?;
/// let r = map_async(&t, Unary(|x: u16| x * 2), vec![1, 2, 3], &MapOptions::default());
/// assert_eq!(r.get().unwrap(), [2, 4, 6]);
/// # Ok::<(), crew_core::Error>(())
/// ```
pub fn map_async<B, T, X, R>(
    backend: &B,
    task: T,
    items: Vec<X>,
    opts: &MapOptions,
) -> MapAsyncResult<R>
where
    B: Runs<'static, T, X, R>,
    T: 'static,
    X: 'static,
    R: Send + 'static,
{
    let (promise, result) = AsyncResult::pending();
    let n = items.len();
    if n == 0 {
        promise.complete(Ok(Vec::new()));
        return result;
    }
    if backend.is_closed() {
        promise.fail(Error::shutdown());
        return result;
    }
    if let Err(e) = opts.validate() {
        promise.fail(e);
        return result;
    }
    let chunksize = opts
        .chunksize
        .unwrap_or_else(|| auto_chunksize(n, backend.workers()));
    let chunks = split(items, chunksize);
    let progress = start_progress(opts, Some(n));
    let gather = Arc::new(Gather::new(chunks.len(), n, progress.clone()));
    *lock(&gather.on_complete) = Some(Box::new(move |outs, buf| {
        if let Some(p) = progress {
            p.finish();
        }
        promise.complete(assemble(outs, buf));
    }));
    let task = Arc::new(task);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let sink = gather.sink(i, chunk.offset(), chunk.len());
        if let Err(job) = backend.spawn(backend.chunk_job(task.clone(), chunk, sink)) {
            drop(job);
        }
    }
    result
}

/// Runs one call and waits for it; the task may borrow data outliving `'s`.
///
/// # Examples
///
/// ```
/// use crew_core::{Star, Threads, engine::call_blocking};
/// let t = Threads::new(1)?;
/// let name = String::from("crew");
/// assert_eq!(call_blocking(&t, Star(|n: usize| name.len() * n), (2,))?, 8);
/// # Ok::<(), crew_core::Error>(())
/// ```
///
/// # Errors
///
/// The task's error.
pub fn call_blocking<'s, B, T, X, R>(backend: &B, task: T, input: X) -> Result<R>
where
    B: Runs<'s, T, X, R>,
    T: 's,
    X: 's,
    R: Send + 's,
{
    if backend.is_closed() {
        return Err(Error::shutdown());
    }
    let (promise, future) = Future::pending();
    let job = backend.call_job(task, input, promise);
    // SAFETY: we wait for the promise below before returning, and a job
    // drops its borrows before completing its promise (the `Runs` contract);
    // a discarded job completes the promise when dropped.
    if let Err(job) = unsafe { backend.execute(job) } {
        drop(job);
    }
    loop {
        if future.done() {
            return future.result();
        }
        if !backend.help() {
            return future.result();
        }
    }
}

/// Queues one call that completes `promise` (the producing side of a
/// `Future` or an `AsyncResult`).
///
/// # Examples
///
/// ```
/// use crew_core::{Future, Star, Threads, engine::spawn_call};
/// let t = Threads::new(1)?;
/// let (promise, future) = Future::pending();
/// spawn_call(&t, Star(|| 7u8), (), promise);
/// assert_eq!(future.result()?, 7);
/// # Ok::<(), crew_core::Error>(())
/// ```
pub fn spawn_call<B, T, X, R>(backend: &B, task: T, input: X, promise: crate::Promise<Result<R>>)
where
    B: Runs<'static, T, X, R>,
    T: 'static,
    X: 'static,
    R: Send + 'static,
{
    if backend.is_closed() {
        promise.fail(Error::shutdown());
        return;
    }
    if let Err(job) = backend.spawn(backend.call_job(task, input, promise)) {
        drop(job);
    }
}

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

/// Chunk sizing of a lazy map whose length is unknown: start with single
/// items and grow until a chunk takes about [`TARGET_CHUNK_TIME`], so tiny
/// tasks are batched and long ones are not.
#[derive(Debug, Clone, Copy)]
struct ChunkPolicy {
    fixed: bool,
    size: usize,
}

/// Aim for chunks of about this duration: long against a dispatch (~1 µs on
/// threads, a few µs on processes), short against a human waiting for the
/// next result.
const TARGET_CHUNK_TIME: Duration = Duration::from_micros(500);
const MAX_CHUNK: usize = 1 << 16;

impl ChunkPolicy {
    fn observe(&mut self, len: usize, elapsed: Duration) {
        if self.fixed || len == 0 {
            return;
        }
        let per_item = elapsed.as_nanos() as f64 / len as f64;
        let ideal = if per_item <= 0.0 {
            MAX_CHUNK as f64
        } else {
            TARGET_CHUNK_TIME.as_nanos() as f64 / per_item
        };
        let ideal = ideal.clamp(1.0, MAX_CHUNK as f64) as usize;
        // Grow to at most twice the chunk just observed: one fast outlier
        // cannot make a chunk of slow items huge, and the chunks in flight
        // (whose sizes were chosen before) do not compound the growth.
        self.size = ideal.min(len.saturating_mul(2)).max(1);
    }
}

/// The lazy iterator behind `imap`, `imap_unordered` and `Executor::map`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use crew_core::{Imap, MapOptions, OnDrop, Owned, Threads, Unary};
/// let t = Arc::new(Owned::new(Threads::new(2)?, OnDrop::Terminate));
/// let it = Imap::new(t, Unary(|x: u64| x + 1), 0.., true, &MapOptions::default(), None);
/// let v: Vec<u64> = it.take(4).map(Result::unwrap).collect();
/// assert_eq!(v, [1, 2, 3, 4]);
/// # Ok::<(), crew_core::Error>(())
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
            policy: ChunkPolicy {
                fixed: opts.chunksize.is_some(),
                size: opts.chunksize.unwrap_or(1).max(1),
            },
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
    /// use std::sync::Arc;
    /// use crew_core::{Imap, MapOptions, OnDrop, Owned, Threads, Unary};
    /// let t = Arc::new(Owned::new(Threads::new(2)?, OnDrop::Terminate));
    /// let it = Imap::new(t.clone(), Unary(|x: u8| x), 0..4, true, &MapOptions::default(), None);
    /// assert_eq!(it.with_window(1).map(Result::unwrap).collect::<Vec<_>>(), [0, 1, 2, 3]);
    /// // No chunk at all in flight could never make progress: refused.
    /// let mut bad = Imap::new(t, Unary(|x: u8| x), 0..4, true, &MapOptions::default(), None).with_window(0);
    /// assert!(bad.next().unwrap().unwrap_err().is_invalid_input());
    /// assert!(bad.next().is_none());
    /// # Ok::<(), crew_core::Error>(())
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
    /// chunk size is chosen from that length as [`map_blocking`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use crew_core::{Backend, Imap, MapOptions, OnDrop, Owned, Star, Threads, Unary};
    /// static RAN: AtomicUsize = AtomicUsize::new(0);
    /// let t = Threads::new(2)?;
    /// let owned = Arc::new(Owned::new(t.clone(), OnDrop::Close));
    /// let it = Imap::new(owned, Unary(|_: u8| RAN.fetch_add(1, Ordering::SeqCst)), 0..10, true, &MapOptions::default(), None);
    /// drop(it.with_window(usize::MAX).eager()); // never iterated: every call still runs
    /// t.join(None);
    /// assert_eq!(RAN.load(Ordering::SeqCst), 10);
    /// # Ok::<(), crew_core::Error>(())
    /// ```
    pub fn eager(mut self) -> Self {
        if self.window == usize::MAX && !self.policy.fixed {
            let (lo, hi) = self.input.size_hint();
            if hi == Some(lo) {
                self.policy = ChunkPolicy {
                    fixed: true,
                    size: auto_chunksize(lo, self.backend.workers()),
                };
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
            while items.len() < self.policy.size {
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
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use crew_core::{Imap, MapOptions, OnDrop, Owned, Threads, Unary};
    /// let t = Arc::new(Owned::new(Threads::new(1)?, OnDrop::Terminate));
    /// let slow = |ms: u64| { std::thread::sleep(Duration::from_millis(ms)); ms };
    /// let mut it = Imap::new(t, Unary(slow), vec![300u64].into_iter(), true, &MapOptions::default(), None);
    /// assert!(it.next_timeout(Duration::from_millis(1)).unwrap().unwrap_err().is_timeout());
    /// assert_eq!(it.next_timeout(Duration::from_secs(30)).unwrap().unwrap(), 300);
    /// assert!(it.next().is_none());
    /// # Ok::<(), crew_core::Error>(())
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

/// What happens to a back-end when its last owner goes away.
///
/// # Examples
///
/// ```
/// use crew_core::{Backend, OnDrop, Owned, Threads};
/// let t = Threads::new(1)?;
/// drop(Owned::new(t.clone(), OnDrop::Close));
/// assert!(t.is_closed());
/// # Ok::<(), crew_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// Drop queued work and stop (Python's `with Pool() as p:`).
    Terminate,
    /// Let queued work finish in the background (Python's
    /// `ThreadPoolExecutor` shutdown without waiting).
    Close,
    /// Let queued work finish and wait for it: the end of Python's
    /// `with ThreadPoolExecutor() as ex:` block (`shutdown(wait=True)`).
    /// Dropped on one of the back-end's own workers, which cannot wait for
    /// itself, it closes only.
    Wait,
}

/// A back-end owned by a `Pool`, an `Executor` or a lazy iterator: the last
/// owner to go shuts it down as [`OnDrop`] says (blocking only for
/// [`OnDrop::Wait`]). See
/// [`OnDrop`] for an example.
#[derive(Debug)]
pub struct Owned<B: Backend> {
    backend: B,
    on_drop: OnDrop,
}

impl<B: Backend> Owned<B> {
    /// Takes ownership of `backend`; see [`OnDrop`] for an example.
    pub fn new(backend: B, on_drop: OnDrop) -> Owned<B> {
        Owned { backend, on_drop }
    }
}

impl<B: Backend> std::ops::Deref for Owned<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.backend
    }
}

impl<B: Backend> Drop for Owned<B> {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Terminate => self.backend.terminate(),
            OnDrop::Close => self.backend.close(),
            OnDrop::Wait => {
                self.backend.close();
                self.backend.join(None);
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom;
