//! Starting a worker: the parent's own executable, re-executed from
//! `/proc/self/exe` (never a `fork` of a multi-threaded parent that goes on
//! running Rust code), with its socket at fd 3 and its control page at fd 4.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::worker::{CONTROL_LEN, Control, ENV_CONTROL, ENV_FD, ENV_MEMORY, ENV_PARENT};

/// A started worker process, seen from the parent.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) sock: OwnedFd,
    pub(crate) control: Control,
    /// Readable once the worker has exited, even if something else still
    /// holds its socket open (`pidfd_open`, Linux 5.3+; `None` before).
    pub(crate) pidfd: Option<OwnedFd>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Socket buffers big enough that a window of small frames never blocks
/// either side (the default holds only ~278 small frames, ipc-floor.md).
const SOCKET_BUFFER: libc::c_int = 1 << 20;

fn set_buffers(fd: &OwnedFd) {
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setting an int socket option from a local.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&SOCKET_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Starts one worker process; with `own_group`, the worker leads a process
/// group of its own (pool workers: see [`kill_group`]).
pub(crate) fn spawn_worker(memory_limit: Option<u64>, own_group: bool) -> io::Result<Spawned> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into `fds`.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: fresh fds we own.
    let (parent_end, child_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_buffers(&parent_end);
    set_buffers(&child_end);
    // SAFETY: valid name and flags.
    let raw = cvt(unsafe { libc::memfd_create(c"crew-control".as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: a fresh fd we own.
    let control_fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sizing our memfd.
    cvt(unsafe { libc::ftruncate(control_fd.as_raw_fd(), CONTROL_LEN as libc::off_t) })?;
    let control = Control::map(control_fd.as_raw_fd())?;

    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.env(ENV_FD, "3")
        .env(ENV_CONTROL, "4")
        .env(ENV_PARENT, std::process::id().to_string())
        .stdin(Stdio::null());
    if let Some(bytes) = memory_limit {
        cmd.env(ENV_MEMORY, bytes.to_string());
    }
    if own_group {
        cmd.process_group(0);
    }
    let (sock_raw, control_raw) = (child_end.as_raw_fd(), control_fd.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and uses only
    // async-signal-safe calls (fcntl, dup2, prctl).
    unsafe {
        cmd.pre_exec(move || {
            // Move both fds out of the way of 3 and 4 first, then into place;
            // dup2 clears close-on-exec on the copies.
            let s = cvt(libc::fcntl(sock_raw, libc::F_DUPFD, 10))?;
            let c = cvt(libc::fcntl(control_raw, libc::F_DUPFD, 10))?;
            cvt(libc::dup2(s, 3))?;
            cvt(libc::dup2(c, 4))?;
            libc::close(s);
            libc::close(c);
            cvt(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(child_end);
    drop(control_fd);
    // SAFETY: a plain syscall; a non-negative result is a new fd we own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: as above.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd as i32) });
    Ok(Spawned {
        child,
        sock: parent_end,
        control,
        pidfd,
    })
}

/// Kills (SIGKILL) the process group that worker `pid` leads: the worker
/// and every process its tasks started that stayed in the group.
///
/// The caller must not have reaped the worker yet: until it is reaped its
/// pid cannot be reused, so the group id still names this group. A process
/// that left the group (`setsid`, `setpgid`) or was started with a group of
/// its own is out of reach, as is anything a process of the group started
/// after it left.
pub(crate) fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// True once child `pid` has exited (or is no longer ours to wait for),
/// without reaping it.
pub(crate) fn has_exited(pid: u32) -> bool {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return true;
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    !matches!(waitid(WaitId::Pid(pid), options), Ok(None))
}

/// Describes how a worker ended, for `Error::worker_lost`.
pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        format!("killed by signal {sig} ({})", signal_name(sig))
    } else if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else {
        format!("ended with status {status}")
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}
