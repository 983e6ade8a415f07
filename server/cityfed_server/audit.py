"""The coordinator's audit trail: who started what, enrolled whom, published which model.

An append-only, hash-chained log (:mod:`cityfed.ops.audit`) in the coordinator's
state folder: coordinator starts, enrolments and revocations, runs submitted (by
whom, which federation and its digest, the app's hash) and their outcome, and each
published model with the sha256 of its ``model.pb``. ``cityfed coordinator audit
show|verify`` reads and checks it.
"""

from __future__ import annotations

import getpass
import hashlib
import os
from pathlib import Path
from typing import Any

from cityfed.ops.audit import AuditLog
from cityfed_server.layout import CoordinatorLayout

__all__ = ["coordinator_audit", "file_sha256", "record"]


def coordinator_audit(layout: CoordinatorLayout) -> AuditLog:
    """The coordinator's audit log."""
    return AuditLog(layout.state / "audit.jsonl")


def file_sha256(path: Path) -> str:
    """``sha256:`` of a file's bytes."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def record(layout: CoordinatorLayout, kind: str, **fields: Any) -> None:
    """Append one event, with the local user who caused it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    coordinator_audit(layout).append(kind, user=user, uid=os.getuid(), **fields)
