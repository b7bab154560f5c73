#!/usr/bin/env bash
# Every test of the workspace: unit tests, the conformance suite, the fault
# tests, every example, the CLI, and the doctests. This is the README's test
# command, and CI runs it (.ci/run). Needs cargo (and rustup, with which
# ci/msrv.sh and ci/other-systems.sh fetch the minimum Rust version and the
# macOS target's std), redis-server (Redis 7 or newer; the cluster tests
# start their own on a private port) and openssl (certificates for the TLS
# test): installed here when missing if we are root with apt-get, else we
# stop and say how.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ci/test.sh: installing$missing for the cluster tests" >&2
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "ci/test.sh: the cluster tests need$missing on PATH (Redis 7 or newer;" >&2
        echo "  openssl makes the TLS test's certificates): install them, e.g." >&2
        echo "  'sudo apt-get install$missing' (Debian/Ubuntu), then run this again" >&2
        exit 1
    fi
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test --workspace --all-targets
cargo test --workspace --doc
# The minimum Rust version the README and Cargo.toml state still builds, and
# another system is refused with the README's message.
bash ci/msrv.sh
bash ci/other-systems.sh
