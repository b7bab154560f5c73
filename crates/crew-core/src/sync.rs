//! The synchronisation primitives the engine's concurrent core is written
//! with: `std`'s, or, under `cfg(loom)`, loom's model-checked doubles (as
//! tokio does). The models (`loom` modules beside the code, run by
//! `ci/loom.sh` with `RUSTFLAGS="--cfg loom"`) thereby check the code that
//! ships: the thread back-end's sleep/wake protocol, the result slot, and
//! the map's gathering.
//!
//! `Arc` stays `std`'s (loom's cannot hold `dyn` values); its reference
//! counts are not part of any protocol here.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Threads: spawn, park and unpark, yield.
pub(crate) mod thread {
    #[cfg(not(loom))]
    pub(crate) use std::thread::{
        Builder, Thread, ThreadId, current, park, park_timeout, yield_now,
    };

    #[cfg(loom)]
    pub(crate) use loom::thread::{Builder, Thread, ThreadId, current, park, yield_now};

    /// Loom does not model time: a timed park may return at any moment
    /// (as a real one may, spuriously), so it yields and lets the caller
    /// re-check its condition and its deadline.
    #[cfg(loom)]
    pub(crate) fn park_timeout(_: std::time::Duration) {
        yield_now();
    }
}

#[cfg(loom)]
pub(crate) use self::injector::{Injector, Steal};

/// crossbeam's `Injector`, whose insides loom cannot see, as a queue whose
/// emptiness is one loom atomic: a push is visible to `is_empty` once its
/// SeqCst increment is (crossbeam publishes a push with a SeqCst CAS of its
/// tail index, and `is_empty` reads both indices SeqCst). The mutex only
/// guards the items; `is_empty`, which the sleep protocol relies on, never
/// takes it.
#[cfg(loom)]
mod injector {
    use std::collections::VecDeque;

    use loom::sync::Mutex;
    use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    pub(crate) struct Injector<T> {
        items: Mutex<VecDeque<T>>,
        len: AtomicUsize,
    }

    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        #[allow(dead_code)] // crossbeam's third outcome; this queue never retries
        Retry,
    }

    impl<T> Injector<T> {
        pub(crate) fn new() -> Self {
            Injector {
                items: Mutex::new(VecDeque::new()),
                len: AtomicUsize::new(0),
            }
        }

        pub(crate) fn push(&self, item: T) {
            self.items.lock().unwrap().push_back(item);
            self.len.fetch_add(1, SeqCst);
        }

        pub(crate) fn steal(&self) -> Steal<T> {
            if self.len.load(SeqCst) == 0 {
                return Steal::Empty;
            }
            let mut items = self.items.lock().unwrap();
            match items.pop_front() {
                Some(item) => {
                    self.len.fetch_sub(1, SeqCst);
                    Steal::Success(item)
                }
                None => Steal::Empty,
            }
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.len.load(SeqCst) == 0
        }
    }
}
