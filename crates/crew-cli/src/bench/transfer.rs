//! `crew bench transfer`: moving data in and out of worker processes, in
//! MB/s of payload (MB = 10^6 bytes).
//!
//! A task that takes and returns 10 MB: as a serde value
//! (`processes.roundtrip_10mb`, bytes through a shared-memory region), and as
//! a shared-memory `Array` that the task reads and writes in place
//! (`processes.roundtrip_10mb_shm`: only a handle crosses); beside a plain
//! copy of 10 MB (`memcpy_10mb`).
//!
//! Then echo tasks (the task returns its argument, no compute) for payloads
//! of 1 KB … 100 MB, all peers side by side, each case named with its size
//! (`_1kb` … `_100mb`): `processes.echo_vec_<size>` (`apply` of a
//! `Vec<u8>`), `processes.echo_bytebuf_<size>` (`apply` of a `ByteBuf`),
//! `processes.echo_bytebuf_<size>_pipelined` (`apply_async`, 4 in flight),
//! `processes.echo_array_<size>` (`apply` of a `shm::Array<u8>`: only its
//! handle crosses), `procspawn.echo_bytebuf_<size>_pipelined` (procspawn's
//! pool, 4 in flight), and with `--python` `python.pool_apply_<size>` and
//! `python.ppe_submit_<size>` (`python/transfer_anchor.py`). Every rate
//! counts the payload in and out: `2 × size × calls / seconds`. The sweep is
//! drawn as `transfer.png` (MB/s against payload size) beside
//! `transfer.md` and `transfer.json`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::PathBuf;

use crew::shm::Array;
use crew::{Pool, Processes};
use serde_bytes::ByteBuf;

use super::harness::{Case, IdleGate, interleave, summarize};
use super::report::{self, Record};
use crate::chart::{self, Line};

const SIZE: usize = 10_000_000;

/// Payload sizes of the echo sweep by default: 1 KB to 100 MB.
pub(crate) const ECHO_SIZES: &[usize] =
    &[1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// Calls in flight in the pipelined cases.
const DEPTH: usize = 4;

/// The largest payload of the pipelined cases: four 100 MB buffers in
/// flight, each held by the caller, the channel and the worker, would not
/// fit next to the rest.
const PIPELINED_MAX: usize = 10_000_000;

/// A size as the case names spell it: `1kb`, `10mb`, `100mb`.
pub(crate) fn size_label(bytes: usize) -> String {
    if bytes.is_multiple_of(1_000_000) {
        format!("{}mb", bytes / 1_000_000)
    } else if bytes.is_multiple_of(1_000) {
        format!("{}kb", bytes / 1_000)
    } else {
        format!("{bytes}b")
    }
}

/// Parses a size: `1kb`, `10mb`, `100MB`, or a number of bytes.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, scale) = if let Some(d) = t.strip_suffix("mb") {
        (d, 1_000_000)
    } else if let Some(d) = t.strip_suffix("kb") {
        (d, 1_000)
    } else {
        (t.strip_suffix('b').unwrap_or(&t), 1)
    };
    match digits.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n * scale),
        _ => Err(format!(
            "{text:?} is not a payload size (1kb, 10mb, or bytes)"
        )),
    }
}

/// Calls per round: 1,000 for tiny payloads down to 1 from 10 MB, so that
/// a round is long enough to time.
fn calls(size: usize) -> usize {
    (10_000_000 / size).clamp(1, 1000)
}

/// Options of `crew bench transfer`.
#[derive(Debug, Clone)]
pub(crate) struct TransferOptions {
    pub(crate) rounds: usize,
    pub(crate) workers: usize,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
    /// Payload sizes of the echo sweep (bytes); empty to skip it.
    pub(crate) echo_sizes: Vec<usize>,
    /// Interleaved rounds of each size of the echo sweep.
    pub(crate) echo_rounds: usize,
    /// Adds the Python rows of the echo sweep.
    pub(crate) python: bool,
}

/// Adds one to every byte, in place: the task reads and writes all 10 MB.
fn bump(mut b: ByteBuf) -> ByteBuf {
    for x in b.iter_mut() {
        *x = x.wrapping_add(1);
    }
    b
}

fn echo_vec(v: Vec<u8>) -> Vec<u8> {
    v
}

fn echo_bytebuf(b: ByteBuf) -> ByteBuf {
    b
}

fn echo_array(a: Array<u8>) -> Array<u8> {
    a
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
            "apply(f, (ByteBuf 10 MB,)) returning it: through a shared-memory region both ways".to_string(),
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
    let mut records = records;
    let mut md = md;
    let dir = report::bench_dir(&o.target);
    let mut png = None;
    if !o.echo_sizes.is_empty() {
        let (echo, notes) = echo_sweep(o, pool)?;
        let echo_md = report::markdown(
            &format!(
                "echo through {} worker processes, MB/s of payload in and out, median of {} interleaved rounds",
                o.workers, o.echo_rounds
            ),
            &echo,
            &notes,
        );
        println!("\n{echo_md}");
        let path = dir.join("transfer.png");
        std::fs::create_dir_all(&dir)?;
        chart::rates_png(
            &path,
            &format!(
                "echo through {} worker processes: MB/s of payload (in + out)",
                o.workers
            ),
            &lines(&echo, &o.echo_sizes),
        )?;
        png = Some(path);
        md = format!("{md}\n{echo_md}");
        records.extend(echo);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("transfer.md"), &md).ok();
    let path = report::write_json(&dir, "transfer", &records)?;
    match png {
        Some(png) => eprintln!("wrote {} and {}", path.display(), png.display()),
        None => eprintln!("wrote {}", path.display()),
    }
    Ok(records)
}

/// The series of the chart: one per kind of echo, in the order of the
/// table, each point a payload size and its median rate.
fn lines(records: &[Record], sizes: &[usize]) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for r in records {
        let Some((kind, size)) = sizes.iter().find_map(|&s| {
            let label = size_label(s);
            let kind = r
                .case
                .strip_suffix(&format!("_{label}_pipelined"))
                .map(|k| format!("{k}_pipelined"))
                .or_else(|| r.case.strip_suffix(&format!("_{label}")).map(String::from))?;
            Some((kind, s))
        }) else {
            continue;
        };
        let Some(name) = series_name(&kind) else {
            continue;
        };
        match out.iter_mut().find(|l| l.name == name) {
            Some(l) => l.points.push((size as f64, r.median)),
            None => out.push(Line {
                name,
                points: vec![(size as f64, r.median)],
            }),
        }
    }
    out
}

/// A case's kind (its name without the size) as the chart's legend says
/// it; `None` for a case that is no echo.
fn series_name(kind: &str) -> Option<String> {
    let name = match kind {
        "processes.echo_vec" => "crew apply, Vec<u8>",
        "processes.echo_bytebuf" => "crew apply, ByteBuf",
        "processes.echo_bytebuf_pipelined" => "crew apply_async, ByteBuf, 4 in flight",
        "processes.echo_array" => "crew apply, shm::Array<u8> (handle only)",
        "procspawn.echo_bytebuf_pipelined" => "procspawn, ByteBuf, 4 in flight",
        "python.pool_apply" => "Python Pool.apply, bytes",
        "python.ppe_submit" => "Python ProcessPoolExecutor.submit, bytes",
        _ => return None,
    };
    Some(name.to_owned())
}

/// Notes of a table: `(case, note)`.
type Notes = Vec<(String, String)>;

/// The echo sweep: for each size, every crew and procspawn case
/// interleaved; then the Python rows. Returns the records and their notes.
fn echo_sweep(o: &TransferOptions, pool: &Pool<Processes>) -> anyhow::Result<(Vec<Record>, Notes)> {
    let spool = procspawn::Pool::new(o.workers)?;
    let spool = &spool;
    let mut records = Vec::new();
    let mut notes = Vec::new();
    for &size in &o.echo_sizes {
        let label = size_label(size);
        let n = calls(size);
        let tasks = n.max(2 * DEPTH);
        let mut vec_buf = Some(vec![7u8; size]);
        let mut vec_case = Case::new(format!("processes.echo_vec_{label}"), move || {
            let mut b = vec_buf.take().expect("the buffer is back");
            for _ in 0..n {
                b = pool.apply(echo_vec, (b,)).expect("the echo");
            }
            assert_eq!(b.len(), size);
            let check = f64::from(b[size - 1]);
            vec_buf = Some(b);
            check
        })
        .per(n);
        let mut byte_buf = Some(ByteBuf::from(vec![7u8; size]));
        let mut bytebuf_case = Case::new(format!("processes.echo_bytebuf_{label}"), move || {
            let mut b = byte_buf.take().expect("the buffer is back");
            for _ in 0..n {
                b = pool.apply(echo_bytebuf, (b,)).expect("the echo");
            }
            assert_eq!(b.len(), size);
            let check = f64::from(b[size - 1]);
            byte_buf = Some(b);
            check
        })
        .per(n);
        let array = Array::<u8>::new(size)?;
        let mut array_case = Case::new(format!("processes.echo_array_{label}"), move || {
            let mut len = 0;
            for _ in 0..n {
                len = pool
                    .apply(echo_array, (array.clone(),))
                    .expect("the echo")
                    .len();
            }
            assert_eq!(len, size);
            black_box(len) as f64
        })
        .per(n);
        let pipelined = size <= PIPELINED_MAX;
        let mut crew_bufs: Vec<ByteBuf> = if pipelined {
            (0..DEPTH).map(|_| ByteBuf::from(vec![7u8; size])).collect()
        } else {
            Vec::new()
        };
        let mut crew_pipelined = Case::new(
            format!("processes.echo_bytebuf_{label}_pipelined"),
            move || crew_pipelined(pool, &mut crew_bufs, tasks, size),
        )
        .per(tasks);
        let mut spawn_bufs: Vec<ByteBuf> = if pipelined {
            (0..DEPTH).map(|_| ByteBuf::from(vec![7u8; size])).collect()
        } else {
            Vec::new()
        };
        let mut procspawn_pipelined = Case::new(
            format!("procspawn.echo_bytebuf_{label}_pipelined"),
            move || procspawn_pipelined(spool, &mut spawn_bufs, tasks, size),
        )
        .per(tasks);
        let mut cases = vec![&mut vec_case, &mut bytebuf_case];
        if pipelined {
            cases.push(&mut crew_pipelined);
        }
        cases.push(&mut array_case);
        if pipelined {
            cases.push(&mut procspawn_pipelined);
        }
        let measured = interleave(
            &mut cases,
            1,
            o.echo_rounds,
            &o.gate,
            &format!("echo {label}"),
        );
        for m in &measured {
            // Per round: seconds per call; the payload crosses twice.
            let rates: Vec<f64> = m
                .scaled(1.0)
                .iter()
                .map(|t| 2.0 * size as f64 / t / 1e6)
                .collect();
            records.push(Record::new("transfer", &m.name, "MB/s", summarize(&rates)));
        }
        let w = o.workers;
        notes.extend([
            (
                format!("processes.echo_vec_{label}"),
                format!("Pool::processes({w}).apply(echo, (Vec<u8>,)) × {n}, one at a time"),
            ),
            (
                format!("processes.echo_bytebuf_{label}"),
                format!("Pool::processes({w}).apply(echo, (ByteBuf,)) × {n}, one at a time"),
            ),
            (
                format!("processes.echo_bytebuf_{label}_pipelined"),
                format!("apply_async(echo, (ByteBuf,)) × {tasks}, {DEPTH} in flight"),
            ),
            (
                format!("processes.echo_array_{label}"),
                format!("apply(echo, (shm::Array<u8>,)) × {n}: only the handle crosses"),
            ),
            (
                format!("procspawn.echo_bytebuf_{label}_pipelined"),
                format!("procspawn::Pool({w}).spawn(ByteBuf, echo) × {tasks}, {DEPTH} in flight"),
            ),
        ]);
    }
    if o.python {
        match python_rows(o) {
            Ok(rows) => {
                for r in rows {
                    let (kind, how) = if r.case.starts_with("python.pool_apply") {
                        ("Pool.apply", "multiprocessing.Pool")
                    } else {
                        ("ProcessPoolExecutor.submit", "concurrent.futures")
                    };
                    notes.push((
                        r.case.clone(),
                        format!(
                            "Python {how} ({} workers, fork): {kind}(echo, bytes), one at a time",
                            o.workers
                        ),
                    ));
                    records.push(r);
                }
            }
            Err(skip) => eprintln!("python rows skipped: {skip:#}"),
        }
    }
    Ok((records, notes))
}

/// `tasks` echoes of the buffers in `bufs` through `apply_async`, `DEPTH`
/// in flight: each returned buffer goes out again as the next call, so no
/// byte is copied in the caller; the buffers are back in `bufs` after.
fn crew_pipelined(
    pool: &Pool<Processes>,
    bufs: &mut Vec<ByteBuf>,
    tasks: usize,
    size: usize,
) -> f64 {
    let mut inflight = VecDeque::with_capacity(DEPTH);
    let mut sent = 0;
    for b in bufs.drain(..) {
        inflight.push_back(pool.apply_async(echo_bytebuf, (b,)));
        sent += 1;
    }
    while let Some(call) = inflight.pop_front() {
        let b = call.get().expect("the echo");
        assert_eq!(b.len(), size);
        if sent < tasks {
            inflight.push_back(pool.apply_async(echo_bytebuf, (b,)));
            sent += 1;
        } else {
            bufs.push(b);
        }
    }
    bufs.len() as f64
}

/// The same through procspawn's pool: this thread spawns, a second joins
/// (a spawn can block on a worker that is writing a result nobody reads
/// yet), and the buffers circulate between them, `DEPTH` in all.
fn procspawn_pipelined(
    pool: &procspawn::Pool,
    bufs: &mut Vec<ByteBuf>,
    tasks: usize,
    size: usize,
) -> f64 {
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<ByteBuf>(DEPTH);
    for b in bufs.drain(..) {
        free_tx.send(b).expect("room for every buffer");
    }
    let (handle_tx, handle_rx) = std::sync::mpsc::channel::<procspawn::JoinHandle<ByteBuf>>();
    std::thread::scope(|s| {
        let joiner = s.spawn(move || {
            for h in handle_rx {
                let b = h.join().expect("a procspawn echo");
                assert_eq!(b.len(), size);
                if free_tx.send(b).is_err() {
                    break;
                }
            }
        });
        for _ in 0..tasks {
            let b = free_rx.recv().expect("a buffer comes back");
            let h = pool.spawn(b, echo_bytebuf);
            handle_tx.send(h).expect("the joiner is alive");
        }
        drop(handle_tx);
        joiner.join().expect("the joiner thread");
    });
    bufs.extend(free_rx.try_iter());
    bufs.len() as f64
}

/// Runs `python/transfer_anchor.py` (standard library only) over the same
/// sizes and reads its records.
fn python_rows(o: &TransferOptions) -> anyhow::Result<Vec<Record>> {
    use anyhow::Context as _;
    let script = super::embedded_script(
        &o.target,
        "transfer_anchor.py",
        include_str!("../../python/transfer_anchor.py"),
    )?;
    let sizes: Vec<String> = o.echo_sizes.iter().map(|s| s.to_string()).collect();
    let idle = if o.gate.enabled {
        o.gate.timeout.as_secs_f64()
    } else {
        0.0
    };
    eprintln!("python: {} --sizes {}", script.display(), sizes.join(","));
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--sizes", &sizes.join(",")])
        .args(["--rounds", &o.echo_rounds.to_string()])
        .args(["--workers", &o.workers.to_string()])
        .args(["--idle-timeout", &idle.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running python3 (is it installed?)")?;
    anyhow::ensure!(out.status.success(), "{} failed", script.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).context("a record of the anchor"))
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn sizes_read_and_print_as_the_case_names_spell_them() {
        for (text, bytes, label) in [
            ("1kb", 1_000, "1kb"),
            ("10KB", 10_000, "10kb"),
            ("100mb", 100_000_000, "100mb"),
            ("1500", 1_500, "1500b"),
            ("2000b", 2_000, "2kb"),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
            assert_eq!(size_label(bytes), label, "{text}");
        }
        for bad in ["", "0kb", "mb", "1.5mb", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_kind_of_echo_is_one_line_of_the_chart() {
        let r = |case: &str, median: f64| Record {
            suite: "transfer".into(),
            case: case.into(),
            unit: "MB/s".into(),
            median,
            min: median,
            max: median,
            runs: 1,
        };
        let records = [
            r("processes.echo_vec_1kb", 1.0),
            r("processes.echo_bytebuf_1kb_pipelined", 2.0),
            r("processes.echo_vec_10mb", 3.0),
            r("python.pool_apply_10mb", 4.0),
            r("processes.echo_bytebuf_10mb_pipelined", 5.0),
            r("memcpy_10mb", 6.0),
        ];
        let lines = lines(&records, &[1_000, 10_000_000]);
        let got: Vec<(&str, Vec<(f64, f64)>)> = lines
            .iter()
            .map(|l| (l.name.as_str(), l.points.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("crew apply, Vec<u8>", vec![(1e3, 1.0), (1e7, 3.0)]),
                (
                    "crew apply_async, ByteBuf, 4 in flight",
                    vec![(1e3, 2.0), (1e7, 5.0)]
                ),
                ("Python Pool.apply, bytes", vec![(1e7, 4.0)]),
            ]
        );
    }
}
