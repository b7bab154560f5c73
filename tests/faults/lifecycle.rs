//! Workers come and go without leaks: a cancelled task's worker is
//! replaced, `max_tasks_per_child` recycles workers, a killed parent or a
//! dropped pool leaves no worker and no zombie behind, and workers that
//! cannot start fail the tasks instead of being respawned forever.
//!
//! The tests that count processes run in a re-executed child of this test
//! binary ([`Role`]): the tests of one binary share a process, so "children
//! of this process" would include the workers of other tests.

use std::collections::HashSet;
use std::time::Duration;

use crew::{Executor, Pool};

use crate::support::{
    LONG, Registry, Role, SIGKILL, children_of, eventually, is_dead, proc_state, register_pid,
    register_worker, role, send_signal, test_name, within,
};

fn registers_then_sleeps_a_minute() -> u32 {
    register_worker("cancel");
    std::thread::sleep(Duration::from_secs(60));
    std::process::id()
}

#[test]
fn cancel_kills_a_running_task_and_replaces_its_worker() {
    let registry = Registry::new("cancel");
    let ex = Executor::processes(1).unwrap();
    let slow = ex.submit(registers_then_sleeps_a_minute, ());
    eventually(LONG, "the task runs", || slow.running());
    // `running()` turns true when the job is handed to the worker; wait
    // until the worker has really begun it (see the next test for why).
    let worker = registry.wait_for(1)[0];
    assert!(slow.cancel(), "a running process task can be cancelled");
    let outcome = slow.result_timeout(Duration::from_secs(10));
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_cancelled()),
        "{outcome:?}"
    );
    let next = ex.submit(std::process::id, ());
    let pid = next.result_timeout(LONG).unwrap();
    assert_ne!(pid, worker, "the cancelled task's worker was replaced");
    ex.shutdown_timeout(LONG, true);
}

fn sleeps_3_s() -> u32 {
    std::thread::sleep(Duration::from_secs(3));
    std::process::id()
}

#[test]
fn cancel_as_the_task_starts_is_not_lost() {
    // Cancel the moment `running()` turns true, before the worker has
    // necessarily read the task's frame. `cancel()` says true, so the task
    // must end cancelled, not run to completion.
    let ex = Executor::processes(1).unwrap();
    for round in 0..40 {
        let task = ex.submit(sleeps_3_s, ());
        let deadline = std::time::Instant::now() + LONG;
        while !task.running() {
            assert!(std::time::Instant::now() < deadline, "the task never ran");
            std::hint::spin_loop();
        }
        assert!(task.cancel(), "round {round}: cancel() refused");
        let outcome = task.result_timeout(Duration::from_secs(10));
        assert!(
            outcome.as_ref().is_err_and(|e| e.is_cancelled()),
            "round {round}: cancel() returned true, yet the task ended {outcome:?}"
        );
    }
    ex.shutdown_timeout(LONG, true);
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids = within(LONG, "20 tasks on recycled workers", move || {
        pool.with_chunksize(1)
            .map(|_: u32| std::process::id(), 0..20)
    })
    .expect("every task succeeds");
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    // 20 jobs, at most 3 per worker: at least 7 workers ran them.
    assert!(
        distinct.len() >= 7,
        "{} workers for 20 tasks",
        distinct.len()
    );
    assert!(!distinct.contains(&std::process::id()));
}

fn pid_after_a_while(_: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(100));
    std::process::id()
}

fn sleeps_a_second(_: u32) -> u32 {
    std::thread::sleep(Duration::from_secs(1));
    0
}

/// The child's side of [`killed_parent_leaves_no_worker`]: start two
/// workers, say their pids, then block in a long map until killed.
fn parent_to_be_killed() {
    let pool = Pool::processes(2).unwrap();
    let mut pids: HashSet<u32> = pool
        .with_chunksize(1)
        .map(pid_after_a_while, 0..4)
        .unwrap()
        .into_iter()
        .collect();
    eventually(LONG, "both workers started", || {
        children_of(std::process::id()).len() >= 2
    });
    pids.extend(children_of(std::process::id()).iter().map(|&(pid, _)| pid));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("WORKERS {}", pids.join(" "));
    // About 30 s of work: the test kills us long before; should it not,
    // we end on our own.
    let _ = pool.with_chunksize(1).map(sleeps_a_second, 0..60);
}

/// Starts this test binary as `role` (a parent of a process pool), reads the
/// pids of its workers, and has them killed too should the test fail.
fn parent_with_workers(name: &str, role: &str) -> (Role, Vec<u32>) {
    let mut parent = Role::start(name, role);
    let workers: Vec<u32> = parent
        .expect_line("WORKERS ", LONG)
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    parent.also_kill = workers.clone();
    (parent, workers)
}

#[test]
fn killed_parent_leaves_no_worker() {
    if role().as_deref() == Some("parent-to-be-killed") {
        return parent_to_be_killed();
    }
    let name = test_name(module_path!(), "killed_parent_leaves_no_worker");
    let (mut parent, workers) = parent_with_workers(&name, "parent-to-be-killed");
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    for &pid in &workers {
        assert_eq!(
            proc_state(pid).map(|(_, ppid)| ppid),
            Some(parent.pid()),
            "worker {pid} is the parent's child"
        );
    }
    parent.kill();
    eventually(LONG, "every worker exits", || {
        workers.iter().all(|&pid| is_dead(pid))
    });
}

fn registers_then_sleeps(_: u32) -> u32 {
    register_worker("dropped");
    std::thread::sleep(Duration::from_secs(30));
    std::process::id()
}

/// The child's side of [`dropped_pool_leaves_no_zombie`].
fn drops_a_busy_pool() {
    let me = std::process::id();
    let registry = Registry::new("dropped");
    let pool = Pool::processes(2).unwrap();
    let results: Vec<_> = (0..4)
        .map(|i| pool.apply_async(registers_then_sleeps, (i,)))
        .collect();
    let workers = registry.wait_for(2);
    assert_eq!(workers.len(), 2, "{workers:?}");
    drop(pool);
    for r in results {
        let outcome = r.get_timeout(LONG);
        assert!(
            outcome.as_ref().is_err_and(|e| e.is_cancelled()),
            "{outcome:?}"
        );
    }
    eventually(LONG, "the workers are gone and reaped", || {
        workers.iter().all(|&pid| proc_state(pid).is_none())
    });
    eventually(LONG, "no child is a zombie", || {
        children_of(me).iter().all(|&(_, state)| state != 'Z')
    });
    println!("DROPPED-CLEANLY");
}

#[test]
fn dropped_pool_leaves_no_zombie() {
    if role().as_deref() == Some("drops-a-busy-pool") {
        return drops_a_busy_pool();
    }
    let name = test_name(module_path!(), "dropped_pool_leaves_no_zombie");
    let mut child = Role::start(&name, "drops-a-busy-pool");
    child.expect_line("DROPPED-CLEANLY", LONG * 2);
    assert!(child.wait(LONG).success());
}

/// The child's side of [`unstartable_workers_fail_the_task`]: under a 1 MiB
/// address-space limit no worker gets as far as its handshake.
fn pool_of_unstartable_workers() {
    let me = std::process::id();
    let pool = Pool::builder()
        .processes(1)
        .memory_limit(1 << 20)
        .build()
        .unwrap();
    let outcome = pool.apply_async(|x: u32| x, (1,)).get_timeout(LONG);
    let e = outcome.expect_err("no worker can run the task");
    assert!(e.is_worker_lost(), "{e}");
    let cause = e.worker_lost_cause().unwrap();
    assert!(cause.contains("fail to start"), "{cause}");
    // Now watch the children for a second: a pool that gave up spawns no
    // more workers (a few stragglers at most), one that respawns forever
    // shows a new pid every few milliseconds.
    let mut seen = HashSet::new();
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        seen.extend(children_of(me).into_iter().map(|(pid, _)| pid));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        seen.len() <= 3,
        "{} workers started after giving up",
        seen.len()
    );
    println!("GAVE-UP");
}

#[test]
#[cfg_attr(
    crew_asan,
    ignore = "AddressSanitizer reserves terabytes of address space: no RLIMIT_AS can apply"
)]
fn unstartable_workers_fail_the_task() {
    if role().as_deref() == Some("unstartable") {
        return pool_of_unstartable_workers();
    }
    let name = test_name(module_path!(), "unstartable_workers_fail_the_task");
    let mut child = Role::start(&name, "unstartable");
    child.expect_line("GAVE-UP", LONG * 2);
    assert!(child.wait(LONG).success());
}

#[test]
fn killed_worker_pid_is_not_reused_by_the_pool() {
    // A worker killed while idle is noticed and replaced, not handed work.
    let registry = Registry::new("idle-kill");
    let pool = Pool::processes(1).unwrap();
    let first = within(LONG, "a first task", {
        let pool = pool.clone();
        move || {
            pool.apply(
                |x: u32| {
                    register_worker("idle-kill");
                    x
                },
                (1,),
            )
        }
    });
    assert_eq!(first.unwrap(), 1);
    let victim = registry.wait_for(1)[0];
    assert!(send_signal(victim, SIGKILL));
    eventually(LONG, "the idle worker is reaped", || {
        proc_state(victim).is_none()
    });
    let pid = within(LONG, "a task after the idle worker died", move || {
        pool.apply(std::process::id, ())
    })
    .expect("a task after an idle worker died runs on its replacement");
    assert_ne!(pid, victim);
}

fn registers_then_sleeps_5_s() -> u32 {
    register_worker("frozen");
    std::thread::sleep(Duration::from_secs(5));
    std::process::id()
}

#[test]
fn frozen_worker_times_out() {
    // SIGSTOP freezes the worker, watchdog thread and all; the timeout
    // still kills it (SIGKILL works on a stopped process).
    const SIGSTOP: i32 = 19;
    let registry = Registry::new("frozen");
    let ex = Executor::from_backend(
        crew::Processes::with_config(crew::ProcessConfig {
            workers: 1,
            task_timeout: Some(Duration::from_millis(300)),
            ..crew::ProcessConfig::default()
        })
        .unwrap(),
    );
    let task = ex.submit(registers_then_sleeps_5_s, ());
    let worker = registry.wait_for(1)[0];
    assert!(send_signal(worker, SIGSTOP));
    let outcome = task.result_timeout(LONG);
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_timeout()),
        "{outcome:?}"
    );
    eventually(LONG, "the frozen worker is reaped", || {
        proc_state(worker).is_none()
    });
    let next = ex.submit(|x: u8| x, (7,));
    assert_eq!(next.result_timeout(LONG).unwrap(), 7);
    ex.shutdown_timeout(LONG, true);
}

fn registers_then_loops() -> u32 {
    register_worker("terminated");
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

#[test]
fn terminate_kills_a_looping_worker() {
    let registry = Registry::new("terminated");
    let pool = Pool::processes(1).unwrap();
    let looping = pool.apply_async(registers_then_loops, ());
    let worker = registry.wait_for(1)[0];
    pool.terminate();
    assert!(pool.join_timeout(LONG).unwrap(), "the workers exit");
    let outcome = looping.get_timeout(LONG);
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_cancelled()),
        "{outcome:?}"
    );
    assert!(
        proc_state(worker).is_none(),
        "the worker is gone and reaped"
    );
}

unsafe extern "C" {
    fn setpgid(pid: i32, pgid: i32) -> i32;
}

const SIGINT: i32 = 2;

/// The child's side of [`one_ctrl_c_stops_a_running_map`]: its own process
/// group (as a shell gives a foreground job), workers, then a long map.
fn parent_to_be_interrupted() {
    // SAFETY: puts this process in a group of its own; no memory involved.
    unsafe { setpgid(0, 0) };
    parent_to_be_killed();
}

#[test]
fn one_ctrl_c_stops_a_running_map() {
    if role().as_deref() == Some("parent-to-be-interrupted") {
        return parent_to_be_interrupted();
    }
    let name = test_name(module_path!(), "one_ctrl_c_stops_a_running_map");
    let (mut parent, workers) = parent_with_workers(&name, "parent-to-be-interrupted");
    // Ctrl-C: SIGINT to the whole foreground group, parent and workers.
    assert!(send_signal_group(parent.pid(), SIGINT));
    let status = parent.wait(LONG);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(SIGINT),
        "the parent stops at the first Ctrl-C: {status:?}"
    );
    eventually(LONG, "every worker exits", || {
        workers.iter().all(|&pid| is_dead(pid))
    });
}

fn send_signal_group(pgid: u32, sig: i32) -> bool {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: signals the process group we created; no memory involved.
    unsafe { kill(-(pgid as i32), sig) == 0 }
}

fn prints_from_the_worker(x: u32) -> u32 {
    println!("HELLO FROM WORKER {} #{x}", std::process::id());
    eprintln!("and on stderr #{x}");
    x
}

/// The child's side of [`worker_output_reaches_the_parent`].
fn pool_that_prints() {
    let pool = Pool::processes(1).unwrap();
    assert_eq!(pool.apply(prints_from_the_worker, (7,)).unwrap(), 7);
    println!("PARENT DONE");
}

#[test]
fn worker_output_reaches_the_parent() {
    if role().as_deref() == Some("pool-that-prints") {
        return pool_that_prints();
    }
    let name = test_name(module_path!(), "worker_output_reaches_the_parent");
    let mut parent = Role::start(&name, "pool-that-prints");
    let line = parent.expect_line("HELLO FROM WORKER ", LONG);
    assert!(line.ends_with("#7"), "{line}");
    let worker: u32 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert_ne!(worker, parent.pid(), "printed by the worker process");
    parent.expect_line("PARENT DONE", LONG);
    assert!(parent.wait(LONG).success());
}

/// Starts `sleep 1000` (registered under `tag`), then spins until killed.
// Never waits for the sleep: the point is what happens to it when the
// worker is killed.
#[allow(clippy::zombie_processes)]
fn starts_a_sleep_then_loops(tag: String) -> u32 {
    // Away from the test's pipes: a sleep left behind by a failing test
    // must not hold its output open.
    let sleep = std::process::Command::new("sleep")
        .arg("1000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sleep");
    register_pid(&tag, sleep.id());
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// SIGKILLs a pid when dropped: what a failing test started does not
/// outlive it.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !is_dead(self.0) {
            send_signal(self.0, SIGKILL);
        }
    }
}

#[test]
fn a_timed_out_task_takes_the_processes_it_started_with_it() {
    let registry = Registry::new("started-timeout");
    let pool = Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let looping = pool.apply_async(starts_a_sleep_then_loops, ("started-timeout".to_string(),));
    let sleep = registry.wait_for(1)[0];
    let _cleanup = KillOnDrop(sleep);
    let outcome = looping.get_timeout(LONG);
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_timeout()),
        "{outcome:?}"
    );
    eventually(LONG, "the sleep the task started is killed too", || {
        is_dead(sleep)
    });
}

#[test]
fn a_cancelled_task_takes_the_processes_it_started_with_it() {
    let registry = Registry::new("started-cancel");
    let ex = Executor::processes(1).unwrap();
    let looping = ex.submit(starts_a_sleep_then_loops, ("started-cancel".to_string(),));
    let sleep = registry.wait_for(1)[0];
    let _cleanup = KillOnDrop(sleep);
    assert!(looping.cancel());
    let outcome = looping.result_timeout(LONG);
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_cancelled()),
        "{outcome:?}"
    );
    eventually(LONG, "the sleep the task started is killed too", || {
        is_dead(sleep)
    });
    ex.shutdown_timeout(LONG, true);
}

fn sleeps_20_s(_: u32) -> u32 {
    std::thread::sleep(Duration::from_secs(20));
    std::process::id()
}

/// The pool's `n` workers, once they have all started.
fn started_workers(pool: &Pool<crew::Processes>, n: usize) -> Vec<u32> {
    eventually(LONG, "the workers start", || pool.worker_pids().len() == n);
    let pids = pool.worker_pids();
    assert!(!pids.contains(&std::process::id()));
    pids
}

#[test]
fn no_worker_outlives_drop_terminate_or_join() {
    // Dropped while its workers run tasks: they are dead when drop returns.
    let pool = Pool::processes(2).unwrap();
    let busy: Vec<_> = (0..2)
        .map(|i| pool.apply_async(sleeps_20_s, (i,)))
        .collect();
    let pids = started_workers(&pool, 2);
    drop(pool);
    for pid in &pids {
        assert!(is_dead(*pid), "worker {pid} still runs after drop");
    }
    for r in busy {
        assert!(r.get_timeout(LONG).unwrap_err().is_cancelled());
    }
    // Terminated: the same when terminate returns.
    let pool = Pool::processes(2).unwrap();
    let busy: Vec<_> = (0..2)
        .map(|i| pool.apply_async(sleeps_20_s, (i,)))
        .collect();
    let pids = started_workers(&pool, 2);
    pool.terminate();
    for pid in &pids {
        assert!(is_dead(*pid), "worker {pid} still runs after terminate");
    }
    assert!(pool.worker_pids().is_empty());
    drop(busy);
    // Closed and joined: every worker exited and was reaped.
    let pool = Pool::processes(2).unwrap();
    let pids = started_workers(&pool, 2);
    pool.close();
    assert!(pool.join_timeout(LONG).unwrap());
    for pid in &pids {
        assert!(
            proc_state(*pid).is_none(),
            "worker {pid} not reaped after join"
        );
    }
}

fn sum_shared(a: crew::shm::Array<u64>) -> u64 {
    a.to_vec().iter().sum()
}

fn add_to_shared(v: crew::shm::Value<u64>, n: u64) -> u64 {
    v.set(v.get() + n);
    v.get()
}

fn sum_each(a: crew::shm::Array<u64>) -> u64 {
    a.to_vec().iter().sum()
}

/// A task may be given the only handle of a shared region: the parent's
/// copy goes with the task's arguments, and the job keeps the region until
/// the worker has opened it.
#[test]
fn a_shared_region_moved_into_a_process_task_reaches_the_worker() {
    let pool = Pool::processes(2).unwrap();
    let array = crew::shm::Array::from_slice(&[1u64, 2, 3, 4]).unwrap();
    assert_eq!(pool.apply(sum_shared, (array,)).unwrap(), 10);

    let value = crew::shm::Value::new(5u64).unwrap();
    let r = pool.apply_async(add_to_shared, (value, 2u64));
    assert_eq!(r.get_timeout(LONG).unwrap(), 7);

    // Through a map too: each chunk holds the regions of its items.
    let arrays: Vec<_> = (0..8u64)
        .map(|i| crew::shm::Array::from_slice(&[i, i]).unwrap())
        .collect();
    let sums = pool.map(sum_each, arrays).unwrap();
    assert_eq!(sums, (0..8u64).map(|i| 2 * i).collect::<Vec<_>>());

    // And to a single process.
    let array = crew::shm::Array::from_slice(&[7u64, 8]).unwrap();
    let mut p = crew::Process::new(sum_shared, (array,));
    p.start().unwrap();
    assert!(p.join_timeout(LONG).unwrap(), "the process did not end");
    assert_eq!(p.result().unwrap(), 15);
}

fn block_sum((data, block): (crew::shm::Frozen<[f64; 2]>, std::ops::Range<usize>)) -> f64 {
    data[block].iter().map(|[a, b]| a * b).sum()
}

/// Read-only data shared once: every task of a map carries a handle to the
/// same `Frozen` slice, and the workers read it in place, also when the
/// parent's own handle went into the tasks.
#[test]
fn a_frozen_slice_reaches_every_task_of_a_process_map() {
    let pool = Pool::processes(2).unwrap();
    let points: Vec<[f64; 2]> = (0..10_000).map(|i| [i as f64, 0.5]).collect();
    let frozen = crew::shm::Frozen::from_slice(&points).unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|b| (frozen.clone(), b * 100..(b + 1) * 100))
        .collect();
    drop(frozen); // the tasks hold the only handles
    let sums = pool.map(block_sum, tasks).unwrap();
    let expected: Vec<f64> = points
        .chunks(100)
        .map(|c| c.iter().map(|[a, b]| a * b).sum())
        .collect();
    assert_eq!(sums, expected);
}

/// A task of the inner pool in [`starts_a_pool_of_its_own`]: records its
/// worker's pid in `dir`, then sleeps (`ms`) and returns its square.
fn inner_registers(dir: String, ms: u64, x: u64) -> u64 {
    let pid = std::process::id();
    std::fs::write(std::path::Path::new(&dir).join(pid.to_string()), b"").expect("register");
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

/// A process task that starts a process pool of its own and maps on it.
fn starts_a_pool_of_its_own(dir: String, ms: u64) -> Vec<u64> {
    let inner = Pool::processes(2).expect("a pool inside a worker");
    inner
        .starmap(inner_registers, (0..4).map(|x| (dir.clone(), ms, x)))
        .expect("the inner map")
}

#[test]
fn a_task_may_start_a_process_pool_and_its_workers_die_with_it() {
    // The inner workers' parent is the outer worker, not this process:
    // they are told the registry's folder instead of deriving it.
    let reg = Registry::new("nested");
    let arg = reg.dir().to_str().unwrap().to_owned();
    // A pool (not an executor): should an assertion fail, dropping it
    // kills the sleeping task instead of waiting for it.
    let pool = Pool::processes(1).unwrap();
    // A pool inside a worker works as any other.
    let squares = pool
        .apply_async(starts_a_pool_of_its_own, (arg.clone(), 0))
        .get_timeout(LONG);
    assert_eq!(squares.unwrap(), [0, 1, 4, 9]);
    let first: HashSet<u32> = reg.pids().into_iter().collect();
    assert!(!first.is_empty() && !first.contains(&std::process::id()));
    // Killing the outer task's worker stops the inner pool's workers too.
    let outer = pool.apply_async(starts_a_pool_of_its_own, (arg, 600_000));
    eventually(LONG, "the inner workers start", || {
        reg.pids().iter().filter(|p| !first.contains(p)).count() >= 2
    });
    let inner: Vec<u32> = reg
        .pids()
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    pool.terminate();
    assert!(outer.get_timeout(LONG).is_err());
    eventually(LONG, "the inner pool's workers exit", || {
        inner.iter().all(|&pid| is_dead(pid))
    });
}

fn naps(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn an_executor_task_past_its_timeout_fails_alone_and_the_executor_carries_on() {
    let ex = Executor::builder()
        .processes(1)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // 20 s: long past the timeout, short enough that a failing run (whose
    // executor waits for its tasks when dropped) still ends soon.
    let slow = ex.submit(naps, (20_000,));
    let quick = ex.submit(naps, (0,));
    let err = slow.result_timeout(LONG).unwrap_err();
    // The task's own timeout names its worker; giving up the wait would not.
    assert!(err.is_timeout() && err.worker().is_some(), "{err:?}");
    assert_eq!(quick.result_timeout(LONG).unwrap(), 0);
    // Out-of-range settings are refused, as on a pool.
    for bad in [
        Executor::builder()
            .processes(1)
            .task_timeout(Duration::ZERO)
            .build(),
        Executor::builder().processes(1).memory_limit(0).build(),
    ] {
        assert!(bad.unwrap_err().is_invalid_input());
    }
    ex.shutdown(true, false);
}
