//! Seed 002's bandwidth sweep (Parzen-window densities for h = 0.1 … 1.0)
//! through a `Memory` cache, on worker processes that store what they
//! compute: a second sweep, or a second run of this program, reads every
//! density back instead of computing it.
//!
//! `cargo run --release --example kde_cache` twice (`CREW_EXAMPLE_SMALL=1`:
//! 1,000 × 100; `CREW_CACHE_DIR` picks the folder).
use std::time::Instant;

use crew::{Memory, Pool};

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

/// The density at each query point with a hypercube window of side `h`.
fn parzen_density(samples: Vec<Point>, queries: Vec<Point>, h: f64) -> Vec<f64> {
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
    let dir = std::env::var_os("CREW_CACHE_DIR")
        .map_or_else(|| std::env::temp_dir().join("crew-kde-cache"), Into::into);

    let mem = Memory::new(&dir)?;
    let kde = mem.cache(parzen_density);
    let pool = Pool::processes(crew::cpu_count())?;
    let calls = || {
        widths
            .iter()
            .map(|&h| (samples.clone(), queries.clone(), h))
    };

    let mut sweeps = Vec::new();
    for sweep in ["first", "second"] {
        let before = mem.stats();
        let t = Instant::now();
        let densities = kde.starmap(&pool, calls())?;
        let took = t.elapsed();
        let now = mem.stats();
        println!(
            "{sweep} sweep: {took:.1?}, {} widths computed, {} from the cache (saving {:.1?})",
            now.misses - before.misses,
            now.hits - before.hits,
            now.saved - before.saved,
        );
        sweeps.push(densities);
    }
    for (h, d) in widths.iter().zip(&sweeps[1]) {
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        println!("h = {h:.1}: mean density at the queries {mean:.4}");
    }
    assert_eq!(sweeps[0], sweeps[1]);
    let direct = parzen_density(samples.clone(), queries.clone(), widths[4]);
    assert_eq!(sweeps[1][4], direct);
    println!(
        "cached densities equal computed ones; cache in {}",
        dir.display()
    );
    Ok(())
}
