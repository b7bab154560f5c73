//! The result slot shared by a running task and the handle that waits for it
//! (`Future`, `AsyncResult`).
//!
//! One word of state, `phase | flags`, drives everything:
//!
//! ```text
//!   PENDING ──try_start──▶ RUNNING
//!      │                      │
//!      └──────claim───────────┴──▶ WRITING ──publish──▶ DONE
//! ```
//!
//! Whoever wins the `claim` CAS (the worker with a result, a canceller, a
//! dropped job, a supervisor that saw its worker die) is the only writer of
//! the value. The value is published by moving to `DONE` with `Release`.
//!
//! Waiters (parked threads, wakers, callbacks) are kept under a mutex and
//! announced by the `WAITERS` flag, so a completion nobody waits for never
//! takes the lock. A waiter registers under the lock with a `fetch_or`, the
//! completer publishes with a CAS on the same word: one of the two always
//! sees the other. When there are waiters, the completer takes the list,
//! sets `DONE | CALLBACKS` and lets go of the list's lock before it runs the
//! callbacks, so that a callback may call back into its own slot (add a
//! callback, wait, read the value), as Python allows. While it runs them it
//! holds `running`, which `settle` waits on: waiters are released only once
//! the callbacks have run. When no waiter runs users' code (only parked
//! threads and the listeners of `wait` and `as_completed`), the completer
//! sets `DONE` alone and wakes them without lending the value out (below):
//! `running`, which every move out settles on first, keeps it in place.
//!
//! The value is lent out under a reader count (`readers`): callbacks and
//! `with_value` pin it, and a move out (`take_shared`, `try_take`) needs
//! the count at zero, which it marks `TAKING`. The slot remembers the
//! threads that pin it (`lenders`): one that calls back into a slot whose value it lends
//! to a running callback neither waits for itself nor moves the value out
//! from under the callback's `&V`.
//!
//! A slot has two owners, its promise and its handle, counted in `owners`
//! (each holds a [`SlotRef`]); whichever lets go second disposes of it. A
//! slot made by [`Slot::recycled`] is then reset and reused (see
//! `cache.rs`), so a warm submit allocates nothing; such slots are made
//! [`BLOCK`] at a time in one allocation (a [`Block`]), which is freed
//! when the last of its slots is (see `cache.rs`), so that even a burst of
//! more live futures than the shelves keep allocates once per block, not
//! once per slot.

use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicUsize, Mutex, MutexGuard, Ordering};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use crate::error::{Error, FromError};
use crate::spin::SpinWait;

/// The task has not started.
const PENDING: usize = 0;
/// A worker is running the task.
const RUNNING: usize = 1;
/// Someone claimed the slot and is writing the value.
const WRITING: usize = 2;
/// The value is there.
const DONE: usize = 3;
const PHASE: usize = 0b11;
/// The task was cancelled (its value is a cancellation error).
const CANCELLED: usize = 1 << 2;
/// The waiter list may be non-empty.
const WAITERS: usize = 1 << 3;
/// A cancel of the running task was asked for (process back-ends).
const CANCEL_REQUESTED: usize = 1 << 4;
/// `DONE`, but the completer is still running callbacks: waiters are not
/// released until they have run (Python runs a result's callbacks before
/// its `wait()` returns).
const CALLBACKS: usize = 1 << 5;

pub(crate) type Callback<V> = Box<dyn FnOnce(&V) + Send>;

/// An internal observer of many slots; see [`Slot::on_done_listener`].
pub(crate) type Listener<V> = Arc<dyn Fn(usize, &V) + Send + Sync>;

/// `readers` while the value is being moved out.
const TAKING: usize = 1 << (usize::BITS - 1);

/// The spin of this slot's waits: crew's policy; none under loom, whose
/// models explore the parking (and yielding) paths, and whose state space
/// grows with every extra check.
fn spin_wait() -> SpinWait {
    if cfg!(loom) {
        SpinWait::with_budget(std::time::Duration::ZERO)
    } else {
        SpinWait::new()
    }
}

/// A wait for other threads to leave the value (they hold it for a few
/// instructions, unless preempted): spins, then yields.
fn backoff(spin: &mut SpinWait) {
    if !spin.spin() {
        thread::yield_now();
    }
}

/// The value pinned for reading; unpins on drop.
struct Pin<'a, V> {
    slot: &'a Slot<V>,
}

impl<V> Drop for Pin<'_, V> {
    fn drop(&mut self) {
        let me = thread::current().id();
        lock(&self.slot.lenders).remove(me);
        self.slot.readers.fetch_sub(1, Ordering::Release);
    }
}

/// The value held for moving out; released on drop.
struct Exclusive<'a, V> {
    slot: &'a Slot<V>,
}

impl<V> Drop for Exclusive<'_, V> {
    fn drop(&mut self) {
        self.slot.readers.store(0, Ordering::Release);
    }
}

enum Waiter<V> {
    Thread(Thread),
    Waker(Waker),
    /// A user's callback: runs before waiters are released.
    Callback(Callback<V>),
    /// An internal observer (`wait`, `as_completed`), told the index it
    /// was registered with: runs once the slot is fully done, like a woken
    /// thread. One observer watches many slots (no allocation per slot).
    Listener(Listener<V>, usize),
    /// A callback already run (its place in the list, while the list is
    /// being worked through).
    Ran,
}

/// The waiters of a slot, in the order they registered: the first inline
/// (a slot is usually waited on once, and a fresh slot then allocates
/// nothing for it), any others in a list.
struct Waiters<V> {
    first: Option<Waiter<V>>,
    rest: Vec<Waiter<V>>,
}

impl<V> Waiters<V> {
    const fn new() -> Waiters<V> {
        Waiters {
            first: None,
            rest: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn push(&mut self, w: Waiter<V>) {
        if self.is_empty() {
            self.first = Some(w);
        } else {
            self.rest.push(w);
        }
    }

    /// Takes the waiters out.
    fn take(&mut self) -> Waiters<V> {
        std::mem::replace(self, Waiters::new())
    }

    /// Keeps the memory of `used`'s (drained) list for the next waiters.
    fn give_back(&mut self, used: Waiters<V>) {
        if self.rest.capacity() == 0 && used.rest.is_empty() {
            self.rest = used.rest;
        }
    }

    /// True if a waiter runs users' code when woken (a callback, a
    /// waker), which may call back into the slot on this thread.
    fn run_users_code(&self) -> bool {
        self.first
            .iter()
            .chain(self.rest.iter())
            .any(|w| matches!(w, Waiter::Callback(_) | Waiter::Waker(_)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Waiter<V>> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    fn drain(&mut self) -> impl Iterator<Item = Waiter<V>> + '_ {
        self.first.take().into_iter().chain(self.rest.drain(..))
    }
}

/// The threads that pin a slot's value (one entry per pin, in no order):
/// two inline, so pinning a fresh slot allocates nothing.
struct Lenders {
    inline: [Option<thread::ThreadId>; 2],
    rest: Vec<thread::ThreadId>,
}

impl Lenders {
    const fn new() -> Lenders {
        Lenders {
            inline: [None, None],
            rest: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.inline.iter().all(Option::is_none) && self.rest.is_empty()
    }

    fn push(&mut self, t: thread::ThreadId) {
        match self.inline.iter_mut().find(|s| s.is_none()) {
            Some(free) => *free = Some(t),
            None => self.rest.push(t),
        }
    }

    /// Removes one entry of `t`, if there is one.
    fn remove(&mut self, t: thread::ThreadId) {
        if let Some(i) = self.rest.iter().rposition(|&r| r == t) {
            self.rest.swap_remove(i);
        } else if let Some(s) = self.inline.iter_mut().find(|s| **s == Some(t)) {
            *s = None;
        }
    }

    fn contains(&self, t: thread::ThreadId) -> bool {
        self.inline.contains(&Some(t)) || self.rest.contains(&t)
    }
}

/// The hook a back-end installs to stop a running task (kill its worker).
pub(crate) type Interrupt = Arc<dyn Fn() + Send + Sync>;

pub(crate) struct Slot<V> {
    state: AtomicUsize,
    value: UnsafeCell<Option<V>>,
    waiters: Mutex<Waiters<V>>,
    /// Held by the completer while it runs the callbacks.
    running: Mutex<()>,
    /// How many readers the value has, or `TAKING`.
    readers: AtomicUsize,
    /// The threads that pin the value right now (one entry per pin).
    lenders: Mutex<Lenders>,
    interrupt: Mutex<Option<Interrupt>>,
    /// The owners still holding the slot: its promise and its handle.
    owners: AtomicUsize,
    /// What the last owner does with the slot: reset and shelve it for
    /// reuse (slots of a `'static` value type, in a block), or free it (a
    /// boxed slot).
    dispose: unsafe fn(NonNull<Slot<V>>),
    /// The block the slot lives in; null for a boxed slot.
    home: *const Block<V>,
}

// SAFETY: the value is written once by the claimant before `DONE`, then read
// by pinned readers (`readers` > 0) or moved out by one holder of `TAKING`
// (`readers` == 0 before it), never both at once. Sending
// the slot's contents between threads needs `V: Send`.
unsafe impl<V: Send> Send for Slot<V> {}
// SAFETY: as above; the shared accesses are serialised by the protocol in the
// module docs, so `&Slot<V>` may be used from many threads with `V: Send`.
// Handles that expose `&V` to several threads at once add `V: Sync` themselves.
unsafe impl<V: Send> Sync for Slot<V> {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the protected data
    // half-updated (callbacks run under `catch_unwind`), so poison is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<V> Slot<V> {
    pub(crate) fn new() -> Slot<V> {
        Slot {
            state: AtomicUsize::new(PENDING),
            value: UnsafeCell::new(None),
            waiters: Mutex::new(Waiters::new()),
            running: Mutex::new(()),
            readers: AtomicUsize::new(0),
            lenders: Mutex::new(Lenders::new()),
            interrupt: Mutex::new(None),
            owners: AtomicUsize::new(2),
            dispose: free_boxed::<V>,
            home: std::ptr::null(),
        }
    }

    /// A fresh slot, reused from this thread's shelf when there is one: a
    /// slot whose owners both let go is reset and shelved by the last of
    /// them (see [`SlotRef::release`]). With none on the shelves, a new
    /// block of [`BLOCK`] slots is made: one is returned, the others
    /// shelved.
    pub(crate) fn recycled() -> SlotRef<V>
    where
        V: Send + 'static,
    {
        // A slot's first waiter and two lenders have room inline, so a
        // wait allocates nothing either.
        let ptr = cache::take().unwrap_or_else(|| {
            let mut slots = Block::<V>::make();
            let first = slots.next().expect("a block has slots");
            cache::give_all(slots);
            first
        });
        SlotRef { ptr }
    }

    /// Makes the slot new again: pending, empty, two owners.
    ///
    /// # Safety
    ///
    /// Both owners have released the slot ([`release`](Slot::release)):
    /// nobody else reads or writes it.
    unsafe fn reset(&self) {
        // SAFETY: no other access (the caller); the value cell is ours.
        let old = unsafe { (*self.value.get()).take() };
        let hook = lock(&self.interrupt).take();
        // A released slot is done: its waiters were taken when it completed
        // (the list's memory was handed back) and every pin was dropped.
        debug_assert!(lock(&self.waiters).is_empty() && lock(&self.lenders).is_empty());
        self.readers.store(0, Ordering::Relaxed);
        self.state.store(PENDING, Ordering::Relaxed);
        self.owners.store(2, Ordering::Relaxed);
        // Dropped last, outside the lock: their drops are users' code.
        drop(hook);
        drop(old);
    }

    /// True if this thread lends the value out right now (it runs one of
    /// the slot's callbacks, or reads it).
    #[inline]
    fn lent_here(&self) -> bool {
        // Inline: most calls find no reader at all (every wait and move
        // out asks).
        self.readers.load(Ordering::Acquire) & !TAKING != 0 && self.pinned_here()
    }

    /// The lenders include this thread (the value has readers).
    #[inline(never)]
    fn pinned_here(&self) -> bool {
        lock(&self.lenders).contains(thread::current().id())
    }

    /// Pins the value for reading (waits out a move in progress).
    fn pin(&self) -> Pin<'_, V> {
        let mut spin = spin_wait();
        loop {
            let r = self.readers.load(Ordering::Relaxed);
            if r & TAKING == 0
                && self
                    .readers
                    .compare_exchange_weak(r, r + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            backoff(&mut spin);
        }
        lock(&self.lenders).push(thread::current().id());
        Pin { slot: self }
    }

    /// Holds the value for moving out, once no reader has it; `None` if
    /// this thread lends it out (to a running callback): it would wait for
    /// itself.
    fn exclusive(&self) -> Option<Exclusive<'_, V>> {
        if self.lent_here() {
            return None;
        }
        let mut spin = spin_wait();
        while self
            .readers
            .compare_exchange_weak(0, TAKING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            backoff(&mut spin);
        }
        Some(Exclusive { slot: self })
    }

    fn phase(&self) -> usize {
        self.state.load(Ordering::Acquire) & PHASE
    }

    /// Done, and its callbacks have run (as seen from one of them: done).
    pub(crate) fn is_done(&self) -> bool {
        let s = self.state.load(Ordering::Acquire);
        s & PHASE == DONE && (s & CALLBACKS == 0 || self.lent_here())
    }

    pub(crate) fn is_running(&self) -> bool {
        self.phase() == RUNNING
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        let s = self.state.load(Ordering::Acquire);
        s & PHASE == DONE && s & CANCELLED != 0
    }

    pub(crate) fn cancel_requested(&self) -> bool {
        self.state.load(Ordering::Acquire) & CANCEL_REQUESTED != 0
    }

    /// Moves `PENDING` to `RUNNING`; false if the task was cancelled (or
    /// otherwise completed) before it could start.
    pub(crate) fn try_start(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & PHASE != PENDING {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                (s & !PHASE) | RUNNING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Moves `RUNNING` back to `PENDING` (the back-end put the task back in
    /// its queue); false if the task was completed meanwhile, or if a
    /// cancel was asked while it ran (it stays `RUNNING`, flagged:
    /// `cancel()` returned true for it, so it must not run again).
    pub(crate) fn try_unstart(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & PHASE != RUNNING || s & CANCEL_REQUESTED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                (s & !(PHASE | CANCEL_REQUESTED)) | PENDING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Claims the right to write the value; `extra` flags are set with it.
    /// `from_running`: a running task may be claimed (its result or its
    /// loss); a cancellation claims only a task that has not started.
    fn claim(&self, extra: usize, from_running: bool) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let phase = s & PHASE;
            if phase >= WRITING || (phase == RUNNING && !from_running) {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                (s & !PHASE) | WRITING | extra,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Stores the outcome; gives it back if the slot was already completed.
    pub(crate) fn complete(&self, value: V) -> Result<(), V> {
        self.complete_with(0, true, value)
    }

    fn complete_with(&self, extra: usize, from_running: bool, value: V) -> Result<(), V> {
        if !self.claim(extra, from_running) {
            return Err(value);
        }
        // SAFETY: `claim()` made us the only writer, and nobody reads the
        // value before we publish `DONE` below.
        unsafe { *self.value.get() = Some(value) };
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & WAITERS != 0 {
                let mut waiters = lock(&self.waiters);
                let running = lock(&self.running);
                // Callbacks and wakers run users' code, which may call back
                // into this slot: the value is pinned (lent) while they run.
                // Parked threads and internal listeners (`wait`,
                // `as_completed`) do not, so then it is not pinned. Nobody
                // moves it out meanwhile either way: a move out settles
                // first, waiting for `running`, held here.
                let users = waiters.run_users_code();
                let flags = if users { DONE | CALLBACKS } else { DONE };
                self.state.fetch_or(flags, Ordering::AcqRel);
                let mut list = waiters.take();
                // Callbacks run without the list's lock: they may add more.
                drop(waiters);
                let pin = users.then(|| self.pin());
                // SAFETY: the value was written before `DONE`, and nobody
                // moves it out while `running` is held (above) nor while
                // `pin` lives.
                let value = unsafe { (*self.value.get()).as_ref() }.expect("value written");
                if users {
                    // Callbacks first, in order; then the others, in order.
                    for w in list.iter_mut() {
                        if matches!(w, Waiter::Callback(_))
                            && let Waiter::Callback(f) = std::mem::replace(w, Waiter::Ran)
                        {
                            run_callback(f, value);
                        }
                    }
                    self.state.fetch_and(!CALLBACKS, Ordering::AcqRel);
                }
                for w in list.drain() {
                    wake(w, value);
                }
                drop(pin);
                // Hand the list's memory back for the slot's next use (a
                // recycled slot then registers waiters without allocating).
                if list.rest.capacity() != 0 {
                    lock(&self.waiters).give_back(list);
                }
                drop(running);
                return;
            }
            match self
                .state
                .compare_exchange_weak(s, s | DONE, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }

    /// Registers a waiter, or hands it back if the value is already there.
    fn register(&self, w: Waiter<V>) -> Option<Waiter<V>> {
        let mut waiters = lock(&self.waiters);
        let prev = self.state.fetch_or(WAITERS, Ordering::AcqRel);
        if prev & PHASE == DONE {
            return Some(w);
        }
        waiters.push(w);
        None
    }

    /// Runs `f(&value)` once the slot is done: now on this thread if it is,
    /// else on the thread that completes it.
    pub(crate) fn on_done(&self, f: Callback<V>) {
        if let Some(Waiter::Callback(f)) = self.register(Waiter::Callback(f)) {
            // A value already moved out by a `_timeout` wait: nothing to show.
            self.with_value(|v| run_callback(f, v));
        }
    }

    /// Runs `f(&value)` once the slot is done and its callbacks have run:
    /// the hook of `wait` and `as_completed`, which then see `is_done()`.
    pub(crate) fn on_done_listener(&self, f: Listener<V>, index: usize) {
        if let Some(Waiter::Listener(f, index)) = self.register(Waiter::Listener(f, index)) {
            self.settle();
            self.with_value(|v| run_listener(&f, index, v));
        }
    }

    /// Blocks until done or until `deadline`; true if done.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        if self.phase() == DONE && self.lent_here() {
            // Called back from one of this slot's callbacks: done, as far
            // as the callback is concerned (waiting would wait for itself).
            return true;
        }
        // Spin first (a result is often microseconds away), then park.
        let mut spin = spin_wait();
        while !self.is_done() {
            if !spin.spin() {
                break;
            }
        }
        if self.is_done() {
            return true;
        }
        if self.register(Waiter::Thread(thread::current())).is_some() {
            // Done; wait out callbacks the completer may still be running.
            self.settle();
            return true;
        }
        loop {
            if self.is_done() {
                return true;
            }
            match deadline {
                None => thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return self.is_done();
                    }
                    thread::park_timeout(d - now);
                }
            }
        }
    }

    /// Registers `waker` to be woken on completion; false if already done.
    pub(crate) fn register_waker(&self, waker: &Waker) -> bool {
        self.register(Waiter::Waker(waker.clone())).is_none()
    }

    /// Waits for a completer still running callbacks (not if this thread
    /// is the one running them: it would wait for itself).
    fn settle(&self) {
        if self.state.load(Ordering::Acquire) & WAITERS != 0 && !self.lent_here() {
            drop(lock(&self.running));
        }
    }

    /// Calls `f` with the value, `None` if [`take_shared`](Slot::take_shared)
    /// moved it out. Only through the slot's owning handle, once the slot is
    /// done.
    ///
    /// Runs `f` with the value pinned: a handle shared between threads may
    /// have one thread reading here while another moves the value out.
    pub(crate) fn with_value<T>(&self, f: impl FnOnce(&V) -> T) -> Option<T> {
        assert!(self.phase() == DONE, "slot read before it was done");
        let _pin = self.pin();
        // SAFETY: `DONE` was observed with `Acquire`, so the value is
        // written; it is pinned, so no move out overlaps this read.
        unsafe { (*self.value.get()).as_ref() }.map(f)
    }

    /// Lets `f` move the value out (or leave it) through a shared handle:
    /// the `_timeout` waits, which keep the handle for another try. Only
    /// through the slot's owning handle, once the slot is done. Called back
    /// from one of the slot's own callbacks, which borrows the value, it
    /// cannot move it: `lent` reads it instead.
    pub(crate) fn take_shared<T>(
        &self,
        f: impl FnOnce(&mut Option<V>) -> T,
        lent: impl FnOnce(Option<&V>) -> T,
    ) -> T {
        assert!(self.phase() == DONE, "slot taken before it was done");
        self.settle();
        match self.exclusive() {
            // SAFETY: `exclusive` excludes every other access.
            Some(_x) => f(unsafe { &mut *self.value.get() }),
            None => {
                let _pin = self.pin();
                // SAFETY: pinned, as in `with_value`.
                lent(unsafe { (*self.value.get()).as_ref() })
            }
        }
    }

    /// Moves the value out, `None` if `take_shared` already did. Only by
    /// the slot's owning handle as it is consumed (so no shared access of
    /// it remains), once the slot is done.
    /// `None` too if called back from one of the slot's own callbacks,
    /// which borrows the value.
    pub(crate) fn try_take(&self) -> Option<V> {
        assert!(self.phase() == DONE, "slot taken before it was done");
        self.settle();
        let _x = self.exclusive()?;
        // SAFETY: `exclusive` excludes every other access.
        unsafe { (*self.value.get()).take() }
    }

    /// [`try_take`](Slot::try_take) of a value known to be there.
    #[cfg(test)]
    pub(crate) fn take(&self) -> V {
        self.try_take().expect("slot value taken twice")
    }

    pub(crate) fn set_interrupt(&self, hook: Option<Interrupt>) {
        *lock(&self.interrupt) = hook;
    }
}

impl<V: FromError> Slot<V> {
    /// Cancels the task: a pending task completes as cancelled; a running one
    /// is interrupted if its back-end can (processes), else left alone.
    pub(crate) fn cancel(&self) -> bool {
        if self
            .complete_with(CANCELLED, false, V::from_error(Error::cancelled()))
            .is_ok()
        {
            return true;
        }
        if self.is_cancelled() {
            return true;
        }
        if self.is_running() {
            let hook = lock(&self.interrupt).clone();
            if let Some(hook) = hook {
                self.state.fetch_or(CANCEL_REQUESTED, Ordering::AcqRel);
                hook();
                return true;
            }
        }
        false
    }

    /// Completes as cancelled (after an interrupt took effect).
    pub(crate) fn complete_cancelled(&self) -> bool {
        self.complete_with(CANCELLED, true, V::from_error(Error::cancelled()))
            .is_ok()
    }
}

/// The `dispose` of slots of a `'static` value type (in blocks): reset,
/// then shelved on the calling thread.
///
/// # Safety
///
/// Both owners released the slot ([`SlotRef::release`]).
unsafe fn shelve<V: Send + 'static>(slot: NonNull<Slot<V>>) {
    // SAFETY: both owners released the slot (the caller): it is ours.
    unsafe { slot.as_ref().reset() };
    cache::give(slot);
}

/// The `dispose` of a boxed slot ([`SlotRef::boxed`]): frees it.
///
/// # Safety
///
/// Both owners released the slot, which [`SlotRef::boxed`] made.
unsafe fn free_boxed<V>(slot: NonNull<Slot<V>>) {
    // SAFETY: made by `Box::into_raw` (`SlotRef::boxed`), and nobody
    // holds it any more (the caller).
    drop(unsafe { Box::from_raw(slot.as_ptr()) });
}

/// Slots per [`Block`]: enough that the allocation is a small share of a
/// slot's cost; few enough that a block pinned by a single shelved slot
/// wastes little.
#[cfg(not(loom))]
pub(crate) const BLOCK: usize = 16;
/// As above, small: loom explores every interleaving of the releases.
#[cfg(loom)]
pub(crate) const BLOCK: usize = 2;

/// [`BLOCK`] recyclable slots in one allocation, with one count of the
/// slots not yet retired. A slot is retired (dropped for good, see
/// [`retire`]) when a shelf lets go of it; the last slot retired frees the
/// block. Until then the block's memory stays, whoever holds its other
/// slots (a future, a promise, a shelf on any thread).
pub(crate) struct Block<V> {
    /// Slots not yet retired.
    live: AtomicUsize,
    slots: [UnsafeCell<MaybeUninit<Slot<V>>>; BLOCK],
}

impl<V: Send + 'static> Block<V> {
    /// A new block: its slots, fresh (pending, two owners, reset and
    /// shelved by the last), each to be used until retired.
    fn make() -> impl Iterator<Item = NonNull<Slot<V>>> {
        let block = Box::into_raw(Box::new(Block {
            live: AtomicUsize::new(BLOCK),
            slots: [const { UnsafeCell::new(MaybeUninit::uninit()) }; BLOCK],
        }));
        (0..BLOCK).map(move |i| {
            // SAFETY: `block` is live (none of its slots is retired before
            // it is handed out), and slot `i` is written once, here, before
            // anyone reads it.
            unsafe {
                let cell = (*block).slots[i].get();
                let slot = (*cell).as_mut_ptr();
                slot.write(Slot {
                    dispose: shelve::<V>,
                    home: block,
                    ..Slot::new()
                });
                NonNull::new_unchecked(slot)
            }
        })
    }
}

/// Drops a recyclable slot for good, and frees its block if it was the
/// last of it still live.
///
/// # Safety
///
/// `slot` was made by [`Block::make`], is reset, has no owner, and is
/// retired once: nothing reaches it after this call.
pub(crate) unsafe fn retire<V>(slot: NonNull<Slot<V>>) {
    // SAFETY: the slot is ours alone (the caller) until it is dropped here.
    let block = unsafe { slot.as_ref().home };
    debug_assert!(!block.is_null(), "only a block's slots are retired");
    // SAFETY: as above; the slot was written by `Block::make`.
    unsafe { std::ptr::drop_in_place(slot.as_ptr()) };
    // SAFETY: the block lives until its last slot is retired, and this one
    // was not yet. AcqRel: whoever retires last sees the other slots'
    // drops done before it frees their memory.
    if unsafe { (*block).live.fetch_sub(1, Ordering::AcqRel) } == 1 {
        // SAFETY: every slot of the block is retired (dropped, and reached
        // by nobody): the block is ours; made by `Box::into_raw`. Its slots
        // are `MaybeUninit`, so dropping it drops none of them again.
        drop(unsafe { Box::from_raw(block.cast_mut()) });
    }
}

/// A reference to a slot held by one of its two owners (a promise, a
/// handle). Not counted itself: the slot's `owners` count says which owner
/// lets go last, and that one disposes of the slot
/// ([`release`](SlotRef::release)).
pub(crate) struct SlotRef<V> {
    ptr: NonNull<Slot<V>>,
}

// SAFETY: a `SlotRef` gives `&Slot<V>`, which is `Send + Sync` for
// `V: Send` (see `Slot`); the last owner to let go disposes of the slot on
// its own thread, which sending the value there needs `V: Send` for.
unsafe impl<V: Send> Send for SlotRef<V> {}
// SAFETY: as above: only `&Slot<V>` is shared.
unsafe impl<V: Send> Sync for SlotRef<V> {}

impl<V> SlotRef<V> {
    /// A slot of its own allocation (any value type; never recycled).
    pub(crate) fn boxed(slot: Slot<V>) -> SlotRef<V> {
        SlotRef {
            // SAFETY: `Box::into_raw` is never null.
            ptr: unsafe { NonNull::new_unchecked(Box::into_raw(Box::new(slot))) },
        }
    }

    /// The slot's two owners' references: one for the promise, one for
    /// the handle.
    pub(crate) fn pair(self) -> (SlotRef<V>, SlotRef<V>) {
        (SlotRef { ptr: self.ptr }, self)
    }

    /// The slot's address (to tell a reused slot in tests).
    #[cfg(test)]
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// This owner lets go of the slot; the second to let go disposes of it
    /// (shelves it for reuse, or frees it).
    ///
    /// # Safety
    ///
    /// Called once per owner, as its very last access to the slot (this
    /// reference is not used again): once the other owner let go too, the
    /// slot is reused or freed.
    pub(crate) unsafe fn release(&self) {
        let ptr = self.ptr;
        // SAFETY: this owner has not let go yet (the caller), so the slot
        // is live. AcqRel: the last owner sees everything the other wrote
        // (as `Arc`'s own drop does) before it resets or frees the slot.
        let last = unsafe { ptr.as_ref() }
            .owners
            .fetch_sub(1, Ordering::AcqRel)
            == 1;
        if last {
            // SAFETY: both owners let go: the slot is ours.
            unsafe {
                let dispose = ptr.as_ref().dispose;
                dispose(ptr);
            }
        }
    }
}

impl<V> std::ops::Deref for SlotRef<V> {
    type Target = Slot<V>;

    fn deref(&self) -> &Slot<V> {
        // SAFETY: an owner's reference is live until it releases the slot,
        // after which it is not used (`release`).
        unsafe { self.ptr.as_ref() }
    }
}

fn wake<V>(w: Waiter<V>, value: &V) {
    match w {
        Waiter::Thread(t) => t.unpark(),
        Waiter::Waker(w) => w.wake(),
        Waiter::Callback(f) => run_callback(f, value),
        Waiter::Listener(f, index) => run_listener(&f, index, value),
        Waiter::Ran => {}
    }
}

fn run_callback<V>(f: Callback<V>, value: &V) {
    guarded(|| f(value));
}

fn run_listener<V>(f: &Listener<V>, index: usize, value: &V) {
    guarded(|| f(index, value));
}

/// Runs a callback or a listener.
fn guarded(f: impl FnOnce()) {
    // A panicking callback must not take the worker (or the other callbacks)
    // with it; Python's pools likewise report and go on.
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        // The callback's panic, not the task's: the task itself succeeded
        // or failed on its own, and its outcome stands.
        eprintln!("{}", callback_panic_report(&*p));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(p)));
    }
}

/// The line printed for a callback that panicked with `payload`.
fn callback_panic_report(payload: &(dyn std::any::Any + Send)) -> String {
    format!(
        "crew: a result callback panicked (the task's outcome stands): {}",
        Error::panic_payload_message(payload)
    )
}

/// The producing side of a slot, held by a job.
///
/// Dropping it without a result (the job was discarded by `terminate`,
/// `cancel_pending`, or a dead process) completes the slot as cancelled, so no
/// handle waits forever.
///
/// A back-end gets one from [`Future::pending`](crate::Future::pending) or
/// [`AsyncResult::pending`](crate::AsyncResult::pending) and completes it
/// once: with the task's outcome, a failure, or as cancelled.
///
/// # Examples
///
/// ```
/// use crew_core::Future;
///
/// let (promise, future) = Future::<u32>::pending();
/// assert!(promise.start()); // a worker picks the task up
/// assert!(future.running());
/// promise.complete(Ok(4));
/// assert_eq!(future.result().unwrap(), 4);
///
/// let (promise, future) = Future::<u32>::pending();
/// drop(promise); // the job was discarded
/// assert!(future.result().unwrap_err().is_cancelled());
/// ```
pub struct Promise<V: FromError> {
    /// Released when the promise is completed or dropped (its last
    /// access). Not an `Option`: an `Option<Promise>` is then one word.
    slot: SlotRef<V>,
}

impl<V: FromError> std::fmt::Debug for Promise<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
    }
}

impl<V: FromError> Promise<V> {
    pub(crate) fn new(slot: SlotRef<V>) -> Promise<V> {
        Promise { slot }
    }

    fn slot(&self) -> &Slot<V> {
        &self.slot
    }

    /// The promise's reference, taken out of it without running its drop
    /// (which would complete the slot as cancelled).
    fn into_slot(self) -> SlotRef<V> {
        let this = std::mem::ManuallyDrop::new(self);
        SlotRef { ptr: this.slot.ptr }
    }

    /// Marks the task running; false if it was cancelled and must be skipped.
    ///
    /// Once started, the task can no longer be cancelled from its handle
    /// unless an interrupt hook is installed ([`set_interrupt`](Promise::set_interrupt)).
    ///
    /// # Examples
    ///
    /// ```
    /// let (promise, future) = crew_core::Future::<()>::pending();
    /// assert!(future.cancel());
    /// assert!(!promise.start()); // cancelled while pending: skip the task
    /// ```
    pub fn start(&self) -> bool {
        self.slot().try_start()
    }

    /// Marks a started task pending again: its back-end put it back in the
    /// queue (the worker it was sent to died before running it). A pending
    /// task can be cancelled outright and must be started again. A task
    /// whose cancel was asked while it ran ends cancelled instead (its
    /// done-callbacks run here), and a later [`start`](Promise::start)
    /// returns false.
    ///
    /// # Examples
    ///
    /// ```
    /// let (promise, future) = crew_core::Future::<u8>::pending();
    /// assert!(promise.start());
    /// assert!(future.running());
    /// promise.unstart();
    /// assert!(!future.running());
    /// assert!(future.cancel());
    /// ```
    pub fn unstart(&self) {
        let slot = self.slot();
        if !slot.try_unstart() && slot.is_running() && slot.cancel_requested() {
            slot.complete_cancelled();
        }
    }

    /// True if the task was cancelled while pending.
    ///
    /// # Examples
    ///
    /// ```
    /// let (promise, future) = crew_core::Future::<()>::pending();
    /// assert!(!promise.is_cancelled());
    /// future.cancel();
    /// assert!(promise.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.slot().is_cancelled()
    }

    /// True if someone asked to cancel the task while it was running.
    ///
    /// Only a task with an interrupt hook ([`set_interrupt`](Promise::set_interrupt))
    /// can be asked: without one, cancelling a running task does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let (promise, future) = crew_core::Future::<()>::pending();
    /// assert!(promise.start());
    /// assert!(!future.cancel()); // running, no hook: cannot be stopped
    /// assert!(!promise.cancel_requested());
    /// promise.set_interrupt(Some(Arc::new(|| {})));
    /// assert!(future.cancel());
    /// assert!(promise.cancel_requested());
    /// ```
    pub fn cancel_requested(&self) -> bool {
        self.slot().cancel_requested()
    }

    /// Delivers the outcome and wakes whoever waits for it.
    ///
    /// Ignored if the slot was already completed (the task was cancelled while
    /// pending).
    ///
    /// # Examples
    ///
    /// ```
    /// let (promise, future) = crew_core::Future::<u8>::pending();
    /// future.cancel();
    /// promise.complete(Ok(1)); // too late: the task was cancelled
    /// assert!(future.result().unwrap_err().is_cancelled());
    /// ```
    pub fn complete(self, value: V) {
        let slot = self.into_slot();
        let _ = slot.complete(value);
        // SAFETY: the promise's last access: its reference is dropped.
        unsafe { slot.release() };
    }

    /// Delivers a failure, as [`complete`](Promise::complete) with an error.
    ///
    /// # Examples
    ///
    /// ```
    /// let (promise, future) = crew_core::Future::<u8>::pending();
    /// promise.fail(crew_core::Error::worker_lost("exited with code 3"));
    /// assert!(future.result().unwrap_err().is_worker_lost());
    /// ```
    pub fn fail(self, e: Error) {
        self.complete(V::from_error(e));
    }

    /// Completes as cancelled (the back-end stopped the task on request).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let (promise, future) = crew_core::Future::<()>::pending();
    /// promise.start();
    /// promise.set_interrupt(Some(Arc::new(|| {})));
    /// assert!(future.cancel());
    /// assert!(!future.cancelled()); // asked, not yet stopped
    /// promise.cancelled(); // the back-end stopped it
    /// assert!(future.cancelled());
    /// ```
    pub fn cancelled(self) {
        let slot = self.into_slot();
        slot.complete_cancelled();
        // SAFETY: the promise's last access: its reference is dropped.
        unsafe { slot.release() };
    }

    /// Installs (or removes) the hook that stops the task while it runs;
    /// `Future::cancel` calls it.
    ///
    /// Back-ends that can kill a running task (processes) install one when the
    /// task starts.
    ///
    /// The hook runs on the thread that calls `cancel`, only while the task
    /// is running.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// let killed = Arc::new(AtomicBool::new(false));
    /// let (promise, future) = crew_core::Future::<()>::pending();
    /// promise.start();
    /// let k = killed.clone();
    /// promise.set_interrupt(Some(Arc::new(move || k.store(true, Ordering::SeqCst))));
    /// future.cancel();
    /// assert!(killed.load(Ordering::SeqCst));
    /// ```
    pub fn set_interrupt(&self, hook: Option<Arc<dyn Fn() + Send + Sync>>) {
        self.slot().set_interrupt(hook);
    }
}

impl<V: FromError> Drop for Promise<V> {
    fn drop(&mut self) {
        let _ = self
            .slot
            .complete_with(CANCELLED, true, V::from_error(Error::cancelled()));
        // SAFETY: the promise's last access: it is being dropped.
        unsafe { self.slot.release() };
    }
}

mod cache;
#[cfg(all(test, loom))]
mod loom;
#[cfg(test)]
mod test;
