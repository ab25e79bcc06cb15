#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the wasm32-wasip2 target, builds
# the guest components (Rust, and the JavaScript and Python examples with their pinned
# tools), starts LocalStack (cached venv), runs every test, stops LocalStack.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
scripts/build-polyglot.sh
cargo build --tests
. scripts/lib/localstack.sh
trap localstack_stop EXIT
localstack_start
cargo test "$@"
