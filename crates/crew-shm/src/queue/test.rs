//! The commit rule, made deterministic: a thread that exits while holding the
//! monitor looks to the robust mutex exactly like a killed process, so a
//! half-done put or get can be staged precisely.

use std::sync::atomic::Ordering::Relaxed;

use super::*;

/// Runs `stage` on a thread that takes the queue's monitor and then exits
/// without releasing it, as a process killed inside `put` or `get` would.
fn die_holding_monitor<T>(queue: &Queue<T>, stage: impl FnOnce(&Queue<T>) + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let guard = queue.state().monitor.lock(Deadline::never()).unwrap();
            stage(queue);
            std::mem::forget(guard); // the thread exits holding the mutex
        });
    });
}

#[test]
fn producer_dying_mid_put_leaves_no_record() {
    let queue = Queue::<Vec<u8>>::builder()
        .capacity_bytes(1 << 16)
        .build()
        .unwrap();
    queue.put(vec![1; 100]).unwrap();
    die_holding_monitor(&queue, |q| {
        // Half of a 1,000-byte record past the tail, tail never stored, and
        // the derived count already bumped: the worst a crash can leave.
        let tail = q.state().tail.load(Relaxed);
        q.write_ring(tail, &1000u32.to_le_bytes());
        q.write_ring(tail + PREFIX, &[9; 500]);
        q.state().count.fetch_add(1, Relaxed);
    });
    assert_eq!(
        queue.get().unwrap(),
        vec![1; 100],
        "the committed item is intact"
    );
    assert_eq!(queue.len(), 0, "the count was recomputed");
    assert!(
        queue.try_get().unwrap_err().is_empty(),
        "the half-written record is not there"
    );
    queue.put(vec![2; 3]).unwrap();
    assert_eq!(queue.get().unwrap(), vec![2; 3]);
}

#[test]
fn consumer_dying_mid_get_leaves_the_item() {
    let queue = Queue::<String>::new().unwrap();
    queue.put("first".to_string()).unwrap();
    queue.put("second".to_string()).unwrap();
    die_holding_monitor(&queue, |q| {
        // Read the record, then die before the head store.
        let head = q.state().head.load(Relaxed);
        let mut bytes = vec![0; q.read_prefix(head) as usize];
        q.read_ring(head + PREFIX, &mut bytes);
        q.state().count.fetch_sub(1, Relaxed);
    });
    assert_eq!(queue.len(), 2, "nothing was consumed");
    assert_eq!(queue.get().unwrap(), "first");
    assert_eq!(queue.get().unwrap(), "second");
}

#[test]
fn records_wrap_around_the_ring() {
    let queue = Queue::<Vec<u8>>::builder()
        .capacity_bytes(4096)
        .build()
        .unwrap();
    for round in 0..100u8 {
        let item = vec![round; 1000 + round as usize];
        queue.put(item.clone()).unwrap();
        assert_eq!(queue.get().unwrap(), item);
    }
    // Largest item: capacity minus the prefix, minus postcard's length varint.
    assert!(queue.try_put(vec![0; 4096 - 4 - 2]).is_ok());
    assert!(queue.try_put(vec![0; 1]).unwrap_err().is_full());
}

#[test]
fn consumed_chunks_go_back_to_the_kernel() {
    let queue = Queue::<Vec<u8>>::builder()
        .capacity_bytes(4 * DISCARD_CHUNK as usize)
        .build()
        .unwrap();
    let item = vec![7u8; 100_000];
    for _ in 0..200 {
        queue.put(item.clone()).unwrap();
        assert_eq!(queue.get().unwrap(), item);
    }
    let state = queue.state();
    assert!(state.discarded.load(Relaxed) + DISCARD_CHUNK > state.head.load(Relaxed));
}
