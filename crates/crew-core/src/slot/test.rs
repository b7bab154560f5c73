use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

type V = crate::Result<u32>;

#[test]
fn complete_then_take() {
    let slot = Arc::new(Slot::<V>::new());
    assert!(slot.try_start());
    assert!(slot.complete(Ok(7)).is_ok());
    assert!(
        slot.complete(Ok(8)).is_err(),
        "second completion is refused"
    );
    assert!(slot.wait(None));
    assert_eq!(slot.take().unwrap(), 7);
}

#[test]
fn cancel_pending_wins_over_start() {
    let slot = Slot::<V>::new();
    assert!(slot.cancel());
    assert!(!slot.try_start());
    assert!(slot.is_cancelled());
    assert!(slot.take().unwrap_err().is_cancelled());
}

#[test]
fn running_task_without_interrupt_is_not_cancelled() {
    let slot = Slot::<V>::new();
    assert!(slot.try_start());
    assert!(!slot.cancel());
    slot.complete(Ok(1)).unwrap();
    assert_eq!(slot.take().unwrap(), 1);
}

#[test]
fn callback_runs_once_whether_registered_before_or_after() {
    let count = Arc::new(AtomicUsize::new(0));
    let before = Slot::<V>::new();
    let c = count.clone();
    before.on_done(Box::new(move |v| {
        assert_eq!(*v.as_ref().unwrap(), 3);
        c.fetch_add(1, Ordering::SeqCst);
    }));
    before.complete(Ok(3)).unwrap();
    let c = count.clone();
    before.on_done(Box::new(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    }));
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn wait_times_out_then_succeeds() {
    let slot = Arc::new(Slot::<V>::new());
    assert!(!slot.wait(Some(Instant::now() + Duration::from_millis(5))));
    let s2 = slot.clone();
    let t = std::thread::spawn(move || s2.complete(Ok(5)).unwrap());
    assert!(slot.wait(None));
    t.join().unwrap();
    assert_eq!(slot.take().unwrap(), 5);
}

#[test]
fn dropped_promise_cancels() {
    let slot = Arc::new(Slot::<V>::new());
    drop(Promise::new(slot.clone()));
    assert!(slot.take().unwrap_err().is_cancelled());
}

#[test]
fn racing_completion_and_registration_never_lose_a_wakeup() {
    for _ in 0..2_000 {
        let slot = Arc::new(Slot::<V>::new());
        let hits = Arc::new(AtomicUsize::new(0));
        let s2 = slot.clone();
        let t = std::thread::spawn(move || s2.complete(Ok(1)).unwrap());
        let h = hits.clone();
        slot.on_done(Box::new(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(slot.wait(None));
        t.join().unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(slot.take().unwrap(), 1);
    }
}

#[test]
fn a_panicking_callback_is_reported_as_the_callback_s_not_the_task_s() {
    let payload = std::panic::catch_unwind(|| panic!("in the callback")).unwrap_err();
    let line = callback_panic_report(&*payload);
    assert!(line.contains("callback panicked"), "{line}");
    assert!(line.ends_with("in the callback"), "{line}");
    assert!(!line.contains("task panicked"), "{line}");
    // The callback's panic leaves the task's outcome alone.
    let slot = Arc::new(Slot::<V>::new());
    slot.on_done(Box::new(|_| panic!("in the callback")));
    assert!(slot.complete(Ok(3)).is_ok());
    assert_eq!(slot.take().unwrap(), 3);
}
