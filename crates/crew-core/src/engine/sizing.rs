//! Chunk sizing, the one policy of crew: a size the caller fixed; else,
//! for a known length, [`CHUNKS_PER_WORKER`] chunks per worker that can
//! run at once (`Backend::parallelism`; [`auto_chunksize`]), cut big first
//! and single items last by an eager map ([`Layout`]); for an unknown one,
//! single items growing until a chunk takes about [`TARGET_CHUNK_TIME`]
//! ([`ChunkPolicy`]). `prange`'s static schedule cuts one block per thread
//! with the same [`even_split`].

use std::time::Duration;

use super::Chunk;

/// Chunks per worker for a map of known length: enough to even out uneven
/// tasks (the tail is at most 1/16 of a worker's share), few enough that
/// dispatch costs nothing next to the work.
const CHUNKS_PER_WORKER: usize = 16;

/// The automatic chunk size for `n` items on `workers` workers.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// assert_eq!(crew::core::engine::auto_chunksize(10, 2), 1);
/// assert_eq!(crew::core::engine::auto_chunksize(10_000_000, 2), 312_500);
/// ```
pub fn auto_chunksize(n: usize, workers: usize) -> usize {
    even_split(n, workers.max(1).saturating_mul(CHUNKS_PER_WORKER))
}

/// The size of each of `parts` near-equal parts of `n` items (the last
/// may be shorter), at least 1.
pub(crate) fn even_split(n: usize, parts: usize) -> usize {
    n.div_ceil(parts.max(1)).max(1)
}

/// How an eager map of `n` items is cut into chunks.
///
/// A chunk size the caller fixed is kept exactly (the last chunk may be
/// shorter). Otherwise the map gets as many chunks as [`auto_chunksize`]
/// gives, but cut *tapered* (trapezoid self-scheduling, the same-count
/// cousin of OpenMP's `schedule(guided)`): sizes fall linearly from about
/// twice the even size to single items. A worker that takes the last chunk
/// while the other is still busy then waits for at most one item, not one
/// even chunk: with the KDE's 100 items on 2 workers, chunks of 7 down to
/// 1 items instead of 25 chunks of 4, so the tail is ~1 item instead of up
/// to 4. The number of chunks (dispatches, Redis entries on a cluster) is
/// the even cut's, so cheap-item maps pay nothing for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Layout {
    /// Chunks of `size` items (the last may be shorter).
    Even { n: usize, size: usize },
    /// Chunk `i` is `starts[i]..starts[i + 1]`.
    Tapered { starts: Vec<usize> },
}

impl Layout {
    /// The layout of a map of `n` items on `workers` workers: `fixed` if
    /// the caller chose a size, else tapered at [`auto_chunksize`]'s count.
    pub(super) fn new(fixed: Option<usize>, n: usize, workers: usize) -> Layout {
        if let Some(size) = fixed {
            return Layout::Even { n, size };
        }
        let size = auto_chunksize(n, workers);
        if size == 1 {
            // Single items already: nothing to taper.
            return Layout::Even { n, size };
        }
        Layout::Tapered {
            starts: tapered_starts(n, n.div_ceil(size)),
        }
    }

    /// The number of chunks.
    pub(super) fn count(&self) -> usize {
        match self {
            Layout::Even { n, size } => n.div_ceil(*size),
            Layout::Tapered { starts } => starts.len() - 1,
        }
    }

    /// Chunk `i`'s first item and length.
    pub(super) fn bounds(&self, i: usize) -> (usize, usize) {
        match self {
            Layout::Even { n, size } => {
                let offset = i * size;
                (offset, (*size).min(n - offset))
            }
            Layout::Tapered { starts } => (starts[i], starts[i + 1] - starts[i]),
        }
    }

    /// Cuts `items` (all `n` of them) into the chunks, without copying.
    pub(super) fn split<X>(&self, items: Vec<X>) -> Vec<Chunk<X>> {
        match self {
            Layout::Even { size, .. } => Chunk::split(items, *size),
            Layout::Tapered { starts } => {
                Chunk::split_at(items, starts.windows(2).map(|w| w[0]..w[1]))
            }
        }
    }
}

/// The first item of each of `chunks` chunks of `n` items (and `n` last),
/// sizes falling linearly to single items: each chunk takes `2r / (m + 1)`
/// of the `r` items left for the `m` chunks left (so `r` itself for the
/// last), and at least one, leaving at least one for each chunk after it.
fn tapered_starts(n: usize, chunks: usize) -> Vec<usize> {
    debug_assert!(chunks >= 1 && chunks <= n);
    let mut starts = Vec::with_capacity(chunks + 1);
    let mut at = 0;
    for i in 0..chunks {
        starts.push(at);
        let (left, m) = (n - at, chunks - i);
        let size = if m == 1 {
            left
        } else {
            (2 * left / (m + 1)).clamp(1, left - (m - 1))
        };
        at += size;
    }
    starts.push(at);
    starts
}

/// Chunk sizing of a lazy map whose length is unknown: start with single
/// items and grow until a chunk takes about [`TARGET_CHUNK_TIME`], so tiny
/// tasks are batched and long ones are not.
#[derive(Debug, Clone)]
pub(super) struct ChunkPolicy {
    pub(super) fixed: bool,
    pub(super) size: usize,
    /// A lazy map whose length turned out to be known: its chunks as an
    /// eager map's ([`Layout`]), by index.
    layout: Option<Layout>,
}

/// Aim for chunks of about this duration: long against a dispatch (~1 µs on
/// threads, a few µs on processes), short against a human waiting for the
/// next result.
const TARGET_CHUNK_TIME: Duration = Duration::from_micros(500);
const MAX_CHUNK: usize = 1 << 16;

impl ChunkPolicy {
    /// The sizing of a lazy map: `fixed` if the caller chose a size, else
    /// adaptive, from single items.
    pub(super) fn new(fixed: Option<usize>) -> ChunkPolicy {
        ChunkPolicy {
            fixed: fixed.is_some(),
            size: fixed.unwrap_or(1).max(1),
            layout: None,
        }
    }

    /// The sizing of a lazy map whose length turned out to be known (`n`
    /// items on `workers`): an eager map's automatic [`Layout`].
    pub(super) fn known(n: usize, workers: usize) -> ChunkPolicy {
        let layout = Layout::new(None, n, workers);
        ChunkPolicy {
            fixed: true,
            size: layout.bounds(0).1.max(1),
            layout: Some(layout),
        }
    }

    /// The size of chunk `index`: the layout's while it lasts (an input
    /// longer than its size hint goes on in single items), else `size`.
    pub(super) fn size_of(&self, index: usize) -> usize {
        match &self.layout {
            Some(l) if index < l.count() => l.bounds(index).1,
            Some(_) => 1,
            None => self.size,
        }
    }

    pub(super) fn observe(&mut self, len: usize, elapsed: Duration) {
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

#[cfg(test)]
mod test {
    use super::*;

    fn sizes(l: &Layout) -> Vec<usize> {
        (0..l.count()).map(|i| l.bounds(i).1).collect()
    }

    #[test]
    fn a_fixed_chunksize_is_kept_exactly() {
        for (n, size) in [(100, 4), (10, 3), (7, 1), (5, 9)] {
            let l = Layout::new(Some(size), n, 2);
            let s = sizes(&l);
            assert_eq!(s.len(), n.div_ceil(size));
            assert!(s[..s.len() - 1].iter().all(|&c| c == size), "{s:?}");
            assert_eq!(s.iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn automatic_chunks_taper_to_single_items_at_the_even_count() {
        let l = Layout::new(None, 100, 2);
        assert_eq!(
            sizes(&l),
            [
                7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1
            ]
        );
        for (n, workers) in [
            (100, 2),
            (10_000_000, 2),
            (33, 2),
            (1000, 8),
            (17, 1),
            (64, 3),
        ] {
            let l = Layout::new(None, n, workers);
            let s = sizes(&l);
            assert_eq!(
                s.len(),
                n.div_ceil(auto_chunksize(n, workers)),
                "as many chunks as the even cut ({n} on {workers})"
            );
            assert_eq!(s.iter().sum::<usize>(), n);
            assert!(s.windows(2).all(|w| w[0] >= w[1]), "falling: {s:?}");
            assert!(s.iter().all(|&c| c >= 1));
            let mut at = 0;
            for i in 0..l.count() {
                let (offset, len) = l.bounds(i);
                assert_eq!(offset, at, "chunks are consecutive");
                at += len;
            }
        }
        // The smallest chunk of a long map is far below the even size.
        let s = sizes(&Layout::new(None, 100, 2));
        assert_eq!(*s.last().unwrap(), 1);
    }

    #[test]
    fn a_lazy_map_of_known_length_cuts_as_an_eager_one() {
        let p = ChunkPolicy::known(100, 2);
        let l = Layout::new(None, 100, 2);
        let sizes: Vec<usize> = (0..l.count()).map(|i| p.size_of(i)).collect();
        assert_eq!(
            sizes,
            (0..l.count()).map(|i| l.bounds(i).1).collect::<Vec<_>>()
        );
        assert_eq!(
            p.size_of(l.count()),
            1,
            "beyond its size hint: single items"
        );
        assert_eq!(ChunkPolicy::new(Some(7)).size_of(3), 7);
    }

    #[test]
    fn single_item_maps_stay_even() {
        assert_eq!(Layout::new(None, 10, 2), Layout::Even { n: 10, size: 1 });
    }

    #[test]
    fn split_cuts_the_items_as_the_bounds_say() {
        for l in [Layout::new(None, 100, 2), Layout::new(Some(7), 100, 2)] {
            let chunks = l.split((0..100).collect::<Vec<u32>>());
            assert_eq!(chunks.len(), l.count());
            let mut all = Vec::new();
            for (i, c) in chunks.into_iter().enumerate() {
                assert_eq!((c.offset(), c.len()), l.bounds(i));
                all.extend(c);
            }
            assert_eq!(all, (0..100).collect::<Vec<u32>>());
        }
    }
}
