"""Write a run's artifacts: ``model.pb``, ``report.json``, ``report.html``."""

from __future__ import annotations

from pathlib import Path

from cityfed.config.spec import FederationSpec
from cityfed.federation.outcome import RunResult
from cityfed.model.proto import write_model
from cityfed.report.build import build_report, write_report
from cityfed.report.types import Report

__all__ = ["publish"]


def publish(fed: FederationSpec, result: RunResult, out_dir: Path) -> Report:
    """Write the three artifacts of a run into ``out_dir``.

    Parameters
    ----------
    fed : FederationSpec
        The federation the run trained.
    result : RunResult
        The fitted model and every city's outcome.
    out_dir : Path
        The run's folder (created if needed).

    Returns
    -------
    Report
        The report written as ``report.json`` and ``report.html``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(fed, result)
    write_model(result.model, out_dir / "model.pb")
    write_report(report, out_dir)
    return report
