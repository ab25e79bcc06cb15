# The strict AWS emulator (scripts/strict_aws.py: moto's server with SigV4 signatures
# checked and identity policies evaluated, and a strict front for LocalStack's Step
# Functions) for the tests. Source this file after starting LocalStack, then:
# strict_aws_start; ...; strict_aws_stop (or trap it).
# Sets STRICT_AWS_ENDPOINT and the admin's credentials (STRICT_AWS_ADMIN_KEY_ID,
# STRICT_AWS_ADMIN_SECRET), which the tests use to make users with exact policies.

. "$PWD/scripts/lib/venv.sh"
STRICT_AWS_VENV="${STRICT_AWS_VENV:-$PWD/.venv/strict-aws}"
STRICT_AWS_REQUIREMENTS="$PWD/scripts/strict-aws-requirements.txt"

# Creates (or updates) the venv from the pinned requirements, once.
strict_aws_install() {
  venv_install "$STRICT_AWS_VENV" "$STRICT_AWS_REQUIREMENTS"
}

# Starts the server on a free loopback port (it binds port 0 and reports the port) and
# waits until it serves. Step Functions requests go to $LOCALSTACK_ENDPOINT once allowed.
strict_aws_start() {
  strict_aws_install
  mkdir -p "$PWD/target/strict-aws"
  STRICT_AWS_DIR=$(mktemp -d "$PWD/target/strict-aws/run.XXXXXX")
  local state="$STRICT_AWS_DIR/state.json"
  LOCALSTACK_ENDPOINT="${LOCALSTACK_ENDPOINT:-}" \
    "$STRICT_AWS_VENV/bin/python" "$PWD/scripts/strict_aws.py" "$state" >"$STRICT_AWS_DIR/strict-aws.log" 2>&1 &
  STRICT_AWS_PID=$!
  local waited=0
  until [ -s "$state" ]; do
    if ! kill -0 "$STRICT_AWS_PID" 2>/dev/null || [ "$waited" -ge 300 ]; then
      echo "error: the strict AWS emulator did not start; its log:" >&2
      tail -n 40 "$STRICT_AWS_DIR/strict-aws.log" >&2
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  local fields
  fields=$("$STRICT_AWS_VENV/bin/python" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["endpoint"], s["admin_key_id"], s["admin_secret"])' "$state")
  read -r STRICT_AWS_ENDPOINT STRICT_AWS_ADMIN_KEY_ID STRICT_AWS_ADMIN_SECRET <<<"$fields"
  export STRICT_AWS_ENDPOINT STRICT_AWS_ADMIN_KEY_ID STRICT_AWS_ADMIN_SECRET
  export STRICT_AWS_PYTHON="$STRICT_AWS_VENV/bin/python"
  echo "strict AWS emulator ready at $STRICT_AWS_ENDPOINT (pid $STRICT_AWS_PID)" >&2
}

# Stops the server: SIGTERM, then SIGKILL after a few seconds.
strict_aws_stop() {
  [ -n "${STRICT_AWS_PID:-}" ] || return 0
  kill -TERM "$STRICT_AWS_PID" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$STRICT_AWS_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$STRICT_AWS_PID" 2>/dev/null || true
  wait "$STRICT_AWS_PID" 2>/dev/null || true
  STRICT_AWS_PID=
  # its folder (the log) stays in target/strict-aws for a look after a failed run
  [ -n "${STRICT_AWS_DIR:-}" ] && rm -f "$STRICT_AWS_DIR/state.json"
  STRICT_AWS_DIR=
}
