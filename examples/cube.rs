//! Seed 002: `cube` with `Pool.map` and `Pool.apply_async`.
//!
//! `cargo run --example cube`
use crew::Pool;

fn cube(x: i64) -> i64 {
    x.pow(3)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // mp.Pool(processes=4): four worker processes.
    let pool = Pool::processes(4)?;

    // pool.map(cube, range(1, 7))
    let results = pool.map(cube, 1..7)?;
    println!("map:         {results:?}");

    // [pool.apply_async(cube, args=(x,)) for x in range(1, 7)], then .get() each
    let handles: Vec<_> = (1..7).map(|x| pool.apply_async(cube, (x,))).collect();
    let output: Vec<i64> = handles
        .into_iter()
        .map(|h| h.get())
        .collect::<Result<_, _>>()?;
    println!("apply_async: {output:?}");

    assert_eq!(results, [1, 8, 27, 64, 125, 216]);
    assert_eq!(output, results);
    Ok(())
}
