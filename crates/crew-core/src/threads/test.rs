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
        (0..1000).collect(),
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
