# LocalStack (Step Functions, S3, SQS, STS, Secrets Manager and SSM, no Docker) for the tests and the demo.
# Source this file, then: localstack_start; ...; localstack_stop (or trap it).
# Sets LOCALSTACK_ENDPOINT and the AWS_* variables a client needs to talk to it.
# Started through scripts/lib/localstack_main.py, which mends two races in its activities.

. "$PWD/scripts/lib/venv.sh"
LOCALSTACK_VENV="${LOCALSTACK_VENV:-$PWD/.venv/localstack}"
LOCALSTACK_REQUIREMENTS="$PWD/scripts/localstack-requirements.txt"

# Creates (or updates) the venv from the pinned requirements, once.
localstack_install() {
  venv_install "$LOCALSTACK_VENV" "$LOCALSTACK_REQUIREMENTS"
}

# Starts LocalStack on a free loopback port and waits until Step Functions answers.
localstack_start() {
  localstack_install
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  LOCALSTACK_DIR="$PWD/target/localstack/$port"
  mkdir -p "$LOCALSTACK_DIR"
  TMPDIR="$LOCALSTACK_DIR" GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$port" \
    SERVICES=stepfunctions,s3,sqs,sts,secretsmanager,ssm EAGER_SERVICE_LOADING=1 DNS_ADDRESS=0 DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 LOCALSTACK_VOLUME_DIR="$LOCALSTACK_DIR/volume" \
    "$LOCALSTACK_VENV/bin/python" "$PWD/scripts/lib/localstack_main.py" >"$LOCALSTACK_DIR/localstack.log" 2>&1 &
  LOCALSTACK_PID=$!
  export LOCALSTACK_ENDPOINT="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  unset AWS_PROFILE AWS_SESSION_TOKEN
  local waited=0
  until python3 - "$LOCALSTACK_ENDPOINT" 2>/dev/null <<'PY'
import json, sys, urllib.request
health = json.load(urllib.request.urlopen(sys.argv[1] + "/_localstack/health", timeout=2))
services = health["services"]
wanted = ("stepfunctions", "s3", "sqs", "sts", "secretsmanager", "ssm")
sys.exit(0 if all(services.get(name) == "running" for name in wanted) else 1)
PY
  do
    if ! kill -0 "$LOCALSTACK_PID" 2>/dev/null || [ "$waited" -ge 120 ]; then
      echo "error: LocalStack did not start; its log:" >&2
      tail -n 40 "$LOCALSTACK_DIR/localstack.log" >&2
      return 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  # The first API call is slow; make it here rather than in a test.
  "$LOCALSTACK_VENV/bin/python" - "$LOCALSTACK_ENDPOINT" <<'PY'
import sys, boto3
boto3.client("stepfunctions", endpoint_url=sys.argv[1]).list_activities()
boto3.client("s3", endpoint_url=sys.argv[1]).list_buckets()
boto3.client("sqs", endpoint_url=sys.argv[1]).list_queues()
PY
  echo "LocalStack ready at $LOCALSTACK_ENDPOINT (pid $LOCALSTACK_PID)" >&2
}

# Stops LocalStack: SIGTERM, then SIGKILL after a few seconds.
localstack_stop() {
  [ -n "${LOCALSTACK_PID:-}" ] || return 0
  kill -TERM "$LOCALSTACK_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$LOCALSTACK_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$LOCALSTACK_PID" 2>/dev/null || true
  wait "$LOCALSTACK_PID" 2>/dev/null || true
  LOCALSTACK_PID=
}
