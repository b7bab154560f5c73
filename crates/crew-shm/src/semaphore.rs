//! [`Semaphore`] and [`BoundedSemaphore`]: a counter in a monitor, like
//! Python's `multiprocessing.Semaphore` and `BoundedSemaphore`.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::{Error, Kind as ErrorKind};
use crate::monitor::Monitor;
use crate::region::{Kind, Shm, impl_handle_serde};
use crate::sys::Deadline;

/// The one signal: "the counter went up".
const RELEASED: usize = 0;

#[repr(C)]
struct SemaphoreState {
    monitor: Monitor,
    value: AtomicU64,
    /// The most `value` may reach; `u64::MAX` when unbounded.
    bound: AtomicU64,
}

fn create(kind: Kind, value: u32, bound: u64) -> io::Result<Shm> {
    Shm::create::<SemaphoreState>(kind, 0, 0, |state| {
        // SAFETY: `create` hands us the fresh, private, zeroed state.
        unsafe {
            Monitor::init(&raw mut (*state).monitor);
            (*state).value = AtomicU64::new(u64::from(value));
            (*state).bound = AtomicU64::new(bound);
        }
    })
}

fn state(shm: &Shm) -> &SemaphoreState {
    // SAFETY: semaphore regions (both kinds) hold a `SemaphoreState`.
    unsafe { shm.state::<SemaphoreState>() }
}

/// Takes one unit, waiting until `deadline`, or (with `wait == false`) only
/// if one is there now. Returns whether a unit was taken.
fn acquire(shm: &Shm, deadline: Deadline, wait: bool) -> bool {
    let state = state(shm);
    // The monitor is held only for a few instructions, so even a `try` call
    // may wait for it.
    let Some(mut guard) = state
        .monitor
        .lock(if wait { deadline } else { Deadline::never() })
    else {
        return false;
    };
    // A process that died holding the monitor left `value` either updated or
    // not: there is a single store, so there is nothing to repair.
    guard.take_recovered();
    loop {
        let value = state.value.load(Relaxed);
        if value > 0 {
            state.value.store(value - 1, Relaxed);
            return true;
        }
        if !wait || deadline.has_passed() {
            return false;
        }
        guard.wait(RELEASED, deadline);
        guard.take_recovered();
    }
}

/// Gives back one unit; `Err` if that would exceed the bound.
fn release(shm: &Shm) -> Result<(), Error> {
    let state = state(shm);
    let mut guard = state
        .monitor
        .lock(Deadline::never())
        .expect("a lock without deadline cannot time out");
    guard.take_recovered();
    let value = state.value.load(Relaxed);
    if value >= state.bound.load(Relaxed) {
        return Err(Error::new(ErrorKind::Overflow));
    }
    state.value.store(value + 1, Relaxed);
    guard.notify_all(RELEASED);
    Ok(())
}

/// A counting semaphore shared between processes, like
/// `multiprocessing.Semaphore`.
///
/// [`acquire`](Semaphore::acquire) takes a unit, waiting while there is none;
/// [`release`](Semaphore::release) gives one back (from any thread or
/// process, unlike a lock). Units taken by a process that dies are not given
/// back: there is no owner to recover from.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::sync::Semaphore;
///
/// let slots = Semaphore::new(2)?; // at most two workers at once
/// slots.acquire();
/// slots.acquire();
/// assert!(!slots.try_acquire());
/// slots.release();
/// assert!(slots.try_acquire());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    shm: Shm,
}

impl_handle_serde!(Semaphore, Kind::Semaphore);

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

impl Semaphore {
    /// Creates a semaphore holding `value` units.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::Semaphore::new(3)?;
    /// assert_eq!(s.value(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn new(value: u32) -> io::Result<Semaphore> {
        Ok(Semaphore {
            shm: create(Kind::Semaphore, value, u64::MAX)?,
        })
    }

    /// Takes a unit, blocking until one is available.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::Semaphore::new(1)?;
    /// s.acquire();
    /// assert_eq!(s.value(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire(&self) {
        acquire(&self.shm, Deadline::never(), true);
    }

    /// Takes a unit, waiting at most `timeout`; returns whether it got one.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let s = crew::sync::Semaphore::new(0)?;
    /// assert!(!s.acquire_timeout(Duration::from_millis(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        acquire(&self.shm, Deadline::after(timeout), true)
    }

    /// Takes a unit if one is available now; returns whether it got one.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::Semaphore::new(1)?;
    /// assert!(s.try_acquire());
    /// assert!(!s.try_acquire());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_acquire(&self) -> bool {
        acquire(&self.shm, Deadline::now(), false)
    }

    /// Gives back a unit, waking waiters in any process.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::Semaphore::new(0)?;
    /// s.release();
    /// assert!(s.try_acquire());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if the count would pass `u64::MAX`.
    pub fn release(&self) {
        release(&self.shm).expect("semaphore count overflows u64");
    }

    /// The number of units available now (a hint: it may change at once).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::sync::Semaphore::new(2)?.value(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn value(&self) -> u64 {
        state(&self.shm).value.load(Relaxed)
    }
}

/// A semaphore that refuses to be released above its initial value, like
/// `multiprocessing.BoundedSemaphore`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let s = crew::sync::BoundedSemaphore::new(1)?;
/// s.acquire();
/// s.release().unwrap();
/// assert!(s.release().unwrap_err().is_overflow());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    shm: Shm,
}

impl_handle_serde!(BoundedSemaphore, Kind::BoundedSemaphore);

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.value())
            .field("bound", &state(&self.shm).bound.load(Relaxed))
            .finish()
    }
}

impl BoundedSemaphore {
    /// Creates a semaphore holding (and bounded by) `value` units.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::BoundedSemaphore::new(4)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn new(value: u32) -> io::Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            shm: create(Kind::BoundedSemaphore, value, u64::from(value))?,
        })
    }

    /// Takes a unit, blocking until one is available.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::BoundedSemaphore::new(1)?;
    /// s.acquire();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire(&self) {
        acquire(&self.shm, Deadline::never(), true);
    }

    /// Takes a unit, waiting at most `timeout`; returns whether it got one.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let s = crew::sync::BoundedSemaphore::new(0)?;
    /// assert!(!s.acquire_timeout(Duration::from_millis(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        acquire(&self.shm, Deadline::after(timeout), true)
    }

    /// Takes a unit if one is available now; returns whether it got one.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::BoundedSemaphore::new(1)?;
    /// assert!(s.try_acquire() && !s.try_acquire());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_acquire(&self) -> bool {
        acquire(&self.shm, Deadline::now(), false)
    }

    /// Gives back a unit, waking waiters in any process.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let s = crew::sync::BoundedSemaphore::new(1)?;
    /// s.acquire();
    /// assert!(s.release().is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_overflow`] if the semaphore already holds its initial
    /// value (released more often than acquired); nothing changes.
    pub fn release(&self) -> Result<(), Error> {
        release(&self.shm)
    }

    /// The number of units available now (a hint: it may change at once).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::sync::BoundedSemaphore::new(2)?.value(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn value(&self) -> u64 {
        state(&self.shm).value.load(Relaxed)
    }
}
