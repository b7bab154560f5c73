//! `crew bench shm`: shared-state throughput across processes, beside
//! Python's `multiprocessing` measured the same way in the same run
//! (`crates/crew-shm/bench/shm_anchor.py`; see that folder's README):
//! `queue.items_per_s` (one producer process puts 200,000 small items, one
//! consumer process gets them) and `lock.increments_per_s` (4 processes ×
//! 50,000 locked increments of one shared value). The clock runs from the
//! start signal until the last process has ended.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crew::Process;
use crew::Queue;
use crew::shm::Value;
use crew::sync::Event;

use super::harness::{IdleGate, summarize};
use super::report::{self, Record};

const ITEMS: u64 = 200_000;
const INCREMENTS: u32 = 50_000;
const INCREMENTERS: usize = 4;

/// Options of `crew bench shm`.
#[derive(Debug, Clone)]
pub(crate) struct ShmOptions {
    pub(crate) rounds: usize,
    pub(crate) gate: IdleGate,
    pub(crate) target: PathBuf,
    /// Also run the Python anchor script.
    pub(crate) python: bool,
}

fn produce(q: Queue<u64>, go: Event, n: u64) {
    go.wait();
    for i in 0..n {
        q.put(i).expect("the queue is open");
    }
    q.close();
}

fn consume(q: Queue<u64>, go: Event) -> (u64, u64) {
    go.wait();
    let (mut count, mut sum) = (0u64, 0u64);
    while let Ok(x) = q.get() {
        count += 1;
        sum += x;
    }
    (count, sum)
}

fn increment(v: Value<i64>, go: Event, n: u32) {
    go.wait();
    for _ in 0..n {
        v.update(|x| *x += 1);
    }
}

fn queue_round() -> anyhow::Result<f64> {
    let q = Queue::<u64>::new()?;
    let go = Event::new()?;
    let mut producer = Process::new(produce, (q.clone(), go.clone(), ITEMS));
    let mut consumer = Process::new(consume, (q.clone(), go.clone()));
    producer.start()?;
    consumer.start()?;
    std::thread::sleep(Duration::from_millis(50)); // both are waiting on `go`
    let t = Instant::now();
    go.set();
    producer.result()?;
    let (count, sum) = consumer.result()?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        count == ITEMS && sum == ITEMS * (ITEMS - 1) / 2,
        "the consumer saw {count} items"
    );
    Ok(ITEMS as f64 / secs)
}

fn lock_round() -> anyhow::Result<f64> {
    let v = Value::new(0i64)?;
    let go = Event::new()?;
    let mut procs: Vec<_> = (0..INCREMENTERS)
        .map(|_| Process::new(increment, (v.clone(), go.clone(), INCREMENTS)))
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    go.set();
    for p in procs {
        p.result()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let total = (INCREMENTERS as u32 * INCREMENTS) as i64;
    anyhow::ensure!(v.get() == total, "the counter is {}, not {total}", v.get());
    Ok(total as f64 / secs)
}

/// Runs the suite, prints the table and writes `shm.json`.
pub(crate) fn run(o: &ShmOptions) -> anyhow::Result<Vec<Record>> {
    queue_round()?;
    lock_round()?;
    let (mut queue, mut lock) = (Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        o.gate.wait();
        queue.push(queue_round()?);
        lock.push(lock_round()?);
    }
    let mut records = vec![
        Record::new(
            "shm",
            "rust.queue.items_per_s",
            "items/s",
            summarize(&queue),
        ),
        Record::new(
            "shm",
            "rust.lock.increments_per_s",
            "increments/s",
            summarize(&lock),
        ),
    ];
    if o.python {
        match python_rows(&o.target) {
            Ok(rows) => records.extend(rows),
            Err(e) => eprintln!("python rows skipped: {e}"),
        }
    }
    let notes = vec![
        (
            "rust.queue.items_per_s".to_string(),
            format!("crew::Queue<u64>, 1 producer → 1 consumer Process, {ITEMS} items"),
        ),
        (
            "rust.lock.increments_per_s".to_string(),
            format!("crew::shm::Value<i64>::update, {INCREMENTERS} Processes × {INCREMENTS}"),
        ),
        (
            "python.queue.items_per_s".to_string(),
            "multiprocessing.Queue, same shape (shm_anchor.py)".to_string(),
        ),
        (
            "python.lock.increments_per_s".to_string(),
            "multiprocessing.Value('i') with get_lock(), same shape".to_string(),
        ),
    ];
    let md = report::markdown(
        &format!(
            "shared state across processes, median of {} rounds",
            o.rounds
        ),
        &records,
        &notes,
    );
    println!("\n{md}");
    let get = |c: &str| records.iter().find(|r| r.case == c).map(|r| r.median);
    for what in ["queue.items_per_s", "lock.increments_per_s"] {
        if let (Some(r), Some(p)) = (get(&format!("rust.{what}")), get(&format!("python.{what}"))) {
            println!(
                "- [{}] {what}: {:.1}x Python (target >= 10x)",
                if r >= 10.0 * p { "met" } else { "MISSED" },
                r / p
            );
        }
    }
    let dir = report::bench_dir(&o.target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("shm.md"), &md).ok();
    let path = report::write_json(&dir, "shm", &records)?;
    eprintln!("wrote {}", path.display());
    Ok(records)
}

/// Runs the Python anchor and reads its JSON lines.
fn python_rows(target: &std::path::Path) -> anyhow::Result<Vec<Record>> {
    let script = super::embedded_script(
        target,
        "shm_anchor.py",
        include_str!("../../../crew-shm/bench/shm_anchor.py"),
    )?;
    let out = std::process::Command::new("python3")
        .arg(&script)
        .output()?;
    anyhow::ensure!(out.status.success(), "python3 {} failed", script.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Record> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
