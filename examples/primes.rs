//! Seed 003: which of these big numbers are prime? One `submit` per number
//! on an `Executor` (Python's `ProcessPoolExecutor`, here on threads), the
//! answers printed as they complete (`as_completed`).
//!
//! `cargo run --release --example primes` (`CREW_EXAMPLE_SMALL=1`: small numbers)
use crew::{Executor, as_completed};

const PRIMES: [u64; 6] = [
    112272535095293,
    112582705942171,
    112272535095293,
    115280095190773,
    115797848077099,
    1099726899285419,
];

const SMALL: [u64; 6] = [
    1_000_003,
    1_000_033,
    999_999,
    1_000_037,
    1_000_039,
    1_000_000_007,
];

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n == 2 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let sqrt_n = (n as f64).sqrt() as u64;
    (3..=sqrt_n).step_by(2).all(|i| !n.is_multiple_of(i))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small = std::env::var_os("CREW_EXAMPLE_SMALL").is_some();
    let numbers = if small { SMALL } else { PRIMES };
    let executor = Executor::threads(crew::cpu_count())?;
    // Each task returns its number with the answer: completion order is not
    // submission order.
    let futures: Vec<_> = numbers
        .iter()
        .map(|&n| executor.submit(|n: u64| (n, is_prime(n)), (n,)))
        .collect();
    let mut primes = 0;
    for future in as_completed(futures) {
        let (number, prime) = future.result()?;
        println!("{number} is prime: {prime}");
        primes += usize::from(prime);
    }
    println!("{primes} of {} numbers are prime", numbers.len());
    Ok(())
}
