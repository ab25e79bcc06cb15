#!/usr/bin/env bash
# The main job, end to end on its embedded default: a local Step Functions emulator
# (LocalStack), the greet example handler, `sfn-wasm-host serve`, a few executions, their
# outputs printed, a clean shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building the host (release: the same build \`cargo install --locked --path host\` then copies) and the example handlers: the first run took 16 minutes on a fresh clone on 2 cores (the build, then LocalStack's install) and ~2.6 GB of disk (target/, .venv/); later runs take seconds" >&2
scripts/build-guests.sh
cargo build --locked --release -p sfn-wasm-host
. scripts/lib/localstack.sh
trap localstack_stop EXIT
localstack_start
"$LOCALSTACK_VENV/bin/python" scripts/demo.py "$LOCALSTACK_ENDPOINT" target/release/sfn-wasm-host \
  target/wasm32-wasip2/release/greet.wasm target/demo
