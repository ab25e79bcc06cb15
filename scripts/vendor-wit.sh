#!/usr/bin/env bash
# Copies the world (wit/handler.wit) into the three guest SDKs, which carry it so that
# they build and package on their own, and the HTTP world (examples/wit-http: the handler
# world plus wasi:http's outgoing handler) into the JavaScript and Python SDKs, whose build
# commands use it for handlers that import their `http` module. The Rust SDK's build and
# a host test fail while a copy differs.
set -euo pipefail
cd "$(dirname "$0")/.."
for dest in guest-sdk/rust/wit guest-sdk/js/wit guest-sdk/python/sfn_wasm_guest/wit; do
  mkdir -p "$dest"
  cp wit/handler.wit "$dest/handler.wit"
done
cp wit/handler.wit examples/wit-http/deps/sfn-activity/handler.wit
for dest in guest-sdk/js/wit-http guest-sdk/python/sfn_wasm_guest/wit-http; do
  rm -rf "$dest"
  cp -r examples/wit-http "$dest"
done
# The JavaScript SDK's TypeScript types are generated from the same file.
(cd guest-sdk/js && npx -y @bytecodealliance/jco@1.11.1 guest-types wit/handler.wit -o types >/dev/null)
