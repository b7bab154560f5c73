//! Seed 002: Parzen-window density estimation. 10,000 points drawn from a
//! 3-D standard normal, the density at 1,000 query points for window widths
//! h = 0.1 … 1.0, serially and on a thread pool (one task per width).
//!
//! `cargo run --release --example kde` (`CREW_EXAMPLE_SMALL=1`: 1,000 × 100)
use std::time::Instant;

use crew::Pool;

type Point = [f64; 3];

/// Standard-normal points from a SplitMix64 stream (Box-Muller).
fn normal_points(n: usize, state: &mut u64) -> Vec<Point> {
    let mut uniform = || {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut normal =
        || (-2.0 * (1.0 - uniform()).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
    (0..n).map(|_| [normal(), normal(), normal()]).collect()
}

/// The density at each query point with a hypercube window of side `h`:
/// the number of samples inside the window, divided by n·h³.
fn parzen_density(samples: &[Point], queries: &[Point], h: f64) -> Vec<f64> {
    let inside = |q: &Point, x: &Point| (0..3).all(|d| (q[d] - x[d]).abs() <= h / 2.0);
    let norm = 1.0 / (samples.len() as f64 * h * h * h);
    queries
        .iter()
        .map(|q| samples.iter().filter(|x| inside(q, x)).count() as f64 * norm)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let (n, m) = if small { (1_000, 100) } else { (10_000, 1_000) };
    let mut state = 7;
    let samples = normal_points(n, &mut state);
    let queries = normal_points(m, &mut state);
    let widths: Vec<f64> = (1..=10).map(|i| i as f64 / 10.0).collect();
    let pool = Pool::threads(crew::cpu_count())?;

    let t = Instant::now();
    let serial: Vec<Vec<f64>> = widths
        .iter()
        .map(|&h| parzen_density(&samples, &queries, h))
        .collect();
    let serial_time = t.elapsed();

    // A blocking map may borrow the samples: no copies, no Arc.
    let t = Instant::now();
    let parallel = pool.map(
        |h: f64| parzen_density(&samples, &queries, h),
        widths.iter().copied(),
    )?;
    let parallel_time = t.elapsed();

    for (h, d) in widths.iter().zip(&parallel) {
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        println!("h = {h:.1}: mean density at the queries {mean:.4}");
    }
    let speedup = serial_time.as_secs_f64() / parallel_time.as_secs_f64();
    println!(
        "serial {serial_time:.1?}, {} threads {parallel_time:.1?}: speed-up {speedup:.2}x",
        pool.workers()
    );
    assert_eq!(serial, parallel);
    println!("parallel densities equal the serial ones");
    Ok(())
}
