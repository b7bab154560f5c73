//! The README's *Scale out* program: the same binary is a worker node or the
//! driver, depending on its environment.
//!
//! ```sh
//! redis-server --appendonly yes --appendfsync always                 # a Redis
//! CREW_WORKER=redis://127.0.0.1:6379 cargo run --example scale_out  # a node (any number)
//! CREW_CLUSTER=redis://127.0.0.1:6379 cargo run --example scale_out # the driver
//! ```
fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    crew::init(); // with CREW_WORKER set, this program is a node and never gets here
    let pool = crew::Pool::cluster_from_env()?; // or Pool::cluster("redis://10.0.0.1:6379")
    assert_eq!(pool.map(square, 0..4)?, [0, 1, 4, 9]);
    println!("squares on the cluster: {:?}", pool.map(square, 0..4)?);
    Ok(())
}
