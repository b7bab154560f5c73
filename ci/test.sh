#!/usr/bin/env bash
# Every test of the workspace: unit tests, the conformance suite, the fault
# tests, every example, the CLI, and the doctests; then the tools: the loom
# models, a chaos soak, and the tests under AddressSanitizer. This is the
# README's test command, and CI runs it (.ci/run). Needs cargo (and rustup,
# with which ci/msrv.sh and ci/other-systems.sh fetch the minimum Rust
# version and the macOS target's std, and ci/asan.sh installs nightly if it
# is missing), redis-server (Redis 7 or newer; the cluster tests start their
# own on a private port) and openssl (certificates for the TLS test):
# installed here when missing if we are root with apt-get, else we stop and
# say how.
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
        echo "  'sudo apt-get install$missing' (Debian/Ubuntu) or 'brew install redis'," >&2
        echo "  then run this again" >&2
        exit 1
    fi
fi
# The Celery tests (tests/celery.rs) run real Celery workers and clients:
# Python 3 with `celery[redis,msgpack]` (the redis extra matters: plain
# `celery redis` lacks `packaging`; msgpack is the second serializer the
# tests send).
py="${CREW_PYTHON:-python3}"
if ! "$py" -c 'import celery, redis, msgpack' >/dev/null 2>&1; then
    if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
        echo "ci/test.sh: installing celery[redis,msgpack] for the Celery tests" >&2
        # A system Python (PEP 668) refuses plain installs as root.
        "$py" -m pip install -q "celery[redis,msgpack]" ||
            "$py" -m pip install -q --break-system-packages "celery[redis,msgpack]" || {
            echo "ci/test.sh: 'pip install \"celery[redis,msgpack]\"' failed; install it by hand" >&2
            exit 1
        }
    else
        echo "ci/test.sh: the Celery tests need python3 with pip (to install celery[redis,msgpack]);" >&2
        echo "  install python3 and python3-pip, or set CREW_PYTHON to a python with celery[redis,msgpack]" >&2
        exit 1
    fi
fi
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
# The minimum Rust version the README and Cargo.toml state still builds, and
# another system is refused with the README's message.
step "msrv" bash ci/msrv.sh
step "other systems" bash ci/other-systems.sh
# The debug binary the tests just built: slower than release, with the
# debug assertions on, which a soak wants.
step "soak" "${CARGO_TARGET_DIR:-target}/debug/crew" soak --seconds "${CREW_SOAK_SECONDS:-40}"
step "loom" bash ci/loom.sh
step "asan" bash ci/asan.sh
