//! A worker that speaks garbage on its socket: a task writes bytes to fd 3
//! (the worker's end of the socket) behind the worker's back. The task
//! fails with a clear error, nothing hangs or panics, the pool recovers.

use std::time::Duration;

use crew::core::{Runs, Unary};
use crew::{Error, Pool, Processes};

use crate::support::{LONG, exit_now, within, write_fd};

/// The worker's socket (see `crew-process/src/spawn.rs`).
const SOCKET: i32 = 3;

/// A frame header whose length (0xFFFF_FFFF) is out of range.
fn huge_length() -> Vec<u8> {
    vec![0xFF, 0xFF, 0xFF, 0xFF, 11]
}

/// A well-formed frame of unknown kind 0x77 with a 3-byte body.
fn unknown_kind() -> Vec<u8> {
    vec![4, 0, 0, 0, 0x77, 1, 2, 3]
}

/// Maps `task` over 3 items, one per job on one worker, and returns the
/// error of item 2, which misbehaves, after checking the others. The tasks
/// below that write garbage then wait, so the parent reads it while they
/// still run: which task is blamed for garbage read later is racy (see
/// `garbage_writer_runs_once_and_alone_fails`).
fn misbehaving_item<F>(task: F) -> Error
where
    F: Send + 'static,
    Processes: Runs<'static, Unary<F>, u32, u32>,
{
    let pool = Pool::processes(1).unwrap();
    let outcome = within(LONG, "a map with a task writing garbage", {
        let pool = pool.clone();
        move || pool.with_chunksize(1).map(task, 0..3)
    });
    let err = outcome.expect_err("the garbage-writing item fails");
    let failed: Vec<usize> = err.errors().map(|(i, _)| i).collect();
    assert_eq!(failed, [2], "only the misbehaving item fails");
    for (i, r) in err.results().iter().enumerate() {
        if let Ok(v) = r {
            assert_eq!(*v as usize, i);
        }
    }
    recovers(&pool);
    err.errors().next().unwrap().1.clone()
}

fn recovers(pool: &Pool<Processes>) {
    let pool = pool.clone();
    let after = within(LONG, "a map after the garbage", move || {
        pool.map(|x: u32| x * 3, 0..10)
    });
    assert_eq!(
        after.expect("the pool recovers"),
        (0..10).map(|x| x * 3).collect::<Vec<_>>()
    );
}

fn assert_protocol(e: &Error, mentions: &str) {
    assert!(e.is_protocol(), "{e}");
    let text = e.to_string();
    assert!(text.contains("frame"), "{text}");
    assert!(
        text.contains(mentions),
        "{text:?} does not mention {mentions:?}"
    );
    assert!(e.worker().is_some(), "{e}");
}

fn writes_huge_length_then_waits(x: u32) -> u32 {
    if x == 2 {
        write_fd(SOCKET, &huge_length());
        std::thread::sleep(Duration::from_secs(20));
    }
    x
}

#[test]
fn out_of_range_frame_length_is_a_protocol_error() {
    let e = misbehaving_item(writes_huge_length_then_waits);
    assert_protocol(&e, "4294967295");
}

fn writes_unknown_kind_then_waits(x: u32) -> u32 {
    if x == 2 {
        write_fd(SOCKET, &unknown_kind());
        std::thread::sleep(Duration::from_secs(20));
    }
    x
}

#[test]
fn unknown_frame_kind_is_a_protocol_error() {
    let e = misbehaving_item(writes_unknown_kind_then_waits);
    assert_protocol(&e, "119");
}

fn writes_unknown_kind_and_returns(x: u32) -> u32 {
    if x == 2 {
        write_fd(SOCKET, &unknown_kind());
    }
    x
}

#[test]
fn garbage_from_a_task_that_returns_is_a_protocol_error() {
    // The task finishes right after its write, so by the time the parent
    // reads the garbage the worker may be idle or on the next task.
    let e = misbehaving_item(writes_unknown_kind_and_returns);
    assert_protocol(&e, "119");
}

fn writes_truncated_frame_and_exits(x: u32) -> u32 {
    if x == 2 {
        let mut partial = 100u32.to_le_bytes().to_vec();
        partial.extend_from_slice(&[11; 10]);
        write_fd(SOCKET, &partial);
        exit_now(0);
    }
    x
}

#[test]
fn truncated_frame_then_exit_is_an_error() {
    let e = misbehaving_item(writes_truncated_frame_and_exits);
    if e.is_protocol() {
        assert!(e.to_string().contains("truncated"), "{e}");
    } else {
        assert!(e.is_worker_lost(), "{e}");
    }
    assert!(e.worker().is_some(), "{e}");
}

fn writes_partial_frame_and_returns(x: u32) -> u32 {
    // A header promising 100 bytes, then 10 of them, then silence: the
    // worker's own result frame follows and is taken for the rest.
    let mut partial = 100u32.to_le_bytes().to_vec();
    partial.extend_from_slice(&[11; 10]);
    write_fd(SOCKET, &partial);
    x
}

#[test]
fn partial_frame_then_silence_is_an_error() {
    let pool = Pool::processes(1).unwrap();
    let outcome = pool
        .apply_async(writes_partial_frame_and_returns, (1,))
        .get_timeout(Duration::from_secs(10));
    let e = outcome.expect_err("the task must fail");
    assert!(!e.is_timeout(), "the task hangs: its result never comes");
    assert!(e.is_protocol() || e.is_worker_lost(), "{e}");
    recovers(&pool);
}

fn writes_512_mib_header_and_returns(kind: u8) -> u8 {
    let mut header = (512u32 << 20).to_le_bytes().to_vec();
    header.push(kind);
    write_fd(SOCKET, &header);
    kind
}

#[test]
fn frame_header_claiming_512_mib_is_refused() {
    // A worker never sends an inline frame longer than the shared-memory
    // threshold (128 KiB) plus a header: anything longer is garbage, and
    // waiting for its body waits forever. Once with an unknown kind, once
    // with the kind of a result.
    for kind in [0x77, 11] {
        let pool = Pool::processes(1).unwrap();
        let outcome = pool
            .apply_async(writes_512_mib_header_and_returns, (kind,))
            .get_timeout(Duration::from_secs(10));
        let e = outcome.expect_err("the task must fail");
        assert!(!e.is_timeout(), "kind {kind}: the task hangs");
        assert_protocol(&e, "frame");
        recovers(&pool);
    }
}

fn writes_garbage_once_per_run(x: u32) -> u32 {
    if x == 20 {
        crate::support::register_worker("garbage-runs");
        write_fd(SOCKET, &unknown_kind());
    }
    x
}

#[test]
fn garbage_writer_alone_fails() {
    // Item 20 of 40 writes garbage and returns at once, while the worker
    // holds the next items. Whatever the timing, the writer must be the only
    // one to fail. Which of the tasks in flight wrote the garbage cannot be
    // told from the stream (a result may wait in the worker's buffer while
    // the next task writes), so they all run again, each alone: the writer
    // runs at most twice, as a crashed chunk's items do (at least once).
    // It is a race, so thirty rounds.
    for round in 0..30 {
        let runs = crate::support::Registry::new("garbage-runs");
        let pool = Pool::processes(1).unwrap();
        let outcome = within(LONG, "a map with a garbage writer", move || {
            pool.with_chunksize(1)
                .map(writes_garbage_once_per_run, 0..40)
        });
        let err = outcome.expect_err("the writer fails");
        let failed: Vec<usize> = err.errors().map(|(i, _)| i).collect();
        let errors: Vec<_> = err.errors().collect();
        assert_eq!(
            failed,
            [20],
            "round {round}: only the writer fails: {errors:?}"
        );
        let runs = runs.pids().len();
        assert!(
            (1..=2).contains(&runs),
            "round {round}: the writer ran {runs} times"
        );
    }
}
