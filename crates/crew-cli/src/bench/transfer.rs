//! `crew bench transfer`: a task that takes and returns 10 MB, on worker
//! processes, in MB/s of payload (each byte crosses twice, MB = 10^6 bytes):
//! as a serde value (`processes.roundtrip_10mb`, bytes through a memfd and
//! postcard), and as a shared-memory `Array` that the task reads and writes
//! in place (`processes.roundtrip_10mb_shm`: only a handle crosses); beside
//! a plain copy of 10 MB (`memcpy_10mb`).

use std::hint::black_box;
use std::path::PathBuf;

use crew::Pool;
use crew::shm::Array;
use serde_bytes::ByteBuf;

use super::harness::{Case, IdleGate, interleave, summarize};
use super::report::{self, Record};

const SIZE: usize = 10_000_000;

/// Options of `crew bench transfer`.
#[derive(Debug, Clone)]
pub(crate) struct TransferOptions {
    pub(crate) rounds: usize,
    pub(crate) workers: usize,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
}

/// Adds one to every byte, in place: the task reads and writes all 10 MB.
fn bump(mut b: ByteBuf) -> ByteBuf {
    for x in b.iter_mut() {
        *x = x.wrapping_add(1);
    }
    b
}

/// The same on a shared array: reads and writes every byte where it lies.
fn bump_shared(a: Array<u8>) -> Array<u8> {
    // SAFETY: the parent does not touch the array while this task runs
    // (it waits for the result), and no other task has it.
    let bytes = unsafe { a.as_mut_slice() };
    for x in bytes.iter_mut() {
        *x = x.wrapping_add(1);
    }
    a
}

/// Runs the suite, prints the table and writes `transfer.json`.
pub(crate) fn run(o: &TransferOptions) -> anyhow::Result<Vec<Record>> {
    let pool = Pool::processes(o.workers)?;
    pool.apply(bump, (ByteBuf::from(vec![0u8; 1024]),))?;
    let pool = &pool;
    let shared = Array::<u8>::new(SIZE)?;
    let shared = &shared;
    let mut serde = Case::new("processes.roundtrip_10mb", move || {
        let out = pool
            .apply(bump, (ByteBuf::from(vec![7u8; SIZE]),))
            .expect("the task");
        assert!(out.len() == SIZE && out[SIZE - 1] == 8);
        1.0
    });
    let mut shm = Case::new("processes.roundtrip_10mb_shm", move || {
        let out = pool
            .apply(bump_shared, (shared.clone(),))
            .expect("the task");
        black_box(out.get(SIZE - 1));
        1.0
    });
    let src = vec![7u8; SIZE];
    let mut dst = vec![0u8; SIZE];
    let mut memcpy = Case::new("memcpy_10mb", move || {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
        1.0
    });
    let mut cases = vec![&mut serde, &mut shm, &mut memcpy];
    let measured = interleave(&mut cases, 1, o.rounds, &o.gate, "transfer");
    let records: Vec<Record> = measured
        .iter()
        .map(|m| {
            // Payload MB/s: a round trip moves the bytes twice; a memcpy once.
            let bytes = if m.name == "memcpy_10mb" {
                SIZE
            } else {
                2 * SIZE
            } as f64;
            let rates: Vec<f64> = m.seconds.iter().map(|t| bytes / t / 1e6).collect();
            Record::new("transfer", &m.name, "MB/s", summarize(&rates))
        })
        .collect();
    let notes = vec![
        (
            "processes.roundtrip_10mb".to_string(),
            "apply(f, (ByteBuf 10 MB,)) returning it: postcard through a memfd both ways".to_string(),
        ),
        (
            "processes.roundtrip_10mb_shm".to_string(),
            "apply(f, (Array<u8> 10 MB,)): the handle crosses, the task reads and writes every byte".to_string(),
        ),
        ("memcpy_10mb".to_string(), "copy_from_slice of 10 MB in one process".to_string()),
    ];
    let md = report::markdown(
        &format!(
            "10 MB in and out of a worker process, median of {} interleaved rounds",
            o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    let dir = report::bench_dir(&o.target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("transfer.md"), &md).ok();
    let path = report::write_json(&dir, "transfer", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}
