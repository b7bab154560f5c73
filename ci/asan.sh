#!/usr/bin/env bash
# The unit and integration tests of crew-core, crew-process and crew-shm
# (where the unsafe code lives) under AddressSanitizer, on nightly.
#
# miri would check more (aliasing, uninitialised reads) but is not
# installable on these machines (no rust-src/miri component for nightly
# here), and it cannot run the code that matters most anyway (fork/exec,
# memfd, futex, shared mappings). ASan instruments our code (std is not
# rebuilt: that needs rust-src too) and catches out-of-bounds accesses, use
# after free and double frees in it, in the parent and in every worker
# process (workers are the test binary re-executed, instrumented alike).
#
# `--cfg crew_asan` gates the few tests that cannot run under ASan (each
# says why); `--target` keeps the sanitizer off build scripts and proc
# macros. Leak detection is off: the tests' worker processes are killed or
# `_exit` by design, and the pools leak their supervisor threads on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
export RUSTFLAGS="-Zsanitizer=address --cfg crew_asan ${RUSTFLAGS:-}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target="$(rustc +nightly -vV | sed -n 's/^host: //p')"
cargo +nightly test --target "$target" --target-dir target/asan \
    -p crew-core -p crew-process -p crew-shm --lib --tests
