//! The task functions of the conformance suite: plain `fn` items over plain
//! data (integers, `String`, `Vec`, tuples, `char`, `bool`), capturing
//! nothing, so the same bodies run on threads and in worker processes.

use std::path::Path;
use std::time::{Duration, Instant};

use super::GATE_LIMIT;

pub(crate) fn double(x: u64) -> u64 {
    2 * x
}

pub(crate) fn square(x: u64) -> u64 {
    x * x
}

/// A cheap mix of the bits, so a checksum notices a misplaced result.
pub(crate) fn scramble(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ x
}

pub(crate) fn answer() -> u64 {
    42
}

pub(crate) fn one(a: u64) -> u64 {
    a + 1
}

pub(crate) fn two(a: u64, b: String) -> String {
    format!("{a}:{b}")
}

pub(crate) fn three(s: String, n: usize, end: char) -> String {
    let mut out = s.repeat(n);
    out.push(end);
    out
}

pub(crate) fn four(a: u8, b: u16, c: u32, d: u64) -> u64 {
    u64::from(a) * 1000 + u64::from(b) * 100 + u64::from(c) * 10 + d
}

pub(crate) fn five(row: Vec<i64>, lo: i64, hi: i64, scale: i64, negate: bool) -> i64 {
    let n = row.iter().filter(|&&x| lo <= x && x <= hi).count() as i64 * scale;
    if negate { -n } else { n }
}

/// Six digits in argument order: `six(1, 2, 3, 4, 5, 6) == 123456`.
pub(crate) fn six(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> u64 {
    ((((a * 10 + b) * 10 + c) * 10 + d) * 10 + e) * 10 + f
}

pub(crate) fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Sleeps a little, differently for each item, so tasks finish out of
/// input order.
pub(crate) fn jitter(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros((x * 37) % 400));
    x
}

pub(crate) fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Panics on 3, with a message naming the item.
pub(crate) fn fails_on_3(x: u64) -> u64 {
    if x == 3 {
        panic!("boom at {x}");
    }
    x * 10
}

/// Panics on every item that is 3 modulo 4.
pub(crate) fn fails_on_3_mod_4(x: u64) -> u64 {
    if x % 4 == 3 {
        panic!("bad item {x}");
    }
    x
}

pub(crate) fn fails_on_3_pair(a: u64, b: u64) -> u64 {
    fails_on_3(a) + b
}

pub(crate) fn fail_now(message: String) -> u64 {
    panic!("{message}");
}

/// The file a gated task creates when it starts.
pub(crate) fn started_marker(gate: &str, id: u64) -> String {
    format!("{gate}.started-{id}")
}

/// Announces that task `id` started, waits for the gate file to exist, and
/// returns `id`. Gives up (panics) after [`GATE_LIMIT`] so a failed test
/// cannot block a worker for ever.
pub(crate) fn gated(gate: String, id: u64) -> u64 {
    std::fs::write(started_marker(&gate, id), b"").expect("write the start marker");
    let deadline = Instant::now() + GATE_LIMIT;
    while !Path::new(&gate).exists() {
        assert!(Instant::now() < deadline, "gate {gate} never opened");
        std::thread::sleep(Duration::from_millis(1));
    }
    id
}

/// [`gated`] for the one-argument calls (`map`, `imap`, `Executor::map`).
pub(crate) fn gated_item(item: (String, u64)) -> u64 {
    gated(item.0, item.1)
}

/// Panics for `id` 0; otherwise [`gated`].
pub(crate) fn fails_first_then_gated(gate: String, id: u64) -> u64 {
    if id == 0 {
        panic!("call {id} fails");
    }
    gated(gate, id)
}
