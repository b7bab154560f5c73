//! Tasks called by name: `#[crew::task]` registers a function under a name
//! and a fingerprint of its signature, so that *another program* that
//! registers the same name with the same argument and result types can
//! call it on this one's worker nodes (Celery's `send_task`).
//!
//! `cargo run --example named_tasks` calls the tasks by name on local
//! worker processes. Started as a cluster node, the same binary serves them
//! to drivers of any build:
//!
//! ```text
//! CREW_WORKER=redis://127.0.0.1:6379 target/debug/examples/named_tasks
//! ```
//!
//! and a driver built from other code calls
//! `Executor::cluster(url)?.submit_named::<_, u64>("examples::named::weigh", (items, 3))`.
use crew::Executor;

/// The sum of the items, times `factor`.
#[crew::task(name = "examples::named::weigh")]
fn weigh(items: Vec<u32>, factor: u32) -> u64 {
    items.iter().map(|&x| u64::from(x)).sum::<u64>() * u64::from(factor)
}

/// Which program ran the task: its executable's file name.
#[crew::task(name = "examples::named::program")]
fn program() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// `x` scaled by ten (callers with another signature for this name wait
/// for a node that has theirs; they never run this one).
#[crew::task(name = "examples::named::scale")]
fn scale(x: u64) -> u64 {
    x * 10
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ex = Executor::processes(2)?;
    let weight = ex
        .submit_named::<_, u64>("examples::named::weigh", (vec![1u32, 2, 3, 4], 3u32))
        .result()?;
    println!("weigh([1, 2, 3, 4], 3) = {weight}");
    let scaled = ex
        .submit_named::<_, u64>("examples::named::scale", (7u64,))
        .result()?;
    println!("scale(7) = {scaled}");
    let ran_in = ex
        .submit_named::<_, String>("examples::named::program", ())
        .result()?;
    println!("ran in {ran_in}");
    // Other types than the task was registered with fail at once.
    let wrong = ex.submit_named::<_, u32>("examples::named::scale", (7u32,));
    println!(
        "called with other types: {}",
        wrong.result().expect_err("a wrong signature is refused")
    );
    assert_eq!(weight, 30);
    assert_eq!(scaled, 70);
    Ok(())
}
