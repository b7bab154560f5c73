//! [`Barrier`]: parties wait until all have arrived, like
//! `multiprocessing.Barrier`, in a monitor.
//!
//! Each round is a generation. The last arrival records the generation as
//! released (`released = generation + 1`) and starts the next one; a waiter
//! whose generation moved on passed if its generation was released, and was
//! broken (by `reset`) otherwise.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use crate::error::{Error, Kind as ErrorKind};
use crate::monitor::{Monitor, MonitorGuard};
use crate::region::{Kind, Shm, impl_handle_serde};
use crate::sys::Deadline;

/// The one signal: "the generation moved on or the barrier broke".
const CHANGED: usize = 0;

#[repr(C)]
struct BarrierState {
    monitor: Monitor,
    parties: AtomicU32,
    /// Arrivals in the current generation.
    count: AtomicU32,
    generation: AtomicU32,
    /// `g + 1` once generation `g` passed.
    released: AtomicU32,
    broken: AtomicU32,
}

/// A barrier for a fixed number of parties in any processes, like
/// `multiprocessing.Barrier`.
///
/// [`wait`](Barrier::wait) blocks until `parties` callers have arrived, then
/// all return, each with a distinct index in `0..parties` (in arrival order,
/// as in Python). A wait that times out breaks the barrier: every waiter, and
/// every later caller until [`reset`](Barrier::reset), gets
/// [`Error::is_broken`]. A party whose process dies while waiting is not
/// noticed: the others wait until their timeouts, so prefer `wait_timeout`
/// across processes.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let barrier = crew::sync::Barrier::new(2)?;
/// let indices = std::thread::scope(|s| {
///     let other = s.spawn(|| barrier.wait().unwrap());
///     [barrier.wait().unwrap(), other.join().unwrap()]
/// });
/// assert_eq!(indices[0] + indices[1], 1); // one got 0, the other 1
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    shm: Shm,
}

impl_handle_serde!(Barrier, Kind::Barrier);

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("is_broken", &self.is_broken())
            .finish()
    }
}

impl Barrier {
    /// Creates a barrier for `parties` callers.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::sync::Barrier::new(3)?.parties(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `parties` is 0; otherwise fails if the shared memory
    /// cannot be created.
    pub fn new(parties: u32) -> io::Result<Barrier> {
        if parties == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a barrier needs at least one party",
            ));
        }
        let shm = Shm::create::<BarrierState>(Kind::Barrier, 0, 0, |state| {
            // SAFETY: `create` hands us the fresh, private, zeroed state.
            unsafe {
                Monitor::init(&raw mut (*state).monitor);
                (*state).parties = AtomicU32::new(parties);
            }
        })?;
        Ok(Barrier { shm })
    }

    fn state(&self) -> &BarrierState {
        // SAFETY: a `Barrier` region's state is a `BarrierState`.
        unsafe { self.shm.state::<BarrierState>() }
    }

    /// Breaks the barrier if a process died inside the monitor: its update
    /// may be half done, and a party is gone anyway.
    fn check_recovered(&self, guard: &mut MonitorGuard<'_>) {
        if guard.take_recovered() {
            self.state().broken.store(1, Relaxed);
            guard.notify_all(CHANGED);
        }
    }

    fn wait_until(&self, deadline: Deadline) -> Result<usize, Error> {
        let state = self.state();
        let mut guard = state
            .monitor
            .lock(Deadline::never())
            .expect("a lock without deadline cannot time out");
        self.check_recovered(&mut guard);
        if state.broken.load(Relaxed) != 0 {
            return Err(Error::new(ErrorKind::Broken));
        }
        let generation = state.generation.load(Relaxed);
        let index = state.count.load(Relaxed);
        if index + 1 == state.parties.load(Relaxed) {
            state.count.store(0, Relaxed);
            state.released.store(generation.wrapping_add(1), Relaxed);
            state.generation.store(generation.wrapping_add(1), Relaxed);
            guard.notify_all(CHANGED);
            return Ok(index as usize);
        }
        state.count.store(index + 1, Relaxed);
        loop {
            guard.wait(CHANGED, deadline);
            self.check_recovered(&mut guard);
            if state.generation.load(Relaxed) != generation {
                return if state.released.load(Relaxed) == generation.wrapping_add(1) {
                    Ok(index as usize)
                } else {
                    Err(Error::new(ErrorKind::Broken))
                };
            }
            if state.broken.load(Relaxed) != 0 {
                return Err(Error::new(ErrorKind::Broken));
            }
            if deadline.has_passed() {
                state.broken.store(1, Relaxed);
                guard.notify_all(CHANGED);
                return Err(Error::new(ErrorKind::TimedOut));
            }
        }
    }

    /// Waits until all parties have arrived; returns this caller's arrival
    /// index in `0..parties`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let alone = crew::sync::Barrier::new(1)?;
    /// assert_eq!(alone.wait().unwrap(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_broken`] if the barrier is or becomes broken (`abort`,
    /// another party's timeout, `reset` while waiting, or a process dying
    /// inside the barrier's critical section).
    pub fn wait(&self) -> Result<usize, Error> {
        self.wait_until(Deadline::never())
    }

    /// Waits at most `timeout` for all parties; on timeout the barrier
    /// breaks, for everyone, as in Python.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let b = crew::sync::Barrier::new(2)?;
    /// assert!(b.wait_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    /// assert!(b.is_broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_timeout`] if this caller's timeout passed;
    /// [`Error::is_broken`] as for [`wait`](Barrier::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, Error> {
        self.wait_until(Deadline::after(timeout))
    }

    /// Breaks the barrier: current and future waiters get an error until
    /// [`reset`](Barrier::reset).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let b = crew::sync::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.is_broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort(&self) {
        let mut guard = self
            .state()
            .monitor
            .lock(Deadline::never())
            .expect("no deadline");
        guard.take_recovered();
        self.state().broken.store(1, Relaxed);
        guard.notify_all(CHANGED);
    }

    /// Returns the barrier to its initial state; parties waiting now get
    /// [`Error::is_broken`].
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let b = crew::sync::Barrier::new(2)?;
    /// b.abort();
    /// b.reset();
    /// assert!(!b.is_broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reset(&self) {
        let state = self.state();
        let mut guard = state.monitor.lock(Deadline::never()).expect("no deadline");
        guard.take_recovered();
        state.count.store(0, Relaxed);
        state.broken.store(0, Relaxed);
        state
            .generation
            .store(state.generation.load(Relaxed).wrapping_add(1), Relaxed);
        guard.notify_all(CHANGED);
    }

    /// The number of parties the barrier waits for.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::sync::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        self.state().parties.load(Relaxed)
    }

    /// The number of parties waiting now (a hint).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::sync::Barrier::new(4)?.n_waiting(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        if self.is_broken() {
            0
        } else {
            self.state().count.load(Relaxed)
        }
    }

    /// Whether the barrier is broken.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert!(!crew::sync::Barrier::new(4)?.is_broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_broken(&self) -> bool {
        self.state().broken.load(Relaxed) != 0
    }
}
