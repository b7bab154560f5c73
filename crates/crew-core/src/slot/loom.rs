//! Loom models of the result slot: completion against waiting, cancelling
//! against starting, callbacks and wakers registered against completion.
//! Each value is written once and read after it is published; every waiter
//! is released, and only after the callbacks ran.

use std::sync::Arc;
use std::task::{Wake, Waker};

use ::loom::sync::atomic::AtomicUsize;
use ::loom::thread;

use super::*;

type V = crate::Result<u32>;

#[test]
fn loom_complete_wakes_a_parked_waiter() {
    ::loom::model(|| {
        let slot = Arc::new(Slot::<V>::new());
        let s = slot.clone();
        let worker = thread::spawn(move || {
            assert!(s.try_start());
            assert!(s.complete(Ok(7)).is_ok());
        });
        assert!(slot.wait(None));
        assert_eq!(slot.take().unwrap(), 7);
        worker.join().unwrap();
    });
}

#[test]
fn loom_cancel_and_start_exactly_one_wins() {
    ::loom::model(|| {
        let slot = Arc::new(Slot::<V>::new());
        let s = slot.clone();
        let worker = thread::spawn(move || {
            if s.try_start() {
                assert!(s.complete(Ok(1)).is_ok());
                true
            } else {
                false
            }
        });
        let cancelled = slot.cancel();
        let ran = worker.join().unwrap();
        assert!(cancelled != ran, "cancelled {cancelled}, ran {ran}");
        assert!(slot.wait(None));
        assert_eq!(slot.is_cancelled(), cancelled);
        match slot.take() {
            Ok(v) => assert!(ran && v == 1),
            Err(e) => assert!(cancelled && e.is_cancelled()),
        }
    });
}

#[test]
fn loom_a_callback_runs_once_whoever_comes_first() {
    ::loom::model(|| {
        let slot = Arc::new(Slot::<V>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let s = slot.clone();
        let worker = thread::spawn(move || {
            let _ = s.complete(Ok(5));
        });
        let c = calls.clone();
        slot.on_done(Box::new(move |v: &V| {
            assert_eq!(*v.as_ref().unwrap(), 5);
            c.fetch_add(1, Ordering::SeqCst);
        }));
        worker.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(slot.take().unwrap(), 5);
    });
}

#[test]
fn loom_waiters_are_released_after_the_callbacks() {
    ::loom::model(|| {
        let slot = Arc::new(Slot::<V>::new());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        slot.on_done(Box::new(move |_: &V| {
            r.store(1, Ordering::Relaxed);
        }));
        let s = slot.clone();
        let worker = thread::spawn(move || {
            let _ = s.complete(Ok(2));
        });
        assert!(slot.wait(None));
        // Relaxed on purpose: `wait` itself must order the callback first.
        assert_eq!(ran.load(Ordering::Relaxed), 1);
        worker.join().unwrap();
    });
}

struct Flag(AtomicUsize);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn loom_a_registered_waker_is_woken() {
    ::loom::model(|| {
        let slot = Arc::new(Slot::<V>::new());
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let s = slot.clone();
        let worker = thread::spawn(move || {
            let _ = s.complete(Ok(3));
        });
        let registered = slot.register_waker(&waker);
        worker.join().unwrap();
        if registered {
            assert_eq!(flag.0.load(Ordering::SeqCst), 1, "registered, never woken");
        }
        assert!(slot.is_done());
    });
}

#[test]
fn loom_a_dropped_promise_releases_the_waiter() {
    ::loom::model(|| {
        let (promise, slot) = SlotRef::boxed(Slot::<V>::new()).pair();
        let promise = Promise::new(promise);
        let worker = thread::spawn(move || drop(promise));
        assert!(slot.wait(None));
        assert!(slot.take().unwrap_err().is_cancelled());
        // SAFETY: the model's last access to the slot (whoever lets go
        // last frees it).
        unsafe { slot.release() };
        worker.join().unwrap();
    });
}

/// A recycled slot: whichever owner lets go last shelves it, and a late
/// completion (the handle was dropped first) never reaches the slot a new
/// user gets, whether or not that slot is the reused one.
#[test]
fn loom_a_late_completion_never_reaches_a_reused_slot() {
    ::loom::model(|| {
        let (promise, future) = crate::Future::<u32>::pending_recycled();
        let worker = thread::spawn(move || {
            if promise.start() {
                promise.complete(Ok(1));
            }
        });
        drop(future);
        let (p2, f2) = crate::Future::<u32>::pending_recycled();
        assert!(!f2.done() && !f2.running());
        worker.join().unwrap();
        assert!(!f2.done(), "the old promise completed the new slot");
        assert!(p2.start());
        p2.complete(Ok(2));
        assert_eq!(f2.result().unwrap(), 2);
    });
}

/// The handle takes the result while the completer may still be waking
/// it: the slot is shelved once, by the last owner, and a slot taken
/// afterwards is fresh.
#[test]
fn loom_the_last_owner_shelves_the_slot_once() {
    ::loom::model(|| {
        let (promise, future) = crate::Future::<u32>::pending_recycled();
        let worker = thread::spawn(move || {
            assert!(promise.start());
            promise.complete(Ok(7));
        });
        assert_eq!(future.result().unwrap(), 7);
        let (p2, f2) = crate::Future::<u32>::pending_recycled();
        assert!(!f2.done());
        worker.join().unwrap();
        assert!(!f2.done());
        drop(p2);
        assert!(f2.result().unwrap_err().is_cancelled());
    });
}

/// Two slots of one block (`BLOCK` is 2 under loom) used on two threads:
/// each is shelved by whichever owner lets go last and retired when that
/// thread's shelves go (at its exit), and the block is freed once, by the
/// last of its slots retired, whichever thread that is.
#[test]
fn loom_a_block_is_freed_by_its_last_slot_on_either_thread() {
    ::loom::model(|| {
        // A fresh thread's shelves are empty: a new block, one slot
        // returned, the other shelved, then taken.
        let (p1, f1) = crate::Future::<u32>::pending_recycled();
        let (p2, f2) = crate::Future::<u32>::pending_recycled();
        let worker = thread::spawn(move || {
            assert!(p1.start());
            p1.complete(Ok(1));
            drop(p2);
            assert!(f2.result().unwrap_err().is_cancelled());
        });
        assert_eq!(f1.result().unwrap(), 1);
        worker.join().unwrap();
    });
}

/// Retiring a block's slots from two threads at once frees the block once.
#[test]
fn loom_retiring_a_blocks_slots_on_two_threads_frees_it_once() {
    struct Sent(NonNull<Slot<V>>);
    // SAFETY: the slot has no owner; the thread it is sent to retires it.
    unsafe impl Send for Sent {}
    ::loom::model(|| {
        let mut slots = Block::<V>::make();
        let a = Sent(slots.next().unwrap());
        let b = slots.next().unwrap();
        assert!(slots.next().is_none());
        let worker = thread::spawn(move || {
            let a = a;
            // SAFETY: fresh, unowned, retired once.
            unsafe { retire(a.0) };
        });
        // SAFETY: as above.
        unsafe { retire(b) };
        worker.join().unwrap();
    });
}

/// A listener (as `as_completed` registers) woken by the completer while
/// the handle's thread, told by it, moves the value out: the listener
/// reads the value before the move (the completer holds `running`, which
/// the move settles on), and runs once.
#[test]
fn loom_a_listener_reads_the_value_before_the_handle_moves_it_out() {
    ::loom::model(|| {
        let slot = Arc::new(Slot::<V>::new());
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        let listener: Listener<V> = Arc::new(move |i, v: &V| {
            assert_eq!(i, 3);
            assert_eq!(*v.as_ref().unwrap(), 9);
            s2.fetch_add(1, Ordering::SeqCst);
        });
        slot.on_done_listener(listener, 3);
        let s = slot.clone();
        let worker = thread::spawn(move || {
            assert!(s.complete(Ok(9)).is_ok());
        });
        assert!(slot.wait(None));
        assert_eq!(slot.take().unwrap(), 9);
        assert_eq!(seen.load(Ordering::SeqCst), 1, "the listener ran first");
        worker.join().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    });
}
