//! The fuzzing entries of the wire: the frame reader (bytes and memfds off a
//! socket, cut into frames, their headers and payloads read as the
//! supervisor and the worker read them) and the result decoder (a worker's
//! encoded outcome turned into a call's or a chunk's result). Whatever the
//! bytes, the parent must neither panic nor crash nor hang, and every item
//! must end with exactly one outcome.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crew_core::engine::{Chunk, ChunkSink, MapOptions, map_blocking};
use crew_core::{Backend, Call, Error, Future, Promise, Result, Runs, Unary};

use crate::supervisor::Completion;
use crate::wire::{self, Fields, Inbox, Read};
use crate::{CallCompletion, ChunkCompletion};

/// Reads the fuzzer's bytes front to back; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// A memfd holding a region's header then `bytes`, sealed as a worker's
/// payload is.
fn memfd(bytes: &[u8]) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};
    let fd = memfd_create(
        c"crew-fuzz",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd_create");
    let mut file = std::fs::File::from(fd.try_clone().expect("dup a memfd"));
    file.write_all(&crate::shm::blank_header())
        .expect("write a memfd");
    file.write_all(bytes).expect("write a memfd");
    // Sealed as the workers' payloads are, so the length check is what
    // stands between a garbled length and a SIGBUS.
    fcntl_add_seals(&fd, SealFlags::SHRINK).expect("seal a memfd");
    fd
}

/// Sends `data` (with `fds`, in the first message) over a socket pair and
/// reads it back through an [`Inbox`], handling every frame as the
/// supervisor (results) and the worker (tasks) would.
pub fn frame_reader(data: &[u8]) {
    let mut input = Input(data);
    let fds: Vec<OwnedFd> = (0..input.u8() % 3)
        .map(|_| {
            let len = usize::from(input.u8());
            memfd(input.bytes(len))
        })
        .collect();
    let stream = input.0;
    let (tx, rx) = UnixStream::pair().expect("a socket pair");
    rx.set_nonblocking(true).expect("non-blocking");
    tx.set_nonblocking(true).expect("non-blocking");
    let mut sent = 0;
    let mut first = true;
    let mut inbox = Inbox::new();
    let mut frames = 0usize;
    loop {
        // Send what the socket takes, then read what arrived.
        while sent < stream.len() || (first && !fds.is_empty()) {
            let fd = if first {
                fds.first().map(AsFd::as_fd)
            } else {
                None
            };
            let chunk = &stream[sent..];
            let chunk = if chunk.is_empty() { &[0u8][..] } else { chunk };
            match wire::send(tx.as_fd(), chunk, fd) {
                Ok(n) => {
                    if first {
                        // The remaining memfds ride along with a byte each.
                        for extra in fds.iter().skip(1) {
                            let _ = wire::send(tx.as_fd(), &[0], Some(extra.as_fd()));
                        }
                    }
                    first = false;
                    sent += n.min(stream.len() - sent);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        let done_sending = sent >= stream.len() && (!first || fds.is_empty());
        match inbox.read_nonblocking(rx.as_fd()) {
            Ok(Read::Data) => {}
            Ok(Read::WouldBlock) if done_sending => break,
            Ok(Read::WouldBlock) => {}
            Ok(Read::Eof) | Err(_) => break,
        }
        loop {
            match inbox.next_frame() {
                Ok(Some(frame)) => {
                    frames += 1;
                    handle(&frame);
                }
                Ok(None) => break,
                // The supervisor kills a worker that sends garbage; the
                // reader's part ends here.
                Err(wire::Garbage(_)) => return,
            }
        }
    }
    assert!(
        frames * 5 <= stream.len() + fds.len(),
        "a frame takes 5 bytes at least"
    );
}

/// Reads one frame as its receiver does.
fn handle(frame: &wire::Frame) {
    let mut f = Fields::new(&frame.body);
    match frame.kind {
        wire::HELLO => {
            let _ = (f.u32(), f.u64());
        }
        wire::DONE | wire::DONE_SHM => {
            if f.u64().is_ok() {
                let _ = wire::with_payload(frame, f, wire_decoder);
            }
        }
        wire::RUN | wire::RUN_SHM => {
            if (f.u64(), f.u64(), f.u8()).2.is_ok() {
                let _ = wire::with_payload(frame, f, <[u8]>::len);
            }
        }
        _ => {
            let _ = String::from_utf8_lossy(f.rest());
        }
    }
}

/// Decodes `data` as a worker's answer: the first byte picks a call (of
/// one of three result types) or a chunk (its length, result type, and
/// whether a worker died in it first); the rest is the answer.
pub fn wire_decoder(data: &[u8]) {
    let mut input = Input(data);
    match input.u8() % 5 {
        0 => call::<u64>(input.0),
        1 => call::<String>(input.0),
        2 => call::<(u8, Vec<u16>, Option<String>)>(input.0),
        3 => chunk::<u32>(&mut input),
        _ => chunk::<String>(&mut input),
    }
}

fn call<R: Send + serde::de::DeserializeOwned + 'static>(output: &[u8]) {
    let (promise, future) = Future::<R>::pending();
    let mut c = CallCompletion {
        promise: Some(promise),
        attempts: 0,
        number: None,
        name: Some("fuzz"),
        spare: None,
    };
    assert!(c.start());
    c.finish(output, 0, None);
    // Any outcome will do (a worker may well report a timeout); none is
    // the failure.
    assert!(
        future.wait_timeout(Duration::from_secs(5)),
        "the call got no outcome"
    );
    let _ = future.result();
}

fn chunk<R: Send + Default + serde::de::DeserializeOwned + 'static>(input: &mut Input<'_>) {
    let len = usize::from(input.u8() % 9) + 1;
    let lost = input.u8();
    let item = usize::from(input.u8()) % (len + 1);
    let direct = Direct {
        output: input.0.to_vec(),
        lost: (lost & 1 != 0).then_some((item, lost & 2 != 0)),
    };
    let opts = MapOptions {
        chunksize: Some(len),
        ..MapOptions::default()
    };
    // Never called: the fuzzer's bytes stand for what a worker answered.
    let task = Unary(|_: u32| R::default());
    let outcome = map_blocking::<_, _, u32, R>(&direct, task, 0..len as u32, &opts);
    if let Err(e) = outcome {
        assert_eq!(e.len(), len, "one outcome per item");
    }
}

/// A back-end that hands each chunk straight to a [`ChunkCompletion`] fed
/// with the fuzzer's answer, on the calling thread.
struct Direct {
    output: Vec<u8>,
    /// A worker died at this item (retried or not) before the answer came.
    lost: Option<(usize, bool)>,
}

impl Backend for Direct {
    type Job<'s> = Box<dyn FnOnce() + Send + 's>;

    fn workers(&self) -> usize {
        1
    }

    unsafe fn execute<'s>(&self, job: Self::Job<'s>) -> std::result::Result<(), Self::Job<'s>> {
        job();
        Ok(())
    }

    fn close(&self) {}

    fn is_closed(&self) -> bool {
        false
    }

    fn cancel_pending(&self) -> usize {
        0
    }

    fn terminate(&self) {}

    fn join(&self, _deadline: Option<Instant>) -> bool {
        true
    }
}

impl<'s, T, R> Runs<'s, T, u32, R> for Direct
where
    T: Call<u32, R> + Send + Sync + 's,
    R: Send + serde::de::DeserializeOwned + 's,
{
    fn call_job(&self, task: T, input: u32, promise: Promise<Result<R>>) -> Self::Job<'s> {
        Box::new(move || promise.complete(Ok(task.call(input))))
    }

    fn chunk_job(&self, _task: Arc<T>, chunk: Chunk<u32>, sink: ChunkSink<'s, R>) -> Self::Job<'s> {
        let output = self.output.clone();
        let lost = self.lost;
        Box::new(move || {
            let items: Vec<u32> = chunk.into_iter().collect();
            let mut c = ChunkCompletion::<u32, R> {
                sink: Some(sink),
                len: items.len(),
                partial: None,
                started: Instant::now(),
                name: "fuzz",
                _input: std::marker::PhantomData,
            };
            assert!(c.start());
            if let Some((item, retry)) = lost {
                let mut payload = crate::bulk::to_payload(&items).expect("u32s encode");
                let e = Error::worker_lost("killed by the fuzzer");
                if !c.lost(&mut payload, item, e, retry) {
                    return;
                }
            }
            c.finish(&output, 0, None);
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// Random inputs (xorshift, fixed seed) for `CREW_FUZZ_SECONDS`
    /// (default 3 s) or `cases` cases, whichever ends first.
    fn stable_run(seed: u64, cases: u32, mut target: impl FnMut(&[u8])) {
        let budget = std::env::var("CREW_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        let end = Instant::now() + Duration::from_secs(budget);
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = Vec::new();
        let mut done = 0;
        while done < cases && Instant::now() < end {
            buf.clear();
            let len = (next() % 300) as usize;
            buf.extend((0..len).map(|_| next() as u8));
            target(&buf);
            done += 1;
        }
        assert!(done > 0);
    }

    #[test]
    fn fuzz_wire_decoder_stable() {
        stable_run(0x2545_f491_4f6c_dd1d, 500_000, wire_decoder);
    }

    #[test]
    fn fuzz_frame_reader_stable() {
        stable_run(0x9e37_79b9_7f4a_7c15, 200_000, |data| {
            // Mostly well-formed frames with garbled bodies: a length that
            // fits, a known kind, then the random rest.
            let mut framed = vec![data.first().copied().unwrap_or(0) % 3];
            let body = data.get(1..).unwrap_or(&[]);
            let kinds = [
                wire::RUN,
                wire::RUN_SHM,
                wire::STOP,
                wire::HELLO,
                wire::DONE,
                wire::DONE_SHM,
                wire::FATAL,
            ];
            let kind = kinds[body.len() % kinds.len()];
            framed.extend_from_slice(&(body.len() as u32 + 1).to_le_bytes());
            framed.push(kind);
            framed.extend_from_slice(body);
            frame_reader(&framed);
            frame_reader(data);
        });
    }

    /// Regression inputs, one per bug (see the README's tools section).
    #[test]
    fn fuzz_wire_findings() {
        for case in DECODER_FINDINGS {
            wire_decoder(case);
        }
        for case in READER_FINDINGS {
            frame_reader(case);
        }
    }

    // In the payload format of `bulk.rs` (a `u32` takes 4 bytes).
    const DECODER_FINDINGS: &[&[u8]] = &[
        // A chunk of 1 whose answer fails item 5: the counts added up, so
        // the outcome reached the map, which panicked looking for a value.
        &[3, 0, 0, 0, 0, 0, 1, 5, 0, 0, 0, 1, 0, 0, 0],
        // A chunk of 2 failing item 0 twice: `ChunkOut::new` asserted in the
        // supervisor's thread.
        &[
            3, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
        ],
    ];
    const READER_FINDINGS: &[&[u8]] = &[
        // A 4-byte memfd with a DONE_SHM frame claiming 1 MiB: mapping
        // past the end of the file would raise SIGBUS on the first read.
        &[
            1, 4, 1, 2, 3, 4, 17, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0,
        ],
    ];
}
