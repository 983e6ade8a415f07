"""The federated standard scaler: StandardScaler's statistics from pooled moments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = ["Scaler"]


@dataclass(frozen=True)
class Scaler:
    """``z = (x - mean) / scale``: the pooled mean always, the scale when standardising."""

    mean: FloatArray
    scale: FloatArray

    @classmethod
    def identity(cls, dim: int) -> Scaler:
        """No scaling: the model works on federation units directly."""
        return cls(np.zeros(dim), np.ones(dim))

    @classmethod
    def from_moments(
        cls,
        moments: Moments,
        n_features: int,
        standardize: bool,
        unscaled: Sequence[bool] | None = None,
    ) -> Scaler:
        """The scaler sklearn's ``StandardScaler`` would fit on the pooled rows.

        Parameters
        ----------
        moments : Moments
            Pooled statistics of ``[x_1 .. x_d, y]`` (or of the features only).
        n_features : int
            ``d``: the first ``d`` columns of ``moments`` are features.
        standardize : bool
            ``False`` gives the identity scaler.
        unscaled : Sequence[bool], optional
            Columns centred but never divided by their scale: the 0/1 indicators
            of a categorical feature, which sklearn's ``ColumnTransformer`` passes
            through ``OneHotEncoder`` rather than ``StandardScaler``.

        Returns
        -------
        Scaler
            Population mean and standard deviation (``ddof = 0``); a constant
            feature gets scale 1, as in scikit-learn. Without ``standardize``,
            the mean and scale 1: the features are centred only.
        """
        mean = moments.mean[:n_features].copy()
        if not standardize:
            # Centred, not scaled: the same model (intercepts are not penalised),
            # but the intercept on these features is the prediction at the pooled
            # mean, so predicting as ``(x - mean) @ coef + intercept`` keeps every
            # digit even when a feature sits far from zero (1e9 +- 1e-3).
            return cls(mean, np.ones(n_features))
        var = moments.variance[:n_features]
        eps = np.finfo(np.float64).eps
        n = moments.n
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        scale = np.sqrt(var)
        scale[constant | (scale == 0.0)] = 1.0
        if unscaled is not None:
            scale[np.asarray(unscaled, dtype=bool)] = 1.0
        return cls(mean, scale)

    def transform(self, X: FloatArray) -> FloatArray:
        """Scale rows of federation-unit features."""
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def design(self, X: FloatArray) -> FloatArray:
        """Scaled rows with a leading column of ones (for the intercept)."""
        Z = self.transform(X)
        return np.hstack([np.ones((Z.shape[0], 1)), Z])

    def unscale(self, coef_scaled: FloatArray, intercept_scaled: float) -> tuple[FloatArray, float]:
        """Coefficients in federation units from coefficients on scaled features."""
        coef = np.asarray(coef_scaled, dtype=np.float64) / self.scale
        return coef, float(intercept_scaled - coef @ self.mean)

    def rescale(self, coef: FloatArray, intercept: float) -> FloatArray:
        """``[intercept, coef...]`` on this scaler's features from federation units.

        The inverse of :meth:`unscale`: it carries a model over to another scaler.
        """
        coef = np.asarray(coef, dtype=np.float64)
        return np.concatenate([[intercept + float(coef @ self.mean)], coef * self.scale])

    def scaled_moments(self, moments: Moments) -> tuple[FloatArray, FloatArray]:
        """Mean and scatter of ``[z_1 .. z_d, y]`` from moments of ``[x, y]``."""
        d = self.mean.shape[0]
        factor = np.ones(moments.dim)
        factor[:d] = 1.0 / self.scale
        shift = np.zeros(moments.dim)
        shift[:d] = self.mean
        # The low part of the mean lands here: the scaled mean of a feature is
        # what the centring at ``self.mean`` left, so the intercept keeps it.
        mean = ((moments.mean - shift) + moments.low) * factor
        scatter = moments.scatter * np.outer(factor, factor)
        return mean, scatter
