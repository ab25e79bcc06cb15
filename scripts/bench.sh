#!/usr/bin/env bash
# Prints the sandbox overhead table (see host/benches/sandbox.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
cargo bench -p sfn-wasm-host --bench sandbox
