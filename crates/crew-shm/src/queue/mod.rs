//! [`Queue<T>`]: a multi-producer multi-consumer queue of postcard-encoded
//! items in a shared-memory ring, like `multiprocessing.Queue`.
//!
//! The protocol (see README.md beside this file): records `[u32 len][bytes]`
//! in a byte ring under a robust monitor; `head` and `tail` are monotonic byte
//! offsets. A put writes the whole record past `tail`, then publishes it with
//! one store of `tail`; a get copies the record at `head` out, then consumes it
//! with one store of `head`. A process killed before that store leaves the
//! ring as if it never started; the next locker is told the holder died and
//! recounts the records from `head` to `tail`.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Kind as ErrorKind, PutError};
use crate::monitor::{Monitor, MonitorGuard};
use crate::region::{Kind, Shm, type_tag};
use crate::sys::{self, Deadline};

/// Signal: an item was put, or the queue closed.
const NOT_EMPTY: usize = 0;
/// Signal: an item was taken, or the queue closed.
const NOT_FULL: usize = 1;

/// Bytes of the length prefix of a record.
const PREFIX: u64 = 4;

/// Consumed ring space is given back to the kernel a chunk at a time, so a
/// long-lived "unbounded" queue stays as small as the data it holds.
const DISCARD_CHUNK: u64 = 1 << 20;

/// Byte capacity of an "unbounded" queue: address space only; pages are
/// allocated as items are written and returned as they are consumed.
const DEFAULT_CAPACITY: usize = 1 << 30;

#[repr(C)]
struct QueueState {
    monitor: Monitor,
    /// Ring bytes; written once at creation.
    capacity: AtomicU64,
    /// Most items at once, 0 for no limit; written once at creation.
    max_items: AtomicU64,
    /// Offset of the first unread record (monotonic; ring index = % capacity).
    head: AtomicU64,
    /// Offset just past the last complete record: the commit point.
    tail: AtomicU64,
    /// Records between head and tail (derived: recounted on recovery).
    count: AtomicU64,
    closed: AtomicU32,
    /// Ring bytes before this offset were given back to the kernel.
    discarded: AtomicU64,
}

/// A queue of serde items shared between processes, like
/// `multiprocessing.Queue`: any number of producers and consumers, in any
/// processes that hold the handle.
///
/// Items are encoded with postcard into a ring of bytes in shared memory and
/// decoded by the getter: one copy in, one copy out, no pipe and no feeder
/// thread. Items from one producer arrive in the order it put them.
///
/// **Capacity.** [`Queue::new`] is "unbounded": a 1 GiB ring of *address
/// space* whose pages are only allocated as items are written and are given
/// back as items are consumed. [`Queue::bounded`] also limits the number of
/// items, like `Queue(maxsize)`; [`Queue::builder`] sets both. A put waits
/// while the queue is full.
///
/// **Closing.** [`close`](Queue::close) is permanent and seen by every
/// process: puts fail (the item is given back), gets drain what is left and
/// then fail with [`Error::is_closed`].
///
/// **Crashes.** A producer killed in the middle of `put` leaves nothing
/// behind: the record only exists once the final store of the tail publishes
/// it. A consumer killed in the middle of `get` leaves the item in the queue.
/// (An item already taken by a consumer that then dies is gone with it.)
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::Queue;
///
/// let queue = Queue::<(u32, String)>::new()?;
/// let handle = postcard::to_allocvec(&queue)?; // send to a worker process
/// let in_worker: Queue<(u32, String)> = postcard::from_bytes(&handle)?;
/// in_worker.put((1, "one".into())).unwrap();
/// assert_eq!(queue.get().unwrap(), (1, "one".to_string()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    shm: Shm,
    /// The ring's size, read once when the handle is made (checked against
    /// the mapping then): a later scribble over the shared word cannot move
    /// a copy out of bounds.
    capacity: u64,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            shm: self.shm.clone(),
            capacity: self.capacity,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.len())
            .field("is_closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.shm.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let shm = Shm::deserialize(deserializer, Kind::Queue, type_tag::<T>())?;
        // SAFETY: a `Queue` region's state is a `QueueState`.
        let capacity = unsafe { shm.state::<QueueState>() }.capacity.load(Relaxed);
        if capacity == 0 || capacity as usize > shm.data_len() {
            return Err(serde::de::Error::custom(
                "shared queue region is smaller than its ring",
            ));
        }
        Ok(Queue {
            shm,
            capacity,
            _type: PhantomData,
        })
    }
}

/// Sets up a [`Queue`]'s limits.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let queue = crew::Queue::<u64>::builder().max_items(100).capacity_bytes(1 << 16).build()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct QueueBuilder<T> {
    max_items: usize,
    capacity_bytes: usize,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("max_items", &self.max_items)
            .field("capacity_bytes", &self.capacity_bytes)
            .finish()
    }
}

impl<T> QueueBuilder<T> {
    /// Limits the queue to `max_items` items at once (0: no limit), like
    /// Python's `Queue(maxsize)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::builder().max_items(1).build()?;
    /// queue.put(1).unwrap();
    /// assert!(queue.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_items(mut self, max_items: usize) -> Self {
        self.max_items = max_items;
        self
    }

    /// Sets the ring's size in bytes (default 1 GiB of sparse address
    /// space), rounded up to whole pages. Each item takes its encoded size
    /// plus 4 bytes; an item that can never fit is refused.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::builder().capacity_bytes(4096).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn capacity_bytes(mut self, capacity_bytes: usize) -> Self {
        self.capacity_bytes = capacity_bytes;
        self
    }

    /// Creates the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<String>::builder().build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the capacity is too small to hold any item (under 8
    /// bytes) or overflows; otherwise fails if the shared memory cannot be
    /// created.
    pub fn build(self) -> io::Result<Queue<T>> {
        if self.capacity_bytes < 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "queue capacity must be at least 8 bytes",
            ));
        }
        let page = sys::page_size();
        let capacity = self
            .capacity_bytes
            .checked_next_multiple_of(page)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "queue capacity overflows usize",
                )
            })?;
        let max_items = self.max_items as u64;
        let shm = Shm::create::<QueueState>(Kind::Queue, type_tag::<T>(), capacity, |state| {
            // SAFETY: `create` hands us the fresh, private, zeroed state.
            unsafe {
                Monitor::init(&raw mut (*state).monitor);
                (*state).capacity = AtomicU64::new(capacity as u64);
                (*state).max_items = AtomicU64::new(max_items);
            }
        })?;
        Ok(Queue {
            shm,
            capacity: capacity as u64,
            _type: PhantomData,
        })
    }
}

impl<T> Queue<T> {
    /// A builder for a queue with chosen limits.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::builder().max_items(10).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            max_items: 0,
            capacity_bytes: DEFAULT_CAPACITY,
            _type: PhantomData,
        }
    }

    /// Creates an "unbounded" queue: no item limit, a 1 GiB sparse ring.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::new()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created (fd limit, address
    /// space).
    pub fn new() -> io::Result<Queue<T>> {
        Queue::builder().build()
    }

    /// Creates a queue holding at most `max_items` items, like
    /// `Queue(maxsize)` (0: no limit).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::bounded(2)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Queue::new).
    pub fn bounded(max_items: usize) -> io::Result<Queue<T>> {
        Queue::builder().max_items(max_items).build()
    }

    fn state(&self) -> &QueueState {
        // SAFETY: a `Queue` region's state is a `QueueState`.
        unsafe { self.shm.state::<QueueState>() }
    }

    /// The number of items in the queue now (a hint: other processes may
    /// change it at once).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::new()?;
    /// queue.put(1).unwrap();
    /// assert_eq!(queue.len(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        // Under the monitor, so a count left stale by a dead process is
        // recounted first.
        let _guard = self
            .lock(Deadline::never())
            .expect("a lock without deadline cannot time out");
        self.state().count.load(Relaxed) as usize
    }

    /// Whether the queue is empty now (a hint).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// assert!(crew::Queue::<u32>::new()?.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        let state = self.state();
        state.head.load(Relaxed) == state.tail.load(Relaxed)
    }

    /// Whether the queue holds its item limit now, like Python's `full()`
    /// (a hint). A queue without an item limit is never full by this
    /// measure, though a large item may still wait for ring space.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::bounded(1)?;
    /// queue.put(1).unwrap();
    /// assert!(queue.is_full());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        let max_items = self.state().max_items.load(Relaxed);
        max_items != 0 && self.len() as u64 >= max_items
    }

    /// Whether the queue has been closed (it may still hold items).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::new()?;
    /// queue.close();
    /// assert!(queue.is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.state().closed.load(Relaxed) != 0
    }

    /// Closes the queue for every process: puts fail from now on; gets drain
    /// what is left, then fail with [`Error::is_closed`]. Blocked callers
    /// wake up. Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u32>::new()?;
    /// queue.put(1).unwrap();
    /// queue.close();
    /// assert_eq!(queue.get().unwrap(), 1);
    /// assert!(queue.get().unwrap_err().is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&self) {
        let mut guard = self
            .lock(Deadline::never())
            .expect("a lock without deadline cannot time out");
        self.state().closed.store(1, Relaxed);
        guard.notify_all(NOT_EMPTY);
        guard.notify_all(NOT_FULL);
    }

    /// Locks the monitor, repairing the state if a holder died.
    fn lock(&self, deadline: Deadline) -> Option<MonitorGuard<'_>> {
        let mut guard = self.state().monitor.lock(deadline)?;
        self.repair_if_recovered(&mut guard);
        Some(guard)
    }

    fn wait(&self, guard: &mut MonitorGuard<'_>, signal: usize, deadline: Deadline) {
        guard.wait(signal, deadline);
        self.repair_if_recovered(guard);
    }

    /// After a holder died: `head` and `tail` are exactly as the last
    /// complete put or get left them (each is published by one store), but
    /// `count` may be stale. Recount the records in between; should the
    /// records not add up (which the protocol rules out), keep the whole
    /// ones and drop the rest rather than hand out garbage.
    ///
    /// The repair also trusts nothing else the dead holder could have
    /// scribbled (the fuzz target `queue_recovery` writes arbitrary values):
    /// the offsets are rebased by a multiple of the ring size below one ring
    /// (same ring positions, no overflow ahead), and the discard mark is
    /// moved to the head's chunk (a mark far behind would take forever to
    /// catch up).
    fn repair_if_recovered(&self, guard: &mut MonitorGuard<'_>) {
        if !guard.take_recovered() {
            return;
        }
        let state = self.state();
        let capacity = self.capacity;
        let mut head = state.head.load(Relaxed);
        let mut tail = state.tail.load(Relaxed);
        if tail < head || tail - head > capacity {
            tail = head;
        }
        let base = head - head % capacity;
        head -= base;
        tail -= base;
        state.head.store(head, Relaxed);
        state.discarded.store(head - head % DISCARD_CHUNK, Relaxed);
        let mut pos = head;
        let mut count = 0;
        while pos < tail {
            let len = u64::from(self.read_prefix(pos));
            if tail - pos < PREFIX + len {
                break;
            }
            pos += PREFIX + len;
            count += 1;
        }
        state.tail.store(pos, Relaxed);
        state.count.store(count, Relaxed);
        guard.notify_all(NOT_EMPTY);
        guard.notify_all(NOT_FULL);
    }

    /// Copies `src` into the ring at offset `pos`, wrapping.
    /// The caller holds the monitor and `pos..pos + len` is free space.
    fn write_ring(&self, pos: u64, src: &[u8]) {
        let capacity = self.capacity;
        let at = (pos % capacity) as usize;
        let first = src.len().min(capacity as usize - at);
        // SAFETY: `at + first <= capacity <= data_len`, and the rest goes to
        // the start of the ring (`src.len() <= capacity`). The monitor makes
        // us the only reader or writer of the ring.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.shm.data().add(at), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.shm.data(),
                src.len() - first,
            );
        }
    }

    /// Copies ring bytes at offset `pos` into `dst`, wrapping.
    /// The caller holds the monitor.
    fn read_ring(&self, pos: u64, dst: &mut [u8]) {
        let capacity = self.capacity;
        let at = (pos % capacity) as usize;
        let first = dst.len().min(capacity as usize - at);
        // SAFETY: as in `write_ring`, with the roles swapped.
        unsafe {
            std::ptr::copy_nonoverlapping(self.shm.data().add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.shm.data(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }

    fn read_prefix(&self, pos: u64) -> u32 {
        let mut prefix = [0; PREFIX as usize];
        self.read_ring(pos, &mut prefix);
        u32::from_le_bytes(prefix)
    }

    /// Puts one encoded record, waiting for room until `deadline` (never
    /// waiting if `wait` is false).
    fn put_bytes(&self, bytes: &[u8], deadline: Deadline, wait: bool) -> Result<(), ErrorKind> {
        let state = self.state();
        let capacity = self.capacity;
        let max_len = capacity.saturating_sub(PREFIX).min(u64::from(u32::MAX));
        if bytes.len() as u64 > max_len {
            return Err(ErrorKind::TooLarge {
                len: bytes.len(),
                max: max_len as usize,
            });
        }
        let need = PREFIX + bytes.len() as u64;
        let mut guard = self
            .lock(if wait { deadline } else { Deadline::never() })
            .ok_or(ErrorKind::TimedOut)?;
        let max_items = state.max_items.load(Relaxed);
        loop {
            if state.closed.load(Relaxed) != 0 {
                return Err(ErrorKind::Closed);
            }
            let used = state.tail.load(Relaxed) - state.head.load(Relaxed);
            let count = state.count.load(Relaxed);
            if capacity - used >= need && (max_items == 0 || count < max_items) {
                break;
            }
            if !wait {
                return Err(ErrorKind::Full);
            }
            if deadline.has_passed() {
                return Err(ErrorKind::TimedOut);
            }
            self.wait(&mut guard, NOT_FULL, deadline);
        }
        let tail = state.tail.load(Relaxed);
        self.write_ring(tail, &(bytes.len() as u32).to_le_bytes());
        self.write_ring(tail + PREFIX, bytes);
        // The commit: until this store the record does not exist.
        state.tail.store(tail + need, Relaxed);
        state.count.fetch_add(1, Relaxed);
        guard.notify_all(NOT_EMPTY);
        Ok(())
    }

    /// Takes one encoded record, waiting until `deadline` (never waiting if
    /// `wait` is false).
    fn get_bytes(&self, deadline: Deadline, wait: bool) -> Result<Vec<u8>, ErrorKind> {
        let state = self.state();
        let mut guard = self
            .lock(if wait { deadline } else { Deadline::never() })
            .ok_or(ErrorKind::TimedOut)?;
        loop {
            if state.head.load(Relaxed) != state.tail.load(Relaxed) {
                break;
            }
            if state.closed.load(Relaxed) != 0 {
                return Err(ErrorKind::Closed);
            }
            if !wait {
                return Err(ErrorKind::Empty);
            }
            if deadline.has_passed() {
                return Err(ErrorKind::TimedOut);
            }
            self.wait(&mut guard, NOT_EMPTY, deadline);
        }
        let head = state.head.load(Relaxed);
        let len = self.read_prefix(head);
        // Only memory corruption from outside this crate can break this.
        assert!(
            PREFIX + u64::from(len) <= state.tail.load(Relaxed) - head,
            "shared queue ring is corrupted"
        );
        let mut bytes = vec![0; len as usize];
        self.read_ring(head + PREFIX, &mut bytes);
        let new_head = head + PREFIX + u64::from(len);
        // The commit: until this store the record is still in the queue.
        state.head.store(new_head, Relaxed);
        state.count.fetch_sub(1, Relaxed);
        self.discard_consumed(new_head);
        guard.notify_all(NOT_FULL);
        Ok(bytes)
    }

    /// Gives the pages of fully consumed ring chunks back to the kernel.
    /// The caller holds the monitor.
    fn discard_consumed(&self, head: u64) {
        let state = self.state();
        let capacity = self.capacity;
        if !capacity.is_multiple_of(DISCARD_CHUNK) {
            return;
        }
        let tail = state.tail.load(Relaxed);
        let mut chunk = state.discarded.load(Relaxed);
        while chunk + DISCARD_CHUNK <= head {
            // The same ring bytes are reused at `chunk + capacity`; skip the
            // chunk if a put has already written there.
            if tail <= chunk + capacity {
                self.shm
                    .discard_data((chunk % capacity) as usize, DISCARD_CHUNK as usize);
            }
            chunk += DISCARD_CHUNK;
        }
        state.discarded.store(chunk, Relaxed);
    }

    /// Waits until an item is there or the queue is closed (`true`), or
    /// `deadline` passes (`false`).
    pub(crate) fn wait_readable(&self, deadline: Deadline) -> bool {
        let state = self.state();
        let Some(mut guard) = self.lock(deadline) else {
            return false;
        };
        loop {
            if state.head.load(Relaxed) != state.tail.load(Relaxed)
                || state.closed.load(Relaxed) != 0
            {
                return true;
            }
            if deadline.has_passed() {
                return false;
            }
            self.wait(&mut guard, NOT_EMPTY, deadline);
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn put_until(&self, item: T, deadline: Deadline, wait: bool) -> Result<(), PutError<T>> {
        let bytes = match postcard::to_allocvec(&item) {
            Ok(bytes) => bytes,
            Err(e) => return Err(PutError::new(ErrorKind::Encode(e), item)),
        };
        self.put_bytes(&bytes, deadline, wait)
            .map_err(|kind| PutError::new(kind, item))
    }

    fn get_until(&self, deadline: Deadline, wait: bool) -> Result<T, Error> {
        let bytes = self.get_bytes(deadline, wait).map_err(Error::new)?;
        postcard::from_bytes(&bytes).map_err(|e| Error::new(ErrorKind::Decode(e)))
    }

    /// Puts `item` at the back, blocking while the queue is full.
    ///
    /// The item is encoded before the queue is locked.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<Vec<u8>>::new()?;
    /// queue.put(vec![1, 2, 3]).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Gives the item back with [`PutError::is_closed`] if the queue is (or
    /// becomes, while waiting) closed, [`PutError::is_too_large`] if it can
    /// never fit, [`PutError::is_serialization`] if postcard cannot encode it.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, Deadline::never(), true)
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let queue = crew::Queue::<u8>::bounded(1)?;
    /// queue.put_timeout(1, Duration::from_secs(1)).unwrap();
    /// let error = queue.put_timeout(2, Duration::from_millis(1)).unwrap_err();
    /// assert!(error.is_timeout());
    /// assert_eq!(error.into_inner(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PutError::is_timeout`] if the queue stayed full; otherwise as
    /// [`put`](Queue::put).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(item, Deadline::after(timeout), true)
    }

    /// Puts `item` only if there is room now.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::bounded(1)?;
    /// queue.try_put(1).unwrap();
    /// assert!(queue.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PutError::is_full`] if there is no room; otherwise as
    /// [`put`](Queue::put).
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, Deadline::now(), false)
    }

    /// Takes the item at the front, blocking while the queue is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::new()?;
    /// queue.put(1).unwrap();
    /// assert_eq!(queue.get().unwrap(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_closed`] once the queue is closed and empty;
    /// [`Error::is_serialization`] if the item does not decode as a `T` (it
    /// is consumed).
    pub fn get(&self) -> Result<T, Error> {
        self.get_until(Deadline::never(), true)
    }

    /// Takes the item at the front, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let queue = crew::Queue::<u8>::new()?;
    /// assert!(queue.get_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_timeout`] if the queue stayed empty; otherwise as
    /// [`get`](Queue::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_until(Deadline::after(timeout), true)
    }

    /// Takes the item at the front only if there is one now.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let queue = crew::Queue::<u8>::new()?;
    /// assert!(queue.try_get().unwrap_err().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_empty`] if there is none; otherwise as
    /// [`get`](Queue::get).
    pub fn try_get(&self) -> Result<T, Error> {
        self.get_until(Deadline::now(), false)
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
#[cfg(test)]
mod test;
