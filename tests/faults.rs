//! Fault tests of the process back-end: what happens when a worker dies
//! (`kill -9`, segfault, abort, stack overflow, memory limit, exit), hangs
//! (task timeout, cancel), speaks garbage on its socket, or when the parent
//! dies or drops its pool. Each failure must stay with its own task, with a
//! typed error; nothing may hang or leave a process behind.
//!
//! Every test asserts behaviour, never timing, and none can hang: each wait
//! has a deadline (a `_timeout` call, or [`support::within`]), and a child
//! process started by a test is killed if the test fails.
//!
//! Run with `cargo test -p crew --test faults`.

// A crate root at `tests/faults.rs` looks for its modules beside it, in
// `tests/`, where `cargo` would take each for a test binary of its own.
#[path = "faults/support.rs"]
mod support;

#[path = "faults/crashes.rs"]
mod crashes;
#[path = "faults/forkserver.rs"]
mod forkserver;
#[path = "faults/kill.rs"]
mod kill;
#[path = "faults/lifecycle.rs"]
mod lifecycle;
#[path = "faults/protocol.rs"]
mod protocol;
#[path = "faults/timeline.rs"]
mod timeline;
