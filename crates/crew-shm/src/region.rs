//! Regions: sealed memfds mapped `MAP_SHARED`, and the handles that cross
//! processes as `(pid, fd, size, kind, type tag, id)` and reopen the same
//! memory through `/proc/<pid>/fd/<fd>`.
//!
//! Every region has one layout:
//!
//! ```text
//! 0        64                      DATA_OFFSET (4096)            size
//! | Header | state S (kind's own)  | data (Array elements, Queue ring, ...) |
//! ```
//!
//! The header and the state are written once by the creating process before
//! the handle exists, so no other process can observe them half-initialised.
//! The state holds only atomics and `RawMutex`es, so `&S` is sound while
//! other processes write to it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::mem::{align_of, size_of};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::{self, Mapping};

/// Where a kind's state starts.
pub(crate) const STATE_OFFSET: usize = 64;
/// Where a kind's data starts (page aligned on 4 KiB-page machines).
pub(crate) const DATA_OFFSET: usize = 4096;

const MAGIC: u64 = u64::from_le_bytes(*b"crew-shm");
/// Bumped whenever a state layout changes.
const LAYOUT_VERSION: u32 = 1;

#[repr(C)]
struct Header {
    magic: u64,
    kind: u32,
    version: u32,
    type_tag: u64,
    id: u64,
    size: u64,
}

/// What a region holds; checked when a handle is opened, so a `Lock` handle
/// can never be opened as a `Queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    /// Raw bytes ([`Region`]).
    Region = 1,
    /// A `Value<T>`.
    Value = 2,
    /// An `Array<T>`.
    Array = 3,
    /// A `Lock`.
    Lock = 4,
    /// An `RLock`.
    RLock = 5,
    /// A `Semaphore`.
    Semaphore = 6,
    /// A `BoundedSemaphore`.
    BoundedSemaphore = 7,
    /// An `Event`.
    Event = 8,
    /// A `Barrier`.
    Barrier = 9,
    /// A `Condition`'s waiting state.
    Condition = 10,
    /// A `Queue<T>`.
    Queue = 11,
    /// A `Frozen<T>`: sealed against writes, mapped read-only.
    Frozen = 12,
}

impl Kind {
    /// Regions of this kind are sealed against writes and mapped read-only.
    fn is_read_only(self) -> bool {
        self == Kind::Frozen
    }
}

/// A tag for the element type of a typed region: size, alignment and the
/// type's name, hashed. It catches a `Value<u32>` handle opened as a
/// `Value<f32>` in the same program; across programs built by different
/// compilers the names may differ, and opening then fails (loudly).
pub(crate) fn type_tag<T>() -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let name = std::any::type_name::<T>();
    for byte in name
        .bytes()
        .chain((size_of::<T>() as u64).to_le_bytes())
        .chain((align_of::<T>() as u64).to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// What crosses the process boundary: enough to find the memory in a live
/// holder and to check it is the region we meant.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wire {
    /// A process holding the memfd open (the one that serialized the handle).
    pid: u32,
    /// Its fd number there.
    fd: i32,
    /// Total size of the region in bytes.
    size: u64,
    /// The region's `Kind`.
    kind: u32,
    /// The region's element type tag.
    type_tag: u64,
    /// The region's random id, so a reused pid or fd number is caught.
    id: u64,
}

/// The regions this process maps, by id. Opening a handle to a region that
/// is already mapped here reuses the mapping: a pool that sends the same
/// `Array` with every task opens it once per worker, not once per task, and
/// holds one fd for it.
static MAPPED: LazyLock<Mutex<HashMap<u64, Weak<Mapping>>>> = LazyLock::new(Default::default);

/// A mapped region of some kind; clones share the mapping.
#[derive(Clone)]
pub(crate) struct Shm {
    map: Arc<Mapping>,
}

impl fmt::Debug for Shm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:#018x}", self.header().kind_name(), self.id())
    }
}

impl Header {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "Region",
            2 => "Value",
            3 => "Array",
            4 => "Lock",
            5 => "RLock",
            6 => "Semaphore",
            7 => "BoundedSemaphore",
            8 => "Event",
            9 => "Barrier",
            10 => "Condition",
            11 => "Queue",
            12 => "Frozen",
            _ => "unknown",
        }
    }
}

/// The size of a region with `data_len` bytes of data after its header
/// and state.
fn region_size(data_len: usize) -> io::Result<usize> {
    DATA_OFFSET.checked_add(data_len).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "shared memory size overflows usize",
        )
    })
}

/// Writes a new region's header into `map` (a fresh mapping of `size`
/// bytes, `size` from [`region_size`], not yet seen by any other thread or
/// process) and lets `init` set up its state `S`.
fn init_region<S>(
    map: &Mapping,
    kind: Kind,
    type_tag: u64,
    size: usize,
    init: impl FnOnce(*mut S),
) {
    const { assert!(size_of::<S>() <= DATA_OFFSET - STATE_OFFSET && align_of::<S>() <= STATE_OFFSET) };
    let header = Header {
        magic: MAGIC,
        kind: kind as u32,
        version: LAYOUT_VERSION,
        type_tag,
        id: sys::random_u64(),
        size: size as u64,
    };
    // SAFETY: the mapping is at least DATA_OFFSET bytes (`region_size`),
    // page aligned, and private to the caller until it returns the region.
    unsafe { map.as_ptr().cast::<Header>().write(header) };
    // SAFETY: STATE_OFFSET is within the first page, suitably aligned for
    // `S` (checked above), and `S` fits before DATA_OFFSET.
    init(unsafe { map.as_ptr().add(STATE_OFFSET).cast::<S>() });
}

impl Shm {
    /// Creates a region of `kind` whose state `S` is set up by `init` and that
    /// has `data_len` zeroed bytes of data after it.
    ///
    /// `init` gets a pointer to zeroed memory valid for a write of `S`, before
    /// any other thread or process can see the region.
    pub(crate) fn create<S>(
        kind: Kind,
        type_tag: u64,
        data_len: usize,
        init: impl FnOnce(*mut S),
    ) -> io::Result<Shm> {
        debug_assert!(!kind.is_read_only(), "see create_read_only");
        let size = region_size(data_len)?;
        let fd = sys::create_memfd(&format!("crew-{kind:?}"), size as u64)?;
        let map = Mapping::new(fd, size as u64)?;
        init_region(&map, kind, type_tag, size, init);
        let shm = Shm { map: Arc::new(map) };
        shm.register();
        Ok(shm)
    }

    /// Creates a read-only region of kind `kind` ([`Kind::is_read_only`]):
    /// `init` sets up the state `S` and `fill` writes the `data_len` bytes of
    /// data, both before any other thread or process can see the region;
    /// then the memory is sealed against writes for good and mapped
    /// read-only.
    pub(crate) fn create_read_only<S>(
        kind: Kind,
        type_tag: u64,
        data_len: usize,
        init: impl FnOnce(*mut S),
        fill: impl FnOnce(*mut u8),
    ) -> io::Result<Shm> {
        debug_assert!(kind.is_read_only());
        let size = region_size(data_len)?;
        let fd = sys::create_memfd_unsealed(&format!("crew-{kind:?}"), size as u64)?;
        let writable = Mapping::new(fd, size as u64)?;
        init_region(&writable, kind, type_tag, size, init);
        // SAFETY: DATA_OFFSET + data_len is the mapping's size.
        fill(unsafe { writable.as_ptr().add(DATA_OFFSET) });
        // The write seal needs every writable mapping gone.
        let fd = sys::freeze(writable.into_fd())?;
        let map = Mapping::read_only(fd, size as u64)?;
        let shm = Shm { map: Arc::new(map) };
        shm.register();
        Ok(shm)
    }

    /// `len` elements of `T` as a `usize`, if they fit in this region's data
    /// (a handle's length is checked against its region before any slice
    /// of it is made).
    pub(crate) fn fitting_len<T>(&self, len: u64) -> Option<usize> {
        let n = usize::try_from(len).ok()?;
        n.checked_mul(size_of::<T>())
            .is_some_and(|bytes| bytes <= self.data_len())
            .then_some(n)
    }

    /// Opens the region a handle names, checking it is of `kind` with
    /// element `type_tag`.
    pub(crate) fn open(wire: &Wire, kind: Kind, type_tag: u64) -> io::Result<Shm> {
        let mismatch = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shared memory handle mismatch: {what} (expected a {kind:?})"),
            )
        };
        if wire.kind != kind as u32 {
            return Err(mismatch("the handle names another kind of object"));
        }
        if wire.type_tag != type_tag {
            return Err(mismatch("the handle was made for another element type"));
        }
        if (wire.size as usize) < DATA_OFFSET {
            return Err(mismatch("size too small"));
        }
        if let Some(shm) = Shm::lookup(wire) {
            return Ok(shm);
        }
        let fd = sys::open_proc_fd(wire.pid, wire.fd, wire.size, kind.is_read_only())?;
        let map = if kind.is_read_only() {
            Mapping::read_only(fd, wire.size)?
        } else {
            Mapping::new(fd, wire.size)?
        };
        let shm = Shm { map: Arc::new(map) };
        let h = shm.header();
        if h.magic != MAGIC || h.version != LAYOUT_VERSION {
            return Err(mismatch("not a crew region of this layout version"));
        }
        if h.kind != wire.kind
            || h.type_tag != wire.type_tag
            || h.size != wire.size
            || h.id != wire.id
        {
            return Err(mismatch(
                "the fd now names another region (was the holder restarted?)",
            ));
        }
        shm.register();
        Ok(shm)
    }

    /// Remembers this mapping, so that handles to the same region opened
    /// later in this process reuse it.
    fn register(&self) {
        let mut mapped = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
        mapped.retain(|_, map| map.strong_count() > 0);
        mapped.insert(self.id(), Arc::downgrade(&self.map));
    }

    /// The mapping of the region `wire` names, if this process has it.
    fn lookup(wire: &Wire) -> Option<Shm> {
        let mapped = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
        let shm = Shm {
            map: mapped.get(&wire.id)?.upgrade()?,
        };
        let h = shm.header();
        (h.kind == wire.kind && h.type_tag == wire.type_tag && h.size == wire.size).then_some(shm)
    }

    fn header(&self) -> &Header {
        // SAFETY: written once before the region was shared, never after.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// The handle as it crosses processes, naming this process as holder.
    pub(crate) fn wire(&self) -> Wire {
        let h = self.header();
        Wire {
            pid: std::process::id(),
            fd: self.map.raw_fd(),
            size: h.size,
            kind: h.kind,
            type_tag: h.type_tag,
            id: h.id,
        }
    }

    /// The region's random id; equal ids mean the same memory.
    pub(crate) fn id(&self) -> u64 {
        self.header().id
    }

    /// The kind's state.
    ///
    /// # Safety
    ///
    /// `S` must be the state type the region was created with (the kind
    /// check in [`Shm::open`] makes this true for each typed wrapper).
    pub(crate) unsafe fn state<S>(&self) -> &S {
        // SAFETY: by the caller's contract `S` was initialised at this offset,
        // and it consists of atomics and mutexes only.
        unsafe { &*self.map.as_ptr().add(STATE_OFFSET).cast::<S>() }
    }

    /// The first byte of the data area.
    pub(crate) fn data(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET <= size, checked at create and open.
        unsafe { self.map.as_ptr().add(DATA_OFFSET) }
    }

    /// Bytes in the data area.
    pub(crate) fn data_len(&self) -> usize {
        self.map.size() - DATA_OFFSET
    }

    /// Frees the pages backing data bytes `[offset, offset + len)`.
    pub(crate) fn discard_data(&self, offset: usize, len: usize) {
        self.map.discard(DATA_OFFSET + offset, len);
    }

    /// Serializes as a [`Wire`]; inside [`hold_serialized`], the region is
    /// also kept mapped (and its fd open) for as long as the caller says.
    pub(crate) fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        HOLDING.with(|h| {
            if let Some(held) = h.borrow_mut().as_mut() {
                held.push(self.map.clone());
            }
        });
        self.wire().serialize(serializer)
    }

    /// Deserializes a [`Wire`] and opens it.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
        kind: Kind,
        type_tag: u64,
    ) -> Result<Shm, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Shm::open(&wire, kind, type_tag).map_err(serde::de::Error::custom)
    }
}

thread_local! {
    /// The regions serialized on this thread inside [`hold_serialized`].
    static HOLDING: std::cell::RefCell<Option<Vec<Arc<Mapping>>>> =
        const { std::cell::RefCell::new(None) };
}

/// The regions whose handles were serialized by one [`hold_serialized`]
/// call: holding it keeps their memory, and the fds a receiving process
/// opens them through, alive.
#[derive(Default)]
pub struct Held(Vec<Arc<Mapping>>);

impl Held {
    /// The number of regions held.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_, held) = crew_shm::hold_serialized(|| 1 + 1);
    /// assert_eq!(held.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if no region is held.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(crew_shm::Held::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("regions", &self.0.len())
            .finish()
    }
}

/// Runs `f` (which serializes a message) and returns, with its result, the
/// regions of every handle serialized on this thread meanwhile.
///
/// A handle crosses processes as "fd N of process P", which the receiver
/// opens through `/proc/P/fd/N`; the sender must keep the region until the
/// receiver has opened it. A sender that serializes the *only* handle
/// (moving it into a message) would otherwise close the fd at once: it
/// holds the returned [`Held`] until the receiver answered.
///
/// # Examples
///
/// ```
/// let a = crew_shm::Array::<u32>::new(4)?;
/// let (bytes, held) = crew_shm::hold_serialized(|| postcard::to_allocvec(&a));
/// drop(a); // the only handle: `held` keeps the region for the receiver
/// assert_eq!(held.len(), 1);
/// let again: crew_shm::Array<u32> = postcard::from_bytes(&bytes?)?;
/// assert_eq!(again.len(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn hold_serialized<T>(f: impl FnOnce() -> T) -> (T, Held) {
    let outer = HOLDING.with(|h| h.borrow_mut().replace(Vec::new()));
    // Restores the outer collection even if `f` panics.
    struct Restore(Option<Option<Vec<Arc<Mapping>>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                let _ = HOLDING.try_with(|h| *h.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(outer));
    let value = f();
    let mine = HOLDING.with(|h| h.borrow_mut().take()).unwrap_or_default();
    let outer = restore.0.take().flatten();
    HOLDING.with(|h| {
        *h.borrow_mut() = outer.map(|mut o| {
            o.extend(mine.iter().cloned());
            o
        })
    });
    (value, Held(mine))
}

/// Implements `Serialize`/`Deserialize` for a non-generic handle `$ty` with a
/// field `shm` of region kind `$kind`.
macro_rules! impl_handle_serde {
    ($ty:ident, $kind:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.shm.serialize(serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let shm = $crate::region::Shm::deserialize(deserializer, $kind, 0)?;
                Ok($ty { shm })
            }
        }
    };
}
pub(crate) use impl_handle_serde;

/// A block of shared bytes, the raw material of every other type here.
///
/// The memory is a sealed memfd mapped `MAP_SHARED`: zero-filled and sparse
/// (pages are allocated when first written), never backed by a file name, and
/// freed by the kernel once no process maps it or holds its fd. Clones share
/// the same mapping.
///
/// **Crossing processes.** A `Region` (like every handle in this crate)
/// serializes as `(pid, fd, size, kind, type tag, id)`, naming the current
/// process as a holder. Deserializing in another process opens
/// `/proc/<pid>/fd/<fd>` and maps the same memory; nothing is copied. The rule:
/// *a holder must be alive when the handle is opened*; once opened, the memory
/// lives for as long as any process maps it. The opener becomes a holder too,
/// and serializes as itself. Unlike Python's `/dev/shm` segments, nothing is
/// ever left behind when processes die. Opening a handle to a region this
/// process already maps reuses that mapping, so each process holds one fd and
/// one mapping per region however often a handle arrives.
///
/// Opening fails with a deserialization error when no holder is alive, the
/// fd now names other memory, or the handle is of another kind or element
/// type (formats that keep custom messages, unlike postcard, say which).
/// Each process holds one fd per region it maps (mind `ulimit -n` when
/// creating thousands of objects).
///
/// `Region` itself only gives raw pointers; [`Array<u8>`](crate::Array) is the
/// safe view of shared bytes.
///
/// # Examples
///
/// ```
/// use crew_shm::Region;
///
/// let region = Region::new(4096)?;
/// let bytes: Vec<u8> = postcard::to_allocvec(&region)?; // what another process receives
/// let again: Region = postcard::from_bytes(&bytes)?; // opens the same memory
/// // SAFETY: nothing else uses the region yet.
/// unsafe { region.as_ptr().write(42) };
/// assert_eq!(unsafe { again.as_ptr().read() }, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Region {
    shm: Shm,
}

impl_handle_serde!(Region, Kind::Region);

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("id", &format_args!("{:#018x}", self.shm.id()))
            .field("len", &self.len())
            .finish()
    }
}

impl Region {
    /// Creates a zero-filled region of `len` bytes.
    ///
    /// The memory is sparse: creating even a very large region touches no
    /// page of it.
    ///
    /// # Examples
    ///
    /// ```
    /// let region = crew_shm::Region::new(1 << 20)?;
    /// assert_eq!(region.len(), 1 << 20);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the kernel refuses the memfd or the mapping (out of memory or
    /// address space, fd limit reached), or if `len` overflows.
    pub fn new(len: usize) -> io::Result<Region> {
        let shm = Shm::create::<()>(Kind::Region, 0, len, |_| {})?;
        Ok(Region { shm })
    }

    /// The length in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(crew_shm::Region::new(10)?.len(), 10);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.shm.data_len()
    }

    /// Whether the region has no bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(crew_shm::Region::new(0)?.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A pointer to the first byte, valid for `len()` bytes of reads and
    /// writes while this handle (or a clone) lives.
    ///
    /// Other processes may read and write the same bytes at any time:
    /// synchronise through a [`Lock`](crate::Lock) or atomics, and never form
    /// a `&mut` that outlives that synchronisation.
    ///
    /// # Examples
    ///
    /// ```
    /// let region = crew_shm::Region::new(8)?;
    /// // SAFETY: no other process or thread uses the region.
    /// unsafe { region.as_ptr().cast::<u64>().write(7) };
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.shm.data()
    }
}
