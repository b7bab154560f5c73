//! Starting a worker: the parent's own executable, re-executed from
//! `/proc/self/exe` (never a `fork` of a multi-threaded parent that goes on
//! running Rust code), with its socket at fd 3 and its control page at fd 4.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
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
const SOCKET_BUFFER: usize = 1 << 20;

fn set_buffers(fd: &OwnedFd) {
    // Best effort: a smaller buffer only means more, smaller writes.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, SOCKET_BUFFER);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, SOCKET_BUFFER);
}

/// Starts one worker process; with `own_group`, the worker leads a process
/// group of its own (pool workers: see [`kill_group`]).
pub(crate) fn spawn_worker(memory_limit: Option<u64>, own_group: bool) -> io::Result<Spawned> {
    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (parent_end, child_end) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    set_buffers(&parent_end);
    set_buffers(&child_end);
    let control_fd = memfd_create(c"crew-control", MemfdFlags::CLOEXEC)?;
    ftruncate(&control_fd, CONTROL_LEN as u64)?;
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
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
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
