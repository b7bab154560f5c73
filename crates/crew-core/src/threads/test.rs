use super::*;
use crate::engine::{MapOptions, map_blocking};
use crate::{Star, Unary};

#[test]
fn zero_workers_is_invalid() {
    assert!(Threads::new(0).unwrap_err().is_invalid_input());
}

#[test]
fn map_borrows_local_data() {
    let t = Threads::new(2).unwrap();
    let data: Vec<u64> = (0..1000).collect();
    let out = map_blocking(
        &t,
        Unary(|i: usize| data[i] * 2),
        0..1000usize,
        &MapOptions::default(),
    )
    .unwrap();
    assert_eq!(out[999], 1998);
}

#[test]
fn terminate_then_join_ends() {
    let t = Threads::new(2).unwrap();
    t.terminate();
    assert!(t.join(None));
    assert!(t.is_closed());
    let out = map_blocking(&t, Star(|| 1), vec![()], &MapOptions::default());
    assert!(out.unwrap_err().first().is_shutdown());
}

/// An iterator whose size hint promises more (or fewer) items than it has.
struct Liar {
    left: usize,
    claims: usize,
}

impl Iterator for Liar {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        (self.left > 0).then(|| {
            self.left -= 1;
            self.left
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claims, Some(self.claims))
    }
}

#[test]
fn a_size_hint_that_lies_is_reported_not_trusted() {
    let t = Threads::new(2).unwrap();
    let opts = MapOptions {
        chunksize: Some(3),
        ..MapOptions::default()
    };
    let short =
        map_blocking(&t, Unary(|x: usize| x), Liar { left: 5, claims: 9 }, &opts).unwrap_err();
    assert!(short.first().is_invalid_input());
    assert_eq!(short.len(), 9);
    let long =
        map_blocking(&t, Unary(|x: usize| x), Liar { left: 9, claims: 5 }, &opts).unwrap_err();
    assert!(long.first().is_invalid_input());
    assert_eq!(long.first().index(), Some(5));
    assert_eq!(long.len(), 6);
}
