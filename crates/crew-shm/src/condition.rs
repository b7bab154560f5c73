//! [`Condition`]: wait for a notification while holding a [`Lock`], like
//! `multiprocessing.Condition`.
//!
//! The waiting state (a futex sequence word, the number of waiters and the
//! number of unclaimed notifications, "tokens") lives in the condition's own
//! region but is only touched while holding the associated lock. `notify(n)`
//! adds up to `n` tokens (never more than there are waiters without one),
//! bumps the sequence word and wakes all sleepers; a woken waiter that finds a
//! token takes it and returns, the others sleep again. So at most `n` waiters
//! return per `notify(n)`, and no notification can be swallowed by a waiter
//! that was killed after being woken.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{AcquireError, Error, Kind as ErrorKind};
use crate::lock::{Lock, LockGuard};
use crate::region::{Kind, Shm};
use crate::sys::{self, Deadline, Locked};

#[repr(C)]
struct ConditionState {
    seq: AtomicU32,
    waiters: AtomicU32,
    tokens: AtomicU32,
}

/// A condition variable shared between processes, bound to a [`Lock`], like
/// `multiprocessing.Condition`.
///
/// Waiting needs the lock held (a [`LockGuard`] of the associated lock): the
/// wait releases it, sleeps until notified (or timed out), and re-acquires it
/// before returning. Notifying needs the lock held too. As with every
/// condition variable, wake-ups can be spurious, so wait in a loop on the
/// real condition, or use [`wait_for`](Condition::wait_for).
///
/// If a waiter's process dies while waiting, a later waiter may see one
/// spurious wake-up. The condition's data itself lives elsewhere (a
/// [`Value`](crate::Value), an [`Array`](crate::Array), ...).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::sync::Condition;
/// use crew::shm::Value;
///
/// let cond = Condition::new()?;
/// let ready = Value::new(0u8)?;
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let guard = cond.acquire().unwrap();
///         ready.set(1);
///         cond.notify_all(&guard);
///     });
///     let mut guard = cond.acquire().unwrap();
///     cond.wait_for(&mut guard, || ready.get() == 1).unwrap();
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: Lock,
    shm: Shm,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.lock, self.shm.wire()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (lock, wire) = <(Lock, crate::region::Wire)>::deserialize(deserializer)?;
        let shm = Shm::open(&wire, Kind::Condition, 0).map_err(serde::de::Error::custom)?;
        Ok(Condition { lock, shm })
    }
}

impl Condition {
    /// Creates a condition with a new lock of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let cond = crew::sync::Condition::new()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn new() -> io::Result<Condition> {
        Condition::with_lock(&Lock::new()?)
    }

    /// Creates a condition bound to an existing `lock`, like
    /// `Condition(lock)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::Lock::new()?;
    /// let cond = crew::sync::Condition::with_lock(&lock)?;
    /// let guard = lock.acquire().unwrap();
    /// cond.notify(&guard, 1); // the lock's own guard works
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn with_lock(lock: &Lock) -> io::Result<Condition> {
        let shm = Shm::create::<ConditionState>(Kind::Condition, 0, 0, |_| {})?;
        Ok(Condition {
            lock: lock.clone(),
            shm,
        })
    }

    /// The associated lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let cond = crew::sync::Condition::new()?;
    /// let guard = cond.lock().acquire().unwrap();
    /// # drop(guard);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Acquires the associated lock; shorthand for
    /// `self.lock().acquire()`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let cond = crew::sync::Condition::new()?;
    /// let guard = cond.acquire().unwrap();
    /// # drop(guard);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Lock::acquire`].
    ///
    /// # Panics
    ///
    /// As [`Lock::acquire`].
    pub fn acquire(&self) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        self.lock.acquire()
    }

    fn state(&self) -> &ConditionState {
        // SAFETY: a `Condition` region's state is a `ConditionState`.
        unsafe { self.shm.state::<ConditionState>() }
    }

    fn check_guard(&self, guard: &LockGuard<'_>) {
        assert_eq!(
            guard.held().shm().id(),
            self.lock.shm().id(),
            "the guard passed to a Condition must be of the condition's own lock"
        );
    }

    fn wait_until(&self, guard: &mut LockGuard<'_>, deadline: Deadline) -> Result<bool, Error> {
        self.check_guard(guard);
        let state = self.state();
        let mutex = guard.held().mutex();
        state.waiters.fetch_add(1, Relaxed);
        loop {
            let seq = state.seq.load(Relaxed);
            // SAFETY: the guard proves this thread holds the mutex; it is
            // locked again below before the guard can be used or dropped.
            unsafe { mutex.unlock() };
            sys::futex_wait(&state.seq, seq, deadline);
            let owner_died = match mutex.lock(Deadline::never()) {
                Locked::Clean => false,
                Locked::Recovered => true,
                Locked::TimedOut => unreachable!("a lock without deadline cannot time out"),
            };
            let tokens = state.tokens.load(Relaxed);
            let outcome = if tokens > 0 {
                state.tokens.store(tokens - 1, Relaxed);
                Some(true)
            } else if deadline.has_passed() || owner_died {
                Some(false)
            } else {
                None
            };
            if let Some(notified) = outcome {
                state.waiters.fetch_sub(1, Relaxed);
                return if owner_died {
                    Err(Error::new(ErrorKind::OwnerDead))
                } else {
                    Ok(notified)
                };
            }
        }
    }

    /// Releases the lock, blocks until notified, and re-acquires it.
    ///
    /// May also return spuriously; check the condition in a loop.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let cond = crew::sync::Condition::new()?;
    /// std::thread::scope(|s| {
    ///     let mut guard = cond.acquire().unwrap();
    ///     s.spawn(|| {
    ///         let guard = cond.acquire().unwrap(); // waits until the wait below releases
    ///         cond.notify(&guard, 1);
    ///     });
    ///     cond.wait(&mut guard).unwrap();
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_owner_dead`]: a process died holding the lock while this
    /// caller slept. The lock is held again (the guard is valid) but the
    /// protected data may be inconsistent.
    ///
    /// # Panics
    ///
    /// Panics if `guard` is not a guard of this condition's lock.
    pub fn wait(&self, guard: &mut LockGuard<'_>) -> Result<(), Error> {
        self.wait_until(guard, Deadline::never()).map(drop)
    }

    /// Like [`wait`](Condition::wait), but gives up after `timeout`; returns
    /// whether it was notified (`false`: timed out).
    ///
    /// The lock is re-acquired before returning in both cases, which may take
    /// longer than `timeout` if another thread holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let cond = crew::sync::Condition::new()?;
    /// let mut guard = cond.acquire().unwrap();
    /// assert!(!cond.wait_timeout(&mut guard, Duration::from_millis(1)).unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    ///
    /// # Panics
    ///
    /// As [`wait`](Condition::wait).
    pub fn wait_timeout(
        &self,
        guard: &mut LockGuard<'_>,
        timeout: Duration,
    ) -> Result<bool, Error> {
        self.wait_until(guard, Deadline::after(timeout))
    }

    /// Waits until `predicate` returns true, checking it first and after
    /// every wake-up (with the lock held), like Python's `wait_for`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let cond = crew::sync::Condition::new()?;
    /// let mut guard = cond.acquire().unwrap();
    /// cond.wait_for(&mut guard, || true).unwrap(); // already true: no wait
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    ///
    /// # Panics
    ///
    /// As [`wait`](Condition::wait), and if `predicate` panics.
    pub fn wait_for(
        &self,
        guard: &mut LockGuard<'_>,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<(), Error> {
        while !predicate() {
            self.wait(guard)?;
        }
        Ok(())
    }

    /// Waits until `predicate` returns true or `timeout` passes; returns the
    /// predicate's last value, like Python's `wait_for(predicate, timeout)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let cond = crew::sync::Condition::new()?;
    /// let mut guard = cond.acquire().unwrap();
    /// assert!(!cond.wait_for_timeout(&mut guard, Duration::from_millis(1), || false).unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`wait`](Condition::wait).
    ///
    /// # Panics
    ///
    /// As [`wait_for`](Condition::wait_for).
    pub fn wait_for_timeout(
        &self,
        guard: &mut LockGuard<'_>,
        timeout: Duration,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<bool, Error> {
        let deadline = Deadline::after(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.has_passed() {
                return Ok(false);
            }
            self.wait_until(guard, deadline)?;
        }
    }

    /// Wakes up to `n` waiters (in any process); the caller must hold the
    /// lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let cond = crew::sync::Condition::new()?;
    /// let guard = cond.acquire().unwrap();
    /// cond.notify(&guard, 1); // nobody waits: nothing happens
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `guard` is not a guard of this condition's lock.
    pub fn notify(&self, guard: &LockGuard<'_>, n: u32) {
        self.check_guard(guard);
        let state = self.state();
        let tokens = state.tokens.load(Relaxed);
        let unserved = state.waiters.load(Relaxed).saturating_sub(tokens);
        let k = n.min(unserved);
        if k > 0 {
            state.tokens.store(tokens + k, Relaxed);
            state.seq.fetch_add(1, Relaxed);
            sys::futex_wake(&state.seq, i32::MAX);
        }
    }

    /// Wakes every waiter; the caller must hold the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let cond = crew::sync::Condition::new()?;
    /// let guard = cond.acquire().unwrap();
    /// cond.notify_all(&guard);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `guard` is not a guard of this condition's lock.
    pub fn notify_all(&self, guard: &LockGuard<'_>) {
        self.notify(guard, u32::MAX);
    }
}
