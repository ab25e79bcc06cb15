#!/usr/bin/env python3
"""What one look for expired rows costs a folder idempotency store's writer: a table of
ROWS answer rows with the journal's schema (host/src/store/journal.rs), WAL and
`synchronous = FULL`, then LOOKS deletes of BOUND expired rows each, as `Journal::look`
makes them. Prints the median wall and CPU time of a look, and per row.

    python3 scripts/bench-expiry-sweep.py [ROWS] [BOUND] [LOOKS]   # 100000 1000 10
"""
import hashlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time

given = [int(arg) for arg in sys.argv[1:4]]
rows, bound, looks = given + [100_000, 1_000, 10][len(given):]
with tempfile.TemporaryDirectory() as folder:
    db = sqlite3.connect(os.path.join(folder, "store.sqlite"), isolation_level=None)
    db.executescript(
        """PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
        CREATE TABLE objects (name TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL,
            version TEXT NOT NULL, expires_ms INTEGER) WITHOUT ROWID;
        CREATE INDEX objects_by_expiry ON objects (expires_ms);"""
    )
    record = (b'{"state":"done","stored_at_ms":1,"expires_at_ms":2,'
              b'"answer":{"status":"success","output":"{\\"charged\\":true}"},"validated":[]}')
    db.execute("BEGIN")
    for n in range(rows):
        name = "answer-" + hashlib.sha256(str(n).encode()).hexdigest()
        db.execute("INSERT INTO objects VALUES (?, ?, ?, ?)", (name, record, "v" * 64, n))
    db.execute("COMMIT")
    walls, cpus = [], []
    for _ in range(looks):
        wall, cpu = time.perf_counter(), time.process_time()
        db.execute("BEGIN IMMEDIATE")
        deleted = len(db.execute(
            "DELETE FROM objects WHERE name IN (SELECT name FROM objects "
            "WHERE expires_ms < ?1 ORDER BY expires_ms LIMIT ?2) RETURNING name",
            (rows, bound)).fetchall())
        db.execute("COMMIT")
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"{rows} rows, looks of {bound} (deleted {deleted} in the last), median of {looks}: "
          f"{wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU, {cpu / bound * 1e6:.1f} µs CPU a row")
