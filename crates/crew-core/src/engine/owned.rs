//! Ownership of a back-end by a `Pool`, an `Executor` or a lazy iterator,
//! and what its last owner does to it.

use crate::backend::Backend;

/// What happens to a back-end when its last owner goes away.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Backend, OnDrop, Owned, Threads};
/// let t = Threads::new(1)?;
/// drop(Owned::new(t.clone(), OnDrop::Close));
/// assert!(t.is_closed());
/// # Ok::<(), crew::core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// Drop queued work and stop (Python's `with Pool() as p:`).
    Terminate,
    /// Let queued work finish in the background (Python's
    /// `ThreadPoolExecutor` shutdown without waiting).
    Close,
    /// Let queued work finish and wait for it: the end of Python's
    /// `with ThreadPoolExecutor() as ex:` block (`shutdown(wait=True)`).
    /// Dropped on one of the back-end's own workers, which cannot wait for
    /// itself, it closes only.
    Wait,
}

/// A back-end owned by a `Pool`, an `Executor` or a lazy iterator: the last
/// owner to go shuts it down as [`OnDrop`] says (blocking only for
/// [`OnDrop::Wait`]). See
/// [`OnDrop`] for an example.
#[derive(Debug)]
pub struct Owned<B: Backend> {
    backend: B,
    on_drop: OnDrop,
}

impl<B: Backend> Owned<B> {
    /// Takes ownership of `backend`; see [`OnDrop`] for an example.
    pub fn new(backend: B, on_drop: OnDrop) -> Owned<B> {
        Owned { backend, on_drop }
    }
}

impl<B: Backend> std::ops::Deref for Owned<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.backend
    }
}

impl<B: Backend> Drop for Owned<B> {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Terminate => self.backend.terminate(),
            OnDrop::Close => self.backend.close(),
            OnDrop::Wait => {
                self.backend.close();
                self.backend.join(None);
            }
        }
    }
}
