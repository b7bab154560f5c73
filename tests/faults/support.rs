//! What the fault tests share: deadlines for calls that could hang, a
//! registry through which workers tell the test their pids, `/proc`
//! inspection, the few syscalls the tests make, and re-executing this test
//! binary as a child process in a given role.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for something that must happen before it calls it
/// a hang. Generous: the suite runs on 2 shared cores, in parallel threads.
pub(crate) const LONG: Duration = Duration::from_secs(30);

/// Names the role of a re-executed test binary (see [`Role`]).
pub(crate) const ROLE: &str = "CREW_FAULTS_ROLE";

// The syscalls the tests need, declared here rather than pulling `libc` into
// the facade's dev-dependencies for four functions. Linux signatures.
unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn raise(sig: i32) -> i32;
    fn _exit(code: i32) -> !;
}

/// `SIGKILL` and `SIGSEGV` have these numbers on every Linux architecture.
pub(crate) const SIGKILL: i32 = 9;
pub(crate) const SIGSEGV: i32 = 11;

/// Sends `sig` to `pid`; true if it was delivered.
pub(crate) fn send_signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid as i32, sig) == 0 }
}

/// Raises `sig` in this process (a worker, when a task calls it).
pub(crate) fn raise_signal(sig: i32) {
    // SAFETY: raise(3) has no memory-safety preconditions.
    unsafe { raise(sig) };
}

/// Writes `bytes` to file descriptor `fd` as one `write(2)`, bypassing every
/// Rust wrapper; a task in a worker uses it to speak on the worker's socket
/// (fd 3) behind the worker's back.
pub(crate) fn write_fd(fd: i32, bytes: &[u8]) -> isize {
    // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes.
    unsafe { write(fd, bytes.as_ptr(), bytes.len()) }
}

/// Ends this process at once: no atexit handlers, no stdio flush.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions; it does not return.
    unsafe { _exit(code) }
}

/// Runs `f` on a helper thread and returns its value, re-raising its panic;
/// panics if it takes longer than `limit`. For calls whose failure mode is
/// blocking forever (`Pool::map` has no `_timeout` variant).
pub(crate) fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("deadline: {what}"))
        .spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        })
        .expect("spawn a deadline thread");
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: no answer within {limit:?} (hang)"),
    }
}

/// Polls `cond` every millisecond; panics with `what` after `limit`.
pub(crate) fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "never happened within {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A directory in which the workers of one test drop a file named after
/// their pid. Tasks cannot capture anything, so both sides derive the path
/// from the same tag and the test process's pid (the workers' parent).
pub(crate) struct Registry {
    dir: PathBuf,
}

fn registry_dir(parent: u32, tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("crew-faults-{parent}-{tag}"))
}

/// Called by a task in a worker: records this worker's pid under `tag`.
pub(crate) fn register_worker(tag: &str) {
    let dir = registry_dir(std::os::unix::process::parent_id(), tag);
    let file = dir.join(std::process::id().to_string());
    if !file.exists() {
        std::fs::write(&file, b"").expect("register the worker's pid");
    }
}

/// Called by a task in a worker: records `pid` (a process the task
/// started) under `tag`.
pub(crate) fn register_pid(tag: &str, pid: u32) {
    let dir = registry_dir(std::os::unix::process::parent_id(), tag);
    std::fs::write(dir.join(pid.to_string()), b"").expect("register a pid");
}

impl Registry {
    /// An empty registry for the workers of this process tagged `tag`.
    pub(crate) fn new(tag: &str) -> Registry {
        let dir = registry_dir(std::process::id(), tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the registry");
        Registry { dir }
    }

    /// The registry's folder, for tasks that cannot derive it (workers
    /// whose parent is not this process).
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The pids registered so far, sorted.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        pids.sort_unstable();
        pids
    }

    /// Waits until at least `n` workers registered; panics after [`LONG`].
    pub(crate) fn wait_for(&self, n: usize) -> Vec<u32> {
        eventually(LONG, &format!("{n} workers register"), || {
            self.pids().len() >= n
        });
        self.pids()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// State letter and parent pid of `pid`, from `/proc/<pid>/stat`; `None`
/// once the process is gone (reaped).
pub(crate) fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True once `pid` no longer runs: reaped, or a zombie waiting for a
/// reaper that is not us (an orphan's reaping is up to the environment's
/// init, which in a container may never come).
pub(crate) fn is_dead(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some(('Z' | 'X', _)))
}

/// Every process whose parent is `parent`, with its state letter.
pub(crate) fn children_of(parent: u32) -> Vec<(u32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, ppid) = proc_state(pid)?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

/// The libtest name of test `name` in module `module` (`module_path!()`,
/// which starts with the crate's name, which libtest leaves out).
pub(crate) fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    }
}

/// The role this process was re-executed in, if any.
pub(crate) fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// This test binary re-executed to run one test in a role; killed (with
/// the pids it reported) if the test fails.
pub(crate) struct Role {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Pids to SIGKILL too on failure: the child's workers.
    pub(crate) also_kill: Vec<u32>,
}

impl Role {
    /// Starts this binary running only test `name`, with [`ROLE`] = `role`.
    pub(crate) fn start(name: &str, role: &str) -> Role {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            // `--include-ignored`: the role must run even if its test is ignored.
            .args(["--exact", name, "--include-ignored", "--nocapture"])
            .arg("--test-threads=1")
            .env(ROLE, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("re-execute the test binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Role {
            child,
            lines,
            also_kill: Vec::new(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What follows `marker` in the first line the child prints that holds
    /// it; panics if none comes within `limit` or the child ends first.
    pub(crate) fn expect_line(&mut self, marker: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // libtest prints "test name ... " with no newline first.
                    if let Some(at) = line.find(marker) {
                        return line[at + marker.len()..].trim().to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the child printed no {marker:?} within {limit:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait();
                    panic!("the child ended ({status:?}) without printing {marker:?}")
                }
            }
        }
    }

    /// SIGKILLs the child and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the child to exit; panics after `limit`.
    pub(crate) fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        for &pid in &self.also_kill {
            if !is_dead(pid) {
                send_signal(pid, SIGKILL);
            }
        }
    }
}
