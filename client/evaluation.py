"""A city's holdout scores of its local-only, federated and personalised models."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.data import CityData
from cityfed.metrics import calibration_bins, classification_scores, regression_scores
from cityfed.personalize import choose_tau, fit_personal_linear, fit_personal_logistic
from cityfed.scaling import Scaler
from cityfed.spec import CitySpec, FederationSpec

__all__ = ["evaluate_city"]

FloatArray = NDArray[np.float64]


def _local_model(fed: FederationSpec) -> Pipeline:
    estimator: Any
    if fed.model == "logistic":
        estimator = LogisticRegression(C=fed.C, max_iter=1000)
    elif fed.model == "ridge":
        estimator = Ridge(alpha=fed.alpha)
    else:
        estimator = LinearRegression()
    return (
        make_pipeline(StandardScaler(), estimator) if fed.standardize else make_pipeline(estimator)
    )


def _log_loss(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    t = w[0] + Z @ w[1:]
    return float(np.sum(np.logaddexp(0.0, t) - y * t))


def _squared_error(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    return float(np.sum((y - w[0] - Z @ w[1:]) ** 2))


def evaluate_city(
    data: CityData, city: CitySpec, fed: FederationSpec, scaler: Scaler, weights: FloatArray
) -> dict[str, Any]:
    """Score the three models on the city's holdout rows.

    Returns
    -------
    dict
        ``holdout`` {``local_only``, ``federated``, ``personalized``} (each a score
        dict or None), ``personalization`` {``tau``} and ``calibration`` bins of
        the federated model (aggregates only).
    """
    if data.y_holdout.size == 0:
        return {"holdout": None, "personalization": None, "calibration": []}
    classify = fed.task == "classification"
    score = classification_scores if classify else regression_scores
    Z_train, Z_hold = scaler.transform(data.X_train), scaler.transform(data.X_holdout)
    y_train, y_hold = data.y_train, data.y_holdout

    def respond(w: FloatArray) -> FloatArray:
        t = w[0] + Z_hold @ w[1:]
        return np.asarray(expit(t) if classify else t, dtype=np.float64)

    federated = respond(weights)

    local: dict[str, float | None] | None = None
    if not classify or np.unique(y_train).size == 2:
        pipe = _local_model(fed).fit(data.X_train, y_train)
        local_pred = (
            pipe.predict_proba(data.X_holdout)[:, 1] if classify else pipe.predict(data.X_holdout)
        )
        local = score(y_hold, np.asarray(local_pred, dtype=np.float64))

    if classify:

        def fit(Z: FloatArray, y: FloatArray, tau: float) -> FloatArray:
            return fit_personal_logistic(Z, y, weights, tau, fed.C)

        loss = _log_loss
    else:

        def fit(Z: FloatArray, y: FloatArray, tau: float) -> FloatArray:
            return fit_personal_linear(Z, y, weights, tau)

        loss = _squared_error
    tau = city.personalize_tau
    if tau is None:
        tau = choose_tau(Z_train, y_train, fit, loss, seed=fed.seed)
    personal = respond(fit(Z_train, y_train, tau))

    return {
        "holdout": {
            "local_only": local,
            "federated": score(y_hold, federated),
            "personalized": score(y_hold, personal),
        },
        "personalization": {"tau": tau},
        "calibration": calibration_bins(y_hold, federated),
    }
