#!/usr/bin/env python3
"""Instructions per task by part, from callgrind profiles of two runs of different
lengths (scripts/bench-callgrind.sh): (instructions at the long run - at the short
run) / (difference in tasks), so start-up and shutdown cancel out. Every function's
own instructions (not inclusive: nothing is counted twice) are put in the part its
crate belongs to; the symbols are Rust's demangled paths, whose first crate name
names the code (`<hyper::... as tower::Service>::call` is hyper's).

Usage: callgrind-table.py SHORT_TASKS LONG_TASKS NAME=SHORT.out,LONG.out ...
Prints a Markdown table: one column per NAME, one row per part, each NAME after
the first beside its difference to the one before; then, for each such pair, the
functions that differ most.
"""

import re
import subprocess
import sys
from collections import defaultdict

# Crate (first path segment) -> part. Unlisted crates go to "other".
PARTS = [
    ("SigV4 signing (aws-sigv4, sha2, hmac, ring)", ["aws_sigv4", "sha2", "hmac", "ring", "digest", "hex"]),
    ("HTTP (hyper, http, h1 parsing, connection pool)", ["hyper", "hyper_util", "http", "http_body", "http_body_util", "httparse", "h2", "aws_smithy_http_client", "aws_smithy_http", "tower", "want", "try_lock"]),
    ("AWS SDK runtime (smithy orchestrator, config bag, retries)", ["aws_smithy_runtime", "aws_smithy_runtime_api", "aws_smithy_types", "aws_smithy_async", "aws_smithy_observability", "aws_runtime", "aws_types", "aws_config", "aws_credential_types", "aws_sdk_sfn", "aws_sdk_sqs", "aws_smithy_json", "aws_smithy_schema"]),
    ("JSON (serde_json, serde)", ["serde_json", "serde", "serde_core"]),
    ("async runtime (tokio, futures, mio)", ["tokio", "tokio_util", "futures_util", "futures_core", "futures_channel", "futures", "mio", "pin_project_lite", "async_trait", "parking_lot", "parking_lot_core", "crossbeam_utils", "crossbeam_channel", "event_listener"]),
    ("logs and traces (tracing, tracing-subscriber)", ["tracing", "tracing_core", "tracing_subscriber", "tracing_log", "tracing_opentelemetry", "opentelemetry", "opentelemetry_sdk", "valuable", "nu_ansi_term", "sharded_slab", "thread_local", "time", "itoa", "ryu"]),
    ("WebAssembly (wasmtime, the guest, WASI)", ["wasmtime", "wasmtime_environ", "wasmtime_wasi", "wasmtime_wasi_io", "wasmtime_wasi_http", "wasmtime_internal_fiber", "wasmtime_internal_unwinder", "wasmtime_internal_math", "wasmtime_internal_slab", "wasmtime_internal_asm_macros", "wasmtime_internal_versioned_export_macros", "wasmtime_fiber", "wasmtime_slab", "cranelift_bforest", "cranelift_codegen", "cranelift_entity", "cranelift_frontend", "wasmparser", "wasm", "rustix", "object", "gimli", "cap_std", "cap_primitives", "wiggle", "anyhow", "bumpalo"]),
    ("the host's own code (sfn_wasm_*)", ["sfn_wasm_host", "sfn_wasm_engine", "sfn_wasm_outbound", "e2e", "bench", "governor", "quanta", "nonzero_ext", "uuid", "fastrand", "rand", "rand_core", "getrandom", "bytes", "indexmap", "hashbrown", "smallvec", "arc_swap", "once_cell", "percent_encoding", "form_urlencoded", "url", "idna", "base64", "memchr", "regex", "regex_automata", "aho_corasick", "fnv"]),
    ("Rust std, core, alloc (generic code inlined nowhere)", ["core", "alloc", "std", "compiler_builtins", "__rustc"]),
]
CRATE_PART = {crate: part for part, crates in PARTS for crate in crates}
LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")
IDENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::")


def functions(path):
    """{function: own instructions} of one callgrind profile."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    costs = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return costs


def part_of(function):
    """The part a `file:symbol [object]` line's symbol belongs to."""
    obj = function.rsplit("[", 1)[-1] if "[" in function else ""
    symbol = function.split(":", 1)[1] if ":" in function.split(" ")[0] else function
    symbol = symbol.rsplit(" [", 1)[0]
    if "libc.so" in obj or "ld-linux" in obj or "libm.so" in obj:
        return "libc (malloc, free, memcpy, syscall stubs)"
    if "libsqlite" in obj or symbol.startswith("sqlite3"):
        return "SQLite"
    if "vgpreload" in obj:
        return "libc (malloc, free, memcpy, syscall stubs)"
    if symbol.startswith("sqlite") or re.match(r"^(wal|pager|btree|vdbe|unix)\w", symbol):
        return "SQLite"
    first = IDENT.search(symbol)
    if not first:
        if symbol.startswith(("ring_core", "GFp", "sha256", "aws_lc")):
            return PARTS[0][0]
        if symbol.startswith(("mem", "malloc", "free", "realloc", "calloc", "str", "__")):
            return "libc (malloc, free, memcpy, syscall stubs)"
        return "other (unnamed: JIT code of the guest, stubs)"
    return CRATE_PART.get(first.group(1), "other crates")


def symbol_of(function):
    """The symbol of a `file:symbol [object]` line, without its file and object: the
    same function in two binaries (the bench's bare loop, the host) is one key."""
    symbol = function.rsplit(" [", 1)[0]
    return symbol.split(":", 1)[1] if symbol.startswith(("???:", "/", ".")) else symbol


def main():
    short, long_ = int(sys.argv[1]), int(sys.argv[2])
    tasks = long_ - short
    columns = []
    for arg in sys.argv[3:]:
        name, files = arg.split("=", 1)
        a, b = files.split(",")
        fa, fb = functions(a), functions(b)
        per = {f: (fb.get(f, 0) - fa.get(f, 0)) / tasks for f in set(fa) | set(fb)}
        columns.append((name, per))
    parts = defaultdict(lambda: [0.0] * len(columns))
    for i, (_, per) in enumerate(columns):
        for function, cost in per.items():
            parts[part_of(function)][i] += cost
    names = [name for name, _ in columns]
    # Each column after the first beside the difference to the one before it.
    steps = [(i - 1, i) for i in range(1, len(columns))]
    print(f"Instructions per task (callgrind, own cost by part; runs of {short} and {long_} tasks, the difference / {tasks})\n")
    header = "| part | " + " | ".join(names)
    for a, b in steps:
        header += f" | {names[b]} − {names[a]}"
    print(header + " |")
    print("|---|" + "---:|" * (len(columns) + len(steps)))
    order = sorted(parts, key=lambda p: -max(parts[p]))
    totals = [0.0] * len(columns)
    for part in order:
        row = parts[part]
        totals = [t + r for t, r in zip(totals, row)]
        cells = [f"{r:,.0f}" for r in row] + [f"{row[b] - row[a]:+,.0f}" for a, b in steps]
        print(f"| {part} | " + " | ".join(cells) + " |")
    cells = [f"**{t:,.0f}**" for t in totals]
    cells += [f"**{totals[b] - totals[a]:+,.0f}**" for a, b in steps]
    print("| **total** | " + " | ".join(cells) + " |")
    for a, b in steps:
        base, other = defaultdict(float), defaultdict(float)
        for function, cost in columns[a][1].items():
            base[symbol_of(function)] += cost
        for function, cost in columns[b][1].items():
            other[symbol_of(function)] += cost
        diff = sorted(
            ((other[f] - base[f], f) for f in set(base) | set(other)),
            reverse=True,
        )
        print(f"\nThe functions {names[b]} spends most more on than {names[a]}, per task:\n")
        print("| instructions | function |")
        print("|---:|---|")
        for cost, symbol in diff[:20]:
            print(f"| {cost:+,.0f} | `{symbol[:110]}` |")


if __name__ == "__main__":
    main()
