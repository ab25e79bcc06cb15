#!/usr/bin/env bash
# Your handler against the local emulator: scripts/dev.sh HANDLER.wasm [--input JSON]...
# [--config CONFIG]. Builds the host, starts LocalStack (or uses the one at
# $LOCALSTACK_ENDPOINT, if set), creates an activity and a one-state machine, serves the
# handler, runs one execution per --input (default {"hello": "World"}), prints each
# status and output and the commands it ran, then stops everything. Files: target/dev/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "usage: scripts/dev.sh HANDLER.wasm [--input JSON]... [--config CONFIG]" >&2
  [ $# -ge 1 ] && echo "error: $1 is not a file: build your handler first" >&2
  exit 2
fi
handler="$1"
shift
# A host binary given by the caller (the tests) is used as it is.
host="${SFN_WASM_HOST:-}"
if [ -z "$host" ]; then
  echo "building sfn-wasm-host (the first build takes about 15 minutes on 2 cores)..." >&2
  cargo build --quiet -p sfn-wasm-host
  host=target/debug/sfn-wasm-host
fi
. scripts/lib/localstack.sh
if [ -z "${LOCALSTACK_ENDPOINT:-}" ]; then
  trap localstack_stop EXIT
  localstack_start
else
  localstack_install
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
fi
"$LOCALSTACK_VENV/bin/python" scripts/dev.py "$LOCALSTACK_ENDPOINT" "$host" "$handler" target/dev "$@"
