//! Waking proxies in a chain (`Shared::submit`, `Shared::unpark`): a burst
//! of submissions wakes one parked proxy, which wakes the next; no job may
//! stay queued while a proxy sleeps idle.

use std::time::{Duration, Instant};

use crew_core::{Backend, Future, Runs, Star};

use crate::{ProcessConfig, Processes};

/// Arrives at a barrier of `n` tasks (a directory of files), waits until
/// all `n` are there, and says whether they all came within 20 s. Each of
/// the `n` tasks occupies its worker until all run at once, so a job left
/// queued while a proxy sleeps never runs: the barrier times out.
fn barrier(dir: String, n: u64, me: u64) -> bool {
    std::fs::write(format!("{dir}/{me}"), b"").expect("the barrier directory is writable");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let here = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        if here as u64 >= n {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_burst_wakes_every_idle_worker_so_all_run_at_once() {
    const WORKERS: u64 = 3;
    let p = Processes::with_config(ProcessConfig {
        workers: WORKERS as usize,
        ..Default::default()
    })
    .expect("a pool starts");
    let root = std::env::temp_dir().join(format!("crew-wake-{}", std::process::id()));
    for round in 0..100u64 {
        // Every other round, pause first so that every proxy parks: the
        // burst then starts from sleeping proxies only.
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = root.join(round.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.to_str().unwrap().to_owned();
        let futures: Vec<_> = (0..WORKERS)
            .map(|me| {
                let (promise, future) = Future::pending();
                let job = p.call_job(
                    Star(|dir: String, n: u64, me: u64| barrier(dir, n, me)),
                    (dir.clone(), WORKERS, me),
                    promise,
                );
                p.spawn(job).expect("the pool is open");
                future
            })
            .collect();
        for f in futures {
            assert!(
                f.result_timeout(Duration::from_secs(60)).unwrap(),
                "round {round}: a task was left queued while a worker idled"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    // Once every proxy parks again, none is still marked as searching
    // (a mark left behind would stop submissions from waking anyone).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = super::lock(&p.shared.queue);
        if q.idle.len() == WORKERS as usize {
            assert_eq!(q.searcher, None);
            break;
        }
        drop(q);
        assert!(Instant::now() < deadline, "the proxies never all parked");
        std::thread::sleep(Duration::from_millis(5));
    }
}
