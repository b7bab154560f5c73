//! The fuzzing entry of the queue's recovery path: a holder "dies" (a thread
//! exits owning the monitor) after scribbling arbitrary values over the
//! queue's shared state and ring; the queue must then repair itself and keep
//! every promise: no panic, no hang, no out-of-bounds access, and a record
//! count that matches what can be taken out.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{PREFIX, Queue, QueueState};
use crate::sys::Deadline;

/// Bytes of the ring in the fuzzed queue: two pages, so records wrap often,
/// or one discard chunk, so consumed pages are given back.
const RINGS: [usize; 2] = [8192, super::DISCARD_CHUNK as usize];

/// Reads the fuzzer's bytes front to back; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A new value for a state word that now holds `old`: kept, nudged,
    /// small, or anything at all.
    fn word(&mut self, old: u64) -> u64 {
        match self.u8() % 5 {
            0 => old,
            1 => old.wrapping_add(i64::from(self.u8() as i8) as u64),
            2 => u64::from(self.u8()) * 16,
            3 => self.u64(),
            _ => u64::MAX - u64::from(self.u8()),
        }
    }
}

/// Runs one fuzz case; see the module docs. Panics only if the queue breaks
/// one of its promises.
pub fn queue_recovery(data: &[u8]) {
    let mut input = Input(data);
    let ring = RINGS[usize::from(input.u8() & 1)];
    let queue = Queue::<Vec<u8>>::builder()
        .capacity_bytes(ring)
        .build()
        .expect("a small queue can be created");
    // Some honest traffic first, so the offsets are not all zero.
    for _ in 0..input.u8() % 24 {
        let len = usize::from(input.u8()) * 3;
        let item = vec![input.u8(); len];
        if queue.try_put(item).is_err() {
            break;
        }
    }
    for _ in 0..input.u8() % 8 {
        let _ = queue.try_get();
    }
    let ring = ring.min(queue.shm.data_len());
    // The holder dies after writing whatever it liked over the state.
    std::thread::scope(|s| {
        s.spawn(|| {
            let guard = queue.state().monitor.lock(Deadline::never()).unwrap();
            let st: &QueueState = queue.state();
            for word in [
                &st.capacity,
                &st.max_items,
                &st.head,
                &st.tail,
                &st.count,
                &st.discarded,
            ] {
                word.store(input.word(word.load(Relaxed)), Relaxed);
            }
            st.closed.store(u32::from(input.u8() % 8 == 0), Relaxed);
            // Patches of the ring: (offset, length, bytes).
            let data = queue.shm.data();
            for _ in 0..input.u8() % 16 {
                let at = (usize::from(input.u8()) << 8 | usize::from(input.u8())) % ring;
                let len = usize::from(input.u8() % 32).min(ring - at);
                for i in 0..len {
                    // SAFETY: `at + i < ring`, the data area's length; this
                    // thread holds the monitor.
                    unsafe { data.add(at + i).write(input.u8()) };
                }
            }
            std::mem::forget(guard); // the thread exits holding the mutex
        });
    });
    check(&queue, ring, &mut input);
}

/// What every user of the queue may rely on after the repair.
fn check(queue: &Queue<Vec<u8>>, ring: usize, input: &mut Input<'_>) {
    let len = queue.len();
    assert!(
        len as u64 * PREFIX <= ring as u64,
        "{len} records cannot fit in the ring"
    );
    let mut taken = 0;
    loop {
        match queue.try_get() {
            Ok(_) => taken += 1,
            Err(e) if e.is_serialization() => taken += 1,
            Err(e) if e.is_empty() || e.is_closed() => break,
            Err(e) => panic!("unexpected error from try_get: {e}"),
        }
        assert!(taken <= len, "took more records than the queue counted");
    }
    assert_eq!(taken, len, "the recount matches what can be taken");
    assert!(queue.is_empty());
    assert_eq!(queue.len(), 0);
    let item = vec![input.u8(); usize::from(input.u8())];
    match queue.try_put(item.clone()) {
        Ok(()) => {
            assert_eq!(queue.len(), 1);
            assert_eq!(queue.get_timeout(Duration::from_secs(5)).unwrap(), item);
        }
        Err(e) => assert!(
            e.is_closed() || e.is_full(),
            "an empty queue refused an item: {e}"
        ),
    }
    assert!(
        queue
            .get_timeout(Duration::from_millis(1))
            .is_err_and(|e| e.is_timeout() || e.is_closed())
    );
    queue.close();
    assert!(queue.try_get().unwrap_err().is_closed());
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Instant;

    /// The stable run of the fuzz target: random inputs (xorshift, fixed
    /// seed, so a failure reproduces) for `CREW_FUZZ_SECONDS` (default 3 s)
    /// or 200,000 cases, whichever ends first. `cargo fuzz run
    /// queue_recovery` explores far longer, guided by coverage.
    #[test]
    fn fuzz_queue_recovery_stable() {
        let budget = std::env::var("CREW_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        let end = Instant::now() + Duration::from_secs(budget);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = Vec::new();
        let mut cases = 0u32;
        while cases < 200_000 && Instant::now() < end {
            buf.clear();
            let len = (x % 256) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            queue_recovery(&buf);
            cases += 1;
        }
        assert!(cases > 0);
    }

    /// Regression inputs, one per bug (see the README's tools section).
    #[test]
    fn fuzz_queue_recovery_findings() {
        for case in FINDINGS {
            queue_recovery(case);
        }
    }

    const FINDINGS: &[&[u8]] = &[
        // The shared capacity word scribbled to 2^60 and the head to 2^40:
        // the ring copies trusted the word and wrote 1 TiB past the mapping
        // (SIGSEGV). The handle now keeps the capacity it checked at open.
        &[
            0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0,
        ],
        // A 1 MiB ring (pages given back as consumed) whose head jumps to
        // 2^50 with the discard mark left at 0: the next get walked 2^30
        // chunks, one madvise each (a hang). The repair rebases the offsets
        // and moves the mark to the head.
        &[1, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1, 0, 7],
    ];
}
