//! [`Event`]: a flag in shared memory that waiters sleep on with a futex,
//! like `multiprocessing.Event`.
//!
//! No mutex at all: the flag is the futex word. `set` stores 1 and then
//! checks for sleepers; a waiter counts itself as a sleeper and then re-reads
//! the flag (a SeqCst Dekker pair), and the kernel re-checks the word before
//! sleeping. A process killed anywhere leaves at worst a stale sleeper count,
//! which costs one needless wake-up call.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use crate::region::{Kind, Shm, impl_handle_serde};
use crate::sys::{self, Deadline};

#[repr(C)]
struct EventState {
    flag: AtomicU32,
    sleepers: AtomicU32,
}

/// A flag shared between processes that waiters can sleep on, like
/// `multiprocessing.Event`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::sync::Event;
///
/// let ready = Event::new()?;
/// std::thread::scope(|s| {
///     s.spawn(|| ready.set()); // or in another process, from a handle
///     assert!(ready.wait_timeout(std::time::Duration::from_secs(10)));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    shm: Shm,
}

impl_handle_serde!(Event, Kind::Event);

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Event {
    /// Creates an event that is not set.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert!(!crew::sync::Event::new()?.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn new() -> io::Result<Event> {
        Ok(Event {
            shm: Shm::create::<EventState>(Kind::Event, 0, 0, |_| {})?,
        })
    }

    fn state(&self) -> &EventState {
        // SAFETY: an `Event` region's state is an `EventState` (all zeros is
        // "not set, no sleepers").
        unsafe { self.shm.state::<EventState>() }
    }

    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let e = crew::sync::Event::new()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set(&self) {
        let state = self.state();
        state.flag.store(1, SeqCst);
        if state.sleepers.load(SeqCst) > 0 {
            sys::futex_wake(&state.flag, i32::MAX);
        }
    }

    /// Clears the flag; later waiters block until the next `set`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let e = crew::sync::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn clear(&self) {
        self.state().flag.store(0, SeqCst);
    }

    /// Whether the flag is set.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert!(!crew::sync::Event::new()?.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state().flag.load(SeqCst) != 0
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        let state = self.state();
        loop {
            if state.flag.load(SeqCst) != 0 {
                return true;
            }
            if deadline.has_passed() {
                return false;
            }
            state.sleepers.fetch_add(1, SeqCst);
            if state.flag.load(SeqCst) == 0 {
                sys::futex_wait(&state.flag, 0, deadline);
            }
            state.sleepers.fetch_sub(1, SeqCst);
        }
    }

    /// Blocks until the flag is set (returns at once if it is).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let e = crew::sync::Event::new()?;
    /// e.set();
    /// e.wait();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait(&self) {
        self.wait_until(Deadline::never());
    }

    /// Blocks until the flag is set or `timeout` passes; returns the flag,
    /// like Python's `wait(timeout)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let e = crew::sync::Event::new()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout))
    }
}
