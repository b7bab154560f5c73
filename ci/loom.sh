#!/usr/bin/env bash
# Model-checks crew-core's concurrent core with loom: the thread back-end's
# sleep/wake protocol, the result slot (complete, cancel, callbacks,
# wakers) and the map's gathering (`Gather`, `WaitGuard`). Under
# `--cfg loom`, `crew_core::sync` swaps std's atomics, mutexes, condition
# variables and threads for loom's, and loom runs each model under every
# interleaving with at most LOOM_MAX_PREEMPTIONS preemptions.
#
# Its own target directory: the cfg changes every crate's build.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test -p crew-core --release --lib --target-dir target/loom loom -- --test-threads=2
