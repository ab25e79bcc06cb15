#!/usr/bin/env bash
# Rolling restarts: executions arrive steadily while `sfn-wasm-host serve` is restarted
# with SIGTERM; counts the tasks stranded by a restart (they needed the state machine's
# Retry on States.Timeout). Usage: scripts/bench-restarts.sh [HOST_BINARY]
# (default: this tree's debug build; pass another build to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
cargo build --quiet
. scripts/lib/localstack.sh
trap localstack_stop EXIT
localstack_start
"$LOCALSTACK_VENV/bin/python" scripts/bench-restarts.py "$LOCALSTACK_ENDPOINT" \
  "${1:-target/debug/sfn-wasm-host}" target/wasm32-wasip2/release/greet.wasm target/bench-restarts
