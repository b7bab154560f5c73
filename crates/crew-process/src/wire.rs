//! The wire between a parent and its workers: length-prefixed frames on a
//! Unix stream socket, many frames per `sendmsg`/`recvmsg` (coalescing is
//! what makes a task cost ~0.04 µs of pipe instead of ~1.5 µs,
//! `shared/notes/ipc-floor.md`), and large payloads in a memfd passed with
//! its frame (`SCM_RIGHTS`) instead of through the socket.
//!
//! A frame is `[u32 length][u8 kind][body]`, little-endian, where `length`
//! counts the kind byte and the body. See `README.md` for the kinds.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Version of this protocol; both sides must agree in the handshake.
pub(crate) const VERSION: u32 = 1;
/// Payloads at least this long travel in a memfd.
pub(crate) const SHM_THRESHOLD: usize = 128 * 1024;
/// Frames longer than this are garbage, not data: a longer payload travels
/// in a memfd, so no frame carries more than the threshold plus its header.
pub(crate) const MAX_FRAME: usize = SHM_THRESHOLD + 64;

/// Parent → worker: run a task (`seq`, `entry`, `chunk`, payload).
pub(crate) const RUN: u8 = 1;
/// Parent → worker: run a task whose payload is in the attached memfd.
pub(crate) const RUN_SHM: u8 = 2;
/// Parent → worker: exit after the tasks already sent.
pub(crate) const STOP: u8 = 3;
/// Worker → parent: first frame (`version`, `fingerprint`, `pid`).
pub(crate) const HELLO: u8 = 10;
/// Worker → parent: a task's output (`seq`, payload).
pub(crate) const DONE: u8 = 11;
/// Worker → parent: a task's output in the attached memfd.
pub(crate) const DONE_SHM: u8 = 12;
/// Worker → parent: the worker cannot go on (message).
pub(crate) const FATAL: u8 = 13;

/// A malformed frame: the peer is not speaking this protocol.
#[derive(Debug)]
pub(crate) struct Garbage(pub(crate) String);

/// A shared-memory buffer (memfd) holding one payload.
pub(crate) struct ShmPayload {
    fd: OwnedFd,
    len: usize,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl ShmPayload {
    /// Copies `data` into a new memfd.
    pub(crate) fn create(data: &[u8]) -> io::Result<ShmPayload> {
        // SAFETY: a valid NUL-terminated name and flags; the fd is owned below.
        let raw = cvt(unsafe {
            libc::memfd_create(
                c"crew-payload".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        })?;
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), data.len() as libc::off_t) })?;
        let map = Mapping::new(&fd, data.len(), true)?;
        // SAFETY: the mapping is `data.len()` writable bytes that nobody else
        // can see yet (the fd has not been sent).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), map.ptr, data.len()) };
        drop(map);
        // The reader maps it: it must never shrink under that mapping.
        // SAFETY: plain fcntl on our fd.
        cvt(unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            )
        })?;
        Ok(ShmPayload {
            fd,
            len: data.len(),
        })
    }

    /// Maps a received memfd of `len` bytes and calls `f` with its contents.
    ///
    /// The fd must be sealed against shrinking and at least `len` bytes long:
    /// reading a mapping past the end of its file raises `SIGBUS`, so a
    /// garbled length (or a peer that truncates) must fail here instead.
    pub(crate) fn read<T>(fd: &OwnedFd, len: usize, f: impl FnOnce(&[u8]) -> T) -> io::Result<T> {
        // SAFETY: plain fcntl on an fd we own.
        let seals = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })?;
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a payload memfd is not sealed against shrinking",
            ));
        }
        // SAFETY: `fstat` fills the zeroed struct for our fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        if len as u64 > st.st_size as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "payload length {len} exceeds its memfd ({} bytes)",
                    st.st_size
                ),
            ));
        }
        let map = Mapping::new(fd, len, false)?;
        // SAFETY: the mapping holds `len` readable bytes; the sender wrote
        // them before sending the fd and never touches them again.
        let bytes = unsafe { std::slice::from_raw_parts(map.ptr, len) };
        Ok(f(bytes))
    }
}

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, write: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping `len` bytes of a memfd at least that long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                // Populate up front: one pass in the kernel instead of a page
                // fault per 4 KiB (2,560 of them for 10 MB).
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what `new` mapped.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Frames waiting to be written, with the memfds that go with them.
#[derive(Default)]
pub(crate) struct Outbox {
    buf: Vec<u8>,
    sent: usize,
    fds: VecDeque<(usize, OwnedFd)>,
}

impl Outbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.sent == self.buf.len()
    }

    fn begin(&mut self, kind: u8) -> usize {
        if self.sent == self.buf.len() && self.fds.is_empty() {
            self.buf.clear();
            self.sent = 0;
        }
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Queues a frame of `kind` whose body is `head` then `payload`; a large
    /// payload goes into a memfd and the frame becomes `shm_kind` with the
    /// payload's length in place of the payload.
    pub(crate) fn push(
        &mut self,
        kind: u8,
        shm_kind: u8,
        head: &[u8],
        payload: &[u8],
    ) -> io::Result<()> {
        if payload.len() >= SHM_THRESHOLD {
            let shm = ShmPayload::create(payload)?;
            let at = self.begin(shm_kind);
            self.buf.extend_from_slice(head);
            self.buf.extend_from_slice(&(shm.len as u64).to_le_bytes());
            self.end(at);
            self.fds.push_back((at, shm.fd));
        } else {
            let at = self.begin(kind);
            self.buf.extend_from_slice(head);
            self.buf.extend_from_slice(payload);
            self.end(at);
        }
        Ok(())
    }

    /// Writes as much as the socket takes. `Ok(true)` when everything went.
    /// On a blocking socket, returns only when everything went.
    pub(crate) fn flush(&mut self, sock: RawFd) -> io::Result<bool> {
        while self.sent < self.buf.len() {
            let (end, fd) = match self.fds.front() {
                Some((at, fd)) if *at == self.sent => {
                    let next = self.fds.get(1).map_or(self.buf.len(), |(a, _)| *a);
                    (next, Some(fd.as_raw_fd()))
                }
                Some((at, _)) => (*at, None),
                None => (self.buf.len(), None),
            };
            match send(sock, &self.buf[self.sent..end], fd) {
                Ok(n) => {
                    if fd.is_some() {
                        // The fd went with the first byte; we may close ours.
                        self.fds.pop_front();
                    }
                    self.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Ok(true)
    }
}

pub(crate) fn send(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr is a valid "no address, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut control = [0u64; 4];
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: `control` is large enough and aligned for one cmsghdr
        // carrying one fd (space <= 32 bytes).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One frame read from the wire.
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) body: Vec<u8>,
    /// The memfd of a `*_SHM` frame.
    pub(crate) fd: Option<OwnedFd>,
}

/// Bytes and fds read from the wire, cut into frames.
pub(crate) struct Inbox {
    buf: Vec<u8>,
    start: usize,
    fds: VecDeque<OwnedFd>,
}

/// The outcome of one read.
pub(crate) enum Read {
    /// Some bytes arrived.
    Data,
    /// Nothing to read now (non-blocking socket).
    WouldBlock,
    /// The peer closed its end.
    Eof,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            fds: VecDeque::new(),
        }
    }

    /// True if a partial frame is buffered (an EOF now means truncation).
    pub(crate) fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Reads once from `sock`, blocking if the socket blocks.
    pub(crate) fn read(&mut self, sock: RawFd) -> io::Result<Read> {
        self.read_with(sock, 0)
    }

    /// Reads once from `sock` without blocking.
    pub(crate) fn read_nonblocking(&mut self, sock: RawFd) -> io::Result<Read> {
        self.read_with(sock, libc::MSG_DONTWAIT)
    }

    fn read_with(&mut self, sock: RawFd, flags: libc::c_int) -> io::Result<Read> {
        if self.start > 0 && (self.start == self.buf.len() || self.start > self.buf.capacity() / 2)
        {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let spare = self.buf.capacity() - self.buf.len();
        let mut iov = libc::iovec {
            // SAFETY: pointing at the spare capacity we reserved.
            iov_base: unsafe { self.buf.as_mut_ptr().add(self.buf.len()) }.cast(),
            iov_len: spare,
        };
        let mut control = [0u64; 16];
        // SAFETY: zeroed msghdr, then filled with live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        loop {
            // SAFETY: `msg` describes buffers valid for the call.
            let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(Read::WouldBlock),
                    io::ErrorKind::ConnectionReset => return Ok(Read::Eof),
                    _ => return Err(e),
                }
            }
            // SAFETY: walking the control messages the kernel just wrote.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET
                        && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                    {
                        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                        let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize)
                            / std::mem::size_of::<RawFd>();
                        for i in 0..count {
                            let fd = std::ptr::read_unaligned(data.add(i));
                            self.fds.push_back(OwnedFd::from_raw_fd(fd));
                        }
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            if n == 0 {
                return Ok(Read::Eof);
            }
            // SAFETY: the kernel initialised `n` bytes of the spare capacity.
            unsafe { self.buf.set_len(self.buf.len() + n as usize) };
            return Ok(Read::Data);
        }
    }

    /// The next complete frame, if one is buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, Garbage> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(Garbage(format!(
                "frame length {len} is out of range (1..={MAX_FRAME})"
            )));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let kind = avail[4];
        let body = avail[5..4 + len].to_vec();
        self.start += 4 + len;
        let fd = match kind {
            RUN | STOP | HELLO | DONE | FATAL => None,
            RUN_SHM | DONE_SHM => match self.fds.pop_front() {
                Some(fd) => Some(fd),
                None => {
                    return Err(Garbage(format!(
                        "frame of kind {kind} arrived without its memfd"
                    )));
                }
            },
            other => return Err(Garbage(format!("unknown frame kind {other}"))),
        };
        Ok(Some(Frame { kind, body, fd }))
    }
}

/// Little-endian field reader over a frame body.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Fields<'a> {
        Fields { rest: body }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Garbage> {
        if self.rest.len() < n {
            return Err(Garbage(format!(
                "frame body too short: needed {n} more bytes, had {}",
                self.rest.len()
            )));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Garbage> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Garbage> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Garbage> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// Reads a frame's payload: inline, or from its memfd (`len` in the body).
pub(crate) fn with_payload<T>(
    frame: &Frame,
    fields: Fields<'_>,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, Garbage> {
    match &frame.fd {
        None => Ok(f(fields.rest())),
        Some(fd) => {
            let mut fields = fields;
            let len = fields.u64()? as usize;
            if len > 1 << 40 {
                return Err(Garbage(format!(
                    "memfd payload length {len} is out of range"
                )));
            }
            ShmPayload::read(fd, len, f).map_err(|e| Garbage(format!("cannot map a payload: {e}")))
        }
    }
}
