#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the wasm32-wasip2 target, builds
# the guest components (Rust, and the JavaScript and Python examples with their pinned
# tools), starts LocalStack and the strict AWS emulator (cached venvs), runs every test,
# stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-guests.sh
scripts/build-polyglot.sh
cargo build --tests
# The guest SDK's own unit tests (host target; the guests themselves run in the host's).
cargo test -q -p sfn-wasm-guest --features http --lib
# Compile the large JS/Python components into the tests' cache now, so that their
# seconds of compiling do not compete with the timing-sensitive shutdown tests.
for wasm in target/polyglot/*.wasm; do
  target/debug/sfn-wasm-host invoke "$wasm" --cache-dir target/test-cache --memory-limit-mb 256 \
    --input '{"hello": "World"}' >/dev/null 2>&1 || true
done
. scripts/lib/localstack.sh
. scripts/lib/strict_aws.sh
trap 'strict_aws_stop; localstack_stop' EXIT
localstack_start
# The strict AWS emulator (moto: SigV4 checked, identity policies evaluated; a strict
# front for LocalStack's Step Functions), for the tests that run under the README's
# least-privilege policies (host/tests/it/strict.rs).
strict_aws_start
# Prometheus from Debian (promtool for the alert rules' checks and unit tests, and a real
# server that scrapes a served host and evaluates them).
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's prometheus package (promtool, prometheus)..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "error: promtool and prometheus are missing; install Debian's prometheus package (sudo apt-get install prometheus)" >&2
    exit 1
  fi
fi
# Debian's docker-registry (the CNCF distribution server): a real OCI registry on
# loopback for the oci:// handler tests (host/tests/it/oci.rs); each test starts its own.
if ! command -v docker-registry >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's docker-registry package (an OCI registry for the tests)..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
  else
    echo "error: docker-registry is missing; install Debian's docker-registry package (sudo apt-get install docker-registry)" >&2
    exit 1
  fi
fi
# Python tools the tests call (a Prometheus exposition parser, YAML), pinned.
venv_install "$PWD/.venv/test-tools" scripts/test-tools-requirements.txt
export TEST_TOOLS_PYTHON="$PWD/.venv/test-tools/bin/python"
cargo test "$@"
