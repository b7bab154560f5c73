//! A fixed workload for counting what large payloads cost on the process
//! path, with tools whose counts a busy machine does not change:
//! ten `apply` echoes of a 100 MB `Vec<u8>`, then ten of a 10 MB `ByteBuf`,
//! on a pool of two workers (process start included).
//!
//! ```text
//! cargo build --release -p crew-cli --example echo_counts
//! perf stat -e page-faults,minor-faults,major-faults,context-switches \
//!     target/release/examples/echo_counts
//! strace -c -f -T target/release/examples/echo_counts
//! ```
//!
//! `echo_counts vec` or `echo_counts bytebuf` runs one half alone;
//! `echo_counts all 1500` waits 1.5 s before each call, as `crew bench
//! transfer` does between its rounds of one call (so a worker sits idle
//! between calls).
use crew::Pool;
use serde_bytes::ByteBuf;

fn echo_vec(v: Vec<u8>) -> Vec<u8> {
    v
}

fn echo_bytebuf(b: ByteBuf) -> ByteBuf {
    b
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_default();
    let which = if which == "all" { String::new() } else { which };
    let gap: u64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let pause = || std::thread::sleep(std::time::Duration::from_millis(gap));
    let pool = Pool::processes(2)?;
    if which.is_empty() || which == "vec" {
        let mut v = vec![7u8; 100_000_000];
        for _ in 0..10 {
            pause();
            v = pool.apply(echo_vec, (v,))?;
        }
        assert_eq!((v.len(), v[99_999_999]), (100_000_000, 7));
    }
    if which.is_empty() || which == "bytebuf" {
        let mut b = ByteBuf::from(vec![7u8; 10_000_000]);
        for _ in 0..10 {
            pause();
            b = pool.apply(echo_bytebuf, (b,))?;
        }
        assert_eq!((b.len(), b[9_999_999]), (10_000_000, 7));
    }
    println!("20 echoes done");
    Ok(())
}
