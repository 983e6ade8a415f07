"""Progress events of a run, appended as JSON lines so another process can follow.

The ServerApp runs in a process of its own (the simulation engine's, or the
SuperLink's); the CLI that waits for it reads the same file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "PROGRESS_FILE",
    "EventKind",
    "Progress",
    "ProgressEvent",
    "ProgressFollower",
    "ProgressLog",
    "read_events",
]

#: Name of the progress file the ServerApp writes in its output folder.
PROGRESS_FILE = "progress.jsonl"


#: What an event says: a step (``info``), a training round, a city's news, or the end.
EventKind = Literal["info", "round", "city", "done", "error"]
_KINDS: dict[str, EventKind] = {k: k for k in ("info", "round", "city", "done", "error")}


class Progress(Protocol):
    """Where a run reports its steps: ``progress(kind, message, **fields)``."""

    def __call__(self, kind: EventKind, message: str, **fields: Any) -> None:
        """Report one step."""


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a run; ``done`` and ``error`` are final."""

    kind: EventKind
    message: str
    fields: dict[str, Any]


class ProgressLog:
    """Appends events to ``path`` (one JSON object per line, flushed at once).

    The folder must exist: the log never creates it, so that a ServerApp outliving
    a run its coordinator gave up on cannot bring the run's folder back.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, kind: EventKind, message: str, **fields: Any) -> None:
        """Record one event."""
        record = {"time": time.time(), "kind": kind, "message": message, **fields}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def read_events(path: Path, offset: int = 0) -> tuple[list[ProgressEvent], int]:
    """Events written since byte ``offset``, and the new offset (whole lines only)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    events = []
    for line in chunk[:end].splitlines():
        record = json.loads(line)
        record.pop("time", None)
        kind = _KINDS.get(str(record.pop("kind", "")), "info")
        events.append(ProgressEvent(kind, str(record.pop("message", "")), record))
    return events, offset + end


class ProgressFollower:
    """Follows a progress file from another process until its final event.

    Parameters
    ----------
    path : Path
        The progress file (it may not exist yet).
    on_event : callable
        Called with every event, in order.
    """

    def __init__(self, path: Path, on_event: Callable[[ProgressEvent], None]) -> None:
        self.path = path
        self.on_event = on_event
        self._offset = 0

    def poll(self) -> ProgressEvent | None:
        """Hand on the new events; return the final one (``done``/``error``) once seen."""
        events, self._offset = read_events(self.path, self._offset)
        final = None
        for event in events:
            self.on_event(event)
            if event.kind in ("done", "error") and final is None:
                final = event
        return final
