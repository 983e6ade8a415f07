"""Deleted rows leave no bytes in the SQLite file or its write-ahead log."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from cityfed_server.scrub import scrub_database

MARKER = b"city-reply-payload-" + os.urandom(8).hex().encode()


def _files_with_marker(db: Path) -> list[str]:
    return [p.name for p in sorted(db.parent.glob(db.name + "*")) if MARKER in p.read_bytes()]


def test_deleted_payloads_are_gone_after_a_scrub_while_another_connection_is_open(
    tmp_path: Path,
) -> None:
    # Prepare: Flower's settings (WAL, no secure_delete); a payload written then deleted
    db = tmp_path / "superlink.db"
    flower = sqlite3.connect(db, isolation_level=None)
    flower.execute("PRAGMA journal_mode = WAL")
    flower.execute("PRAGMA secure_delete = OFF")
    flower.execute("CREATE TABLE message (id INTEGER PRIMARY KEY, content BLOB)")
    flower.execute("CREATE TABLE node (id INTEGER PRIMARY KEY, name TEXT)")
    flower.execute("INSERT INTO node (name) VALUES ('lisbon')")
    for _ in range(50):
        flower.execute("INSERT INTO message (content) VALUES (?)", (MARKER + os.urandom(3000),))
    flower.execute("DELETE FROM message")
    assert _files_with_marker(db)  # SQLite kept the deleted bytes
    # Execute, with Flower's connection still open
    assert scrub_database(db)
    # Assert: no trace; the live rows are intact and Flower's connection still works
    assert _files_with_marker(db) == []
    assert flower.execute("SELECT name FROM node").fetchall() == [("lisbon",)]
    flower.execute("INSERT INTO node (name) VALUES ('oslo')")
    flower.close()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM node").fetchone() == (2,)


def test_a_missing_database_is_nothing_to_scrub(tmp_path: Path) -> None:
    assert scrub_database(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()
