//! Celery's soft time limit, as a Rust task sees it: Python raises
//! `SoftTimeLimitExceeded` inside the task; Rust code cannot be interrupted,
//! so the task asks ([`soft_limit_exceeded`], [`check_soft_limit`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The soft limit of the task this process runs: (its deadline, the limit
/// in seconds). One per process, not per thread: a worker process runs one
/// task at a time, and threads the task starts see its limit too.
static SOFT: Mutex<Option<(Instant, f64)>> = Mutex::new(None);

fn soft() -> Option<(Instant, f64)> {
    *SOFT.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_soft(v: Option<(Instant, f64)>) {
    *SOFT.lock().unwrap_or_else(|p| p.into_inner()) = v;
}

/// Sets the soft limit of the task this process starts now; cleared when
/// dropped (also when the task panics).
pub(crate) struct SoftLimit(());

impl SoftLimit {
    pub(crate) fn start(limit: Option<f64>) -> SoftLimit {
        let soft = limit
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| (Instant::now() + Duration::from_secs_f64(s.min(1e9)), s));
        set_soft(soft);
        SoftLimit(())
    }
}

impl Drop for SoftLimit {
    fn drop(&mut self) {
        set_soft(None);
    }
}

/// Whether the Celery task this process runs has passed its soft time limit
/// (`soft_time_limit`, the second number of the message's `timelimit`).
///
/// Where Celery raises `SoftTimeLimitExceeded` inside a Python task, a
/// Rust task asks, at points where stopping is safe, and winds down: what
/// it returns then is its result (a `Result` task can return
/// [`check_soft_limit`]'s error, a `FAILURE` of type
/// `SoftTimeLimitExceeded` in Python). A task that does not ask runs on
/// until it returns, or until the hard limit (`time_limit`) kills its
/// worker process (`TimeLimitExceeded`); with no hard limit it is not
/// stopped, as a Python task that catches the exception goes on. Any
/// thread of the worker process running the task sees it (a worker process
/// runs one task at a time), so threads the task starts can wind down too.
/// False outside a Celery task, and when the message set no soft limit.
///
/// # Examples
///
/// ```
/// #[crew::task(name = "docs::soft::crunch")]
/// fn crunch(rounds: u64) -> u64 {
///     let mut done = 0;
///     while done < rounds && !crew::celery::soft_limit_exceeded() {
///         done += 1; // one safe step
///     }
///     done // how far it got
/// }
/// # assert!(!crew::celery::soft_limit_exceeded());
/// ```
pub fn soft_limit_exceeded() -> bool {
    soft().is_some_and(|(at, _)| Instant::now() >= at)
}

/// `Err` once the Celery task this process runs has passed its soft time
/// limit (see [`soft_limit_exceeded`]): `?` it in a task returning
/// `Result<T, SoftTimeLimitExceeded>` (or an error type that converts from
/// it) and Python's `.get()` raises `SoftTimeLimitExceeded`, as for a
/// Python task that does not catch it.
///
/// # Examples
///
/// ```
/// use crew::celery::{SoftTimeLimitExceeded, check_soft_limit};
///
/// #[crew::task(name = "docs::soft::steps")]
/// fn steps(n: u64) -> Result<u64, SoftTimeLimitExceeded> {
///     for _ in 0..n {
///         check_soft_limit()?;
///         // one step
///     }
///     Ok(n)
/// }
/// assert!(check_soft_limit().is_ok()); // not in a Celery task
/// ```
///
/// # Errors
///
/// [`SoftTimeLimitExceeded`] after the soft limit.
pub fn check_soft_limit() -> Result<(), SoftTimeLimitExceeded> {
    match soft() {
        Some((at, limit)) if Instant::now() >= at => Err(SoftTimeLimitExceeded { limit }),
        _ => Ok(()),
    }
}

/// A Celery task passed its soft time limit; the `Err` of
/// [`check_soft_limit`]. Returned by a task, it is stored as Celery's
/// `billiard.exceptions.SoftTimeLimitExceeded`.
///
/// # Examples
///
/// ```
/// let e = crew::registry::JsonError::from_error(&crew::celery::SoftTimeLimitExceeded::new(2.5));
/// assert_eq!((e.exc_type.as_str(), e.exc_module.as_str()),
///            ("SoftTimeLimitExceeded", "billiard.exceptions"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftTimeLimitExceeded {
    limit: f64,
}

impl SoftTimeLimitExceeded {
    /// The error of a soft limit of `limit` seconds.
    pub fn new(limit: f64) -> SoftTimeLimitExceeded {
        SoftTimeLimitExceeded { limit }
    }

    /// The soft limit, in seconds.
    pub fn limit(&self) -> f64 {
        self.limit
    }
}

impl std::fmt::Display for SoftTimeLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftTimeLimitExceeded({})", self.limit)
    }
}

impl std::error::Error for SoftTimeLimitExceeded {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_while_set_and_clears() {
        assert!(!soft_limit_exceeded());
        {
            let _g = SoftLimit::start(Some(0.05));
            assert!(!soft_limit_exceeded());
            assert!(check_soft_limit().is_ok());
            std::thread::sleep(Duration::from_millis(80));
            assert!(soft_limit_exceeded());
            assert_eq!(check_soft_limit(), Err(SoftTimeLimitExceeded::new(0.05)));
        }
        assert!(!soft_limit_exceeded());
        // Threads see the limit of the process's task.
        {
            let _g = SoftLimit::start(Some(0.01));
            std::thread::sleep(Duration::from_millis(30));
            let seen = std::thread::spawn(|| (soft_limit_exceeded(), check_soft_limit()))
                .join()
                .unwrap();
            assert_eq!(seen, (true, Err(SoftTimeLimitExceeded::new(0.01))));
        }
        assert!(!std::thread::spawn(soft_limit_exceeded).join().unwrap());
        let _g = SoftLimit::start(None);
        assert!(check_soft_limit().is_ok());
    }
}
