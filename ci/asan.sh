#!/usr/bin/env bash
# The tests of crew-core, crew-process and crew-shm (where the unsafe code
# lives), and the facade's fault suite (which drives the process back-end
# end to end: crashes, kills, timeouts, garbage on the wire), under
# AddressSanitizer, on nightly. (Not the conformance suite: its timing
# bounds are sized for uninstrumented code, and its cluster part needs
# Redis; ASan adds nothing there that the fault suite does not cover.)
#
# miri would check more (aliasing, uninitialised reads) but is not
# installable on these machines (no rust-src or miri component for nightly
# here), and it could not run the code that matters most anyway (fork/exec,
# memfd, futex, shared mappings). ASan instruments our code (std is not
# rebuilt: that needs rust-src too) and catches out-of-bounds accesses, use
# after free and double frees in it, in the parent and in every worker
# process (workers are the test binary re-executed, instrumented alike).
#
# `--cfg crew_asan` skips the two tests that cannot run under ASan (they set
# RLIMIT_AS, and ASan reserves terabytes of address space); `--target`
# keeps the sanitizer off build scripts and proc macros. ASan leaves SIGSEGV
# and SIGBUS alone (`handle_segv=0`): the fault tests crash workers on
# purpose and expect them to die of the signal. Leak detection is off:
# workers are killed or `_exit` by design.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
export RUSTFLAGS="-Zsanitizer=address --cfg crew_asan ${RUSTFLAGS:-}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:handle_segv=0:handle_sigbus=0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target="$(rustc +nightly -vV | sed -n 's/^host: //p')"
run() {
    cargo +nightly test --target "$target" --target-dir target/asan "$@"
}
run -p crew-core -p crew-process -p crew-shm --lib --tests
run -p crew --test faults
