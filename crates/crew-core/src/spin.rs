//! The one spin-then-park policy of crew: how long a thread that waits for
//! another (a result, a job, a frame, a futex word) keeps looking before
//! it goes to sleep.
//!
//! Waking a sleeping thread on the other vCPU costs ~60 µs on the
//! project's VMs, a PAUSE ~9 ns (`notes/ipc-floor.md`), so a wait whose
//! answer is microseconds away pays for a short spin; one that is not
//! should sleep soon, because on two vCPUs the thread it waits for often
//! needs the very CPU the spinner holds. Hence: batches of PAUSEs, a yield
//! of the CPU every few batches, and a time budget ([`SPIN`] unless a site
//! says otherwise), after which the caller parks.

use std::time::{Duration, Instant};

use crate::sync::thread;

/// The default budget of a spin before parking: a quarter of a wake-up
/// (~60 µs here), enough for an answer a few microseconds away, and under
/// the ~10 µs-plus-slack that `notes/ipc-floor.md` advises. (The waits it
/// replaced spun 5 to 20 µs; `crew-shm`'s queue measured 0.89 M items/s
/// without its spin, 1.7 M with it.)
pub const SPIN: Duration = Duration::from_micros(15);

/// PAUSEs per step (~0.15 µs here): long enough that reading the clock
/// each step costs little, short enough to see a change soon.
const PAUSES_PER_STEP: u32 = 16;

/// Every this many steps, yield the CPU instead of pausing: the thread
/// being waited for may be waiting for this CPU.
const YIELD_EVERY: u32 = 8;

/// Steps under loom, which has no clock: two checks model the spinning
/// state without an explosion of interleavings. (No yield either: loom
/// never preempts a thread that just yielded, which would hide races.)
const LOOM_STEPS: u32 = 2;

/// A spin-then-park wait: call [`spin`](SpinWait::spin) between checks of
/// the condition; once it returns false, park (on a futex, a condition
/// variable, `poll`) instead.
///
/// The clock starts at the first `spin`, so a wait whose condition already
/// holds costs no clock read.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use crew::core::SpinWait;
///
/// let ready = Arc::new(AtomicBool::new(false));
/// let r = ready.clone();
/// let setter = std::thread::spawn(move || r.store(true, Ordering::Release));
/// let mut spin = SpinWait::new();
/// while !ready.load(Ordering::Acquire) {
///     if !spin.spin() {
///         // Budget spent: a real waiter parks here (futex, condvar, poll).
///         std::thread::yield_now();
///     }
/// }
/// setter.join().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct SpinWait {
    budget: Duration,
    until: Option<Instant>,
    steps: u32,
}

impl Default for SpinWait {
    fn default() -> Self {
        SpinWait::new()
    }
}

impl SpinWait {
    /// A wait with the default budget, [`SPIN`].
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// let mut spin = crew::core::SpinWait::new();
    /// assert!(spin.spin()); // the budget has only begun
    /// ```
    pub fn new() -> SpinWait {
        SpinWait::with_budget(SPIN)
    }

    /// A wait that spins for at most `budget` (zero: park at once).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::time::Duration;
    /// let mut spin = crew::core::SpinWait::with_budget(Duration::ZERO);
    /// assert!(!spin.spin());
    /// let mut spin = crew::core::SpinWait::with_budget(Duration::from_micros(1));
    /// let mut steps = 0;
    /// while spin.spin() {
    ///     steps += 1;
    /// }
    /// assert!(steps < 1_000);
    /// ```
    pub fn with_budget(budget: Duration) -> SpinWait {
        SpinWait {
            budget,
            until: None,
            steps: 0,
        }
    }

    /// Waits one step (a batch of PAUSEs, or now and then a yield of the
    /// CPU) and returns true, or returns false at once if the budget is
    /// spent: the caller should park.
    ///
    /// # Examples
    ///
    /// See [`SpinWait`].
    pub fn spin(&mut self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        if cfg!(loom) {
            if self.steps >= LOOM_STEPS {
                return false;
            }
            self.steps += 1;
            std::hint::spin_loop();
            return true;
        }
        let now = Instant::now();
        let until = *self.until.get_or_insert_with(|| now + self.budget);
        if now >= until {
            return false;
        }
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(YIELD_EVERY) {
            thread::yield_now();
        } else {
            for _ in 0..PAUSES_PER_STEP {
                std::hint::spin_loop();
            }
        }
        true
    }

    /// True once the budget is spent (the next [`spin`](SpinWait::spin)
    /// returns false).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// let mut spin = crew::core::SpinWait::with_budget(std::time::Duration::ZERO);
    /// assert!(spin.is_spent());
    /// ```
    pub fn is_spent(&self) -> bool {
        if self.budget.is_zero() {
            return true;
        }
        if cfg!(loom) {
            return self.steps >= LOOM_STEPS;
        }
        self.until.is_some_and(|u| Instant::now() >= u)
    }

    /// Starts the budget over (the wait found what it waited for, and
    /// waits again).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// let mut spin = crew::core::SpinWait::with_budget(std::time::Duration::from_micros(1));
    /// while spin.spin() {}
    /// spin.reset();
    /// assert!(spin.spin());
    /// ```
    pub fn reset(&mut self) {
        self.until = None;
        self.steps = 0;
    }
}

#[cfg(all(test, not(loom)))]
mod test {
    use super::*;

    #[test]
    fn the_budget_ends_the_spin() {
        let mut spin = SpinWait::with_budget(Duration::from_micros(200));
        let start = Instant::now();
        let mut steps = 0u64;
        while spin.spin() {
            steps += 1;
        }
        assert!(start.elapsed() >= Duration::from_micros(200));
        assert!(steps > 0);
        assert!(spin.is_spent());
        assert!(!spin.spin(), "spent stays spent until reset");
    }
}
