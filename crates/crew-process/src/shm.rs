//! Shared-memory regions for large payloads, kept and reused.
//!
//! A fresh memfd per payload pays for new pages twice: the writer's page
//! faults (and the kernel zeroing each page) and the reader's mapping. So
//! the writer of large payloads keeps a small pool of regions (memfds it has
//! mapped), and each reader keeps its mappings of the regions it was sent
//! (keyed by inode and checked against a random id), so that a payload
//! after the first costs no page fault on either side: only the copies.
//! A worker that sits idle keeps only its largest region each way for a
//! while, then none ([`trim_to_largest`], [`trim`]); `README.md` has the
//! whole policy.
//!
//! A region starts with a 64-byte header, then the payload:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0..8 | magic `crewrgn2` |
//! | 8..16 | `sent`: bumped by the owner each time it sends the region |
//! | 16..24 | `consumed`: the `sent` value the reader last finished reading |
//! | 24..32 | a random id, to tell a cached mapping from a new region whose inode number is the same |
//!
//! The owner hands a region out again only when `consumed == sent`: the
//! reader has finished reading what it was last sent (or it was never sent).
//! A region whose reader never says so (a reader that died mid-read, or a
//! payload the parent dropped unread) is never written again: it is
//! forgotten and its memory goes once the last mapping of it does.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::worker::monotonic_ns;

/// Bytes before the payload in a region.
pub(crate) const HEADER: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"crewrgn2");
/// Word indexes in the header.
const SENT: usize = 1;
const CONSUMED: usize = 2;
const ID: usize = 3;
/// At most this many regions wait in the owner's pool.
const POOL_REGIONS: usize = 8;
/// At most this many bytes wait in the owner's pool (a payload larger than
/// this still travels in a region, which is dropped after its use).
const POOL_BYTES: usize = 512 << 20;
/// A reader keeps at most this many mappings, of at most this many bytes
/// in all, and none unused for longer than [`KEEP_IDLE`] (checked when it
/// reads another).
const READER_MAPPINGS: usize = 8;
const READER_BYTES: usize = 512 << 20;
/// How long a region may go unused and still be kept: by a reader (its
/// mapping), and by a worker for its largest regions while it sits idle
/// (`worker.rs`), so that both sides of a large transfer keep or drop the
/// same regions.
pub(crate) const KEEP_IDLE: std::time::Duration = std::time::Duration::from_secs(5);
/// Regions grow in steps of this (so that a payload slightly larger than
/// the last does not make a new region each time).
const STEP: usize = 2 << 20;

/// A shared mapping of a whole memfd.
struct Map {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a `Map` is a plain address range; what may be read or written
// through it, and when, is governed by the header's protocol (above), and
// the header words are only accessed atomically.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    /// Maps all `len` bytes of `fd`, with its pages faulted in with one call
    /// instead of a fault per 4 KiB page: for reading (`write` false: a
    /// reader's mapping of pages its writer made), or for writing (a
    /// region this process is about to write; a mapping populated for
    /// reading would take a write fault on every page anyway).
    fn new(fd: BorrowedFd<'_>, len: usize, write: bool) -> io::Result<Map> {
        debug_assert!(len >= HEADER);
        let populate = if write { 0 } else { libc::MAP_POPULATE };
        // SAFETY: mapping `len` bytes of a memfd at least that long (the
        // callers check its size, and its seal keeps it from shrinking).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | populate,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if write {
            populate_write(ptr.cast(), len);
        }
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: the first `HEADER` bytes are mapped (`len >= HEADER`) and
        // page-aligned, so word `i < 8` is an aligned u64 that lives as long
        // as `self`; every access to the header is atomic, in both processes.
        unsafe { &*self.ptr.cast::<AtomicU64>().add(i) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` (or `grow`) mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A region this process writes: its memfd and its mapping.
struct Region {
    fd: OwnedFd,
    map: Map,
}

impl Region {
    fn create(len: usize) -> io::Result<Region> {
        use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, ftruncate, memfd_create};
        let fd = memfd_create(
            c"crew-payload",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        ftruncate(&fd, len as u64)?;
        // A reader maps it: it must never shrink under that mapping (a read
        // past the end of a file raises SIGBUS). It may grow.
        fcntl_add_seals(&fd, SealFlags::SHRINK)?;
        let map = Map::new(fd.as_fd(), len, true)?;
        map.word(0).store(MAGIC, Ordering::Relaxed);
        let mut id = [0u8; 8];
        rustix::rand::getrandom(&mut id, rustix::rand::GetRandomFlags::empty())?;
        map.word(ID)
            .store(u64::from_le_bytes(id), Ordering::Relaxed);
        Ok(Region { fd, map })
    }

    /// The payload bytes this region can hold.
    fn capacity(&self) -> usize {
        self.map.len - HEADER
    }

    /// True when no reader may still read it: what was last sent was read.
    fn is_free(&self) -> bool {
        self.map.word(CONSUMED).load(Ordering::Acquire)
            == self.map.word(SENT).load(Ordering::Relaxed)
    }

    /// Grows the region to hold `capacity` payload bytes. Only while leased
    /// (no reader reads it: the lease was handed out free, or is still
    /// being written).
    fn grow(&mut self, capacity: usize) -> io::Result<()> {
        let len = HEADER + round_up(capacity);
        if len <= self.map.len {
            return Ok(());
        }
        rustix::fs::ftruncate(&self.fd, len as u64)?;
        // SAFETY: remapping our own mapping of this memfd, now `len` bytes
        // long; nothing borrows the old address (the lease is `&mut`).
        let ptr =
            unsafe { libc::mremap(self.map.ptr.cast(), self.map.len, len, libc::MREMAP_MAYMOVE) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let old = self.map.len;
        self.map.ptr = ptr.cast();
        self.map.len = len;
        // SAFETY: `old < len`: the new part lies inside the mapping.
        populate_write(unsafe { self.map.ptr.add(old) }, len - old);
        Ok(())
    }
}

/// Faults in `len` bytes of a shared mapping of ours at `ptr` for writing,
/// with one call rather than a fault per page (advice only: on a kernel
/// without `MADV_POPULATE_WRITE` the first writes fault them in).
fn populate_write(ptr: *mut u8, len: usize) {
    // SAFETY: advice on (part of) a mapping this process made; it does not
    // change the contents.
    unsafe { libc::madvise(ptr.cast(), len, libc::MADV_POPULATE_WRITE) };
}

fn round_up(n: usize) -> usize {
    n.div_ceil(STEP).max(1) * STEP
}

/// This process's regions that wait to be written again (or for their
/// reader to finish, then to be written again).
static POOL: Mutex<Vec<Region>> = Mutex::new(Vec::new());

/// When this process last leased, returned or read a region (ns of
/// `CLOCK_MONOTONIC`), and whether it may keep any region or mapping since
/// its last trim: what [`release_if_idle`] checks without taking a lock.
static LAST_USE: AtomicU64 = AtomicU64::new(0);
static KEEPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn mark_use() {
    LAST_USE.store(monotonic_ns(), Ordering::Relaxed);
    KEEPS.store(true, Ordering::Relaxed);
}

/// How long until this process's regions and mappings have been unused for
/// [`KEEP_IDLE`], if it keeps any: a process with no idle loop of its own
/// (the parent) wakes up then and calls [`release_if_idle`].
pub(crate) fn release_due_in() -> Option<std::time::Duration> {
    if !KEEPS.load(Ordering::Relaxed) {
        return None;
    }
    let idle = monotonic_ns().saturating_sub(LAST_USE.load(Ordering::Relaxed));
    Some(KEEP_IDLE.saturating_sub(std::time::Duration::from_nanos(idle)))
}

/// Lets go of every region and mapping ([`trim`]) if none was used for
/// [`KEEP_IDLE`]. Cheap when there is nothing to do (two atomic loads).
pub(crate) fn release_if_idle() {
    if release_due_in() == Some(std::time::Duration::ZERO) {
        KEEPS.store(false, Ordering::Relaxed);
        trim();
        // Something used a region meanwhile: it is kept, and checked again.
        if monotonic_ns().saturating_sub(LAST_USE.load(Ordering::Relaxed))
            < KEEP_IDLE.as_nanos() as u64
        {
            KEEPS.store(true, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A region this process owns and writes: from the pool (or new) until
/// dropped, when it goes back to the pool.
pub(crate) struct Lease {
    region: Option<Region>,
    /// Payload bytes written.
    len: usize,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("len", &self.len).finish()
    }
}

impl Lease {
    /// A region that holds at least `capacity` payload bytes and that no
    /// reader reads.
    pub(crate) fn acquire(capacity: usize) -> io::Result<Lease> {
        mark_use();
        let reused = {
            let mut pool = lock(&POOL);
            // The smallest free region that fits, else the largest free
            // one (grown below: cheaper than a new one); of equals, the one
            // used last (the pool is in the order regions came back), so
            // that a run of payloads of one size reuses one region, which
            // its reader keeps mapped.
            let free = pool.iter().enumerate().filter(|(_, r)| r.is_free());
            let fits = free
                .clone()
                .filter(|(_, r)| r.capacity() >= capacity)
                .min_by_key(|&(i, r)| (r.capacity(), std::cmp::Reverse(i)))
                .map(|(i, _)| i);
            let pick =
                fits.or_else(|| free.max_by_key(|&(i, r)| (r.capacity(), i)).map(|(i, _)| i));
            pick.map(|i| pool.remove(i))
        };
        let region = match reused {
            Some(mut r) => {
                r.grow(capacity)?;
                r
            }
            None => Region::create(HEADER + round_up(capacity))?,
        };
        Ok(Lease {
            region: Some(region),
            len: 0,
        })
    }

    fn region(&self) -> &Region {
        self.region
            .as_ref()
            .expect("a lease holds its region until dropped")
    }

    /// The payload written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `bytes`, growing the region if needed.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        let at = self.len;
        let dst = self.spare(bytes.len())?;
        // SAFETY: `spare` returned `bytes.len()` writable bytes of our
        // region, which no reader reads while leased (see `acquire`), and
        // which cannot overlap `bytes` (a caller cannot borrow the spare
        // part of a lease).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        self.len = at + bytes.len();
        Ok(())
    }

    /// A pointer to `n` writable bytes after the payload written so far.
    fn spare(&mut self, n: usize) -> io::Result<*mut u8> {
        let need = self.len.checked_add(n).ok_or_else(|| {
            io::Error::new(io::ErrorKind::OutOfMemory, "a payload larger than memory")
        })?;
        let region = self.region.as_mut().expect("leased");
        if need > region.capacity() {
            region.grow(need.max(region.capacity() * 2))?;
        }
        // SAFETY: `HEADER + self.len + n <= map.len`, checked above.
        Ok(unsafe { region.map.ptr.add(HEADER + self.len) })
    }

    /// The payload written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        let region = self.region();
        // SAFETY: the first `len` payload bytes were written by `put`; while
        // leased only this process writes the region, through `&mut self`.
        unsafe { std::slice::from_raw_parts(region.map.ptr.add(HEADER), self.len) }
    }

    /// Marks the region sent (its reader may read it from now on until it
    /// says it finished) and returns a descriptor of it to send. The lease
    /// must not be written again (it is not: `&self` from here on; a job
    /// that runs again sends the same payload).
    pub(crate) fn send(&self) -> io::Result<OwnedFd> {
        let region = self.region();
        let fd = region.fd.try_clone()?;
        region.map.word(SENT).fetch_add(1, Ordering::Release);
        Ok(fd)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(region) = self.region.take() else {
            return;
        };
        mark_use();
        let mut pool = lock(&POOL);
        // Regions whose readers never said they finished are forgotten
        // first: never written again, their memory goes with the last
        // mapping of them.
        if pool.len() >= POOL_REGIONS
            && let Some(i) = pool.iter().position(|r| !r.is_free())
        {
            pool.remove(i);
        }
        let bytes: usize = pool.iter().map(|r| r.map.len).sum();
        if pool.len() < POOL_REGIONS && bytes + region.map.len <= POOL_BYTES {
            pool.push(region);
        }
    }
}

/// Copies `bytes` into a region from the pool.
pub(crate) fn lease_with(bytes: &[u8]) -> io::Result<Lease> {
    let mut lease = Lease::acquire(bytes.len())?;
    lease.put(bytes)?;
    Ok(lease)
}

/// A reader's mapping of a region it was sent.
struct Mapped {
    dev: u64,
    ino: u64,
    id: u64,
    map: Map,
}

/// The regions this process was sent, with when each was last read, most
/// recently used last.
static MAPPED: Mutex<Vec<(Arc<Mapped>, Instant)>> = Mutex::new(Vec::new());

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads the `len`-byte payload of the region `fd` (sent by its owner):
/// calls `f` with it, then tells the owner it may write the region again.
///
/// The memfd must be sealed against shrinking and hold the header and
/// `len` bytes: a mapping read past the end of its file raises `SIGBUS`, so
/// a garbled length (or a peer that truncates) must fail here instead.
pub(crate) fn read<T>(fd: &OwnedFd, len: usize, f: impl FnOnce(&[u8]) -> T) -> io::Result<T> {
    use rustix::fs::{SealFlags, fcntl_get_seals, fstat};
    if !fcntl_get_seals(fd)?.contains(SealFlags::SHRINK) {
        return Err(invalid(
            "a payload memfd is not sealed against shrinking".into(),
        ));
    }
    let stat = fstat(fd)?;
    let size = stat.st_size as u64;
    let need = (len as u64).checked_add(HEADER as u64);
    if need.is_none_or(|n| n > size) || size > isize::MAX as u64 {
        return Err(invalid(format!(
            "payload length {len} exceeds its memfd ({size} bytes)"
        )));
    }
    let mut id = [0u8; 8];
    let got = rustix::io::pread(fd, &mut id, (ID * 8) as u64)?;
    if got != 8 {
        return Err(invalid("a payload memfd without its header".into()));
    }
    let id = u64::from_le_bytes(id);
    let (dev, ino) = (stat.st_dev as u64, stat.st_ino as u64);
    let need = HEADER + len;
    mark_use();
    let now = Instant::now();
    let cached = {
        let mut mapped = lock(&MAPPED);
        mapped.retain(|(_, used)| now.duration_since(*used) < KEEP_IDLE);
        let at = mapped
            .iter()
            .position(|(m, _)| m.dev == dev && m.ino == ino && m.id == id && m.map.len >= need);
        at.map(|i| {
            let (m, _) = mapped.remove(i);
            mapped.push((m.clone(), now));
            m
        })
    };
    let mapping = match cached {
        Some(m) => m,
        None => {
            let map = Map::new(fd.as_fd(), size as usize, false)?;
            if map.word(0).load(Ordering::Relaxed) != MAGIC {
                return Err(invalid("a payload memfd without its header".into()));
            }
            let m = Arc::new(Mapped { dev, ino, id, map });
            let mut mapped = lock(&MAPPED);
            // A region that grew replaces its smaller mapping.
            mapped.retain(|(old, _)| !(old.dev == dev && old.ino == ino));
            while !mapped.is_empty()
                && (mapped.len() >= READER_MAPPINGS
                    || mapped.iter().map(|(m, _)| m.map.len).sum::<usize>() + m.map.len
                        > READER_BYTES)
            {
                mapped.remove(0);
            }
            mapped.push((m.clone(), now));
            m
        }
    };
    let sent = mapping.map.word(SENT).load(Ordering::Acquire);
    // SAFETY: the mapping holds `HEADER + len` bytes (checked above, and
    // the memfd cannot shrink); the owner wrote them before sending the
    // region and writes it again only once we store `consumed` below.
    let bytes = unsafe { std::slice::from_raw_parts(mapping.map.ptr.add(HEADER), len) };
    let out = f(bytes);
    mapping.map.word(CONSUMED).store(sent, Ordering::Release);
    Ok(out)
}

/// Lets go of the regions this process keeps for reuse and of its mappings
/// of regions it was sent: for a process that is about to sit idle, so that
/// it does not hold that memory meanwhile. A region a reader still reads
/// (or never finished reading: a reader that died) is forgotten too: its
/// reader's own mapping keeps it alive until that goes, and forgetting
/// never writes it.
pub(crate) fn trim() {
    trim_keeping(false);
}

/// As [`trim`], but keeps the largest region per direction: of the regions
/// this process writes, the largest free one, and of its mappings of
/// regions it was sent, the largest (the most recently used of equals).
/// For a process that has sat idle a little while: the next large payload,
/// in either direction, then costs no new region, no mapping and no page
/// fault, while the rest goes (a later [`trim`] lets go of those two).
pub(crate) fn trim_to_largest() {
    trim_keeping(true);
}

fn trim_keeping(largest: bool) {
    let dropped: Vec<Region> = {
        let mut pool = lock(&POOL);
        let mut all = std::mem::take(&mut *pool);
        // Most recently returned last: `max_by_key` keeps the last of
        // equals.
        let largest_free = (0..all.len())
            .filter(|&i| all[i].is_free())
            .max_by_key(|&i| all[i].map.len);
        if largest && let Some(i) = largest_free {
            pool.push(all.remove(i));
        }
        all
    };
    drop(dropped);
    let dropped = {
        let mut mapped = lock(&MAPPED);
        let mut all = std::mem::take(&mut *mapped);
        // Most recently used last: `max_by_key` keeps the last of equals.
        if largest && let Some(i) = (0..all.len()).max_by_key(|&i| all[i].0.map.len) {
            mapped.push(all.remove(i));
        }
        all
    };
    drop(dropped);
}

/// The header of a region that was never sent (for the fuzz targets,
/// which make regions of their own).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn blank_header() -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&MAGIC.to_le_bytes());
    h
}

/// The number of regions in this process's pool and of its reader
/// mappings (for tests: both stay bounded).
#[cfg(test)]
pub(crate) fn counts() -> (usize, usize) {
    (lock(&POOL).len(), lock(&MAPPED).len())
}
