#!/usr/bin/env bash
# crew runs on Linux only; on another system the build must stop with the
# README's message, not with a pile of missing `libc` items. Checks a macOS
# build of the Linux-only crates (fetching that target's std with rustup).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-apple-darwin
if ! command -v rustup >/dev/null; then
    echo "ci/other-systems.sh: rustup is needed to add the $target target (https://rustup.rs)" >&2
    exit 1
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/other-systems" \
    cargo check -p crew --target "$target" --keep-going >"$log" 2>&1; then
    echo "ci/other-systems.sh: crew built for $target; it must refuse" >&2
    exit 1
fi
# crew-shm is the first Linux-only crate built: crew-process and the facade
# depend on it, so their own gates are never reached once it stops. Its
# gate must stop it, pointing at its crate root. (Other errors may come
# first from crates that cross-compile C here, such as ring; on macOS
# itself they build.)
if ! grep -A1 "^error: crew runs on Linux only" "$log" | grep -q -- "--> crates/crew-shm/src/lib.rs"; then
    echo "ci/other-systems.sh: crew-shm did not stop with the Linux-only message:" >&2
    cat "$log" >&2
    exit 1
fi
echo "ci/other-systems.sh: $target refused with the Linux-only message"
