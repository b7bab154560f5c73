//! A big shared `Array` filled by pool workers in parallel, with no copy:
//! each task gets the array's handle (a few bytes), maps the same memory,
//! and writes its own block. 1 GB by default (`CREW_EXAMPLE_SMALL=1`: 8 MB).
//!
//! `cargo run --release --example big_array`
use crew::Pool;
use crew::shm::Array;

/// Fills `block` of `len / blocks` elements with `i * i`, and sums it back.
fn fill(array: Array<f64>, block: usize, blocks: usize) -> f64 {
    let len = array.len();
    let range = block * len / blocks..(block + 1) * len / blocks;
    let start = range.start;
    // SAFETY: every task writes a different block, and nobody reads the
    // array until the map has returned.
    let part = unsafe { array.slice_mut(range) };
    for (i, x) in part.iter_mut().enumerate() {
        let i = (start + i) as f64;
        *x = i * i;
    }
    part.iter().sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let len: usize = if small { 1 << 20 } else { 1 << 27 }; // 8 MB or 1 GB of f64
    let array = Array::<f64>::new(len)?;
    let pool = Pool::processes(crew::cpu_count())?;
    let blocks = 64;
    let t = std::time::Instant::now();
    let sums = pool.starmap(fill, (0..blocks).map(|b| (array.clone(), b, blocks)))?;
    let total: f64 = sums.iter().sum();
    println!(
        "filled {} MB in {:.0?} on {} workers; sum of squares = {total:.6e}",
        (len * 8) >> 20,
        t.elapsed(),
        pool.workers()
    );
    let n = len as f64;
    let expected = (n - 1.0) * n * (2.0 * n - 1.0) / 6.0;
    assert!((total - expected).abs() / expected < 1e-9);
    assert_eq!(array.get(len - 1), Some(((len - 1) * (len - 1)) as f64));
    Ok(())
}
