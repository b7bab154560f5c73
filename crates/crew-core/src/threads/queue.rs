//! The pool's job queue: FIFO, many producers and consumers, and no
//! allocation in the steady state.
//!
//! A fixed ring ([`RING`] jobs, allocated once with the pool) takes the
//! jobs while it has room; a burst beyond it spills into an unbounded
//! crossbeam `Injector`, which allocates a block per 63 jobs. (The
//! `Injector` alone did that all the time: one allocation per 63 submits,
//! freed on another thread, the last allocation of a warm submit.)
//! Consumers take from the ring first. While
//! the spill is not empty, producers add to it rather than to the ring,
//! so a producer's jobs still leave in the order it queued them: a job
//! goes to the ring only once everything spilled before it was taken.
//!
//! Emptiness (`is_empty`) reads both parts with `SeqCst` loads, and a push
//! publishes with a `SeqCst` read-modify-write in either part, which the
//! sleep protocol's fences pair with (`README.md`).

use crossbeam_deque::{Injector, Steal};
use crossbeam_queue::ArrayQueue;

/// Jobs the ring holds: a pool's ordinary backlog (a burst of submits
/// beyond it spills). ~80 KB a pool.
const RING: usize = 1024;

pub(super) struct JobQueue<T> {
    ring: ArrayQueue<T>,
    spill: Injector<T>,
}

impl<T> JobQueue<T> {
    pub(super) fn new() -> Self {
        JobQueue {
            ring: ArrayQueue::new(RING),
            spill: Injector::new(),
        }
    }

    pub(super) fn push(&self, job: T) {
        let job = if self.spill.is_empty() {
            match self.ring.push(job) {
                Ok(()) => return,
                Err(job) => job,
            }
        } else {
            job
        };
        self.spill.push(job);
    }

    /// The oldest job, if any.
    pub(super) fn pop(&self) -> Option<T> {
        if let Some(job) = self.ring.pop() {
            return Some(job);
        }
        loop {
            match self.spill.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Empty => return None,
                Steal::Retry => std::hint::spin_loop(),
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.spill.is_empty()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_burst_beyond_the_ring_leaves_in_order() {
        let q = JobQueue::new();
        for i in 0..RING + 100 {
            q.push(i);
        }
        // Taking a few makes room in the ring; what comes now still queues
        // behind the spill.
        for i in 0..10 {
            assert_eq!(q.pop(), Some(i));
        }
        for i in RING + 100..RING + 200 {
            q.push(i);
        }
        for i in 10..RING + 200 {
            assert_eq!(q.pop(), Some(i));
        }
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        // Drained: the ring takes jobs again.
        q.push(7);
        assert!(!q.is_empty());
        assert_eq!(q.pop(), Some(7));
    }

    #[test]
    fn producers_and_consumers_lose_nothing() {
        let q = std::sync::Arc::new(JobQueue::new());
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u64 {
                        q.push((p, i));
                    }
                })
            })
            .collect();
        let mut last = [None::<u64>; 2];
        let mut got = 0;
        while got < 10_000 {
            if let Some((p, i)) = q.pop() {
                // One consumer: each producer's jobs come in its order.
                assert!(
                    last[p].is_none_or(|l| l < i),
                    "producer {p}: {i} after {last:?}"
                );
                last[p] = Some(i);
                got += 1;
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert!(q.is_empty());
    }
}
