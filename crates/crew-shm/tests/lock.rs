//! Robust locks: a holder killed with SIGKILL hands the lock to the next
//! acquirer with the news, never a deadlock.

use crew_shm::{Condition, Event, Lock, RLock, Value};

use crate::common::{self, Child};

#[test]
fn holder_killed_next_acquirer_recovers() {
    const NAME: &str = concat!(module_path!(), "::holder_killed_next_acquirer_recovers");
    type Arg = (Lock, RLock, Value<[u64; 2]>, Event);
    if common::role().is_some() {
        let (lock, rlock, value, holding): Arg = common::arg();
        let _lock = lock.acquire().unwrap();
        let _outer = rlock.acquire().unwrap();
        let _inner = rlock.acquire().unwrap();
        let mut pair = value.lock().unwrap();
        pair[0] = 1; // half of a two-field update...
        holding.set();
        std::thread::sleep(common::PATIENCE); // ...killed before the other half
        unreachable!("the parent kills this process");
    }
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let value = Value::new([0u64; 2]).unwrap();
    let holding = Event::new().unwrap();
    let mut child = Child::spawn(
        NAME,
        "holder",
        &(lock.clone(), rlock.clone(), value.clone(), holding.clone()),
    );
    assert!(
        holding.wait_timeout(common::PATIENCE),
        "child never took the locks"
    );
    assert!(
        lock.try_acquire().unwrap_err().is_timeout(),
        "held by the child"
    );
    child.kill();
    let (status, _) = child.wait();
    assert!(!status.success());

    let error = lock.acquire_timeout(common::PATIENCE).unwrap_err();
    assert!(error.is_owner_dead(), "told that the holder died: {error}");
    println!("lock: {error}");
    drop(error.into_guard().expect("the caller holds the lock"));
    assert!(lock.acquire().is_ok(), "usable and clean after recovery");

    let error = rlock.acquire_timeout(common::PATIENCE).unwrap_err();
    assert!(error.is_owner_dead());
    let guard = error.into_guard().unwrap();
    let again = rlock.acquire().unwrap(); // re-entrant as usual
    drop((again, guard));
    assert!(rlock.try_acquire().is_ok());

    let error = value.lock_timeout(common::PATIENCE).unwrap_err();
    assert!(error.is_owner_dead());
    let mut pair = error.into_guard().unwrap();
    assert_eq!(
        *pair,
        [1, 0],
        "the half-written value is visible, and flagged"
    );
    pair[1] = 1; // repair
    drop(pair);
    assert_eq!(value.get(), [1, 1]);
}

#[test]
fn lock_excludes_across_processes() {
    const NAME: &str = concat!(module_path!(), "::lock_excludes_across_processes");
    if common::role().is_some() {
        let (lock, inside): (Lock, Value<u32>) = common::arg();
        for _ in 0..200 {
            let _guard = lock.acquire().unwrap();
            let n = inside.update(|n| {
                *n += 1;
                *n
            });
            assert_eq!(n, 1, "two processes inside the critical section");
            std::hint::spin_loop();
            inside.update(|n| *n -= 1);
        }
        return;
    }
    let lock = Lock::new().unwrap();
    let inside = Value::new(0u32).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| Child::spawn(NAME, "worker", &(lock.clone(), inside.clone())))
        .collect();
    for child in children {
        child.assert_success();
    }
}

#[test]
fn condition_waiter_is_told_when_the_lock_holder_dies() {
    const NAME: &str = concat!(
        module_path!(),
        "::condition_waiter_is_told_when_the_lock_holder_dies"
    );
    if common::role().is_some() {
        let (cond, holding): (Condition, Event) = common::arg();
        let _guard = cond.acquire().unwrap(); // granted once the parent waits
        holding.set();
        std::thread::sleep(common::PATIENCE);
        unreachable!("the parent kills this process");
    }
    let cond = Condition::new().unwrap();
    let holding = Event::new().unwrap();
    let mut guard = cond.acquire().unwrap();
    let child = Child::spawn(NAME, "holder", &(cond.clone(), holding.clone()));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut child = child;
            assert!(
                holding.wait_timeout(common::PATIENCE),
                "child never took the lock"
            );
            child.kill();
            let _ = child.wait();
        });
        // Each wait releases the lock; once the child has taken it, the wait
        // times out and can only re-acquire it after the child is killed.
        let start = std::time::Instant::now();
        let error = loop {
            assert!(
                start.elapsed() < common::PATIENCE,
                "never saw the holder die"
            );
            match cond.wait_timeout(&mut guard, std::time::Duration::from_millis(50)) {
                Ok(_) => continue, // the child had not taken the lock yet
                Err(error) => break error,
            }
        };
        assert!(error.is_owner_dead(), "told: {error}");
    });
    drop(guard); // still a valid guard
    assert!(cond.acquire().is_ok(), "the lock is clean again");
}
