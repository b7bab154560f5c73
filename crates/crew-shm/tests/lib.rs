//! Behaviour of crew-shm across real processes. Each test that needs other
//! processes re-executes this binary with `--exact <test> --nocapture` and a
//! role in the environment (see `common.rs`), the way
//! rayon-core/tests/stack_overflow_crash.rs does.

mod common;
