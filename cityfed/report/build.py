"""``report.json`` (stable keys) and ``report.html`` of a run."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cityfed.config.spec import FederationSpec
from cityfed.federation.evaluation import CityEvaluation, evaluation_to_json
from cityfed.federation.outcome import CityOutcome, RunResult
from cityfed.files import write_atomic
from cityfed.version import __version__

__all__ = ["build_report", "write_report"]


def _federation(fed: FederationSpec) -> dict[str, Any]:
    data = asdict(fed)
    data.pop("source", None)
    return data


def _city(outcome: CityOutcome) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "status": outcome.status,
        "reason": outcome.reason or None,
        "rows_read": outcome.rows_read,
        "rows_used": outcome.rows_used,
        "rows_dropped": outcome.rows_dropped,
        "drop_reasons": dict(outcome.drop_reasons),
        "rows_train": outcome.rows_train,
        "rows_holdout": outcome.rows_holdout,
        **evaluation_to_json(outcome.evaluation or CityEvaluation()),
    }
    return entry


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def build_report(
    fed: FederationSpec, result: RunResult, pooled_check: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The machine-readable report of a run."""
    model = result.model
    report: dict[str, Any] = _clean(
        {
            "cityfed_version": __version__,
            "created_at": model.created_at,
            "run_id": model.run_id,
            "federation": _federation(fed),
            "model": {
                "kind": model.kind,
                "task": model.task,
                "algorithm": model.algorithm,
                "features": list(model.feature_names),
                "units": [f.unit for f in model.features],
                "target": {"name": model.target.name, "unit": model.target.unit},
                "coef": model.coef.tolist(),
                "intercept": model.intercept,
                "rounds": model.rounds,
                "converged": model.converged,
                "training_rows": model.training_rows,
                "cities": list(model.cities),
                "metrics": dict(model.metrics),
            },
            "cities": {name: _city(o) for name, o in sorted(result.cities.items())},
            "pooled_check": pooled_check,
            "timing": {
                "wall_seconds": round(result.wall_seconds, 3),
                "aggregation_seconds": round(result.aggregation_seconds, 6),
            },
        }
    )
    return report


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` atomically."""
    from cityfed.report.html import render_html

    text = json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_atomic(out_dir / "report.json", text.encode("utf-8"))
    write_atomic(out_dir / "report.html", render_html(report).encode("utf-8"))
