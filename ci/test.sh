#!/usr/bin/env bash
# Every test of the workspace: unit tests, the conformance suite, the fault
# tests, every example, the CLI, and the doctests. This is the README's test
# command, and CI runs it (.ci/run). Needs only cargo; no service, no root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test --workspace --all-targets
cargo test --workspace --doc
