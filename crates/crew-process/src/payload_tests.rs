//! Payloads through real workers: every bulk type at the sizes that
//! matter, nested values, workers that die in the middle of a large
//! transfer, and no descriptor or mapping left behind.

use std::sync::Mutex;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_bytes::ByteBuf;

use crew_core::engine::{MapOptions, map_blocking};
use crew_core::{Backend, Call, Future, Runs, Star, Unary};

use crate::wire::SHM_THRESHOLD;
use crate::{NonCapturing, Processes};

/// These tests count this process's descriptors and mappings: one at a time.
pub(crate) static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn apply<F, A, R>(p: &Processes, f: F, args: A) -> crew_core::Result<R>
where
    Star<F>: Call<A, R> + NonCapturing + Send + Sync,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let (promise, future) = Future::pending();
    let job = p.call_job(Star(f), args, promise);
    p.spawn(job).expect("the pool is open");
    future.result()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Sizes around the shared-memory threshold (of the whole payload, which
/// is the bytes plus a length), and 0, 1 and large.
fn sizes() -> Vec<usize> {
    let t = SHM_THRESHOLD;
    vec![
        0,
        1,
        1000,
        t - 8,
        t - 4,
        t - 3,
        t - 2,
        t - 1,
        t,
        t + 1,
        3 << 20,
    ]
}

#[test]
fn every_bulk_type_round_trips_through_a_worker() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(2).unwrap();
    for n in sizes() {
        let v = bytes(n, 7);
        let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
        assert!(back == v, "Vec<u8> of {n}");
        let b = ByteBuf::from(v.clone());
        let back: ByteBuf = apply(&p, |b: ByteBuf| b, (b.clone(),)).unwrap();
        assert!(back == b, "ByteBuf of {n}");
        let s: String = v.iter().map(|&x| (b'a' + x % 26) as char).collect();
        let back: String = apply(&p, |s: String| s, (s.clone(),)).unwrap();
        assert!(back == s, "String of {n}");
        let f: Vec<f64> = (0..n / 8).map(|i| i as f64 * 0.5).collect();
        let back: Vec<f64> = apply(&p, |f: Vec<f64>| f, (f.clone(),)).unwrap();
        assert!(back == f, "Vec<f64> of {}", n / 8);
        let f: Vec<f32> = (0..n / 4).map(|i| i as f32 - 3.0).collect();
        let back: Vec<f32> = apply(&p, |f: Vec<f32>| f, (f.clone(),)).unwrap();
        assert!(back == f, "Vec<f32> of {}", n / 4);
        let i: Vec<i64> = (0..n / 8).map(|i| -(i as i64) * 77).collect();
        let back: Vec<i64> = apply(&p, |i: Vec<i64>| i, (i.clone(),)).unwrap();
        assert!(back == i, "Vec<i64> of {}", n / 8);
        let i: Vec<i32> = (0..n / 4).map(|i| i as i32 - 5).collect();
        let back: Vec<i32> = apply(&p, |i: Vec<i32>| i, (i.clone(),)).unwrap();
        assert!(back == i, "Vec<i32> of {}", n / 4);
        let u: Vec<u64> = (0..n / 8).map(|i| (i as u64) << 40).collect();
        let back: Vec<u64> = apply(&p, |u: Vec<u64>| u, (u.clone(),)).unwrap();
        assert!(back == u, "Vec<u64> of {}", n / 8);
        // The result differs from the argument: both directions checked.
        let back: Vec<u8> = apply(
            &p,
            |v: Vec<u8>| v.iter().map(|x| !x).collect(),
            (v.clone(),),
        )
        .unwrap();
        assert!(back.iter().zip(&v).all(|(a, b)| *a == !b) && back.len() == n);
    }
    // Huge: 100 MB in and out.
    let v = bytes(100 << 20, 3);
    let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
    assert!(back == v, "100 MB");
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct Record {
    name: String,
    data: Vec<u8>,
    rows: Vec<Vec<i32>>,
    weights: Option<Vec<f64>>,
}

#[test]
fn nested_payloads_round_trip_through_a_worker() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    let r = Record {
        name: "r".into(),
        data: bytes(SHM_THRESHOLD * 2, 1),
        rows: vec![vec![1, -2], vec![], (0..50_000).collect()],
        weights: Some(vec![0.25; 1000]),
    };
    let back: (Record, u32) = apply(
        &p,
        |r: Record, a: Vec<u8>, n: u32| {
            let mut r = r;
            r.data.extend_from_slice(&a);
            (r, n + 1)
        },
        (r.clone(), vec![9u8; 10], 41),
    )
    .unwrap();
    let mut want = r.clone();
    want.data.extend_from_slice(&[9; 10]);
    assert_eq!(back, (want, 42));
    // A map whose chunks are large: items in bulk inside a sequence.
    let items: Vec<Vec<u8>> = (0..6).map(|i| bytes(200_000, i)).collect();
    let sums = map_blocking(
        &p,
        Unary(|v: Vec<u8>| v.iter().map(|&x| u64::from(x)).sum::<u64>()),
        items.clone(),
        &MapOptions {
            chunksize: Some(3),
            ..MapOptions::default()
        },
    )
    .unwrap();
    let want: Vec<u64> = items
        .iter()
        .map(|v| v.iter().map(|&x| u64::from(x)).sum())
        .collect();
    assert_eq!(sums, want);
}

/// Writes the first field (a large `Vec<u8>`), then kills its own process:
/// a worker that dies in the middle of writing a result to shared memory.
#[derive(Deserialize)]
struct DiesWriting(Vec<u8>, u8);

impl Serialize for DiesWriting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        die();
        t.serialize_element(&self.1)?;
        t.end()
    }
}

/// Reads its large `Vec<u8>`, then kills its own process: a worker that
/// dies in the middle of reading its arguments from shared memory.
#[derive(Serialize)]
struct DiesReading(Vec<u8>, u8);

impl<'de> Deserialize<'de> for DiesReading {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (v, _n): (Vec<u8>, u8) = Deserialize::deserialize(d)?;
        let _ = v;
        die();
        Ok(DiesReading(Vec::new(), 0))
    }
}

fn die() {
    // SAFETY: sending a signal to this very process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

#[test]
fn a_worker_dying_mid_transfer_fails_only_its_task() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    let big = bytes(20 << 20, 5);
    for round in 0..3 {
        // Queued behind each other on one worker: the one that dies fails,
        // those around it (sent ahead, or waiting) get their own results.
        let mut futures = Vec::new();
        for i in 0..5u8 {
            let (promise, future) = Future::pending();
            let job = match i {
                1 => {
                    let (promise2, future2) = Future::<DiesWriting>::pending();
                    drop(promise);
                    let job = p.call_job(
                        Star(|v: Vec<u8>| DiesWriting(v, 1)),
                        (big.clone(),),
                        promise2,
                    );
                    p.spawn(job).expect("open");
                    futures.push((i, None, Some(future2), None));
                    continue;
                }
                3 => {
                    let (promise3, future3) = Future::<u8>::pending();
                    drop(promise);
                    let job = p.call_job(
                        Star(|d: DiesReading| d.1),
                        (DiesReading(big.clone(), 2),),
                        promise3,
                    );
                    p.spawn(job).expect("open");
                    futures.push((i, None, None, Some(future3)));
                    continue;
                }
                _ => p.call_job(
                    Star(|v: Vec<u8>, k: u8| v.into_iter().map(|x| x ^ k).collect::<Vec<u8>>()),
                    (big.clone(), i),
                    promise,
                ),
            };
            p.spawn(job).expect("open");
            futures.push((i, Some(future), None, None));
        }
        for (i, ok, writing, reading) in futures {
            if let Some(f) = ok {
                let v: Vec<u8> = f.result().unwrap();
                assert!(
                    v.len() == big.len() && v.iter().zip(&big).all(|(a, b)| *a == b ^ i),
                    "round {round}: task {i} got a wrong result"
                );
            }
            if let Some(f) = writing {
                let e = f.result().err().expect("the worker died writing");
                assert!(e.is_worker_lost(), "round {round}: {e}");
            }
            if let Some(f) = reading {
                let e = f.result().expect_err("the worker died reading");
                assert!(e.is_worker_lost(), "round {round}: {e}");
            }
        }
    }
}

/// The payload memfds this process holds open, and its mappings of them.
fn payload_fds_and_maps() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("crew-payload"))
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("crew-payload"))
        .count();
    (fds, maps)
}

#[test]
fn a_thousand_large_calls_leave_no_descriptor_or_mapping_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(2).unwrap();
    let v = bytes(SHM_THRESHOLD * 2, 9);
    for _ in 0..20 {
        let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
        assert!(back == v);
    }
    let all_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let (fds_before, _) = payload_fds_and_maps();
    let total_before = all_fds();
    for i in 0..1000 {
        // Some in flight together, most alone.
        if i % 10 == 0 {
            let futures: Vec<_> = (0..4)
                .map(|_| {
                    let (promise, future) = Future::pending();
                    let job = p.call_job(Star(|v: Vec<u8>| v), (v.clone(),), promise);
                    p.spawn(job).expect("open");
                    future
                })
                .collect();
            for f in futures {
                let back: Vec<u8> = f.result().unwrap();
                assert!(back == v);
            }
        } else {
            let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
            assert!(back == v);
        }
    }
    let (fds_after, maps_after) = payload_fds_and_maps();
    // Bounded by the pool (8 regions) and the reader's mappings (8).
    assert!(
        fds_after <= fds_before.max(8),
        "payload fds: {fds_before} before, {fds_after} after"
    );
    assert!(maps_after <= 16, "payload mappings: {maps_after}");
    let (pool, mapped) = crate::shm::counts();
    assert!(pool <= 8 && mapped <= 8, "pool {pool}, mapped {mapped}");
    // Other tests of this binary may hold a few descriptors of their own.
    let total_after = all_fds();
    assert!(
        total_after <= total_before + 16,
        "descriptors: {total_before} before, {total_after} after"
    );
    p.close();
    assert!(p.join(None));
    // A pool that ended keeps no shared memory for payloads.
    assert_eq!(payload_fds_and_maps(), (0, 0), "after the pool ended");
}

#[test]
fn an_idle_worker_lets_go_of_its_payload_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    let v = bytes(SHM_THRESHOLD * 4, 2);
    let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
    assert!(back == v);
    let pid = p.worker_pids()[0];
    let mappings = || {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("crew-payload"))
            .count()
    };
    // Right after the call the worker keeps its result's region and its
    // mapping of the argument's.
    assert!(mappings() > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while mappings() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle worker still maps {} payload regions",
            mappings()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // And it still serves large payloads.
    let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
    assert!(back == v);
}

/// The inodes of the payload regions process `pid` owns (it holds their
/// memfds open; the regions it was sent it only maps).
fn regions_owned_by(pid: u32) -> std::collections::BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let link = std::fs::read_link(&path).ok()?;
            link.to_string_lossy()
                .contains("crew-payload")
                .then(|| std::fs::metadata(&path).ok().map(|m| m.ino()))?
        })
        .collect()
}

/// The inodes of the payload regions process `pid` maps.
fn regions_mapped_by(pid: u32) -> std::collections::BTreeSet<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("crew-payload"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

#[test]
fn a_worker_idle_a_little_while_keeps_its_largest_regions() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    let small = bytes(SHM_THRESHOLD * 2, 4);
    let large = bytes(SHM_THRESHOLD * 24, 5);
    let echo = |v: &Vec<u8>| {
        let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
        assert!(back == *v, "a payload of {} bytes", v.len());
    };
    let mut tries = 0;
    loop {
        tries += 1;
        // This process's regions are made afresh (earlier tests leave some
        // of other sizes): the larger argument gets the larger region.
        crate::shm::trim();
        // Two calls encoded before either is sent: each argument is written
        // to a region of its own here, and the worker maps both.
        let jobs: Vec<_> = [&large, &small]
            .into_iter()
            .map(|v| {
                let (promise, future) = Future::pending();
                let job = p.call_job(Star(|v: Vec<u8>| v), (v.clone(),), promise);
                (job, future)
            })
            .collect();
        let both: Vec<_> = jobs
            .into_iter()
            .map(|(job, future)| {
                p.spawn(job).expect("open");
                future
            })
            .collect();
        for (f, v) in both.into_iter().zip([&large, &small]) {
            let back: Vec<u8> = f.result().unwrap();
            assert!(back == *v);
        }
        echo(&large);
        let pid = p.worker_pids()[0];
        let owned = regions_owned_by(pid);
        let mapped = regions_mapped_by(pid);
        assert!(!owned.is_empty(), "the worker keeps the regions it wrote");
        assert!(
            mapped.len() >= owned.len() + 2,
            "the worker maps {mapped:?}, its own {owned:?}"
        );
        // Past the first idle trim (1 s), well before the release of the
        // rest (`KEEP_IDLE`, 5 s). A round whose sleep overshot (a loaded
        // machine) proves nothing and runs again.
        let idle = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(1600));
        let kept = regions_owned_by(pid);
        let still = regions_mapped_by(pid);
        if idle.elapsed() >= crate::shm::KEEP_IDLE - std::time::Duration::from_secs(2) {
            assert!(tries < 5, "the machine is too slow to tell");
            continue;
        }
        // Its largest region and its mapping of the largest argument's
        // region stayed; the rest went.
        assert!(
            kept.len() == 1 && kept.is_subset(&owned),
            "kept {kept:?} of {owned:?}"
        );
        assert!(
            still.len() == 2 && kept.is_subset(&still) && still.is_subset(&mapped),
            "the worker maps {still:?} of {mapped:?}, its own {kept:?}"
        );
        // The next large call needs no new region or mapping.
        echo(&large);
        assert_eq!(regions_owned_by(pid), kept, "a new region after the idle");
        assert_eq!(
            regions_mapped_by(pid),
            still,
            "a new mapping after the idle"
        );
        break;
    }
}

#[test]
fn payloads_that_grow_and_shrink_reuse_a_bounded_set_of_regions() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    let _: u8 = apply(&p, |x: u8| x, (1,)).unwrap();
    let pid = p.worker_pids()[0];
    let sizes = [
        SHM_THRESHOLD,
        3 << 20,
        SHM_THRESHOLD + 1,
        5 << 20,
        1 << 20,
        8 << 20,
        SHM_THRESHOLD * 3,
        8 << 20,
        5 << 20,
        (8 << 20) + 1,
    ];
    let mut owned = std::collections::BTreeSet::new();
    for round in 0..3 {
        for (i, &n) in sizes.iter().enumerate() {
            let v = bytes(n, (round * 16 + i) as u8);
            let back: Vec<u8> = apply(
                &p,
                |v: Vec<u8>| v.into_iter().rev().collect::<Vec<u8>>(),
                (v.clone(),),
            )
            .unwrap();
            assert!(
                back.len() == n && back.iter().rev().eq(v.iter()),
                "round {round}, {n} bytes"
            );
            owned.extend(regions_owned_by(pid));
        }
    }
    // One call at a time: the worker writes every result into the one
    // region it keeps, grown as needed (a region is never shrunk), rather
    // than a region per size.
    assert_eq!(owned.len(), 1, "the worker wrote to regions {owned:?}");
    // Its mappings of the caller's regions stay within the reader's bound.
    assert!(regions_mapped_by(pid).len() <= 9);
    let (pool, mapped) = crate::shm::counts();
    assert!(pool <= 8 && mapped <= 8, "pool {pool}, mapped {mapped}");
}

#[test]
fn a_worker_killed_while_regions_are_cached_is_replaced_cleanly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    let v = bytes(SHM_THRESHOLD * 16, 6);
    let echo = || {
        let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
        assert!(back == v);
    };
    for round in 0..3 {
        echo();
        echo();
        // Each side maps the other's region now; the worker dies between
        // calls, with its region mapped here.
        let pid = p.worker_pids()[0];
        assert!(!regions_owned_by(pid).is_empty());
        let ours = regions_mapped_by(std::process::id());
        assert!(!ours.is_empty(), "round {round}: nothing mapped here");
        // SAFETY: a signal to a worker of this pool.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while p.worker_pids().first() == Some(&pid) || p.worker_pids().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no new worker");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The new worker reads the caller's cached region and writes its own.
        echo();
        echo();
    }
    let (pool, mapped) = crate::shm::counts();
    assert!(pool <= 8 && mapped <= 8, "pool {pool}, mapped {mapped}");
    p.close();
    assert!(p.join(None));
    assert_eq!(payload_fds_and_maps(), (0, 0), "after the pool ended");
}

#[test]
fn an_idle_caller_lets_go_of_its_payload_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    let v = bytes(SHM_THRESHOLD * 4, 8);
    let echo = || {
        let back: Vec<u8> = apply(&p, |v: Vec<u8>| v, (v.clone(),)).unwrap();
        assert!(back == v);
    };
    echo();
    // Right after the call this process keeps the region it wrote the
    // argument to and its mapping of the worker's result.
    let (fds, maps) = payload_fds_and_maps();
    assert!(fds > 0 && maps > 0, "{fds} fds, {maps} mappings");
    // With the pool still open, both go once unused for a while (other
    // tests of this binary that read regions may put it off).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while payload_fds_and_maps() != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle caller still holds {:?} payload fds and mappings",
            payload_fds_and_maps()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // And it still sends and reads large payloads.
    echo();
    echo();
}

#[test]
fn a_blocking_call_decodes_its_result_into_its_arguments_buffer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = Processes::new(1).unwrap();
    for n in [SHM_THRESHOLD * 12, 5 << 20] {
        let v = bytes(n, 3);
        let want: Vec<u8> = v.iter().map(|x| !x).collect();
        // Room to spare: a fresh result would have a capacity of `n`.
        let mut arg = Vec::with_capacity(n + n / 8);
        arg.extend_from_slice(&v);
        let at = arg.as_ptr();
        let back: Vec<u8> = crew_core::engine::call_blocking(
            &p,
            Star(|v: Vec<u8>| v.iter().map(|x| !x).collect::<Vec<u8>>()),
            (arg,),
        )
        .unwrap();
        assert!(back == want, "{n} bytes");
        // The caller's memory, reused: no fresh block for the result.
        assert_eq!(
            (back.as_ptr(), back.capacity()),
            (at, n + n / 8),
            "{n} bytes"
        );
        let b: ByteBuf =
            crew_core::engine::call_blocking(&p, Star(|b: ByteBuf| b), (ByteBuf::from(back),))
                .unwrap();
        assert!(
            *b == want && b.as_ptr() == at && b.capacity() == n + n / 8,
            "ByteBuf of {n} bytes"
        );
        // A result of another size, or of another shape, is its own.
        let half: Vec<u8> = crew_core::engine::call_blocking(
            &p,
            Star(|v: Vec<u8>| v[..v.len() / 2].to_vec()),
            (v.clone(),),
        )
        .unwrap();
        assert!(half[..] == v[..n / 2]);
        let sum: u64 = crew_core::engine::call_blocking(
            &p,
            Star(|v: Vec<u8>| v.iter().map(|&x| u64::from(x)).sum::<u64>()),
            (v.clone(),),
        )
        .unwrap();
        assert_eq!(sum, v.iter().map(|&x| u64::from(x)).sum::<u64>());
    }
}
