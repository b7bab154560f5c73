//! Every blocking call returns by its timeout, even when what it waits for
//! is held by another process.

use std::time::{Duration, Instant};

use crew_shm::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, Pipe, Queue, RLock, Semaphore, Value,
};

use crate::common::{self, Child};

const SHORT: Duration = Duration::from_millis(30);

/// Runs `call`, checks it did not return before `SHORT`, and returns its
/// result. (A lower bound is a guarantee, not a timing measurement; the upper
/// bound is only "it returned", which the test harness enforces.)
fn bounded<R>(what: &str, call: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let result = call();
    assert!(
        start.elapsed() >= SHORT,
        "{what} returned before its timeout"
    );
    result
}

#[test]
fn every_blocking_call_returns_by_its_timeout() {
    const NAME: &str = concat!(
        module_path!(),
        "::every_blocking_call_returns_by_its_timeout"
    );
    type Arg = (Lock, RLock, Value<u8>, Array<u8>, Event, Event);
    if common::role().is_some() {
        let (lock, rlock, value, array, holding, done): Arg = common::arg();
        let _guards = (
            lock.acquire().unwrap(),
            rlock.acquire().unwrap(),
            value.lock().unwrap(),
            array.lock().unwrap(),
        );
        holding.set();
        assert!(done.wait_timeout(common::PATIENCE));
        return;
    }
    let (lock, rlock, value, array) = (
        Lock::new().unwrap(),
        RLock::new().unwrap(),
        Value::new(0u8).unwrap(),
        Array::<u8>::new(8).unwrap(),
    );
    let (holding, done) = (Event::new().unwrap(), Event::new().unwrap());
    let arg: Arg = (
        lock.clone(),
        rlock.clone(),
        value.clone(),
        array.clone(),
        holding.clone(),
        done.clone(),
    );
    let child = Child::spawn(NAME, "holder", &arg);
    assert!(holding.wait_timeout(common::PATIENCE));

    // Held by another process.
    assert!(bounded("Lock", || lock
        .acquire_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));
    assert!(bounded("RLock", || rlock
        .acquire_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));
    assert!(bounded("Value", || value
        .lock_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));
    assert!(bounded("Array", || array
        .lock_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));
    assert!(lock.try_acquire().unwrap_err().is_timeout());
    assert!(value.try_lock().unwrap_err().is_timeout());

    // Held by this thread: a Lock cannot be re-entered, so it times out.
    let own = Lock::new().unwrap();
    let _held = own.acquire().unwrap();
    assert!(bounded("Lock (own)", || own
        .acquire_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));

    // Nothing will ever come.
    assert!(!bounded("Semaphore", || Semaphore::new(0)
        .unwrap()
        .acquire_timeout(SHORT)));
    assert!(!bounded("BoundedSemaphore", || BoundedSemaphore::new(0)
        .unwrap()
        .acquire_timeout(SHORT)));
    assert!(!bounded("Event", || Event::new()
        .unwrap()
        .wait_timeout(SHORT)));
    let barrier = Barrier::new(2).unwrap();
    assert!(bounded("Barrier", || barrier
        .wait_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));
    assert!(
        barrier.wait().unwrap_err().is_broken(),
        "a timeout breaks the barrier"
    );
    let cond = Condition::new().unwrap();
    let mut guard = cond.acquire().unwrap();
    assert!(!bounded("Condition", || cond
        .wait_timeout(&mut guard, SHORT)
        .unwrap()));
    assert!(!bounded("Condition::wait_for", || cond
        .wait_for_timeout(&mut guard, SHORT, || false)
        .unwrap()));
    drop(guard);
    let queue = Queue::<u32>::bounded(1).unwrap();
    assert!(bounded("Queue::get", || queue
        .get_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));
    queue.put(1).unwrap();
    let error = bounded("Queue::put", || queue.put_timeout(2, SHORT).unwrap_err());
    assert!(error.is_timeout());
    assert_eq!(error.into_inner(), 2, "the item comes back");
    let (a, _b) = Pipe::<u32>::new().unwrap();
    assert!(bounded("Connection::recv", || a
        .recv_timeout(SHORT)
        .unwrap_err()
        .is_timeout()));
    assert!(!bounded("Connection::poll", || a.poll(SHORT)));

    done.set();
    child.assert_success();
}

#[test]
fn closing_wakes_blocked_getters_and_putters() {
    let empty = Queue::<u32>::new().unwrap();
    let full = Queue::<u32>::bounded(1).unwrap();
    full.put(0).unwrap();
    std::thread::scope(|s| {
        let getter = s.spawn(|| empty.get_timeout(common::PATIENCE));
        let putter = s.spawn(|| full.put_timeout(7, common::PATIENCE));
        std::thread::sleep(Duration::from_millis(20)); // let them block (not required)
        empty.close();
        full.close();
        assert!(getter.join().unwrap().unwrap_err().is_closed());
        let error = putter.join().unwrap().unwrap_err();
        assert!(error.is_closed());
        assert_eq!(error.into_inner(), 7);
    });
    assert_eq!(full.get().unwrap(), 0, "getters drain what is left");
    assert!(full.get().unwrap_err().is_closed());
}
