//! Thin, checked wrappers over the Linux calls the crate stands on: memfd,
//! mmap, futex, robust process-shared pthread mutexes and the monotonic clock.
//!
//! Every system call lives here, so the rest of the crate reasons about
//! `Mapping`, `Deadline`, `RawMutex` and `futex_wait`/`futex_wake`. Calls that
//! `rustix` wraps safely (memfd, seals, `open`/`fstat`, futex, clocks,
//! `getrandom`) go through it; `unsafe` is left to what truly needs it: the
//! shared mappings and the robust process-shared pthread mutexes.

use std::cell::UnsafeCell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// The seals every region carries: its size can never change, so a mapping
/// of the full size can never take SIGBUS, whoever else holds the file.
const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Creates a sealed, zero-filled (sparse) memfd of `size` bytes.
///
/// The fd is `O_CLOEXEC`: a spawned child never inherits it by accident; it
/// reaches the memory only by opening `/proc/<pid>/fd/<fd>` of a holder.
pub(crate) fn create_memfd(name: &str, size: u64) -> io::Result<OwnedFd> {
    memfd_sealed(name, size, SEALS)
}

/// Creates a zero-filled (sparse) memfd of `size` bytes whose size is
/// sealed and that can still be sealed further ([`freeze`]).
pub(crate) fn create_memfd_unsealed(name: &str, size: u64) -> io::Result<OwnedFd> {
    memfd_sealed(name, size, SealFlags::SHRINK | SealFlags::GROW)
}

/// A zero-filled (sparse) memfd of `size` bytes, `O_CLOEXEC`, with `seals`.
fn memfd_sealed(name: &str, size: u64, seals: SealFlags) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if libc::off_t::try_from(size).is_err() {
        return Err(too_large());
    }
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size)?;
    rustix::fs::fcntl_add_seals(&fd, seals)?;
    Ok(fd)
}

/// The seals of a read-only region: those of every region, and `WRITE`.
const FROZEN_SEALS: SealFlags = SEALS.union(SealFlags::WRITE);

/// Makes a memfd from [`create_memfd_unsealed`] read-only for good: seals
/// it against writes (no process can write it again, by `write`, a
/// writable shared mapping or a hole punched in it) and against further
/// seals, and returns it reopened read-only, so that even the old kernels
/// that count a read-only `MAP_SHARED` mapping of a writable fd as writable
/// map it. The caller must have unmapped every writable mapping of it.
pub(crate) fn freeze(fd: OwnedFd) -> io::Result<OwnedFd> {
    rustix::fs::fcntl_add_seals(&fd, FROZEN_SEALS)?;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "shared memory size does not fit in the address space",
    )
}

/// Opens the memfd that process `pid` holds as fd `fd`, checking that it is a
/// sealed region of exactly `size` bytes; `read_only`: opens it read-only
/// and checks that it is sealed against writes ([`freeze`]).
pub(crate) fn open_proc_fd(pid: u32, fd: i32, size: u64, read_only: bool) -> io::Result<OwnedFd> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let (access, seals) = if read_only {
        (OFlags::RDONLY, FROZEN_SEALS)
    } else {
        (OFlags::RDWR, SEALS)
    };
    let opened = rustix::fs::open(path, access | OFlags::CLOEXEC, Mode::empty());
    let owned = opened.map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!(
                "cannot open shared memory held as fd {fd} by process {pid} \
                 (a holder must be alive when a handle is opened): {e}"
            ),
        )
    })?;
    let stat = rustix::fs::fstat(&owned)?;
    let sealed = rustix::fs::fcntl_get_seals(&owned).is_ok_and(|s| s.contains(seals));
    if !sealed || stat.st_size as u64 != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("fd {fd} of process {pid} is not a crew shared memory region"),
        ));
    }
    Ok(owned)
}

/// A `MAP_SHARED` mapping of a whole memfd, unmapped (and the fd closed) on
/// drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    size: usize,
    fd: OwnedFd,
}

// SAFETY: a `Mapping` is an address range and an fd; it hands out raw pointers
// only, and every typed access above it synchronises through atomics or the
// region's process-shared mutex.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all `size` bytes of `fd` read-write and shared.
    pub(crate) fn new(fd: OwnedFd, size: u64) -> io::Result<Mapping> {
        Mapping::map(fd, size, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Maps all `size` bytes of `fd` (opened read-only) read-only and
    /// shared: a write through the mapping faults.
    pub(crate) fn read_only(fd: OwnedFd, size: u64) -> io::Result<Mapping> {
        Mapping::map(fd, size, libc::PROT_READ)
    }

    fn map(fd: OwnedFd, size: u64, prot: libc::c_int) -> io::Result<Mapping> {
        let size = usize::try_from(size).map_err(|_| too_large())?;
        // SAFETY: we ask the kernel for a fresh mapping (addr = NULL) of an fd
        // we own; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns NULL on success");
        Ok(Mapping { ptr, size, fd })
    }

    /// Unmaps the memory and gives back its fd.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `ptr`/`size` are exactly what `mmap` returned; `self` is
        // consumed, so nothing reads through the mapping after this.
        unsafe {
            libc::munmap(this.ptr.as_ptr().cast(), this.size);
        }
        // SAFETY: `this` is never used or dropped again, so the fd is moved
        // out exactly once.
        unsafe { std::ptr::read(&this.fd) }
    }

    /// The first byte of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The fd number this process holds the memory by.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Frees the pages backing `[offset, offset + len)` (both page aligned):
    /// the range reads as zeros afterwards, in every process.
    ///
    /// Only an optimisation, so a failure is ignored.
    pub(crate) fn discard(&self, offset: usize, len: usize) {
        debug_assert!(offset + len <= self.size);
        if !offset.is_multiple_of(page_size()) || !len.is_multiple_of(page_size()) {
            return; // e.g. 64 KiB pages: keep the memory, it is only an optimisation
        }
        // SAFETY: the range lies inside our mapping; the caller guarantees no
        // live data is stored there (it holds the region's lock).
        unsafe {
            libc::madvise(self.ptr.as_ptr().add(offset).cast(), len, libc::MADV_REMOVE);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` are exactly what `mmap` returned, and nothing
        // borrows the memory any more: every handle and guard holds the
        // `Arc<Mapping>` it reads through.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.size);
        }
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

/// A random 64-bit number, to tell regions apart across processes.
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    let n = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty());
    if matches!(n, Ok(8)) {
        u64::from_ne_bytes(buf)
    } else {
        // getrandom cannot fail for 8 bytes after boot; stay unique anyway.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    }
}

/// A point on `CLOCK_MONOTONIC` (the clock futexes and
/// `pthread_mutex_clocklock` use), or "never".
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Option<libc::timespec>,
}

fn monotonic_now() -> libc::timespec {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    libc::timespec {
        tv_sec: ts.tv_sec as libc::time_t,
        tv_nsec: ts.tv_nsec as libc::c_long,
    }
}

impl Deadline {
    /// Never expires.
    pub(crate) fn never() -> Deadline {
        Deadline { at: None }
    }

    /// Already expired: the `try_` calls.
    pub(crate) fn now() -> Deadline {
        Deadline {
            at: Some(monotonic_now()),
        }
    }

    /// `timeout` from now; a timeout too large to represent never expires.
    pub(crate) fn after(timeout: Duration) -> Deadline {
        let now = monotonic_now();
        let nanos = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
        let secs = (now.tv_sec as u64)
            .checked_add(timeout.as_secs())
            .and_then(|s| s.checked_add(nanos / 1_000_000_000))
            .and_then(|s| libc::time_t::try_from(s).ok());
        match secs {
            Some(tv_sec) => Deadline {
                at: Some(libc::timespec {
                    tv_sec,
                    tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
                }),
            },
            None => Deadline::never(),
        }
    }

    /// Whether the deadline is in the past.
    pub(crate) fn has_passed(&self) -> bool {
        match self.at {
            None => false,
            Some(at) => {
                let now = monotonic_now();
                (now.tv_sec, now.tv_nsec) >= (at.tv_sec, at.tv_nsec)
            }
        }
    }

    /// Whether this is `never`.
    pub(crate) fn is_never(&self) -> bool {
        self.at.is_none()
    }

    /// Sleeps until the deadline (which must not be `never`).
    fn sleep_until(&self) {
        let Some(at) = self.rustix_timespec() else {
            return;
        };
        while !self.has_passed() {
            // EINTR returns early; the loop re-checks.
            let _ =
                rustix::thread::clock_nanosleep_absolute(rustix::thread::ClockId::Monotonic, &at);
        }
    }

    fn rustix_timespec(&self) -> Option<rustix::time::Timespec> {
        self.at.map(|at| rustix::time::Timespec {
            tv_sec: at.tv_sec as _,
            tv_nsec: at.tv_nsec as _,
        })
    }

    fn as_ptr(&self) -> *const libc::timespec {
        self.at
            .as_ref()
            .map_or(std::ptr::null(), |at| at as *const _)
    }
}

/// Sleeps while `*word == expected`, until woken or `deadline`. Spurious
/// returns are possible; callers re-check their condition.
///
/// Not `FUTEX_PRIVATE_FLAG`: the word lives in a `MAP_SHARED` memfd, and the
/// kernel keys a shared futex by (inode, offset), so processes that map the
/// region at different addresses still meet on the same futex.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Deadline) {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (plain
    // FUTEX_WAIT would take a relative one). Any bit matches any waker.
    let at = deadline.rustix_timespec();
    let _ = rustix::thread::futex::wait_bitset(
        word,
        rustix::thread::futex::Flags::empty(),
        expected,
        at.as_ref(),
        std::num::NonZeroU32::MAX,
    );
}

/// Wakes up to `n` sleepers on `word`, in any process.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    let _ =
        rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), n.max(0) as u32);
}

unsafe extern "C" {
    // In glibc since 2.30; the `libc` crate does not declare it yet.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The flavour of a [`RawMutex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// Relocking from the owning thread is reported, not deadlocked.
    ErrorCheck,
    /// The owning thread may lock again; it unlocks as often.
    Recursive,
}

/// What [`RawMutex::lock`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Locked normally.
    Clean,
    /// Locked, but the previous owner died holding it. The mutex has already
    /// been marked consistent; the data it protects may not be.
    Recovered,
    /// The deadline passed first; not locked.
    TimedOut,
}

/// A robust, process-shared pthread mutex stored inside a region.
///
/// Robust: when the owner thread (or its whole process) dies, the kernel
/// walks the owner's robust list, marks the mutex `OWNER_DIED` and wakes one
/// waiter, whose lock call returns `EOWNERDEAD`.
#[repr(C)]
pub(crate) struct RawMutex {
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: a pthread mutex is made to be used from many threads at once.
unsafe impl Sync for RawMutex {}

impl RawMutex {
    /// Initialises a robust process-shared mutex in place.
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes and no other thread or process may use
    /// the mutex until this returns.
    pub(crate) unsafe fn init(this: *mut RawMutex, kind: MutexKind) {
        // SAFETY: all calls get valid pointers: `attr` is a local, `this` is
        // valid by the caller's contract. The calls only fail on invalid
        // arguments, which these constants are not.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            let ty = match kind {
                MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
                MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
            };
            assert_eq!(libc::pthread_mutexattr_settype(&mut attr, ty), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(
                libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                0
            );
            assert_eq!(
                libc::pthread_mutex_init(UnsafeCell::raw_get(&raw const (*this).inner), &attr),
                0
            );
            libc::pthread_mutexattr_destroy(&mut attr);
        }
    }

    /// Locks, waiting until `deadline`.
    ///
    /// # Panics
    ///
    /// Panics if the calling thread already holds an error-checking mutex
    /// and `deadline` is never (waiting would deadlock forever; with a
    /// deadline the call sleeps until it and times out), or if the mutex has been made
    /// unrecoverable, which this crate never does.
    pub(crate) fn lock(&self, deadline: Deadline) -> Locked {
        let m = self.inner.get();
        let ret = if deadline.is_never() {
            // SAFETY: `m` points to an initialised process-shared mutex.
            unsafe { libc::pthread_mutex_lock(m) }
        } else if deadline.has_passed() {
            // SAFETY: as above.
            unsafe { libc::pthread_mutex_trylock(m) }
        } else {
            // SAFETY: as above; the timespec is live for the call.
            unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, deadline.as_ptr()) }
        };
        match ret {
            0 => Locked::Clean,
            libc::EOWNERDEAD => {
                // We mark it consistent at once, so a mutex can never end up
                // ENOTRECOVERABLE; the caller is told through `Recovered`.
                // SAFETY: we own the mutex (EOWNERDEAD means acquired).
                let r = unsafe { libc::pthread_mutex_consistent(m) };
                debug_assert_eq!(r, 0);
                Locked::Recovered
            }
            libc::ETIMEDOUT | libc::EBUSY => Locked::TimedOut,
            libc::EDEADLK if deadline.is_never() => {
                panic!("lock already held by this thread (use an RLock to re-enter)")
            }
            libc::EDEADLK => {
                // Like Python: a thread cannot get a lock it holds, so a
                // bounded attempt simply times out.
                deadline.sleep_until();
                Locked::TimedOut
            }
            libc::EAGAIN => panic!("recursive lock acquired too many times"),
            e => panic!(
                "pthread mutex lock failed: {}",
                io::Error::from_raw_os_error(e)
            ),
        }
    }

    /// Unlocks.
    ///
    /// # Safety
    ///
    /// The calling thread must hold the mutex.
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the caller holds the mutex.
        let r = unsafe { libc::pthread_mutex_unlock(self.inner.get()) };
        debug_assert_eq!(r, 0, "unlocking a mutex this thread does not hold");
    }
}
