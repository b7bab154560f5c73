//! Seed 000: how many numbers of each row of a 200,000 × 5 matrix lie in
//! [4, 8], with every `Pool` method. Each prints the first ten counts; all
//! must agree with the serial loop (`crew demo` times them).
//!
//! `cargo run --release --example howmany` (`CREW_EXAMPLE_SMALL=1`: 2,000 rows)
use std::sync::{Arc, Mutex};

use crew::Pool;

fn howmany_within_range(row: &[i64], minimum: i64, maximum: i64) -> usize {
    row.iter()
        .filter(|&&n| minimum <= n && n <= maximum)
        .count()
}

/// The seed's row-only variant, for `map`.
fn howmany_within_range_rowonly(row: &[i64]) -> usize {
    howmany_within_range(row, 4, 8)
}

/// The seed's `howmany_within_range2`: takes and returns the row's index,
/// because `apply_async` results arrive in completion order.
fn howmany_within_range2(i: usize, row: Vec<i64>, minimum: i64, maximum: i64) -> (usize, usize) {
    (i, howmany_within_range(&row, minimum, maximum))
}

/// Rows of 5 integers in [0, 10) (numpy's `randint(0, 10, size=[rows, 5])`).
fn matrix(rows: usize) -> Vec<Vec<i64>> {
    let mut state = 100u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % 10) as i64
    };
    (0..rows)
        .map(|_| (0..5).map(|_| next()).collect())
        .collect()
}

fn show(method: &str, counts: &[usize]) {
    println!("{method:12} {:?}", &counts[..10]);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let data = matrix(if small { 2_000 } else { 200_000 });
    println!("Number of processors: {}", crew::cpu_count());
    let pool = Pool::threads(crew::cpu_count())?;
    let rows = || data.iter().map(Vec::as_slice);
    let serial: Vec<usize> = rows().map(howmany_within_range_rowonly).collect();
    show("serial", &serial);

    // apply: one blocking round trip per row.
    let apply = |row: &[i64]| pool.apply(howmany_within_range, (row, 4, 8));
    let applied = rows().map(apply).collect::<Result<Vec<_>, _>>()?;
    show("apply", &applied);

    let mapped = pool.map(howmany_within_range_rowonly, rows())?;
    show("map", &mapped);

    let starred = pool.starmap(howmany_within_range, rows().map(|row| (row, 4, 8)))?;
    show("starmap", &starred);

    // apply_async with a callback collecting (index, count); close and join
    // return once every task and callback has run; then re-order by index.
    let results = Arc::new(Mutex::new(Vec::with_capacity(data.len())));
    let async_pool = Pool::threads(crew::cpu_count())?;
    for (i, row) in data.iter().enumerate() {
        let results = results.clone();
        let pending = async_pool.apply_async(howmany_within_range2, (i, row.clone(), 4, 8));
        pending.callback(move |&r| results.lock().unwrap().push(r));
    }
    async_pool.close();
    async_pool.join()?;
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|&(i, _)| i);
    let asynced: Vec<usize> = results.into_iter().map(|(_, count)| count).collect();
    show("apply_async", &asynced);

    let r = pool.map_async(
        |row: Vec<i64>| howmany_within_range_rowonly(&row),
        data.clone(),
    );
    let map_asynced = r.get()?;
    show("map_async", &map_asynced);

    let agree = [&applied, &mapped, &starred, &asynced, &map_asynced]
        .iter()
        .all(|v| **v == serial);
    println!(
        "{} numbers in range; all methods agree: {agree}",
        serial.iter().sum::<usize>()
    );
    assert!(agree);
    Ok(())
}
