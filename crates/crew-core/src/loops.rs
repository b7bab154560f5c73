//! OpenMP-style data-parallel loops (`prange` in Cython, `#pragma omp
//! parallel for`), built on rayon rather than another scheduler.

use std::ops::Range;

use rayon::prelude::*;

/// How a parallel loop hands iterations to threads, as OpenMP's `schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Schedule {
    /// One contiguous block per thread (OpenMP `schedule(static)`): no
    /// scheduling cost, best for iterations of equal cost.
    Static,
    /// Blocks of the given size handed out on demand (OpenMP
    /// `schedule(dynamic, n)`): evens out iterations of uneven cost.
    Dynamic(usize),
    /// rayon's adaptive splitting (the default).
    #[default]
    Adaptive,
}

/// A parallel loop over a range of indices; see [`prange`].
#[derive(Clone, Debug)]
pub struct ParRange {
    range: Range<usize>,
    schedule: Schedule,
    threads: Option<usize>,
}

/// A parallel loop over `range`, like Cython's `prange`.
///
/// # Examples
///
/// ```
/// use crew_core::{prange, Schedule};
///
/// // Sum of squares with a static schedule.
/// let total = prange(0..1_000).schedule(Schedule::Static).map_sum(|i| (i * i) as u64);
/// assert_eq!(total, (0..1_000u64).map(|i| i * i).sum());
///
/// // Fill a buffer in parallel.
/// let mut out = vec![0u32; 100];
/// crew_core::par_for_each_mut(&mut out, Schedule::Dynamic(8), |i, x| *x = i as u32 * 2);
/// assert_eq!(out[10], 20);
/// ```
pub fn prange(range: Range<usize>) -> ParRange {
    ParRange {
        range,
        schedule: Schedule::default(),
        threads: None,
    }
}

fn block(len: usize, schedule: Schedule, threads: usize) -> (usize, usize) {
    match schedule {
        Schedule::Static => {
            let b = len.div_ceil(threads.max(1)).max(1);
            (b, b)
        }
        Schedule::Dynamic(n) => (n.max(1), n.max(1)),
        Schedule::Adaptive => (1, usize::MAX),
    }
}

impl ParRange {
    /// Sets the schedule.
    pub fn schedule(mut self, schedule: Schedule) -> ParRange {
        self.schedule = schedule;
        self
    }

    /// Runs on a dedicated pool of `n` threads instead of rayon's global one.
    pub fn threads(mut self, n: usize) -> ParRange {
        self.threads = Some(n.max(1));
        self
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.threads {
            None => f(),
            Some(n) => match rayon::ThreadPoolBuilder::new().num_threads(n).build() {
                Ok(pool) => pool.install(f),
                // No threads to be had: running on the global pool is still correct.
                Err(_) => f(),
            },
        }
    }

    fn threads_used(&self) -> usize {
        self.threads.unwrap_or_else(rayon::current_num_threads)
    }

    /// Calls `body(i)` for every index, in parallel.
    pub fn for_each(self, body: impl Fn(usize) + Send + Sync) {
        let (min, max) = block(self.range.len(), self.schedule, self.threads_used());
        let range = self.range.clone();
        self.install(|| {
            range
                .into_par_iter()
                .with_min_len(min)
                .with_max_len(max)
                .for_each(body)
        })
    }

    /// Maps every index and adds the results (OpenMP `reduction(+:…)`).
    pub fn map_sum<S>(self, body: impl Fn(usize) -> S + Send + Sync) -> S
    where
        S: Send + std::iter::Sum<S> + std::iter::Sum<S>,
    {
        let (min, max) = block(self.range.len(), self.schedule, self.threads_used());
        let range = self.range.clone();
        self.install(|| {
            range
                .into_par_iter()
                .with_min_len(min)
                .with_max_len(max)
                .map(body)
                .sum()
        })
    }

    /// Maps every index and combines the results with `reduce`, starting
    /// from `identity()` in each block.
    pub fn map_reduce<T: Send>(
        self,
        body: impl Fn(usize) -> T + Send + Sync,
        identity: impl Fn() -> T + Send + Sync,
        reduce: impl Fn(T, T) -> T + Send + Sync,
    ) -> T {
        let (min, max) = block(self.range.len(), self.schedule, self.threads_used());
        let range = self.range.clone();
        self.install(|| {
            range
                .into_par_iter()
                .with_min_len(min)
                .with_max_len(max)
                .map(body)
                .reduce(identity, reduce)
        })
    }

    /// Maps every index into a `Vec`, in index order.
    pub fn map_collect<T: Send>(self, body: impl Fn(usize) -> T + Send + Sync) -> Vec<T> {
        let (min, max) = block(self.range.len(), self.schedule, self.threads_used());
        let range = self.range.clone();
        self.install(|| {
            range
                .into_par_iter()
                .with_min_len(min)
                .with_max_len(max)
                .map(body)
                .collect()
        })
    }
}

/// Calls `body(i, &mut item)` for every element of `data`, in parallel.
///
/// # Examples
///
/// ```
/// let mut v = vec![1.0f64; 8];
/// crew_core::par_for_each_mut(&mut v, crew_core::Schedule::Static, |i, x| *x *= i as f64);
/// assert_eq!(v[3], 3.0);
/// ```
pub fn par_for_each_mut<T: Send>(
    data: &mut [T],
    schedule: Schedule,
    body: impl Fn(usize, &mut T) + Send + Sync,
) {
    let (min, max) = block(data.len(), schedule, rayon::current_num_threads());
    data.par_iter_mut()
        .enumerate()
        .with_min_len(min)
        .with_max_len(max)
        .for_each(|(i, x)| body(i, x));
}
