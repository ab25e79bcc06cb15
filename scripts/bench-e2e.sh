#!/usr/bin/env bash
# Host CPU per task end to end against LocalStack, vs a bare aws-sdk-sfn loop
# (host/benches/e2e.rs). Starts and stops LocalStack itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
cargo bench --no-run -p sfn-wasm-host --bench e2e
. scripts/lib/localstack.sh
trap localstack_stop EXIT
localstack_start
cargo bench -p sfn-wasm-host --bench e2e
