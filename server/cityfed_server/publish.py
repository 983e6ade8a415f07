"""Write a run's artifacts: ``model.pb``, ``report.json``, ``report.html``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cityfed.config.spec import FederationSpec
from cityfed.federation.outcome import RunResult
from cityfed.model.proto import write_model
from cityfed.report.build import build_report, write_report

__all__ = ["publish"]


def publish(
    fed: FederationSpec,
    result: RunResult,
    out_dir: Path,
    *,
    pooled_check: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the three artifacts of a run into ``out_dir``; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(fed, result, pooled_check)
    write_model(result.model, out_dir / "model.pb")
    write_report(report, out_dir)
    return report
