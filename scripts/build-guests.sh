#!/usr/bin/env bash
# Builds every guest component (examples and test guests) for wasm32-wasip2.
# Output: target/wasm32-wasip2/release/{greet,scenarios,other_world}.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
cargo guests "$@"
