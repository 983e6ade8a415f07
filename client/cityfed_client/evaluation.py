"""A city's holdout scores of its local-only, federated and personalised models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    RidgeCV,
)
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
from cityfed.core.personalize import (
    choose_tau,
    fit_personal_linear,
    fit_personal_logistic,
    fit_personal_poisson,
)
from cityfed.core.scaling import Scaler
from cityfed.data.city_data import CityData
from cityfed.federation.evaluation import CityEvaluation, CurvePoint, HoldoutScores
from cityfed.typing import FloatArray

__all__ = ["evaluate_city"]


def _local_model(fed: FederationSpec) -> Pipeline:
    """The city's own model: the federation's, fitted by sklearn on the city's rows alone.

    Indicators of categorical features pass through unscaled, as in the federated
    model; ``alpha = "cv"`` is sklearn's ``RidgeCV`` over the same grid.
    """
    estimator: Any
    if fed.model == "logistic":
        estimator = LogisticRegression(C=fed.C, max_iter=1000)
    elif fed.model == "poisson":
        estimator = PoissonRegressor(alpha=fed.alpha, solver="newton-cholesky", max_iter=1000)
    elif fed.model == "ridge" and fed.alpha_cv:
        estimator = RidgeCV(alphas=fed.alphas)
    elif fed.model == "ridge":
        estimator = Ridge(alpha=fed.alpha)
    else:
        estimator = LinearRegression()
    if not fed.standardize:
        return make_pipeline(estimator)
    mask = np.asarray(fed.indicator_mask, dtype=bool)
    if not mask.any():
        return make_pipeline(StandardScaler(), estimator)
    columns = ColumnTransformer(
        [("numeric", StandardScaler(), np.flatnonzero(~mask)), ("levels", "passthrough", mask)]
    )
    return make_pipeline(columns, estimator)


def _fit_local(
    fed: FederationSpec, X: FloatArray, y: FloatArray, exposure: FloatArray | None
) -> Pipeline:
    """Fit the city's own model; with an exposure as sklearn does (``y / e``, weights ``e``)."""
    pipe = _local_model(fed)
    if exposure is None:
        return pipe.fit(X, y)
    return pipe.fit(X, y / exposure, poissonregressor__sample_weight=exposure)


def _predict_local(
    pipe: Pipeline, X: FloatArray, fed: FederationSpec, exposure: FloatArray | None
) -> FloatArray:
    """The local model's predictions: P(class 1), or the expected value (count)."""
    if fed.task == "classification":
        return np.asarray(pipe.predict_proba(X)[:, 1], dtype=np.float64)
    predicted = np.asarray(pipe.predict(X), dtype=np.float64)
    return predicted if exposure is None else predicted * exposure


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
    measure = "log_loss" if fed.task == "classification" else "rmse"  # as the verdict compares

    def error(predicted: FloatArray) -> float | None:
        return getattr(_score(fed, y_hold, predicted), measure)  # type: ignore[no-any-return]

    points = []
    for size in _curve_sizes(int(y_train.size)):
        rows = order[:size]
        y = y_train[rows]
        if classify and np.unique(y).size < 2:
            points.append(CurvePoint(size, None, None))
            continue
        exposure = None if data.exposure_train is None else data.exposure_train[rows]
        pipe = _fit_local(fed, data.X_train[rows], y, exposure)
        own = _predict_local(pipe, data.X_holdout, fed, data.exposure_holdout)
        points.append(CurvePoint(size, error(own), error(personal(Z_train[rows], y))))
    return tuple(points)


def _log_loss(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    t = w[0] + Z @ w[1:]
    return float(np.sum(np.logaddexp(0.0, t) - y * t))


def _squared_error(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    return float(np.sum((y - w[0] - Z @ w[1:]) ** 2))


def _poisson_loss(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    """Poisson loss of rows ``[Z, offset]`` (the offset rides along as the last column)."""
    eta = w[0] + Z[:, :-1] @ w[1:] + Z[:, -1]
    return float(np.sum(np.exp(np.minimum(eta, 700.0)) - y * eta))


def _score(fed: FederationSpec, y: FloatArray, predicted: FloatArray) -> Scores:
    if fed.task == "classification":
        return classification_scores(y, predicted)
    return regression_scores(y, predicted, count=fed.task == "count")


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
    counts = fed.task == "count"

    def score(y: FloatArray, predicted: FloatArray) -> Scores:
        return _score(fed, y, predicted)

    Z_train, Z_hold = scaler.transform(data.X_train), scaler.transform(data.X_holdout)
    y_train, y_hold = data.y_train, data.y_holdout
    offset_hold = data.offset_holdout

    def respond(w: FloatArray) -> FloatArray:
        t = w[0] + Z_hold @ w[1:]
        if counts:
            return np.asarray(np.exp(t if offset_hold is None else t + offset_hold))
        return np.asarray(expit(t) if classify else t, dtype=np.float64)

    federated = respond(weights)

    local: Scores | None = None
    if not classify or np.unique(y_train).size == 2:
        pipe = _fit_local(fed, data.X_train, y_train, data.exposure_train)
        local = score(y_hold, _predict_local(pipe, data.X_holdout, fed, data.exposure_holdout))

    if counts:
        # The offset rides along as a last column, so that choose_tau's folds split it too.
        offset_train = data.offset_train
        Z_train = np.column_stack(
            [Z_train, np.zeros(y_train.size) if offset_train is None else offset_train]
        )

        def fit(Z: FloatArray, y: FloatArray, tau: float) -> FloatArray:
            return fit_personal_poisson(Z[:, :-1], y, weights, tau, Z[:, -1])

        loss: Callable[[FloatArray, FloatArray, FloatArray], float] = _poisson_loss
    elif classify:

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
        if classify or counts:
            tau = max(chosen, 1.0)  # the strength the Newton personalisation applies (>= 1)

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
