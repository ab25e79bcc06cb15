#!/usr/bin/env python3
"""CPU and wall time per durable write on this machine's disk (BENCHMARKS.md, issue 37):
a file per record renamed into place with two fsyncs (the folder stores' way), the same
without fsync, an append + fdatasync to one file (a log's way), an append alone, a write
+ fdatasync into a log whose blocks exist beforehand (pre-zeroed, fallocate'd), and a
transaction of the journal's (`host/src/store/journal.rs`: SQLite in WAL mode, one row
written and the previous one deleted per commit) with `synchronous` FULL (power-loss)
and NORMAL (process-crash), each with SQLite's default locking and with
`locking_mode = EXCLUSIVE`. Python's own cost per call is in every row alike (a few
µs). Run: python3 scripts/bench-disk-writes.py [FOLDER] (default: target/)."""
import hashlib
import os
import sqlite3
import resource
import sys
import tempfile
import time

N = 2000


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name, write):
    start_cpu, start_wall = cpu(), time.time()
    for i in range(N):
        write(i)
    print(f"| {name} | {(cpu() - start_cpu) / N * 1e6:.0f} µs | {(time.time() - start_wall) / N * 1e6:.0f} µs |")


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "target"
    os.makedirs(base, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as d:
        folder = os.open(d, os.O_RDONLY)
        record = b"x" * 300

        def file_renamed(i, sync):
            tmp = f"{d}/.{i}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, record)
            if sync:
                os.fsync(fd)
            os.close(fd)
            os.rename(tmp, f"{d}/{'s' if sync else 'n'}{i}")
            if sync:
                os.fsync(folder)

        log = os.open(f"{d}/log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        print(f"{N} writes of {len(record)} bytes each in {d}\n")
        print("| write | CPU per write | wall per write |")
        print("|---|---:|---:|")
        measure("file + rename + 2 fsyncs", lambda i: file_renamed(i, True))
        measure("file + rename", lambda i: file_renamed(i, False))
        measure("append + fdatasync", lambda i: (os.write(log, record), os.fdatasync(log)))
        measure("append", lambda i: os.write(log, record))
        # A log whose blocks exist before it is written (no size change for fdatasync to
        # journal): pre-zeroed, and fallocate'd.
        for how in ("pre-zeroed", "fallocate'd"):
            pre = os.open(f"{d}/{how}", os.O_RDWR | os.O_CREAT, 0o600)
            if how == "pre-zeroed":
                os.write(pre, b"\0" * (N * len(record)))
            else:
                os.posix_fallocate(pre, 0, N * len(record))
            os.fsync(pre)
            measure(f"write into a {how} log + fdatasync",
                    lambda i, pre=pre: (os.pwrite(pre, record, i * len(record)), os.fdatasync(pre)))
        for synchronous, durability in (("FULL", "power-loss"), ("NORMAL", "process-crash")):
            for exclusive in (False, True):
                db = sqlite3.connect(f"{d}/{synchronous}-{exclusive}.sqlite", isolation_level=None)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute(f"PRAGMA synchronous = {synchronous}")
                if exclusive:
                    db.execute("PRAGMA locking_mode = EXCLUSIVE")
                db.execute(
                    "CREATE TABLE objects (name TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL,"
                    " version TEXT NOT NULL) WITHOUT ROWID"
                )

                def transaction(i, db=db):
                    name = hashlib.sha256(str(i).encode()).hexdigest()
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?)", (name, record, name))
                    if i:
                        previous = hashlib.sha256(str(i - 1).encode()).hexdigest()
                        db.execute("DELETE FROM objects WHERE name = ?", (previous,))
                    db.execute("COMMIT")

                locking = "exclusive locking" if exclusive else "default locking"
                measure(f"SQLite WAL, {durability} ({synchronous}), {locking}", transaction)
                db.close()


if __name__ == "__main__":
    main()
