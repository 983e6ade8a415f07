"""What the service serves, read from the coordinator's model store.

One folder per run under ``models/`` (named by UTC time, so names sort by age):
``model.pb`` once published, ``report.json``, ``run.json``, ``progress.jsonl``.
Models are read once per file version and kept; nothing here writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from cityfed.errors import CityFedError
from cityfed.model.proto import read_model
from cityfed.model.record import FederatedModel
from cityfed.ops.progress import PROGRESS_FILE, ProgressEvent, read_events

__all__ = ["RUN_ID", "Catalog", "NotFoundError", "RunInfo"]

#: What a run id looks like (``cityfed run`` labels): anything else is refused.
RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")


class NotFoundError(CityFedError):
    """No such run, model or report."""


@dataclass(frozen=True)
class RunInfo:
    """A run as its folder tells it."""

    run_id: str
    federation: str
    status: str  # "running", "published" or "failed"
    message: str
    cities: tuple[str, ...]
    rounds: int


class Catalog:
    """Runs and models of one model store."""

    def __init__(self, models: Path) -> None:
        self.models = models
        self._cache: dict[Path, tuple[int, FederatedModel]] = {}

    def run_ids(self) -> list[str]:
        """Every run's id, newest first."""
        if not self.models.is_dir():
            return []
        return sorted((p.name for p in self.models.iterdir() if RUN_ID.match(p.name)), reverse=True)

    def folder(self, run_id: str) -> Path:
        """The run's folder; NotFoundError unless it exists."""
        if not RUN_ID.match(run_id) or not (self.models / run_id).is_dir():
            raise NotFoundError(f"run {run_id!r} not found")
        return self.models / run_id

    def model(self, run_id: str) -> FederatedModel:
        """The published model of a run (read once per version of its file)."""
        path = self.folder(run_id) / "model.pb"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            raise NotFoundError(f"run {run_id!r} published no model") from None
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, read_model(path))
            self._cache[path] = cached
        return cached[1]

    def published(self, federation: str = "") -> list[str]:
        """Runs with a model, newest first, of ``federation`` if given."""
        found = []
        for run_id in self.run_ids():
            if not (self.models / run_id / "model.pb").is_file():
                continue
            if federation and self.model(run_id).federation != federation:
                continue
            found.append(run_id)
        return found

    def latest(self, federation: str) -> str:
        """The newest published run of ``federation``."""
        runs = self.published(federation)
        if not runs:
            raise NotFoundError(f"federation {federation!r} has no published model")
        return runs[0]

    def report_json(self, run_id: str) -> str:
        """The run's ``report.json``, as published."""
        try:
            return (self.folder(run_id) / "report.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"run {run_id!r} has no report") from None

    def events(self, run_id: str, offset: int = 0) -> tuple[list[ProgressEvent], int]:
        """Progress events of a run from byte ``offset``, and the next offset."""
        return read_events(self.folder(run_id) / PROGRESS_FILE, offset)

    def run(self, run_id: str) -> RunInfo:
        """What the run's folder says about it."""
        folder = self.folder(run_id)
        try:
            federation = str(json.loads((folder / "run.json").read_text())["federation"])
        except (OSError, ValueError, KeyError):
            federation = ""
        events, _ = self.events(run_id)
        message = events[-1].message if events else "submitted"
        if (folder / "model.pb").is_file():
            model = self.model(run_id)
            return RunInfo(
                run_id, model.federation, "published", message, model.cities, model.rounds
            )
        failed = bool(events) and events[-1].kind == "error"
        return RunInfo(run_id, federation, "failed" if failed else "running", message, (), 0)
