//! How many CPUs this process may use.

/// The number of CPUs this process may run on: Python's
/// `multiprocessing.cpu_count()`, but honouring the CPU affinity mask and
/// cgroup CPU quotas (a container limited to 2 CPUs on a 64-core host gets 2),
/// as `os.process_cpu_count()` does.
///
/// Never less than 1.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// let n = crew::cpu_count();
/// assert!(n >= 1);
/// println!("Number of processors: {n}");
/// ```
pub fn cpu_count() -> usize {
    // std reads sched_getaffinity and the cgroup v1/v2 quota on Linux.
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resolves joblib's `n_jobs`: a positive number is taken as is; `-1` means
/// every CPU, `-2` all but one, and so on (`cpu_count() + 1 + n_jobs`).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{cpu_count, resolve_n_jobs};
/// assert_eq!(resolve_n_jobs(3).unwrap(), 3);
/// assert_eq!(resolve_n_jobs(-1).unwrap(), cpu_count());
/// assert!(resolve_n_jobs(0).unwrap_err().is_invalid_input());
/// ```
///
/// # Errors
///
/// `is_invalid_input` for 0, and for a negative value that leaves no CPU
/// (`-3` on a 2-CPU machine); joblib raises `ValueError` there too.
pub fn resolve_n_jobs(n_jobs: isize) -> crate::Result<usize> {
    let cpus = cpu_count() as isize;
    let n = if n_jobs < 0 {
        cpus + 1 + n_jobs
    } else {
        n_jobs
    };
    if n_jobs == 0 || n < 1 {
        return Err(crate::Error::invalid_input(format!(
            "n_jobs={n_jobs} leaves no worker on {cpus} CPUs (use a positive count, or -1 for every CPU)"
        )));
    }
    Ok(n as usize)
}
