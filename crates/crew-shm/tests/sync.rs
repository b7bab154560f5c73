//! Semaphore, Event, Barrier and Condition across processes.

use crew_shm::{Barrier, Condition, Event, Queue, Semaphore, Value};

use crate::common::{self, Child};

#[test]
fn barrier_with_three_processes() {
    const NAME: &str = concat!(module_path!(), "::barrier_with_three_processes");
    const ROUNDS: u32 = 5;
    if common::role().is_some() {
        let (barrier, results): (Barrier, Queue<(u32, usize)>) = common::arg();
        for round in 0..ROUNDS {
            let index = barrier.wait_timeout(common::PATIENCE).unwrap();
            results.put((round, index)).unwrap();
        }
        return;
    }
    let barrier = Barrier::new(3).unwrap();
    let results = Queue::<(u32, usize)>::new().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| Child::spawn(NAME, "party", &(barrier.clone(), results.clone())))
        .collect();
    for child in children {
        child.assert_success();
    }
    let mut indices = vec![Vec::new(); ROUNDS as usize];
    while let Ok((round, index)) = results.try_get() {
        indices[round as usize].push(index);
    }
    for mut round in indices {
        round.sort();
        assert_eq!(round, [0, 1, 2], "each round hands out 0, 1 and 2 once");
    }
}

#[test]
fn event_wakes_waiters_in_other_processes() {
    const NAME: &str = concat!(module_path!(), "::event_wakes_waiters_in_other_processes");
    if common::role().is_some() {
        let (event, waiting): (Event, Semaphore) = common::arg();
        waiting.release();
        assert!(event.wait_timeout(common::PATIENCE), "never woken");
        assert!(event.is_set());
        return;
    }
    let event = Event::new().unwrap();
    let waiting = Semaphore::new(0).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| Child::spawn(NAME, "waiter", &(event.clone(), waiting.clone())))
        .collect();
    for _ in 0..2 {
        assert!(waiting.acquire_timeout(common::PATIENCE));
    }
    event.set();
    for child in children {
        child.assert_success();
    }
}

#[test]
fn condition_notifies_across_processes() {
    const NAME: &str = concat!(module_path!(), "::condition_notifies_across_processes");
    if common::role().is_some() {
        let (cond, ready, waiting): (Condition, Value<u32>, Semaphore) = common::arg();
        let mut guard = cond.acquire().unwrap();
        waiting.release();
        let woke = cond
            .wait_for_timeout(&mut guard, common::PATIENCE, || ready.get() == 1)
            .unwrap();
        assert!(woke, "condition never became true");
        return;
    }
    let cond = Condition::new().unwrap();
    let ready = Value::new(0u32).unwrap();
    let waiting = Semaphore::new(0).unwrap();
    let child = Child::spawn(
        NAME,
        "waiter",
        &(cond.clone(), ready.clone(), waiting.clone()),
    );
    assert!(waiting.acquire_timeout(common::PATIENCE));
    {
        // The child released the lock by waiting, or we block here until it does.
        let guard = cond.acquire().unwrap();
        ready.set(1);
        cond.notify_all(&guard);
    }
    child.assert_success();
}

#[test]
fn notify_one_wakes_at_most_one() {
    let cond = Condition::new().unwrap();
    let woken = Value::new(0u32).unwrap();
    let waiting = Semaphore::new(0).unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut guard = cond.acquire().unwrap();
                waiting.release();
                if cond
                    .wait_timeout(&mut guard, std::time::Duration::from_millis(500))
                    .unwrap()
                {
                    woken.update(|n| *n += 1);
                }
            });
        }
        for _ in 0..3 {
            assert!(waiting.acquire_timeout(common::PATIENCE));
        }
        let guard = cond.acquire().unwrap(); // all three are waiting now
        cond.notify(&guard, 1);
    });
    assert_eq!(woken.get(), 1);
}

#[test]
fn semaphore_bounds_concurrency_across_processes() {
    const NAME: &str = concat!(
        module_path!(),
        "::semaphore_bounds_concurrency_across_processes"
    );
    if common::role().is_some() {
        let (slots, inside): (Semaphore, Value<[u32; 2]>) = common::arg();
        for _ in 0..100 {
            assert!(slots.acquire_timeout(common::PATIENCE));
            inside.update(|[now, most]| {
                *now += 1;
                *most = (*most).max(*now);
            });
            std::thread::yield_now();
            inside.update(|[now, _]| *now -= 1);
            slots.release();
        }
        return;
    }
    let slots = Semaphore::new(2).unwrap();
    let inside = Value::new([0u32; 2]).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| Child::spawn(NAME, "worker", &(slots.clone(), inside.clone())))
        .collect();
    for child in children {
        child.assert_success();
    }
    let [now, most] = inside.get();
    assert_eq!(now, 0);
    assert!(
        (1..=2).contains(&most),
        "at most two inside at once, saw {most}"
    );
    assert_eq!(slots.value(), 2);
}
