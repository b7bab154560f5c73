//! [`Array<T>`]: a fixed-length slice of `Pod` elements in shared memory,
//! like `multiprocessing.Array`, with a lock and zero-copy access.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Range};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::AcquireError;
use crate::lock::Held;
use crate::pod::Pod;
use crate::region::{Kind, Shm, type_tag};
use crate::sys::{Deadline, MutexKind, RawMutex};

#[repr(C)]
struct ArrayState {
    mutex: RawMutex,
    /// Number of elements; written once at creation.
    len: AtomicU64,
}

/// A fixed-length array of plain-old-data elements shared between processes,
/// like `multiprocessing.Array('d', n)`.
///
/// The elements live in a sealed memfd: [`new`](Array::new) is zero-filled
/// and sparse, so even a 1 GB array costs no memory until pages are written,
/// and handing the handle to other processes maps the same pages (nothing is
/// copied, and the receiver's memory use does not grow until it touches them).
///
/// **Access, and why it looks like this.** Memory that other processes may
/// write at any moment cannot soundly be lent out as a plain `&[T]` or
/// `&mut [T]` for an arbitrary duration: the compiler would assume nobody
/// else changes it. So there are two ways in:
///
/// - [`lock`](Array::lock): a guard that derefs to `&[T]`/`&mut [T]`, sound
///   because every process that follows this API holds the array's lock while
///   it looks. Zero-copy, whole array, one lock; [`get`](Array::get),
///   [`set`](Array::set) and [`to_vec`](Array::to_vec) are shorthands.
/// - [`as_slice`](Array::as_slice), [`as_mut_slice`](Array::as_mut_slice)
///   and [`slice_mut`](Array::slice_mut):
///   `unsafe`, no lock, for the data-parallel pattern where each worker owns
///   a disjoint chunk (the caller promises the disjointness).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::shm::Array;
///
/// let data = Array::<f64>::new(1_000)?;
/// let handle = postcard::to_allocvec(&data)?; // send to a worker
/// let in_worker: Array<f64> = postcard::from_bytes(&handle)?;
/// in_worker.lock().unwrap()[999] = 1.5;
/// assert_eq!(data.get(999), Some(1.5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T: Pod> {
    shm: Shm,
    len: usize,
    _type: PhantomData<T>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            shm: self.shm.clone(),
            len: self.len,
            _type: PhantomData,
        }
    }
}

impl<T: Pod> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("id", &format_args!("{:#018x}", self.shm.id()))
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.shm.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let shm = Shm::deserialize(deserializer, Kind::Array, type_tag::<T>())?;
        // SAFETY: an `Array` region's state is an `ArrayState`.
        let len = shm
            .fitting_len::<T>(unsafe { shm.state::<ArrayState>() }.len.load(Relaxed))
            .ok_or_else(|| {
                serde::de::Error::custom("shared array region is too small for its length")
            })?;
        Ok(Array {
            shm,
            len,
            _type: PhantomData,
        })
    }
}

impl<T: Pod> Array<T> {
    fn create(len: usize) -> io::Result<Array<T>> {
        const {
            assert!(
                align_of::<T>() <= 4096,
                "Array<T> supports alignments up to 4096"
            )
        };
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an array of {len} elements overflows usize"),
            )
        })?;
        let shm = Shm::create::<ArrayState>(Kind::Array, type_tag::<T>(), bytes, |state| {
            // SAFETY: `create` hands us the fresh, private state.
            unsafe {
                RawMutex::init(&raw mut (*state).mutex, MutexKind::ErrorCheck);
                (*state).len = AtomicU64::new(len as u64);
            }
        })?;
        Ok(Array {
            shm,
            len,
            _type: PhantomData,
        })
    }

    /// Creates a zero-filled array of `len` elements, without touching its
    /// pages.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let big = crew::shm::Array::<u8>::new(1 << 30)?; // 1 GiB, no memory used yet
    /// assert_eq!(big.get(123_456_789), Some(0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if `len * size_of::<T>()` overflows or the shared memory cannot
    /// be created (fd limit, address space).
    pub fn new(len: usize) -> io::Result<Array<T>> {
        Array::create(len)
    }

    /// Creates an array holding a copy of `values`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let a = crew::shm::Array::from_slice(&[1, 2, 3])?;
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Array::new).
    pub fn from_slice(values: &[T]) -> io::Result<Array<T>> {
        let array = Array::create(values.len())?;
        // SAFETY: the new region holds `len` elements and nobody else sees it.
        unsafe { array.slice_mut(0..values.len()) }.copy_from_slice(values);
        Ok(array)
    }

    /// The number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::shm::Array::<u16>::new(7)?.len(), 7);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert!(crew::shm::Array::<u16>::new(0)?.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mutex(&self) -> &RawMutex {
        // SAFETY: an `Array` region's state is an `ArrayState`.
        unsafe { &self.shm.state::<ArrayState>().mutex }
    }

    fn lock_until(
        &self,
        deadline: Deadline,
    ) -> Result<ArrayGuard<'_, T>, AcquireError<ArrayGuard<'_, T>>> {
        let guard = |held| ArrayGuard {
            held,
            len: self.len,
            _array: PhantomData,
        };
        Held::acquire(&self.shm, self.mutex(), deadline)
            .map(guard)
            .map_err(|e| e.map(guard))
    }

    /// Locks the array; the guard derefs to `&[T]` and `&mut [T]`, zero-copy.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let a = crew::shm::Array::<i64>::new(4)?;
    /// let mut elements = a.lock().unwrap();
    /// elements.copy_from_slice(&[4, 3, 2, 1]);
    /// elements.sort();
    /// drop(elements);
    /// assert_eq!(a.to_vec(), [1, 2, 3, 4]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_owner_dead`]: a process died holding the lock; the
    /// guard is in the error and the elements may be half-written.
    ///
    /// # Panics
    ///
    /// Panics if this thread already holds the array's lock.
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, AcquireError<ArrayGuard<'_, T>>> {
        self.lock_until(Deadline::never())
    }

    /// Locks the array, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let a = crew::shm::Array::<u8>::new(1)?;
    /// assert_eq!(a.lock_timeout(Duration::from_secs(1)).unwrap().len(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AcquireError::is_timeout`] if the lock stayed held; owner death as
    /// for [`lock`](Array::lock).
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ArrayGuard<'_, T>, AcquireError<ArrayGuard<'_, T>>> {
        self.lock_until(Deadline::after(timeout))
    }

    fn lock_recovering(&self) -> ArrayGuard<'_, T> {
        self.lock().unwrap_or_else(|e| {
            e.into_guard()
                .expect("a blocking lock only fails on owner death")
        })
    }

    /// Reads element `index` under the lock, or `None` past the end.
    ///
    /// Recovers the lock from a dead holder, as [`Value::get`](crate::Value::get).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let a = crew::shm::Array::from_slice(&[1.0f32])?;
    /// assert_eq!((a.get(0), a.get(1)), (Some(1.0), None));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if this thread already holds the array's lock.
    pub fn get(&self, index: usize) -> Option<T> {
        self.lock_recovering().get(index).copied()
    }

    /// Writes element `index` under the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let a = crew::shm::Array::<u8>::new(2)?;
    /// a.set(1, 9);
    /// assert_eq!(a.to_vec(), [0, 9]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `index >= len()` (like slice indexing), or if this thread
    /// already holds the array's lock.
    pub fn set(&self, index: usize, value: T) {
        let len = self.len;
        assert!(
            index < len,
            "index {index} out of range for shared array of length {len}"
        );
        self.lock_recovering()[index] = value;
    }

    /// Copies the elements out under the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::shm::Array::<u8>::new(3)?.to_vec(), [0, 0, 0]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if this thread already holds the array's lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.lock_recovering().to_vec()
    }

    /// The elements as a slice, without taking the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let a = crew::shm::Array::from_slice(&[1u32, 2, 3])?;
    /// // SAFETY: no process writes the array while we read it.
    /// let sum: u32 = unsafe { a.as_slice() }.iter().sum();
    /// assert_eq!(sum, 6);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Safety
    ///
    /// While the returned slice lives, no thread of any process may write
    /// the elements (through a guard, `slice_mut` or raw pointers).
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: the data area holds `len` initialised `T`s (any bits are
        // valid for `Pod`); the caller rules out concurrent writes.
        unsafe { std::slice::from_raw_parts(self.shm.data().cast::<T>(), self.len) }
    }

    /// All elements as a mutable slice, without taking the lock; the same as
    /// `slice_mut(0..len())`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let a = crew::shm::Array::<u8>::new(3)?;
    /// // SAFETY: no other thread or process uses the array yet.
    /// unsafe { a.as_mut_slice() }.copy_from_slice(&[1, 2, 3]);
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Safety
    ///
    /// While the returned slice lives, no other thread of any process may
    /// read or write any element, by any means.
    #[allow(clippy::mut_from_ref)] // the aliasing rule is the caller's, see # Safety
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: forwarded: the caller guarantees exclusive access.
        unsafe { self.slice_mut(0..self.len) }
    }

    /// Elements `range` as a mutable slice, without taking the lock: for
    /// workers that each fill their own disjoint chunk.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let a = crew::shm::Array::<u64>::new(8)?;
    /// std::thread::scope(|s| {
    ///     for chunk in 0..2 {
    ///         let a = &a;
    ///         s.spawn(move || {
    ///             // SAFETY: the two threads write disjoint halves, and nobody
    ///             // reads until both are done.
    ///             let mine = unsafe { a.slice_mut(chunk * 4..chunk * 4 + 4) };
    ///             mine.fill(chunk as u64 + 1);
    ///         });
    ///     }
    /// });
    /// assert_eq!(a.to_vec(), [1, 1, 1, 1, 2, 2, 2, 2]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `range` is out of bounds.
    ///
    /// # Safety
    ///
    /// While the returned slice lives, no other thread of any process may
    /// read or write the elements in `range`, by any means.
    #[allow(clippy::mut_from_ref)] // the aliasing rule is the caller's, see # Safety
    pub unsafe fn slice_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} out of bounds for shared array of length {}",
            self.len
        );
        // SAFETY: in bounds (checked above) of `len` initialised `T`s; the
        // caller guarantees exclusive access to the range.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.shm.data().cast::<T>().add(range.start),
                range.len(),
            )
        }
    }
}

/// A locked [`Array`]: derefs to the elements; unlocks on drop.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let a = crew::shm::Array::<u8>::new(3)?;
/// let mut guard = a.lock().unwrap();
/// guard[2] = 7;
/// assert_eq!(&guard[..], [0, 0, 7]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    held: Held,
    len: usize,
    _array: PhantomData<&'a mut [T]>,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised `T`s; every process writes them only under
        // the lock this guard holds.
        unsafe { std::slice::from_raw_parts(self.held.shm().data().cast::<T>(), self.len) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`; `&mut self` makes the borrow unique here.
        unsafe { std::slice::from_raw_parts_mut(self.held.shm().data().cast::<T>(), self.len) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
