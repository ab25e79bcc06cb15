#!/usr/bin/env bash
# Copies the world (wit/handler.wit) into the three guest SDKs, which carry it so that
# they build and package on their own. The Rust SDK's build and a host test fail while
# a copy differs.
set -euo pipefail
cd "$(dirname "$0")/.."
for dest in guest-sdk/rust/wit guest-sdk/js/wit guest-sdk/python/sfn_wasm_guest/wit; do
  mkdir -p "$dest"
  cp wit/handler.wit "$dest/handler.wit"
done
# The JavaScript SDK's TypeScript types are generated from the same file.
(cd guest-sdk/js && npx -y @bytecodealliance/jco@1.11.1 guest-types wit/handler.wit -o types >/dev/null)
