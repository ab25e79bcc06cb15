#!/usr/bin/env bash
# Builds the JavaScript and Python example handlers into target/polyglot/*.wasm:
#   greet-js, scenarios-js, fetch-js (ComponentizeJS), aws-js (the JS SDK's build: the
#   AWS SDK for JavaScript v3, rolldown, ComponentizeJS), greet-py, scenarios-py,
#   fetch-py, aws-py (componentize-py).
# The tools are installed once, pinned: componentize-py and Node.js from PyPI into
# .venv/polyglot, ComponentizeJS from npm into examples/greet-js/node_modules (from its
# package-lock.json). After that the builds need no network.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/polyglot
requirements=scripts/polyglot-requirements.txt
. scripts/lib/venv.sh
venv_install "$venv" "$requirements"
export PATH="$PWD/$venv/bin:$PATH"

js=examples/greet-js
lock_stamp="$js/node_modules/.package-lock.sha256"
want=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing ComponentizeJS into $js/node_modules (once)..." >&2
  (cd "$js" && npm ci --no-audit --no-fund --silent)
  echo "$want" > "$lock_stamp"
fi

out=target/polyglot
mkdir -p "$out"
# Rebuilds a component only when its sources or the WIT changed.
stale() {
  local target=$1; shift
  [ ! -f "$target" ] || [ -n "$(find "$@" wit -newer "$target" -type f 2>/dev/null | head -1)" ]
}
for name in greet scenarios; do
  if stale "$out/$name-js.wasm" "$js/$name.js" "$js/package-lock.json"; then
    echo "building $out/$name-js.wasm" >&2
    (cd "$js" && npx --offline componentize-js "$name.js" --wit ../../wit --world-name handler \
      --disable http fetch-event -o "../../$out/$name-js.wasm" >/dev/null)
  fi
  if stale "$out/$name-py.wasm" "examples/greet-py/$name.py" "$requirements"; then
    echo "building $out/$name-py.wasm" >&2
    componentize-py -d wit -w handler componentize "$name" -p examples/greet-py \
      -o "$out/$name-py.wasm" >/dev/null
  fi
done
# The fetch examples make HTTP calls through wasi:http (http_client.js over the bindings;
# http_client.py over the Python SDK's client, so guest-sdk/python is on its path), so they
# build against examples/wit-http: the handler world plus wasi:http's outgoing handler.
# (ComponentizeJS reads modules only from the entry's folder, so the JavaScript example
# cannot import the SDK's client from guest-sdk/js the same way.)
http_wit=examples/wit-http
# aws-js and aws-py read S3 and write SQS through requests the host signs: aws-js with the
# AWS SDK for JavaScript v3 (examples/aws-js, a project of its own built by the JS SDK's
# build), aws-py with the Python SDK's botocore-named client (sfn_wasm_guest.aws).
py=examples/greet-py
if stale "$out/fetch-js.wasm" "$js/fetch.js" "$js/http_client.js" "$http_wit" "$js/package-lock.json"; then
  echo "building $out/fetch-js.wasm" >&2
  (cd "$js" && npx --offline componentize-js fetch.js --wit "../../$http_wit" \
    --world-name handler-with-http --disable http fetch-event -o "../../$out/fetch-js.wasm" >/dev/null)
fi
aws_js=examples/aws-js
# Its copy of the JS SDK is installed from this checkout: installed again when the lock
# or the SDK changes.
aws_stamp="$aws_js/node_modules/.installed.sha256"
aws_want=$(cat "$aws_js/package-lock.json" $(find guest-sdk/js -path guest-sdk/js/node_modules -prune -o -type f -print | sort) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$aws_stamp" 2>/dev/null)" != "$aws_want" ]; then
  echo "installing $aws_js's packages (the AWS SDK for JavaScript; once)..." >&2
  (cd "$aws_js" && npm ci --no-audit --no-fund --silent)
  echo "$aws_want" > "$aws_stamp"
fi
if stale "$out/aws-js.wasm" "$aws_js/src" "$aws_js/package-lock.json" guest-sdk/js/src guest-sdk/js/bin; then
  echo "building $out/aws-js.wasm" >&2
  (cd "$aws_js" && npm run --silent build >/dev/null)
fi
for name in fetch aws; do
  if stale "$out/$name-py.wasm" "$py/$name.py" "$py/http_client.py" "$http_wit" guest-sdk/python/sfn_wasm_guest "$requirements"; then
    echo "building $out/$name-py.wasm" >&2
    componentize-py -d "$http_wit" -w handler-with-http componentize "$name" -p "$py" \
      -p guest-sdk/python -o "$out/$name-py.wasm" >/dev/null
  fi
done
