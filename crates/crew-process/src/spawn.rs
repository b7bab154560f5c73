//! Starting a worker: the parent's own executable, re-executed from
//! `/proc/self/exe` with `posix_spawn` (never a `fork` of a multi-threaded
//! parent that goes on running Rust code), with its socket at fd 3 and its
//! control page at fd 4.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::worker::{CONTROL_LEN, Control, ENV_CONTROL, ENV_FD, ENV_MEMORY, ENV_PARENT};

/// A worker process we started and have not necessarily reaped: the part
/// of `std::process::Child` we use, for a process `posix_spawn` started.
pub(crate) struct Child {
    pid: u32,
    /// Set once reaped: the pid may then name another process.
    status: Option<ExitStatus>,
}

impl Child {
    /// The worker's pid (also its process group's id, for pool workers).
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// `SIGKILL`s the worker, unless it was already reaped.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: signalling a child we have not reaped (its pid is ours).
        cvt(unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) }).map(drop)
    }

    fn waitpid(&mut self, options: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            // SAFETY: waiting for our own child, with a valid status pointer.
            match cvt(unsafe { libc::waitpid(self.pid as libc::pid_t, &mut raw, options) }) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    let status = ExitStatus::from_raw(raw);
                    self.status = Some(status);
                    return Ok(Some(status));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reaps the worker if it has exited.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.waitpid(libc::WNOHANG)
    }

    /// Waits for the worker to exit and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        self.waitpid(0)?
            .ok_or_else(|| io::Error::other("waitpid returned no status"))
    }
}

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
///
/// Pool workers come from the fork server once the program runs its second
/// process pool ([`crate::forkserver`]); otherwise, or if the server cannot
/// serve, a worker is this executable started afresh: `posix_spawn` (glibc's
/// is `clone(CLONE_VM | CLONE_VFORK)` and `exec`) rather than `fork`, as a
/// `fork` copies the page tables of the whole parent and leaves its pages
/// copy-on-write, so the parent takes a page fault on the first write to
/// each page after every spawn; a pool of many workers in a big parent paid
/// that on its way to the first result. Either way the worker is our child,
/// with its socket on fd 3, its control page on fd 4 and `/dev/null` on
/// stdin; it sets `PR_SET_PDEATHSIG` itself, first thing, and checks that
/// its parent is still the one named in its environment (the README,
/// "Orphans").
pub(crate) fn spawn_worker(memory_limit: Option<u64>, own_group: bool) -> io::Result<Spawned> {
    if own_group && crate::forkserver::wanted() {
        // A worker the server could not start is started afresh, with new
        // descriptors: a request that failed half-way may have reached it.
        if let Ok(spawned) = start_worker(memory_limit, own_group, true) {
            return Ok(spawned);
        }
    }
    start_worker(memory_limit, own_group, false)
}

fn start_worker(memory_limit: Option<u64>, own_group: bool, forked: bool) -> io::Result<Spawned> {
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
    let mut ours = vec![
        (ENV_FD, "3".to_owned()),
        (ENV_CONTROL, "4".to_owned()),
        (ENV_PARENT, std::process::id().to_string()),
    ];
    if let Some(bytes) = memory_limit {
        ours.push((ENV_MEMORY, bytes.to_string()));
    }
    let env = env_block(&ours);
    let pid = if forked {
        crate::forkserver::fork_worker(&env, child_end.as_fd(), control_fd.as_fd())?
    } else {
        // The file actions `dup2` these onto 3 and 4 (which clears
        // close-on-exec on the copies only); above 4, neither `dup2` can
        // overwrite the other's source.
        let sock_src = rustix::io::fcntl_dupfd_cloexec(&child_end, 10)?;
        let control_src = rustix::io::fcntl_dupfd_cloexec(&control_fd, 10)?;
        spawn_self(
            &env,
            &[(sock_src.as_raw_fd(), 3), (control_src.as_raw_fd(), 4)],
            own_group,
        )?
    };
    drop(child_end);
    drop(control_fd);
    let child = Child { pid, status: None };
    let pidfd = rustix::process::Pid::from_raw(pid as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    Ok(Spawned {
        child,
        sock: parent_end,
        control,
        pidfd,
    })
}

/// This process's environment with `ours` set (replacing any variables of
/// the same names), as `KEY=value` strings each ended by a NUL.
pub(crate) fn env_block(ours: &[(&str, String)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in std::env::vars_os() {
        let (k, v) = (k.as_bytes(), v.as_bytes());
        if ours.iter().any(|(name, _)| k == name.as_bytes()) || k.contains(&0) || v.contains(&0) {
            continue;
        }
        block.extend_from_slice(k);
        block.push(b'=');
        block.extend_from_slice(v);
        block.push(0);
    }
    for (k, v) in ours {
        debug_assert!(!k.contains('\0') && !v.contains('\0'));
        block.extend_from_slice(k.as_bytes());
        block.push(b'=');
        block.extend_from_slice(v.as_bytes());
        block.push(0);
    }
    block
}

/// Starts this executable afresh (`/proc/self/exe`, with the `argv[0]` we
/// were started with) with the environment `env` (an [`env_block`]), each
/// `(source, target)` of `fds` `dup2`ed onto its target, and `/dev/null` on
/// stdin; with `own_group`, in a process group of its own. Returns its pid.
pub(crate) fn spawn_self(env: &[u8], fds: &[(RawFd, RawFd)], own_group: bool) -> io::Result<u32> {
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("/proc/self/exe"));
    let arg0 = CString::new(arg0.into_vec())
        .unwrap_or_else(|_| CString::new("/proc/self/exe").expect("no NUL"));
    let argv = [arg0.as_ptr(), std::ptr::null()];
    let envp: Vec<*const libc::c_char> = env
        .split_inclusive(|&b| b == 0)
        .map(|kv| kv.as_ptr().cast())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    debug_assert!(env.is_empty() || env.last() == Some(&0));
    posix_spawn(&argv, &envp, fds, own_group)
}

/// Owns a `posix_spawn` attribute or file-actions object until dropped.
struct Destroy<T>(T, unsafe extern "C" fn(*mut T) -> libc::c_int);

impl<T> Drop for Destroy<T> {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by the matching `_init`.
        unsafe { (self.1)(&mut self.0) };
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// `posix_spawn` of `/proc/self/exe` with each `(source, target)` of `fds`
/// `dup2`ed onto its target, `/dev/null` on stdin, an empty signal mask and `SIGPIPE` at its
/// default (as `std::process::Command` leaves a child), and, with
/// `own_group`, a process group of its own. `argv` and `envp` end with a
/// null pointer.
fn posix_spawn(
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: &[(RawFd, RawFd)],
    own_group: bool,
) -> io::Result<u32> {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: each object is initialised before use and destroyed once (by
    // `Destroy`); every pointer passed lives until `posix_spawn` returns,
    // and `argv` and `envp` are null-terminated arrays of C strings.
    unsafe {
        let mut actions = std::mem::MaybeUninit::uninit();
        check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        let mut actions = Destroy(
            actions.assume_init(),
            libc::posix_spawn_file_actions_destroy,
        );
        for &(source, target) in fds {
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                source,
                target,
            ))?;
        }
        check(libc::posix_spawn_file_actions_addopen(
            &mut actions.0,
            0,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        let mut attr = std::mem::MaybeUninit::uninit();
        check(libc::posix_spawnattr_init(attr.as_mut_ptr()))?;
        let mut attr = Destroy(attr.assume_init(), libc::posix_spawnattr_destroy);
        let mut set = std::mem::MaybeUninit::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        check(libc::posix_spawnattr_setsigmask(&mut attr.0, &set))?;
        libc::sigaddset(&mut set, libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &set))?;
        let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        if own_group {
            check(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
            flags |= libc::POSIX_SPAWN_SETPGROUP;
        }
        check(libc::posix_spawnattr_setflags(&mut attr.0, flags as _))?;
        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &mut pid,
            c"/proc/self/exe".as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr() as *const *mut libc::c_char,
            envp.as_ptr() as *const *mut libc::c_char,
        ))?;
        Ok(pid as u32)
    }
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
