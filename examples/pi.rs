//! Seeds 002/003: Monte Carlo π three ways: a serial loop, one task per
//! sample (`pool.map` over `0..n`, which batches the samples automatically)
//! and ten chunk tasks. Sample `i` depends only on `(SEED, i)`, so all three
//! count exactly the same points.
//!
//! `cargo run --release --example pi` (`CREW_EXAMPLE_SMALL=1`: 100,000 samples)
use std::time::Instant;

use crew::Pool;

const SEED: u64 = 42;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether the point of sample `i`, uniform in the unit square, falls inside
/// the quarter circle.
fn inside(i: u64) -> bool {
    let a = mix64(SEED ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let b = mix64(a ^ 0x9e37_79b9_7f4a_7c15);
    let unit = |z: u64| (z >> 11) as f64 / (1u64 << 53) as f64;
    let (x, y) = (unit(a), unit(b));
    x * x + y * y <= 1.0
}

fn count_inside(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&i| inside(i)).count() as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let n: u64 = if small { 100_000 } else { 10_000_000 };
    let pool = Pool::threads(crew::cpu_count())?;
    let estimate = |hits: u64| 4.0 * hits as f64 / n as f64;

    let t = Instant::now();
    let serial = count_inside(0, n);
    println!(
        "serial:             π ≈ {:.6} in {:.1?}",
        estimate(serial),
        t.elapsed()
    );

    let t = Instant::now();
    let per_sample = pool
        .map(inside, 0..n)?
        .into_iter()
        .filter(|&hit| hit)
        .count() as u64;
    println!(
        "a task per sample:  π ≈ {:.6} in {:.1?}",
        estimate(per_sample),
        t.elapsed()
    );

    let t = Instant::now();
    let chunks = (0..10).map(|c| (c * n / 10, (c + 1) * n / 10));
    let chunked: u64 = pool.starmap(count_inside, chunks)?.into_iter().sum();
    println!(
        "10 chunk tasks:     π ≈ {:.6} in {:.1?}",
        estimate(chunked),
        t.elapsed()
    );

    assert!(
        serial == per_sample && serial == chunked,
        "every split counts the same points"
    );
    println!("{n} samples, {serial} inside, the same count all three ways");
    Ok(())
}
