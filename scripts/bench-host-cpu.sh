#!/usr/bin/env bash
# Host CPU per task, start-up included, at 1 and 4 workers, for one or more builds of the
# host side by side in one run (alternating rounds; medians). Usage:
#   scripts/bench-host-cpu.sh [HOST_BINARY ...]   (default: this tree's release build)
# To compare with another commit: git worktree add /tmp/old REV && (cd /tmp/old &&
# cargo build --release) && scripts/bench-host-cpu.sh target/release/sfn-wasm-host \
#   /tmp/old/target/release/sfn-wasm-host
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
[ $# -gt 0 ] || cargo build --release --quiet
. scripts/lib/localstack.sh
trap localstack_stop EXIT
localstack_start
"$LOCALSTACK_VENV/bin/python" scripts/bench-host-cpu.py "$LOCALSTACK_ENDPOINT" \
  target/wasm32-wasip2/release/greet.wasm target/bench-host-cpu "${@:-target/release/sfn-wasm-host}"
