"""Holdout scores: R², RMSE and MAE; accuracy, log-loss, ROC AUC, base rate, precision, recall.

Pure numpy/scipy, checked against scikit-learn's metrics in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from cityfed.typing import FloatArray

__all__ = [
    "CalibrationBin",
    "ClassificationScores",
    "RegressionScores",
    "Scores",
    "calibration_bins",
    "classification_scores",
    "poisson_deviance",
    "probability_bins",
    "regression_scores",
]

#: Probabilities are clipped to [EPS, 1 - EPS] before the log-loss.
_EPS = 1e-15


@dataclass(frozen=True)
class RegressionScores:
    """R² (None when y is constant or has fewer than 2 rows), RMSE and MAE.

    For counts also the mean Poisson deviance and D², the share of the deviance
    of the constant (mean) prediction that the model explains
    (sklearn's ``mean_poisson_deviance`` and ``d2_tweedie_score(power=1)``).
    """

    r2: float | None
    rmse: float | None
    mae: float | None
    deviance: float | None = None
    d2: float | None = None


@dataclass(frozen=True)
class ClassificationScores:
    """Scores of P(class 1) on labelled rows, the class predicted when P > 0.5.

    ``roc_auc`` is None with a single class; ``precision`` when nothing is
    predicted positive; ``recall`` when no row is positive. ``base_rate`` is the
    share of positive rows: what always answering "no" would get wrong.
    """

    accuracy: float | None
    log_loss: float | None
    roc_auc: float | None
    base_rate: float | None = None
    precision: float | None = None
    recall: float | None = None


Scores = RegressionScores | ClassificationScores


@dataclass(frozen=True)
class CalibrationBin:
    """A group of rows sorted by prediction: mean prediction, mean observation, count."""

    predicted: float
    observed: float
    count: int


def regression_scores(
    y: FloatArray, predicted: FloatArray, *, count: bool = False
) -> RegressionScores:
    """R², RMSE and MAE of predictions (all None without rows); with ``count``, deviance and D²."""
    if y.size == 0:
        return RegressionScores(None, None, None)
    residual = y - predicted
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / ss_tot if y.size >= 2 and ss_tot > 0 else None
    deviance = d2 = None
    if count:
        deviance = poisson_deviance(y, predicted)
        null = poisson_deviance(y, np.full(y.shape, float(y.mean())))
        d2 = 1.0 - deviance / null if y.size >= 2 and null > 0 else None
    return RegressionScores(
        r2=r2,
        rmse=float(np.sqrt(np.mean(residual**2))),
        mae=float(np.mean(np.abs(residual))),
        deviance=deviance,
        d2=d2,
    )


def poisson_deviance(y: FloatArray, mu: FloatArray) -> float:
    """Mean Poisson deviance ``2 mean(y log(y / mu) - y + mu)`` (``0 log 0 = 0``)."""
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(2.0 * np.mean(term - y + mu))


def _roc_auc(y: FloatArray, score: FloatArray) -> float:
    """Mann-Whitney form of the ROC AUC, ties counted half (as scikit-learn)."""
    positive = y == 1.0
    n_pos = int(positive.sum())
    n_neg = int(y.size - n_pos)
    ranks = rankdata(score)  # average ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_scores(y: FloatArray, proba: FloatArray) -> ClassificationScores:
    """Scores of predicted probabilities of class 1 against 0/1 labels."""
    if y.size == 0:
        return ClassificationScores(None, None, None)
    p = np.clip(proba, _EPS, 1.0 - _EPS)
    positive = y == 1.0
    both = bool(positive.any() and (~positive).any())
    said = p > 0.5
    hits = int(np.sum(said & positive))
    return ClassificationScores(
        accuracy=float(np.mean(said == positive)),
        log_loss=float(-np.mean(np.where(positive, np.log(p), np.log1p(-p)))),
        roc_auc=_roc_auc(y, p) if both else None,
        base_rate=float(np.mean(positive)),
        precision=hits / int(said.sum()) if said.any() else None,
        recall=hits / int(positive.sum()) if positive.any() else None,
    )


def probability_bins(
    observed: FloatArray, predicted: FloatArray, *, bins: int = 10, min_count: int = 5
) -> tuple[CalibrationBin, ...]:
    """A reliability diagram's bins: predicted probabilities cut at 0.1, 0.2, ...

    Equal-width bins keep the x axis meaningful when the event is rare (equal-count
    bins would all sit near 0). A bin of fewer than ``min_count`` rows is merged
    into the next one up (the last into the one below), so no bin reveals a row.
    """
    if observed.size < min_count:
        return ()
    edges = np.minimum((np.asarray(predicted) * bins).astype(np.int64), bins - 1)
    groups: list[np.ndarray] = []
    pending = np.zeros(0, dtype=np.int64)
    for k in range(bins):
        members = np.concatenate([pending, np.flatnonzero(edges == k)])
        if members.size >= min_count:
            groups.append(members)
            pending = np.zeros(0, dtype=np.int64)
        else:
            pending = members
    if pending.size:
        if groups:
            groups[-1] = np.concatenate([groups[-1], pending])
        else:
            groups.append(pending)
    return tuple(
        CalibrationBin(
            predicted=float(predicted[g].mean()),
            observed=float(observed[g].mean()),
            count=int(g.size),
        )
        for g in groups
    )


def calibration_bins(
    observed: FloatArray, predicted: FloatArray, *, bins: int = 10, min_count: int = 5
) -> tuple[CalibrationBin, ...]:
    """Predicted-vs-observed as bin means: an aggregate a city may share.

    Rows are sorted by prediction and cut into at most ``bins`` groups of equal
    size, each of at least ``min_count`` rows, so no single row is revealed.
    """
    n = observed.size
    if n < min_count:
        return ()
    order = np.argsort(predicted, kind="stable")
    return tuple(
        CalibrationBin(
            predicted=float(predicted[chunk].mean()),
            observed=float(observed[chunk].mean()),
            count=int(chunk.size),
        )
        for chunk in np.array_split(order, min(bins, n // min_count))
        if chunk.size >= min_count
    )
