#!/usr/bin/env bash
# The main job on its embedded default: build the greet example and run one task
# through it in the sandbox, printing the answer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
cargo build --quiet
for name in World Wasm; do
  input="{\"hello\": \"$name\"}"
  echo "invoke greet.wasm --input '$input'"
  target/debug/sfn-wasm-host invoke target/wasm32-wasip2/release/greet.wasm --input "$input"
done
