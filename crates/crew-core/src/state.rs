//! Per-worker state made by a pool's initializer (Python's
//! `initializer=`/`initargs=`, mpire's `worker_state`).

use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static STATE: RefCell<Option<Arc<dyn Any + Send + Sync>>> = const { RefCell::new(None) };
}

/// The state the pool's initializer made for the worker running the
/// current task, if it made one of type `S`.
///
/// A pool built with `.initializer(f, args)` runs `f(args…)` once in each
/// worker (each thread of a thread pool, each process of a process pool)
/// before its first task; what `f` returns is this worker's state.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// // Outside a worker there is no state.
/// assert!(crew::worker_state::<String>().is_none());
/// ```
pub fn worker_state<S: Any + Send + Sync>() -> Option<Arc<S>> {
    STATE
        .with(|s| s.borrow().clone())
        .and_then(|a| a.downcast::<S>().ok())
}

/// Sets the calling worker's state (back-ends call this after running the
/// initializer).
///
/// The state belongs to the calling thread and replaces any it had; tasks
/// that later run on this thread see it through [`worker_state`].
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::Arc;
/// crew::core::set_worker_state(Arc::new(5u32));
/// assert_eq!(*crew::core::worker_state::<u32>().unwrap(), 5);
/// assert!(crew::core::worker_state::<String>().is_none()); // another type
/// ```
pub fn set_worker_state(state: Arc<dyn Any + Send + Sync>) {
    STATE.with(|s| *s.borrow_mut() = Some(state));
}
