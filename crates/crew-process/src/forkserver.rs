//! The fork server: a small, single-threaded copy of this program from
//! which pool workers are forked, so that a new pool's workers skip `exec`,
//! the dynamic loader and the C library's start-up (README, "Starting
//! workers").
//!
//! The server is this executable started afresh (as a worker is), entered
//! before `main` like a worker, so it runs no code of the program. It starts
//! when the program creates its second process pool (a program with one pool
//! gains nothing from it: its workers would wait for the server's own
//! start), and lives until the program ends. For each worker the program
//! sends it one request: the worker's environment, and five descriptors (the
//! worker's socket and control page, the program's stdout and stderr of the
//! moment, and its working directory). The server forks with
//! `CLONE_PARENT`, so the worker is the program's child, not the server's:
//! the program waits for it, reads its exit status and signals it exactly as
//! a worker it started itself, and holds a pidfd of it.
//!
//! Nothing outlives the program: the server and its workers set
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that started the
//! server ends (the workers' parent is that thread too), so the server is
//! started from a thread of its own that never ends; and the server exits
//! when its socket closes. If the server dies or stops answering, it is
//! killed, and workers are started afresh from then on.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg,
    sendmsg, socketpair,
};

/// Names the server's socket fd; its presence makes a process the server.
pub(crate) const ENV_SERVER: &str = "CREW_FORK_SERVER_FD";
/// The program's pid, to detect a program that died before we started.
const ENV_SERVER_PARENT: &str = "CREW_FORK_SERVER_PARENT";
/// Set (to `1`, or any value but empty, `0`, `false`, `no` or `off`), every
/// worker is started afresh: no fork server. Read once, when the program's
/// second process pool starts its first worker.
pub const NO_FORK_SERVER_ENV: &str = "CREW_NO_FORK_SERVER";
/// The name the server shows in `ps` (`/proc/<pid>/comm`, 15 bytes at most).
pub(crate) const SERVER_NAME: &std::ffi::CStr = c"crew-forkserver";
/// The largest request: a worker's environment, with room to spare.
const MAX_REQUEST: usize = 1 << 20;
/// Descriptors of a request: socket, control page, stdout, stderr, cwd.
const FDS: usize = 5;
/// How long the program waits for the server to answer before it gives
/// the server up (it answers within a fork; this only ends a hang).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Process pools this program created.
static POOLS: AtomicUsize = AtomicUsize::new(0);
/// Set once the server is [`State::Gone`].
static GONE: AtomicBool = AtomicBool::new(false);

/// Counts a new process pool.
pub(crate) fn pool_created() {
    POOLS.fetch_add(1, Ordering::Relaxed);
}

/// True if pool workers should come from the server: this is the program's
/// second pool or later, and the server is not disabled
/// ([`NO_FORK_SERVER_ENV`]) nor gone.
pub(crate) fn wanted() -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    POOLS.load(Ordering::Relaxed) >= 2
        && !*DISABLED.get_or_init(|| disabled_by(std::env::var_os(NO_FORK_SERVER_ENV).as_deref()))
        && !GONE.load(Ordering::Relaxed)
}

/// True if [`NO_FORK_SERVER_ENV`] set to `value` turns the server off: any
/// value but empty or one that reads as "no" (`CREW_NO_FORK_SERVER=0` keeps
/// the server, as a newcomer means it to).
fn disabled_by(value: Option<&std::ffi::OsStr>) -> bool {
    let Some(v) = value else { return false };
    let v = v.to_string_lossy();
    let v = v.trim();
    !(v.is_empty()
        || ["0", "false", "no", "off"]
            .iter()
            .any(|n| v.eq_ignore_ascii_case(n)))
}

/// Says once, on stderr, that the server is given up and why: pools go on,
/// with workers started afresh (slower to start, nothing else changes).
fn give_up(why: &io::Error) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!("{}", give_up_message(why));
    }
}

fn give_up_message(why: &io::Error) -> String {
    format!(
        "crew: the fork server cannot serve ({why}); process pool workers are started afresh \
         from now on, which only makes them slower to start (set {NO_FORK_SERVER_ENV}=1 \
         to skip the fork server)"
    )
}

enum State {
    /// Not started yet.
    Off,
    Up(Server),
    /// Failed to start, died or hung: workers are started afresh.
    Gone,
}

struct Server {
    sock: OwnedFd,
    /// To kill the server without naming a recycled pid.
    pidfd: Option<OwnedFd>,
}

static SERVER: Mutex<State> = Mutex::new(State::Off);

fn lock() -> std::sync::MutexGuard<'static, State> {
    SERVER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a request failed.
enum Failure {
    /// The server is fine; this worker could not be forked.
    Refused(io::Error),
    /// The server is dead, hung or confused: give it up.
    Broken(io::Error),
}

/// The pid of the fork server, if this program runs one: from its second
/// process pool on, pool workers are forked from it (set
/// `CREW_NO_FORK_SERVER=1` to start every worker afresh instead). `None`
/// before the second pool, with the server turned off, or once it was given
/// up (it could not start, died or stopped answering: said once on stderr;
/// pools carry on with workers started afresh).
///
/// # Examples
///
/// ```
/// // A program that made no process pool runs no server.
/// assert_eq!(crew_process::fork_server_pid(), None);
/// ```
pub fn fork_server_pid() -> Option<u32> {
    match &*lock() {
        State::Up(server) => server
            .pidfd
            .as_ref()
            .and_then(|fd| pid_of_pidfd(fd.as_fd())),
        _ => None,
    }
}

/// The pid a pidfd names, from `/proc/self/fdinfo` (`None` once it exited).
fn pid_of_pidfd(fd: BorrowedFd<'_>) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let pid: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    (pid > 0).then_some(pid as u32)
}

/// Has the server fork a worker with environment `env` (an
/// [`env_block`](crate::spawn::env_block)), `sock` on fd 3 and `control` on
/// fd 4, in a process group of its own; starts the server first if needed.
/// Returns the worker's pid: a child of this process.
pub(crate) fn fork_worker(
    env: &[u8],
    sock: BorrowedFd<'_>,
    control: BorrowedFd<'_>,
) -> io::Result<u32> {
    let mut state = lock();
    if matches!(*state, State::Off) {
        *state = match start() {
            Ok(server) => State::Up(server),
            Err(e) => {
                give_up(&e);
                GONE.store(true, Ordering::Relaxed);
                State::Gone
            }
        };
    }
    let State::Up(server) = &*state else {
        return Err(io::Error::other("the fork server is gone"));
    };
    match server.request(env, sock, control) {
        Ok(pid) => Ok(pid),
        Err(Failure::Refused(e)) => Err(e),
        Err(Failure::Broken(e)) => {
            give_up(&e);
            if let Some(pidfd) = &server.pidfd {
                let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
            }
            *state = State::Gone;
            GONE.store(true, Ordering::Relaxed);
            Err(e)
        }
    }
}

impl Server {
    fn request(
        &self,
        env: &[u8],
        sock: BorrowedFd<'_>,
        control: BorrowedFd<'_>,
    ) -> Result<u32, Failure> {
        use rustix::fs::{Mode, OFlags, open};
        let cwd = open(
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Failure::Refused(e.into()))?;
        // SAFETY: 1 and 2 are only borrowed for the `sendmsg`; a closed one
        // makes it fail with EBADF, and the worker is then started afresh.
        let (stdout, stderr) = unsafe { (BorrowedFd::borrow_raw(1), BorrowedFd::borrow_raw(2)) };
        let fds = [sock, control, stdout, stderr, cwd.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        let fits = cmsg.push(SendAncillaryMessage::ScmRights(&fds));
        debug_assert!(fits, "the control buffer holds the request's fds");
        loop {
            match sendmsg(
                &self.sock,
                &[IoSlice::new(env)],
                &mut cmsg,
                SendFlags::NOSIGNAL,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(
                    e @ (rustix::io::Errno::PIPE
                    | rustix::io::Errno::CONNRESET
                    | rustix::io::Errno::NOTCONN),
                ) => return Err(Failure::Broken(e.into())),
                Err(e) => return Err(Failure::Refused(e.into())),
            }
        }
        let mut fds = [rustix::event::PollFd::new(
            &self.sock,
            rustix::event::PollFlags::IN,
        )];
        let deadline = std::time::Instant::now() + ANSWER_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Failure::Broken(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the fork server does not answer",
                )));
            }
            let timeout = rustix::event::Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(n) if n > 0 => break,
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Failure::Broken(e.into())),
            }
        }
        let mut answer = [0u8; 4];
        let n = loop {
            match rustix::net::recv(&self.sock, &mut answer, RecvFlags::empty()) {
                Ok((n, _)) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Failure::Broken(e.into())),
            }
        };
        if n != answer.len() {
            return Err(Failure::Broken(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the fork server ended",
            )));
        }
        match i32::from_le_bytes(answer) {
            pid if pid > 0 => Ok(pid as u32),
            // Forking is not allowed here (seccomp, no clone3): for good.
            e if e == -libc::ENOSYS || e == -libc::EPERM => {
                Err(Failure::Broken(io::Error::from_raw_os_error(-e)))
            }
            e => Err(Failure::Refused(io::Error::from_raw_os_error(-e))),
        }
    }
}

/// Starts the server, from a thread that never ends (see the module doc).
fn start() -> io::Result<Server> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&ours, MAX_REQUEST);
    // Above 3, so the `dup2` onto 3 cannot overwrite it.
    let theirs = rustix::io::fcntl_dupfd_cloexec(&theirs, 10)?;
    let env = crate::spawn::env_block(&[
        (ENV_SERVER, "3".to_owned()),
        (ENV_SERVER_PARENT, std::process::id().to_string()),
    ]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("crew-forkserver".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let started = crate::spawn::spawn_self(&env, &[(theirs.as_raw_fd(), 3)], true);
            drop(theirs);
            let pid = started.as_ref().ok().copied();
            // Opened here, before this thread can reap the server: the pid
            // is still the server's.
            let pidfd = pid.and_then(|pid| {
                let pid = rustix::process::Pid::from_raw(pid as i32)?;
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            });
            let _ = tx.send(started.map(|_| pidfd));
            let Some(pid) = pid else {
                // No server: no process depends on this thread.
                return;
            };
            // Reap the server whenever it ends.
            let mut status = 0;
            // SAFETY: waiting for our own child with a valid pointer.
            while unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) } < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
            // The server's workers are this thread's children for
            // `PR_SET_PDEATHSIG`: it must not end before the program.
            loop {
                std::thread::park();
            }
        })?;
    let pidfd = rx
        .recv()
        .map_err(|_| io::Error::other("the fork server's thread ended"))??;
    Ok(Server { sock: ours, pidfd })
}

/// Serves as the fork server if this process was started as one (never
/// returns then).
pub(crate) fn run_if_server() {
    if let Some(fd) = std::env::var(ENV_SERVER).ok().and_then(|v| v.parse().ok()) {
        server_main(fd);
    }
}

fn server_main(sock: RawFd) -> ! {
    let parent: Option<i32> = std::env::var(ENV_SERVER_PARENT)
        .ok()
        .and_then(|p| p.parse().ok());
    // SAFETY: we run before `main`, single-threaded: nothing reads the
    // environment concurrently.
    unsafe {
        std::env::remove_var(ENV_SERVER);
        std::env::remove_var(ENV_SERVER_PARENT);
    }
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if let Some(parent) = parent
        && rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent)
    {
        // The program died before we could ask to die with it.
        std::process::exit(0);
    }
    // 0, 1 and 2 stay taken (by `/dev/null` if the program had one
    // closed), so that the descriptors of a request are numbered above 3.
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads a flag; `open` makes a new descriptor,
        // the lowest free one, which is `fd`.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    // Hold nothing but our socket: a descriptor the program left open
    // (without close-on-exec) must not live on in us, nor in our workers.
    // SAFETY: closes descriptors this process does not use.
    unsafe { libc::syscall(libc::SYS_close_range, sock as u32 + 1, u32::MAX, 0u32) };
    let mut comm = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `comm`; PR_SET_NAME
    // reads a NUL-terminated string.
    unsafe {
        libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr());
        libc::prctl(libc::PR_SET_NAME, SERVER_NAME.as_ptr());
    }
    let Some(fork) = Fork::prepare() else {
        // The program sees our socket close and starts its workers afresh.
        std::process::exit(3);
    };
    // SAFETY: the program gave us this fd; we own it.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FDS + 1))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let received = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg(&sock, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC) {
                Ok(r) => r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => std::process::exit(0),
            }
        };
        let mut fds: Vec<OwnedFd> = Vec::with_capacity(FDS);
        for message in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if received.bytes == 0 && fds.is_empty() {
            // The program closed its end: it ended.
            std::process::exit(0);
        }
        let env = &buf[..received.bytes];
        let whole = !received
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC);
        let answer: i32 = if !whole || fds.len() != FDS || env.last().is_some_and(|&b| b != 0) {
            -libc::EINVAL
        } else {
            match fork.fork() {
                Ok(0) => {
                    let fds: [OwnedFd; FDS] = fds.try_into().unwrap_or_else(|_| unreachable!());
                    become_worker(fds, &mut buf[..received.bytes], &comm)
                }
                Ok(pid) => pid,
                Err(errno) => -errno,
            }
        };
        drop(fds);
        let sent = loop {
            match rustix::net::send(&sock, &answer.to_le_bytes(), SendFlags::NOSIGNAL) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        if sent.is_err() {
            std::process::exit(0);
        }
    }
}

/// What a fork must restore in the child that the C library's `fork` would:
/// the thread id the C library keeps for the thread (written by the kernel
/// at `CLONE_CHILD_SETTID`: robust and recursive mutexes record their owner
/// by it), and the robust-futex list (not inherited by a new process), so
/// that a worker killed holding a process-shared lock leaves it marked as
/// abandoned.
struct Fork {
    tid_address: u64,
    robust_head: usize,
    robust_len: usize,
}

#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

impl Fork {
    fn prepare() -> Option<Fork> {
        let mut tid_address: *mut libc::c_int = std::ptr::null_mut();
        // SAFETY: PR_GET_TID_ADDRESS stores a pointer into `tid_address`.
        let r = unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut tid_address) };
        if r != 0 || tid_address.is_null() {
            return None;
        }
        let mut robust_head: usize = 0;
        let mut robust_len: usize = 0;
        // SAFETY: get_robust_list stores a pointer and a length.
        let r = unsafe {
            libc::syscall(
                libc::SYS_get_robust_list,
                0,
                &mut robust_head,
                &mut robust_len,
            )
        };
        if r != 0 || robust_head == 0 {
            return None;
        }
        Some(Fork {
            tid_address: tid_address as u64,
            robust_head,
            robust_len,
        })
    }

    /// Forks a child whose parent is our parent: `Ok(0)` in the child, its
    /// pid in the server, or an errno.
    fn fork(&self) -> Result<i32, i32> {
        let flags =
            (libc::CLONE_PARENT | libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
        let args = CloneArgs {
            flags,
            pidfd: 0,
            child_tid: self.tid_address,
            parent_tid: 0,
            // Must be 0 with CLONE_PARENT: the child gets the signal we
            // send our parent when we exit (SIGCHLD, from `posix_spawn`).
            exit_signal: 0,
            // No stack: the child goes on on a copy of ours, as after `fork`.
            stack: 0,
            stack_size: 0,
            tls: 0,
        };
        // SAFETY: clone3 without CLONE_VM copies the address space, as
        // `fork` does; this process is single-threaded, so no lock is held
        // by a thread the child lacks. The child restores what the C
        // library's `fork` would ([`Fork`]) before anything else.
        let mut r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        #[cfg(target_arch = "x86_64")]
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            // Before Linux 5.3 (or where a filter hides clone3): clone, in
            // x86-64's argument order (flags, stack, parent_tid, child_tid, tls).
            // SAFETY: as above.
            r = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    flags,
                    0usize,
                    0usize,
                    self.tid_address,
                    0usize,
                )
            };
        }
        if r < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        if r == 0 {
            // SAFETY: registers the list head the C library registered for
            // this thread in the server (the child's copy of it).
            unsafe { libc::syscall(libc::SYS_set_robust_list, self.robust_head, self.robust_len) };
        }
        Ok(r as i32)
    }
}

/// In the forked child: takes the request's descriptors and environment,
/// then serves as a worker (never returns).
fn become_worker(fds: [OwnedFd; FDS], env: &mut [u8], comm: &[u8; 16]) -> ! {
    let [sock, control, stdout, stderr, cwd] = fds;
    // SAFETY: single-threaded, before `main`: we own every descriptor
    // involved, the strings are NUL-terminated, and `env` outlives the
    // process (we never return to the server's loop), as `putenv` requires.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, comm.as_ptr());
        // The received descriptors are numbered above 3 (0 to 3 are taken
        // in the server). Onto 1 and 2 first; onto 3 (the server's socket,
        // which the worker must not hold) next; onto 4 last, as 4 may be one
        // of the others, by then already copied.
        libc::dup2(stdout.as_raw_fd(), 1);
        libc::dup2(stderr.as_raw_fd(), 2);
        libc::fchdir(cwd.as_raw_fd());
        libc::dup2(sock.as_raw_fd(), 3);
        libc::dup2(control.as_raw_fd(), 4);
        for fd in [sock, control, stdout, stderr, cwd] {
            if fd.as_raw_fd() > 4 {
                drop(fd);
            } else {
                // Now 3 or 4, a copy the worker owns: leave it open.
                std::mem::forget(fd);
            }
        }
        libc::setpgid(0, 0);
        libc::clearenv();
        let mut start = 0;
        for i in 0..env.len() {
            if env[i] == 0 {
                if i > start {
                    libc::putenv(env[start..].as_mut_ptr().cast());
                }
                start = i + 1;
            }
        }
    }
    crate::worker::run_worker()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_server_is_off_only_for_a_value_that_does_not_read_as_no() {
        for off in ["1", "yes", "true", "on", " 1 "] {
            assert!(disabled_by(Some(OsStr::new(off))), "{off:?}");
        }
        for kept in ["", " ", "0", "false", "No", "OFF"] {
            assert!(!disabled_by(Some(OsStr::new(kept))), "{kept:?}");
        }
        assert!(!disabled_by(None));
    }

    #[test]
    fn giving_up_says_why_and_what_changes() {
        let m = give_up_message(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(m.starts_with("crew: the fork server cannot serve ("), "{m}");
        assert!(m.contains("workers are started afresh"), "{m}");
        assert!(m.contains("CREW_NO_FORK_SERVER=1"), "{m}");
    }
}
