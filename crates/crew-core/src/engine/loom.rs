//! Loom models of a map's gathering: every chunk's outcome reaches the
//! `Gather` exactly once, the caller (`WaitGuard`) wakes when the last one
//! arrives, and an async map is assembled by whichever chunk ends last.

use super::*;
use crate::backend::Backend;
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

/// An input that promises more items than it has.
struct Short {
    left: u32,
    claims: usize,
}

impl Iterator for Short {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        (self.left > 0).then(|| {
            self.left -= 1;
            self.left
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claims, Some(self.claims))
    }
}

// (A map unwinding mid-dispatch is not modelled: loom runs its threads on
// one OS thread, so a worker locking while the caller unwinds would see
// std's poisoning, not crew's behaviour.)
#[test]
fn loom_a_short_input_fails_the_missing_chunks_and_waits_for_the_rest() {
    ::loom::model(|| {
        let t = Threads::new(1).unwrap();
        let opts = MapOptions {
            chunksize: Some(1),
            ..MapOptions::default()
        };
        let data = [5u32, 6];
        // One chunk is queued (it borrows `data`), the second never comes:
        // the map fails it and still waits for the first.
        let input = Short { left: 1, claims: 2 };
        let e = map_blocking(&t, Unary(|i: u32| data[i as usize]), input, &opts).unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e.first().is_invalid_input());
        t.close();
        assert!(t.join(None));
    });
}
