#!/usr/bin/env bash
# Your handler against the local emulator: scripts/dev.sh HANDLER.wasm [--input JSON]...
# [--config CONFIG] [--callback], paths relative to where it is run. Uses $SFN_WASM_HOST, else the
# installed sfn-wasm-host, else builds this checkout's; starts LocalStack (or uses the one at
# $LOCALSTACK_ENDPOINT, if set), creates an activity (--callback: an SQS queue with a
# dead-letter queue, for `.waitForTaskToken` tasks) and a one-state machine, serves the
# handler, runs one execution per --input (default {"hello": "World"}), prints each
# status and output and the commands it ran, then stops everything. Files: target/dev/.
set -euo pipefail
usage() {
  echo "usage: scripts/dev.sh HANDLER.wasm [--input JSON]... [--config CONFIG] [--callback]" >&2
}
# Paths are the caller's: relative to where it was run, checked before anything else.
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  usage
  [ $# -ge 1 ] && echo "error: $1 is not a file (from $PWD): build your handler first" >&2
  exit 2
fi
handler=$(realpath "$1")
shift
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config)
      if [ $# -lt 2 ] || [ ! -f "$2" ]; then
        usage
        echo "error: --config needs a config file (${2:-none given}, from $PWD)" >&2
        exit 2
      fi
      args+=(--config "$(realpath "$2")")
      shift 2
      ;;
    --config=*)
      file="${1#--config=}"
      if [ ! -f "$file" ]; then
        usage
        echo "error: --config needs a config file ($file, from $PWD)" >&2
        exit 2
      fi
      args+=(--config "$(realpath "$file")")
      shift
      ;;
    *)
      args+=("$1")
      shift
      ;;
  esac
done
cd "$(dirname "$0")/.."
# The host: $SFN_WASM_HOST if set, else the installed `sfn-wasm-host` (`cargo install`),
# else this checkout's release build (the demo's; built here if needed).
host="${SFN_WASM_HOST:-}"
if [ -z "$host" ] && command -v sfn-wasm-host >/dev/null; then
  host=$(command -v sfn-wasm-host)
  echo "using the installed $host (set SFN_WASM_HOST to use another build)" >&2
fi
if [ -z "$host" ]; then
  if [ ! -x target/release/sfn-wasm-host ]; then
    echo "building sfn-wasm-host (not installed; the first build takes about 15 minutes on 2 cores)..." >&2
  fi
  cargo build --quiet --locked --release -p sfn-wasm-host
  host=target/release/sfn-wasm-host
fi
. scripts/lib/localstack.sh
if [ -z "${LOCALSTACK_ENDPOINT:-}" ]; then
  trap localstack_stop EXIT
  localstack_start
else
  localstack_install
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
fi
"$LOCALSTACK_VENV/bin/python" scripts/dev.py "$LOCALSTACK_ENDPOINT" "$host" "$handler" target/dev "${args[@]}"
