//! `wait` and `as_completed` over many futures, as in `concurrent.futures`.
//!
//! Both register one listener with every future that pushes the future's
//! index into a shared queue; the caller takes the queue a batch at a time,
//! spins briefly when it is empty (crew's `SpinWait`), then sleeps on a
//! condition variable, which completions notify only while it sleeps.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::slot::Listener;
use crate::spin::SpinWait;
use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::future::Future;

/// When [`wait`] returns, as Python's `return_when`.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use std::time::Duration;
/// use crew::{Error, Future, ReturnWhen, wait};
///
/// let (_p, pending) = Future::<u32>::pending();
/// let ok = Future::ready(Ok(1));
/// let failed = Future::ready(Err(Error::panic("boom")));
/// // Returns at the failure, without waiting for `pending`.
/// let w = wait(vec![ok, pending, failed], ReturnWhen::FirstException, Some(Duration::from_secs(10)));
/// assert_eq!(w.done.len(), 2);
/// assert_eq!(w.not_done.len(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// As soon as any future is done (or cancelled).
    FirstCompleted,
    /// As soon as any future fails (a cancellation is not a failure, as in
    /// Python); if none fails, when all are done.
    FirstException,
    /// When every future is done.
    AllCompleted,
}

/// What [`wait`] found: the futures that are done and those that are not.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use std::time::Duration;
/// use crew::{Future, ReturnWhen, wait};
///
/// let (_p, stuck) = Future::<u8>::pending();
/// let w = wait(vec![Future::ready(Ok(1)), stuck], ReturnWhen::AllCompleted, Some(Duration::from_millis(5)));
/// assert_eq!(w.not_done.len(), 1); // the timeout passed: not an error
/// let [done] = <[_; 1]>::try_from(w.done).unwrap();
/// assert_eq!(done.result().unwrap(), 1);
/// ```
#[derive(Debug)]
pub struct Waited<T> {
    /// Futures that are done, in the order they were given.
    pub done: Vec<Future<T>>,
    /// Futures still pending or running, in the order they were given.
    pub not_done: Vec<Future<T>>,
}

/// The completions of the futures one `wait` or `as_completed` watches,
/// in the order they happened: pushed by the threads that complete the
/// futures, taken by the one waiting thread a batch at a time.
struct Completions {
    ready: Mutex<Ready>,
    cv: Condvar,
    /// Completions in `ready.queue`, read without the lock: the waiter
    /// spins on it before sleeping.
    count: AtomicUsize,
}

/// Room for this many completions is made up front: the queue is usually
/// short (the waiter keeps up), and a wait on a million futures need not
/// allocate for a million.
const BATCH: usize = 1024;

struct Ready {
    /// `(index, failed)` of each completion not yet taken.
    queue: VecDeque<(usize, bool)>,
    /// The waiter sleeps on `cv`: only then does a completion notify it
    /// (a notification is a futex call even with nobody to wake).
    waiting: bool,
}

impl Completions {
    /// Watches every future; `futures` yields `(index, future)`. One
    /// listener serves the futures still running; those already done are
    /// queued at once, together, without a listener (no lock, no pin of
    /// their value per future). `failed` says whether to read a done
    /// future's value for the `failed` flag (only `wait` uses it).
    fn watch<'a, T: Send + 'a>(
        futures: impl ExactSizeIterator<Item = (usize, &'a Future<T>)>,
        failed: bool,
    ) -> Arc<Completions> {
        let c = Arc::new(Completions {
            ready: Mutex::new(Ready {
                queue: VecDeque::with_capacity(futures.len().min(BATCH)),
                waiting: false,
            }),
            cv: Condvar::new(),
            count: AtomicUsize::new(0),
        });
        let mut listener: Option<Listener<Result<T>>> = None;
        let n = futures.len();
        let mut done = VecDeque::new();
        for (i, f) in futures {
            if f.done() {
                if done.capacity() == 0 {
                    // Room for all, made once (its memory is touched only
                    // as it is used): a queue that grew by doubling would
                    // copy itself and touch its pages again.
                    done.reserve_exact(n);
                }
                done.push_back((i, failed && f.failed_now()));
                continue;
            }
            let listener = listener.get_or_insert_with(|| {
                let c2 = c.clone();
                Arc::new(move |i, r: &Result<T>| c2.push(i, crate::future::failed(r)))
            });
            f.on_done_listener(listener.clone(), i);
        }
        if !done.is_empty() {
            // Nobody waits yet: the waiter is this thread, later.
            let mut ready = c.ready.lock().unwrap_or_else(|p| p.into_inner());
            if ready.queue.is_empty() {
                std::mem::swap(&mut ready.queue, &mut done);
            } else {
                ready.queue.append(&mut done);
            }
            c.count.store(ready.queue.len(), Ordering::Release);
        }
        c
    }

    fn push(&self, index: usize, failed: bool) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.queue.push_back((index, failed));
        self.count.store(ready.queue.len(), Ordering::Release);
        let waiting = ready.waiting;
        drop(ready);
        if waiting {
            self.cv.notify_one();
        }
    }

    /// Next completion, from `taken` (this waiter's batch) or, once that is
    /// empty, the next batch; `None` when `deadline` passed first.
    fn next(
        &self,
        taken: &mut VecDeque<(usize, bool)>,
        deadline: Option<Instant>,
    ) -> Option<(usize, bool)> {
        if let Some(x) = taken.pop_front() {
            return Some(x);
        }
        let mut spin = SpinWait::new();
        while self.count.load(Ordering::Acquire) == 0 && spin.spin() {}
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if !ready.queue.is_empty() {
                // Take the whole batch; the queue gets our empty buffer.
                std::mem::swap(&mut ready.queue, taken);
                self.count.store(0, Ordering::Relaxed);
                return taken.pop_front();
            }
            ready.waiting = true;
            match crate::engine::wait_deadline(&self.cv, ready, deadline) {
                Ok(r) => {
                    ready = r;
                    ready.waiting = false;
                }
                Err(mut r) => {
                    r.waiting = false;
                    if r.queue.is_empty() {
                        return None;
                    }
                    ready = r;
                }
            }
        }
    }
}

/// Waits for the futures as `return_when` says, or until `timeout` passes,
/// and splits them into done and not done (Python's
/// `concurrent.futures.wait`).
///
/// A timeout is not an error: the futures still pending come back in
/// `not_done`.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::{Future, ReturnWhen, wait};
///
/// let (_p, slow) = Future::<u32>::pending();
/// let fast = Future::ready(Ok(1));
/// let w = wait(vec![slow, fast], ReturnWhen::FirstCompleted, None);
/// assert_eq!(w.done.len(), 1);
/// assert_eq!(w.not_done.len(), 1);
/// ```
pub fn wait<T: Send>(
    futures: impl IntoIterator<Item = Future<T>>,
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> Waited<T> {
    let futures: Vec<Future<T>> = futures.into_iter().collect();
    let deadline = timeout.map(crate::engine::deadline);
    let total = futures.len();
    let completions = Completions::watch(futures.iter().enumerate(), true);
    let mut taken = VecDeque::new();
    let mut finished = 0;
    let mut stop = total == 0;
    while !stop {
        match completions.next(&mut taken, deadline) {
            None => stop = true,
            Some((_, failed)) => {
                finished += 1;
                stop = finished == total
                    || return_when == ReturnWhen::FirstCompleted
                    || (return_when == ReturnWhen::FirstException && failed);
            }
        }
    }
    let (done, not_done) = futures.into_iter().partition(|f| f.done());
    Waited { done, not_done }
}

/// An iterator over futures in the order they complete (Python's
/// `concurrent.futures.as_completed`).
///
/// Each yielded future is done, so its `result()` does not block.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::{Future, as_completed};
///
/// let futures = vec![Future::ready(Ok(1)), Future::ready(Ok(2))];
/// let mut sum = 0;
/// for f in as_completed(futures) {
///     sum += f.result().unwrap();
/// }
/// assert_eq!(sum, 3);
/// ```
pub fn as_completed<T: Send>(futures: impl IntoIterator<Item = Future<T>>) -> AsCompleted<T> {
    let futures: Vec<Option<Future<T>>> = futures.into_iter().map(Some).collect();
    let completions = Completions::watch(
        futures
            .iter()
            .enumerate()
            .map(|(i, f)| (i, f.as_ref().expect("fresh"))),
        false,
    );
    AsCompleted {
        remaining: futures.len(),
        futures,
        completions,
        taken: VecDeque::new(),
        deadline: None,
    }
}

/// Like [`as_completed`], but the iteration ends with one
/// `Err(e)` (`e.is_timeout()`) if the futures are not all done within
/// `timeout`; the futures not yet yielded stay in the iterator
/// ([`AsCompleted::into_remaining`]).
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use std::time::Duration;
/// use crew::{Future, as_completed_timeout};
///
/// let (_p, never) = Future::<u8>::pending();
/// let mut it = as_completed_timeout(vec![Future::ready(Ok(1)), never], Duration::from_millis(10));
/// assert_eq!(it.next().unwrap().unwrap().result().unwrap(), 1);
/// assert!(it.next().unwrap().unwrap_err().is_timeout());
/// assert!(it.next().is_none());
/// assert_eq!(it.into_remaining().len(), 1);
/// ```
pub fn as_completed_timeout<T: Send>(
    futures: impl IntoIterator<Item = Future<T>>,
    timeout: Duration,
) -> AsCompletedTimeout<T> {
    let mut inner = as_completed(futures);
    inner.deadline = Some(crate::engine::deadline(timeout));
    AsCompletedTimeout {
        inner,
        timed_out: false,
    }
}

/// Iterator returned by [`as_completed`].
///
/// `next` blocks until another future completes; the iteration ends when
/// every future was yielded.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::{Future, as_completed};
///
/// let (first, f_first) = Future::<&str>::pending();
/// let (second, f_second) = Future::<&str>::pending();
/// let mut it = as_completed(vec![f_first, f_second]);
/// second.complete(Ok("second"));
/// assert_eq!(it.next().unwrap().result().unwrap(), "second");
/// first.complete(Ok("first"));
/// assert_eq!(it.next().unwrap().result().unwrap(), "first");
/// assert!(it.next().is_none());
/// ```
#[derive(Debug)]
pub struct AsCompleted<T> {
    futures: Vec<Option<Future<T>>>,
    completions: Arc<Completions>,
    /// The batch of completions taken from `completions`, not yet yielded.
    taken: VecDeque<(usize, bool)>,
    remaining: usize,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for Completions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completions").finish_non_exhaustive()
    }
}

impl<T: Send> AsCompleted<T> {
    /// The futures not yielded yet, in their original order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Future, as_completed};
    ///
    /// let (_p, pending) = Future::<u8>::pending();
    /// let mut it = as_completed(vec![pending, Future::ready(Ok(2))]);
    /// assert_eq!(it.next().unwrap().result().unwrap(), 2);
    /// let rest = it.into_remaining();
    /// assert_eq!(rest.len(), 1);
    /// assert!(!rest[0].done());
    /// ```
    pub fn into_remaining(self) -> Vec<Future<T>> {
        self.futures.into_iter().flatten().collect()
    }
}

impl<T: Send> Iterator for AsCompleted<T> {
    type Item = Future<T>;

    fn next(&mut self) -> Option<Future<T>> {
        if self.remaining == 0 {
            return None;
        }
        let (i, _) = self.completions.next(&mut self.taken, self.deadline)?;
        self.remaining -= 1;
        self.futures[i].take()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Iterator returned by [`as_completed_timeout`].
///
/// Yields `Ok(future)` as futures complete, then ends; or yields one
/// `Err` (`is_timeout()`) and ends if the deadline passes first.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use std::time::Duration;
/// use crew::{Future, as_completed_timeout};
///
/// let futures = vec![Future::ready(Ok(1)), Future::ready(Ok(2))];
/// let sum: u32 = as_completed_timeout(futures, Duration::from_secs(10))
///     .map(|f| f.unwrap().result().unwrap())
///     .sum();
/// assert_eq!(sum, 3);
/// ```
#[derive(Debug)]
pub struct AsCompletedTimeout<T> {
    inner: AsCompleted<T>,
    timed_out: bool,
}

impl<T: Send> AsCompletedTimeout<T> {
    /// The futures not yielded yet, in their original order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::Duration;
    /// use crew::{Future, as_completed_timeout};
    ///
    /// let (_p, never) = Future::<u8>::pending();
    /// let mut it = as_completed_timeout(vec![never], Duration::from_millis(1));
    /// assert!(it.next().unwrap().unwrap_err().is_timeout());
    /// let rest = it.into_remaining();
    /// assert!(rest.len() == 1 && !rest[0].done());
    /// ```
    pub fn into_remaining(self) -> Vec<Future<T>> {
        self.inner.into_remaining()
    }
}

impl<T: Send> Iterator for AsCompletedTimeout<T> {
    type Item = Result<Future<T>>;

    fn next(&mut self) -> Option<Result<Future<T>>> {
        if self.timed_out || self.inner.remaining == 0 {
            return None;
        }
        match self.inner.next() {
            Some(f) => Some(Ok(f)),
            None => {
                self.timed_out = true;
                Some(Err(Error::timeout()))
            }
        }
    }
}
