//! Seed 002: four processes each make a random string and put it on a
//! shared queue with its position; the parent collects them and puts them
//! back in order (Python's `mp.Queue` with `(pos, rand_str)` tuples).
//!
//! `cargo run --release --example queue_strings`
use crew::{Process, Queue};

/// A short random string from a small xorshift generator seeded by `seed`.
fn rand_string(length: usize, pos: usize, output: Queue<(usize, String)>) {
    let mut x =
        ((std::process::id() as u64) << 16) ^ (pos as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let s: String = (0..length)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect();
    output.put((pos, s)).expect("the queue is open");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let output = Queue::new()?;
    let mut procs: Vec<_> = (0..4)
        .map(|pos| Process::new(rand_string, (5, pos, output.clone())))
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    // As the seed does: wait for every process (a failed one reports its
    // panic here instead of leaving us waiting on the queue), then collect.
    for p in procs {
        p.result()?;
    }
    let mut results: Vec<(usize, String)> = Vec::new();
    while let Ok(item) = output.try_get() {
        results.push(item);
    }
    println!("as they came: {results:?}");
    results.sort();
    println!(
        "in order:     {:?}",
        results.iter().map(|(_, s)| s).collect::<Vec<_>>()
    );
    assert_eq!(
        results.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(results.iter().all(|(_, s)| s.len() == 5));
    Ok(())
}
