//! The end of a worker's life: reaping it, and deciding the fate of every
//! job it held (README, "Death").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crew_core::{Error, MarkKind, Timeline};

use super::conn::{InFlight, Kill, Received};
use super::{ProcJob, Shared};
use crate::spawn::kill_group;
use crate::wire::{self, Fields};
use crate::worker::monotonic_ns;

/// Marks on the timeline why a worker ended, unless it stopped as asked.
pub(super) fn mark_exit(
    t: &Timeline,
    slot: usize,
    kill: &Option<Kill>,
    clean: bool,
    cause: &str,
    shared: &Shared,
) {
    let (kind, detail) = match kill {
        Some(Kill::Timeout) => (
            MarkKind::Timeout,
            format!(
                "a task ran past its {:?} timeout: worker killed",
                shared.config.task_timeout.unwrap_or_default()
            ),
        ),
        Some(Kill::Cancelled) => (
            MarkKind::Kill,
            "killed to cancel its running task".to_owned(),
        ),
        Some(Kill::Terminated) => (MarkKind::Kill, "killed: the pool terminated".to_owned()),
        Some(Kill::Protocol(m)) => (MarkKind::Kill, format!("killed: {m}")),
        None if clean => return,
        None => (MarkKind::Crash, format!("worker {cause}")),
    };
    t.mark(slot, kind, detail);
}

/// What the buffer of frames read may keep between deliveries: more is
/// given back (a burst of large inline results).
const RECEIVED_KEPT: usize = 1 << 20;

/// Decodes and delivers the results read from a worker, whose frames'
/// bodies are in `received`, then empties it (keeping its memory).
pub(super) fn deliver(
    finished: &mut Vec<(ProcJob<'static>, Received)>,
    received: &mut Vec<u8>,
    slot: usize,
    timeline: Option<&Timeline>,
) {
    for (mut job, r) in finished.drain(..) {
        // It will not run again: its payload's region goes back to the
        // pool now, before its caller wakes, so that the caller's next
        // payload is written into the same region (which its worker keeps
        // mapped) rather than a new one.
        job.payload = wire::Payload::default();
        let mut f = Fields::new(&received[r.body]);
        let _seq = f.u64();
        let read = wire::read_payload(r.fd.as_ref(), f, |bytes| {
            job.completion().finish(bytes, slot, timeline)
        });
        if let Err(wire::Garbage(msg)) = read {
            job.completion()
                .fail(Error::protocol(msg).with_worker(slot));
        }
    }
    received.clear();
    if received.capacity() > RECEIVED_KEPT {
        *received = Vec::new();
    }
}

pub(super) fn reap(child: &mut crate::spawn::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => {
                // Closed its socket but did not exit: it must not linger.
                kill_group(child.id());
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    return status;
                }
                use std::os::unix::process::ExitStatusExt;
                return std::process::ExitStatus::from_raw(libc::SIGKILL);
            }
        }
    }
}

/// A number in `[0, 1)` that differs between calls and processes: enough
/// randomness to spread retries, not for anything secret.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(monotonic_ns());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Decides the fate of every job the dead worker held.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
pub(super) fn settle(
    shared: &Arc<Shared>,
    slot: usize,
    inflight: VecDeque<InFlight>,
    running: u64,
    item: usize,
    kill: Option<Kill>,
    cause: &str,
    isolated: bool,
) {
    let terminated = matches!(kill, Some(Kill::Terminated));
    // Garbage on the stream: a task wrote to the worker's socket. With one
    // job in flight (isolated), that job did it. With several, any of them
    // may have (a result can sit in the worker's buffer while the next task
    // writes garbage ahead of it): none is blamed; all run again, each
    // alone, and the one that garbles the stream again is blamed then.
    if matches!(kill, Some(Kill::Protocol(_))) && !(isolated && inflight.len() == 1) {
        let mut again = Vec::new();
        for mut f in inflight {
            f.job.suspect = true;
            f.job.completion().requeued();
            again.push(f.job);
        }
        if !again.is_empty() {
            shared.requeue_front(again);
        }
        return;
    }
    let culprit = match (&kill, running) {
        (Some(Kill::Protocol(_)), 0) => inflight.front().map_or(0, |f| f.seq),
        _ => running,
    };
    let (running, item) = if culprit == running {
        (running, item)
    } else {
        (culprit, 0)
    };
    let mut again = Vec::new();
    for mut f in inflight {
        if terminated {
            continue; // dropped: reported cancelled
        }
        if f.seq != running {
            // Never started, or finished without its result reaching us:
            // it runs again on the next worker.
            f.job.completion().requeued();
            again.push(f.job);
            continue;
        }
        let error = match &kill {
            Some(Kill::Cancelled) => {
                f.job.completion().cancelled();
                continue;
            }
            Some(Kill::Timeout) => Error::timeout().with_worker(slot),
            Some(Kill::Protocol(m)) => Error::protocol(m.clone()).with_worker(slot),
            Some(Kill::Terminated) => unreachable!("handled above"),
            None => Error::worker_lost(cause.to_owned()).with_worker(slot),
        };
        let (retries, backoff, jitter) = match f.job.limits() {
            Some(l) => (l.retries, l.backoff, true),
            None => (shared.config.retries, shared.config.retry_backoff, false),
        };
        let retry = (error.is_worker_lost() || error.is_timeout()) && f.job.attempt < retries;
        let mut payload = std::mem::take(&mut f.job.payload);
        if f.job.completion().lost(&mut payload, item, error, retry) {
            f.job.payload = payload;
            if retry {
                f.job.attempt += 1;
                let mut backoff = backoff * 2u32.saturating_pow(f.job.attempt - 1);
                if jitter {
                    // Up to half again, so that tasks failed together do not
                    // all come back at the same instant.
                    backoff += backoff.mul_f64(jitter_fraction() * 0.5);
                }
                f.job
                    .set_not_before((!backoff.is_zero()).then(|| Instant::now() + backoff));
            }
            f.job.completion().requeued();
            again.push(f.job);
        }
    }
    if !again.is_empty() {
        shared.requeue_front(again);
    }
}
