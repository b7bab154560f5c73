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
    let (promise, slot) = SlotRef::boxed(Slot::<V>::new()).pair();
    drop(Promise::new(promise));
    assert!(slot.take().unwrap_err().is_cancelled());
    // SAFETY: the test's last access; the promise let go first: freed.
    unsafe { slot.release() };
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

/// Python lets a done-callback use its own future; so does crew, whether
/// the callback runs on the completing thread (added before) or at once
/// (added after): add a callback, wait, read the exception, try to take
/// the value (lent to the callback: refused, not a deadlock).
#[test]
fn a_callback_may_call_back_into_its_own_future() {
    use std::sync::mpsc;
    for already_done in [false, true] {
        let (tx, rx) = mpsc::channel::<u32>();
        let t = std::thread::spawn(move || {
            let (p, f) = crate::Future::<u32>::pending();
            if already_done {
                p.complete(Ok(4));
                let f = Arc::new(f);
                add_reentrant_callback(&f, tx);
                assert_eq!(f.result_timeout(Duration::from_secs(30)).unwrap(), 4);
            } else {
                let f = Arc::new(f);
                add_reentrant_callback(&f, tx);
                p.complete(Ok(4));
                assert_eq!(f.result_timeout(Duration::from_secs(30)).unwrap(), 4);
            }
        });
        let mut got: Vec<u32> = (0..2)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(30))
                    .expect("a callback that calls back into its future deadlocked")
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, [4, 104], "already done: {already_done}");
        t.join().unwrap();
    }
}

fn add_reentrant_callback(f: &Arc<crate::Future<u32>>, tx: std::sync::mpsc::Sender<u32>) {
    let me = f.clone();
    f.add_done_callback(move |r| {
        me.wait();
        assert!(me.done());
        assert!(me.wait_timeout(Duration::ZERO));
        assert!(me.exception().is_none());
        // The value is lent to this very callback: it cannot be moved out.
        assert!(
            me.result_timeout(Duration::ZERO)
                .unwrap_err()
                .is_invalid_input()
        );
        let inner = tx.clone();
        me.add_done_callback(move |r| inner.send(*r.as_ref().unwrap()).unwrap());
        tx.send(*r.as_ref().unwrap() + 100).unwrap();
    });
}

#[test]
fn an_async_result_callback_may_call_back_into_its_own_result() {
    use std::sync::{OnceLock, mpsc};
    let (tx, rx) = mpsc::channel::<(Option<bool>, bool)>();
    let t = std::thread::spawn(move || {
        let (p, r) = crate::AsyncResult::<u32>::pending();
        let cell: Arc<OnceLock<crate::AsyncResult<u32>>> = Arc::new(OnceLock::new());
        let me = cell.clone();
        let r = r.callback(move |_| {
            let me = me.get().expect("set before completion");
            me.wait();
            let lent = me
                .get_timeout(Duration::ZERO)
                .unwrap_err()
                .is_invalid_input();
            tx.send((me.successful(), lent)).unwrap();
        });
        assert!(cell.set(r).is_ok());
        p.complete(Ok(1));
        let r = cell.get().unwrap();
        assert_eq!(r.get_timeout(Duration::from_secs(30)).unwrap(), 1);
    });
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a callback that calls back into its result deadlocked");
    assert_eq!(got, (Some(true), true));
    t.join().unwrap();
}

#[test]
fn a_slot_is_reused_once_both_owners_let_go() {
    let (p, f) = crate::Future::<u32>::pending_recycled();
    let first = f.slot_addr();
    p.complete(Ok(1));
    assert_eq!(f.result().unwrap(), 1);
    let (p, f) = crate::Future::<u32>::pending_recycled();
    assert_eq!(f.slot_addr(), first, "the released slot is reused");
    assert!(!f.done() && !f.running(), "a reused slot starts pending");
    assert!(p.start());
    p.complete(Ok(2));
    assert_eq!(f.result().unwrap(), 2);
}

#[test]
fn a_slot_still_held_by_its_promise_is_not_reused() {
    let (p, f) = crate::Future::<u32>::pending_recycled();
    let first = f.slot_addr();
    drop(f); // the handle goes first: the promise still owns the slot
    let (p2, f2) = crate::Future::<u32>::pending_recycled();
    assert_ne!(f2.slot_addr(), first);
    // The late completion reaches the old slot, not the new user's.
    p.complete(Ok(1));
    assert!(!f2.done());
    // Now that both let go, the old slot is reused, reset.
    let (p3, f3) = crate::Future::<u32>::pending_recycled();
    assert_eq!(f3.slot_addr(), first);
    assert!(!f3.done());
    p2.complete(Ok(2));
    drop(p3);
    assert_eq!(f2.result().unwrap(), 2);
    assert!(f3.result().unwrap_err().is_cancelled());
}

#[test]
fn a_reused_slot_keeps_no_callback_waiter_or_hook_of_its_last_use() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (p, f) = crate::Future::<u32>::pending_recycled();
    let h = hits.clone();
    f.add_done_callback(move |_| {
        h.fetch_add(1, Ordering::SeqCst);
    });
    assert!(p.start());
    p.set_interrupt(Some(Arc::new(|| {})));
    let waiter = std::thread::spawn(move || f.result().unwrap());
    std::thread::sleep(Duration::from_millis(20)); // let it park
    p.complete(Ok(4));
    assert_eq!(waiter.join().unwrap(), 4);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The waiter's thread released last or we did: either way, a slot
    // taken now is fresh.
    for _ in 0..2 {
        let (p, f) = crate::Future::<u32>::pending_recycled();
        assert!(p.start());
        assert!(!f.cancel(), "no interrupt hook survives a reuse");
        p.complete(Ok(5));
        assert_eq!(f.result().unwrap(), 5);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "no callback survives a reuse"
        );
    }
}

/// More live futures than the shelves keep, made from blocks of slots,
/// completed on two threads and let go of in an order that mixes blocks:
/// every slot comes back with its own value, and the blocks are freed
/// (under ASan: no slot is used after its block is freed, none twice)
/// whichever thread retires their last slot.
#[test]
fn a_burst_of_slots_from_blocks_is_used_and_freed_on_any_thread() {
    const N: u32 = 5_000;
    let (promises, futures): (Vec<_>, Vec<_>) = (0..N)
        .map(|_| crate::Future::<u32>::pending_recycled())
        .unzip();
    let mut addrs: Vec<usize> = futures.iter().map(|f| f.slot_addr()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(
        addrs.len(),
        N as usize,
        "every live future has its own slot"
    );
    let mut odd = Vec::new();
    let mut even = Vec::new();
    for (i, p) in promises.into_iter().enumerate() {
        if i.is_multiple_of(2) {
            even.push((i as u32, p));
        } else {
            odd.push((i as u32, p));
        }
    }
    let completers: Vec<_> = [even, odd]
        .into_iter()
        .map(|ps| {
            std::thread::spawn(move || {
                for (i, p) in ps.into_iter().rev() {
                    if i.is_multiple_of(7) {
                        drop(p);
                    } else {
                        assert!(p.start());
                        p.complete(Ok(i));
                    }
                }
            })
        })
        .collect();
    // Results taken in an order that crosses blocks: every third first.
    let (thirds, rest): (Vec<_>, Vec<_>) = futures
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i.is_multiple_of(3));
    let check = |(i, f): (usize, crate::Future<u32>)| {
        let i = i as u32;
        match f.result() {
            Ok(v) => assert!(v == i && !i.is_multiple_of(7)),
            Err(e) => assert!(e.is_cancelled() && i.is_multiple_of(7)),
        }
    };
    thirds.into_iter().for_each(check);
    let holder = std::thread::spawn(move || rest.into_iter().for_each(check));
    holder.join().unwrap();
    for c in completers {
        c.join().unwrap();
    }
}
