//! Chunk sizing, the one policy of crew: a size the caller fixed; else,
//! for a known length, [`CHUNKS_PER_WORKER`] chunks per worker that can
//! run at once (`Backend::parallelism`; [`auto_chunksize`]); for an unknown one, single items growing until a
//! chunk takes about [`TARGET_CHUNK_TIME`] ([`ChunkPolicy`]). `prange`'s
//! static schedule cuts one block per thread with the same
//! [`even_split`].

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
/// assert_eq!(crew_core::engine::auto_chunksize(10, 2), 1);
/// assert_eq!(crew_core::engine::auto_chunksize(10_000_000, 2), 312_500);
/// ```
pub fn auto_chunksize(n: usize, workers: usize) -> usize {
    even_split(n, workers.max(1).saturating_mul(CHUNKS_PER_WORKER))
}

/// The size of each of `parts` near-equal parts of `n` items (the last
/// may be shorter), at least 1.
pub(crate) fn even_split(n: usize, parts: usize) -> usize {
    n.div_ceil(parts.max(1)).max(1)
}

/// The chunk size of a map of `n` items on `workers` workers: the one the
/// caller fixed, else [`auto_chunksize`].
pub(super) fn chunksize(fixed: Option<usize>, n: usize, workers: usize) -> usize {
    fixed.unwrap_or_else(|| auto_chunksize(n, workers))
}

pub(super) fn split<X>(items: Vec<X>, chunksize: usize) -> Vec<Chunk<X>> {
    Chunk::split(items, chunksize)
}

/// Chunk sizing of a lazy map whose length is unknown: start with single
/// items and grow until a chunk takes about [`TARGET_CHUNK_TIME`], so tiny
/// tasks are batched and long ones are not.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkPolicy {
    pub(super) fixed: bool,
    pub(super) size: usize,
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
        }
    }

    /// The sizing of a lazy map whose length turned out to be known (`n`
    /// items on `workers`): fixed at [`auto_chunksize`].
    pub(super) fn known(n: usize, workers: usize) -> ChunkPolicy {
        ChunkPolicy {
            fixed: true,
            size: auto_chunksize(n, workers),
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
