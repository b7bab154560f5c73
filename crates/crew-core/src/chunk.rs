//! [`Chunk`]: a run of a map's inputs handed to one job. A map's input is
//! collected once; its chunks are ranges of that one buffer, each owning its
//! elements, so splitting a 10-million-item map copies nothing.
//!
//! Invariant: every element of a shared buffer belongs to exactly one chunk,
//! and leaves it exactly once: read by the chunk's iterator, or dropped in
//! place when the chunk (or its iterator) is dropped. The buffer itself only
//! frees its memory.

use std::marker::PhantomData;
use std::sync::Arc;

/// The allocation of a map's collected input; frees memory, drops nothing.
struct Buffer<X> {
    ptr: *mut X,
    cap: usize,
}

// SAFETY: the buffer is only memory; its elements are reached through
// chunks, each owning a disjoint range (see module docs), so sharing the
// buffer across threads shares no element. Moving elements across threads
// needs `X: Send`.
unsafe impl<X: Send> Send for Buffer<X> {}
// SAFETY: as above.
unsafe impl<X: Send> Sync for Buffer<X> {}

impl<X> Drop for Buffer<X> {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`cap` came from a `Vec<X>` we took apart; length 0,
        // because every element was moved out or dropped by its chunk.
        unsafe { drop(Vec::from_raw_parts(self.ptr, 0, self.cap)) };
    }
}

enum Items<X> {
    Owned(Vec<X>),
    Shared {
        buf: Arc<Buffer<X>>,
        start: usize,
        end: usize,
    },
}

/// A run of consecutive inputs of a map, sent to one worker as one job.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// let c = crew::core::Chunk::new(10, vec!['a', 'b']);
/// assert_eq!(c.offset(), 10);
/// assert_eq!(c.as_slice(), ['a', 'b']);
/// assert_eq!(c.into_iter().collect::<String>(), "ab");
/// ```
pub struct Chunk<X> {
    offset: usize,
    items: Items<X>,
}

impl<X> std::fmt::Debug for Chunk<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("offset", &self.offset)
            .field("len", &self.len())
            .finish()
    }
}

impl<X> Chunk<X> {
    /// A chunk owning `items`, the first of which is input number `offset`.
    pub fn new(offset: usize, items: Vec<X>) -> Chunk<X> {
        Chunk {
            offset,
            items: Items::Owned(items),
        }
    }

    /// Splits `items` into chunks of `size` (the last may be shorter)
    /// without copying them.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// let chunks = crew::core::Chunk::split(vec![1, 2, 3, 4, 5], 2);
    /// let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    /// assert_eq!(lens, [2, 2, 1]);
    /// assert_eq!(chunks[2].offset(), 4);
    /// ```
    ///
    /// # Panics
    ///
    /// If `size` is 0.
    pub fn split(items: Vec<X>, size: usize) -> Vec<Chunk<X>> {
        assert!(size > 0, "chunks hold at least one item");
        let n = items.len();
        Chunk::split_at(
            items,
            (0..n)
                .step_by(size)
                .map(|start| start..(start + size).min(n)),
        )
    }

    /// Splits `items` into the chunks `ranges` name, without copying them.
    ///
    /// # Panics
    ///
    /// Unless `ranges` are non-empty, consecutive from 0 and end at
    /// `items.len()` (so that every item belongs to exactly one chunk).
    pub(crate) fn split_at(
        items: Vec<X>,
        ranges: impl IntoIterator<Item = std::ops::Range<usize>>,
    ) -> Vec<Chunk<X>> {
        let n = items.len();
        let mut items = std::mem::ManuallyDrop::new(items);
        let buf = Arc::new(Buffer {
            ptr: items.as_mut_ptr(),
            cap: items.capacity(),
        });
        let mut next = 0;
        let chunks: Vec<Chunk<X>> = ranges
            .into_iter()
            .map(|r| {
                assert!(
                    r.start == next && r.start < r.end && r.end <= n,
                    "chunks cover the items in order"
                );
                next = r.end;
                Chunk {
                    offset: r.start,
                    items: Items::Shared {
                        buf: buf.clone(),
                        start: r.start,
                        end: r.end,
                    },
                }
            })
            .collect();
        assert_eq!(next, n, "chunks cover every item");
        chunks
    }

    /// Position of the first input in the whole map.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The number of inputs.
    pub fn len(&self) -> usize {
        match &self.items {
            Items::Owned(v) => v.len(),
            Items::Shared { start, end, .. } => end - start,
        }
    }

    /// True for a chunk of no inputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inputs, in place (to serialize them, say).
    pub fn as_slice(&self) -> &[X] {
        match &self.items {
            Items::Owned(v) => v,
            // SAFETY: the range is in bounds and its elements are alive and
            // owned by this chunk (module invariant); `&self` keeps them so.
            Items::Shared { buf, start, end } => unsafe {
                std::slice::from_raw_parts(buf.ptr.add(*start), end - start)
            },
        }
    }
}

impl<X> Drop for Chunk<X> {
    fn drop(&mut self) {
        if let Items::Shared { buf, start, end } = &self.items {
            // SAFETY: the chunk still owns every element of its range (it
            // was not turned into an iterator): drop them, once.
            unsafe {
                std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                    buf.ptr.add(*start),
                    end - start,
                ))
            };
        }
    }
}

/// The inputs of a chunk, by value.
pub struct ChunkIter<X> {
    inner: IterInner<X>,
    _owns: PhantomData<X>,
}

enum IterInner<X> {
    Owned(std::vec::IntoIter<X>),
    Shared {
        buf: Arc<Buffer<X>>,
        next: usize,
        end: usize,
    },
}

impl<X> std::fmt::Debug for ChunkIter<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkIter")
    }
}

impl<X> IntoIterator for Chunk<X> {
    type Item = X;
    type IntoIter = ChunkIter<X>;

    fn into_iter(self) -> ChunkIter<X> {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; we move its fields
        // out once, so ownership of the elements passes to the iterator.
        let items = unsafe { std::ptr::read(&me.items) };
        let inner = match items {
            Items::Owned(v) => IterInner::Owned(v.into_iter()),
            Items::Shared { buf, start, end } => IterInner::Shared {
                buf,
                next: start,
                end,
            },
        };
        ChunkIter {
            inner,
            _owns: PhantomData,
        }
    }
}

impl<X> Iterator for ChunkIter<X> {
    type Item = X;

    fn next(&mut self) -> Option<X> {
        match &mut self.inner {
            IterInner::Owned(it) => it.next(),
            IterInner::Shared { buf, next, end } => {
                if *next == *end {
                    return None;
                }
                // SAFETY: `next` is in this chunk's range and not yet taken;
                // advancing past it transfers the element to the caller.
                let x = unsafe { buf.ptr.add(*next).read() };
                *next += 1;
                Some(x)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            IterInner::Owned(it) => it.len(),
            IterInner::Shared { next, end, .. } => end - next,
        };
        (n, Some(n))
    }
}

impl<X> ExactSizeIterator for ChunkIter<X> {}

impl<X> Drop for ChunkIter<X> {
    fn drop(&mut self) {
        if let IterInner::Shared { buf, next, end } = &self.inner {
            // SAFETY: the elements not yet taken are still owned here.
            unsafe {
                std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                    buf.ptr.add(*next),
                    end - next,
                ))
            };
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DROPS: AtomicUsize = AtomicUsize::new(0);

    struct Counted(#[allow(dead_code)] u32);
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_element_is_dropped_exactly_once() {
        DROPS.store(0, Ordering::SeqCst);
        let chunks = Chunk::split((0..10).map(Counted).collect(), 3);
        let mut chunks = chunks.into_iter();
        let first = chunks.next().unwrap();
        let mut it = first.into_iter();
        drop(it.next()); // 1 taken and dropped
        drop(it); // 2 dropped in place
        let second = chunks.next().unwrap();
        assert_eq!(second.as_slice().len(), 3);
        drop(second); // 3 dropped in place
        drop(chunks); // 4 (3 + 1) dropped with their chunks
        assert_eq!(DROPS.load(Ordering::SeqCst), 10);
    }
}
