"""Append-only, hash-chained audit logs (JSON lines), and their verification.

Each line is one JSON object with ``seq`` (0, 1, 2, ...), ``time``, ``prev`` (the
hash of the line before, or 64 zeros) and ``hash``: the SHA-256 of the line's
canonical JSON without ``hash``. Changing, reordering or deleting a line breaks
the chain at that line; a head file beside the log (``<log>.head``: the last
``seq`` and ``hash``) also catches the removal of the last lines. Someone who can
rewrite the whole log and its head can forge a consistent chain: copy the head
off the host (or to the coordinator) to make that evident too.

The log holds what was asked and what was answered (phases, shapes, counts,
reasons), never values of rows or statistics.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cityfed.errors import CityFedError

__all__ = ["GENESIS", "AuditLog", "AuditProblem", "entry_hash"]

#: ``prev`` of the first entry.
GENESIS = "0" * 64


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of an entry's canonical JSON, its ``hash`` field left out."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    """Where a log stops being trustworthy: the line (1-based) and what is wrong."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class AuditLog:
    """An append-only log file with a head file beside it (both 0600).

    Parameters
    ----------
    path : Path
        The log; its folder is created (0700) on the first append.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head = path.with_name(path.name + ".head")

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Add one entry (under an exclusive lock) and return it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            seq, prev = self._last(handle)
            entry: dict[str, Any] = {
                "seq": seq + 1,
                "time": round(time.time(), 3),
                "kind": kind,
                **fields,
                "prev": prev,
            }
            entry["hash"] = entry_hash(entry)
            handle.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            self._write_head(entry["seq"], entry["hash"])
        return entry

    def _last(self, handle: Any) -> tuple[int, str]:
        handle.seek(0)
        seq, prev = -1, GENESIS
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                    seq, prev = int(record["seq"]), str(record["hash"])
                except (ValueError, KeyError, TypeError):
                    raise CityFedError(
                        f"{self.path}: audit log is damaged; run `verify` and keep a copy"
                    ) from None
        return seq, prev

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.head.with_name(self.head.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"seq": seq, "hash": digest}) + "\n")
        os.replace(tmp, self.head)

    def entries(self) -> Iterator[dict[str, Any]]:
        """The entries in order (no verification; see :meth:`verify`)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            if line.strip():
                yield json.loads(line)

    def verify(self) -> list[AuditProblem]:
        """Every break of the chain, first one first (empty: the log is intact)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        problems: list[AuditProblem] = []
        seq, prev = -1, GENESIS
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                stated_seq, stated_prev, stated_hash = entry["seq"], entry["prev"], entry["hash"]
            except (ValueError, KeyError, TypeError):
                problems.append(AuditProblem(number, "not an audit entry"))
                continue
            if stated_seq != seq + 1:
                what = "missing before it" if stated_seq > seq + 1 else "out of order"
                problems.append(
                    AuditProblem(number, f"entry {stated_seq} follows {seq}: entries {what}")
                )
            elif stated_prev != prev:
                problems.append(AuditProblem(number, "does not chain to the line before"))
            if entry_hash(entry) != stated_hash:
                problems.append(AuditProblem(number, "content changed after it was written"))
            seq, prev = int(stated_seq), str(stated_hash)
        problems.extend(self._check_head(len(lines), seq, prev))
        return problems

    def _check_head(self, lines: int, seq: int, last: str) -> list[AuditProblem]:
        try:
            head = json.loads(self.head.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if lines:
                return [AuditProblem(lines, f"the head file {self.head.name} is missing")]
            return []
        except ValueError:
            return [AuditProblem(lines, f"the head file {self.head.name} is damaged")]
        if head.get("seq") != seq or head.get("hash") != last:
            return [
                AuditProblem(
                    lines,
                    f"the log ends at entry {seq}, but {self.head.name} recorded entry "
                    f"{head.get('seq')}: entries were removed or replaced at the end",
                )
            ]
        return []
