//! Single calls: [`call_blocking`], which may borrow from the caller, and
//! [`spawn_call`], which completes a promise later.

use crate::backend::Runs;
use crate::error::{Error, Result};
use crate::future::Future;

/// Runs one call and waits for it; the task may borrow data outliving `'s`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Star, Threads, engine::call_blocking};
/// let t = Threads::new(1)?;
/// let name = String::from("crew");
/// assert_eq!(call_blocking(&t, Star(|n: usize| name.len() * n), (2,))?, 8);
/// # Ok::<(), crew::core::Error>(())
/// ```
///
/// # Errors
///
/// The task's error.
pub fn call_blocking<'s, B, T, X, R>(backend: &B, task: T, input: X) -> Result<R>
where
    B: Runs<'s, T, X, R>,
    T: 's,
    X: 's,
    R: Send + 's,
{
    if backend.is_closed() {
        return Err(Error::shutdown());
    }
    let (promise, future) = Future::pending();
    let job = backend.call_job(task, input, promise);
    // SAFETY: we wait for the promise below before returning, and a job
    // drops its borrows before completing its promise (the `Runs` contract);
    // a discarded job completes the promise when dropped. The caller waits
    // right away, so the back-end may drive the exchange on this thread.
    if let Err(job) = unsafe { backend.execute_blocking(job) } {
        drop(job);
    }
    loop {
        if future.done() {
            return future.result();
        }
        if !backend.help() {
            return future.result();
        }
    }
}

/// Queues one call that completes `promise` (the producing side of a
/// `Future` or an `AsyncResult`).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Future, Star, Threads, engine::spawn_call};
/// let t = Threads::new(1)?;
/// let (promise, future) = Future::pending();
/// spawn_call(&t, Star(|| 7u8), (), promise);
/// assert_eq!(future.result()?, 7);
/// # Ok::<(), crew::core::Error>(())
/// ```
pub fn spawn_call<B, T, X, R>(backend: &B, task: T, input: X, promise: crate::Promise<Result<R>>)
where
    B: Runs<'static, T, X, R>,
    T: 'static,
    X: 'static,
    R: Send + 'static,
{
    if backend.is_closed() {
        promise.fail(Error::shutdown());
        return;
    }
    if let Err(job) = backend.spawn(backend.call_job(task, input, promise)) {
        drop(job);
    }
}
