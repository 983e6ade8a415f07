"""Leave no message payload in the SuperLink's database once a run is over.

Flower deletes a run's messages and objects from ``superlink.db`` when the run
ends, but SQLite keeps deleted bytes in free pages and in the write-ahead log
(``superlink.db-wal``) until they happen to be reused, and Flower's connections
do not set ``secure_delete``. After each run (and when the coordinator starts
and stops), :func:`scrub_database` rewrites the database without its free pages
(``VACUUM``, with ``secure_delete`` on) and checkpoints the log into it,
truncating the log file to nothing.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

__all__ = ["scrub_database"]


def scrub_database(database: Path, *, patience: float = 10.0) -> bool:
    """Purge deleted content from ``database`` and its WAL.

    Safe while the SuperLink runs: SQLite's locks order the rewrite with its writes.

    Parameters
    ----------
    database : Path
        The SQLite file (nothing happens if it does not exist).
    patience : float
        Seconds to keep retrying while the SuperLink holds the database busy.

    Returns
    -------
    bool
        True when the rewrite ran and the log was emptied.
    """
    if not database.exists():
        return True
    deadline = time.monotonic() + patience
    conn = sqlite3.connect(database, timeout=patience, isolation_level=None)
    try:
        conn.execute("PRAGMA secure_delete = ON")
        while True:
            try:
                conn.execute("VACUUM")
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.OperationalError:
                busy = 1  # "database is locked": try again
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
    finally:
        conn.close()
