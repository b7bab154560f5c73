//! A pool that keeps a timeline shows its workers' fates beside the task
//! spans: a crash and the restart after it, a timeout, a kill, each as an
//! instant event on the worker's track; the spans are named after the task.

use std::hint::black_box;
use std::time::Duration;

use crew::{MarkKind, Pool};

use crate::support::{LONG, within};

fn aborts_on_3(x: u32) -> u32 {
    if x == 3 {
        std::process::abort();
    }
    x
}

fn loops_on_3(x: u32) -> u32 {
    if x == 3 {
        let mut n = 0u64;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
    x
}

fn sleeps_a_minute() -> u32 {
    std::thread::sleep(Duration::from_secs(60));
    0
}

fn kinds(pool: &Pool<crew::Processes>) -> Vec<MarkKind> {
    let t = pool.timeline().expect("built with timeline(true)");
    t.marks().iter().map(|m| m.kind).collect()
}

#[test]
fn a_crash_and_the_restart_after_it_are_marked() {
    let pool = Pool::builder().processes(1).timeline(true).build().unwrap();
    let err = within(LONG, "a map with an aborting task", {
        let pool = pool.clone();
        move || pool.with_chunksize(1).map(aborts_on_3, 0..6u32)
    })
    .expect_err("item 3 aborts its worker");
    assert_eq!(err.errors().map(|(i, _)| i).collect::<Vec<_>>(), [3]);
    let t = pool.timeline().unwrap();
    let marks = t.marks();
    let crash = marks
        .iter()
        .position(|m| m.kind == MarkKind::Crash)
        .unwrap_or_else(|| panic!("no crash mark: {marks:?}"));
    assert!(marks[crash].detail.contains("SIGABRT"), "{marks:?}");
    assert_eq!(marks[crash].worker, 0);
    assert!(
        marks[crash..].iter().any(|m| m.kind == MarkKind::Restart),
        "no restart after the crash: {marks:?}"
    );
    // The items that ran are spans named after their function.
    let spans = t.spans();
    assert_eq!(spans.len(), 5, "{spans:?}");
    assert!(spans.iter().all(|s| s.name == "aborts_on_3"), "{spans:?}");
    let trace = t.to_chrome_trace();
    assert!(trace.contains("\"name\":\"worker crash\""), "{trace}");
    assert!(trace.contains("\"name\":\"worker restart\""), "{trace}");
}

#[test]
fn a_timeout_is_marked() {
    let pool = Pool::builder()
        .processes(1)
        .timeline(true)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = within(LONG, "a map with an endless task", {
        let pool = pool.clone();
        move || pool.with_chunksize(1).map(loops_on_3, 0..6u32)
    })
    .expect_err("item 3 times out");
    assert!(err.first().is_timeout(), "{}", err.first());
    let marks = kinds(&pool);
    assert!(marks.contains(&MarkKind::Timeout), "{marks:?}");
    assert!(!marks.contains(&MarkKind::Crash), "{marks:?}");
    assert!(marks.contains(&MarkKind::Restart), "{marks:?}");
}

#[test]
fn a_kill_is_marked_and_a_clean_stop_is_not() {
    let pool = Pool::builder().processes(1).timeline(true).build().unwrap();
    pool.map(aborts_on_3, 0..3u32).unwrap();
    let slow = pool.apply_async(sleeps_a_minute, ());
    let t = pool.timeline().unwrap();
    // Running or still queued, the worker is killed on terminate.
    pool.terminate();
    assert!(pool.join_timeout(LONG).unwrap(), "the workers exit");
    assert!(slow.get_timeout(LONG).is_err());
    let marks = kinds(&pool);
    assert_eq!(marks, [MarkKind::Kill], "{:?}", t.marks());
    assert!(
        t.marks()[0].detail.contains("terminated"),
        "{:?}",
        t.marks()
    );

    // A pool that closes stops its workers as asked: nothing to mark.
    let calm = Pool::builder().processes(2).timeline(true).build().unwrap();
    calm.map(aborts_on_3, 0..3u32).unwrap();
    calm.close();
    assert!(calm.join_timeout(LONG).unwrap(), "the workers exit");
    assert_eq!(kinds(&calm), [], "{:?}", calm.timeline().unwrap().marks());
}
