"""A city's holdout evaluation: what it reports of the three models it scored.

Only aggregates: scores on the city's holdout rows, the personalisation strength
the city chose, and calibration bins of at least ``min_count`` rows each. The JSON
form is the ``holdout`` / ``personalization`` / ``calibration`` part of a city's
entry in ``report.json``, and also what travels in the evaluation reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cityfed.core.metrics import CalibrationBin, ClassificationScores, RegressionScores, Scores

__all__ = [
    "CityEvaluation",
    "CurvePoint",
    "HoldoutScores",
    "evaluation_from_json",
    "evaluation_to_json",
]


@dataclass(frozen=True)
class HoldoutScores:
    """Scores of the three models on the city's holdout rows.

    ``local_only`` is None when the city cannot fit a model alone (a single class
    among its training rows).
    """

    local_only: Scores | None
    federated: Scores
    personalized: Scores


@dataclass(frozen=True)
class CurvePoint:
    """The city's holdout error when it trains on only ``rows`` of its training rows.

    ``local_only``: a model of those rows alone; ``personalized``: the federated
    model personalised to those rows (the federated model itself does not change).
    The error is the RMSE (regression, counts) or the log-loss (classification); None when
    a model cannot be fitted (one class among those rows).
    """

    rows: int
    local_only: float | None
    personalized: float | None


@dataclass(frozen=True)
class CityEvaluation:
    """What a city reports after scoring; ``holdout`` is None without holdout rows."""

    holdout: HoldoutScores | None = None
    tau: float | None = None
    calibration: tuple[CalibrationBin, ...] = ()
    learning_curve: tuple[CurvePoint, ...] = ()


def _scores_to_json(scores: Scores | None) -> dict[str, float | None] | None:
    return None if scores is None else asdict(scores)


def _number(value: object, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"evaluation: {key} is not a number: {value!r}")
    return float(value)


def _scores_from_json(data: object) -> Scores | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValueError(f"evaluation: scores are not an object: {data!r}")
    if "r2" in data:
        return RegressionScores(
            *(_number(data.get(k), k) for k in ("r2", "rmse", "mae", "deviance", "d2")),
        )
    return ClassificationScores(
        *(_number(data.get(k), k) for k in ("accuracy", "log_loss", "roc_auc")),
        **{k: _number(data.get(k), k) for k in ("base_rate", "precision", "recall")},
    )


def evaluation_to_json(evaluation: CityEvaluation) -> dict[str, Any]:
    """The JSON object of an evaluation (``report.json`` keys)."""
    holdout = evaluation.holdout
    return {
        "holdout": None
        if holdout is None
        else {
            "local_only": _scores_to_json(holdout.local_only),
            "federated": _scores_to_json(holdout.federated),
            "personalized": _scores_to_json(holdout.personalized),
        },
        "personalization": None if evaluation.tau is None else {"tau": evaluation.tau},
        "calibration": [asdict(b) for b in evaluation.calibration],
        "learning_curve": [asdict(point) for point in evaluation.learning_curve],
    }


def evaluation_from_json(data: Mapping[str, Any]) -> CityEvaluation:
    """Parse the JSON object of an evaluation.

    Raises
    ------
    ValueError
        If a field has the wrong shape.
    """
    holdout = data.get("holdout")
    scores: HoldoutScores | None = None
    if holdout is not None:
        if not isinstance(holdout, Mapping):
            raise ValueError("evaluation: holdout is not an object")
        federated = _scores_from_json(holdout.get("federated"))
        personalized = _scores_from_json(holdout.get("personalized"))
        if federated is None or personalized is None:
            raise ValueError("evaluation: holdout lacks federated or personalized scores")
        scores = HoldoutScores(
            _scores_from_json(holdout.get("local_only")), federated, personalized
        )
    personalization = data.get("personalization")
    tau = None
    if isinstance(personalization, Mapping):
        tau = _number(personalization.get("tau"), "tau")
    bins = []
    for entry in data.get("calibration") or ():
        if not isinstance(entry, Mapping):
            raise ValueError("evaluation: a calibration bin is not an object")
        predicted = _number(entry.get("predicted"), "predicted")
        observed = _number(entry.get("observed"), "observed")
        count = _number(entry.get("count"), "count")
        if predicted is None or observed is None or count is None:
            raise ValueError("evaluation: a calibration bin lacks a value")
        bins.append(CalibrationBin(predicted, observed, int(count)))
    curve = []
    for entry in data.get("learning_curve") or ():
        if not isinstance(entry, Mapping):
            raise ValueError("evaluation: a learning-curve point is not an object")
        rows = _number(entry.get("rows"), "rows")
        if rows is None or rows < 1:
            raise ValueError("evaluation: a learning-curve point lacks its rows")
        curve.append(
            CurvePoint(
                int(rows),
                _number(entry.get("local_only"), "local_only"),
                _number(entry.get("personalized"), "personalized"),
            )
        )
    return CityEvaluation(scores, tau, tuple(bins), tuple(curve))
