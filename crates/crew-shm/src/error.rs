//! The errors of shared objects: one opaque [`Error`] with questions, plus
//! [`AcquireError`] and [`PutError`], which give back what the failed call
//! would otherwise lose (a guard on a recovered lock, an item not sent).

use std::fmt;

/// Why a blocking or non-blocking call on a shared object did not succeed.
///
/// Ask it with the `is_` methods; the set of reasons may grow.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use std::time::Duration;
///
/// let queue = crew::Queue::<u32>::new()?;
/// let error = queue.get_timeout(Duration::from_millis(1)).unwrap_err();
/// assert!(error.is_timeout());
/// assert_eq!(error.to_string(), "timed out");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    TimedOut,
    Empty,
    Full,
    Closed,
    TooLarge { len: usize, max: usize },
    Encode(postcard::Error),
    Decode(postcard::Error),
    Broken,
    OwnerDead,
    Overflow,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Error {
        Error { kind }
    }

    /// Whether the call gave up because its timeout passed.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let event = crew::sync::Event::new()?;
    /// assert!(!event.wait_timeout(Duration::ZERO)); // events answer with a bool
    /// let barrier = crew::sync::Barrier::new(2)?;
    /// assert!(barrier.wait_timeout(Duration::ZERO).unwrap_err().is_timeout());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::TimedOut)
    }

    /// Whether a `try_get` found the queue empty.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::new()?;
    /// assert!(queue.try_get().unwrap_err().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self.kind, Kind::Empty)
    }

    /// Whether a `try_put` found the queue full.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::bounded(1)?;
    /// queue.put(1).unwrap();
    /// assert!(queue.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self.kind, Kind::Full)
    }

    /// Whether the queue or pipe was closed (for a getter: closed *and*
    /// drained).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::new()?;
    /// queue.close();
    /// assert!(queue.get().unwrap_err().is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self.kind, Kind::Closed)
    }

    /// Whether an item was too large for the queue's byte capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<Vec<u8>>::builder().capacity_bytes(4096).build()?;
    /// assert!(queue.put(vec![0; 10_000]).unwrap_err().is_too_large());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, Kind::TooLarge { .. })
    }

    /// Whether an item could not be encoded or decoded with postcard.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// // An iterator of unknown length cannot be encoded by postcard.
    /// struct Lazy;
    /// impl serde::Serialize for Lazy {
    ///     fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
    ///         s.collect_seq((0..3).filter(|_| true))
    ///     }
    /// }
    /// # impl<'de> serde::Deserialize<'de> for Lazy {
    /// #     fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> { Ok(Lazy) }
    /// # }
    /// let queue = crew::Queue::<Lazy>::new()?;
    /// assert!(queue.put(Lazy).unwrap_err().is_serialization());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_serialization(&self) -> bool {
        matches!(self.kind, Kind::Encode(_) | Kind::Decode(_))
    }

    /// Whether a barrier was broken (by a timeout, an `abort` or a `reset`
    /// while this caller waited).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let barrier = crew::sync::Barrier::new(2)?;
    /// barrier.abort();
    /// assert!(barrier.wait().unwrap_err().is_broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_broken(&self) -> bool {
        matches!(self.kind, Kind::Broken)
    }

    /// Whether a process died holding the lock this call re-acquired.
    ///
    /// The lock is held again when this is returned (for example by
    /// [`Condition::wait`](crate::Condition::wait)), but the data it protects
    /// may be half-updated.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let cond = crew::sync::Condition::new()?;
    /// let mut guard = cond.acquire().unwrap();
    /// // Nobody died, so waiting just times out:
    /// assert!(!cond.wait_timeout(&mut guard, Duration::from_millis(1)).unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_owner_dead(&self) -> bool {
        matches!(self.kind, Kind::OwnerDead)
    }

    /// Whether a bounded semaphore was released more often than acquired.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let semaphore = crew::sync::BoundedSemaphore::new(1)?;
    /// assert!(semaphore.release().unwrap_err().is_overflow());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_overflow(&self) -> bool {
        matches!(self.kind, Kind::Overflow)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::TimedOut => f.write_str("timed out"),
            Kind::Empty => f.write_str("queue is empty"),
            Kind::Full => f.write_str("queue is full"),
            Kind::Closed => f.write_str("closed"),
            Kind::TooLarge { len, max } => {
                write!(
                    f,
                    "item of {len} bytes exceeds the queue's largest item of {max} bytes"
                )
            }
            Kind::Encode(_) => f.write_str("cannot encode item"),
            Kind::Decode(_) => f.write_str("cannot decode item"),
            Kind::Broken => f.write_str("barrier is broken"),
            Kind::OwnerDead => f.write_str(
                "a process died holding the lock; the protected data may be inconsistent",
            ),
            Kind::Overflow => f.write_str("semaphore released too many times"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error").field("kind", &self.kind).finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Encode(e) | Kind::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// A lock acquisition that did not simply succeed: it timed out, or it
/// succeeded on a lock whose previous holder died.
///
/// When the holder died, the lock *is* held by the caller: the guard is
/// inside, [`into_guard`](AcquireError::into_guard) returns it. The lock has
/// already been marked usable again, so dropping this error releases it and
/// the next acquirer gets it normally; whether the protected data is
/// consistent is for the caller to judge.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use std::time::Duration;
///
/// let lock = crew::sync::Lock::new()?;
/// let _held = lock.acquire().unwrap();
/// let other = std::thread::scope(|s| {
///     s.spawn(|| lock.acquire_timeout(Duration::from_millis(10)).map(drop).map_err(|e| e.is_timeout()))
///         .join()
///         .unwrap()
/// });
/// assert_eq!(other, Err(true));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AcquireError<G> {
    guard: Option<G>,
}

impl<G> AcquireError<G> {
    pub(crate) fn owner_dead(guard: G) -> AcquireError<G> {
        AcquireError { guard: Some(guard) }
    }

    pub(crate) fn timed_out() -> AcquireError<G> {
        AcquireError { guard: None }
    }

    pub(crate) fn map<H>(self, f: impl FnOnce(G) -> H) -> AcquireError<H> {
        AcquireError {
            guard: self.guard.map(f),
        }
    }

    /// Whether the previous holder died holding the lock; the caller now
    /// holds it.
    ///
    /// # Examples
    ///
    /// See [`Lock::acquire`](crate::Lock::acquire).
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # let lock = crew::sync::Lock::new()?;
    /// let guard = match lock.acquire() {
    ///     Ok(guard) => guard,
    ///     Err(e) if e.is_owner_dead() => e.into_guard().unwrap(), // check the data here
    ///     Err(e) => panic!("{e}"),
    /// };
    /// # drop(guard);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_owner_dead(&self) -> bool {
        self.guard.is_some()
    }

    /// Whether the timeout passed before the lock could be taken (also what a
    /// `try_acquire` on a held lock returns).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let lock = crew::sync::Lock::new()?;
    /// let _held = lock.acquire().unwrap();
    /// assert!(lock.try_acquire().unwrap_err().is_timeout());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.guard.is_none()
    }

    /// The guard of the lock the caller now holds, if the previous holder
    /// died; `None` on timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # let lock = crew::sync::Lock::new()?;
    /// let guard = lock.acquire().or_else(|e| e.into_guard().ok_or("timed out"))?;
    /// # drop(guard);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_guard(self) -> Option<G> {
        self.guard
    }
}

impl<G> fmt::Debug for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireError")
            .field("owner_dead", &self.is_owner_dead())
            .finish_non_exhaustive()
    }
}

impl<G> fmt::Display for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_owner_dead() {
            fmt::Display::fmt(&Error::new(Kind::OwnerDead), f)
        } else {
            f.write_str("timed out waiting for the lock")
        }
    }
}

impl<G> std::error::Error for AcquireError<G> {}

/// An item that could not be put into a queue or sent through a pipe, given
/// back with the reason.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let queue = crew::Queue::<String>::new()?;
/// queue.close();
/// let error = queue.put("hello".to_string()).unwrap_err();
/// assert!(error.is_closed());
/// assert_eq!(error.into_inner(), "hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct PutError<T> {
    error: Error,
    item: T,
}

impl<T> PutError<T> {
    pub(crate) fn new(kind: Kind, item: T) -> PutError<T> {
        PutError {
            error: Error::new(kind),
            item,
        }
    }

    /// Whether the timeout passed while the queue stayed full.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let queue = crew::Queue::<u8>::bounded(1)?;
    /// queue.put(1).unwrap();
    /// assert!(queue.put_timeout(2, Duration::from_millis(1)).unwrap_err().is_timeout());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.error.is_timeout()
    }

    /// Whether a `try_put` found the queue full.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::bounded(1)?;
    /// queue.put(1).unwrap();
    /// assert!(queue.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.error.is_full()
    }

    /// Whether the queue or pipe is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::new()?;
    /// queue.close();
    /// assert!(queue.put(1).unwrap_err().is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.error.is_closed()
    }

    /// Whether the encoded item exceeds the queue's byte capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<Vec<u8>>::builder().capacity_bytes(4096).build()?;
    /// assert!(queue.put(vec![0; 5000]).unwrap_err().is_too_large());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_too_large(&self) -> bool {
        self.error.is_too_large()
    }

    /// Whether the item could not be encoded.
    ///
    /// # Examples
    ///
    /// See [`Error::is_serialization`].
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::new()?;
    /// assert!(!queue.put(1).is_err_and(|e| e.is_serialization()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_serialization(&self) -> bool {
        self.error.is_serialization()
    }

    /// The item that was not put.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::new()?;
    /// queue.close();
    /// assert_eq!(queue.put(9).unwrap_err().into_inner(), 9);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_inner(self) -> T {
        self.item
    }

    /// The reason and the item, apart.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::new()?;
    /// queue.close();
    /// let (error, item) = queue.put(9).unwrap_err().into_parts();
    /// assert!(error.is_closed() && item == 9);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_parts(self) -> (Error, T) {
        (self.error, self.item)
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
