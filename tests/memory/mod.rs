//! joblib's `Memory`: hits and misses, keys that hold across processes and
//! runs, invalidation, `ignore`, eviction, maps that compute only what is
//! missing (threads, processes, `Parallel`), concurrent writers, damaged
//! entries, and folders that cannot be written.
//!
//! Which process computed a value tells a hit from a miss across
//! processes: the cached functions return their process id beside the
//! value, so a stored result keeps the id of the process that computed it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crew::{Memory, Parallel, Pool, Prefer};

/// A fresh cache folder, readable by every user (the read-only test reads
/// it as another user).
fn folder() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("crew-memory-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "entry"))
        .collect()
}

/// `x²` and the process that computed it.
fn square_pid(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

static COUNTED_CALLS: AtomicUsize = AtomicUsize::new(0);

fn counted(x: u32, label: String) -> String {
    COUNTED_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("{label}{x}")
}

#[test]
fn a_second_call_is_a_hit_and_other_arguments_miss() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(counted);
    let before = COUNTED_CALLS.load(Ordering::SeqCst);
    assert_eq!(f.call((1, "a".into())), "a1");
    assert_eq!(f.call((1, "a".into())), "a1");
    assert_eq!(f.call((2, "a".into())), "a2");
    assert_eq!(f.call((1, "b".into())), "b1");
    assert_eq!(f.call((2, "a".into())), "a2");
    assert_eq!(COUNTED_CALLS.load(Ordering::SeqCst) - before, 3);
    let s = mem.stats();
    assert_eq!((s.hits, s.misses, s.corrupt, s.write_errors), (2, 3, 0, 0));
    assert_eq!(entries(dir.path()).len(), 3);
    // A new handle on the folder (a re-run) finds them.
    let again = Memory::new(dir.path()).unwrap();
    assert_eq!(again.call(counted, (1, "b".into())), "b1");
    assert_eq!(again.stats().hits, 1);
    assert_eq!(COUNTED_CALLS.load(Ordering::SeqCst) - before, 3);
    // `call_forced` computes and stores again; `Memory::call` is `cache(f).call`.
    assert_eq!(f.call_forced((1, "a".into())), "a1");
    assert_eq!(COUNTED_CALLS.load(Ordering::SeqCst) - before, 4);
    assert_eq!(entries(dir.path()).len(), 3);
}

fn checks_in_cache(dir: String, x: u64) -> bool {
    Memory::new(dir)
        .unwrap()
        .cache(square_pid)
        .check_call_in_cache(&(x,))
}

fn call_square_pid(dir: String, x: u64) -> (u64, u32) {
    Memory::new(dir).unwrap().call(square_pid, (x,))
}

#[test]
fn keys_are_the_same_in_another_process() {
    let dir = folder();
    let path = dir.path().to_str().unwrap().to_owned();
    let mem = Memory::new(dir.path()).unwrap();
    let here = std::process::id();
    assert_eq!(mem.call(square_pid, (7,)), (49, here));
    let pool = Pool::processes(1).unwrap();
    assert!(pool.apply(checks_in_cache, (path.clone(), 7)).unwrap());
    assert!(!pool.apply(checks_in_cache, (path.clone(), 8)).unwrap());
    // The worker reads the parent's entry, and the parent the worker's.
    assert_eq!(
        pool.apply(call_square_pid, (path.clone(), 7)).unwrap(),
        (49, here)
    );
    let (v, worker) = pool.apply(call_square_pid, (path, 8)).unwrap();
    assert_ne!(worker, here);
    assert_eq!(mem.call(square_pid, (8,)), (v, worker));
}

fn halve(x: u64) -> u64 {
    x / 2
}

fn halve_wide(x: u64) -> u128 {
    (x / 2) as u128
}

#[test]
fn a_new_build_version_or_signature_invalidates() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    // Keyed by the build's fingerprint by default: a version in its place
    // (another build, as far as the key goes) does not see the entry.
    mem.call(halve, (10,));
    assert!(mem.cache(halve).check_call_in_cache(&(10,)));
    assert!(!mem.cache(halve).version("1").check_call_in_cache(&(10,)));
    mem.cache(halve).version("1").call((10,));
    assert!(mem.cache(halve).version("1").check_call_in_cache(&(10,)));
    assert!(!mem.cache(halve).version("2").check_call_in_cache(&(10,)));
    // The same name with another signature is another function.
    assert!(
        !mem.cache(halve_wide)
            .name(std::any::type_name_of_val(&halve))
            .check_call_in_cache(&(10,))
    );
    let renamed = |n: &str| mem.cache(halve).name(n).version("1");
    renamed("a").call((10,));
    assert!(renamed("a").check_call_in_cache(&(10,)));
    assert!(!renamed("b").check_call_in_cache(&(10,)));
    assert_eq!(
        mem.cache(halve_wide).name("a").version("1").call((10,)),
        5u128
    );
    assert_eq!(mem.stats().hits, 0);
}

static NOISY_CALLS: AtomicUsize = AtomicUsize::new(0);

fn noisy(x: f64, verbose: bool, _tag: &'static str) -> f64 {
    NOISY_CALLS.fetch_add(1, Ordering::SeqCst);
    if verbose {
        eprintln!("noisy({x})");
    }
    x + 1.0
}

#[test]
fn ignored_arguments_are_left_out_of_the_key() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(noisy).ignore([1, 2]);
    assert_eq!(f.call((1.0, true, "a")), 2.0);
    assert_eq!(f.call((1.0, false, "b")), 2.0);
    assert_eq!(f.call((2.0, false, "b")), 3.0);
    assert_eq!(NOISY_CALLS.load(Ordering::SeqCst), 2);
    assert!(f.check_call_in_cache(&(1.0, false, "c")));
    // Without `ignore` every argument counts.
    let all = mem.cache(noisy);
    assert!(!all.check_call_in_cache(&(1.0, true, "a")));
    // A position past the arguments is a programming error, said at once.
    let bad = mem.cache(noisy).ignore([3]);
    let e = std::panic::catch_unwind(|| bad.call((1.0, true, "a"))).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(msg.contains("cannot ignore argument 3"), "{msg}");
}

fn block(n: usize) -> Vec<u8> {
    vec![7; n]
}

fn set_used(path: &Path, secs_ago: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .unwrap();
}

#[test]
fn reduce_size_evicts_the_least_recently_used_first() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(block);
    for n in [1000, 1001, 1002] {
        f.call((n,));
    }
    let mut found = entries(dir.path());
    assert_eq!(found.len(), 3);
    // Ages that do not depend on the clock's resolution: by size.
    found.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    for (p, age) in found.iter().zip([300, 200, 100]) {
        set_used(p, age);
    }
    // Reading the oldest makes it the most recently used.
    f.call((1000,));
    assert_eq!(mem.stats().hits, 1);
    let one = std::fs::metadata(&found[0]).unwrap().len();
    let limited = mem.clone().bytes_limit(2 * one + 10);
    let freed = limited.reduce_size().unwrap();
    assert!(freed > 1000);
    assert!(f.check_call_in_cache(&(1000,)));
    assert!(!f.check_call_in_cache(&(1001,)));
    assert!(f.check_call_in_cache(&(1002,)));
    assert!(mem.size() <= 2 * one + 10);
    // With a limit, every store keeps the cache within it.
    let small = Memory::new(dir.path()).unwrap().bytes_limit(3000);
    let g = small.cache(block);
    for n in 2000..2006 {
        g.call((n,));
        assert!(small.size() <= 3000, "{} bytes", small.size());
    }
    assert!(g.check_call_in_cache(&(2005,)));
    // `clear` removes everything, and only the cache's own folder.
    std::fs::write(dir.path().join("mine.txt"), "keep").unwrap();
    mem.clear().unwrap();
    assert_eq!(files(dir.path()), [dir.path().join("mine.txt")]);
    assert_eq!(mem.size(), 0);
}

/// `map`, and the lazy `imap` (then `imap_unordered`), on threads and on
/// processes.
#[test]
fn a_map_computes_only_the_missing_items() {
    let here = std::process::id();
    for (processes, lazy) in [(false, false), (true, false), (false, true), (true, true)] {
        let dir = folder();
        let mem = Memory::new(dir.path()).unwrap();
        let f = mem.cache(square_pid);
        for x in (0..20).step_by(2) {
            f.call((x,));
        }
        let (threads, procs) = (Pool::threads(2).unwrap(), Pool::processes(2).unwrap());
        let out: Vec<(u64, u32)> = match (processes, lazy) {
            (true, false) => f.map(&procs, 0..20).unwrap(),
            (false, false) => f.map(&threads, 0..20).unwrap(),
            (true, true) => f.imap(&procs, 0..20).collect::<Result<_, _>>().unwrap(),
            (false, true) => f.imap(&threads, 0..20).collect::<Result<_, _>>().unwrap(),
        };
        for (x, (v, pid)) in (0..20u64).zip(&out) {
            assert_eq!(*v, x * x, "in input order");
            // Even items were in the cache: computed here, before the map,
            // and read here. Odd ones ran on the workers (other processes,
            // or here).
            if x % 2 == 0 || !processes {
                assert_eq!(*pid, here, "item {x}");
            } else {
                assert_ne!(*pid, here, "item {x}");
            }
        }
        assert_eq!((mem.stats().hits, mem.stats().misses), (10, 20));
        // The workers stored what they computed: a second map is all hits
        // and gives the same values, process ids included (each once, in
        // any order, from `imap_unordered`).
        let mut again: Vec<(u64, u32)> = if lazy {
            let got = f.imap_unordered(&procs, 0..20);
            got.collect::<Result<_, _>>().unwrap()
        } else {
            f.map(&procs, 0..20).unwrap()
        };
        again.sort();
        assert_eq!(again, out);
        assert_eq!((mem.stats().hits, mem.stats().misses), (30, 20));
        assert_eq!(entries(dir.path()).len(), 20);
    }
}

static HALF_RUNS: AtomicUsize = AtomicUsize::new(0);

fn picky_half(x: u64) -> u64 {
    HALF_RUNS.fetch_add(1, Ordering::SeqCst);
    assert!(x != 13, "13 is refused");
    x / 2
}

#[test]
fn imap_is_lazy_over_an_endless_input_of_hits_and_keeps_errors_in_place() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(picky_half);
    let pool = Pool::threads(2).unwrap();
    f.map(&pool, 0..10).unwrap();
    let runs = HALF_RUNS.load(Ordering::SeqCst);
    // An endless input whose first items are all in the cache: read only
    // as far as the results are consumed.
    let first: Vec<u64> = f
        .imap(&pool, 0..)
        .take(12)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(first, (0..12).map(|x| x / 2).collect::<Vec<_>>());
    assert_eq!(mem.stats().hits, 10);
    let computed = HALF_RUNS.load(Ordering::SeqCst) - runs;
    assert!(
        (2..1000).contains(&computed),
        "{computed} computed for 2 misses"
    );
    // A failing call is an error in its place, with its input position,
    // between hits and computed results; nothing is stored for it.
    for ordered in [true, false] {
        let got: Vec<_> = if ordered {
            f.imap(&pool, 10..16).collect()
        } else {
            f.imap_unordered(&pool, 10..16).collect()
        };
        assert_eq!(got.len(), 6);
        let errors: Vec<_> = got.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "ordered: {ordered}");
        assert!(errors[0].is_panic() && errors[0].index() == Some(3));
        if ordered {
            assert!(got[3].is_err());
            assert_eq!(*got[4].as_ref().unwrap(), 7);
        }
        assert!(!f.check_call_in_cache(&(13,)));
    }
}

#[test]
fn parallel_delayed_calls_use_the_cache_in_the_workers() {
    let here = std::process::id();
    for prefer in [Prefer::Threads, Prefer::Processes] {
        let dir = folder();
        let mem = Memory::new(dir.path()).unwrap();
        let f = mem.cache(square_pid);
        f.call((3,));
        let run = || {
            Parallel::new()
                .n_jobs(2)
                .prefer(prefer)
                .run((0..6).map(|x| f.delayed((x,))))
                .unwrap()
        };
        let first = run();
        assert_eq!(first[3], (9, here));
        let computed_elsewhere = first.iter().filter(|(_, p)| *p != here).count();
        assert_eq!(
            computed_elsewhere,
            if prefer == Prefer::Processes { 5 } else { 0 }
        );
        assert_eq!(run(), first, "the second run reads every result back");
    }
}

fn big_pid(x: u64) -> (Vec<u64>, u32) {
    ((0..50_000).map(|i| i * x).collect(), std::process::id())
}

#[test]
fn concurrent_writers_of_one_key_leave_one_whole_entry() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(big_pid);
    // Every call misses in the parent, so every worker computes and
    // writes the same keys at once.
    let out = Parallel::new()
        .n_jobs(2)
        .run((0..24).map(|i| f.delayed((i % 2,))))
        .unwrap();
    for (i, (v, _)) in out.iter().enumerate() {
        assert_eq!(v[7], 7 * (i as u64 % 2));
    }
    let found = files(dir.path());
    assert_eq!(found, entries(dir.path()), "no temporary file is left");
    assert_eq!(found.len(), 2);
    // Each entry is one writer's whole result.
    for x in 0..2 {
        let (v, pid) = f.call((x,));
        assert_eq!(v.len(), 50_000);
        assert_eq!(v[49_999], 49_999 * x);
        assert!(out.iter().any(|(_, p)| *p == pid));
    }
    assert_eq!(mem.stats().hits, 2);
    assert_eq!(mem.stats().corrupt, 0);
}

static RECOMPUTED: AtomicUsize = AtomicUsize::new(0);

fn ramp(n: usize) -> Vec<f64> {
    RECOMPUTED.fetch_add(1, Ordering::SeqCst);
    (0..n).map(|i| i as f64 * 0.5).collect()
}

#[test]
fn damaged_entries_are_computed_again_never_returned() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(ramp);
    let expect = (0..1000).map(|i| i as f64 * 0.5).collect::<Vec<_>>();
    f.call((1000,));
    let path = entries(dir.path()).pop().unwrap();
    let whole = std::fs::read(&path).unwrap();
    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 0x10;
    let mut foreign = whole.clone();
    foreign[8] = 9; // the format version
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", whole[..whole.len() - 3].to_vec()),
        ("half-written", whole[..whole.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("flipped bit", flipped),
        ("foreign version", foreign),
        ("garbage", b"{\"pickle\": true}".repeat(10)),
    ];
    let runs = RECOMPUTED.load(Ordering::SeqCst);
    for (i, (what, bytes)) in damages.iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        assert!(
            what == &"flipped bit" || !f.check_call_in_cache(&(1000,)),
            "{what} looks whole"
        );
        assert!(f.call((1000,)) == expect, "{what}");
        assert_eq!(RECOMPUTED.load(Ordering::SeqCst), runs + i + 1, "{what}");
        assert_eq!(mem.stats().corrupt, i as u64 + 1, "{what}");
        // The recomputed entry replaced the damaged one: the same bytes
        // but for the time it took (40..48) and the header's checksum.
        let now = std::fs::read(&path).unwrap();
        assert!(
            now[..40] == whole[..40] && now[64..] == whole[64..],
            "{what}"
        );
        assert!(f.call((1000,)) == expect);
    }
    // The mapped read checks as much.
    std::fs::write(&path, &whole[..whole.len() - 8]).unwrap();
    assert!(*f.call_mapped((1000,)) == expect[..]);
    assert_eq!(mem.stats().corrupt, damages.len() as u64 + 1);
}

#[test]
fn large_float_results_are_read_in_place() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(ramp);
    let n = 1 << 20;
    let first = f.call_mapped((n,));
    assert!(!first.is_mapped());
    let hit = f.call_mapped((n,));
    assert!(hit.is_mapped(), "an 8 MB entry is mapped");
    assert_eq!(hit.len(), n);
    assert!(*hit == *first);
    // The plain call decodes the same entry.
    assert!(f.call((n,)) == hit.into_vec());
    // A small one is read, still correct.
    f.call((10,));
    let small = f.call_mapped((10,));
    assert!(!small.is_mapped());
    assert_eq!(small[9], 4.5);
}

static BIG_RUNS: AtomicUsize = AtomicUsize::new(0);

fn big_ramp(n: usize) -> Vec<f64> {
    BIG_RUNS.fetch_add(1, Ordering::SeqCst);
    (0..n).map(|i| i as f64 * 0.75).collect()
}

fn big_bytes(n: usize) -> Vec<u8> {
    BIG_RUNS.fetch_add(1, Ordering::SeqCst);
    (0..n).map(|i| (i % 253) as u8).collect()
}

fn big_shared(n: usize) -> crew::shm::Array<f64> {
    BIG_RUNS.fetch_add(1, Ordering::SeqCst);
    let values: Vec<f64> = (0..n).map(|i| i as f64 * 0.75).collect();
    crew::shm::Array::from_slice(&values).unwrap()
}

/// Writes `bytes` over the entry at `path`.
fn damage(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_big_entry_is_detected() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let runs = || BIG_RUNS.load(Ordering::SeqCst);
    // 8 MB of f64: read straight into the vector, the checksum computed
    // piece by piece on the way.
    let f = mem.cache(big_ramp);
    let n = 1 << 20;
    let expect = f.call((n,));
    let path = entries(dir.path()).pop().unwrap();
    let whole = std::fs::read(&path).unwrap();
    assert!(f.call((n,)) == expect);
    let before = runs();
    let mut corrupt = 0;
    for at in [100, whole.len() / 2, whole.len() - 1] {
        let mut flipped = whole.clone();
        flipped[at] ^= 0x01;
        damage(&path, &flipped);
        assert!(f.call((n,)) == expect, "byte {at}");
        corrupt += 1;
        assert_eq!(
            mem.stats().corrupt,
            corrupt,
            "byte {at} damaged, not detected"
        );
        assert_eq!(runs(), before + corrupt as usize, "byte {at}");
        // Computed again and stored whole.
        assert!(std::fs::read(&path).unwrap()[64..] == whole[64..]);
    }
    // The same entry filling a shared-memory array checks as much.
    let shared = mem.cache(big_shared);
    let first = shared.call_array((n,)).unwrap();
    let array_path = entries(dir.path())
        .into_iter()
        .find(|p| *p != path)
        .unwrap();
    let array_whole = std::fs::read(&array_path).unwrap();
    assert!(shared.call_array((n,)).unwrap().to_vec() == first.to_vec());
    let mut flipped = array_whole.clone();
    flipped[array_whole.len() / 3] ^= 0x80;
    damage(&array_path, &flipped);
    let runs_before = runs();
    assert!(shared.call_array((n,)).unwrap().to_vec() == expect);
    corrupt += 1;
    assert_eq!(mem.stats().corrupt, corrupt);
    assert_eq!(runs(), runs_before + 1);

    // A mapped read checks the header and the length, not the payload's
    // checksum (documented on `call_mapped`): a damaged header or a
    // truncated entry is found, and the plain call still finds a damaged
    // payload.
    assert!(f.call_mapped((n,)).is_mapped());
    let mut header = whole.clone();
    header[17] ^= 0x04; // the payload length
    let truncated = whole[..whole.len() - 8].to_vec();
    for (what, bytes) in [("header", header), ("truncated", truncated)] {
        damage(&path, &bytes);
        assert!(!f.check_call_in_cache(&(n,)), "{what}");
        let got = f.call_mapped((n,));
        assert!(!got.is_mapped() && *got == expect[..], "{what}");
        corrupt += 1;
        assert_eq!(mem.stats().corrupt, corrupt, "{what} not detected");
        assert!(f.call_mapped((n,)).is_mapped(), "{what}: stored again");
    }

    // 3 MB of bytes take the same straight path.
    let b = mem.cache(big_bytes);
    let bytes = b.call((3 << 20,));
    assert!(b.call((3 << 20,)) == bytes);
    let bytes_path = entries(dir.path())
        .into_iter()
        .find(|p| *p != path && *p != array_path)
        .unwrap();
    let mut flipped = std::fs::read(&bytes_path).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    damage(&bytes_path, &flipped);
    assert!(b.call((3 << 20,)) == bytes);
    corrupt += 1;
    assert_eq!(mem.stats().corrupt, corrupt);
    assert!(b.call((3 << 20,)) == bytes);
    assert_eq!(mem.stats().corrupt, corrupt);
}

#[test]
fn a_writer_killed_mid_write_leaves_only_a_temporary_file() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(block);
    f.call((500,));
    let entry = entries(dir.path()).pop().unwrap();
    // What a writer killed mid-write leaves: half a temporary file beside
    // the entries, under the name pattern writers use.
    let whole = std::fs::read(&entry).unwrap();
    let name = entry.file_name().unwrap().to_str().unwrap();
    let fresh = entry.with_file_name(format!(".tmp.1.0.{name}"));
    let stale = entry.with_file_name(format!(".tmp.2.0.{name}"));
    std::fs::write(&fresh, &whole[..whole.len() / 2]).unwrap();
    std::fs::write(&stale, &whole[..whole.len() / 2]).unwrap();
    set_used(&stale, 2 * 3600);
    // Never read as an entry: the entry itself is served.
    std::fs::remove_file(&entry).unwrap();
    assert!(!f.check_call_in_cache(&(500,)));
    assert_eq!(f.call((500,)), vec![7; 500]);
    assert_eq!(mem.stats().corrupt, 0);
    // `reduce_size` removes the leftovers of dead writers (an hour old),
    // not a temporary file a live writer may still be writing.
    assert_eq!(mem.reduce_size().unwrap(), (whole.len() / 2) as u64);
    assert!(!stale.exists() && fresh.exists());
    assert!(f.check_call_in_cache(&(500,)));
}

fn halves(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 / 2.0).collect()
}

fn empty(_: u8) -> Vec<f64> {
    Vec::new()
}

#[test]
fn float_vectors_of_every_size_read_back_equal() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(halves);
    for n in [0, 1, 127, 128, 300_000] {
        let computed = f.call((n,));
        assert!(f.call((n,)) == computed, "{n} f32s");
        assert!(*f.call_mapped((n,)) == computed[..], "{n} f32s mapped");
    }
    assert!(mem.cache(empty).call((0,)).is_empty());
    assert!(mem.cache(empty).call((0,)).is_empty());
    assert_eq!(mem.stats().hits, 11);
    assert_eq!(mem.stats().corrupt, 0);
}

fn shared_ramp(n: usize) -> crew::shm::Array<f64> {
    RAMP_ARRAYS.fetch_add(1, Ordering::SeqCst);
    let values: Vec<f64> = (0..n).map(|i| i as f64 * 0.25).collect();
    crew::shm::Array::from_slice(&values).unwrap()
}

static RAMP_ARRAYS: AtomicUsize = AtomicUsize::new(0);

fn array_sum(a: crew::shm::Array<f64>) -> f64 {
    a.to_vec().iter().sum()
}

#[test]
fn shared_arrays_store_their_values_and_come_back_as_new_arrays() {
    let dir = folder();
    let mem = Memory::new(dir.path()).unwrap();
    let f = mem.cache(shared_ramp);
    let n = 1 << 18; // 2 MB: read through a map
    let first = f.call_array((n,)).unwrap();
    let again = f.call_array((n,)).unwrap();
    assert_eq!(RAMP_ARRAYS.load(Ordering::SeqCst), 1);
    assert!(again.to_vec() == first.to_vec());
    // A new array, not the first one's memory: writing one leaves the other.
    again.set(0, -1.0);
    assert_eq!(first.get(0), Some(0.0));
    // It crosses to a worker process like any Array (while this process
    // holds it: a handle is opened from a live holder).
    let pool = Pool::processes(1).unwrap();
    let want: f64 = (0..n).map(|i| i as f64 * 0.25).sum::<f64>() - 1.0;
    assert_eq!(pool.apply(array_sum, (again.clone(),)).unwrap(), want);
    drop(again);
    // `call` does not store a handle to this run's memory.
    let plain = mem.cache(shared_ramp);
    plain.call((10,));
    plain.call((10,));
    assert_eq!(RAMP_ARRAYS.load(Ordering::SeqCst), 3);
    assert!(!plain.check_call_in_cache(&(10,)));
    assert_eq!(entries(dir.path()).len(), 1);
}

#[cfg(target_os = "linux")]
mod unwritable {
    //! A folder that cannot be written: read-only (tested as another user
    //! when the tests run as root, who may write anywhere) and full (a file
    //! size limit makes writes fail as a full disk does). Both run in a
    //! worker process, whose user and limits the test may change.

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn read_only_tree(dir: &Path) {
        for p in files(dir) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        let mut dirs = vec![dir.to_path_buf()];
        let mut i = 0;
        while i < dirs.len() {
            for e in std::fs::read_dir(&dirs[i]).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                }
            }
            i += 1;
        }
        for d in dirs {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
    }

    /// In a worker: drop root (if root), then a hit and a miss.
    fn in_read_only(dir: String) -> (u64, u64, u64, u64, bool) {
        // SAFETY: plain system calls on this process's credentials.
        unsafe {
            if libc::geteuid() == 0 {
                assert_eq!(libc::setgid(65534), 0, "setgid");
                assert_eq!(libc::setuid(65534), 0, "setuid");
            }
        }
        let probe = Path::new(&dir).join("probe");
        let can_write = std::fs::write(&probe, "x").is_ok();
        let mem = Memory::new(&dir).unwrap();
        let f = mem.cache(super::halve);
        let hit = f.call((100,));
        let miss = f.call((300,));
        let again = f.call((300,));
        let s = mem.stats();
        assert_eq!((hit, miss, again), (50, 150, 150));
        (s.hits, s.misses, s.write_errors, s.corrupt, can_write)
    }

    #[test]
    fn a_read_only_folder_still_serves_hits_and_computes_misses() {
        let dir = folder();
        let mem = Memory::new(dir.path()).unwrap();
        mem.call(super::halve, (100,));
        read_only_tree(dir.path());
        let pool = Pool::processes(1).unwrap();
        let got = pool
            .apply(in_read_only, (dir.path().to_str().unwrap().to_owned(),))
            .unwrap();
        let (hits, misses, write_errors, corrupt, can_write) = got;
        assert!(!can_write, "the folder is read-only for the worker");
        assert_eq!((hits, misses, write_errors, corrupt), (1, 2, 2, 0));
        drop(pool);
        // Writable again, for the temporary folder's removal.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(dir.path())
            .status();
    }

    /// In a worker: writes past 64 KiB fail with `EFBIG`, as on a full disk.
    fn in_full(dir: String) -> (usize, u64, u64) {
        // SAFETY: plain system calls on this process's signal disposition
        // and limits.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let mem = Memory::new(&dir).unwrap();
        let f = mem.cache(super::block);
        let big = f.call((1 << 20,)).len();
        let small = f.call((100,)).len();
        assert_eq!(small, 100);
        let s = mem.stats();
        (big, s.write_errors, s.misses)
    }

    #[test]
    fn a_full_folder_still_computes() {
        let dir = folder();
        let pool = Pool::processes(1).unwrap();
        let (big, write_errors, misses) = pool
            .apply(in_full, (dir.path().to_str().unwrap().to_owned(),))
            .unwrap();
        assert_eq!((big, write_errors, misses), (1 << 20, 1, 2));
        drop(pool);
        // The small one was stored; the big one left no partial file.
        let found = files(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            Memory::new(dir.path())
                .unwrap()
                .cache(block)
                .check_call_in_cache(&(100,))
        );
    }
}

#[test]
fn a_file_as_location_is_refused() {
    let dir = folder();
    let file = dir.path().join("f");
    std::fs::write(&file, "").unwrap();
    assert!(Memory::new(&file).unwrap_err().is_invalid_input());
    assert!(Memory::new(file.join("below")).unwrap_err().is_io());
}
