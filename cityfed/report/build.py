"""The :class:`~cityfed.report.types.Report` of a run, and its published ``report.json``.

``report.json`` is a published format: :func:`report_to_json` writes its keys and
nesting, :func:`report_from_json` reads them back into the same typed report
(``report_from_json(report_to_json(r)) == r``). JSON has no NaN, so non-finite
floats are written as null; a null where the report holds a float reads back as
NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from cityfed.config.spec import (
    Algorithm,
    FederationSpec,
    ModelKind,
    Task,
    VariableSpec,
    federation_from_json,
    federation_to_json,
)
from cityfed.errors import CityFedError
from cityfed.federation.evaluation import (
    CityEvaluation,
    evaluation_from_json,
    evaluation_to_json,
)
from cityfed.federation.outcome import CityOutcome, RoundFate, RunResult, Status
from cityfed.files import write_atomic
from cityfed.model.record import FederatedModel
from cityfed.report.html import render_html
from cityfed.report.types import (
    CoefficientRow,
    Compared,
    InferenceSection,
    ModelSection,
    PooledCheck,
    Report,
    Timing,
)
from cityfed.version import __version__

__all__ = [
    "build_report",
    "read_report",
    "report_from_json",
    "report_json_text",
    "report_to_json",
    "write_report",
]

_T = TypeVar("_T", bound=str)

_KINDS: tuple[ModelKind, ...] = ("linear", "ridge", "logistic", "poisson")
_TASKS: tuple[Task, ...] = ("regression", "classification", "count")
_ALGORITHMS: tuple[Algorithm, ...] = ("exact", "fedavg")
_STATUSES: tuple[Status, ...] = ("ok", "refused", "failed")
_COMPARED: tuple[Compared, ...] = ("prediction", "predicted probability", "expected count")


# --------------------------------------------------------------------------- build


def _outcome(outcome: CityOutcome) -> CityOutcome:
    """The outcome as the report keeps it: an empty evaluation is no evaluation.

    ``report.json`` writes both the same way, so the report cannot tell them apart.
    """
    return replace(outcome, evaluation=None) if outcome.evaluation == CityEvaluation() else outcome


def build_report(fed: FederationSpec, result: RunResult) -> Report:
    """The report of a run, without a pooled check (only a simulation can add one).

    Parameters
    ----------
    fed : FederationSpec
        The federation the run trained.
    result : RunResult
        The fitted model and every city's outcome.

    Returns
    -------
    Report
        The typed report; cities are sorted by name, times rounded to what
        ``report.json`` records.
    """
    model = result.model
    return Report(
        cityfed_version=__version__,
        created_at=model.created_at,
        run_id=model.run_id,
        federation=fed,
        model=ModelSection(
            kind=model.kind,
            task=model.task,
            algorithm=model.algorithm,
            features=model.feature_names,
            units=tuple(f.unit for f in model.features),
            target=model.target,
            coef=tuple(float(c) for c in model.coef),
            intercept=float(model.intercept),
            rounds=model.rounds,
            converged=model.converged,
            training_rows=model.training_rows,
            cities=tuple(model.cities),
            metrics=dict(model.metrics),
            inference=_inference_section(model),
            inference_note=model.inference_note,
            alpha=model.alpha if model.kind in ("ridge", "poisson") else None,
            alpha_path=model.alpha_path,
            secure_aggregation=model.secure_aggregation,
            epsilon=model.epsilon,
            delta=model.delta,
        ),
        cities={name: _outcome(o) for name, o in sorted(result.cities.items())},
        pooled_check=None,
        timing=Timing(
            wall_seconds=round(result.wall_seconds, 3),
            aggregation_seconds=round(result.aggregation_seconds, 6),
        ),
    )


def _inference_section(model: FederatedModel) -> InferenceSection | None:
    inference = model.inference
    if inference is None:
        return None
    rows = inference.rows(("(intercept)", *model.feature_names))
    return InferenceSection(
        coefficients=tuple(CoefficientRow(*row) for row in rows),
        distribution=inference.distribution,
        df_resid=inference.df_resid,
        r2=inference.r2,
        adj_r2=inference.adj_r2,
        rse=inference.rse,
    )


def _inference_from_json(table: _Object) -> InferenceSection | None:
    if table.data.get("inference") is None:
        return None
    section = table.obj("inference")
    rows = tuple(
        CoefficientRow(
            name=row.text("name"),
            estimate=row.number("estimate"),
            std_error=row.number("std_error"),
            statistic=row.number("statistic"),
            p_value=row.number("p_value"),
            ci_low=row.number("ci_low"),
            ci_high=row.number("ci_high"),
        )
        for row in section.objects("coefficients")
    )
    return InferenceSection(
        coefficients=rows,
        distribution=section.choice("distribution", ("t", "normal")),
        df_resid=section.number("df_resid"),
        r2=section.optional_number("r2"),
        adj_r2=section.optional_number("adj_r2"),
        rse=section.optional_number("rse"),
    )


# ----------------------------------------------------------------------- to JSON


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null (JSON has no NaN), tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _federation_to_json(fed: FederationSpec) -> dict[str, Any]:
    """The flat ``federation`` object: :func:`federation_to_json`'s, in field order."""
    nested = json.loads(federation_to_json(fed))
    flat = {**nested["federation"], "target": nested["target"], "features": nested["features"]}
    if "exposure" in nested:
        flat["exposure"] = nested["exposure"]
    out = {f.name: flat[f.name] for f in fields(fed) if f.name in flat}
    if "privacy" in nested:
        out["privacy"] = nested["privacy"]
    return out


def _city_to_json(outcome: CityOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status,
        "reason": outcome.reason or None,
        "rows_read": outcome.rows_read,
        "rows_used": outcome.rows_used,
        "rows_dropped": outcome.rows_dropped,
        "drop_reasons": dict(outcome.drop_reasons),
        "rows_train": outcome.rows_train,
        "rows_holdout": outcome.rows_holdout,
        "rounds": [
            {"round": fate.round, "phase": fate.phase, "status": fate.status}
            for fate in outcome.rounds
        ],
        **evaluation_to_json(outcome.evaluation or CityEvaluation()),
        **(
            {"epsilon_run": outcome.epsilon_run, "epsilon_total": outcome.epsilon_total}
            if outcome.epsilon_run > 0
            else {}
        ),
        **({"counts_withheld": True} if outcome.counts_withheld else {}),
    }


def report_to_json(report: Report) -> dict[str, Any]:
    """The ``report.json`` object of a report.

    Parameters
    ----------
    report : Report
        The report.

    Returns
    -------
    dict
        JSON-ready (``json.dumps(..., allow_nan=False)`` works): non-finite
        floats are null; ``timing.command_seconds`` and ``deployment`` appear
        only when set.
    """
    timing: dict[str, Any] = {
        "wall_seconds": report.timing.wall_seconds,
        "aggregation_seconds": report.timing.aggregation_seconds,
    }
    if report.timing.command_seconds is not None:
        timing["command_seconds"] = report.timing.command_seconds
    data: dict[str, Any] = {
        "cityfed_version": report.cityfed_version,
        "created_at": report.created_at,
        "run_id": report.run_id,
        "federation": _federation_to_json(report.federation),
        "model": asdict(report.model),
        "cities": {name: _city_to_json(o) for name, o in report.cities.items()},
        "pooled_check": None if report.pooled_check is None else asdict(report.pooled_check),
        "timing": timing,
    }
    if report.deployment is not None:
        data["deployment"] = dict(report.deployment)
    cleaned: dict[str, Any] = _clean(data)
    return cleaned


# --------------------------------------------------------------------- from JSON


class _Object:
    """A JSON object of ``report.json`` read key by key.

    Every wrong shape is a :class:`CityFedError` naming the file and the dotted
    key, e.g. ``report.json: cities.EWR.rows_read: expected an integer, got 'x'``.
    """

    def __init__(self, data: object, source: str, path: str) -> None:
        if not isinstance(data, Mapping):
            where = path or "the top level"
            raise CityFedError(f"{source}: {where}: expected a JSON object, got {_shown(data)}")
        self.data: Mapping[str, Any] = data
        self.source = source
        self.path = path

    def where(self, key: str) -> str:
        """The dotted key of ``key`` in this object."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expected: str, value: object) -> CityFedError:
        """An error saying what ``key`` should have held."""
        return CityFedError(
            f"{self.source}: {self.where(key)}: expected {expected}, got {_shown(value)}"
        )

    def get(self, key: str) -> object:
        """The value of a required key."""
        if key not in self.data:
            raise CityFedError(f"{self.source}: {self.where(key)}: missing key")
        return self.data[key]

    def obj(self, key: str) -> _Object:
        """A nested object."""
        return _Object(self.get(key), self.source, self.where(key))

    def text(self, key: str) -> str:
        """A string."""
        value = self.get(key)
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def integer(self, key: str) -> int:
        """An integer."""
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "an integer", value)
        return value

    def boolean(self, key: str) -> bool:
        """``true`` or ``false``."""
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def number(self, key: str) -> float:
        """A float; null reads as NaN (the writer turned a non-finite float into null)."""
        value = self.optional_number(key)
        return math.nan if value is None else value

    def optional_number(self, key: str) -> float | None:
        """A float or null."""
        return self._number(key, self.get(key), "a number or null")

    def numbers(self, key: str) -> tuple[float, ...]:
        """A list of floats (null items read as NaN)."""
        value = self.get(key)
        if not isinstance(value, list):
            raise self.fail(key, "a list of numbers", value)
        parsed = [self._number(key, item, "a list of numbers") for item in value]
        return tuple(math.nan if item is None else item for item in parsed)

    def objects(self, key: str, *, optional: bool = False) -> list[_Object]:
        """A list of objects (``optional``: an absent key is an empty list)."""
        if optional and key not in self.data:
            return []
        value = self.get(key)
        if not isinstance(value, list):
            raise self.fail(key, "a list of objects", value)
        return [
            _Object(item, self.source, f"{self.where(key)}[{i}]") for i, item in enumerate(value)
        ]

    def strings(self, key: str) -> tuple[str, ...]:
        """A list of strings."""
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def choice(self, key: str, options: tuple[_T, ...]) -> _T:
        """One of ``options``."""
        value = self.get(key)
        for option in options:
            if value == option:
                return option
        raise self.fail(key, "one of " + ", ".join(repr(o) for o in options), value)

    def _number(self, key: str, value: object, expected: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, expected, value)
        return float(value)


def _shown(value: object, limit: int = 60) -> str:
    """A short ``repr`` of a wrong value, for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _federation_from_json(table: _Object) -> FederationSpec:
    """Parse the flat ``federation`` object with the spec's own validation."""
    fed = table.obj("federation")
    variables = ("target", "features", "exposure", "privacy")
    settings = {k: v for k, v in fed.data.items() if k not in variables}
    document = {
        "federation": settings,
        "target": fed.get("target"),
        "features": fed.get("features"),
    }
    if fed.data.get("exposure") is not None:
        document["exposure"] = fed.data["exposure"]
    if fed.data.get("privacy") is not None:
        document["privacy"] = fed.data["privacy"]
    text = json.dumps(document)
    return federation_from_json(text, source=f"{table.source}: federation")


def _model_from_json(table: _Object) -> ModelSection:
    target, metrics = table.obj("target"), table.obj("metrics")
    return ModelSection(
        kind=table.choice("kind", _KINDS),
        task=table.choice("task", _TASKS),
        algorithm=table.choice("algorithm", _ALGORITHMS),
        features=table.strings("features"),
        units=table.strings("units"),
        target=VariableSpec(name=target.text("name"), unit=target.text("unit")),
        coef=table.numbers("coef"),
        intercept=table.number("intercept"),
        rounds=table.integer("rounds"),
        converged=table.boolean("converged"),
        training_rows=table.integer("training_rows"),
        cities=table.strings("cities"),
        metrics={name: metrics.number(name) for name in metrics.data},
        inference=_inference_from_json(table),
        inference_note=table.text("inference_note") if "inference_note" in table.data else "",
        alpha=table.number("alpha") if table.data.get("alpha") is not None else None,
        alpha_path=_alpha_path(table),
        secure_aggregation=table.boolean("secure_aggregation")
        if "secure_aggregation" in table.data
        else False,
        epsilon=table.number("epsilon") if "epsilon" in table.data else 0.0,
        delta=table.number("delta") if "delta" in table.data else 0.0,
    )


def _alpha_path(table: _Object) -> tuple[tuple[float, float], ...]:
    """``model.alpha_path``: ``[[alpha, score], ...]`` (empty when absent)."""
    raw = table.data.get("alpha_path") or []
    if not isinstance(raw, list) or not all(
        isinstance(p, list)
        and len(p) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        for p in raw
    ):
        raise table.fail("alpha_path", "a list of [alpha, score] pairs", raw)
    return tuple((float(a), float(v)) for a, v in raw)


def _city_from_json(name: str, table: _Object) -> CityOutcome:
    reason = table.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise table.fail("reason", "a string or null", reason)
    try:
        evaluation: CityEvaluation | None = evaluation_from_json(table.data)
    except (ValueError, TypeError) as exc:
        raise CityFedError(f"{table.source}: {table.path}: {exc}") from None
    drops = table.obj("drop_reasons")
    return CityOutcome(
        city=name,
        status=table.choice("status", _STATUSES),
        reason=reason or "",
        rows_read=table.integer("rows_read"),
        rows_train=table.integer("rows_train"),
        drop_reasons={reason: drops.integer(reason) for reason in drops.data},
        evaluation=None if evaluation == CityEvaluation() else evaluation,
        rounds=tuple(_fate_from_json(fate) for fate in table.objects("rounds", optional=True)),
        epsilon_run=table.number("epsilon_run") if "epsilon_run" in table.data else 0.0,
        epsilon_total=table.number("epsilon_total") if "epsilon_total" in table.data else 0.0,
        counts_withheld=table.boolean("counts_withheld")
        if "counts_withheld" in table.data
        else False,
    )


def _fate_from_json(table: _Object) -> RoundFate:
    return RoundFate(
        round=table.integer("round"),
        phase=table.text("phase"),
        status=table.choice("status", _STATUSES),
    )


def _pooled_from_json(top: _Object) -> PooledCheck | None:
    if top.get("pooled_check") is None:
        return None
    table = top.obj("pooled_check")
    return PooledCheck(
        max_abs_prediction_diff=table.number("max_abs_prediction_diff"),
        relative_to_std_y=table.optional_number("relative_to_std_y"),
        rows=table.integer("rows"),
        reference=table.text("reference"),
        compared=table.choice("compared", _COMPARED),
        within_tolerance=table.boolean("within_tolerance"),
        private=table.boolean("private") if "private" in table.data else False,
        cost_metric=table.text("cost_metric") if table.data.get("cost_metric") else "",
        cost=_cost(table),
    )


def _cost(table: _Object) -> dict[str, tuple[float, float]]:
    """``pooled_check.cost``: ``{city: [private, non-private]}`` (empty when absent)."""
    raw = table.data.get("cost") or {}
    if not isinstance(raw, dict) or not all(
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        for v in raw.values()
    ):
        raise table.fail("cost", "an object of [private, non-private] score pairs", raw)
    return {str(k): (float(v[0]), float(v[1])) for k, v in raw.items()}


def _timing_from_json(table: _Object) -> Timing:
    return Timing(
        wall_seconds=table.number("wall_seconds"),
        aggregation_seconds=table.number("aggregation_seconds"),
        command_seconds=table.optional_number("command_seconds")
        if "command_seconds" in table.data
        else None,
    )


def report_from_json(data: object, source: str) -> Report:
    """Read a parsed ``report.json`` back into a :class:`Report`.

    Parameters
    ----------
    data : object
        The parsed JSON document.
    source : str
        How to name the document in error messages (usually its path).

    Returns
    -------
    Report
        The typed report.

    Raises
    ------
    CityFedError
        On a missing key or a wrong type; the one-line message names ``source``
        and the dotted key.
    """
    top = _Object(data, source, "")
    cities = top.obj("cities")
    deployment = None
    if top.data.get("deployment") is not None:
        facts = top.obj("deployment")
        deployment = {key: facts.text(key) for key in facts.data}
    return Report(
        cityfed_version=top.text("cityfed_version"),
        created_at=top.text("created_at"),
        run_id=top.text("run_id"),
        federation=_federation_from_json(top),
        model=_model_from_json(top.obj("model")),
        cities={name: _city_from_json(name, cities.obj(name)) for name in cities.data},
        pooled_check=_pooled_from_json(top),
        timing=_timing_from_json(top.obj("timing")),
        deployment=deployment,
    )


def read_report(path: Path) -> Report:
    """Read a ``report.json`` file.

    Raises
    ------
    CityFedError
        If the file cannot be read, is not JSON or is malformed (see
        :func:`report_from_json`).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CityFedError(f"{path}: cannot read the report ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CityFedError(f"{path}: not a JSON report ({exc})") from None
    return report_from_json(data, str(path))


# ------------------------------------------------------------------------- write


def report_json_text(report: Report) -> str:
    """The text of ``report.json``: :func:`report_to_json`, indented, with a final newline."""
    return json.dumps(report_to_json(report), indent=2, allow_nan=False) + "\n"


def write_report(report: Report, out_dir: Path) -> None:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` atomically.

    Parameters
    ----------
    report : Report
        The report.
    out_dir : Path
        The run's folder (created if needed).
    """
    write_atomic(out_dir / "report.json", report_json_text(report).encode("utf-8"))
    write_atomic(out_dir / "report.html", render_html(report).encode("utf-8"))
