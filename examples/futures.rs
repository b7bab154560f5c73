//! concurrent.futures' toolbox on crew: `wait` (first completed, all
//! completed), `as_completed`, `cancel` and `add_done_callback`.
//!
//! `cargo run --example futures`
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crew::{Executor, ReturnWhen, as_completed, wait};

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let executor = Executor::threads(2)?;

    // as_completed: the short naps come back first, whatever the order of submission.
    let futures: Vec<_> = [300, 100, 150]
        .into_iter()
        .map(|ms| executor.submit(nap, (ms,)))
        .collect();
    let order: Vec<u64> = as_completed(futures)
        .map(|f| f.result())
        .collect::<Result<_, _>>()?;
    println!("as_completed order: {order:?}");

    // wait(FIRST_COMPLETED) returns as soon as one is done.
    let t = Instant::now();
    let futures = vec![executor.submit(nap, (50,)), executor.submit(nap, (400,))];
    let first = wait(futures, ReturnWhen::FirstCompleted, None);
    println!(
        "first completed after {:.0?}: {} done, {} not done",
        t.elapsed(),
        first.done.len(),
        first.not_done.len()
    );
    let rest = wait(
        first.not_done,
        ReturnWhen::AllCompleted,
        Some(Duration::from_secs(5)),
    );
    println!(
        "all completed: {} done, {} not done",
        rest.done.len(),
        rest.not_done.len()
    );

    // cancel: with both workers busy, queued tasks can still be cancelled.
    let busy: Vec<_> = (0..2).map(|_| executor.submit(nap, (200,))).collect();
    let queued: Vec<_> = (0..5).map(|_| executor.submit(nap, (200,))).collect();
    let cancelled = queued.iter().filter(|f| f.cancel()).count();
    println!("cancelled {cancelled} of {} queued tasks", queued.len());
    for f in queued {
        assert!(f.cancelled() && f.result().unwrap_err().is_cancelled());
    }

    // add_done_callback runs once the task is done.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let f = executor.submit(nap, (10,));
    f.add_done_callback(move |r| {
        c.fetch_add(1, Ordering::SeqCst);
        println!("callback saw {:?}", r.as_ref().ok());
    });
    assert_eq!(f.result()?, 10);
    for f in busy {
        f.result()?;
    }
    executor.shutdown(true, false);
    println!("callbacks run: {}", calls.load(Ordering::SeqCst));
    Ok(())
}
