//! Seed 001: joblib's `Parallel(n_jobs=…)(delayed(sqrt)(i ** 2) for i in
//! range(…))`, with `n_jobs`, `prefer` and `verbose`.
//!
//! `cargo run --release --example joblib_sqrt` (`CREW_EXAMPLE_SMALL=1`: 10,000 calls)
use std::time::Instant;

use crew::{Parallel, Prefer, delayed};

fn sqrt(x: f64) -> f64 {
    x.sqrt()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    crew::init(); // process workers re-execute this program
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let n = if small { 10_000 } else { 100_000 };

    // Parallel(n_jobs=2)(delayed(sqrt)(i**2) for i in range(10)): processes,
    // as joblib's default back-end.
    let output = Parallel::new()
        .n_jobs(2)
        .run((0..10).map(|i| delayed(sqrt, ((i * i) as f64,))))?;
    println!("{output:?}");

    for n_jobs in [1, -1] {
        let t = Instant::now();
        let out = Parallel::new()
            .n_jobs(n_jobs)
            .prefer(Prefer::Threads)
            .run((0..n).map(|i| delayed(sqrt, ((i * i) as f64,))))?;
        assert_eq!(out[n - 1], (n - 1) as f64);
        println!(
            "n_jobs={n_jobs:>2}, prefer=threads: {n} calls in {:.1?}",
            t.elapsed()
        );
    }

    // verbose=10: joblib-style progress lines on stderr.
    let out = Parallel::new()
        .n_jobs(-1)
        .prefer(Prefer::Threads)
        .verbose(10)
        .run((0..n).map(|i| delayed(sqrt, ((i * i) as f64,))))?;
    println!("with verbose(10): {:?} ... {}", &out[..10], out[n - 1]);
    Ok(())
}
