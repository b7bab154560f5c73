//! Task identity across processes of one binary.
//!
//! A worker is the parent's own executable re-executed, so every function
//! sits at the same offset from [`anchor`] in both. A task is sent as the
//! offset of a monomorphised trampoline (`call_entry::<T, X, R>` or
//! `chunk_entry::<T, X, R>`) from the anchor; the worker adds its own
//! anchor's address and calls it. The task value itself is a zero-sized
//! type (a non-capturing closure or fn item), so the trampoline conjures it
//! from nothing: there is no state to send. A capturing closure is refused
//! at compile time: by the [`NonCapturing`] bound (`Copy`, so that a
//! re-created value duplicates nothing that may not be duplicated) and by
//! [`assert_non_capturing`] (zero-sized, so there is nothing to send).
//!
//! The handshake compares [`build_fingerprint`] of both sides, and workers
//! are started from `/proc/self/exe`, which names the parent's exact
//! executable even if the file was replaced on disk since.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crew_core::{Call, Error};

use crate::bulk::{self, Out};
use crate::worker::Control;

/// The type of every trampoline: decode `input`, run, encode into `out`.
pub(crate) type Entry = fn(input: &[u8], control: &Control, out: &mut Out);

/// The reference point of task offsets.
#[inline(never)]
pub(crate) fn anchor() -> usize {
    std::hint::black_box(0x63726577)
}

fn anchor_addr() -> usize {
    anchor as fn() -> usize as *const () as usize
}

/// Offset of `entry` from the anchor in this binary.
pub(crate) fn offset_of(entry: Entry) -> u64 {
    (entry as *const () as usize).wrapping_sub(anchor_addr()) as u64
}

/// The trampoline at `offset` in this binary.
///
/// # Safety
///
/// `offset` must have been produced by [`offset_of`] in a process running
/// the same executable (checked by the handshake's fingerprint).
pub(crate) unsafe fn entry_at(offset: u64) -> Entry {
    let addr = anchor_addr().wrapping_add(offset as usize);
    // SAFETY: per the contract, `addr` is the address of an `Entry` in this
    // very image.
    unsafe { std::mem::transmute::<usize, Entry>(addr) }
}

/// A fingerprint of this executable's layout: offsets between functions of
/// different crates change with any rebuild that moves code.
pub(crate) fn build_fingerprint() -> u64 {
    let probes = [
        (crate::worker::serve as fn(i32, &Control) as *const () as usize)
            .wrapping_sub(anchor_addr()) as u64
            ^ 0x9e37_79b9_7f4a_7c15,
        (crew_core::cpu_count as fn() -> usize as *const () as usize).wrapping_sub(anchor_addr())
            as u64,
        (postcard::to_allocvec::<u64> as fn(&u64) -> postcard::Result<Vec<u8>> as *const ()
            as usize)
            .wrapping_sub(anchor_addr()) as u64,
    ];
    probes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, p| {
        (h ^ p).wrapping_mul(0x100_0000_01b3)
    })
}

/// Refuses, at compile time, a task that captures its environment: only a
/// zero-sized task (fn item or non-capturing closure) can be re-created in
/// another process.
///
/// A post-monomorphization error: `cargo build` and `cargo test` report it,
/// naming the closure by its place in the user's code (`{closure@src/main.rs:4:22}`
/// in the "evaluation of" line); `cargo check` does not, as it never lays
/// out the instantiated types. Stable Rust has no trait bound meaning
/// "captures nothing" (a closure that borrows is `Copy + Send + Sync` like
/// one that captures nothing), so no earlier check is possible.
pub(crate) const fn assert_non_capturing<T>() {
    assert!(
        std::mem::size_of::<T>() == 0,
        "a process task cannot capture its environment, and this closure does (it is the `closure@file:line:col` named on the next line): use a fn item or a closure that captures nothing, and pass the data as an argument instead, e.g. `pool.starmap(f, items.map(|x| (x, data.clone())))`"
    );
}

/// A task that a worker process can re-create from its type alone: a fn
/// item or a closure that captures nothing.
///
/// Implemented for every `Copy` type: fn items and closures that capture
/// nothing are `Copy`, while a closure that captures (moves in) a value that
/// is not `Copy` — a `String`, a guard, a zero-sized token whose type keeps
/// an invariant — is not, and must not be duplicated out of nothing in a
/// worker. A closure that captures only `Copy` values or references passes
/// this bound and is refused when the program is built, as it is not
/// zero-sized.
///
/// A task that is not `NonCapturing` does not compile, and the error says
/// what to do:
///
/// ```compile_fail,E0277
/// struct Token; // zero-sized, but not `Copy`: one must not become two
/// let token = Token;
/// let task = move |x: u32| { let _ = &token; x };
/// fn needs<T: crew_process::NonCapturing>(_: T) {}
/// needs(crew_core::Unary(task));
/// ```
///
/// ```
/// fn needs<T: crew_process::NonCapturing>(_: T) {}
/// needs(crew_core::Unary(|x: u32| x + 1));
/// ```
#[diagnostic::on_unimplemented(
    message = "a process task cannot capture its environment, and this closure does (`{Self}`)",
    label = "this closure captures a value that cannot be sent to a worker process",
    note = "use a fn item or a closure that captures nothing, and pass the data as an argument instead, e.g. `pool.starmap(f, items.map(|x| (x, data.clone())))`"
)]
pub trait NonCapturing: Copy {}

#[diagnostic::do_not_recommend]
impl<T: Copy> NonCapturing for T {}

/// Creates the zero-sized task value.
///
/// # Safety
///
/// `T` must be zero-sized (checked by [`assert_non_capturing`] where the
/// task was submitted) and a value of it must have existed in the parent;
/// it is `Copy` (the [`NonCapturing`] bound), so making another value of it
/// duplicates nothing that may not be duplicated.
unsafe fn conjure<T: NonCapturing>() -> T {
    debug_assert_eq!(std::mem::size_of::<T>(), 0);
    // SAFETY: a zero-sized type has no bytes, so any pointer that is
    // well-aligned and non-null reads a valid value; a value existed in
    // the parent (the task was submitted), so the type is inhabited.
    unsafe { std::ptr::NonNull::<T>::dangling().as_ptr().read() }
}

/// An error as it crosses the pipe.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct WireError {
    code: u8,
    detail: String,
    backtrace: Option<String>,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> WireError {
        WireError {
            code: e.kind_code(),
            detail: e.detail(),
            backtrace: e.backtrace().map(str::to_owned),
        }
    }
}

impl WireError {
    pub(crate) fn into_error(self) -> Error {
        Error::from_code(self.code, self.detail, self.backtrace)
    }
}

/// Encodes `value` into `out`, which is empty; on failure `out` is empty
/// again.
fn encode<V: Serialize>(value: &V, out: &mut Out) -> Result<(), bulk::Error> {
    let encoded = bulk::encode(value, out);
    if encoded.is_err() {
        out.clear();
    }
    encoded
}

fn run_one<T: Call<X, R>, X, R>(task: &T, x: X) -> Result<R, WireError> {
    catch_unwind(AssertUnwindSafe(|| task.call(x)))
        .map_err(|p| WireError::from(&crate::worker::panic_error(p)))
}

/// Runs one call: `input` is `X`, `out` receives `Result<R, WireError>`.
pub(crate) fn call_entry<T, X, R>(input: &[u8], control: &Control, out: &mut Out)
where
    T: Call<X, R> + NonCapturing,
    X: DeserializeOwned,
    R: Serialize,
{
    control.set_item(0);
    // SAFETY: `Processes` only sends offsets of trampolines whose `T` passed
    // `assert_non_capturing`.
    let task: T = unsafe { conjure() };
    let start = control.span_clock();
    let result: Result<R, WireError> = match bulk::from_slice::<X>(input) {
        Ok(x) => run_one(&task, x),
        Err(e) => Err(WireError::from(&Error::protocol(format!(
            "cannot decode the task's arguments: {e}"
        )))),
    };
    let span = start.zip(control.span_clock());
    if let Err(e) = encode(&CallWire { result, span }, out) {
        let fail: CallWire<R> = CallWire {
            result: Err(WireError::from(&Error::protocol(format!(
                "cannot encode the task's result: {e}"
            )))),
            span,
        };
        encode(&fail, out).expect("an error always encodes");
    }
}

/// Runs a chunk: `input` is `Vec<X>`; `out` receives the values of the
/// items that succeeded and the failures with their positions.
pub(crate) fn chunk_entry<T, X, R>(input: &[u8], control: &Control, out: &mut Out)
where
    T: Call<X, R> + NonCapturing,
    X: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: as in `call_entry`.
    let task: T = unsafe { conjure() };
    let mut values: Vec<R> = Vec::new();
    let mut errors: Vec<(u32, WireError)> = Vec::new();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    match bulk::from_slice::<Vec<X>>(input) {
        Ok(items) => {
            values.reserve(items.len());
            for (i, x) in items.into_iter().enumerate() {
                control.set_item(i as u64);
                let start = control.span_clock();
                match run_one(&task, x) {
                    Ok(v) => values.push(v),
                    Err(e) => errors.push((i as u32, e)),
                }
                if let Some(span) = start.zip(control.span_clock()) {
                    spans.push(span);
                }
            }
        }
        Err(e) => {
            let fail: ChunkWire<R> = ChunkWire::Undecodable(WireError::from(&Error::protocol(
                format!("cannot decode the chunk's arguments: {e}"),
            )));
            encode(&fail, out).expect("an error always encodes");
            return;
        }
    }
    let done = ChunkWire::Done(values, errors, spans);
    if let Err(e) = encode(&done, out) {
        let fail: ChunkWire<R> = ChunkWire::Undecodable(WireError::from(&Error::protocol(
            format!("cannot encode the chunk's results: {e}"),
        )));
        encode(&fail, out).expect("an error always encodes");
    }
}

/// A call's outcome on the wire, with when it ran (`CLOCK_MONOTONIC` ns)
/// if the parent keeps a timeline.
#[derive(Serialize, Deserialize)]
pub(crate) struct CallWire<R> {
    pub(crate) result: Result<R, WireError>,
    pub(crate) span: Option<(u64, u64)>,
}

/// A chunk's outcome on the wire.
#[derive(Serialize, Deserialize)]
pub(crate) enum ChunkWire<R> {
    /// Values of the items that succeeded, in order; failures with
    /// positions; when each item ran, if the parent keeps a timeline.
    Done(Vec<R>, Vec<(u32, WireError)>, Vec<(u64, u64)>),
    /// The whole chunk could not be decoded or encoded.
    Undecodable(WireError),
}

/// Runs a pool's initializer in a new worker: `input` is `A`; the value it
/// returns becomes the worker's state; `out` receives `Result<(), WireError>`.
pub(crate) fn init_entry<T, A, S>(input: &[u8], control: &Control, out: &mut Out)
where
    T: Call<A, S> + NonCapturing,
    A: DeserializeOwned,
    S: std::any::Any + Send + Sync,
{
    control.set_item(0);
    // SAFETY: as in `call_entry`.
    let task: T = unsafe { conjure() };
    let result: Result<(), WireError> = match bulk::from_slice::<A>(input) {
        Ok(a) => {
            run_one(&task, a).map(|state| crew_core::set_worker_state(std::sync::Arc::new(state)))
        }
        Err(e) => Err(WireError::from(&Error::protocol(format!(
            "cannot decode the initializer's arguments: {e}"
        )))),
    };
    encode(&result, out).expect("a unit result always encodes");
}

/// Converts a `CLOCK_MONOTONIC` reading (a worker's) to an `Instant` of
/// this process: both clocks are the same system-wide clock, only the
/// representation differs.
pub(crate) fn instant_of(ns: u64) -> std::time::Instant {
    static BASE: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (at, base) =
        *BASE.get_or_init(|| (std::time::Instant::now(), crate::worker::monotonic_ns()));
    if ns >= base {
        at + std::time::Duration::from_nanos(ns - base)
    } else {
        at.checked_sub(std::time::Duration::from_nanos(base - ns))
            .unwrap_or(at)
    }
}
