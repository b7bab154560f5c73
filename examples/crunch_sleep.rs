//! Seeds 001/003: four `only_sleep` calls and four `crunch_numbers` calls,
//! serially and on an `Executor` of four threads (Python's
//! `ThreadPoolExecutor(4)`). Sleeping parallelises on any number of CPUs;
//! crunching only up to the number of CPUs. Rust has no GIL, so threads
//! speed up crunching too, where Python needed processes.
//!
//! `cargo run --release --example crunch_sleep` (`CREW_EXAMPLE_SMALL=1`: short)
use std::hint::black_box;
use std::time::{Duration, Instant};

use crew::Executor;

const NUM_WORKERS: usize = 4;

/// Wait for a timer to expire, doing nothing.
fn only_sleep(d: Duration) -> u64 {
    std::thread::sleep(d);
    1
}

/// Count to `n` one step at a time; `black_box(1)` stops the compiler from
/// replacing the loop by its result.
fn crunch_numbers(n: u64) -> u64 {
    let mut x = 0;
    while x < n {
        x += black_box(1);
    }
    x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let nap = Duration::from_millis(if small { 20 } else { 1_000 });
    let count = if small { 1_000_000 } else { 800_000_000 };
    let executor = Executor::threads(NUM_WORKERS)?;
    println!("{} CPUs, {NUM_WORKERS} threads", crew::cpu_count());

    let t = Instant::now();
    let naps: u64 = (0..NUM_WORKERS).map(|_| only_sleep(nap)).sum();
    println!(
        "only_sleep     serial time = {:.3?} ({naps} naps)",
        t.elapsed()
    );
    let t = Instant::now();
    let futures: Vec<_> = (0..NUM_WORKERS)
        .map(|_| executor.submit(only_sleep, (nap,)))
        .collect();
    let slept: u64 = futures
        .into_iter()
        .map(|f| f.result())
        .sum::<Result<_, _>>()?;
    println!(
        "only_sleep    threads time = {:.3?} ({slept} naps)",
        t.elapsed()
    );

    let t = Instant::now();
    let serial: u64 = (0..NUM_WORKERS)
        .map(|_| crunch_numbers(black_box(count)))
        .sum();
    println!("crunch_numbers serial time = {:.3?}", t.elapsed());
    let t = Instant::now();
    let futures: Vec<_> = (0..NUM_WORKERS)
        .map(|_| executor.submit(crunch_numbers, (count,)))
        .collect();
    let parallel: u64 = futures
        .into_iter()
        .map(|f| f.result())
        .sum::<Result<_, _>>()?;
    println!("crunch_numbers threads time = {:.3?}", t.elapsed());
    assert_eq!(serial, parallel);
    Ok(())
}
