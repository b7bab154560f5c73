//! The fork server: a program's second process pool starts it, and pool
//! workers forked from it are the program's children in every way that
//! matters here: their deaths are reported with their signal or exit code, a
//! lock they die holding is recovered, they see the program's environment
//! and working directory of the moment, nothing outlives the program, and a
//! killed server leaves pools working.
//!
//! The tests that count processes, kill the server or change the working
//! directory run in a re-executed child of this test binary ([`Role`]).

use std::time::Duration;

use crew::sync::Lock;
use crew::{Error, Pool, Process};

use crate::support::{
    LONG, Role, SIGKILL, SIGSEGV, children_of, eventually, is_dead, proc_state, raise_signal, role,
    send_signal, test_name,
};

const SERVER_NAME: &str = "crew-forkserver";

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// True if `pid` was forked from the server: its initial environment (what
/// `/proc/<pid>/environ` shows) is the server's, which names its socket.
fn forked_from_server(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|&b| b == 0)
                .any(|kv| kv.starts_with(b"CREW_FORK_SERVER_FD="))
        })
        .unwrap_or(false)
}

/// Makes this process run the server (its second process pool starts it)
/// and returns the server's pid.
fn server_up() -> u32 {
    for _ in 0..2 {
        let pool = Pool::processes(1).unwrap();
        assert_eq!(pool.apply(|| 1u8, ()).unwrap(), 1);
    }
    crew_process::fork_server_pid().expect("a second pool starts the fork server")
}

fn lost_with(e: &Error, cause: &str) {
    assert!(e.is_worker_lost(), "{e}");
    let got = e.worker_lost_cause().expect("a lost worker has a cause");
    assert!(got.contains(cause), "cause {got:?} lacks {cause:?}");
}

#[test]
fn deaths_of_forked_workers_are_reported_with_their_code() {
    let me = std::process::id();
    let server = server_up();
    assert_eq!(comm(server).as_deref(), Some(SERVER_NAME));
    assert_eq!(proc_state(server).map(|(_, ppid)| ppid), Some(me));
    let pool = Pool::processes(1).unwrap();
    let worker = pool.apply(std::process::id, ()).unwrap();
    assert!(forked_from_server(worker), "worker {worker} was forked");
    assert_eq!(
        proc_state(worker).map(|(_, ppid)| ppid),
        Some(me),
        "a forked worker is the program's child"
    );
    assert_ne!(
        comm(worker).as_deref(),
        Some(SERVER_NAME),
        "a worker takes back the name the server had before it renamed itself"
    );

    let e = pool
        .apply(|| -> u32 { std::process::exit(7) }, ())
        .unwrap_err();
    lost_with(&e, "exited with code 7");
    let e = pool
        .apply(
            || -> u32 {
                raise_signal(SIGSEGV);
                0
            },
            (),
        )
        .unwrap_err();
    lost_with(&e, "killed by signal 11 (SIGSEGV)");
    let e = pool
        .apply(|| -> u32 { std::process::abort() }, ())
        .unwrap_err();
    lost_with(&e, "SIGABRT");
    let e = pool
        .apply(
            || -> u32 {
                raise_signal(SIGKILL);
                0
            },
            (),
        )
        .unwrap_err();
    lost_with(&e, "killed by signal 9 (SIGKILL)");
    assert_eq!(pool.apply(|x: u32| x + 1, (1,)).unwrap(), 2);
}

#[test]
fn a_lock_a_forked_worker_dies_holding_is_recovered() {
    server_up();
    let lock = Lock::new().unwrap();
    let pool = Pool::processes(1).unwrap();
    let e = pool
        .apply(
            |l: Lock| -> u32 {
                std::mem::forget(l.acquire().expect("a free lock"));
                raise_signal(SIGKILL);
                0
            },
            (lock.clone(),),
        )
        .unwrap_err();
    lost_with(&e, "SIGKILL");
    // The kernel marks the lock abandoned only if the worker's thread id
    // and robust-futex list are right after the fork.
    let got = lock.acquire_timeout(LONG);
    assert!(
        got.as_ref().is_err_and(|e| e.is_owner_dead()),
        "the next acquirer is told the holder died"
    );
}

/// The child's side of [`a_program_without_a_second_pool_starts_no_server`].
fn runs_no_second_pool() {
    let me = std::process::id();
    let threads = Pool::threads(2).unwrap();
    assert_eq!(threads.apply(|| 2u8, ()).unwrap(), 2);
    let mut p = Process::new(|| 3u8, ());
    p.start().unwrap();
    assert_eq!(p.result().unwrap(), 3);
    let pool = Pool::processes(2).unwrap();
    assert_eq!(pool.map(|x: u32| x * 2, 0..8).unwrap().len(), 8);
    assert_eq!(crew_process::fork_server_pid(), None);
    assert!(
        children_of(me)
            .iter()
            .all(|&(pid, _)| comm(pid).as_deref() != Some(SERVER_NAME)),
        "no fork server runs"
    );
    println!("NO-SERVER");
}

#[test]
fn a_program_without_a_second_pool_starts_no_server() {
    if role().as_deref() == Some("runs-no-second-pool") {
        return runs_no_second_pool();
    }
    let name = test_name(
        module_path!(),
        "a_program_without_a_second_pool_starts_no_server",
    );
    let mut child = Role::start(&name, "runs-no-second-pool");
    child.expect_line("NO-SERVER", LONG);
    assert!(child.wait(LONG).success());
}

/// The child's side of [`forked_workers_see_the_present_and_die_with_the_program`].
fn forks_then_waits() {
    let me = std::process::id();
    let server = server_up();
    // Changed after the server started: workers must see the new ones.
    let dir = std::env::temp_dir().join(format!("crew-forkserver-{me}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_current_dir(&dir).unwrap();
    // SAFETY: this role's process runs this one test, on this thread;
    // nothing else reads the environment now.
    unsafe { std::env::set_var("CREW_FORKSERVER_TEST", "late") };
    let pool = Pool::processes(2).unwrap();
    let (cwd, var, pid) = pool
        .apply(
            || {
                (
                    std::env::current_dir().unwrap(),
                    std::env::var("CREW_FORKSERVER_TEST").ok(),
                    std::process::id(),
                )
            },
            (),
        )
        .unwrap();
    assert_eq!(cwd, dir.canonicalize().unwrap());
    assert_eq!(var.as_deref(), Some("late"));
    assert!(forked_from_server(pid), "worker {pid} was forked");
    std::env::set_current_dir(std::env::temp_dir()).unwrap();
    let _ = std::fs::remove_dir(&dir);
    eventually(LONG, "both workers started", || children_of(me).len() >= 3);
    let others: Vec<String> = children_of(me)
        .iter()
        .map(|&(pid, _)| pid.to_string())
        .collect();
    println!("PROCESSES {server} {}", others.join(" "));
    // The test kills us long before this ends; should it not, we end.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn forked_workers_see_the_present_and_die_with_the_program() {
    if role().as_deref() == Some("forks-then-waits") {
        return forks_then_waits();
    }
    let name = test_name(
        module_path!(),
        "forked_workers_see_the_present_and_die_with_the_program",
    );
    let mut parent = Role::start(&name, "forks-then-waits");
    let pids: Vec<u32> = parent
        .expect_line("PROCESSES ", LONG)
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    parent.also_kill = pids.clone();
    assert!(pids.len() >= 3, "the server and two workers: {pids:?}");
    parent.kill();
    eventually(LONG, "the server and every worker exit", || {
        pids.iter().all(|&pid| is_dead(pid))
    });
}

/// The child's side of [`dropped_pools_leave_only_the_server`].
fn drops_pools() {
    let me = std::process::id();
    let server = server_up();
    for round in 0..3u32 {
        let pool = Pool::processes(2).unwrap();
        let out = pool.map(|x: u32| x + 1, 0..16).unwrap();
        assert_eq!(out.len(), 16, "round {round}");
        drop(pool);
    }
    eventually(LONG, "only the server is left, and no zombie", || {
        children_of(me) == [(server, 'S')]
    });
    println!("ONLY-SERVER");
}

#[test]
fn dropped_pools_leave_only_the_server() {
    if role().as_deref() == Some("drops-pools") {
        return drops_pools();
    }
    let name = test_name(module_path!(), "dropped_pools_leave_only_the_server");
    let mut child = Role::start(&name, "drops-pools");
    child.expect_line("ONLY-SERVER", LONG * 2);
    assert!(child.wait(LONG).success());
}

/// The child's side of [`pools_outlive_a_killed_server`].
fn kills_the_server() {
    let me = std::process::id();
    let server = server_up();
    let before = Pool::processes(1).unwrap();
    let worker = before.apply(std::process::id, ()).unwrap();
    assert!(forked_from_server(worker), "worker {worker} was forked");
    assert!(send_signal(server, SIGKILL));
    eventually(LONG, "the killed server is reaped", || {
        proc_state(server).is_none()
    });
    // A worker forked before lives on.
    assert_eq!(before.apply(std::process::id, ()).unwrap(), worker);
    // New pools start their workers afresh.
    let after = Pool::processes(2).unwrap();
    let pid = after.apply(std::process::id, ()).unwrap();
    assert!(!forked_from_server(pid), "worker {pid} was started afresh");
    assert_eq!(crew_process::fork_server_pid(), None);
    let e = after
        .apply(|| -> u32 { std::process::exit(3) }, ())
        .unwrap_err();
    lost_with(&e, "exited with code 3");
    assert_eq!(after.map(|x: u32| x * 3, 0..6).unwrap()[5], 15);
    drop(before);
    drop(after);
    eventually(LONG, "no process is left", || children_of(me).is_empty());
    println!("SURVIVED");
}

#[test]
fn pools_outlive_a_killed_server() {
    if role().as_deref() == Some("kills-the-server") {
        return kills_the_server();
    }
    let name = test_name(module_path!(), "pools_outlive_a_killed_server");
    let mut child = Role::start(&name, "kills-the-server");
    child.expect_line("SURVIVED", LONG * 2);
    assert!(child.wait(LONG).success());
}
