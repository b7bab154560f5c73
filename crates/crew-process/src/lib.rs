//! crew's worker processes: the [`Processes`] back-end (crash-isolated,
//! killable workers that are this binary re-executed), the wire protocol,
//! supervision, and [`run_if_worker`], the entry of a worker.
//!
//! Users name the `crew` crate; see `Pool::processes` there.
#![deny(missing_docs)]

// crew's worker processes and shared memory are built on Linux kernel
// interfaces (see the README, "Supported systems"): say so, rather than let
// the build fail on a missing system item.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "crew runs on Linux only (kernel 3.17+: memfd, robust futexes, PR_SET_PDEATHSIG; pidfd from 5.3): \
     this target is not supported; see the README, \"Supported systems\""
);

mod bulk;
mod entry;
mod forkserver;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
#[cfg(test)]
mod payload_tests;
mod process;
pub mod remote;
mod shm;
mod spawn;
mod supervisor;
mod wire;
mod worker;

use std::sync::Arc;
use std::time::Instant;

use serde::{Serialize, de::DeserializeOwned};

use crew_core::engine::{Chunk, ChunkOut, ChunkSink};
use crew_core::{Backend, Call, Error, Promise, Result, Runs, Timeline};

pub use entry::NonCapturing;
use entry::{
    CallWire, ChunkWire, assert_non_capturing, call_entry, chunk_entry, init_entry, instant_of,
    offset_of,
};
pub use forkserver::{NO_FORK_SERVER_ENV, fork_server_pid};
pub use process::Process;
use supervisor::{Completion, JobExtra, Shared};
pub use supervisor::{ProcJob, ProcessConfig};
use wire::Payload;
pub use worker::run_if_worker;

/// Entry points of the fuzz targets (`fuzz/` at the top of the repository)
/// and of their stable runs in the tests. Not part of the API: enabled by the
/// `fuzzing` feature.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::fuzz::{frame_reader, wire_decoder};
}

/// A fingerprint of this executable's build: it changes with any rebuild
/// that moves code, and is the same in every process running this very
/// file (the worker handshake compares it; `crew::Memory` keys results by
/// it so that changed code never reads results of the old code).
///
/// # Examples
///
/// ```
/// assert_eq!(crew_process::build_fingerprint(), crew_process::build_fingerprint());
/// ```
pub fn build_fingerprint() -> u64 {
    entry::build_fingerprint()
}

/// A pool of worker processes: the back-end of `Pool::processes` and
/// `Executor::processes`.
///
/// Each worker is this executable re-executed (never a `fork` of the
/// running parent); it serves tasks until the pool closes. A worker that
/// dies (crash, signal, memory limit, timeout kill) fails only the task it
/// was running, with `is_worker_lost` (or `is_timeout`), and is replaced.
/// Cloning gives another handle to the same workers.
///
/// # Examples
///
/// ```
/// use crew_core::{Backend, engine::{MapOptions, map_blocking}, Unary};
/// let p = crew_process::Processes::new(2)?;
/// let v = map_blocking(&p, Unary(|x: u32| x * 3), vec![1, 2, 3], &MapOptions::default()).unwrap();
/// assert_eq!(v, [3, 6, 9]);
/// p.close();
/// assert!(p.join(None));
/// # Ok::<(), crew_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Processes {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Processes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processes")
            .field("workers", &self.shared.workers())
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

impl Processes {
    /// Starts `workers` worker processes.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew_core::Backend;
    /// let p = crew_process::Processes::new(1)?;
    /// assert_eq!(p.workers(), 1);
    /// assert!(crew_process::Processes::new(0).unwrap_err().is_invalid_input());
    /// # Ok::<(), crew_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for 0 workers; `is_io` if a proxy thread cannot
    /// start. A worker that cannot start is retried; after three failures in
    /// a row the pool fails its tasks with `is_worker_lost` saying why.
    pub fn new(workers: usize) -> Result<Processes> {
        Processes::with_config(ProcessConfig {
            workers,
            ..ProcessConfig::default()
        })
    }

    /// The `initializer` field of a [`ProcessConfig`] that runs `f(args…)`
    /// once in each new worker; what it returns is the worker's state,
    /// read by tasks with `crew::worker_state::<S>()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew_process::{ProcessConfig, Processes};
    /// let init = Processes::initializer(|n: u32| n * 2, (21,))?;
    /// let p = Processes::with_config(ProcessConfig { workers: 1, initializer: Some(init), ..Default::default() })?;
    /// # drop(p);
    /// # Ok::<(), crew_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_protocol` if the arguments cannot be encoded.
    pub fn initializer<F, A, S>(f: F, args: A) -> Result<(u64, Vec<u8>)>
    where
        crew_core::Star<F>: Call<A, S> + NonCapturing,
        F: Send + Sync + 'static,
        A: Serialize + DeserializeOwned,
        S: std::any::Any + Send + Sync,
    {
        const { assert_non_capturing::<crew_core::Star<F>>() };
        drop(f);
        let payload = bulk::to_vec(&args).map_err(|e| {
            Error::protocol(format!("cannot encode the initializer's arguments: {e}"))
        })?;
        Ok((offset_of(init_entry::<crew_core::Star<F>, A, S>), payload))
    }

    /// Starts a pool as `config` says.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use crew_process::{ProcessConfig, Processes};
    /// let p = Processes::with_config(ProcessConfig {
    ///     workers: 2,
    ///     task_timeout: Some(Duration::from_secs(30)),
    ///     retries: 1,
    ///     ..Default::default()
    /// })?;
    /// # drop(p);
    /// # Ok::<(), crew_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Processes::new).
    pub fn with_config(config: ProcessConfig) -> Result<Processes> {
        Ok(Processes {
            shared: Shared::start(config)?,
        })
    }
}

impl Backend for Processes {
    type Job<'s> = ProcJob<'s>;

    fn workers(&self) -> usize {
        self.shared.workers()
    }

    unsafe fn execute<'s>(&self, job: Self::Job<'s>) -> std::result::Result<(), Self::Job<'s>> {
        // A job nobody waits for may sit in the queue a long time: it keeps
        // no buffer of its arguments meanwhile (only a blocking call lends
        // its arguments' buffer to its result).
        let mut job = job;
        job.drop_spare();
        // SAFETY: per `Backend::execute`, what the job borrows for `'s` (its
        // result sink) outlives the job; the queue only needs the lifetime
        // erased while the job waits.
        let job: ProcJob<'static> =
            unsafe { std::mem::transmute::<ProcJob<'s>, ProcJob<'static>>(job) };
        self.shared.submit(job).map_err(|job| {
            // SAFETY: handing the job back with the lifetime it came with.
            unsafe { std::mem::transmute::<ProcJob<'static>, ProcJob<'s>>(*job) }
        })
    }

    unsafe fn execute_blocking<'s>(
        &self,
        job: Self::Job<'s>,
    ) -> std::result::Result<(), Self::Job<'s>> {
        // SAFETY: as in `execute`.
        let job: ProcJob<'static> =
            unsafe { std::mem::transmute::<ProcJob<'s>, ProcJob<'static>>(job) };
        self.shared.submit_blocking(job).map_err(|job| {
            // SAFETY: handing the job back with the lifetime it came with.
            unsafe { std::mem::transmute::<ProcJob<'static>, ProcJob<'s>>(*job) }
        })
    }

    fn close(&self) {
        self.shared.close();
    }

    fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    fn cancel_pending(&self) -> usize {
        self.shared.cancel_pending()
    }

    fn terminate(&self) {
        self.shared.terminate();
        // The pool's large payloads are done with: keep no memory for them.
        shm::trim();
    }

    fn join(&self, deadline: Option<Instant>) -> bool {
        let joined = self.shared.join(deadline);
        if joined {
            shm::trim();
        }
        joined
    }

    fn timeline(&self) -> Option<&Arc<Timeline>> {
        self.shared.timeline.as_ref()
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.shared.worker_pids()
    }
}

/// A call's lent argument buffer (`CallCompletion::spare`).
struct Lent(Vec<u8>);

/// The completion of a single call.
struct CallCompletion<R: Send> {
    promise: Option<Promise<Result<R>>>,
    attempts: u32,
    /// Submission number for the timeline, if the pool keeps one.
    number: Option<usize>,
    /// The task's type name, made the span's name on the timeline only if
    /// there is one (`task_name` scans the string: not on every submit).
    name: Option<&'static str>,
    /// The arguments' byte buffer, for the result to be decoded into
    /// (`bulk::take_spare`); only while the caller waits for the call.
    /// Boxed: it is rare (a large byte buffer), and without it the
    /// completion fits in its job (`CompletionBox`).
    spare: Option<Box<Lent>>,
}

impl<R: Send + DeserializeOwned> Completion for CallCompletion<R> {
    fn drop_spare(&mut self) {
        self.spare = None;
    }

    fn start(&mut self) -> bool {
        self.promise.as_ref().is_some_and(|p| p.start())
    }

    fn requeued(&mut self) {
        if let Some(p) = &self.promise {
            p.set_interrupt(None);
            p.unstart();
        }
    }

    fn set_interrupt(&mut self, hook: Option<Arc<dyn Fn() + Send + Sync>>) {
        if let Some(p) = &self.promise {
            p.set_interrupt(hook);
        }
    }

    fn cancel_requested(&self) -> bool {
        self.promise.as_ref().is_some_and(|p| p.cancel_requested())
    }

    fn finish(&mut self, output: &[u8], worker: usize, timeline: Option<&Timeline>) {
        let Some(p) = self.promise.take() else { return };
        let decoded = bulk::with_spare(self.spare.take().map(|b| b.0), || {
            bulk::from_slice::<CallWire<R>>(output)
        });
        let outcome = match decoded {
            Ok(CallWire { result, span }) => {
                if let (Some(t), Some((start, end)), Some(n)) = (timeline, span, self.number) {
                    let name = self.name.and_then(crew_core::task_name).unwrap_or("call");
                    t.record(worker, n, name, instant_of(start), instant_of(end));
                }
                result.map_err(|e| e.into_error().with_worker(worker))
            }
            Err(e) => Err(
                Error::protocol(format!("cannot decode a task's result: {e}")).with_worker(worker),
            ),
        };
        p.complete(outcome);
    }

    fn fail(&mut self, error: Error) {
        if let Some(p) = self.promise.take() {
            p.fail(error);
        }
    }

    fn cancelled(&mut self) {
        if let Some(p) = self.promise.take() {
            p.cancelled();
        }
    }

    fn lost(&mut self, _payload: &mut Payload, _item: usize, error: Error, retry: bool) -> bool {
        if retry {
            self.attempts += 1;
            return true;
        }
        self.fail(error);
        false
    }
}

/// The completion of a chunk. When its worker dies mid-chunk, the item that
/// was running fails (or is retried), and the rest run again as a smaller
/// job; `positions` maps that job's items back to the chunk, and `outcomes`
/// keeps what the earlier attempts settled. A chunk that never lost a worker
/// (the common case) skips both and hands its values straight through.
/// Chunk positions of the items a re-run payload holds, and every settled
/// outcome of the chunk.
type Partial<R> = (Vec<u32>, Vec<Option<Result<R>>>);

struct ChunkCompletion<'s, X, R> {
    sink: Option<ChunkSink<'s, R>>,
    len: usize,
    /// `None` until a worker died mid-chunk: then the chunk positions of the
    /// items the current payload holds, and every settled outcome.
    partial: Option<Partial<R>>,
    started: Instant,
    /// The spans' name on the timeline.
    name: &'static str,
    _input: std::marker::PhantomData<fn(X)>,
}

impl<X, R> ChunkCompletion<'_, X, R> {
    fn deliver(&mut self, out: ChunkOut<R>) {
        if let Some(sink) = self.sink.take() {
            sink.deliver(out);
        }
    }

    fn partial(&mut self) -> &mut Partial<R> {
        let len = self.len;
        self.partial
            .get_or_insert_with(|| ((0..len as u32).collect(), (0..len).map(|_| None).collect()))
    }

    fn deliver_if_complete(&mut self) {
        let Some((_, outcomes)) = &mut self.partial else {
            return;
        };
        if outcomes.iter().any(Option::is_none) {
            return;
        }
        let len = outcomes.len();
        let mut values = Vec::with_capacity(len);
        let mut errors = Vec::new();
        for (i, o) in outcomes.drain(..).enumerate() {
            match o.expect("checked complete") {
                Ok(v) => values.push(v),
                Err(e) => errors.push((i, e)),
            }
        }
        let out = ChunkOut::new(len, values, errors, self.started.elapsed());
        self.deliver(out);
    }

    /// Settles every item of the current payload with `e` (unless settled).
    fn settle_all(&mut self, e: &Error) {
        let (positions, outcomes) = self.partial();
        for &pos in positions.iter() {
            outcomes[pos as usize].get_or_insert_with(|| Err(e.clone()));
        }
        self.deliver_if_complete();
    }
}

impl<X, R> Completion for ChunkCompletion<'_, X, R>
where
    X: Serialize + DeserializeOwned + Send,
    R: DeserializeOwned + Send,
{
    fn start(&mut self) -> bool {
        self.sink.as_ref().is_some_and(|s| !s.is_cancelled())
    }

    fn finish(&mut self, output: &[u8], worker: usize, timeline: Option<&Timeline>) {
        let (values, errors) = match bulk::from_slice::<ChunkWire<R>>(output) {
            Ok(ChunkWire::Done(values, errors, spans)) => {
                if let (Some(t), Some(sink)) = (timeline, &self.sink) {
                    let positions = self.partial.as_ref().map(|(p, _)| p);
                    for (i, &(start, end)) in spans.iter().enumerate() {
                        let pos = positions.map_or(i, |p| p.get(i).map_or(i, |&x| x as usize));
                        t.record(
                            worker,
                            sink.offset() + pos,
                            self.name,
                            instant_of(start),
                            instant_of(end),
                        );
                    }
                }
                (values, errors)
            }
            Ok(ChunkWire::Undecodable(e)) => {
                return self.settle_all(&e.into_error().with_worker(worker));
            }
            Err(e) => {
                let e = Error::protocol(format!("cannot decode a chunk's results: {e}"))
                    .with_worker(worker);
                return self.settle_all(&e);
            }
        };
        let Some((positions, outcomes)) = &mut self.partial else {
            // Fast path: the payload is the whole chunk, in order.
            if values.len() + errors.len() != self.len {
                let e = Error::protocol("a chunk's result has the wrong number of items")
                    .with_worker(worker);
                return self.settle_all(&e);
            }
            // Failures must name distinct items of the chunk, in order (a
            // garbled answer must fail the chunk, not panic the collector).
            if !errors.windows(2).all(|w| w[0].0 < w[1].0)
                || errors.last().is_some_and(|(i, _)| *i as usize >= self.len)
            {
                let e = Error::protocol("a chunk's result places its failures out of order")
                    .with_worker(worker);
                return self.settle_all(&e);
            }
            let errors = errors
                .into_iter()
                .map(|(i, e)| (i as usize, e.into_error().with_worker(worker)))
                .collect();
            let out = ChunkOut::new(self.len, values, errors, self.started.elapsed());
            return self.deliver(out);
        };
        let mut values = values.into_iter();
        let mut errors = errors.into_iter().peekable();
        for (i, &pos) in positions.iter().enumerate() {
            let outcome =
                match errors.peek() {
                    Some((at, _)) if *at as usize == i => {
                        let (_, e) = errors.next().expect("peeked");
                        Err(e.into_error().with_worker(worker))
                    }
                    _ => match values.next() {
                        Some(v) => Ok(v),
                        None => Err(Error::protocol("a chunk's result has too few values")
                            .with_worker(worker)),
                    },
                };
            outcomes[pos as usize] = Some(outcome);
        }
        self.deliver_if_complete();
    }

    fn fail(&mut self, error: Error) {
        self.settle_all(&error);
    }

    fn cancelled(&mut self) {
        self.fail(Error::cancelled());
    }

    fn lost(&mut self, payload: &mut Payload, item: usize, error: Error, retry: bool) -> bool {
        let Ok(mut items) = bulk::from_slice::<Vec<X>>(payload.bytes()) else {
            self.fail(error);
            return false;
        };
        if item >= items.len() {
            self.fail(error);
            return false;
        }
        if !retry {
            let (positions, outcomes) = self.partial();
            let pos = positions.remove(item);
            outcomes[pos as usize] = Some(Err(error));
            items.remove(item);
        }
        if items.is_empty() {
            self.deliver_if_complete();
            return false;
        }
        match bulk::to_payload(&items) {
            Ok(bytes) => {
                *payload = bytes;
                true
            }
            Err(e) => {
                self.fail(Error::protocol(format!("cannot re-encode a chunk: {e}")));
                false
            }
        }
    }
}

// `T` need not be `'static`: it is never stored (only its type crosses, as
// a trampoline), and a closure that borrows must reach the check below,
// whose message says what to do, rather than stop at the borrow checker's
// "add `move`" (E0373), which only leads to the same check.
impl<'s, T, X, R> Runs<'s, T, X, R> for Processes
where
    T: Call<X, R> + NonCapturing + Send + Sync,
    X: Serialize + DeserializeOwned + Send + 's,
    R: Serialize + DeserializeOwned + Send + 's,
{
    fn call_job(&self, task: T, input: X, promise: Promise<Result<R>>) -> ProcJob<'s> {
        const { assert_non_capturing::<T>() };
        let name = task.name();
        let _ = task;
        // The job holds the shared-memory regions the arguments name until
        // the worker has answered: `input` may hold their only handles.
        // Encoded straight into shared memory if large.
        let (encoded, held) = crew_shm::hold_serialized(|| bulk::to_payload(&input));
        let mut input = input;
        let spare = bulk::take_spare(&mut input).map(|v| Box::new(Lent(v)));
        drop(input);
        match encoded {
            Ok(payload) => ProcJob {
                extra: JobExtra::holding(held),
                ..ProcJob::new(
                    offset_of(call_entry::<T, X, R>),
                    payload,
                    CallCompletion {
                        promise: Some(promise),
                        attempts: 0,
                        number: self.shared.timeline.as_ref().map(|t| t.next_call()),
                        name,
                        spare,
                    },
                )
            },
            Err(e) => {
                promise.fail(Error::protocol(format!(
                    "cannot encode the task's arguments: {e}"
                )));
                ProcJob::settled()
            }
        }
    }

    fn chunk_job(&self, task: Arc<T>, chunk: Chunk<X>, sink: ChunkSink<'s, R>) -> ProcJob<'s> {
        const { assert_non_capturing::<T>() };
        let name = task.name().and_then(crew_core::task_name).unwrap_or("map");
        drop(task);
        let len = chunk.len();
        let (encoded, held) = crew_shm::hold_serialized(|| bulk::to_payload(chunk.as_slice()));
        drop(chunk);
        match encoded {
            Ok(payload) => ProcJob {
                extra: JobExtra::holding(held),
                ..ProcJob::new(
                    offset_of(chunk_entry::<T, X, R>),
                    payload,
                    ChunkCompletion::<X, R> {
                        sink: Some(sink),
                        len,
                        partial: None,
                        started: Instant::now(),
                        name,
                        _input: std::marker::PhantomData,
                    },
                )
            },
            Err(e) => {
                sink.fail(Error::protocol(format!(
                    "cannot encode a chunk's arguments: {e}"
                )));
                ProcJob::settled()
            }
        }
    }
}
