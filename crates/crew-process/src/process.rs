//! `Process`: one task in a process of its own, as Python's
//! `multiprocessing.Process(target=f, args=…)`.

use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use crew_core::{Call, Error, Future, Result, Star};

use crate::entry::{assert_non_capturing, call_entry, offset_of};
use crate::spawn::{describe_exit, spawn_worker};
use crate::supervisor::Completion;
use crate::wire::{self, Fields, Inbox, Outbox, Read};
use crate::{CallCompletion, entry::build_fingerprint};

/// One task run in a process of its own (Python's
/// `multiprocessing.Process`): create it with [`Process::new`], then
/// [`start`](Process::start), [`join`](Process::join) and read its
/// [`result`](Process::result).
///
/// The process is this program re-executed; the task follows the rules of
/// process pools (a fn item or non-capturing closure with serde arguments
/// and result). Dropping a `Process` that is still running kills it, so no
/// process outlives its handle unnoticed.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
/// use crew::Process;
///
/// let mut p = Process::new(|a: u64, b: u64| a * b, (6, 7));
/// p.start()?;
/// assert!(p.pid().is_some());
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(p.result()?, 42);
/// # Ok::<(), crew::Error>(())
/// ```
pub struct Process<R: Send> {
    job: Option<(u64, Vec<u8>)>,
    /// The shared-memory regions the arguments name, kept for the child.
    _held: crew_shm::Held,
    state: Arc<State>,
    pid: Option<u32>,
    result: Option<Future<R>>,
}

impl<R: Send> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

#[derive(Default)]
struct State {
    status: Mutex<Option<std::process::ExitStatus>>,
    exited: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<R: Serialize + DeserializeOwned + Send + 'static> Process<R> {
    /// A process that will run `f(args…)` once started. `args` is a tuple.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let p = crew::Process::new(|| println!("hello from a child"), ());
    /// assert!(!p.is_alive());
    /// ```
    pub fn new<F, A>(f: F, args: A) -> Process<R>
    where
        Star<F>: Call<A, R> + crate::NonCapturing,
        F: Send + Sync + 'static,
        A: Serialize + DeserializeOwned,
    {
        const { assert_non_capturing::<Star<F>>() };
        drop(f);
        let entry = offset_of(call_entry::<Star<F>, A, R>);
        let (encoded, held) = crew_shm::hold_serialized(|| crate::bulk::to_vec(&args));
        drop(args);
        let (job, result) = match encoded {
            Ok(payload) => (Some((entry, payload)), None),
            Err(e) => (
                None,
                Some(Future::ready(Err(Error::protocol(format!(
                    "cannot encode the task's arguments: {e}"
                ))))),
            ),
        };
        Process {
            job,
            _held: held,
            state: Arc::new(State::default()),
            pid: None,
            result,
        }
    }

    /// Starts the process; returns at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let mut p = crew::Process::new(|| 1u8, ());
    /// p.start()?;
    /// let again = p.start().unwrap_err();
    /// assert!(again.is_invalid_input());
    /// assert!(again.to_string().contains("make a new Process"), "{again}");
    /// assert_eq!(p.result()?, 1);
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if already started; `is_io` if the process cannot
    /// be created.
    pub fn start(&mut self) -> Result<()> {
        let Some((entry, payload)) = self.job.take() else {
            return Err(Error::invalid_input(
                "a process can be started only once: make a new Process to run the task again",
            ));
        };
        let worker = spawn_worker(None, false).map_err(|e| Error::io("starting a process", e))?;
        self.pid = Some(worker.child.id());
        let (promise, future) = Future::pending();
        self.result = Some(future);
        let state = self.state.clone();
        let mut completion = CallCompletion::<R> {
            promise: Some(promise),
            attempts: 0,
            number: None,
            name: Some("call"),
            spare: None,
        };
        std::thread::Builder::new()
            .name("crew-process".into())
            .spawn(move || {
                let mut worker = worker;
                completion.start();
                let outcome = converse(worker.sock.as_fd(), entry, &payload);
                // The process exits after STOP; the socket stays open until
                // then, or its watchdog would see our end close and `_exit(0)`
                // first, hiding its exit code (1 after a panic).
                let status = worker
                    .child
                    .wait()
                    .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0));
                drop(worker.sock);
                match outcome {
                    Ok(bytes) => completion.finish(&bytes, 0, None),
                    Err(None) => completion.fail(Error::worker_lost(describe_exit(status))),
                    Err(Some(e)) => completion.fail(e),
                }
                *lock(&state.status) = Some(status);
                state.exited.notify_all();
            })
            .map_err(|e| Error::io("spawning a process's driver thread", e))?;
        Ok(())
    }
}

/// Handshake, send the task and STOP, read the result. `Err(None)`: the
/// process died before answering.
fn converse(
    sock: std::os::fd::BorrowedFd<'_>,
    entry: u64,
    payload: &[u8],
) -> std::result::Result<Vec<u8>, Option<Error>> {
    let mut inbox = Inbox::new();
    let mut outbox = Outbox::default();
    let mut head = [0u8; 17];
    head[..8].copy_from_slice(&1u64.to_le_bytes());
    head[8..16].copy_from_slice(&entry.to_le_bytes());
    head[16] = crate::worker::FLAG_SOLO;
    outbox
        .push(wire::RUN, wire::RUN_SHM, &head, payload)
        .map_err(|e| Some(Error::io("sending a task", e)))?;
    outbox
        .push(wire::STOP, wire::STOP, &[], &[])
        .map_err(|e| Some(Error::io("sending a task", e)))?;
    let mut hello = false;
    loop {
        match inbox.next_frame() {
            Err(wire::Garbage(m)) => return Err(Some(Error::protocol(m))),
            Ok(Some(frame)) => match frame.kind {
                wire::HELLO => {
                    let mut f = Fields::new(&frame.body);
                    if f.u32().ok() != Some(wire::VERSION)
                        || f.u64().ok() != Some(build_fingerprint())
                    {
                        return Err(Some(Error::protocol(
                            "the process runs a different build or protocol",
                        )));
                    }
                    hello = true;
                    if outbox.flush(sock).is_err() {
                        return Err(None);
                    }
                }
                wire::DONE | wire::DONE_SHM if hello => {
                    let mut f = Fields::new(&frame.body);
                    f.u64()
                        .map_err(|wire::Garbage(m)| Some(Error::protocol(m)))?;
                    return wire::with_payload(&frame, f, <[u8]>::to_vec)
                        .map_err(|wire::Garbage(m)| Some(Error::protocol(m)));
                }
                wire::FATAL => {
                    return Err(Some(Error::protocol(
                        String::from_utf8_lossy(&frame.body).into_owned(),
                    )));
                }
                other => {
                    return Err(Some(Error::protocol(format!(
                        "unexpected frame kind {other} from a process"
                    ))));
                }
            },
            Ok(None) => match inbox.read(sock) {
                Ok(Read::Data) => {}
                Ok(Read::WouldBlock) => {}
                Ok(Read::Eof) | Err(_) => return Err(None),
            },
        }
    }
}

impl<R: Send> Process<R> {
    /// The process id, once started.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let mut p = crew::Process::new(|| std::process::id(), ());
    /// assert_eq!(p.pid(), None);
    /// p.start()?;
    /// let pid = p.pid().unwrap();
    /// assert_eq!(p.result()?, pid);
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// True between `start` and the process's exit.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let mut p = crew::Process::new(|| std::thread::sleep(std::time::Duration::from_secs(60)), ());
    /// p.start()?;
    /// assert!(p.is_alive());
    /// p.kill();
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        self.pid.is_some() && lock(&self.state.status).is_none()
    }

    /// The exit code once the process has ended: 0 on success, 1 if the
    /// task panicked (the panic is printed on the process's stderr, as
    /// Python prints a target's traceback), the code it exited with, or
    /// minus the signal that killed it (as Python's `exitcode`); `None`
    /// while it runs or before it starts.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let mut p = crew::Process::new(|| -> () { std::process::exit(3) }, ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(3));
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = (*lock(&self.state.status))?;
        status.code().or_else(|| status.signal().map(|s| -s))
    }

    /// Waits for the process to end.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let mut p = crew::Process::new(|| (), ());
    /// let e = p.join().unwrap_err();
    /// assert!(e.is_invalid_input());
    /// assert!(e.to_string().ends_with("call start() first"), "{e}");
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if the process was not started.
    pub fn join(&self) -> Result<()> {
        self.join_deadline(None).map(|_| ())
    }

    /// Waits for the process to end or for `timeout`; true if it ended.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// use std::time::Duration;
    /// let mut p = crew::Process::new(|| std::thread::sleep(Duration::from_secs(60)), ());
    /// p.start()?;
    /// assert!(!p.join_timeout(Duration::from_millis(20))?);
    /// p.terminate();
    /// assert!(p.join_timeout(Duration::from_secs(10))?);
    /// assert_eq!(p.exitcode(), Some(-15));
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if the process was not started.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.join_deadline(Some(Instant::now() + timeout))
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        if self.pid.is_none() {
            return Err(Error::invalid_input(
                "join() on a process that was not started: call start() first",
            ));
        }
        let mut status = lock(&self.state.status);
        while status.is_none() {
            status = match crew_core::engine::wait_deadline(&self.state.exited, status, deadline) {
                Ok(g) => g,
                Err(_) => return Ok(false),
            };
        }
        Ok(true)
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let (Some(pid), true) = (self.pid, self.is_alive()) {
            // Our own child, not yet reaped (its driver thread records the
            // status only after `wait`), so the pid is still its own.
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    }

    /// Asks the process to stop (SIGTERM), as Python's `terminate`; see
    /// [`join_timeout`](Process::join_timeout) for an example.
    pub fn terminate(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// Stops the process at once (SIGKILL), as Python's `kill`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let mut p = crew::Process::new(|| -> () { loop { std::hint::spin_loop() } }, ());
    /// p.start()?;
    /// p.kill();
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-9));
    /// assert!(p.result().unwrap_err().is_worker_lost());
    /// # Ok::<(), crew::Error>(())
    /// ```
    pub fn kill(&self) {
        self.signal(rustix::process::Signal::KILL);
    }

    /// Waits for the task and returns what it returned.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::Error; pub use crew_process::Process; }
    /// let mut p = crew::Process::new(|s: String| s.to_uppercase(), ("abc".to_string(),));
    /// p.start()?;
    /// assert_eq!(p.result()?, "ABC");
    /// let mut q = crew::Process::new(|| -> u8 { panic!("no") }, ());
    /// q.start()?;
    /// q.join()?;
    /// assert_eq!(q.exitcode(), Some(1));
    /// assert_eq!(q.result().unwrap_err().panic_message(), Some("no"));
    /// # Ok::<(), crew::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if the process was not started; the task's panic
    /// (`is_panic`); `is_worker_lost` with the signal or exit code if the
    /// process died before returning a result.
    pub fn result(mut self) -> Result<R> {
        match self.result.take() {
            Some(f) => f.result(),
            None => Err(Error::invalid_input(
                "result() of a process that was not started: call start() first",
            )),
        }
    }
}

impl<R: Send> Drop for Process<R> {
    fn drop(&mut self) {
        self.kill();
    }
}
