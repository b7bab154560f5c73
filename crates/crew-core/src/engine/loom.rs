//! Loom models of a map's gathering: every chunk's outcome reaches the
//! `Gather` exactly once, the caller (`WaitGuard`) wakes when the last one
//! arrives, and an async map is assembled by whichever chunk ends last.

use super::*;
use crate::{Threads, Unary};

#[test]
fn loom_map_gathers_every_chunk() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        let opts = MapOptions {
            chunksize: Some(1),
            ..MapOptions::default()
        };
        let out = map_blocking(&t, Unary(|x: u32| x * 10), vec![1, 2], &opts).unwrap();
        assert_eq!(out, [10, 20]);
        t.close();
        assert!(t.join(None));
    });
}

#[test]
fn loom_map_async_is_assembled_by_the_last_chunk() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        let opts = MapOptions {
            chunksize: Some(1),
            ..MapOptions::default()
        };
        let r = map_async(&t, Unary(|x: u32| x + 1), vec![1, 2], &opts);
        assert_eq!(r.get().unwrap(), [2, 3]);
        t.close();
        assert!(t.join(None));
    });
}

#[test]
fn loom_a_map_unwinding_mid_dispatch_still_waits_for_its_chunks() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        let opts = MapOptions {
            chunksize: Some(1),
            ..MapOptions::default()
        };
        let data = vec![5u32, 6];
        // The input panics on its second item: the chunk already queued
        // borrows `data`, so the unwinding map must wait for it.
        let input = (0..2usize).map(|i| {
            assert!(i == 0, "input failed");
            i
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map_blocking(&t, Unary(|i: usize| data[i]), input, &opts)
        }));
        assert!(r.is_err());
        t.close();
        assert!(t.join(None));
    });
}
