//! Ordered gathering of a map of known length: the output buffer every
//! chunk writes its part of, the [`Gather`] collector that counts chunks
//! home, and the assembly of the result.

use std::sync::Arc;

use super::{ChunkOut, ChunkSink, Collect, Dest, lock};
use crate::backend::Backend;
use crate::error::MapError;
use crate::progress::Progress;
use crate::sync::{Condvar, Mutex};

/// The output buffer of a map of known length: one slot per item, written
/// in place by its chunk's `Dest` or filled from a chunk's returned
/// values when the map is assembled. Dropping it frees the memory only.
pub(super) struct OutBuf<R> {
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
pub(super) struct Gather<'s, R> {
    state: Mutex<GatherState<R>>,
    cv: Condvar,
    progress: Option<Progress>,
    pub(super) on_complete: Mutex<Option<OnComplete<'s, R>>>,
}

struct GatherState<R> {
    outs: Vec<Option<ChunkOut<R>>>,
    remaining: usize,
    buf: Option<OutBuf<R>>,
}

impl<'s, R: Send + 's> Gather<'s, R> {
    pub(super) fn new(chunks: usize, n: usize, progress: Option<Progress>) -> Self {
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
    pub(super) fn wait_all(&self, backend: &impl Backend) -> (Vec<Option<ChunkOut<R>>>, OutBuf<R>) {
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
    pub(super) fn sink(
        self: &Arc<Self>,
        index: usize,
        offset: usize,
        len: usize,
    ) -> ChunkSink<'s, R> {
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
pub(super) fn assemble<R>(
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
