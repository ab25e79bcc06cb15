#!/usr/bin/env bash
# Prints the benchmark tables: per-task sandbox overhead (host/benches/sandbox.rs) and
# hot-swap latency and start-up time (host/benches/hotswap.rs), resident memory with
# 1,000 tasks in flight (host/benches/memory.rs), outbound HTTP per request
# (host/benches/outbound.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
scripts/build-polyglot.sh
cargo bench -p sfn-wasm-host --bench sandbox
cargo bench -p sfn-wasm-host --bench hotswap
cargo bench -p sfn-wasm-host --bench memory
cargo bench -p sfn-wasm-host --bench outbound
cargo bench -p sfn-wasm-host --bench runtime
cargo bench -p sfn-wasm-host --bench admin
