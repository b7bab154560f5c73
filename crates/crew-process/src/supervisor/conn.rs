//! One worker incarnation seen from the parent: a connection with an
//! explicit [`Phase`], one loop ([`Conn::run`]) that drives it, and one
//! small method per event (README, "Supervision").

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crew_core::{Error, SpinWait};

use super::settle::{deliver, mark_exit, reap, settle};
use super::{
    CLOSED, HANDSHAKE_TIMEOUT, IDLE_WATCH, INIT_SEQ, MAX_IN_FLIGHT, ProcJob, SPIN, STALLED_FRAME,
    Shared, Slot, TARGET_QUEUE_TIME, TERMINATED, drain, lock, poll_ms,
};
use crate::spawn::{Spawned, describe_exit, kill_group};
use crate::wire::{self, Fields, Inbox, Outbox, Read};
use crate::worker::{FLAG_SPANS, FLAG_TIMED, monotonic_ns};

/// Where a worker is in its life. The loop in [`Conn::run`] moves it:
///
/// ```text
/// Starting ─ HELLO (and initializer) ─▶ Idle ◀─▶ Running ─ STOP ─▶ Draining
///     └──────────── death, kill, exit (from any phase) ────────────▶ Dead
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Spawned; it has not said hello, or its initializer still runs.
    Starting,
    /// Ready, with no job in flight.
    Idle,
    /// Ready, with jobs in flight.
    Running,
    /// Sent `STOP` (the pool closed, or `max_tasks_per_child`): it finishes
    /// what it holds and exits.
    Draining,
    /// Exited, died or killed: to be reaped, and its jobs settled.
    Dead,
}

/// Why the parent killed a worker.
pub(super) enum Kill {
    Timeout,
    Cancelled,
    Terminated,
    Protocol(String),
}

/// A job sent to the worker whose result has not come back.
pub(super) struct InFlight {
    pub(super) seq: u64,
    /// The job's number in this worker's life (from 1; see `Control::claim`).
    pub(super) number: u64,
    pub(super) job: ProcJob<'static>,
    pub(super) sent: Instant,
}

/// A frame read from the worker, waiting to be handled: its body is
/// `received[body]` of its connection.
pub(super) struct Received {
    /// The memfd of a `*_SHM` frame.
    pub(super) fd: Option<std::os::fd::OwnedFd>,
    pub(super) body: std::ops::Range<usize>,
}

/// Jobs longer than this are sent one at a time (nothing is gained by
/// sending ahead); shorter ones are sent at least two at a time, so the
/// worker never waits for the parent between them. A job sent ahead that a
/// long one holds up is taken back when another worker idles
/// ([`Conn::on_steal`]; README, "The rule").
const LONG_JOB: Duration = Duration::from_millis(5);

/// How many jobs a worker whose jobs take `avg_ns` on average may hold.
fn allowance(avg_ns: Option<u64>) -> usize {
    match avg_ns {
        None => 1,
        Some(0) => MAX_IN_FLIGHT,
        Some(d) if d >= LONG_JOB.as_nanos() as u64 => 1,
        Some(d) => ((TARGET_QUEUE_TIME.as_nanos() as u64 / d) as usize).clamp(2, MAX_IN_FLIGHT),
    }
}

/// How long a blocking caller that drives its own exchange spins on the
/// socket before it sleeps in `poll`: a tiny task's result comes within a
/// few microseconds, and a sleeping vCPU takes ~60 µs to wake here
/// (ipc-floor.md). Two parties (caller and worker) spin on two vCPUs, not
/// three (caller, proxy, worker) as when the proxy relays.
const CALLER_SPIN: Duration = Duration::from_micros(50);
/// How long a blocking caller drives its exchange before it hands it to the
/// proxy (which enforces timeouts): a job that takes longer pays one proxy
/// wake-up, small next to its own time.
const CALLER_DRIVES: Duration = Duration::from_millis(2);

fn set_nonblocking(fd: &OwnedFd) {
    let _ = rustix::io::ioctl_fionbio(fd, true);
}

/// One worker incarnation and everything the parent knows about it.
pub(super) struct Conn {
    slot: usize,
    worker: Spawned,
    phase: Phase,
    /// The worker got through its handshake (and initializer), whatever
    /// phase it is in now.
    greeted: bool,
    /// `STOP` was sent: an exit with code 0 is the one asked for.
    stop_sent: bool,
    inbox: Inbox,
    outbox: Outbox,
    inflight: VecDeque<InFlight>,
    /// Jobs sent to this worker so far (numbers the next one).
    sent_jobs: usize,
    spawned_at: Instant,
    /// Set once the parent decided to kill the worker, and why.
    kill: Option<Kill>,
    /// Tasks whose `Future::cancel` asked for their worker to be killed.
    cancel_wanted: Vec<u64>,
    /// Moving average of a job's time, in nanoseconds (sets the
    /// allowance; kept in integers: it is updated for every result).
    avg_ns: Option<u64>,
    last_done: Instant,
    /// Results read but not yet decoded: the next jobs go out first, so the
    /// worker does not wait while we decode.
    finished: Vec<(ProcJob<'static>, Received)>,
    /// The bodies of the frames read, one after another (`Received::body`
    /// indexes them): one buffer, emptied by `deliver` and kept.
    received: Vec<u8>,
    /// Since when a frame has been begun and left unfinished.
    partial_since: Option<Instant>,
    /// A suspect job is in flight alone; nothing else is sent until it ends.
    isolating: bool,
    /// The pidfd says the worker exited (its socket may live on in a
    /// process it started).
    exited: bool,
    /// The last job taken back from the worker, until it has reached it:
    /// nothing new is sent meanwhile, or the worker would skip it too.
    taken_back: Option<u64>,
    /// The pool's task timeout, in nanoseconds.
    timeout_ns: Option<u64>,
    /// The last job done had a caller blocked on it (`ProcJob::caller_waits`).
    last_caller_waits: bool,
}

/// Runs the worker until it exits or dies, then settles its jobs; true if
/// it got through its handshake. The one loop of a proxy thread: top up,
/// flush, wait, read, then one method per event. The connection lives in the
/// slot's mutex, which the proxy holds except while it sleeps with its
/// worker idle ([`Conn::can_lend`]): a blocking caller may then drive one
/// exchange itself ([`Conn::exchange`]).
pub(super) fn drive(shared: &Arc<Shared>, conn: Conn) -> bool {
    let slot = conn.slot;
    let proxy = &shared.proxies[slot];
    let mut guard = lock(&proxy.conn);
    *guard = Some(conn);
    loop {
        let conn = guard.as_mut().expect("only the proxy empties its slot");
        if conn.phase == Phase::Dead {
            break;
        }
        conn.refresh_phase();
        conn.top_up(shared);
        conn.stop_if_done(shared);
        conn.publish_backlog(shared);
        if !conn.outbox.is_empty() && conn.outbox.flush(conn.worker.sock.as_fd()).is_err() {
            conn.phase = Phase::Dead;
            continue;
        }
        deliver(
            &mut conn.finished,
            &mut conn.received,
            slot,
            shared.timeline.as_deref(),
        );
        // SPIN, then (unless something came) IDLE: wait for the worker, a
        // wake-up, or the next deadline.
        let wait_ms = conn.wait_ms(shared);
        let got = conn.spin(shared);
        let parked = !got && conn.phase == Phase::Idle && shared.park_idle(slot);
        if parked {
            shared.request_steal(slot);
        }
        if !got && (conn.phase != Phase::Idle || parked) {
            if parked && conn.can_lend() {
                let pidfd = conn
                    .worker
                    .pidfd
                    .as_ref()
                    .expect("can_lend: a pidfd")
                    .as_raw_fd();
                drop(guard);
                // SAFETY: the pidfd stays open while the connection is in
                // the slot, and only this thread takes it out (above and
                // after the loop), so it outlives this borrow.
                let pidfd = unsafe { BorrowedFd::borrow_raw(pidfd) };
                let mut fds = [
                    PollFd::new(&proxy.wake, PollFlags::IN),
                    PollFd::new(&pidfd, PollFlags::IN),
                ];
                poll_ms(&mut fds, wait_ms);
                if !fds[0].revents().is_empty() {
                    drain(&proxy.wake);
                }
                guard = lock(&proxy.conn);
            } else {
                conn.sleep(shared, wait_ms);
            }
        }
        let conn = guard.as_mut().expect("only the proxy empties its slot");
        if parked {
            shared.unpark(slot);
        }
        crate::shm::release_if_idle();
        conn.read();
        conn.on_frames(shared);
        conn.check_stalled_frame();
        conn.on_steal(shared);
        conn.on_cancel(shared);
        conn.on_timeout();
        conn.on_deadlines(shared);
        if conn.kill.is_some() {
            conn.kill_worker();
        }
    }
    let conn = guard.take().expect("only the proxy empties its slot");
    drop(guard);
    conn.end(shared)
}

impl Conn {
    pub(super) fn new(shared: &Shared, slot: usize, worker: Spawned) -> Conn {
        set_nonblocking(&worker.sock);
        Conn {
            slot,
            worker,
            phase: Phase::Starting,
            greeted: false,
            stop_sent: false,
            inbox: Inbox::new(),
            outbox: Outbox::default(),
            inflight: VecDeque::new(),
            sent_jobs: 0,
            spawned_at: Instant::now(),
            kill: None,
            cancel_wanted: Vec::new(),
            avg_ns: None,
            last_done: Instant::now(),
            finished: Vec::new(),
            received: Vec::new(),
            partial_since: None,
            isolating: false,
            exited: false,
            taken_back: None,
            timeout_ns: shared.config.task_timeout.map(|t| t.as_nanos() as u64),
            last_caller_waits: false,
        }
    }

    fn ready(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Running)
    }

    /// Idle or Running, as the jobs in flight say (other phases stay).
    fn refresh_phase(&mut self) {
        if self.ready() {
            self.phase = if self.inflight.is_empty() {
                Phase::Idle
            } else {
                Phase::Running
            };
        }
    }

    fn publish_backlog(&self, shared: &Shared) {
        shared.proxies[self.slot]
            .backlog
            .store(self.inflight.len(), Ordering::Release);
    }

    /// TOP UP: hands queued jobs to the worker, up to its allowance.
    fn top_up(&mut self, shared: &Arc<Shared>) {
        if !self.ready()
            || self.kill.is_some()
            || self.taken_back.is_some()
            || shared.state.load(Ordering::Acquire) == TERMINATED
        {
            return;
        }
        let limit = allowance(self.avg_ns);
        // One clock read for the jobs sent together.
        let now = Instant::now();
        while self.inflight.len() < limit && !self.isolating {
            let Some(job) = shared.pop() else { break };
            if job.suspect {
                if !self.inflight.is_empty() {
                    // A suspect runs alone: wait until the pipe is empty.
                    shared.requeue_front([job]);
                    break;
                }
                self.isolating = true;
            }
            let s = shared.proxies[self.slot]
                .next_seq
                .fetch_add(1, Ordering::Relaxed);
            if !self.send_job(shared, s, job, now) {
                continue;
            }
            if shared
                .config
                .max_tasks_per_child
                .is_some_and(|m| self.sent_jobs >= m)
            {
                self.send_stop();
                break;
            }
        }
        self.refresh_phase();
    }

    /// JOB SENT: writes job `s` into the outbox and keeps it in flight;
    /// false if it was cancelled while queued or could not be encoded (its
    /// outcome is then delivered).
    fn send_job(
        &mut self,
        shared: &Arc<Shared>,
        s: u64,
        mut job: ProcJob<'static>,
        now: Instant,
    ) -> bool {
        // The hook goes in before the task is marked running, so a
        // `cancel()` that sees it running always finds the hook.
        job.completion()
            .set_interrupt(Some(shared.interrupt_hook(self.slot)));
        if !job.completion().start() {
            return false;
        }
        let mut head = [0u8; 17];
        head[..8].copy_from_slice(&s.to_le_bytes());
        head[8..16].copy_from_slice(&job.entry.to_le_bytes());
        let limits = job.limits().unwrap_or_default();
        head[16] = if self.timeout_ns.is_some() || limits.timeout.is_some() {
            FLAG_TIMED
        } else {
            0
        } | if shared.timeline.is_some() || limits.spans {
            FLAG_SPANS
        } else {
            0
        };
        if let Err(e) =
            self.outbox
                .push_payload(wire::RUN, wire::RUN_SHM, &head, job.payload.as_ref())
        {
            job.completion()
                .fail(Error::io("sending a task through shared memory", e));
            return false;
        }
        self.sent_jobs += 1;
        self.inflight.push_back(InFlight {
            seq: s,
            number: self.sent_jobs as u64,
            job,
            sent: now,
        });
        true
    }

    fn send_stop(&mut self) {
        let _ = self.outbox.push(wire::STOP, wire::STOP, &[], &[]);
        self.stop_sent = true;
        self.phase = Phase::Draining;
    }

    /// SHUTDOWN (orderly): closed, nothing queued, nothing in flight.
    fn stop_if_done(&mut self, shared: &Shared) {
        if self.phase == Phase::Idle
            && shared.state.load(Ordering::Acquire) == CLOSED
            && lock(&shared.queue).jobs.is_empty()
        {
            self.send_stop();
        }
    }

    /// How long the next sleep may last, in ms (-1: until an event): wakes
    /// up in time for whatever must be checked without an event: timeouts,
    /// the handshake deadline, a pending cancel (the task may start any
    /// moment), a stalled partial frame, a take-back, a delayed retry.
    fn wait_ms(&self, shared: &Shared) -> i32 {
        let mut wait: Option<u64> = None;
        let mut cap = |ms: u64| wait = Some(wait.map_or(ms, |w: u64| w.min(ms)));
        if !self.inflight.is_empty()
            && (self.timeout_ns.is_some()
                || self
                    .inflight
                    .iter()
                    .any(|f| f.job.limits().is_some_and(|l| l.timeout.is_some())))
        {
            cap(10);
        }
        if self.phase == Phase::Starting {
            cap(100);
        }
        if !self.cancel_wanted.is_empty() {
            cap(1);
        }
        if self.partial_since.is_some() {
            cap(100);
        }
        if self.taken_back.is_some() {
            cap(1);
        }
        if let Some(d) = shared.next_delay() {
            cap(d.as_millis() as u64 + 1);
        }
        // The process's payload regions are let go of once unused for a
        // while (`shm::release_if_idle`, after each wake-up).
        if let Some(d) = crate::shm::release_due_in() {
            cap(d.as_millis() as u64 + 1);
        }
        wait.map_or(-1, |w| w.min(i32::MAX as u64) as i32)
    }

    /// IDLE: sleeps in `poll` until the worker sends (or can take more),
    /// the proxy is woken, the worker exits, or `wait_ms` passes.
    fn sleep(&mut self, shared: &Shared, wait_ms: i32) {
        let proxy = &shared.proxies[self.slot];
        let sock_events = if self.outbox.is_empty() {
            PollFlags::IN
        } else {
            PollFlags::IN | PollFlags::OUT
        };
        // Without a pidfd (Linux before 5.3) the wake fd stands in for it,
        // watched twice; only a real pidfd says "exited".
        let mut fds = [
            PollFd::new(&self.worker.sock, sock_events),
            PollFd::new(&proxy.wake, PollFlags::IN),
            match &self.worker.pidfd {
                Some(pidfd) => PollFd::new(pidfd, PollFlags::IN),
                None => PollFd::new(&proxy.wake, PollFlags::IN),
            },
        ];
        poll_ms(&mut fds, wait_ms);
        let woken = !fds[1].revents().is_empty();
        // The worker exited; its socket may live on in a process it
        // started. Read what it sent, then settle.
        self.exited |= self.worker.pidfd.is_some() && !fds[2].revents().is_empty();
        if woken {
            drain(&proxy.wake);
        }
    }

    /// A job or a result is often microseconds away, and a sleeping vCPU
    /// takes ~60 µs to wake here (ipc-floor.md): looks for ~15 µs before
    /// sleeping. One idle proxy at a time watches the queue a little longer
    /// (a caller's next `apply` is often tens of microseconds away); the
    /// others sleep at once rather than compete for the CPUs. A proxy whose
    /// last job had a blocked caller does not watch: it parks at once, so
    /// that the caller's next call finds the worker idle and drives it
    /// itself, which is faster than any relay. True if something came.
    fn spin(&mut self, shared: &Shared) -> bool {
        let ready = self.ready() && self.kill.is_none();
        let idle_watch = ready
            && self.inflight.is_empty()
            && !self.last_caller_waits
            && shared
                .idle_watchers
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        let mut got = false;
        if ready && (idle_watch || !self.inflight.is_empty()) {
            let sock = self.worker.sock.as_fd();
            // crew's spin-then-park policy, with this site's budget.
            let mut spin = SpinWait::with_budget(if idle_watch { IDLE_WATCH } else { SPIN });
            while spin.spin() {
                if self.inflight.is_empty() {
                    if shared.queued.load(Ordering::Acquire) > 0 {
                        got = true;
                        break;
                    }
                } else if matches!(
                    self.inbox.read_nonblocking(sock),
                    Ok(Read::Data | Read::Eof) | Err(_)
                ) {
                    got = true;
                    break;
                }
            }
        }
        if idle_watch {
            shared.idle_watchers.store(0, Ordering::Release);
        }
        got
    }

    /// READ: every byte the worker sent; EOF (or an exit the pidfd saw,
    /// once nothing more is buffered) is death.
    fn read(&mut self) {
        let sock = self.worker.sock.as_fd();
        loop {
            match self.inbox.read_nonblocking(sock) {
                Ok(Read::Data) => {}
                Ok(Read::WouldBlock) => {
                    if self.exited {
                        self.phase = Phase::Dead;
                    }
                    break;
                }
                Ok(Read::Eof) | Err(_) => {
                    self.phase = Phase::Dead;
                    break;
                }
            }
        }
    }

    /// FRAME RECEIVED, for every complete frame read.
    fn on_frames(&mut self, shared: &Arc<Shared>) {
        // One clock read for the frames read together (they came at once).
        let now = Instant::now();
        loop {
            // The body goes to the end of `received`, where a result waits
            // to be decoded (other frames take theirs out).
            let start = self.received.len();
            let (kind, fd) = match self.inbox.next_frame_in_place() {
                Ok(Some(f)) => {
                    self.received.extend_from_slice(f.body);
                    (f.kind, f.fd)
                }
                Ok(None) => break,
                Err(wire::Garbage(msg)) => {
                    self.kill = Some(Kill::Protocol(format!(
                        "garbage from worker {}: {msg}",
                        self.slot
                    )));
                    break;
                }
            };
            let received = Received {
                fd,
                body: start..self.received.len(),
            };
            if !self.on_frame(shared, kind, received, now) || self.kill.is_some() {
                break;
            }
        }
    }

    /// One frame from the worker; false to stop reading frames.
    fn on_frame(&mut self, shared: &Arc<Shared>, kind: u8, r: Received, now: Instant) -> bool {
        let slot = self.slot;
        if matches!(kind, wire::DONE | wire::DONE_SHM) {
            return self.on_done(shared, r, now);
        }
        // Any other frame is rare: its body leaves `received`.
        let frame = wire::Frame {
            kind,
            body: self.received.drain(r.body).collect(),
            fd: r.fd,
        };
        match frame.kind {
            wire::HELLO => self.on_hello(shared, &frame),
            wire::FATAL => {
                let msg = String::from_utf8_lossy(&frame.body).into_owned();
                self.kill = Some(Kill::Protocol(format!("worker {slot} gave up: {msg}")));
            }
            other => {
                self.kill = Some(Kill::Protocol(format!(
                    "worker {slot} sent a frame of kind {other}, meant for workers"
                )));
            }
        }
        true
    }

    /// The handshake is through (and the initializer, if any, ran).
    fn greeted(&mut self, shared: &Shared) {
        self.greeted = true;
        if self.phase == Phase::Starting {
            self.phase = Phase::Idle;
        }
        shared.started();
    }

    fn on_hello(&mut self, shared: &Shared, frame: &wire::Frame) {
        let slot = self.slot;
        let mut f = Fields::new(&frame.body);
        match (f.u32(), f.u64()) {
            (Ok(wire::VERSION), Ok(fp)) if fp == shared.fingerprint => {
                match &shared.config.initializer {
                    None => self.greeted(shared),
                    Some((entry, args)) => {
                        let mut head = [0u8; 17];
                        head[..8].copy_from_slice(&INIT_SEQ.to_le_bytes());
                        head[8..16].copy_from_slice(&entry.to_le_bytes());
                        if self
                            .outbox
                            .push(wire::RUN, wire::RUN_SHM, &head, args)
                            .is_err()
                        {
                            self.kill = Some(Kill::Protocol("cannot send the initializer".into()));
                        }
                    }
                }
            }
            (Ok(v), Ok(fp)) => {
                self.kill = Some(Kill::Protocol(format!(
                    "worker {slot} runs a different build or protocol (version {v}, fingerprint {fp:x}; expected {}, {:x})",
                    wire::VERSION,
                    shared.fingerprint
                )));
            }
            _ => self.kill = Some(Kill::Protocol(format!("worker {slot} sent a short hello"))),
        }
    }

    /// A result: of the initializer, or of the oldest job in flight (a
    /// worker answers in order). False to stop reading frames.
    fn on_done(&mut self, shared: &Shared, r: Received, now: Instant) -> bool {
        let slot = self.slot;
        let Ok(done_seq) = Fields::new(&self.received[r.body.clone()]).u64() else {
            self.kill = Some(Kill::Protocol(format!(
                "worker {slot} sent a result without a task number"
            )));
            return false;
        };
        if done_seq == INIT_SEQ && !self.greeted {
            let body: Vec<u8> = self.received.drain(r.body).collect();
            let mut f = Fields::new(&body);
            let _ = f.u64();
            let outcome = wire::read_payload(r.fd.as_ref(), f, |b| {
                crate::bulk::from_slice::<Result<(), crate::entry::WireError>>(b)
            });
            match outcome {
                Ok(Ok(Ok(()))) => self.greeted(shared),
                Ok(Ok(Err(e))) => {
                    let e = e.into_error();
                    self.kill = Some(Kill::Protocol(format!(
                        "the initializer failed in worker {slot}: {e}"
                    )));
                }
                _ => {
                    self.kill = Some(Kill::Protocol(format!(
                        "worker {slot} sent a garbled initializer result"
                    )))
                }
            }
            return true;
        }
        if self.inflight.front().map(|i| i.seq) != Some(done_seq) {
            self.kill = Some(Kill::Protocol(format!(
                "worker {slot} answered task {done_seq}, which is not the one it was running"
            )));
            return false;
        }
        let done = self.inflight.pop_front().expect("checked above");
        self.last_caller_waits = done.job.caller_waits;
        self.refresh_phase();
        self.isolating = false;
        let took = now
            .saturating_duration_since(done.sent.max(self.last_done))
            .as_nanos()
            .min(u64::MAX as u128 / 8) as u64;
        self.avg_ns = Some(match self.avg_ns {
            None => took,
            Some(a) => (a * 4 + took) / 5,
        });
        self.last_done = now;
        let cancel_asked = done
            .job
            .completion
            .as_deref()
            .is_some_and(|c| c.cancel_requested());
        if cancel_asked || self.cancel_wanted.contains(&done_seq) {
            // `cancel()` promised a cancellation; the result that raced it
            // is dropped (even if the proxy has not yet seen the request:
            // the task says so itself).
            let mut job = done.job;
            job.completion().cancelled();
            self.cancel_wanted.retain(|&s| s != done_seq);
            self.received.truncate(r.body.start);
        } else {
            self.finished.push((done.job, r));
        }
        true
    }

    /// A frame begun and never finished while the worker sits idle is
    /// garbage (a task wrote to the worker's socket), not a slow sender:
    /// the worker writes whole frames before it goes idle. So is EOF in the
    /// middle of a frame.
    fn check_stalled_frame(&mut self) {
        let slot = self.slot;
        self.partial_since = match (self.inbox.has_partial(), self.partial_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
        if let Some(since) = self.partial_since
            && self.kill.is_none()
            && since.elapsed() > STALLED_FRAME
            && self.worker.control.running().0 == 0
        {
            self.kill = Some(Kill::Protocol(format!(
                "worker {slot} began a frame and went silent for {STALLED_FRAME:?} (truncated frame)"
            )));
        }
        if self.phase == Phase::Dead && self.inbox.has_partial() && self.kill.is_none() {
            self.kill = Some(Kill::Protocol(format!(
                "worker {slot} died in the middle of a frame (truncated frame)"
            )));
        }
    }

    /// TAKE-BACK: an idle proxy asked for the jobs our worker has not
    /// started; they go back to the front of the queue, for it.
    fn on_steal(&mut self, shared: &Shared) {
        let control = &self.worker.control;
        if let Some(last) = self.taken_back
            && control.reached() >= last
        {
            control.clear_take_back();
            self.taken_back = None;
        }
        if shared.proxies[self.slot]
            .steal
            .swap(false, Ordering::AcqRel)
            && self.kill.is_none()
            && self.phase != Phase::Dead
            && !self.isolating
            && self.taken_back.is_none()
            && self.inflight.len() >= 2
        {
            let from = self.inflight.front().map_or(0, |f| f.number);
            let last = self.inflight.back().map_or(0, |f| f.number);
            if let Some(first) = control.take_back(from, last) {
                // Straight from the jobs in flight to the queue (no list
                // in between: a take-back allocates nothing). Marked
                // requeued first, outside the queue's lock: one whose cancel
                // was asked completes as cancelled there, running its
                // done-callbacks, which may submit (a later start skips it).
                let keep = self.inflight.partition_point(|f| f.number < first);
                for f in self.inflight.range_mut(keep..) {
                    f.job.completion().requeued();
                    self.cancel_wanted.retain(|&s| s != f.seq);
                }
                shared.requeue_front(self.inflight.drain(keep..).map(|f| f.job));
                self.taken_back = Some(last);
                self.refresh_phase();
                self.publish_backlog(shared);
            }
        }
    }

    /// CANCEL: kills the worker when the task to cancel is the one running.
    fn on_cancel(&mut self, shared: &Shared) {
        if shared.proxies[self.slot]
            .cancels
            .swap(false, Ordering::AcqRel)
        {
            for f in &self.inflight {
                if f.job
                    .completion
                    .as_deref()
                    .is_some_and(|c| c.cancel_requested())
                    && !self.cancel_wanted.contains(&f.seq)
                {
                    self.cancel_wanted.push(f.seq);
                }
            }
        }
        let (running, _, _) = self.worker.control.running();
        if self.kill.is_none() && running != 0 && self.cancel_wanted.contains(&running) {
            self.kill = Some(Kill::Cancelled);
        }
    }

    /// TIMEOUT: kills the worker when the item running has run too long
    /// (the job's own limit, else the pool's).
    fn on_timeout(&mut self) {
        let (running, _, started_ns) = self.worker.control.running();
        let limit = self
            .inflight
            .iter()
            .find(|f| f.seq == running)
            .and_then(|f| f.job.limits())
            .and_then(|l| l.timeout)
            .map(|t| t.as_nanos() as u64)
            .or(self.timeout_ns);
        if let (None, Some(limit)) = (&self.kill, limit)
            && running != 0
            && started_ns != 0
            && monotonic_ns().saturating_sub(started_ns) > limit
        {
            self.kill = Some(Kill::Timeout);
        }
    }

    /// SHUTDOWN (terminate) and the handshake deadline.
    fn on_deadlines(&mut self, shared: &Shared) {
        if self.kill.is_none() && shared.state.load(Ordering::Acquire) == TERMINATED {
            self.kill = Some(Kill::Terminated);
        }
        if self.kill.is_none() && !self.greeted && self.spawned_at.elapsed() > HANDSHAKE_TIMEOUT {
            self.kill = Some(Kill::Protocol(format!(
                "worker {} did not say hello within {HANDSHAKE_TIMEOUT:?}",
                self.slot
            )));
        }
    }

    /// True if the worker is idle with nothing pending, so that the proxy
    /// may sleep without watching its socket (a pidfd tells of its death)
    /// and lend the connection to a blocking caller.
    pub(super) fn can_lend(&self) -> bool {
        self.phase == Phase::Idle
            && self.kill.is_none()
            && self.cancel_wanted.is_empty()
            && self.taken_back.is_none()
            && !self.isolating
            && !self.exited
            && self.finished.is_empty()
            && self.partial_since.is_none()
            && !self.inbox.has_partial()
            && self.outbox.is_empty()
            && self.worker.pidfd.is_some()
    }

    /// A BLOCKING CALLER'S EXCHANGE, on the caller's thread (README,
    /// "Latency"): sends `job` to the idle worker, waits for its result
    /// (spinning briefly, then in `poll`), and delivers it. Anything else
    /// (death, garbage, a cancel or terminate, which wake the proxy, or no
    /// result within [`CALLER_DRIVES`]) ends the exchange early and leaves
    /// the rest to the proxy. True if the worker is idle and clean again
    /// (`can_lend`); false if the proxy must take over.
    pub(super) fn exchange(&mut self, shared: &Arc<Shared>, job: ProcJob<'static>) -> bool {
        let proxy = &shared.proxies[self.slot];
        let s = proxy.next_seq.fetch_add(1, Ordering::Relaxed);
        if self.send_job(shared, s, job, Instant::now())
            && shared
                .config
                .max_tasks_per_child
                .is_some_and(|m| self.sent_jobs >= m)
        {
            self.send_stop();
        }
        self.refresh_phase();
        self.publish_backlog(shared);
        if !matches!(self.outbox.flush(self.worker.sock.as_fd()), Ok(true)) {
            return false;
        }
        let start = Instant::now();
        // crew's spin-then-park policy, with this site's budget; then `poll`.
        let mut spin = SpinWait::with_budget(CALLER_SPIN);
        while !self.inflight.is_empty() {
            match self.inbox.read_nonblocking(self.worker.sock.as_fd()) {
                Ok(Read::Data) => {
                    self.on_frames(shared);
                    if self.kill.is_some() {
                        break;
                    }
                    continue;
                }
                Ok(Read::WouldBlock) => {}
                Ok(Read::Eof) | Err(_) => break,
            }
            let waited = start.elapsed();
            if waited >= CALLER_DRIVES {
                break;
            }
            if spin.spin() {
                continue;
            }
            let Some(pidfd) = &self.worker.pidfd else {
                break;
            };
            let mut fds = [
                PollFd::new(&self.worker.sock, PollFlags::IN),
                PollFd::new(&proxy.wake, PollFlags::IN),
                PollFd::new(pidfd, PollFlags::IN),
            ];
            let left = CALLER_DRIVES - waited;
            let timeout = rustix::event::Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
            if !fds[1].revents().is_empty() || !fds[2].revents().is_empty() {
                // The proxy is wanted (cancel, terminate, take-back) or the
                // worker exited: hand over.
                break;
            }
        }
        deliver(
            &mut self.finished,
            &mut self.received,
            self.slot,
            shared.timeline.as_deref(),
        );
        self.publish_backlog(shared);
        self.can_lend()
    }

    /// Kills the worker's whole group: what the task started dies with it.
    fn kill_worker(&mut self) {
        kill_group(self.worker.child.id());
        let _ = self.worker.child.kill();
        self.phase = Phase::Dead;
    }

    /// DEATH: delivers what came, reaps the worker, and settles the jobs it
    /// held. True if the worker got through its handshake.
    fn end(mut self, shared: &Arc<Shared>) -> bool {
        let slot = self.slot;
        shared.proxies[slot].backlog.store(0, Ordering::Release);
        deliver(
            &mut self.finished,
            &mut self.received,
            slot,
            shared.timeline.as_deref(),
        );
        shared.set_slot(slot, Slot::Reaping(self.worker.child.id()));
        let status = reap(&mut self.worker.child);
        shared.set_slot(slot, Slot::Empty);
        let (running, item, _) = self.worker.control.running();
        let mut cause = describe_exit(status);
        if let Some(limit) = shared.config.memory_limit {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() == Some(libc::SIGABRT) {
                cause.push_str(&format!(
                    " (the worker's memory limit is {limit} bytes: an allocation beyond it aborts)"
                ));
            }
        }
        if let Some(t) = &shared.timeline {
            let clean = self.stop_sent && status.success();
            mark_exit(t, slot, &self.kill, clean, &cause, shared);
        }
        if !self.greeted {
            let why = match &self.kill {
                Some(Kill::Protocol(m)) => m.clone(),
                _ => format!("worker {slot} {cause} before its handshake"),
            };
            if !matches!(self.kill, Some(Kill::Terminated)) {
                shared.start_failed(Error::protocol(why));
            }
        }
        settle(
            shared,
            slot,
            self.inflight,
            running,
            item as usize,
            self.kill,
            &cause,
            self.isolating,
        );
        self.greeted
    }
}
