#!/usr/bin/env bash
# The whole test suite: build every binary once, then run every test
# (unit tests, qemu-img interoperability against the real qemu-img, bad
# inputs, interrupted writes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
