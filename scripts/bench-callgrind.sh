#!/usr/bin/env bash
# Instructions per task, host vs the bare aws-sdk-sfn loop, by part (signing, HTTP, the
# SDK's runtime, JSON, tokio, logs, wasmtime, the host's own code...): counted by
# valgrind's callgrind, which counts every instruction and does not care how noisy the
# machine is. Each worker runs twice against the keep-alive stand-in (tasks queued),
# SHORT and LONG tasks; the difference leaves the per-task part (start-up and shutdown
# cancel out). The host runs with SFN_WASM_HOST_INSTANCE_ALLOCATION=on-demand (callgrind
# cannot map the instance pool's address space), so its instantiation is the on-demand
# allocator's, not production's; everything else is the same code.
#   scripts/bench-callgrind.sh [SHORT LONG [WORKERS]]   (default: 300 900 1)
# Extra modes of host/benches/e2e.rs as columns: CALLGRIND_MODES="bare,host,host with
# outbox (process-crash)".
set -euo pipefail
cd "$(dirname "$0")/.."
short=${1:-300}
long=${2:-900}
workers=${3:-1}
modes=${CALLGRIND_MODES:-bare,host}
if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
  else
    echo "error: valgrind is not installed (sudo apt-get install valgrind)" >&2
    exit 1
  fi
fi
scripts/build-guests.sh
cargo bench --no-run -p sfn-wasm-host --bench e2e
out=$PWD/target/callgrind
rm -rf "$out" && mkdir -p "$out"
columns=()
IFS=, read -r -a each <<<"$modes"
for mode in "${each[@]}"; do
  slug=$(echo "$mode" | tr -c 'a-z0-9\n' '-')
  for tasks in "$short" "$long"; do
    SFN_WASM_HOST_INSTANCE_ALLOCATION=on-demand E2E_TARGETS=queued E2E_MODES="$mode" \
      E2E_CONCURRENCY="$workers" E2E_ROUNDS=1 E2E_TASKS="$tasks" \
      E2E_WRAP="valgrind --tool=callgrind --callgrind-out-file=$out/$slug-$tasks.%p" \
      cargo bench -q -p sfn-wasm-host --bench e2e >&2
  done
  # The worker's own profile: the one process of the run (valgrind follows no child).
  columns+=("$mode=$(ls "$out"/"$slug"-"$short".* | head -1),$(ls "$out"/"$slug"-"$long".* | head -1)")
done
echo "$workers worker(s), keep-alive stand-in, tasks queued"
python3 scripts/callgrind-table.py "$short" "$long" "${columns[@]}"
