//! The seeds' workloads as plain kernels, shared by `crew demo` and
//! `crew bench seeds`: count-in-range rows, Monte Carlo π, the Parzen-window
//! KDE, `crunch_numbers` and `only_sleep`. They follow the anchors
//! (`shared/anchors/rust/src/seeds.rs`) so figures compare side by side.

use std::time::Duration;

/// SplitMix64 finaliser: a 64-bit mixing function, used both as a
/// counter-based generator (a hash of a sample index) and as a stream.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A SplitMix64 stream, seeded exactly as the anchors' `Rng`.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(mix64(seed ^ 0x5eed))
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    #[inline]
    pub(crate) fn f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// An integer in `[0, n)` (multiply-shift; the bias is negligible here).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A standard normal sample (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

// ---------- seed 000: howmany_within_range ----------

/// A naive user's matrix, as the seed builds it: `rows` rows of 5 integers
/// in `[0, 10)`, a `Vec` of row `Vec`s (seed 100, as the anchors).
pub(crate) fn howmany_matrix(rows: usize) -> Vec<Vec<i64>> {
    let mut rng = Rng::new(100);
    (0..rows)
        .map(|_| (0..5).map(|_| rng.below(10) as i64).collect())
        .collect()
}

/// How many numbers of `row` lie in `[minimum, maximum]`.
pub(crate) fn howmany_within_range(row: &[i64], minimum: i64, maximum: i64) -> usize {
    row.iter()
        .filter(|&&v| minimum <= v && v <= maximum)
        .count()
}

// ---------- seeds 002/003: Monte Carlo pi ----------

/// The seed of the π sampler (the anchors use 42).
pub(crate) const PI_SEED: u64 = 42;

/// Whether sample `i` falls in the quarter circle. It depends only on
/// `(seed, i)`, so every split of the index range gives the same count.
#[inline]
pub(crate) fn pi_sample_inside(seed: u64, i: u64) -> bool {
    let a = mix64(seed ^ i.wrapping_mul(GOLDEN));
    let b = mix64(a ^ GOLDEN);
    let x = unit_f64(a);
    let y = unit_f64(b);
    x * x + y * y <= 1.0
}

/// The samples of `lo..hi` that fall inside (never inlined, as
/// [`parzen_density`]).
#[inline(never)]
pub(crate) fn count_inside(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&i| pi_sample_inside(PI_SEED, i)).count() as u64
}

/// `0..n` cut into `parts` contiguous ranges.
pub(crate) fn split_range(n: u64, parts: u64) -> Vec<(u64, u64)> {
    (0..parts)
        .map(|c| (c * n / parts, (c + 1) * n / parts))
        .collect()
}

// ---------- seed 002: Parzen-window KDE ----------

/// A point in 3-D.
pub(crate) type P3 = [f64; 3];

/// The KDE inputs: standard-normal samples and query points, and the window
/// widths h = 0.1, 0.2, … (seed 7, as the anchors).
#[derive(Debug, Clone)]
pub(crate) struct Kde {
    pub(crate) samples: Vec<P3>,
    pub(crate) queries: Vec<P3>,
    pub(crate) widths: Vec<f64>,
}

impl Kde {
    /// The anchors' sizes are 10,000 samples, 1,000 queries, 10 widths.
    pub(crate) fn new(samples: usize, queries: usize, widths: usize) -> Kde {
        let mut rng = Rng::new(7);
        let mut point = |_| [rng.normal(), rng.normal(), rng.normal()];
        let s = (0..samples).map(&mut point).collect();
        let q = (0..queries).map(&mut point).collect();
        Kde {
            samples: s,
            queries: q,
            widths: (1..=widths).map(|i| i as f64 / 10.0).collect(),
        }
    }
}

/// The Parzen-window (hypercube of side `h`) density at each query point:
/// k / (n·h³) where k counts the samples inside the window. Never inlined,
/// so that the serial loop and every pool run the very same machine code.
#[inline(never)]
pub(crate) fn parzen_density(samples: &[P3], queries: &[P3], h: f64) -> Vec<f64> {
    let half = h / 2.0;
    let norm = 1.0 / (samples.len() as f64 * h * h * h);
    queries
        .iter()
        .map(|q| {
            let k = samples
                .iter()
                .filter(|x| {
                    (q[0] - x[0]).abs() <= half
                        && (q[1] - x[1]).abs() <= half
                        && (q[2] - x[2]).abs() <= half
                })
                .count();
            k as f64 * norm
        })
        .collect()
}

/// A checksum of densities, summed in a fixed order so that serial and
/// parallel runs give bit-identical totals.
pub(crate) fn total(densities: &[Vec<f64>]) -> f64 {
    densities.iter().flatten().sum()
}

// ---------- seeds 001/003: crunch_numbers and only_sleep ----------

/// Counts to `n` one step at a time, as the seed's `while x < n: x += 1`.
///
/// The count must not be folded away (DESIGN §3) and its speed must not
/// depend on the thread running it. An empty `asm!` that claims to change
/// `x` does both while `x` stays in a register. Measured on the project
/// machine, 400,000,000 steps, 3 calls on the main thread and 2 on spawned
/// threads, twice: the anchors' `x = black_box(x) + 1` (a store and a load on
/// every step's critical path) took 166 to 1,026 ms; `x += black_box(1)` 282
/// to 432 ms; this form 136 to 263 ms, mostly 136 to 156. Never inlined, so
/// that the serial loop and every pool run the very same machine code.
#[inline(never)]
pub(crate) fn crunch_numbers(n: u64) -> u64 {
    let mut x = 0u64;
    while x < n {
        x += 1;
        // SAFETY: the assembly is empty: it reads and writes only `x`'s
        // register, touches no memory, no stack and no flags.
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) x, options(nomem, nostack, preserves_flags))
        };
    }
    x
}

/// The count that makes [`crunch_numbers`] take about 0.5 s on the project
/// machine (about 0.35 ns a step, see above).
pub(crate) const CRUNCH_HALF_SECOND: u64 = 1_400_000_000;

/// Waits for a timer, doing nothing (the seed's `only_sleep`).
pub(crate) fn only_sleep(d: Duration) -> u64 {
    std::thread::sleep(d);
    1
}
