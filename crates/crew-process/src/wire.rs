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
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;

use crate::shm::{self, Lease};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

/// Version of this protocol; both sides must agree in the handshake.
pub(crate) const VERSION: u32 = 2;
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

/// A task's input or output as it waits to be sent: bytes, or a region of
/// shared memory it was encoded into.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A short encoding, kept in the job itself: a task of a few small
    /// arguments allocates nothing for them.
    Small(SmallBytes),
    /// Encoded bytes (copied into a region when sent, if large).
    Inline(Vec<u8>),
    /// Encoded into a region (see `shm`); boxed, so that a payload is no
    /// larger than a `Vec`.
    Shm(Box<Lease>),
}

impl Default for Payload {
    fn default() -> Payload {
        Payload::Inline(Vec::new())
    }
}

/// Bytes of a [`Payload::Small`].
pub(crate) const SMALL_PAYLOAD: usize = 30;

/// Up to [`SMALL_PAYLOAD`] bytes, inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SmallBytes {
    len: u8,
    bytes: [u8; SMALL_PAYLOAD],
}

impl SmallBytes {
    /// `bytes` inline, if they fit.
    pub(crate) fn new(bytes: &[u8]) -> Option<SmallBytes> {
        let mut small = SmallBytes {
            len: u8::try_from(bytes.len()).ok()?,
            bytes: [0; SMALL_PAYLOAD],
        };
        small.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(small)
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl Payload {
    /// The encoded bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Payload::Small(s) => s.as_slice(),
            Payload::Inline(v) => v,
            Payload::Shm(lease) => lease.bytes(),
        }
    }

    /// A view of it to send.
    pub(crate) fn as_ref(&self) -> PayloadRef<'_> {
        match self {
            Payload::Small(s) => PayloadRef::Bytes(s.as_slice()),
            Payload::Inline(v) => PayloadRef::Bytes(v),
            Payload::Shm(lease) => PayloadRef::Shm(lease),
        }
    }
}

/// A payload to send, borrowed.
#[derive(Clone, Copy)]
pub(crate) enum PayloadRef<'a> {
    /// Bytes (copied into a region when sent, if large).
    Bytes(&'a [u8]),
    /// A region holding the payload.
    Shm(&'a Lease),
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
        self.push_payload(kind, shm_kind, head, PayloadRef::Bytes(payload))
    }

    /// As [`push`](Outbox::push); a payload already in a region goes as is
    /// (the region is marked sent: its reader may read it from now on).
    pub(crate) fn push_payload(
        &mut self,
        kind: u8,
        shm_kind: u8,
        head: &[u8],
        payload: PayloadRef<'_>,
    ) -> io::Result<()> {
        let shm = match payload {
            PayloadRef::Shm(lease) => Some((lease.send()?, lease.len())),
            PayloadRef::Bytes(bytes) if bytes.len() >= SHM_THRESHOLD => {
                // The region goes back to the pool at once; it is written
                // again only after the reader says it finished reading.
                let lease = shm::lease_with(bytes)?;
                Some((lease.send()?, bytes.len()))
            }
            PayloadRef::Bytes(_) => None,
        };
        if let Some((fd, len)) = shm {
            let at = self.begin(shm_kind);
            self.buf.extend_from_slice(head);
            self.buf.extend_from_slice(&(len as u64).to_le_bytes());
            self.end(at);
            self.fds.push_back((at, fd));
        } else {
            let PayloadRef::Bytes(payload) = payload else {
                unreachable!("a region always goes as one")
            };
            let at = self.begin(kind);
            self.buf.extend_from_slice(head);
            self.buf.extend_from_slice(payload);
            self.end(at);
        }
        Ok(())
    }

    /// Writes as much as the socket takes. `Ok(true)` when everything went.
    /// On a blocking socket, returns only when everything went.
    pub(crate) fn flush(&mut self, sock: BorrowedFd<'_>) -> io::Result<bool> {
        while self.sent < self.buf.len() {
            let (end, fd) = match self.fds.front() {
                Some((at, fd)) if *at == self.sent => {
                    let next = self.fds.get(1).map_or(self.buf.len(), |(a, _)| *a);
                    (next, Some(fd.as_fd()))
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

pub(crate) fn send(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let iov = [io::IoSlice::new(data)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds: [BorrowedFd<'_>; 1];
    if let Some(fd) = fd {
        fds = [fd];
        let fits = control.push(SendAncillaryMessage::ScmRights(&fds));
        debug_assert!(fits, "the control buffer holds one fd");
    }
    Ok(sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL)?)
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
    /// Initialised storage; the unread bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

/// The most fds one read takes (a frame carries at most one; several
/// frames may arrive in one read).
const FDS_PER_READ: usize = 28;

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
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            fds: VecDeque::new(),
        }
    }

    /// True if a partial frame is buffered (an EOF now means truncation).
    pub(crate) fn has_partial(&self) -> bool {
        self.start < self.end
    }

    /// Reads once from `sock`, blocking if the socket blocks.
    pub(crate) fn read(&mut self, sock: BorrowedFd<'_>) -> io::Result<Read> {
        self.read_with(sock, RecvFlags::empty())
    }

    /// Reads once from `sock` without blocking.
    pub(crate) fn read_nonblocking(&mut self, sock: BorrowedFd<'_>) -> io::Result<Read> {
        self.read_with(sock, RecvFlags::DONTWAIT)
    }

    fn read_with(&mut self, sock: BorrowedFd<'_>, flags: RecvFlags) -> io::Result<Read> {
        if self.start > 0 && (self.start == self.end || self.start > self.buf.len() / 2) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < 16 * 1024 {
            // Zeroed once as it grows: reads then fill initialised bytes.
            self.buf.resize(self.buf.len() + 64 * 1024, 0);
        }
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_READ))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        loop {
            let mut iov = [io::IoSliceMut::new(&mut self.buf[self.end..])];
            let received = match recvmsg(
                sock,
                &mut iov,
                &mut control,
                RecvFlags::CMSG_CLOEXEC | flags,
            ) {
                Ok(r) => r,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(Read::WouldBlock),
                Err(Errno::CONNRESET) => return Ok(Read::Eof),
                Err(e) => return Err(e.into()),
            };
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    self.fds.extend(fds);
                }
            }
            if received.bytes == 0 {
                return Ok(Read::Eof);
            }
            self.end += received.bytes;
            return Ok(Read::Data);
        }
    }

    /// The next complete frame, if one is buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, Garbage> {
        Ok(self.next_frame_in_place()?.map(|f| Frame {
            kind: f.kind,
            body: f.body.to_vec(),
            fd: f.fd,
        }))
    }

    /// The next complete frame, its body read where it lies in the buffer
    /// (no copy), if one is buffered.
    pub(crate) fn next_frame_in_place(&mut self) -> Result<Option<FrameRef<'_>>, Garbage> {
        let avail = &self.buf[self.start..self.end];
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
        let body = self.start + 5..self.start + 4 + len;
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
        Ok(Some(FrameRef {
            kind,
            body: &self.buf[body],
            fd,
        }))
    }
}

/// One frame read from the wire, its body still in the reader's buffer.
pub(crate) struct FrameRef<'a> {
    pub(crate) kind: u8,
    pub(crate) body: &'a [u8],
    /// The memfd of a `*_SHM` frame.
    pub(crate) fd: Option<OwnedFd>,
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
    read_payload(frame.fd.as_ref(), fields, f)
}

/// Reads a payload: inline (the rest of `fields`), or from the region `fd`
/// (its length the next field).
pub(crate) fn read_payload<T>(
    fd: Option<&OwnedFd>,
    fields: Fields<'_>,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, Garbage> {
    match fd {
        None => Ok(f(fields.rest())),
        Some(fd) => {
            let mut fields = fields;
            let len = fields.u64()? as usize;
            if len > 1 << 40 {
                return Err(Garbage(format!(
                    "memfd payload length {len} is out of range"
                )));
            }
            shm::read(fd, len, f).map_err(|e| Garbage(format!("cannot map a payload: {e}")))
        }
    }
}
