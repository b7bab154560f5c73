#!/usr/bin/env bash
# Every test of the workspace: unit tests, the conformance suite, the fault
# tests, every example, the CLI, and the doctests; then the tools: the loom
# models, the tests under AddressSanitizer, and a chaos soak. This is the
# README's test command, and CI runs it (.ci/run). Needs cargo (and rustup,
# which installs nightly for ASan if it is missing); no service.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The stable runs of the fuzz targets (`fuzz_*_stable`): seconds each.
export CREW_FUZZ_SECONDS="${CREW_FUZZ_SECONDS:-15}"

step() {
    local name=$1 start=$SECONDS
    shift
    echo "ci: $name"
    "$@"
    echo "ci: $name took $((SECONDS - start)) s"
}

step "tests" cargo test --workspace --all-targets
step "doctests" cargo test --workspace --doc
# The debug binary the tests just built: slower than release, with the
# debug assertions on, which a soak wants.
step "soak" target/debug/crew soak --seconds "${CREW_SOAK_SECONDS:-40}"
step "loom" bash ci/loom.sh
step "asan" bash ci/asan.sh
