"""The pooled check: sklearn fitted on every city's training rows in one table.

Only a simulation holds all cities' rows on one machine; there the tool compares
the federated model with the centralised fit it claims to equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.data.city_data import CityData
from cityfed.model.record import FederatedModel
from cityfed.report.types import PooledCheck

__all__ = ["TOLERANCE_PROBABILITY", "TOLERANCE_REGRESSION", "pooled_check"]

#: Max |prediction difference| allowed, as a fraction of std(y).
TOLERANCE_REGRESSION = 1e-6
#: Max |difference| of predicted probabilities allowed.
TOLERANCE_PROBABILITY = 1e-5


def _reference(model: FederatedModel) -> tuple[Any, str]:
    estimator: Any
    if model.kind == "logistic":
        estimator = LogisticRegression(C=model.C, tol=1e-12, max_iter=10_000)
        name = f"LogisticRegression(C={model.C:g}, tol=1e-12)"
    elif model.kind == "ridge":
        estimator, name = Ridge(alpha=model.alpha), f"Ridge(alpha={model.alpha:g})"
    else:
        estimator, name = LinearRegression(), "LinearRegression()"
    if model.standardize:
        return make_pipeline(
            StandardScaler(), estimator
        ), f"sklearn make_pipeline(StandardScaler(), {name})"
    # Centred first: the same model (sklearn penalises no intercept), and one whose
    # own predictions keep their digits when a feature sits far from zero; plain
    # ``Ridge`` would predict as X @ coef_ + intercept_ and cancel them.
    return make_pipeline(
        StandardScaler(with_std=False), estimator
    ), f"sklearn make_pipeline(StandardScaler(with_std=False), {name})"


def pooled_check(model: FederatedModel, cities: Sequence[CityData]) -> PooledCheck:
    """Fit sklearn on the pooled training rows of the cities that took part.

    Parameters
    ----------
    model : FederatedModel
        The federated model.
    cities : Sequence[CityData]
        Every city's harmonised rows; those not in ``model.cities`` are left out.

    Returns
    -------
    PooledCheck
        The largest difference of predictions (probabilities for
        classification) on the pooled training rows, also relative to std(y),
        the reference fitted, and whether the difference is within tolerance.
    """
    used = [c for c in cities if c.city in set(model.cities)]
    X = np.vstack([c.X_train for c in used])
    y = np.concatenate([c.y_train for c in used])
    reference, name = _reference(model)
    reference.fit(X, y)
    decision = model.decision(X)
    if model.task == "classification":
        ours = 1.0 / (1.0 + np.exp(-decision))
        theirs = reference.predict_proba(X)[:, 1]
        diff = float(np.max(np.abs(ours - theirs)))
        std_y = float(np.std(y))
        within = diff <= TOLERANCE_PROBABILITY
    else:
        diff = float(np.max(np.abs(decision - reference.predict(X))))
        std_y = float(np.std(y))
        within = diff <= TOLERANCE_REGRESSION * max(std_y, np.finfo(float).tiny)
    return PooledCheck(
        max_abs_prediction_diff=diff,
        relative_to_std_y=diff / std_y if std_y > 0 else None,
        rows=int(y.size),
        reference=name,
        compared="predicted probability" if model.task == "classification" else "prediction",
        within_tolerance=bool(within),
    )
