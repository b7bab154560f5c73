//! Allocations on the submit path, counted by a global allocator: once
//! warm, `Executor::threads(n).submit` followed by `result()` allocates
//! nothing of its own, on the submitting thread or on the workers (result
//! slots are recycled, jobs live inline in the queue). What remains is the
//! queue's: crossbeam's `Injector` allocates a block for every 63 jobs
//! (and frees it once they are taken). A warm `Executor::processes(n)`
//! submit allocates nothing in the parent at all: the slot is recycled,
//! small arguments and the task's completion live in the job, its proxy
//! shares one interrupt hook, and the frames' buffers are reused.
//!
//! Its own binary: the counting allocator sees every thread of the process,
//! so no other test may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System`, counting the calls that take memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests take turns: each counts every thread's allocations.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Submits `batch` tasks, then takes every result.
fn round(ex: &crew::Executor<crew::Threads>, batch: u64) {
    let futures: Vec<crew::Future<u64>> = (0..batch)
        .map(|x| ex.submit(|x: u64| x * x, (x,)))
        .collect();
    for (x, f) in (0..batch).zip(futures) {
        assert_eq!(f.result().unwrap(), x * x);
    }
}

/// [`round`] on worker processes, with results of another type: result
/// slots are shelved by type, so the two tests' slots never mix.
fn process_round(ex: &crew::Executor<crew::Processes>, batch: u32) {
    let futures: Vec<crew::Future<u32>> = (0..batch)
        .map(|x| ex.submit(|x: u32| x.wrapping_mul(x), (x,)))
        .collect();
    for (x, f) in (0..batch).zip(futures) {
        assert_eq!(f.result().unwrap(), x.wrapping_mul(x));
    }
}

/// Allocations a thread makes once, which may fall in a measured window:
/// its shelf of recycled slots (the list, two magazines), and a magazine
/// the depot had none of, for each of the two workers.
const ONCE_PER_THREAD: usize = 8;

/// Jobs per block of crossbeam's `Injector` (`BLOCK_CAP`).
const QUEUE_BLOCK: usize = 63;

/// The allocations of `rounds` warm rounds of a batch: `round(Some(n))`
/// runs a batch of `n`, `round(None)` one of the test's batch size. Warms
/// up with a batch of 1,000 and `rounds` batches first, then counts
/// `rounds` more, less the one allocation a round that is the test's own
/// (the batch's `Vec` of futures).
fn warm_allocations(rounds: u64, mut round: impl FnMut(Option<u64>)) -> usize {
    round(Some(1_000));
    for _ in 0..rounds {
        round(None);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        round(None);
    }
    ALLOCATIONS.load(Ordering::Relaxed) - before - rounds as usize
}

#[test]
fn a_warm_thread_submit_allocates_nothing_but_the_queue_s_blocks() {
    const BATCH: u64 = 200;
    const ROUNDS: u64 = 50;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let ex = crew::Executor::threads(2).unwrap();
    // Warm up: the workers' first wait, the queue, and enough recycled
    // slots for a batch even while every worker keeps its shelf of slots
    // it let go last (two magazines of 32 at most: one big batch first).
    let allocations = warm_allocations(ROUNDS, |n| round(&ex, n.unwrap_or(BATCH)));
    let submits = (BATCH * ROUNDS) as usize;
    // One block per 63 jobs, plus the block the queue's tail was in; and
    // what timing may put in the window once per thread (a thread's first
    // shelf of slots: see the process test below), never per submit.
    let queue_blocks = submits.div_ceil(QUEUE_BLOCK) + 1;
    assert!(
        allocations <= queue_blocks + ONCE_PER_THREAD,
        "{allocations} allocations in {submits} warm submits (the queue's blocks: {queue_blocks})"
    );
}

#[test]
fn a_warm_process_submit_allocates_nothing_in_the_parent() {
    const BATCH: u32 = 200;
    const ROUNDS: u32 = 50;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let ex = crew::Executor::processes(2).unwrap();
    // Warm up: the workers start, the queues and buffers grow to a batch,
    // and the result slots of a batch are on the shelves.
    let allocations = warm_allocations(ROUNDS as u64, |n| {
        process_round(&ex, n.map_or(BATCH, |n| n as u32))
    });
    let submits = (BATCH * ROUNDS) as usize;
    // Nothing per submit. What timing may still put in the window is
    // once per thread: the first time a proxy thread is the last to let go
    // of a result slot, it makes its shelf (the list and two magazines).
    assert!(
        allocations <= ONCE_PER_THREAD,
        "{allocations} allocations in {submits} warm process submits"
    );
}
