"""scikit-learn estimators for CityFed models.

:func:`load_model` returns one of these, fitted from a published ``model.pb``;
``fit`` trains the same model on rows in memory with the same exact solvers, so
the estimators can sit in a ``Pipeline`` or go through ``cross_val_score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from cityfed.config.spec import indicator_name, label_text
from cityfed.core.linear import fit_linear
from cityfed.core.logistic import fit_logistic_rows
from cityfed.core.poisson import fit_poisson_rows
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.errors import CityFedError
from cityfed.model.proto import read_model
from cityfed.model.record import FederatedModel, predict_centred
from cityfed.model.summary import summary_text
from cityfed.typing import FloatArray

__all__ = [
    "CityFedClassifier",
    "CityFedPoissonRegressor",
    "CityFedRegressor",
    "encode_categories",
    "estimator_of",
    "load_model",
]


class _CityFedBase(BaseEstimator):  # type: ignore[misc]
    """Shared prediction code: a linear predictor on federation-unit columns."""

    standardize: bool
    coef_: FloatArray
    intercept_: float
    scaler_: Scaler

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        """Every setting, defaults included (sklearn's repr shows only changed ones)."""
        with config_context(print_changed_only=False):
            text: str = super().__repr__(N_CHAR_MAX)
        return text

    def summary(self) -> str:
        """The coefficient table of a published model (standard errors, tests, intervals).

        Raises
        ------
        CityFedError
            For an estimator fitted in memory rather than loaded from a ``model.pb``.
        """
        model = getattr(self, "model_", None)
        if model is None:
            raise CityFedError("summary(): only a published model (cityfed.load_model) has one")
        return summary_text(model)

    def _select(self, X: Any) -> Any:
        names = getattr(self, "feature_names_in_", None)
        columns = getattr(X, "columns", None)
        model = getattr(self, "model_", None)
        if model is not None and columns is not None and model.categories:
            X = encode_categories(X, model.categories)
            columns = X.columns
        if names is not None and columns is not None:
            missing = [n for n in names if n not in set(columns)]
            if missing:
                raise CityFedError(
                    f"input: column {missing[0]!r} not found; the model needs "
                    + ", ".join(repr(n) for n in names)
                )
            return X[list(names)]
        return X

    def _decision(self, X: Any) -> FloatArray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, self._select(X), reset=False, dtype=np.float64)
        # From the centre, not ``X @ coef_ + intercept_``: a large intercept would
        # cancel digits (see FederatedModel.decision).
        return predict_centred(self.scaler_, self.coef_scaled_, self.intercept_scaled_, X)

    def _set_fitted(self, scaler: Scaler, coef_scaled: FloatArray, intercept_scaled: float) -> None:
        self.scaler_ = scaler
        self.coef_scaled_ = np.asarray(coef_scaled, dtype=np.float64)
        self.intercept_scaled_ = float(intercept_scaled)
        coef, intercept = scaler.unscale(self.coef_scaled_, self.intercept_scaled_)
        self.coef_ = coef
        self.intercept_ = intercept
        self.n_features_in_ = int(coef.shape[0])

    def _set_from_model(self, model: FederatedModel) -> None:
        self._set_fitted(model.scaler, model.coef_scaled, model.intercept_scaled)
        # Keep the published federation-unit coefficients bit for bit.
        self.coef_ = model.coef.copy()
        self.intercept_ = model.intercept
        self.feature_names_in_ = np.array(model.feature_names, dtype=object)
        self.feature_units_ = tuple(f.unit for f in model.features)
        self.target_ = model.target
        self.model_ = model


class CityFedRegressor(RegressorMixin, _CityFedBase):  # type: ignore[misc]
    """Linear or ridge regression, optionally on standardised features.

    Parameters
    ----------
    model : {"linear", "ridge"}
        ``LinearRegression`` (minimum norm) or ``Ridge(alpha)``.
    alpha : float
        Ridge strength, as in sklearn (ignored for ``"linear"``).
    standardize : bool
        Fit as ``make_pipeline(StandardScaler(), model)``.
    """

    def __init__(self, model: str = "ridge", alpha: float = 1.0, standardize: bool = True) -> None:
        self.model = model
        self.alpha = alpha
        self.standardize = standardize

    def fit(self, X: Any, y: Any) -> CityFedRegressor:
        """Fit on rows in memory with the exact moment solver."""
        if self.model not in ("linear", "ridge"):
            raise ValueError(f"model must be 'linear' or 'ridge', got {self.model!r}")
        X_arr, y_arr = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        moments = Moments.of(np.column_stack([X_arr, y_arr]))
        penalty = float(self.alpha) if self.model == "ridge" else 0.0
        fit = fit_linear(moments, penalty=penalty, standardize=self.standardize)
        self._set_fitted(fit.scaler, fit.coef_scaled, fit.intercept_scaled)
        return self

    def predict(self, X: Any) -> FloatArray:
        """Predict the target (federation units) for rows in federation units."""
        return self._decision(X)


class CityFedClassifier(ClassifierMixin, _CityFedBase):  # type: ignore[misc]
    """Binary logistic regression, sklearn's objective solved by Newton's method.

    Any two labels work, as in sklearn: ``classes_`` holds them sorted and the
    model gives the probability of ``classes_[1]``. A published model's classes
    are 0 and 1.

    Parameters
    ----------
    C : float
        Inverse regularisation strength, as in sklearn.
    standardize : bool
        Fit as ``make_pipeline(StandardScaler(), LogisticRegression(C))``.
    """

    def __init__(self, C: float = 1.0, standardize: bool = True) -> None:
        self.C = C
        self.standardize = standardize

    def __sklearn_tags__(self) -> Tags:
        """Binary only: no multi-class or multi-label targets."""
        tags = super().__sklearn_tags__()
        assert tags.classifier_tags is not None
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: Any, y: Any) -> CityFedClassifier:
        """Fit on rows in memory (two classes)."""
        X_arr, y_arr = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y_arr)
        classes = np.unique(y_arr)
        if classes.size > 2:
            raise ValueError(
                f"Only binary classification is supported: y has {classes.size} classes"
            )
        if classes.size < 2:
            raise ValueError("CityFedClassifier needs two classes in y, got 1 class")
        positive = (y_arr == classes[1]).astype(np.float64)
        moments = Moments.of(np.column_stack([X_arr, positive]))
        scaler = Scaler.from_moments(moments, X_arr.shape[1], self.standardize)
        solver = fit_logistic_rows(scaler.design(X_arr), positive, float(self.C))
        self._set_fitted(scaler, solver.w[1:], float(solver.w[0]))
        self.classes_ = classes
        return self

    def decision_function(self, X: Any) -> FloatArray:
        """The logit of ``classes_[1]``."""
        return self._decision(X)

    def predict_proba(self, X: Any) -> FloatArray:
        """Probabilities of ``classes_[0]`` and ``classes_[1]``, one row per input row."""
        p1 = expit(self._decision(X))
        return np.column_stack([1.0 - p1, p1])

    def predict_log_proba(self, X: Any) -> FloatArray:
        """Log-probabilities of ``classes_[0]`` and ``classes_[1]``, without underflow."""
        decision = self._decision(X)
        return np.column_stack([-np.logaddexp(0.0, decision), -np.logaddexp(0.0, -decision)])

    def predict(self, X: Any) -> NDArray[Any]:
        """The more probable class."""
        check_is_fitted(self, "classes_")
        return np.asarray(self.classes_[(self._decision(X) > 0.0).astype(np.int64)])


class CityFedPoissonRegressor(RegressorMixin, _CityFedBase):  # type: ignore[misc]
    """Poisson regression (log link), sklearn's ``PoissonRegressor(alpha)`` by Newton's method.

    Parameters
    ----------
    alpha : float
        L2 strength on the (standardised) slopes, as in sklearn.
    standardize : bool
        Fit as ``make_pipeline(StandardScaler(), PoissonRegressor(alpha))``.
    """

    def __init__(self, alpha: float = 1.0, standardize: bool = True) -> None:
        self.alpha = alpha
        self.standardize = standardize

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CityFedPoissonRegressor:
        """Fit on rows in memory; ``sample_weight`` as sklearn's (an exposure with ``y / e``)."""
        X_arr, y_arr = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        if np.any(y_arr < 0):
            raise ValueError("a Poisson target must be >= 0")
        offset = None
        counts = y_arr
        if sample_weight is not None:
            exposure = np.asarray(sample_weight, dtype=np.float64)
            if exposure.shape != y_arr.shape or np.any(exposure <= 0):
                raise ValueError("sample_weight must be one exposure > 0 per row")
            offset, counts = np.log(exposure), y_arr * exposure
        moments = Moments.of(np.column_stack([X_arr, counts]))
        scaler = Scaler.from_moments(moments, X_arr.shape[1], self.standardize)
        solver = fit_poisson_rows(scaler.design(X_arr), counts, float(self.alpha), offset=offset)
        self._set_fitted(scaler, solver.w[1:], float(solver.w[0]))
        return self

    def predict(self, X: Any, exposure: Any = None) -> FloatArray:
        """The expected count: ``exp(decision)``, times ``exposure`` when given (per row)."""
        rate = np.exp(self._decision(X))
        if exposure is None:
            return np.asarray(rate, dtype=np.float64)
        return np.asarray(rate * np.asarray(exposure, dtype=np.float64), dtype=np.float64)


def encode_categories(X: Any, categories: tuple[tuple[str, tuple[str, ...]], ...]) -> Any:
    """Replace each categorical column of a DataFrame by its ``name=level`` indicators.

    Columns already given as indicators are left as they are.

    Raises
    ------
    CityFedError
        A label that is not one of the feature's levels, naming the row.
    """
    import pandas as pd

    frame = X.copy()
    for name, levels in categories:
        if name not in frame.columns:
            continue
        labels = frame.pop(name).map(label_text)
        unknown = ~labels.isin(levels)
        if unknown.any():
            row = int(np.argmax(unknown.to_numpy()))
            raise CityFedError(
                f"input: column {name!r}, row {row + 1}: {labels.iloc[row]!r} is not one of "
                + ", ".join(repr(v) for v in levels)
            )
        for level in levels[1:]:
            frame[indicator_name(name, level)] = (labels == level).astype(np.float64)
    return pd.DataFrame(frame)


def load_model(path: str | Path) -> CityFedRegressor | CityFedClassifier | CityFedPoissonRegressor:
    """Load a published ``model.pb`` as a fitted scikit-learn estimator.

    Parameters
    ----------
    path : str or Path
        A ``model.pb`` written by ``cityfed simulate`` or a federation run.

    Returns
    -------
    CityFedRegressor or CityFedClassifier
        With ``feature_names_in_``, ``coef_`` and ``intercept_`` in federation
        units; ``predict`` takes a DataFrame with federation column names.
    """
    return estimator_of(read_model(path))


def estimator_of(
    model: FederatedModel,
) -> CityFedRegressor | CityFedClassifier | CityFedPoissonRegressor:
    """The fitted scikit-learn estimator of a published model (see :func:`load_model`)."""
    estimator: CityFedRegressor | CityFedClassifier | CityFedPoissonRegressor
    if model.task == "count":
        estimator = CityFedPoissonRegressor(alpha=model.alpha, standardize=model.standardize)
    elif model.task == "classification":
        estimator = CityFedClassifier(C=model.C, standardize=model.standardize)
        estimator.classes_ = np.array([0, 1])
    else:
        estimator = CityFedRegressor(
            model=model.kind, alpha=model.alpha, standardize=model.standardize
        )
    estimator._set_from_model(model)
    return estimator
