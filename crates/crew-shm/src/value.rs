//! [`Value<T>`]: one `Pod` value in shared memory behind its own robust lock,
//! like `multiprocessing.Value`.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::AcquireError;
use crate::lock::Held;
use crate::pod::Pod;
use crate::region::{Kind, Shm, type_tag};
use crate::sys::{Deadline, MutexKind, RawMutex};

#[repr(C)]
struct ValueState {
    mutex: RawMutex,
}

/// A value of a plain-old-data type shared between processes, with its own
/// lock, like `multiprocessing.Value('i', 0)`.
///
/// Every access goes through the lock, so [`update`](Value::update) is
/// atomic across processes: four processes each doing 1,000 increments leave
/// exactly 4,000. For several steps under one lock, hold a
/// [`lock`](Value::lock) guard, which derefs to `&mut T`.
///
/// The value lives in shared memory that any process holding the handle may
/// change, which is why there is no `&T` borrow outside a guard.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::shm::Value;
///
/// let counter = Value::new(0u64)?;
/// let handle: Vec<u8> = postcard::to_allocvec(&counter)?; // send to a worker
/// let in_worker: Value<u64> = postcard::from_bytes(&handle)?;
/// in_worker.update(|n| *n += 1);
/// assert_eq!(counter.get(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Value<T: Pod> {
    shm: Shm,
    _type: PhantomData<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            shm: self.shm.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Ok(guard) => f.debug_tuple("Value").field(&*guard).finish(),
            Err(_) => f
                .debug_tuple("Value")
                .field(&format_args!("<locked>"))
                .finish(),
        }
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.shm.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let shm = Shm::deserialize(deserializer, Kind::Value, type_tag::<T>())?;
        if shm.data_len() < size_of::<T>() {
            return Err(serde::de::Error::custom(
                "shared value region is too small for its type",
            ));
        }
        Ok(Value {
            shm,
            _type: PhantomData,
        })
    }
}

impl<T: Pod> Value<T> {
    /// Creates a shared value holding `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let pi = crew::shm::Value::new(3.14f64)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, memory).
    pub fn new(value: T) -> io::Result<Value<T>> {
        const {
            assert!(
                align_of::<T>() <= 4096,
                "Value<T> supports alignments up to 4096"
            )
        };
        let shm =
            Shm::create::<ValueState>(Kind::Value, type_tag::<T>(), size_of::<T>(), |state| {
                // SAFETY: `create` hands us the fresh, private state.
                unsafe { RawMutex::init(&raw mut (*state).mutex, MutexKind::ErrorCheck) }
            })?;
        // SAFETY: the data area is page aligned, holds a `T`, and no one else
        // can see the region yet.
        unsafe { shm.data().cast::<T>().write(value) };
        Ok(Value {
            shm,
            _type: PhantomData,
        })
    }

    fn mutex(&self) -> &RawMutex {
        // SAFETY: a `Value` region's state is a `ValueState`.
        unsafe { &self.shm.state::<ValueState>().mutex }
    }

    fn lock_until(
        &self,
        deadline: Deadline,
    ) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        Held::acquire(&self.shm, self.mutex(), deadline)
            .map(ValueGuard::new)
            .map_err(|e| e.map(ValueGuard::new))
    }

    /// Locks the value, blocking until its lock is free; the guard derefs to
    /// `&mut T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let v = crew::shm::Value::new([0u32; 2])?;
    /// let mut guard = v.lock().unwrap();
    /// guard[0] = 1;
    /// guard[1] = guard[0] + 1; // both steps under one lock
    /// drop(guard);
    /// assert_eq!(v.get(), [1, 2]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_owner_dead`]: a process died holding the lock; the
    /// guard is in the error and the value may be half-written (but, `T`
    /// being `Pod`, still a valid `T`).
    ///
    /// # Panics
    ///
    /// Panics if this thread already holds the value's lock.
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        self.lock_until(Deadline::never())
    }

    /// Locks the value, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let v = crew::shm::Value::new(1u8)?;
    /// assert_eq!(*v.lock_timeout(Duration::from_secs(1)).unwrap(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_timeout`] if the lock stayed held; owner death as
    /// for [`lock`](Value::lock).
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        self.lock_until(Deadline::after(timeout))
    }

    /// Locks the value if its lock is free, without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let v = crew::shm::Value::new(1u8)?;
    /// let held = v.try_lock().unwrap();
    /// assert!(v.try_lock().is_err());
    /// # drop(held);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_timeout`] if the lock is held; owner death as for
    /// [`lock`](Value::lock).
    pub fn try_lock(&self) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        self.lock_until(Deadline::now())
    }

    fn lock_recovering(&self) -> ValueGuard<'_, T> {
        self.lock().unwrap_or_else(|e| {
            e.into_guard()
                .expect("a blocking lock only fails on owner death")
        })
    }

    /// Reads the value under its lock.
    ///
    /// If a process died holding the lock, this recovers it and reads
    /// whatever was last written; use [`lock`](Value::lock) to be told.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::shm::Value::new(5i32)?.get(), 5);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if this thread already holds the value's lock.
    pub fn get(&self) -> T {
        *self.lock_recovering()
    }

    /// Writes the value under its lock.
    ///
    /// Recovers the lock from a dead holder like [`get`](Value::get).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let v = crew::shm::Value::new(5i32)?;
    /// v.set(6);
    /// assert_eq!(v.get(), 6);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if this thread already holds the value's lock.
    pub fn set(&self, value: T) {
        *self.lock_recovering() = value;
    }

    /// Runs `f` on the value under its lock and returns what `f` returns:
    /// an atomic read-modify-write across processes.
    ///
    /// Recovers the lock from a dead holder like [`get`](Value::get): `f`
    /// then sees whatever the dead process last wrote. Use
    /// [`lock`](Value::lock) to be told.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let counter = crew::shm::Value::new(0u32)?;
    /// let before = counter.update(|n| {
    ///     *n += 1;
    ///     *n - 1
    /// });
    /// assert_eq!((before, counter.get()), (0, 1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if this thread already holds the value's lock, or if `f`
    /// panics (the lock is released first).
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock_recovering())
    }
}

/// A locked [`Value`]: derefs to the value; unlocks on drop.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let v = crew::shm::Value::new(1u8)?;
/// *v.lock().unwrap() += 1;
/// assert_eq!(v.get(), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    held: Held,
    _value: PhantomData<&'a mut T>,
}

impl<T: Pod> ValueGuard<'_, T> {
    fn new(held: Held) -> Self {
        ValueGuard {
            held,
            _value: PhantomData,
        }
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the data area holds an initialised `T` (any bits are valid
        // for `Pod`), and every process accesses it only under the lock this
        // guard holds, so nothing writes it while this borrow lives.
        unsafe { &*self.held.shm().data().cast::<T>() }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes the borrow unique in
        // this process too.
        unsafe { &mut *self.held.shm().data().cast::<T>() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}
