#!/usr/bin/env bash
# Every test of the workspace: unit tests, the conformance suite, the fault
# tests, every example, the CLI, and the doctests. This is the README's test
# command, and CI runs it (.ci/run). Needs only cargo (and rustup, with
# which ci/msrv.sh and ci/other-systems.sh fetch the minimum Rust version and
# the macOS target's std); no service, no root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test --workspace --all-targets
cargo test --workspace --doc
# The minimum Rust version the README and Cargo.toml state still builds, and
# another system is refused with the README's message.
bash ci/msrv.sh
bash ci/other-systems.sh
