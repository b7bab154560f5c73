//! Seed 000: how many numbers of each row of a 200,000 × 5 matrix lie in
//! [4, 8], with every `Pool` method. Each prints the first ten counts; all
//! must agree with the serial loop.
//!
//! `cargo run --release --example howmany` (`CREW_EXAMPLE_SMALL=1`: 2,000 rows)
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crew::Pool;

fn howmany_within_range(row: &[i64], minimum: i64, maximum: i64) -> usize {
    row.iter()
        .filter(|&&n| minimum <= n && n <= maximum)
        .count()
}

/// The seed's `howmany_within_range2`: takes and returns the row's index,
/// because `apply_async` results arrive in completion order.
fn howmany_within_range2(i: usize, row: Vec<i64>, minimum: i64, maximum: i64) -> (usize, usize) {
    (i, howmany_within_range(&row, minimum, maximum))
}

/// Rows of 5 integers in [0, 10) from a SplitMix64 stream (numpy's
/// `randint(0, 10, size=[rows, 5])` in the seed).
fn matrix(rows: usize) -> Vec<Vec<i64>> {
    let mut state = 100u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % 10) as i64
    };
    (0..rows)
        .map(|_| (0..5).map(|_| next()).collect())
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let data = matrix(if small { 2_000 } else { 200_000 });
    println!("Number of processors: {}", crew::cpu_count());
    let pool = Pool::threads(crew::cpu_count())?;
    let t = Instant::now();
    let serial: Vec<usize> = data
        .iter()
        .map(|row| howmany_within_range(row, 4, 8))
        .collect();
    println!("serial       {:?} {:.1?}", &serial[..10], t.elapsed());

    // apply: one blocking round trip per row.
    let t = Instant::now();
    let applied: Vec<usize> = data
        .iter()
        .map(|row| pool.apply(howmany_within_range, (row.as_slice(), 4, 8)))
        .collect::<Result<_, _>>()?;
    println!("apply        {:?} {:.1?}", &applied[..10], t.elapsed());

    let t = Instant::now();
    let mapped = pool.map(|row: &Vec<i64>| howmany_within_range(row, 4, 8), &data)?;
    println!("map          {:?} {:.1?}", &mapped[..10], t.elapsed());

    let t = Instant::now();
    let starred = pool.starmap(
        howmany_within_range,
        data.iter().map(|row| (row.as_slice(), 4, 8)),
    )?;
    println!("starmap      {:?} {:.1?}", &starred[..10], t.elapsed());

    // apply_async with a callback collecting (index, count); then close and
    // join, which returns once every task and callback has run; re-order.
    let t = Instant::now();
    let results = Arc::new(Mutex::new(Vec::with_capacity(data.len())));
    let async_pool = Pool::threads(crew::cpu_count())?;
    for (i, row) in data.iter().enumerate() {
        let results = results.clone();
        async_pool
            .apply_async(howmany_within_range2, (i, row.clone(), 4, 8))
            .callback(move |&r| results.lock().unwrap().push(r));
    }
    async_pool.close();
    async_pool.join()?;
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|&(i, _)| i);
    let asynced: Vec<usize> = results.into_iter().map(|(_, count)| count).collect();
    println!("apply_async  {:?} {:.1?}", &asynced[..10], t.elapsed());

    let t = Instant::now();
    let r = pool.map_async(
        |row: Vec<i64>| howmany_within_range(&row, 4, 8),
        data.clone(),
    );
    let map_asynced = r.get()?;
    println!("map_async    {:?} {:.1?}", &map_asynced[..10], t.elapsed());

    let agree = [&applied, &mapped, &starred, &asynced, &map_asynced]
        .iter()
        .all(|v| **v == serial);
    println!(
        "total in range: {}; all methods agree: {agree}",
        serial.iter().sum::<usize>()
    );
    assert!(agree);
    Ok(())
}
