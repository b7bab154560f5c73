//! Seeds 002/003: four processes add 1,000 to one shared counter each.
//! With the lock the total is exactly 4,000; without it, increments race and
//! some are lost (Python's `Value('i')` with and without `get_lock()`).
//!
//! `cargo run --release --example shared_counter`
use crew::Process;
use crew::shm::Value;
use crew::sync::Event;

/// Read, then write: another process may write in between.
fn add_unlocked(counter: Value<i64>, n: u32, go: Event) {
    go.wait();
    for _ in 0..n {
        let v = counter.get();
        std::hint::black_box(&v);
        counter.set(v + 1);
    }
}

/// Read-modify-write under the value's lock.
fn add_locked(counter: Value<i64>, n: u32, go: Event) {
    go.wait();
    for _ in 0..n {
        counter.update(|v| *v += 1);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = 1_000;

    // Every process waits for `go`, so the four really run at once.
    let counter = Value::new(0i64)?;
    let go = Event::new()?;
    let mut procs: Vec<_> = (0..4)
        .map(|_| Process::new(add_locked, (counter.clone(), n, go.clone())))
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    go.set();
    for p in procs {
        p.result()?;
    }
    println!("with the lock:    {} (expected {})", counter.get(), 4 * n);
    assert_eq!(counter.get(), 4 * n as i64);

    let racy = Value::new(0i64)?;
    let go = Event::new()?;
    let mut procs: Vec<_> = (0..4)
        .map(|_| Process::new(add_unlocked, (racy.clone(), n, go.clone())))
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    std::thread::sleep(std::time::Duration::from_millis(50)); // let them all reach `go`
    go.set();
    for p in procs {
        p.result()?;
    }
    let total = racy.get();
    println!(
        "without the lock: {total} ({} increments lost)",
        4 * n as i64 - total
    );
    Ok(())
}
