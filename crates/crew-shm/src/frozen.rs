//! [`Frozen<T>`]: a read-only slice of `Pod` elements in shared memory,
//! the way joblib hands big read-only arrays to its worker processes.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pod::Pod;
use crate::region::{Kind, Shm, type_tag};

#[repr(C)]
struct FrozenState {
    /// Number of elements; written before the region is sealed.
    len: u64,
}

/// A read-only slice of plain-old-data elements in shared memory: copied
/// in once, then handed to any number of worker processes as a small
/// handle, each of which reads the same pages as a plain `&[T]`.
///
/// This is what joblib does with big NumPy arrays (it memory-maps them
/// read-only for its process workers): a task that reads a large table
/// sends a `Frozen` handle (about 40 bytes) instead of the table, and a
/// worker maps the pages instead of decoding a copy. Use [`Array`] for data
/// that workers write.
///
/// **Why reading needs no lock.** The elements are written before any
/// handle exists; then the memory is sealed against writes
/// (`F_SEAL_WRITE`) and mapped read-only. From then on the kernel refuses
/// every write, in every process: `write(2)`, a writable mapping, punching
/// a hole, resizing. So, unlike [`Array::as_slice`], [`as_slice`] (and
/// `Deref`) is safe: nobody can change the elements while a `&[T]` lives.
///
/// The memory lives as long as any handle to it (in any process) does, and
/// crosses processes by the rule of every handle here (see [`Region`]): a
/// process holding it must be alive when another opens it. A process opens
/// a region once however many handles to it arrive while it holds one.
///
/// [`Array`]: crate::Array
/// [`Array::as_slice`]: crate::Array::as_slice
/// [`as_slice`]: Frozen::as_slice
/// [`Region`]: crate::Region
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::shm::Frozen;
///
/// let table = Frozen::from_slice(&[1.5f64, 2.5, 3.0])?;
/// let handle = postcard::to_allocvec(&table)?; // what a task carries
/// assert!(handle.len() < 64);
/// let in_worker: Frozen<f64> = postcard::from_bytes(&handle)?; // maps the same pages
/// assert_eq!(in_worker.iter().sum::<f64>(), 7.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Frozen<T: Pod> {
    shm: Shm,
    len: usize,
    _type: PhantomData<T>,
}

impl<T: Pod> Clone for Frozen<T> {
    fn clone(&self) -> Self {
        Frozen {
            shm: self.shm.clone(),
            len: self.len,
            _type: PhantomData,
        }
    }
}

impl<T: Pod> fmt::Debug for Frozen<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frozen")
            .field("id", &format_args!("{:#018x}", self.shm.id()))
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Serialize for Frozen<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.shm.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Frozen<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let shm = Shm::deserialize(deserializer, Kind::Frozen, type_tag::<T>())?;
        // SAFETY: a `Frozen` region's state is a `FrozenState`, written
        // before the region was sealed.
        let len = shm
            .fitting_len::<T>(unsafe { shm.state::<FrozenState>() }.len)
            .ok_or_else(|| {
                serde::de::Error::custom("shared slice region is too small for its length")
            })?;
        Ok(Frozen {
            shm,
            len,
            _type: PhantomData,
        })
    }
}

impl<T: Pod> Frozen<T> {
    /// Copies `values` into a new sealed region.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let points = crew::shm::Frozen::from_slice(&[[0.0f64, 1.0, 2.0]; 1000])?;
    /// assert_eq!(points.len(), 1000);
    /// assert_eq!(points[999], [0.0, 1.0, 2.0]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created or sealed (fd limit,
    /// address space, no `/proc`).
    pub fn from_slice(values: &[T]) -> io::Result<Frozen<T>> {
        const {
            assert!(
                align_of::<T>() <= 4096,
                "Frozen<T> supports alignments up to 4096"
            )
        };
        let bytes = size_of_val(values);
        let len = values.len();
        let shm = Shm::create_read_only::<FrozenState>(
            Kind::Frozen,
            type_tag::<T>(),
            bytes,
            |state| {
                // SAFETY: `create_read_only` hands us the fresh, private state.
                unsafe { (*state).len = len as u64 };
            },
            |data| {
                // SAFETY: the data area holds `bytes` writable bytes, page
                // aligned, private to this call, and `values` is `bytes`
                // long; `Pod` values are plain bytes.
                unsafe { std::ptr::copy_nonoverlapping(values.as_ptr().cast::<u8>(), data, bytes) };
            },
        )?;
        Ok(Frozen {
            shm,
            len,
            _type: PhantomData,
        })
    }

    /// The number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert_eq!(crew::shm::Frozen::from_slice(&[1u8, 2])?.len(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert!(crew::shm::Frozen::<u8>::from_slice(&[])?.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements, read in place (no copy, no lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let f = crew::shm::Frozen::from_slice(&[3u32, 4])?;
    /// assert_eq!(f.as_slice(), [3, 4]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the data area holds `len` initialised `T`s (checked against
        // the region's size on open), page aligned (so aligned for `T`,
        // checked at creation), and sealed against writes before any handle
        // existed: no process can change them while the slice lives, and the
        // mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.shm.data().cast::<T>(), self.len) }
    }
}

impl<T: Pod> Deref for Frozen<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> AsRef<[T]> for Frozen<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}
