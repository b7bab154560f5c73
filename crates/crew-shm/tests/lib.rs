//! Behaviour of crew-shm across real processes. Each test that needs other
//! processes re-executes this binary with `--exact <test> --nocapture` and a
//! role in the environment (see `common.rs`), the way
//! rayon-core/tests/stack_overflow_crash.rs does. Nothing here asserts on
//! timing; every wait is bounded, and children are killed if a test fails.

mod array;
mod common;
mod frozen;
mod lock;
mod pipe;
mod queue;
mod region;
mod sync;
mod timeouts;
mod value;
