#!/usr/bin/env bash
# The main job, end to end on its embedded default: a local Step Functions emulator
# (LocalStack), the greet example handler, `sfn-wasm-host serve`, a few executions, their
# outputs printed, a clean shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
cargo build --quiet
. scripts/lib/localstack.sh
trap localstack_stop EXIT
localstack_start
"$LOCALSTACK_VENV/bin/python" scripts/demo.py "$LOCALSTACK_ENDPOINT" target/debug/sfn-wasm-host \
  target/wasm32-wasip2/release/greet.wasm target/demo
