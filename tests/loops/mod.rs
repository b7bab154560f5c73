//! OpenMP-style loops: `prange` with every `Schedule`, `par_for_each_mut`,
//! and `cpu_count`.

use crew::{Schedule, par_for_each_mut, prange};

const SCHEDULES: [Schedule; 5] = [
    Schedule::Static,
    Schedule::Dynamic(1),
    Schedule::Dynamic(7),
    Schedule::Dynamic(0),
    Schedule::Adaptive,
];

#[test]
fn cpu_count_is_at_least_one() {
    assert!(crew::cpu_count() >= 1);
}

#[test]
fn prange_gives_the_same_sum_with_every_schedule() {
    let n = 100_000;
    let expected: u64 = (0..n as u64).map(|i| i * i % 1000).sum();
    for schedule in SCHEDULES {
        let total = prange(0..n)
            .schedule(schedule)
            .map_sum(|i| (i as u64) * (i as u64) % 1000);
        assert_eq!(total, expected, "{schedule:?}");
        let on_two = prange(0..n)
            .schedule(schedule)
            .threads(2)
            .map_sum(|i| (i as u64) * (i as u64) % 1000);
        assert_eq!(on_two, expected, "{schedule:?} on 2 threads");
    }
}

#[test]
fn prange_over_an_empty_or_tiny_range() {
    for schedule in SCHEDULES {
        assert_eq!(prange(0..0).schedule(schedule).map_sum(|i| i), 0);
        assert_eq!(prange(5..6).schedule(schedule).map_sum(|i| i), 5);
        assert!(
            prange(3..3)
                .schedule(schedule)
                .map_collect(|i| i)
                .is_empty()
        );
    }
}

#[test]
fn prange_collects_in_index_order_and_reduces() {
    for schedule in SCHEDULES {
        let v = prange(10..1010).schedule(schedule).map_collect(|i| i * 2);
        assert_eq!(v, (10..1010).map(|i| i * 2).collect::<Vec<_>>());
        let max =
            prange(0..1000)
                .schedule(schedule)
                .map_reduce(|i| (i * 7919) % 1000, || 0, usize::max);
        assert_eq!(max, 999);
    }
}

#[test]
fn prange_for_each_visits_every_index_once() {
    use std::sync::atomic::{AtomicU8, Ordering};
    for schedule in SCHEDULES {
        let seen: Vec<AtomicU8> = (0..5000).map(|_| AtomicU8::new(0)).collect();
        prange(0..seen.len()).schedule(schedule).for_each(|i| {
            seen[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(
            seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
            "{schedule:?}"
        );
    }
}

#[test]
fn par_for_each_mut_writes_every_element() {
    for schedule in SCHEDULES {
        let mut v = vec![0u64; 10_007];
        par_for_each_mut(&mut v, schedule, |i, x| *x = (i as u64) * 3 + 1);
        assert!(
            v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 1),
            "{schedule:?}"
        );
        let mut empty: Vec<u64> = Vec::new();
        par_for_each_mut(&mut empty, schedule, |_, x| *x = 1);
    }
}
