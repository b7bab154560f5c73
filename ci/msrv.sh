#!/usr/bin/env bash
# The minimum Rust version in Cargo.toml (`rust-version`) is true: the whole
# workspace, tests and examples included, type-checks with exactly that
# toolchain. Installs it with rustup (minimal profile) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
if [ -z "$msrv" ]; then
    echo "ci/msrv.sh: no rust-version in Cargo.toml" >&2
    exit 1
fi
if ! command -v rustup >/dev/null; then
    echo "ci/msrv.sh: rustup is needed to install Rust $msrv (https://rustup.rs)" >&2
    exit 1
fi
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
# A target folder of its own: another compiler's artefacts would evict the
# main build's.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" \
    cargo "+$msrv" check --workspace --all-targets --locked
