#!/usr/bin/env python3
"""CPU per task by part, from `perf record` profiles of e2e bench runs (sampled, so
approximate: a few tens of µs a row at 2,000 Hz over a 300-task run), grouped into the
same parts as scripts/callgrind-table.py (by each symbol's first crate name), plus the
kernel's share, which callgrind cannot see.

Usage: perf-table.py NAME=PROFILE.data,CPU_US_PER_TASK ...
  e.g. perf-table.py bare=/tmp/perf-bare.data,2200 host=/tmp/perf-host.data,2867
Each profile's shares are scaled by the CPU per task its run's line printed. Prints a
Markdown table: one column per NAME, each after the first beside its difference to the
first.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "callgrind_table", Path(__file__).with_name("callgrind-table.py")
)
callgrind_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(callgrind_table)

LINE = re.compile(r"^\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$")
KERNEL = "kernel (syscalls, wake-ups, page faults)"
LIBC = "libc (malloc, free, memcpy, syscall stubs)"


def shares(path):
    """{part: % of the profile's samples}."""
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "-g", "none", "--stdio"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    parts = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        pct, dso, kind, symbol = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
        if kind == "k":
            part = KERNEL
        elif dso.startswith(("libc.so", "libm.so", "ld-linux", "[vdso]")):
            part = LIBC
        else:
            # part_of reads callgrind's `file:symbol` lines; perf gives the symbol alone.
            part = callgrind_table.part_of("???:" + symbol)
        parts[part] = parts.get(part, 0.0) + pct
    return parts


def main():
    columns = []
    for arg in sys.argv[1:]:
        name, rest = arg.split("=", 1)
        path, cpu = rest.rsplit(",", 1)
        columns.append((name, shares(path), float(cpu)))
    if not columns:
        sys.exit(__doc__)
    names = sorted(
        {part for _, parts, _ in columns for part in parts},
        key=lambda part: -max(parts.get(part, 0) * cpu for _, parts, cpu in columns),
    )
    head = ["part (µs per task)"]
    for i, (name, _, _) in enumerate(columns):
        head += [name] if i == 0 else [name, f"{name} − {columns[0][0]}"]
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for part in names:
        row = [part]
        first = columns[0][1].get(part, 0) * columns[0][2] / 100
        for i, (_, parts, cpu) in enumerate(columns):
            value = parts.get(part, 0) * cpu / 100
            row += [f"{value:.0f}"] if i == 0 else [f"{value:.0f}", f"{value - first:+.0f}"]
        print("| " + " | ".join(row) + " |")
    row = ["**total**"]
    for i, (_, _, cpu) in enumerate(columns):
        row += [f"**{cpu:.0f}**"] if i == 0 else [f"**{cpu:.0f}**", f"**{cpu - columns[0][2]:+.0f}**"]
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
