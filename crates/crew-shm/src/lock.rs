//! [`Lock`] and [`RLock`]: robust process-shared mutexes, and [`Held`], the
//! guard machinery that `Value`, `Array` and `Condition` share.
//!
//! A guard keeps its own clone of the region's mapping. Without it, a guard
//! passed to `mem::forget` followed by dropping the last handle would unmap a
//! locked mutex that is still linked into this thread's robust list, and the
//! kernel would later write the "owner died" bit into whatever is mapped at
//! that address then.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use crate::error::AcquireError;
use crate::region::{Kind, Shm, impl_handle_serde};
use crate::sys::{Deadline, Locked, MutexKind, RawMutex};

/// A held region mutex; unlocks on drop. Not `Send`: pthread mutexes must be
/// unlocked by the thread that locked them.
pub(crate) struct Held {
    shm: Shm,
    mutex: *const RawMutex,
}

impl Held {
    /// Locks `mutex`, which lives in `shm`'s mapping.
    pub(crate) fn acquire(
        shm: &Shm,
        mutex: &RawMutex,
        deadline: Deadline,
    ) -> Result<Held, AcquireError<Held>> {
        let locked = mutex.lock(deadline);
        let held = || Held {
            shm: shm.clone(),
            mutex,
        };
        match locked {
            Locked::Clean => Ok(held()),
            Locked::Recovered => Err(AcquireError::owner_dead(held())),
            Locked::TimedOut => Err(AcquireError::timed_out()),
        }
    }

    pub(crate) fn mutex(&self) -> &RawMutex {
        // SAFETY: the mutex lives in the mapping `self.shm` keeps alive.
        unsafe { &*self.mutex }
    }

    /// The region this guard's mutex lives in.
    pub(crate) fn shm(&self) -> &Shm {
        &self.shm
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: a `Held` exists only while this thread holds the mutex
        // (it is not `Send`, and `Condition::wait` re-locks before returning).
        unsafe { self.mutex().unlock() };
    }
}

#[repr(C)]
pub(crate) struct LockState {
    mutex: RawMutex,
}

fn create_lock(kind: Kind, mutex: MutexKind) -> io::Result<Shm> {
    Shm::create::<LockState>(kind, 0, 0, |state| {
        // SAFETY: `create` hands us the fresh, private state.
        unsafe { RawMutex::init(&raw mut (*state).mutex, mutex) }
    })
}

/// A lock shared between processes, like `multiprocessing.Lock`, that
/// survives the death of its holder.
///
/// `acquire` returns a guard; the lock is released when the guard is
/// dropped, by the thread that acquired it. It is a robust pthread mutex in
/// shared memory: if the holding process dies (even by `SIGKILL`), the next
/// acquirer gets the lock together with the news, as
/// `Err(e)` with [`e.is_owner_dead()`](AcquireError::is_owner_dead) and the
/// guard in [`e.into_guard()`](AcquireError::into_guard). The lock is never
/// left deadlocked and never becomes unusable; only the data it protected may
/// be half-updated.
///
/// Unlike Python's `Lock`, it cannot be released by another thread than the
/// one holding it, and re-acquiring it from the holding thread panics
/// (blocking) or times out (with a timeout) instead of deadlocking; use
/// [`RLock`] to re-enter.
///
/// Clones and deserialized copies are the same lock.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::sync::Lock;
///
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.acquire().unwrap();
///     // ... critical section, in any process that has the handle ...
/// }
/// assert!(lock.try_acquire().is_ok());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    shm: Shm,
}

impl_handle_serde!(Lock, Kind::Lock);

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lock")
            .field(&format_args!("{:#018x}", self.shm.id()))
            .finish()
    }
}

impl Lock {
    /// Creates an unlocked lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::Lock::new()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn new() -> io::Result<Lock> {
        Ok(Lock {
            shm: create_lock(Kind::Lock, MutexKind::ErrorCheck)?,
        })
    }

    fn mutex(&self) -> &RawMutex {
        // SAFETY: a `Lock` region's state is a `LockState`.
        unsafe { &self.shm.state::<LockState>().mutex }
    }

    pub(crate) fn shm(&self) -> &Shm {
        &self.shm
    }

    fn acquire_until(
        &self,
        deadline: Deadline,
    ) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        Held::acquire(&self.shm, self.mutex(), deadline)
            .map(LockGuard::new)
            .map_err(|e| e.map(LockGuard::new))
    }

    /// Acquires the lock, blocking until it is free.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::Lock::new()?;
    /// let guard = match lock.acquire() {
    ///     Ok(guard) => guard,
    ///     // The previous holder died inside its critical section.
    ///     Err(e) => e.into_guard().expect("a blocking acquire only fails on owner death"),
    /// };
    /// drop(guard); // releases
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_owner_dead`]: the previous holder died holding the
    /// lock. The caller holds it now; the guard is in the error.
    ///
    /// # Panics
    ///
    /// Panics if the calling thread already holds this lock (waiting would
    /// deadlock forever).
    pub fn acquire(&self) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        self.acquire_until(Deadline::never())
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// If the calling thread already holds the lock, this waits for the
    /// timeout and fails, like Python's `acquire(timeout=…)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let lock = crew::sync::Lock::new()?;
    /// let guard = lock.acquire_timeout(Duration::from_secs(1)).unwrap();
    /// # drop(guard);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_timeout`] if the lock stayed held for `timeout`;
    /// [`AcquireError::is_owner_dead`] as for [`acquire`](Lock::acquire).
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        self.acquire_until(Deadline::after(timeout))
    }

    /// Acquires the lock if it is free, without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::Lock::new()?;
    /// let held = lock.try_acquire().unwrap();
    /// assert!(lock.try_acquire().unwrap_err().is_timeout());
    /// # drop(held);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_timeout`] if the lock is held;
    /// [`AcquireError::is_owner_dead`] as for [`acquire`](Lock::acquire).
    pub fn try_acquire(&self) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        self.acquire_until(Deadline::now())
    }
}

/// Proof that the current thread holds a [`Lock`]; releases it on drop.
///
/// Not `Send`: a pthread mutex must be released by the thread that took it.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let lock = crew::sync::Lock::new()?;
/// let guard = lock.acquire().unwrap();
/// drop(guard);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// A guard cannot move to another thread:
///
/// ```compile_fail,E0277
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let lock = crew::sync::Lock::new().unwrap();
/// let guard = lock.acquire().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard));
/// });
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    held: Held,
    _lock: PhantomData<&'a Lock>,
}

impl LockGuard<'_> {
    fn new(held: Held) -> Self {
        LockGuard {
            held,
            _lock: PhantomData,
        }
    }

    pub(crate) fn held(&self) -> &Held {
        &self.held
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockGuard")
            .field(&format_args!("{:#018x}", self.held.shm.id()))
            .finish()
    }
}

/// A re-entrant lock shared between processes, like `multiprocessing.RLock`.
///
/// The thread holding it may acquire it again; it is released when every
/// guard has been dropped. Robust like [`Lock`]: a holder's death is reported
/// to the next acquirer, never a deadlock.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let lock = crew::sync::RLock::new()?;
/// let outer = lock.acquire().unwrap();
/// let inner = lock.acquire().unwrap(); // same thread: fine
/// drop(inner);
/// drop(outer); // now released
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    shm: Shm,
}

impl_handle_serde!(RLock, Kind::RLock);

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RLock")
            .field(&format_args!("{:#018x}", self.shm.id()))
            .finish()
    }
}

impl RLock {
    /// Creates an unlocked re-entrant lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::RLock::new()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn new() -> io::Result<RLock> {
        Ok(RLock {
            shm: create_lock(Kind::RLock, MutexKind::Recursive)?,
        })
    }

    fn mutex(&self) -> &RawMutex {
        // SAFETY: an `RLock` region's state is a `LockState`.
        unsafe { &self.shm.state::<LockState>().mutex }
    }

    fn acquire_until(
        &self,
        deadline: Deadline,
    ) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        Held::acquire(&self.shm, self.mutex(), deadline)
            .map(RLockGuard::new)
            .map_err(|e| e.map(RLockGuard::new))
    }

    /// Acquires the lock (again, if this thread holds it), blocking until it
    /// is free.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::RLock::new()?;
    /// let a = lock.acquire().unwrap();
    /// let b = lock.acquire().unwrap();
    /// # drop((a, b));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_owner_dead`]: the previous holder died holding the
    /// lock (at any depth). The caller holds it now, once.
    ///
    /// # Panics
    ///
    /// Panics if one thread nests more than about 2³¹ acquisitions.
    pub fn acquire(&self) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        self.acquire_until(Deadline::never())
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let lock = crew::sync::RLock::new()?;
    /// let guard = lock.acquire_timeout(Duration::from_secs(1)).unwrap();
    /// # drop(guard);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_timeout`] if another thread held the lock for all of
    /// `timeout`; [`AcquireError::is_owner_dead`] as for
    /// [`acquire`](RLock::acquire).
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        self.acquire_until(Deadline::after(timeout))
    }

    /// Acquires the lock if it is free or held by this thread, without
    /// waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::RLock::new()?;
    /// let a = lock.try_acquire().unwrap();
    /// let b = lock.try_acquire().unwrap();
    /// # drop((a, b));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_timeout`] if another thread holds the lock;
    /// [`AcquireError::is_owner_dead`] as for [`acquire`](RLock::acquire).
    pub fn try_acquire(&self) -> Result<RLockGuard<'_>, AcquireError<RLockGuard<'_>>> {
        self.acquire_until(Deadline::now())
    }
}

/// One level of a held [`RLock`]; drops release one level.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let lock = crew::sync::RLock::new()?;
/// let guard = lock.acquire().unwrap();
/// drop(guard);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    held: Held,
    _lock: PhantomData<&'a RLock>,
}

impl RLockGuard<'_> {
    fn new(held: Held) -> Self {
        RLockGuard {
            held,
            _lock: PhantomData,
        }
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RLockGuard")
            .field(&format_args!("{:#018x}", self.held.shm.id()))
            .finish()
    }
}
