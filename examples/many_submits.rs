//! A fixed run of many tiny submits gathered by `as_completed`, on two
//! worker processes: the program profiled for the per-task cost of
//! `Executor::submit` (`processes.submit_as_completed_1m` in
//! `crew bench overhead` times the same loop with a million tasks).
//! `ci/profile/submits.sh` reads from it the counts that load does not
//! change: instructions per thread and per worker (callgrind), context
//! switches and page faults (perf stat), system calls (strace).
//!
//! `cargo run --release --example many_submits -- [tasks]` (100,000 by
//! default; `CREW_EXAMPLE_SMALL=1`: 10,000)
use std::hint::black_box;

use crew::{Executor, as_completed};

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tasks: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None if std::env::var_os("CREW_EXAMPLE_SMALL").is_some() => 10_000,
        None => 100_000,
    };
    let ex = Executor::processes(2)?;
    // Warm: the workers are up and the slot shelves stocked before the run.
    let warm: Vec<crew::Future<u64>> = (0..1_000).map(|x| ex.submit(square, (x,))).collect();
    for f in warm {
        f.result()?;
    }
    let futures: Vec<crew::Future<u64>> = (0..tasks)
        .map(|x| ex.submit(|x: u64| square(black_box(x)), (x,)))
        .collect();
    let mut sum = 0u64;
    for f in as_completed(futures) {
        sum = sum.wrapping_add(f.result()?);
    }
    let want = (0..tasks).fold(0u64, |a, x| a.wrapping_add(square(x)));
    assert_eq!(sum, want, "every result comes back once");
    println!("{tasks} tasks, sum {sum}");
    Ok(())
}
