"""A city's holdout scores of its local-only, federated and personalised models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import CitySpec, FederationSpec
from cityfed.core.metrics import (
    Scores,
    calibration_bins,
    classification_scores,
    probability_bins,
    regression_scores,
)
from cityfed.core.personalize import choose_tau, fit_personal_linear, fit_personal_logistic
from cityfed.core.scaling import Scaler
from cityfed.data.city_data import CityData
from cityfed.federation.evaluation import CityEvaluation, CurvePoint, HoldoutScores
from cityfed.typing import FloatArray

__all__ = ["evaluate_city"]


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


#: The smallest training subset of a learning curve; then doubling up to all rows.
CURVE_START = 50


def _curve_sizes(n: int) -> list[int]:
    """50, 100, 200, ... below ``n``, then ``n`` itself (empty below 50 rows)."""
    sizes = []
    size = CURVE_START
    while size < n:
        sizes.append(size)
        size *= 2
    return [*sizes, n] if n >= CURVE_START else []


def _learning_curve(
    data: CityData,
    fed: FederationSpec,
    Z_train: FloatArray,
    Z_hold: FloatArray,
    personal: Callable[[FloatArray, FloatArray], FloatArray],
    *,
    seed: int,
) -> tuple[CurvePoint, ...]:
    """Holdout error of the city's own and personalised models on growing subsets.

    The subsets are nested prefixes of one fixed shuffle of the training rows
    (seeded by the federation's seed): a run's curve is reproducible.
    """
    classify = fed.task == "classification"
    y_train, y_hold = data.y_train, data.y_holdout
    order = np.random.default_rng(seed).permutation(y_train.size)

    def error(predicted: FloatArray) -> float | None:
        scores = (classification_scores if classify else regression_scores)(y_hold, predicted)
        return getattr(scores, "log_loss" if classify else "rmse")  # type: ignore[no-any-return]

    points = []
    for size in _curve_sizes(int(y_train.size)):
        rows = order[:size]
        y = y_train[rows]
        if classify and np.unique(y).size < 2:
            points.append(CurvePoint(size, None, None))
            continue
        pipe = _local_model(fed).fit(data.X_train[rows], y)
        X_hold = data.X_holdout
        own = pipe.predict_proba(X_hold)[:, 1] if classify else pipe.predict(X_hold)
        points.append(
            CurvePoint(
                size,
                error(np.asarray(own, dtype=np.float64)),
                error(personal(Z_train[rows], y)),
            )
        )
    return tuple(points)


def _log_loss(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    t = w[0] + Z @ w[1:]
    return float(np.sum(np.logaddexp(0.0, t) - y * t))


def _squared_error(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    return float(np.sum((y - w[0] - Z @ w[1:]) ** 2))


def evaluate_city(
    data: CityData,
    city: CitySpec,
    fed: FederationSpec,
    scaler: Scaler,
    weights: FloatArray,
    *,
    min_rows: int = 10,
) -> CityEvaluation:
    """Score the three models on the city's holdout rows.

    Parameters
    ----------
    data, city, fed : CityData, CitySpec, FederationSpec
        The city's rows and specs.
    scaler, weights : Scaler, ndarray
        The federated model.
    min_rows : int
        The fewest rows any reported group may have (``[policy] min_bin_rows``):
        no scores from a smaller holdout, no calibration bin smaller than this.

    Returns
    -------
    CityEvaluation
        Scores of the local-only, federated and personalised models, the
        personalisation strength and calibration bins of the federated model
        (aggregates only); empty with fewer than ``min_rows`` holdout rows.
    """
    if data.y_holdout.size < max(min_rows, 1):
        return CityEvaluation()
    classify = fed.task == "classification"
    score: Callable[[FloatArray, FloatArray], Scores] = (
        classification_scores if classify else regression_scores
    )
    Z_train, Z_hold = scaler.transform(data.X_train), scaler.transform(data.X_holdout)
    y_train, y_hold = data.y_train, data.y_holdout

    def respond(w: FloatArray) -> FloatArray:
        t = w[0] + Z_hold @ w[1:]
        return np.asarray(expit(t) if classify else t, dtype=np.float64)

    federated = respond(weights)

    local: Scores | None = None
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
    tau: float | None = city.personalize_tau
    curve: tuple[CurvePoint, ...] = ()
    if classify and np.unique(y_train).size < 2:
        # One class among the city's own rows: nothing to personalise towards (the
        # fit would run its intercept off to infinity); the federated model it is.
        personal, tau = federated, None
    else:
        if tau is None:
            tau = choose_tau(Z_train, y_train, fit, loss, seed=fed.seed)
        chosen = float(tau)
        personal = respond(fit(Z_train, y_train, chosen))
        curve = _learning_curve(
            data, fed, Z_train, Z_hold, lambda Z, y: respond(fit(Z, y, chosen)), seed=fed.seed
        )
        if classify:
            tau = max(chosen, 1.0)  # the strength fit_personal_logistic applies (floored at 1)

    return CityEvaluation(
        holdout=HoldoutScores(
            local_only=local,
            federated=score(y_hold, federated),
            personalized=score(y_hold, personal),
        ),
        tau=tau,
        calibration=(probability_bins if classify else calibration_bins)(
            y_hold, federated, min_count=max(min_rows, 5)
        ),
        learning_curve=curve,
    )
