"""Holdout scores: R², RMSE and MAE for regression; accuracy, log-loss, ROC AUC."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import log_loss, roc_auc_score

__all__ = ["Scores", "calibration_bins", "classification_scores", "regression_scores"]

FloatArray = NDArray[np.float64]
Scores = dict[str, float | None]


def regression_scores(y: FloatArray, predicted: FloatArray) -> Scores:
    """R² (None when y is constant or has fewer than 2 rows), RMSE and MAE."""
    if y.size == 0:
        return {"r2": None, "rmse": None, "mae": None}
    residual = y - predicted
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / ss_tot if y.size >= 2 and ss_tot > 0 else None
    return {
        "r2": r2,
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "mae": float(np.mean(np.abs(residual))),
    }


def classification_scores(y: FloatArray, proba: FloatArray) -> Scores:
    """Accuracy, log-loss and ROC AUC (None with a single class) of P(class 1)."""
    if y.size == 0:
        return {"accuracy": None, "log_loss": None, "roc_auc": None}
    p = np.clip(proba, 1e-15, 1.0 - 1e-15)
    both = np.unique(y).size == 2
    return {
        "accuracy": float(np.mean((p > 0.5) == (y == 1.0))),
        "log_loss": float(log_loss(y, p, labels=[0.0, 1.0])),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
    }


def calibration_bins(
    observed: FloatArray, predicted: FloatArray, *, bins: int = 10, min_count: int = 5
) -> list[dict[str, float]]:
    """Predicted-vs-observed as bin means: an aggregate a city may share.

    Rows are sorted by prediction and cut into ``bins`` groups of equal size; each
    group gives its mean prediction, mean observation and count. Groups with fewer
    than ``min_count`` rows are left out, so no single row is revealed.
    """
    n = observed.size
    if n < min_count:
        return []
    order = np.argsort(predicted, kind="stable")
    result = []
    for chunk in np.array_split(order, min(bins, n // min_count)):
        if chunk.size >= min_count:
            result.append(
                {
                    "predicted": float(predicted[chunk].mean()),
                    "observed": float(observed[chunk].mean()),
                    "count": float(chunk.size),
                }
            )
    return result
