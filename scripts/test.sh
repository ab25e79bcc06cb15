#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the wasm32-wasip2 target, builds
# the guest components, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
cargo test "$@"
