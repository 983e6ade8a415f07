"""Training runs on a deployed coordinator: submit through the Control API, wait.

A run's folder in the model store receives a copy of its ``federation.toml``, its
run config, the ServerApp's ``progress.jsonl`` and, when it succeeds, the
artifacts ``model.pb``, ``report.json`` and ``report.html``.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cityfed.config.spec import FederationSpec, federation_digest, load_federation
from cityfed.errors import CityFedError, FederationError
from cityfed.files import privately, write_atomic
from cityfed.ops.progress import PROGRESS_FILE, ProgressEvent, ProgressFollower
from cityfed.report.build import read_report
from cityfed_server.audit import file_sha256, record
from cityfed_server.enrolment import active_cities
from cityfed_server.flwr_cli import CONNECTION, flwr_json
from cityfed_server.layout import CoordinatorLayout, control_prefix, load_config
from cityfed_server.scrub import scrub_database

__all__ = ["run_federation"]


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _run_row(layout: CoordinatorLayout, flwr_run_id: int) -> dict[str, object]:
    """Flower's record of a run (status, app id and hash), from ``flwr ls``."""
    answer = flwr_json(
        ["ls", CONNECTION, "--run-id", str(flwr_run_id)],
        layout.flwr_home,
        prefix=control_prefix(layout),
    )
    runs = answer.get("runs") or []
    return dict(runs[0]) if runs else {}


def _status(layout: CoordinatorLayout, flwr_run_id: int) -> str:
    return str(_run_row(layout, flwr_run_id).get("status", ""))


@privately
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
    flwr_run_id: int | None = None
    try:
        flwr_run_id = _submit(layout, fed, spec_path, out, label, expected_cities, wait_seconds)
        _record_submitted(layout, fed, label, flwr_run_id)
        on_event(ProgressEvent("info", f"run {label} submitted (Flower run {flwr_run_id})", {}))
        _follow(layout, label, flwr_run_id, out, timeout, on_event)
    except CityFedError as exc:
        failure = exc
        if flwr_run_id is not None:
            _purge(layout, flwr_run_id)
        if not layout.superlink.running():
            when = "" if flwr_run_id is not None else " (before Flower accepted it)"
            failure = FederationError(
                f"run {label} is lost: the SuperLink stopped during the run{when} (see "
                f"{layout.superlink.log_file}); `cityfed coordinator start` brings it back, "
                "then submit the run again"
            )
        if not (out / "model.pb").exists():
            shutil.rmtree(out, ignore_errors=True)  # no empty model folder is left
        record(layout, "run-failed", run=label, flwr_run_id=flwr_run_id, reason=str(failure))
        raise failure from None
    _purge(layout, flwr_run_id)
    report = read_report(out / "report.json")
    record(
        layout,
        "model-published",
        run=label,
        model=file_sha256(out / "model.pb"),
        cities=list(report.model.cities),
        rounds=report.model.rounds,
    )
    return out


def _submit(
    layout: CoordinatorLayout,
    fed: FederationSpec,
    spec_path: Path,
    out: Path,
    label: str,
    expected_cities: int | None,
    wait_seconds: float,
) -> int:
    """Write the run's folder, submit it through the Control API; Flower's run id."""
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
        ["run", str(layout.app_dir), CONNECTION, "--run-config", str(run_config)],
        layout.flwr_home,
        prefix=control_prefix(layout),
    )
    flwr_run_id = int(answer["run-id"])
    write_atomic(
        out / "run.json",
        json.dumps({"run": label, "flwr_run_id": flwr_run_id, "federation": fed.name}).encode(),
    )
    return flwr_run_id


def _record_submitted(
    layout: CoordinatorLayout, fed: FederationSpec, label: str, flwr_run_id: int
) -> None:
    """The coordinator's audit entry of a submitted run, with the app Flower recorded."""
    row = _run_row(layout, flwr_run_id)
    record(
        layout,
        "run-submitted",
        run=label,
        flwr_run_id=flwr_run_id,
        federation=fed.name,
        federation_digest=federation_digest(fed),
        app=f"{row.get('fab-id')} {row.get('fab-version')} sha256:{row.get('fab-hash')}",
    )


def _purge(layout: CoordinatorLayout, flwr_run_id: int, patience: float = 30.0) -> None:
    """Once Flower has closed the run (and deleted its messages), scrub their bytes."""
    if layout.superlink.running():
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                if _status(layout, flwr_run_id).startswith("finished"):
                    break
            except CityFedError:
                break
            time.sleep(0.5)
    if not scrub_database(layout.database):
        record(layout, "scrub-incomplete", database=str(layout.database))


def _follow(
    layout: CoordinatorLayout,
    label: str,
    flwr_run_id: int,
    out: Path,
    timeout: float,
    on_event: Callable[[ProgressEvent], None],
) -> None:
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
            return
        time.sleep(0.5)
    raise CityFedError(f"run {label}: no result within {timeout:g} s")
