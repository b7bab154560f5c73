//! The monitor under every blocking object except `Lock`, `RLock` and
//! `Event`: a robust mutex guarding the object's state, plus two futex
//! "signals" to sleep on until that state changes.
//!
//! A signal is a sequence number and a count of sleepers, both changed only
//! under the mutex. A waiter counts itself in, reads the sequence number,
//! unlocks and sleeps in `FUTEX_WAIT` while the number is unchanged; a
//! notifier bumps the number under the mutex and, after unlocking, wakes all
//! sleepers if there are any. A notify that slips in between the waiter's
//! unlock and its sleep changes the number, so the kernel refuses the sleep:
//! no wake-up is lost. Waking all (not one) means a waiter that is killed
//! after being woken cannot swallow the wake-up another waiter needed.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::sys::{self, Deadline, Locked, MutexKind, RawMutex};

#[repr(C)]
struct Signal {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

/// A mutex and two signals, stored in shared memory.
#[repr(C)]
pub(crate) struct Monitor {
    mutex: RawMutex,
    signals: [Signal; 2],
}

impl Monitor {
    /// Initialises a monitor in zeroed memory.
    ///
    /// # Safety
    ///
    /// As [`RawMutex::init`]: valid, zeroed, unshared memory.
    pub(crate) unsafe fn init(this: *mut Monitor) {
        // SAFETY: forwarded from the caller; the signals are valid zeroed.
        unsafe { RawMutex::init(&raw mut (*this).mutex, MutexKind::ErrorCheck) };
    }

    /// Locks the monitor, or gives up at `deadline`.
    pub(crate) fn lock(&self, deadline: Deadline) -> Option<MonitorGuard<'_>> {
        let recovered = match self.mutex.lock(deadline) {
            Locked::Clean => false,
            Locked::Recovered => true,
            Locked::TimedOut => return None,
        };
        Some(MonitorGuard {
            monitor: self,
            recovered,
            pending: 0,
            _not_send: PhantomData,
        })
    }
}

/// The held monitor; unlocks (then delivers pending wake-ups) on drop.
pub(crate) struct MonitorGuard<'a> {
    monitor: &'a Monitor,
    recovered: bool,
    pending: u8,
    _not_send: PhantomData<*mut ()>,
}

impl MonitorGuard<'_> {
    /// Whether a process died holding the monitor since the last call; the
    /// caller must make the state consistent before relying on it.
    pub(crate) fn take_recovered(&mut self) -> bool {
        std::mem::take(&mut self.recovered)
    }

    /// Wakes every waiter on `signal` (once the guard is dropped or waits).
    pub(crate) fn notify_all(&mut self, signal: usize) {
        let s = &self.monitor.signals[signal];
        s.seq.fetch_add(1, Relaxed);
        if s.sleepers.load(Relaxed) > 0 {
            self.pending |= 1 << signal;
        }
    }

    fn wake_pending(&mut self) {
        for (i, s) in self.monitor.signals.iter().enumerate() {
            if self.pending & (1 << i) != 0 {
                sys::futex_wake(&s.seq, i32::MAX);
            }
        }
        self.pending = 0;
    }

    /// Unlocks, sleeps until `signal` is notified or `deadline` passes (or
    /// spuriously), and locks again (without a deadline: the monitor is only
    /// ever held for short, bounded sections).
    ///
    /// After it returns, check [`take_recovered`](Self::take_recovered).
    pub(crate) fn wait(&mut self, signal: usize, deadline: Deadline) {
        let s = &self.monitor.signals[signal];
        s.sleepers.fetch_add(1, Relaxed);
        let seq = s.seq.load(Relaxed);
        // SAFETY: this guard proves we hold the mutex.
        unsafe { self.monitor.mutex.unlock() };
        self.wake_pending();
        // Spin briefly first (crew's one spin-then-park policy): putting a
        // vCPU to sleep and waking it costs ~60 µs here. Measured with one
        // producer and one consumer process, 200,000 u64 items, 5 runs:
        // median 0.89 M items/s without a spin, 1.7 M with one.
        let mut spin = crew_core::SpinWait::new();
        while s.seq.load(Relaxed) == seq && spin.spin() {}
        sys::futex_wait(&s.seq, seq, deadline);
        match self.monitor.mutex.lock(Deadline::never()) {
            Locked::Clean => {}
            Locked::Recovered => self.recovered = true,
            Locked::TimedOut => unreachable!("a lock without deadline cannot time out"),
        }
        s.sleepers.fetch_sub(1, Relaxed);
    }
}

impl Drop for MonitorGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while this thread holds the mutex.
        unsafe { self.monitor.mutex.unlock() };
        self.wake_pending();
    }
}
