//! Process tasks run on behalf of another process of the same build,
//! somewhere else: what a cluster back-end needs to name a task, carry its
//! input as bytes, run it in a node's own worker processes, and decode the
//! outcome back in the caller, without this crate knowing the transport.
//!
//! A task crosses as the offset of its trampoline (as between a pool and
//! its workers, see `README.md`), so only a process running the very same
//! executable may run it: compare [`fingerprint`]s before calling
//! [`Processes::run_raw`]. A chunk's items cross one by one
//! ([`encode_items`]), so a node can re-run part of a chunk after a worker
//! died without knowing the item type: the payload format (see `bulk.rs`)
//! encodes a `Vec<X>` as its length followed by the items, so any subset
//! re-assembles into a valid payload.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crew_core::{Call, Error, Result, Timeline};

use crate::Processes;
use crate::entry::{
    CallWire, ChunkWire, WireError, assert_non_capturing, build_fingerprint, call_entry,
    chunk_entry, offset_of,
};
use crate::supervisor::{Completion, JobExtra, JobLimits, ProcJob};
use crate::wire::Payload;

/// This executable's layout fingerprint: two processes may exchange task
/// offsets only if theirs are equal.
///
/// # Examples
///
/// ```
/// assert_eq!(crew_process::remote::fingerprint(), crew_process::remote::fingerprint());
/// ```
pub fn fingerprint() -> u64 {
    build_fingerprint()
}

/// The wire name of the call `task(input)`; the task itself does not cross
/// (it is a zero-sized type, re-created where it runs).
///
/// # Examples
///
/// ```
/// use crew_core::Unary;
/// fn double(x: u8) -> u8 { x * 2 }
/// let name = crew_process::remote::call_task::<_, u8, u8>(&Unary(double));
/// assert_ne!(name, crew_process::remote::chunk_task::<_, u8, u8>(&Unary(double)));
/// ```
pub fn call_task<T, X, R>(task: &T) -> u64
where
    T: Call<X, R> + crate::NonCapturing,
    X: DeserializeOwned,
    R: Serialize,
{
    const { assert_non_capturing::<T>() };
    let _ = task;
    offset_of(call_entry::<T, X, R>)
}

/// The wire name of a chunk of calls of `task` (see [`encode_items`]).
///
/// # Examples
///
/// ```
/// use crew_core::Unary;
/// let name = crew_process::remote::chunk_task::<_, u8, u8>(&Unary(|x: u8| x + 1));
/// # let _ = name;
/// ```
pub fn chunk_task<T, X, R>(task: &T) -> u64
where
    T: Call<X, R> + crate::NonCapturing,
    X: DeserializeOwned,
    R: Serialize,
{
    const { assert_non_capturing::<T>() };
    let _ = task;
    offset_of(chunk_entry::<T, X, R>)
}

/// Encodes one value as tasks read it.
///
/// # Examples
///
/// ```
/// assert_eq!(crew_process::remote::encode(&7u8)?, [7]);
/// # Ok::<(), crew_core::Error>(())
/// ```
///
/// # Errors
///
/// `is_protocol` if the value cannot be serialized.
pub fn encode<V: Serialize + ?Sized>(value: &V) -> Result<Vec<u8>> {
    crate::bulk::to_vec(value)
        .map_err(|e| Error::protocol(format!("cannot encode the task's arguments: {e}")))
}

/// Decodes one value [`encode`] wrote.
///
/// # Examples
///
/// ```
/// use crew_process::remote::{decode, encode};
/// let v: (u32, String) = decode(&encode(&(5u32, "x".to_string()))?)?;
/// assert_eq!(v, (5, "x".to_string()));
/// # Ok::<(), crew_core::Error>(())
/// ```
///
/// # Errors
///
/// `is_protocol` if the bytes are not an encoding of a `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    crate::bulk::from_slice(bytes).map_err(|e| Error::protocol(format!("cannot decode: {e}")))
}

/// Encodes a chunk's items one by one.
///
/// # Examples
///
/// ```
/// assert_eq!(crew_process::remote::encode_items(&[1u8, 2])?, [vec![1], vec![2]]);
/// # Ok::<(), crew_core::Error>(())
/// ```
///
/// # Errors
///
/// `is_protocol` if an item cannot be serialized.
pub fn encode_items<X: Serialize>(items: &[X]) -> Result<Vec<Vec<u8>>> {
    items.iter().map(encode).collect()
}

/// Joins encoded items into the payload of a chunk.
fn chunk_payload(items: &[Vec<u8>], positions: &[u32]) -> Vec<u8> {
    let len: usize = positions.iter().map(|&p| items[p as usize].len()).sum();
    let mut out = Vec::with_capacity(len + 10);
    crate::bulk::put_len(&mut out, positions.len());
    for &p in positions {
        out.extend_from_slice(&items[p as usize]);
    }
    out
}

/// An error as it crosses between machines.
///
/// # Examples
///
/// ```
/// use crew_process::remote::ErrorWire;
/// let e = ErrorWire::from(&crew_core::Error::timeout()).into_error();
/// assert!(e.is_timeout());
/// ```
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ErrorWire(WireError);

impl From<&Error> for ErrorWire {
    fn from(e: &Error) -> ErrorWire {
        ErrorWire(WireError::from(e))
    }
}

impl ErrorWire {
    /// The error back.
    pub fn into_error(self) -> Error {
        self.0.into_error()
    }
}

/// What a worker produced for part of a chunk: the chunk positions of the
/// items it ran, and its encoded output.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Segment {
    /// Positions, in the chunk, of the items this output covers, in order.
    pub positions: Vec<u32>,
    /// The worker's output (decoded by [`decode_chunk`]).
    pub output: Vec<u8>,
    /// The index of the worker that ran them, in its pool.
    pub worker: u32,
}

/// A call of a task by its registered name (`#[crew::task]`), as it
/// travels to whoever runs it: the name, the fingerprint of the signature
/// the caller expects, that signature in words, and the encoded arguments.
/// Any build that registers the name with the same fingerprint may run it.
///
/// # Examples
///
/// ```
/// use crew_process::remote::NamedCall;
/// let c = NamedCall { name: "m::add".into(), fingerprint: 7, signature: "(u8,) -> u8".into(), args: vec![1] };
/// let back: NamedCall = crew_process::remote::decode(&crew_process::remote::encode(&c)?)?;
/// assert_eq!(back.name, "m::add");
/// # Ok::<(), crew_core::Error>(())
/// ```
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NamedCall {
    /// The registered name.
    pub name: String,
    /// The fingerprint of the signature (argument and result types).
    pub fingerprint: u64,
    /// The signature in words, `(args) -> result`, for people.
    pub signature: String,
    /// The arguments, encoded.
    pub args: Vec<u8>,
}

/// A value already encoded: serializes as exactly its bytes, so a task that
/// returns `Verbatim(encode(&r))` produces the same output as one returning
/// `r` (a tuple's bytes are written with no length). Lets a worker run a
/// named task whose result type it knows only as bytes.
///
/// # Examples
///
/// ```
/// use crew_process::remote::{Verbatim, encode};
/// let r = (5u32, String::from("x"));
/// assert_eq!(encode(&Verbatim(encode(&r)?))?, encode(&r)?);
/// let big = vec![7u8; 200_000];
/// assert_eq!(encode(&Verbatim(encode(&big)?))?, encode(&big)?);
/// # Ok::<(), crew_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verbatim(pub Vec<u8>);

impl Serialize for Verbatim {
    /// In crew's payload format, the bytes as they are, in one copy (the
    /// format's `VERBATIM` newtype); in any other format, a newtype of
    /// bytes.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        struct Raw<'a>(&'a [u8]);
        impl Serialize for Raw<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        s.serialize_newtype_struct(crate::bulk::VERBATIM, &Raw(&self.0))
    }
}

/// A task's input as bytes.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum RawInput {
    /// One call: the encoded arguments.
    Call(Vec<u8>),
    /// A chunk: each item encoded alone (see [`encode_items`]).
    Chunk(Vec<Vec<u8>>),
}

/// How a raw job ended, ready to travel back to its caller.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum RawOutcome {
    /// A call ran.
    Call {
        /// Its output (decoded by [`decode_call`]).
        output: Vec<u8>,
        /// The index of the worker that ran it, in its pool.
        worker: u32,
    },
    /// A chunk ran: the outputs of the workers that ran its items, and the
    /// items that failed because their worker died (or timed out) under them.
    Chunk {
        /// Outputs, each covering some positions.
        segments: Vec<Segment>,
        /// Items lost with their worker, by position.
        lost: Vec<(u32, ErrorWire)>,
    },
    /// The whole job failed (every item of a chunk with it).
    Failed(ErrorWire),
    /// The job was cancelled (its worker killed if it was running).
    Cancelled,
}

/// A job for [`Processes::run_raw`].
pub struct RawJob {
    /// The task's wire name ([`call_task`] or [`chunk_task`]).
    pub entry: u64,
    /// Its input.
    pub input: RawInput,
    /// Kill the worker when one call (or chunk item) runs longer.
    pub timeout: Option<Duration>,
    /// Re-run a call (or chunk item) whose worker died or timed out up to
    /// this many times.
    pub retries: u32,
    /// Wait before the first retry, doubled for each next one, plus up to
    /// half again at random.
    pub backoff: Duration,
    /// Record when each call ran (`CLOCK_MONOTONIC` ns, in the output).
    pub spans: bool,
    /// Called when a worker starts the job.
    pub on_start: Option<Box<dyn FnOnce() + Send>>,
    /// Called once with how the job ended.
    pub on_done: Box<dyn FnOnce(RawOutcome) + Send>,
}

impl std::fmt::Debug for RawJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawJob")
            .field("entry", &self.entry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct HandleState {
    cancelled: bool,
    hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// Cancels a job given to [`Processes::run_raw`].
#[derive(Clone, Default)]
pub struct RawHandle {
    state: Arc<Mutex<HandleState>>,
}

impl std::fmt::Debug for RawHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawHandle").finish_non_exhaustive()
    }
}

impl RawHandle {
    /// Cancels the job: a queued job never starts; a running one has its
    /// worker killed. Either way it ends as [`RawOutcome::Cancelled`]
    /// (unless it finished first).
    pub fn cancel(&self) {
        let hook = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.cancelled = true;
            s.hook.clone()
        };
        if let Some(hook) = hook {
            hook();
        }
    }
}

struct RawCompletion {
    handle: RawHandle,
    on_start: Option<Box<dyn FnOnce() + Send>>,
    on_done: Option<Box<dyn FnOnce(RawOutcome) + Send>>,
    /// For a chunk: every item, and the positions the current payload holds.
    chunk: Option<(Vec<Vec<u8>>, Vec<u32>)>,
    lost: Vec<(u32, ErrorWire)>,
}

impl RawCompletion {
    fn done(&mut self, outcome: RawOutcome) {
        if let Some(f) = self.on_done.take() {
            f(outcome);
        }
    }
}

impl Drop for RawCompletion {
    fn drop(&mut self) {
        self.done(RawOutcome::Cancelled);
    }
}

impl Completion for RawCompletion {
    fn start(&mut self) -> bool {
        if self.on_done.is_none() {
            return false;
        }
        let cancelled = self.handle.state.lock().map_or(true, |s| s.cancelled);
        if cancelled {
            self.done(RawOutcome::Cancelled);
            return false;
        }
        if let Some(f) = self.on_start.take() {
            f();
        }
        true
    }

    fn set_interrupt(&mut self, hook: Option<Arc<dyn Fn() + Send + Sync>>) {
        if let Ok(mut s) = self.handle.state.lock() {
            s.hook = hook;
        }
    }

    fn requeued(&mut self) {
        if let Ok(mut s) = self.handle.state.lock() {
            s.hook = None;
        }
    }

    fn cancel_requested(&self) -> bool {
        self.handle.state.lock().map_or(true, |s| s.cancelled)
    }

    fn finish(&mut self, output: &[u8], worker: usize, _timeline: Option<&Timeline>) {
        let outcome = match &mut self.chunk {
            None => RawOutcome::Call {
                output: output.to_vec(),
                worker: worker as u32,
            },
            Some((_, positions)) => RawOutcome::Chunk {
                segments: vec![Segment {
                    positions: std::mem::take(positions),
                    output: output.to_vec(),
                    worker: worker as u32,
                }],
                lost: std::mem::take(&mut self.lost),
            },
        };
        self.done(outcome);
    }

    fn fail(&mut self, error: Error) {
        self.done(RawOutcome::Failed(ErrorWire::from(&error)));
    }

    fn cancelled(&mut self) {
        self.done(RawOutcome::Cancelled);
    }

    fn lost(&mut self, payload: &mut Payload, item: usize, error: Error, retry: bool) -> bool {
        let Some((items, positions)) = &mut self.chunk else {
            if retry {
                return true;
            }
            self.fail(error);
            return false;
        };
        if item >= positions.len() {
            self.fail(error);
            return false;
        }
        if !retry {
            let pos = positions.remove(item);
            self.lost.push((pos, ErrorWire::from(&error)));
        }
        if positions.is_empty() {
            self.lost.sort_by_key(|(p, _)| *p);
            let lost = std::mem::take(&mut self.lost);
            self.done(RawOutcome::Chunk {
                segments: Vec::new(),
                lost,
            });
            return false;
        }
        *payload = Payload::Inline(chunk_payload(items, positions));
        true
    }
}

impl Processes {
    /// Runs a job named by its wire name on these workers; `job.on_done`
    /// learns how it ended (exactly once, also when the pool drops it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use crew_core::Unary;
    /// use crew_process::remote::{self, RawInput, RawJob, RawOutcome};
    ///
    /// fn double(x: u32) -> u32 { x * 2 }
    ///
    /// let p = crew_process::Processes::new(1)?;
    /// let entry = remote::call_task::<_, u32, u32>(&Unary(double));
    /// let (tx, rx) = mpsc::channel();
    /// let job = RawJob {
    ///     entry,
    ///     input: RawInput::Call(remote::encode(&21u32)?),
    ///     timeout: None,
    ///     retries: 0,
    ///     backoff: Default::default(),
    ///     spans: false,
    ///     on_start: None,
    ///     on_done: Box::new(move |o| tx.send(o).unwrap()),
    /// };
    /// // SAFETY: `entry` names a task of this very executable.
    /// unsafe { p.run_raw(job) }?;
    /// let RawOutcome::Call { output, .. } = rx.recv().unwrap() else { panic!() };
    /// assert_eq!(remote::decode_call::<u32>(&output).0?, 42);
    /// # Ok::<(), crew_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_shutdown` if the pool is closed; `on_done` then hears
    /// [`RawOutcome::Cancelled`].
    ///
    /// # Safety
    ///
    /// `job.entry` must be a wire name made by [`call_task`] (with a
    /// [`RawInput::Call`]) or [`chunk_task`] (with a [`RawInput::Chunk`]) in
    /// a process whose [`fingerprint`] equals this one's: the worker jumps to
    /// the address it names.
    pub unsafe fn run_raw(&self, job: RawJob) -> Result<RawHandle> {
        let handle = RawHandle::default();
        let (payload, chunk) = match job.input {
            RawInput::Call(bytes) => (Payload::Inline(bytes), None),
            RawInput::Chunk(items) => {
                let positions: Vec<u32> = (0..items.len() as u32).collect();
                (
                    Payload::Inline(chunk_payload(&items, &positions)),
                    Some((items, positions)),
                )
            }
        };
        let completion = RawCompletion {
            handle: handle.clone(),
            on_start: job.on_start,
            on_done: Some(job.on_done),
            chunk,
            lost: Vec::new(),
        };
        let mut proc_job = ProcJob::new(job.entry, payload, completion);
        proc_job.extra = Some(Box::new(JobExtra {
            limits: Some(JobLimits {
                timeout: job.timeout,
                retries: job.retries,
                backoff: job.backoff,
                spans: job.spans,
            }),
            ..JobExtra::default()
        }));
        match self.shared.submit(proc_job) {
            Ok(()) => Ok(handle),
            // Dropping the job tells `on_done` it was cancelled.
            Err(_) => Err(Error::shutdown()),
        }
    }
}

/// Decodes a call's output: its result, and when it ran (`CLOCK_MONOTONIC`
/// ns on the machine that ran it) if spans were asked for.
///
/// # Examples
///
/// See [`Processes::run_raw`].
pub fn decode_call<R: DeserializeOwned>(output: &[u8]) -> (Result<R>, Option<(u64, u64)>) {
    match crate::bulk::from_slice::<CallWire<R>>(output) {
        Ok(CallWire { result, span }) => (result.map_err(WireError::into_error), span),
        Err(e) => (
            Err(Error::protocol(format!(
                "cannot decode a task's result: {e}"
            ))),
            None,
        ),
    }
}

/// A chunk's outcome, decoded: what `ChunkOut::new` takes, plus when each
/// item ran (position, start, end in `CLOCK_MONOTONIC` ns of the machine
/// that ran it).
#[derive(Debug)]
pub struct DecodedChunk<R> {
    /// The values of the items that succeeded, in order.
    pub values: Vec<R>,
    /// The failures, by position, sorted.
    pub errors: Vec<(usize, Error)>,
    /// When each item ran, if spans were asked for.
    pub spans: Vec<(usize, u64, u64)>,
}

/// Decodes the outcome of a chunk of `len` items from its segments and its
/// lost items; an item with no outcome at all fails with `is_protocol`.
///
/// # Examples
///
/// ```
/// use crew_process::remote::{ErrorWire, decode_chunk};
/// let lost = vec![(0, ErrorWire::from(&crew_core::Error::timeout()))];
/// let out = decode_chunk::<u8>(2, vec![], lost);
/// assert!(out.errors[0].1.is_timeout());
/// assert!(out.errors[1].1.is_protocol());
/// ```
pub fn decode_chunk<R: DeserializeOwned>(
    len: usize,
    segments: Vec<Segment>,
    lost: Vec<(u32, ErrorWire)>,
) -> DecodedChunk<R> {
    let mut outcomes: Vec<Option<Result<R>>> = (0..len).map(|_| None).collect();
    let mut spans = Vec::new();
    let mut set = |pos: u32, r: Result<R>| {
        if let Some(slot) = outcomes.get_mut(pos as usize) {
            *slot = Some(r);
        }
    };
    for Segment {
        positions, output, ..
    } in segments
    {
        match crate::bulk::from_slice::<ChunkWire<R>>(&output) {
            Ok(ChunkWire::Done(values, errors, seg_spans)) => {
                let mut values = values.into_iter();
                let mut errors = errors.into_iter().peekable();
                for (i, &pos) in positions.iter().enumerate() {
                    let outcome = match errors.peek() {
                        Some((at, _)) if *at as usize == i => {
                            let (_, e) = errors.next().expect("peeked");
                            Err(e.into_error())
                        }
                        _ => match values.next() {
                            Some(v) => Ok(v),
                            None => Err(Error::protocol("a chunk's result has too few values")),
                        },
                    };
                    set(pos, outcome);
                }
                for (i, (start, end)) in seg_spans.into_iter().enumerate() {
                    if let Some(&pos) = positions.get(i) {
                        spans.push((pos as usize, start, end));
                    }
                }
            }
            Ok(ChunkWire::Undecodable(e)) => {
                let e = e.into_error();
                for &pos in &positions {
                    set(pos, Err(e.clone()));
                }
            }
            Err(e) => {
                let e = Error::protocol(format!("cannot decode a chunk's results: {e}"));
                for &pos in &positions {
                    set(pos, Err(e.clone()));
                }
            }
        }
    }
    for (pos, e) in lost {
        set(pos, Err(e.into_error()));
    }
    let mut values = Vec::with_capacity(len);
    let mut errors = Vec::new();
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Some(Ok(v)) => values.push(v),
            Some(Err(e)) => errors.push((i, e)),
            None => errors.push((i, Error::protocol("no outcome came back for this item"))),
        }
    }
    DecodedChunk {
        values,
        errors,
        spans,
    }
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of the spans in outputs.
///
/// # Examples
///
/// ```
/// assert!(crew_process::remote::monotonic_ns() > 0);
/// ```
pub fn monotonic_ns() -> u64 {
    crate::worker::monotonic_ns()
}

/// Converts a `CLOCK_MONOTONIC` reading of this machine to an `Instant`.
///
/// # Examples
///
/// ```
/// use crew_process::remote::{instant_of, monotonic_ns};
/// let a = instant_of(monotonic_ns());
/// assert!(a <= std::time::Instant::now());
/// ```
pub fn instant_of(ns: u64) -> std::time::Instant {
    crate::entry::instant_of(ns)
}
