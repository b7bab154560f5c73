//! crew's behaviour tests, in one integration binary so that builds stay
//! fast (STYLE.md, "Put each test at its distance"):
//!
//! - `conformance`: every `Pool`/`Executor` behaviour, written once and
//!   expanded per back-end by `conformance_suite!`;
//! - `threads_only`: what only the thread back-end does (nested maps,
//!   borrowing, capturing closures, a running task that cannot be cancelled);
//! - `parallel`: joblib's `Parallel` and `delayed`;
//! - `loops`: `prange`, `par_for_each_mut`, `cpu_count`;
//! - `memory`: `Memory`, the on-disk result cache;
//! - `platform`: the README's supported systems match what the build enforces.
//!
//! Run with `cargo test -p crew --test lib`.

mod common;
mod conformance;
mod loops;
mod memory;
mod parallel;
mod platform;
mod threads_only;
