"""The pooled check: sklearn fitted on every city's training rows in one table.

Only a simulation holds all cities' rows on one machine; there the tool compares
the federated model with the centralised fit it claims to equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.core.metrics import classification_scores, regression_scores
from cityfed.data.city_data import CityData
from cityfed.model.record import FederatedModel
from cityfed.report.types import Compared, PooledCheck

__all__ = ["TOLERANCE_PROBABILITY", "TOLERANCE_REGRESSION", "pooled_check"]

#: Max |prediction difference| allowed, as a fraction of std(y).
TOLERANCE_REGRESSION = 1e-6
#: Max |difference| of predicted probabilities allowed.
TOLERANCE_PROBABILITY = 1e-5


#: What the check compares, by task.
_COMPARED: dict[str, Compared] = {
    "regression": "prediction",
    "classification": "predicted probability",
    "count": "expected count",
}


def _reference(model: FederatedModel) -> tuple[Any, str]:
    estimator: Any
    if model.kind == "logistic":
        estimator = LogisticRegression(C=model.C, tol=1e-12, max_iter=10_000)
        name = f"LogisticRegression(C={model.C:g}, tol=1e-12)"
    elif model.kind == "poisson":
        estimator = PoissonRegressor(
            alpha=model.alpha, solver="newton-cholesky", tol=1e-12, max_iter=10_000
        )
        name = f"PoissonRegressor(alpha={model.alpha:g}, solver='newton-cholesky', tol=1e-12)"
    elif model.kind == "ridge":
        estimator, name = Ridge(alpha=model.alpha), f"Ridge(alpha={model.alpha:g})"
    else:
        estimator, name = LinearRegression(), "LinearRegression()"
    mask = np.asarray(model.indicator_mask, dtype=bool)
    if model.standardize and mask.any():
        # The indicators are OneHotEncoder(drop="first") columns: passed through unscaled.
        columns = ColumnTransformer(
            [("numeric", StandardScaler(), np.flatnonzero(~mask)), ("levels", "passthrough", mask)]
        )
        return make_pipeline(columns, estimator), (
            "sklearn make_pipeline(ColumnTransformer(StandardScaler() on the numeric "
            f"features, the OneHotEncoder(drop='first') indicators as they are), {name})"
        )
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
    exposure = None
    if model.exposure is not None:
        exposure = np.concatenate([c.exposure_train for c in used if c.exposure_train is not None])
        reference.fit(X, y / exposure, poissonregressor__sample_weight=exposure)
        name += f" fitted on {model.target.name} / {model.exposure.name} weighted by it"
    else:
        reference.fit(X, y)
    decision = model.decision(X)
    if model.task == "count":
        # Expected counts (the rate times the exposure), compared relative to std(y).
        scale = np.ones(y.size) if exposure is None else exposure
        ours, theirs = np.exp(decision) * scale, reference.predict(X) * scale
        diff = float(np.max(np.abs(ours - theirs)))
        std_y = float(np.std(y))
        within = diff <= TOLERANCE_REGRESSION * max(std_y, np.finfo(float).tiny)
    elif model.task == "classification":
        ours = 1.0 / (1.0 + np.exp(-decision))
        theirs = reference.predict_proba(X)[:, 1]
        diff = float(np.max(np.abs(ours - theirs)))
        std_y = float(np.std(y))
        within = diff <= TOLERANCE_PROBABILITY
    else:
        diff = float(np.max(np.abs(decision - reference.predict(X))))
        std_y = float(np.std(y))
        within = diff <= TOLERANCE_REGRESSION * max(std_y, np.finfo(float).tiny)
    private = model.epsilon > 0
    return PooledCheck(
        max_abs_prediction_diff=diff,
        relative_to_std_y=diff / std_y if std_y > 0 else None,
        rows=int(y.size),
        reference=name,
        compared=_COMPARED[model.task],
        # A private model differs from the pooled fit by its noise: that is its
        # price (``cost``), not a failure of the check.
        within_tolerance=bool(within) or private,
        private=private,
        cost_metric=_COST_METRIC[model.task] if private else "",
        cost=_accuracy_cost(model, reference, used) if private else {},
    )


#: The holdout score the cost of privacy is told in (lower is better for both).
_COST_METRIC: dict[str, str] = {"regression": "rmse", "count": "rmse", "classification": "log_loss"}


def _accuracy_cost(
    model: FederatedModel, reference: Any, cities: Sequence[CityData]
) -> dict[str, tuple[float, float]]:
    """Per city: the private model's and the non-private pooled fit's score on its holdout rows."""
    cost: dict[str, tuple[float, float]] = {}
    for city in cities:
        X, y = city.X_holdout, city.y_holdout
        if y.size < 2:
            continue
        decision = model.decision(X)
        if model.task == "classification":
            ours = classification_scores(y, 1.0 / (1.0 + np.exp(-decision))).log_loss
            theirs = classification_scores(y, reference.predict_proba(X)[:, 1]).log_loss
        else:
            ours = regression_scores(y, decision).rmse
            theirs = regression_scores(y, reference.predict(X)).rmse
        if ours is not None and theirs is not None:
            cost[city.city] = (ours, theirs)
    return cost
