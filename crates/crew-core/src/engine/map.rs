//! The eager maps: [`map_blocking`], which may borrow from the caller, and
//! [`map_async`], which returns at once and is assembled by its last chunk.

use std::sync::Arc;

use super::gather::{Gather, OutBuf, assemble};
use super::sizing::Layout;
use super::{Chunk, ChunkOut, ChunkSink, MapOptions, lock, start_progress};
use crate::backend::{Backend, Runs};
use crate::error::{Error, MapError, Result};
use crate::future::{AsyncResult, MapAsyncResult};

/// `map` that blocks until every item is done; the task may borrow data
/// that outlives the call (`'s`).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Threads, Unary, engine::{MapOptions, map_blocking}};
/// let t = Threads::new(2)?;
/// let table = vec![10, 20, 30];
/// let v = map_blocking(&t, Unary(|i: usize| table[i]), vec![2, 0], &MapOptions::default()).unwrap();
/// assert_eq!(v, [30, 10]);
/// # Ok::<(), crew::core::Error>(())
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
        let layout = Layout::new(opts.chunksize, n, backend.parallelism());
        let mut chunks = layout.split(all).into_iter();
        return map_chunks(backend, task, n, &layout, |_, _| chunks.next(), opts);
    }
    // Known length: chunks are cut from the iterator as they are dispatched,
    // so the workers start while the rest of the input is still being read.
    let n = lo;
    let layout = Layout::new(opts.chunksize, n, backend.parallelism());
    let mut short = false;
    let out = map_chunks(
        backend,
        task,
        n,
        &layout,
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
    layout: &Layout,
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
    let chunks = layout.count();
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
            let (offset, len) = layout.bounds(i);
            gather.sink(i, offset, len)
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
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Threads, Unary, engine::{MapOptions, map_async}};
/// let t = Threads::new(2)?;
/// let r = map_async(&t, Unary(|x: u16| x * 2), vec![1, 2, 3], &MapOptions::default());
/// assert_eq!(r.get().unwrap(), [2, 4, 6]);
/// # Ok::<(), crew::core::Error>(())
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
    let chunks = Layout::new(opts.chunksize, n, backend.parallelism()).split(items);
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
