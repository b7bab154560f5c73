//! `kill -9` of a worker in the middle of a long map: only the item it was
//! running fails (or, with retries, runs again and succeeds); every other
//! result arrives.

use std::time::Duration;

use crew::core::{Runs, Unary};
use crew::{Pool, Processes};

use crate::support::{LONG, Registry, SIGKILL, eventually, register_worker, send_signal, within};

const N: u64 = 10_000;

fn doubles_slowly(x: u64) -> u64 {
    register_worker("kill9");
    std::thread::sleep(Duration::from_micros(100));
    x * 2
}

fn doubles_slowly_retried(x: u64) -> u64 {
    register_worker("kill9-retried");
    std::thread::sleep(Duration::from_micros(100));
    x * 2
}

/// Runs the map on a helper thread, SIGKILLs the first worker that
/// registered 50 ms after it did, and returns the map's outcome.
fn map_and_kill_one<F>(
    pool: Pool<Processes>,
    task: F,
    tag: &str,
) -> (u32, Result<Vec<u64>, crew::MapError<u64>>)
where
    F: Send + 'static,
    Processes: Runs<'static, Unary<F>, u64, u64>,
{
    let registry = Registry::new(tag);
    let map = std::thread::spawn(move || pool.map(task, 0..N));
    let victim = registry.wait_for(1)[0];
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !map.is_finished(),
        "the map must still run when the worker is killed"
    );
    assert!(send_signal(victim, SIGKILL), "kill -9 {victim}");
    let outcome = within(LONG, "a map whose worker was killed", move || {
        map.join().expect("the map thread does not panic")
    });
    (victim, outcome)
}

#[test]
fn kill_9_fails_only_the_running_item() {
    let pool = Pool::processes(2).unwrap();
    let (victim, outcome) = map_and_kill_one(pool.clone(), doubles_slowly, "kill9");
    let err = outcome.expect_err("the item the killed worker ran must fail");
    assert_eq!(err.len(), N as usize);
    assert_eq!(
        err.failed(),
        1,
        "exactly the item running on worker {victim} fails"
    );
    for (i, r) in err.results().iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u64 * 2),
            Err(e) => {
                assert!(e.is_worker_lost(), "{e}");
                let cause = e.worker_lost_cause().unwrap();
                assert!(cause.contains("SIGKILL"), "{cause}");
                assert!(e.worker().is_some_and(|w| w < 2), "{e}");
                assert_eq!(e.index(), Some(i));
            }
        }
    }
    // The victim is gone for good (reaped by its proxy), and replaced.
    eventually(LONG, "the killed worker is reaped", || {
        crate::support::proc_state(victim).is_none()
    });
    let after = within(LONG, "a map after the kill", move || {
        pool.map(|x: u64| x, 0..100)
    });
    assert_eq!(after.unwrap().len(), 100);
}

#[test]
fn kill_9_with_retries_loses_nothing() {
    let pool = Pool::builder()
        .processes(2)
        .retries(2, Duration::from_millis(10))
        .build()
        .unwrap();
    let (_, outcome) = map_and_kill_one(pool, doubles_slowly_retried, "kill9-retried");
    let values = outcome.expect("the killed item is retried and succeeds");
    assert_eq!(values, (0..N).map(|x| x * 2).collect::<Vec<_>>());
}
