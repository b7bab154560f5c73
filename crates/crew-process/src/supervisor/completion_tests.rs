//! `CompletionBox`: a call's completion lives in its job (no allocation),
//! a large one in a box, and either is used and dropped exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crew_core::{Error, Future, Timeline};

use super::{Completion, ProcJob};
use crate::CallCompletion;
use crate::wire::Payload;

/// Counts its uses and its drop; `pad` makes it too large for the job.
struct Counted<const PAD: usize> {
    finished: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    _pad: [u64; PAD],
}

impl<const PAD: usize> Completion for Counted<PAD> {
    fn start(&mut self) -> bool {
        true
    }
    fn finish(&mut self, output: &[u8], _worker: usize, _timeline: Option<&Timeline>) {
        self.finished.fetch_add(output.len(), Ordering::SeqCst);
    }
    fn fail(&mut self, _error: Error) {}
    fn cancelled(&mut self) {}
    fn lost(&mut self, _payload: &mut Payload, _item: usize, _error: Error, _retry: bool) -> bool {
        false
    }
}

impl<const PAD: usize> Drop for Counted<PAD> {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn counted<const PAD: usize>() -> (Counted<PAD>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let finished = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let c = Counted {
        finished: finished.clone(),
        dropped: dropped.clone(),
        _pad: [0; PAD],
    };
    (c, finished, dropped)
}

#[test]
fn a_call_s_completion_lives_in_its_job() {
    let (promise, future) = Future::<u64>::pending();
    let job = ProcJob::new(
        1,
        Payload::default(),
        CallCompletion::<u64> {
            promise: Some(promise),
            attempts: 0,
            number: Some(1),
            name: Some("call"),
            spare: None,
        },
    );
    assert!(job.completion.as_ref().unwrap().is_inline());
    // Moved around (as a job is, through the queue), then dropped unused:
    // the promise inside is dropped once, so the future reports cancelled.
    let mut moved = vec![job];
    moved.reserve(100);
    drop(moved);
    assert!(future.result().unwrap_err().is_cancelled());
}

#[test]
fn an_inline_completion_is_used_in_place_and_dropped_once() {
    let (c, finished, dropped) = counted::<1>();
    let mut job = ProcJob::new(7, Payload::default(), c);
    assert!(job.completion.as_ref().unwrap().is_inline());
    let mut jobs = std::collections::VecDeque::new();
    jobs.push_back(job);
    job = jobs.pop_front().unwrap();
    assert!(job.completion().start());
    job.completion().finish(&[1, 2, 3], 0, None);
    assert_eq!(finished.load(Ordering::SeqCst), 3);
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    drop(job);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn a_large_completion_is_boxed_and_dropped_once() {
    let (c, finished, dropped) = counted::<16>();
    let mut job = ProcJob::new(7, Payload::default(), c);
    assert!(!job.completion.as_ref().unwrap().is_inline());
    job.completion().finish(&[1], 0, None);
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    drop(job);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn a_call_completion_delivers_through_the_job() {
    let (promise, future) = Future::<u64>::pending();
    let mut job = ProcJob::new(
        1,
        Payload::default(),
        CallCompletion::<u64> {
            promise: Some(promise),
            attempts: 0,
            number: None,
            name: None,
            spare: None,
        },
    );
    assert!(job.completion().start());
    let bytes = crate::bulk::to_vec(&crate::entry::CallWire::<u64> {
        result: Ok(42),
        span: None,
    })
    .unwrap();
    job.completion().finish(&bytes, 0, None);
    drop(job);
    assert_eq!(future.result().unwrap(), 42);
}
