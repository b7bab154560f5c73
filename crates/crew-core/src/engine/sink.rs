//! Where a chunk's outcome goes: [`ChunkOut`], the [`ChunkSink`] a back-end
//! delivers it to, the in-place [`Dest`] of the thread back-end, and the
//! [`Collect`] trait the gatherers implement.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// What a chunk produced: the values of the items that succeeded, in order,
/// and the failures with their position in the chunk.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::time::Duration;
/// use crew::core::{ChunkOut, Error};
/// let out = ChunkOut::new(3, vec![1, 3], vec![(1, Error::panic("two"))], Duration::ZERO);
/// assert_eq!(out.len(), 3);
/// let all: Vec<_> = out.into_results(100).collect();
/// assert_eq!(all[1].as_ref().unwrap_err().index(), Some(101));
/// assert!(!ChunkOut::<u8>::failed(2, Error::cancelled()).is_empty());
/// ```
#[derive(Debug)]
pub struct ChunkOut<R> {
    pub(super) len: usize,
    pub(super) values: Vec<R>,
    pub(super) errors: Vec<(usize, Error)>,
    pub(super) elapsed: Duration,
    /// The values were written through the chunk's `Dest`, not returned.
    pub(super) in_place: bool,
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
    pub(super) fn in_place(len: usize, errors: Vec<(usize, Error)>, elapsed: Duration) -> Self {
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
    pub(super) ptr: *mut R,
    pub(super) len: usize,
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
    pub(super) unsafe fn write(&mut self, i: usize, value: R) {
        debug_assert!(i < self.len);
        // SAFETY: in bounds of this chunk's slice (caller), which the
        // output buffer reserves for it and nobody else writes.
        unsafe { self.ptr.add(i).write(value) };
    }
}

/// The receiving end of one chunk's outcome. Dropping it undelivered reports
/// every item of the chunk as cancelled. Back-ends receive sinks in
/// [`Runs::chunk_job`](crate::Runs::chunk_job); [`run_chunk`](super::run_chunk) shows the
/// whole round trip on the calling thread.
///
/// A sink hands out values only by [`deliver`](ChunkSink::deliver): the
/// in-place output the thread back-end uses is private to this crate, so a
/// back-end written elsewhere cannot keep a pointer into a map's output and
/// write through it after the map returned:
///
/// ```compile_fail,E0624
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::engine::ChunkSink;
/// fn keep<R>(mut sink: ChunkSink<'static, R>) {
///     let _escaped = sink.take_dest();
/// }
/// ```
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Backend, Runs, Unary, engine::{MapOptions, map_blocking}};
/// // A back-end's chunk jobs deliver to sinks; map_blocking collects them.
/// let t = crew::core::Threads::new(2)?;
/// let v = map_blocking(&t, Unary(|x: i8| -x), vec![1, 2], &MapOptions { chunksize: Some(1), ..Default::default() }).unwrap();
/// assert_eq!(v, [-1, -2]);
/// # Ok::<(), crew::core::Error>(())
/// ```
pub struct ChunkSink<'s, R> {
    collector: Option<Arc<dyn Collect<R> + 's>>,
    index: usize,
    offset: usize,
    pub(super) len: usize,
    pub(super) dest: Option<Dest<R>>,
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
    pub(super) fn new(
        collector: Arc<dyn Collect<R> + 's>,
        index: usize,
        offset: usize,
        len: usize,
    ) -> Self {
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
