//! Handles to a task's outcome: [`Future`] (concurrent.futures) and
//! [`AsyncResult`] (multiprocessing's `apply_async`). Both wrap one result
//! slot; they differ only in the names Python gave their methods.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::{Error, MapError, Result};
use crate::slot::{Promise, Slot, SlotRef};

use crate::engine::deadline;

/// The outcome of a task submitted to an `Executor` (in the `crew` crate):
/// Python's `concurrent.futures.Future`.
///
/// A `Future` is a handle: the task runs whether or not anyone waits for it.
/// [`result`](Future::result) blocks until the task is done; the `_timeout`
/// variants give up after a while and leave the task running. A `Future` is
/// also a Rust future: `.await` it from async code.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// let (promise, future) = crew::Future::<u32>::pending();
/// std::thread::spawn(move || promise.complete(Ok(42)));
/// assert_eq!(future.result().unwrap(), 42);
/// ```
pub struct Future<T> {
    slot: SlotRef<Result<T>>,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: `&Future<T>` exposes `&Result<T>` (callbacks, `exception`) from
// whichever thread holds it; that needs `T: Sync` on top of the slot's rules.
unsafe impl<T: Send + Sync> Sync for Future<T> {}

impl<T: Send> Future<T> {
    /// A future with the promise that completes it: the seam a back-end uses
    /// to hand out results.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (promise, future) = crew::Future::<&str>::pending();
    /// assert!(!future.done());
    /// promise.complete(Ok("done"));
    /// assert!(future.done());
    /// ```
    pub fn pending() -> (Promise<Result<T>>, Future<T>) {
        Future::with_slot(SlotRef::boxed(Slot::new()))
    }

    fn with_slot(slot: SlotRef<Result<T>>) -> (Promise<Result<T>>, Future<T>) {
        let (promise, slot) = slot.pair();
        (
            Promise::new(promise),
            Future {
                slot,
                _not_sync: PhantomData,
            },
        )
    }

    /// A future that is already done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let f = crew::Future::ready(Ok(1));
    /// assert!(f.done());
    /// assert_eq!(f.result().unwrap(), 1);
    /// ```
    pub fn ready(outcome: Result<T>) -> Future<T> {
        let (p, f) = Future::pending();
        p.complete(outcome);
        f
    }

    /// Blocks until the task is done and returns its outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let f = crew::Future::ready(Err::<(), _>(crew::Error::panic("bad")));
    /// assert!(f.result().unwrap_err().is_panic());
    /// ```
    ///
    /// # Errors
    ///
    /// The task's error: it panicked, was cancelled, its worker was lost, …
    pub fn result(self) -> Result<T> {
        self.slot.wait(None);
        self.slot.try_take().unwrap_or_else(|| Err(taken()))
    }

    /// Like [`result`](Future::result), but gives up after `timeout` with an
    /// error for which `is_timeout()` holds, and keeps the handle: after a
    /// timeout, wait again (as Python's `result(timeout)` allows).
    ///
    /// The task is not cancelled. Once the task is done, a value is moved
    /// out to the caller (a later call reports `is_invalid_input`: the value
    /// was taken, and callbacks added after that do not run); an error stays
    /// and is returned again by every later call and by
    /// [`exception`](Future::exception).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::Duration;
    /// let (promise, f) = crew::Future::<u8>::pending();
    /// assert!(f.result_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// promise.complete(Ok(7));
    /// assert_eq!(f.result_timeout(Duration::from_secs(5))?, 7); // waited again
    /// assert!(f.result_timeout(Duration::ZERO).unwrap_err().is_invalid_input()); // taken
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A timeout, or the task's own error; `is_invalid_input` if an earlier
    /// call already took the value.
    pub fn result_timeout(&self, timeout: Duration) -> Result<T> {
        if !self.slot.wait(Some(deadline(timeout))) {
            return Err(Error::timeout());
        }
        self.slot.take_shared(
            |v| match v {
                Some(Err(e)) => Err(e.clone()),
                other => other.take().unwrap_or_else(|| Err(taken())),
            },
            |v| match v {
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(_)) => Err(lent()),
                None => Err(taken()),
            },
        )
    }

    /// Blocks until the task is done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let f = crew::Future::ready(Ok(()));
    /// f.wait();
    /// assert!(f.done());
    /// ```
    pub fn wait(&self) {
        self.slot.wait(None);
    }

    /// Blocks until the task is done or `timeout` passes; true if done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::Duration;
    /// let (_p, f) = crew::Future::<()>::pending();
    /// assert!(!f.wait_timeout(Duration::from_millis(1)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Some(deadline(timeout)))
    }

    /// True if the task finished, failed or was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert!(crew::Future::ready(Ok(0)).done());
    /// ```
    pub fn done(&self) -> bool {
        self.slot.is_done()
    }

    /// True while a worker is running the task.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (_p, f) = crew::Future::<()>::pending();
    /// assert!(!f.running());
    /// ```
    pub fn running(&self) -> bool {
        self.slot.is_running()
    }

    /// Cancels the task.
    ///
    /// A task that has not started is cancelled at once; a running task is
    /// stopped only on back-ends that can stop it (worker processes are killed
    /// and replaced); a thread keeps running its task. Returns true if the task
    /// is (or will shortly be) cancelled, as Python's `Future.cancel`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (_p, f) = crew::Future::<()>::pending();
    /// assert!(f.cancel());
    /// assert!(f.cancelled());
    /// assert!(f.result().unwrap_err().is_cancelled());
    /// ```
    pub fn cancel(&self) -> bool {
        self.slot.cancel()
    }

    /// True if the task was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert!(!crew::Future::ready(Ok(1)).cancelled());
    /// ```
    pub fn cancelled(&self) -> bool {
        self.slot.is_cancelled()
    }

    /// The task's error, if it is done and failed; `None` if it succeeded.
    ///
    /// Blocks until the task is done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let f = crew::Future::ready(Err::<(), _>(crew::Error::timeout()));
    /// assert!(f.exception().unwrap().is_timeout());
    /// ```
    pub fn exception(&self) -> Option<Error> {
        self.wait();
        // A value taken by `result_timeout` was a success.
        self.slot
            .with_value(|v| v.as_ref().err().cloned())
            .flatten()
    }

    /// Like [`exception`](Future::exception), waiting at most `timeout`
    /// (Python's `exception(timeout)`): `Ok(None)` if the task succeeded,
    /// `Ok(Some(e))` with its error if it failed or was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::Duration;
    /// let (promise, f) = crew::Future::<u8>::pending();
    /// // Python: `f.exception(timeout=0)` raises `TimeoutError` on a pending future.
    /// assert!(f.exception_timeout(Duration::ZERO).unwrap_err().is_timeout());
    /// promise.complete(Err(crew::Error::panic("boom")));
    /// assert!(f.exception_timeout(Duration::ZERO).unwrap().unwrap().is_panic());
    /// ```
    ///
    /// # Errors
    ///
    /// `is_timeout` if the task is not done within `timeout`.
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<Error>> {
        if !self.slot.wait(Some(deadline(timeout))) {
            return Err(Error::timeout());
        }
        // A value taken by `result_timeout` was a success.
        Ok(self
            .slot
            .with_value(|v| v.as_ref().err().cloned())
            .flatten())
    }

    /// Runs `callback` with the outcome once the task is done: at once, on
    /// this thread, if it already is; otherwise on the thread that completes
    /// it.
    ///
    /// Each callback runs exactly once; a panicking callback is reported on
    /// stderr and does not affect the task or other callbacks. A callback
    /// may call back into this same future: add a callback (which runs at
    /// once), wait on it (it is done), read its exception; only the value
    /// cannot be moved out while it is lent to the callback
    /// ([`result_timeout`](Future::result_timeout) there fails with
    /// `is_invalid_input`: use the callback's argument). A callback added after
    /// [`result_timeout`](Future::result_timeout) took the value does not run.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// let seen = Arc::new(AtomicU32::new(0));
    /// let (p, f) = crew::Future::pending();
    /// let s = seen.clone();
    /// f.add_done_callback(move |r: &crew::Result<u32>| s.store(*r.as_ref().unwrap(), Ordering::SeqCst));
    /// p.complete(Ok(9));
    /// assert_eq!(seen.load(Ordering::SeqCst), 9);
    /// ```
    pub fn add_done_callback(&self, callback: impl FnOnce(&Result<T>) + Send + 'static) {
        self.slot.on_done(Box::new(callback));
    }

    /// Has `listener(index, outcome)` run once the future is done (the
    /// hook of `wait` and `as_completed`).
    pub(crate) fn on_done_listener(
        &self,
        listener: crate::slot::Listener<Result<T>>,
        index: usize,
    ) {
        self.slot.on_done_listener(listener, index);
    }

    /// True if the future is done and failed (a cancellation is not a
    /// failure, as in Python; a value taken by `result_timeout` was a
    /// success). Only once [`done`](Future::done).
    pub(crate) fn failed_now(&self) -> bool {
        self.slot.with_value(failed).unwrap_or(false)
    }
}

impl<T: Send + 'static> Future<T> {
    /// [`pending`](Future::pending), reusing a result slot this thread
    /// recycled: once both the future and its promise are gone, the slot is
    /// reset and kept for the next call, so a steady stream of submits
    /// allocates no slots. The seam `Executor::submit` uses.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (promise, future) = crew::Future::<u32>::pending_recycled();
    /// promise.complete(Ok(1));
    /// assert_eq!(future.result()?, 1);
    /// // The slot is back on this thread's shelf: the next pair reuses it.
    /// let (promise, future) = crew::Future::<u32>::pending_recycled();
    /// assert!(!future.done());
    /// promise.complete(Ok(2));
    /// assert_eq!(future.result()?, 2);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn pending_recycled() -> (Promise<Result<T>>, Future<T>) {
        Future::with_slot(Slot::recycled())
    }

    /// The address of the result slot (to tell a reused slot in tests).
    #[cfg(test)]
    pub(crate) fn slot_addr(&self) -> usize {
        self.slot.addr()
    }
}

impl<T> Drop for Future<T> {
    fn drop(&mut self) {
        // SAFETY: the handle's last access: it is being dropped.
        unsafe { self.slot.release() };
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.slot.is_done() {
            if self.slot.is_cancelled() {
                "cancelled"
            } else {
                "done"
            }
        } else if self.slot.is_running() {
            "running"
        } else {
            "pending"
        };
        f.debug_struct("Future").field("state", &state).finish()
    }
}

/// The Rust-future side of a [`Future`], produced by `.await`.
///
/// Polling registers the task's waker with the result slot, so no thread
/// blocks; the waker is woken on the thread that completes the task.
///
/// # Examples
///
/// Polled by hand here; an async runtime does the same for `.await`.
///
/// ```
/// # use crew_core as crew;
/// use std::future::{Future as _, IntoFuture};
/// use std::pin::pin;
/// use std::task::{Context, Poll, Waker};
///
/// let (promise, future) = crew::Future::<u32>::pending();
/// let mut output = pin!(future.into_future());
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(output.as_mut().poll(&mut cx).is_pending());
/// promise.complete(Ok(7));
/// assert!(matches!(output.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
/// ```
#[derive(Debug)]
pub struct FutureOutput<T> {
    future: Option<Future<T>>,
}

impl<T: Send> std::future::IntoFuture for Future<T> {
    type Output = Result<T>;
    type IntoFuture = FutureOutput<T>;

    /// Awaiting a `Future` yields its outcome without blocking a thread.
    fn into_future(self) -> FutureOutput<T> {
        FutureOutput { future: Some(self) }
    }
}

impl<T: Send> std::future::Future for FutureOutput<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let future = self
            .future
            .as_ref()
            .expect("FutureOutput polled after completion");
        if future.slot.is_done() || !future.slot.register_waker(cx.waker()) {
            let f = self.future.take().expect("checked above");
            return Poll::Ready(f.slot.try_take().unwrap_or_else(|| Err(taken())));
        }
        Poll::Pending
    }
}

impl<T> Unpin for FutureOutput<T> {}

/// The outcome of an `apply_async`, `map_async` or `starmap_async` call:
/// Python's `multiprocessing.pool.AsyncResult`.
///
/// `E` is [`Error`] for a single call and [`MapError`] for a map, whose
/// error keeps the results of the tasks that succeeded.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// let (promise, res) = crew::AsyncResult::<u32>::pending();
/// assert!(!res.ready());
/// promise.complete(Ok(3));
/// assert!(res.ready());
/// assert_eq!(res.successful(), Some(true));
/// assert_eq!(res.get().unwrap(), 3);
/// ```
pub struct AsyncResult<T, E = Error> {
    slot: SlotRef<std::result::Result<T, E>>,
    /// What `get_timeout` took: 0 nothing, [`TAKEN_OK`] or [`TAKEN_ERR`].
    taken: AtomicU8,
    _not_sync: PhantomData<Cell<()>>,
}

/// `get_timeout` took a value.
const TAKEN_OK: u8 = 1;
/// `get_timeout` took an error.
const TAKEN_ERR: u8 = 2;

/// The error of a wait for an outcome that an earlier `_timeout` wait took.
/// The error of a `_timeout` wait called back from one of the handle's
/// own callbacks: the value is lent to that callback.
/// True if `r` is a failure: a cancellation is not one, as in Python
/// (`wait`'s `FIRST_EXCEPTION` and [`Future::failed_now`] both count so).
pub(crate) fn failed<T>(r: &Result<T>) -> bool {
    r.as_ref().is_err_and(|e| !e.is_cancelled())
}

fn lent() -> Error {
    Error::invalid_input(
        "the value is lent to a callback of this same handle that is still running: read it from the callback's argument",
    )
}

fn taken() -> Error {
    Error::invalid_input("the result was already taken by an earlier wait")
}

// SAFETY: see `Future`: shared access exposes `&Result<T, E>` to several threads.
unsafe impl<T: Send + Sync, E: Send + Sync> Sync for AsyncResult<T, E> {}

impl<T: Send, E: Send + From<Error>> AsyncResult<T, E> {
    /// An async result with the promise that completes it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (p, r) = crew::AsyncResult::<()>::pending();
    /// drop(p); // a promise dropped without a value cancels
    /// assert!(r.get().unwrap_err().is_cancelled());
    /// ```
    pub fn pending() -> (Promise<std::result::Result<T, E>>, AsyncResult<T, E>) {
        AsyncResult::with_slot(SlotRef::boxed(Slot::new()))
    }

    fn with_slot(
        slot: SlotRef<std::result::Result<T, E>>,
    ) -> (Promise<std::result::Result<T, E>>, AsyncResult<T, E>) {
        let (promise, slot) = slot.pair();
        (
            Promise::new(promise),
            AsyncResult {
                slot,
                taken: AtomicU8::new(0),
                _not_sync: PhantomData,
            },
        )
    }

    /// Blocks until the call is done and returns its outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (p, r) = crew::AsyncResult::<u8>::pending();
    /// p.complete(Ok(1));
    /// assert_eq!(r.get().unwrap(), 1);
    /// ```
    ///
    /// # Errors
    ///
    /// The call's error.
    pub fn get(self) -> std::result::Result<T, E> {
        self.slot.wait(None);
        self.slot
            .try_take()
            .unwrap_or_else(|| Err(E::from(taken())))
    }

    /// Like [`get`](AsyncResult::get), but gives up after `timeout` with a
    /// timeout error (`is_timeout()`) and keeps the handle: after a timeout,
    /// wait again (as Python's `get(timeout)` allows). The call goes on
    /// running.
    ///
    /// Once the call is done, its outcome (value or error) is moved out to
    /// the caller; a later call reports `is_invalid_input` (the outcome was
    /// taken), [`successful`](AsyncResult::successful) still answers, and
    /// callbacks added after that do not run.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::Duration;
    /// let (p, r) = crew::AsyncResult::<u8>::pending();
    /// let e: crew::Error = r.get_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert!(e.is_timeout());
    /// p.complete(Ok(3));
    /// assert_eq!(r.get_timeout(Duration::from_secs(5))?, 3); // waited again
    /// assert_eq!(r.successful(), Some(true));
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A timeout, or the call's own error; `is_invalid_input` if an earlier
    /// call already took the outcome.
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, E> {
        if !self.slot.wait(Some(deadline(timeout))) {
            return Err(E::from(Error::timeout()));
        }
        self.slot.take_shared(
            |v| match v.take() {
                Some(outcome) => {
                    let ok = if outcome.is_ok() { TAKEN_OK } else { TAKEN_ERR };
                    self.taken.store(ok, std::sync::atomic::Ordering::Relaxed);
                    outcome
                }
                None => Err(E::from(taken())),
            },
            |v| Err(E::from(if v.is_some() { lent() } else { taken() })),
        )
    }

    /// Blocks until the call is done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (p, r) = crew::AsyncResult::<u8>::pending();
    /// p.complete(Ok(1));
    /// r.wait();
    /// assert!(r.ready());
    /// ```
    pub fn wait(&self) {
        self.slot.wait(None);
    }

    /// Blocks until the call is done or `timeout` passes; true if done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (_p, r) = crew::AsyncResult::<u8>::pending();
    /// assert!(!r.wait_timeout(std::time::Duration::from_millis(1)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Some(deadline(timeout)))
    }

    /// True once the call is done.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (p, r) = crew::AsyncResult::<u8>::pending();
    /// assert!(!r.ready());
    /// p.complete(Ok(2));
    /// assert!(r.ready());
    /// ```
    pub fn ready(&self) -> bool {
        self.slot.is_done()
    }

    /// `Some(true)` if the call is done and succeeded, `Some(false)` if it
    /// failed, `None` while it is not done (Python raises `ValueError` there).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (p, r) = crew::AsyncResult::<u8>::pending();
    /// assert_eq!(r.successful(), None);
    /// p.fail(crew::Error::panic("x"));
    /// assert_eq!(r.successful(), Some(false));
    /// ```
    pub fn successful(&self) -> Option<bool> {
        if !self.slot.is_done() {
            return None;
        }
        // The outcome may have been taken by `get_timeout` (which records
        // what it was, under the same lock).
        self.slot.with_value(|v| v.is_ok()).or(
            match self.taken.load(std::sync::atomic::Ordering::Relaxed) {
                TAKEN_OK => Some(true),
                TAKEN_ERR => Some(false),
                _ => None,
            },
        )
    }

    /// Runs `callback` with the value once the call succeeds (Python's
    /// `callback=`): at once if it already has, else on the completing
    /// thread.
    ///
    /// Runs at most once; not at all if the call fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::sync::{Arc, Mutex};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let (p, r) = crew::AsyncResult::<u8>::pending();
    /// let g = got.clone();
    /// let r = r.callback(move |v| g.lock().unwrap().push(*v));
    /// p.complete(Ok(5));
    /// assert_eq!(*got.lock().unwrap(), [5]);
    /// # drop(r);
    /// ```
    pub fn callback(self, callback: impl FnOnce(&T) + Send + 'static) -> Self {
        self.slot.on_done(Box::new(move |v| {
            if let Ok(v) = v {
                callback(v)
            }
        }));
        self
    }

    /// Runs `callback` with the error once the call fails (Python's
    /// `error_callback=`).
    ///
    /// Runs at most once; not at all on success.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    /// let failed = Arc::new(AtomicBool::new(false));
    /// let (p, r) = crew::AsyncResult::<u8>::pending();
    /// let f = failed.clone();
    /// let r = r.error_callback(move |e: &crew::Error| f.store(e.is_panic(), Ordering::SeqCst));
    /// p.fail(crew::Error::panic("boom"));
    /// assert!(failed.load(Ordering::SeqCst));
    /// # drop(r);
    /// ```
    pub fn error_callback(self, callback: impl FnOnce(&E) + Send + 'static) -> Self {
        self.slot.on_done(Box::new(move |v| {
            if let Err(e) = v {
                callback(e)
            }
        }));
        self
    }
}

impl<T: Send + 'static, E: Send + From<Error> + 'static> AsyncResult<T, E> {
    /// [`pending`](AsyncResult::pending), reusing a result slot this thread
    /// recycled (see [`Future::pending_recycled`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (p, r) = crew::AsyncResult::<u8>::pending_recycled();
    /// p.complete(Ok(5));
    /// assert_eq!(r.get().unwrap(), 5);
    /// ```
    pub fn pending_recycled() -> (Promise<std::result::Result<T, E>>, AsyncResult<T, E>) {
        AsyncResult::with_slot(Slot::recycled())
    }
}

impl<T, E> Drop for AsyncResult<T, E> {
    fn drop(&mut self) {
        // SAFETY: the handle's last access: it is being dropped.
        unsafe { self.slot.release() };
    }
}

impl<T, E> fmt::Debug for AsyncResult<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.slot.is_done())
            .finish()
    }
}

/// An `AsyncResult` of a whole map: its error keeps every task's outcome.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::{Error, MapAsyncResult, MapError};
///
/// let (promise, r) = MapAsyncResult::<u32>::pending();
/// promise.complete(Err(MapError::new(vec![Ok(1), Err(Error::panic("boom"))])));
/// let err = r.get().unwrap_err();
/// assert_eq!(err.failed(), 1);
/// assert_eq!(*err.results()[0].as_ref().unwrap(), 1); // the success is kept
/// ```
pub type MapAsyncResult<R> = AsyncResult<Vec<R>, MapError<R>>;
