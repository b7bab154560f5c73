//! OpenMP-style data-parallel loops (`prange` in Cython, `#pragma omp
//! parallel for`), built on rayon rather than another scheduler.

use std::ops::Range;

use rayon::prelude::*;

/// How a parallel loop hands iterations to threads, as OpenMP's `schedule`.
///
/// The schedule changes only how iterations are grouped, never the result:
/// [`ParRange::map_collect`] is in index order whatever the schedule.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::{Schedule, prange};
///
/// assert_eq!(Schedule::default(), Schedule::Adaptive);
/// // Iterations of uneven cost: hand them out in blocks of 16.
/// let v = prange(0..100).schedule(Schedule::Dynamic(16)).map_collect(|i| i * 2);
/// assert_eq!(v, (0..100).map(|i| i * 2).collect::<Vec<_>>());
/// ```
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
///
/// Set the [`schedule`](ParRange::schedule) and the
/// [`threads`](ParRange::threads), then run it with one of `for_each`,
/// `map_sum`, `map_reduce` or `map_collect`, each of which blocks until
/// every iteration has run.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// let squares = crew::prange(0..5).threads(2).map_collect(|i| i * i);
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ```
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
/// # use crew_core as crew;
/// use crew::{prange, Schedule};
///
/// // Sum of squares with a static schedule.
/// let total = prange(0..1_000).schedule(Schedule::Static).map_sum(|i| (i * i) as u64);
/// assert_eq!(total, (0..1_000u64).map(|i| i * i).sum());
///
/// // Fill a buffer in parallel.
/// let mut out = vec![0u32; 100];
/// crew::par_for_each_mut(&mut out, Schedule::Dynamic(8), |i, x| *x = i as u32 * 2);
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
            let b = crate::engine::even_split(len, threads);
            (b, b)
        }
        Schedule::Dynamic(n) => (n.max(1), n.max(1)),
        Schedule::Adaptive => (1, usize::MAX),
    }
}

impl ParRange {
    /// Sets the schedule (by default [`Schedule::Adaptive`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Schedule, prange};
    /// assert_eq!(prange(0..10).schedule(Schedule::Static).map_sum(|i| i), 45);
    /// ```
    pub fn schedule(mut self, schedule: Schedule) -> ParRange {
        self.schedule = schedule;
        self
    }

    /// Runs on a dedicated pool of `n` threads instead of rayon's global one.
    ///
    /// The pool is built when the loop runs and dropped when it ends, so
    /// this costs a thread start-up per loop; `n` of 0 counts as 1.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::collections::HashSet;
    /// let ids = crew::prange(0..64).threads(2).map_collect(|_| std::thread::current().id());
    /// let distinct: HashSet<_> = ids.into_iter().collect();
    /// assert!(distinct.len() <= 2);
    /// assert!(!distinct.contains(&std::thread::current().id()));
    /// ```
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

    /// Calls `body(i)` for every index, in parallel, in no particular
    /// order; blocks until every call has returned.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// let sum = AtomicUsize::new(0);
    /// crew::prange(0..100).for_each(|i| {
    ///     sum.fetch_add(i, Ordering::Relaxed);
    /// });
    /// assert_eq!(sum.into_inner(), 4950);
    /// ```
    ///
    /// # Panics
    ///
    /// If `body` panics, the panic is raised again on the calling thread.
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

    /// Maps every index and adds the results (OpenMP `reduction(+:…)`);
    /// blocks until done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let total: u64 = crew::prange(1..101).map_sum(|i| i as u64);
    /// assert_eq!(total, 5050);
    /// ```
    ///
    /// # Panics
    ///
    /// If `body` panics, the panic is raised again on the calling thread.
    pub fn map_sum<S>(self, body: impl Fn(usize) -> S + Send + Sync) -> S
    where
        S: Send + std::iter::Sum<S>,
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
    /// from `identity()` in each block; blocks until done.
    ///
    /// Blocks are combined in no fixed grouping, so `reduce` should be
    /// associative and `identity()` neutral for it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let largest = crew::prange(0..1000).map_reduce(|i| (i * 7919) % 1000, || 0, usize::max);
    /// assert_eq!(largest, 999);
    /// ```
    ///
    /// # Panics
    ///
    /// If `body` or `reduce` panics, the panic is raised again on the
    /// calling thread.
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

    /// Maps every index into a `Vec`, in index order; blocks until done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Schedule, prange};
    /// let v = prange(3..7).schedule(Schedule::Dynamic(1)).map_collect(|i| i.to_string());
    /// assert_eq!(v, ["3", "4", "5", "6"]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `body` panics, the panic is raised again on the calling thread.
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
/// # use crew_core as crew;
/// let mut v = vec![1.0f64; 8];
/// crew::par_for_each_mut(&mut v, crew::Schedule::Static, |i, x| *x *= i as f64);
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
