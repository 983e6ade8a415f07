"""Training runs on a deployed coordinator: submit through the Control API, wait.

A run's folder in the model store receives a copy of its ``federation.toml``, its
run config, the ServerApp's ``progress.jsonl`` and, when it succeeds, the
artifacts ``model.pb``, ``report.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cityfed.config.spec import load_federation
from cityfed.errors import CityFedError, FederationError
from cityfed.files import write_atomic
from cityfed.ops.progress import PROGRESS_FILE, ProgressEvent, ProgressFollower
from cityfed_server.enrolment import active_cities
from cityfed_server.flwr_cli import CONNECTION, flwr_json
from cityfed_server.layout import CoordinatorLayout, load_config

__all__ = ["run_federation"]


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _status(layout: CoordinatorLayout, flwr_run_id: int) -> str:
    answer = flwr_json(["ls", CONNECTION, "--run-id", str(flwr_run_id)], layout.flwr_home)
    runs = answer.get("runs") or []
    return str(runs[0].get("status", "")) if runs else ""


def run_federation(
    layout: CoordinatorLayout,
    federation: Path | None = None,
    *,
    expected_cities: int | None = None,
    wait_seconds: float = 120.0,
    timeout: float = 3600.0,
    on_event: Callable[[ProgressEvent], None] = lambda event: None,
) -> Path:
    """Submit one run and wait for its artifacts; returns the run's folder.

    Parameters
    ----------
    layout : CoordinatorLayout
        The coordinator's state folder (this must run on the coordinator host).
    federation : Path, optional
        The spec to train; default the one the coordinator was started with.
    expected_cities : int, optional
        Cities to wait for before starting; default every enrolled city.
    wait_seconds : float
        How long the ServerApp waits for them; then it goes on with those
        connected, if at least ``min_cities``.
    timeout : float
        Give up waiting after this many seconds.
    on_event : callable
        Called with each progress event of the ServerApp.

    Raises
    ------
    FederationError
        If the run failed; the message says why.
    """
    config = load_config(layout)
    spec_path = Path(federation or config.federation).resolve()
    fed = load_federation(spec_path)
    label = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    out = layout.models / label
    out.mkdir(parents=True)
    write_atomic(out / "federation.toml", spec_path.read_bytes())
    expected = expected_cities if expected_cities is not None else len(active_cities(layout))
    run_config = out / "run-config.toml"
    run_config.write_text(
        f"federation = {_toml_string(str(out / 'federation.toml'))}\n"
        f"out-dir = {_toml_string(str(out))}\n"
        f"run-id = {_toml_string(label)}\n"
        f"expected-cities = {max(expected, 0)}\n"
        f"wait-seconds = {float(wait_seconds)}\n"
        f"enrolment = {_toml_string(str(layout.enrolment))}\n",
        encoding="utf-8",
    )
    answer = flwr_json(
        ["run", str(layout.app_dir), CONNECTION, "--run-config", str(run_config)], layout.flwr_home
    )
    flwr_run_id = int(answer["run-id"])
    write_atomic(
        out / "run.json",
        json.dumps({"run": label, "flwr_run_id": flwr_run_id, "federation": fed.name}).encode(),
    )
    on_event(ProgressEvent("info", f"run {label} submitted (Flower run {flwr_run_id})", {}))

    follower = ProgressFollower(out / PROGRESS_FILE, on_event)
    deadline, next_check = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        final = follower.poll()
        if final is None and time.monotonic() >= next_check:
            status = _status(layout, flwr_run_id)
            if status.startswith("finished"):
                final = follower.poll()  # the ServerApp may have written it just now
                if final is None:
                    raise FederationError(
                        f"run {label}: Flower reports {status!r} without a model; "
                        f"see {layout.state / 'logs' / 'superlink.log'}"
                    )
            next_check = time.monotonic() + 3.0
        if final is not None:
            if final.kind == "error":
                raise FederationError(f"run {label}: {final.message}")
            return out
        time.sleep(0.5)
    raise CityFedError(f"run {label}: no result within {timeout:g} s")
