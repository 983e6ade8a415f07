"""Coefficient inference from pooled statistics: what statsmodels reports, without the rows.

For ``linear`` (ordinary least squares) the pooled count, mean and centred scatter
give the residual sum of squares, and with it the classical standard errors,
t statistics, p-values and confidence intervals of every coefficient, R²,
adjusted R² and the residual standard error: equal to statsmodels ``OLS`` on the
pooled rows. For ``logistic`` and ``poisson`` the Wald standard errors come from
the pooled Hessian of the log-likelihood at the final weights (the Fisher
information), as statsmodels ``GLM(..., Binomial())`` or ``GLM(..., Poisson())``
reports them for an unpenalised fit.

Everything is computed on the scaled features (well conditioned) and carried
to federation units: with ``beta = w / scale`` the covariance is
``D Cov_w D`` for ``D = diag(1 / scale)``, and the intercept of the plain form
``b0 = c - mean . beta`` has variance ``Var(c) + mean' Cov(beta) mean`` (``c``,
the prediction at the pooled mean, is uncorrelated with the slopes for OLS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
from scipy import stats

from cityfed.core.linear import solve_penalised
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = ["Inference", "ols_inference", "wald_inference"]

#: ``(name, estimate, std_error, statistic, p_value, ci_low, ci_high)``.
CoefficientRowTuple = tuple[str, float, float, float, float, float, float]

#: Confidence level of the reported intervals.
LEVEL = 0.95


@dataclass(frozen=True)
class Inference:
    """Estimates with their uncertainty, intercept first, in federation units.

    Parameters
    ----------
    estimate, std_error, statistic, p_value, ci_low, ci_high : ndarray
        One entry per coefficient: the intercept, then the features in order.
    distribution : {"t", "normal"}
        ``t`` (OLS, with ``df_resid`` degrees of freedom) or ``normal`` (Wald).
    df_resid : float
        Residual degrees of freedom (``n - p``; for Wald, the same count).
    r2, adj_r2, rse : float or None
        R², adjusted R² and residual standard error (OLS only).
    """

    estimate: FloatArray
    std_error: FloatArray
    statistic: FloatArray
    p_value: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    distribution: Literal["t", "normal"]
    df_resid: float
    r2: float | None = None
    adj_r2: float | None = None
    rse: float | None = None

    def rows(self, names: Sequence[str]) -> list[CoefficientRowTuple]:
        """``(name, estimate, std_error, statistic, p_value, ci_low, ci_high)`` per coefficient.

        Parameters
        ----------
        names : Sequence[str]
            The coefficients' names, intercept first.
        """
        return [
            (
                str(name),
                float(self.estimate[i]),
                float(self.std_error[i]),
                float(self.statistic[i]),
                float(self.p_value[i]),
                float(self.ci_low[i]),
                float(self.ci_high[i]),
            )
            for i, name in enumerate(names)
        ]


def _tests(
    estimate: FloatArray, se: FloatArray, distribution: Literal["t", "normal"], df: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = estimate / se
    law = stats.t(df) if distribution == "t" else stats.norm()
    p = 2.0 * law.sf(np.abs(statistic))
    half = law.ppf(0.5 + LEVEL / 2.0) * se
    return statistic, p, estimate - half, estimate + half


def _to_federation_units(
    scaler: Scaler, cov_w: FloatArray, centre_var: float, c: float, w: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Estimates and standard errors of ``(b0, beta)`` from the centred, scaled fit."""
    beta = w / scaler.scale
    cov_beta = cov_w / np.outer(scaler.scale, scaler.scale)
    b0 = c - float(scaler.mean @ beta)
    var_b0 = centre_var + float(scaler.mean @ cov_beta @ scaler.mean)
    estimate = np.concatenate([[b0], beta])
    se = np.sqrt(np.clip(np.concatenate([[var_b0], np.diag(cov_beta)]), 0.0, None))
    return estimate, se


def ols_inference(moments: Moments, scaler: Scaler, w: FloatArray, intercept: float) -> Inference:
    """Classical OLS inference from the pooled moments of ``[x, y]``.

    Parameters
    ----------
    moments : Moments
        Pooled count, mean and centred scatter of the features then the target.
    scaler : Scaler
        The fit's scaler (centred at the pooled means).
    w, intercept : ndarray, float
        The unpenalised fit on the scaled features (``intercept`` at the pooled mean).

    Returns
    -------
    Inference
        Equal to statsmodels ``OLS(y, add_constant(X)).fit()`` on the pooled rows.

    Raises
    ------
    ValueError
        With fewer rows than coefficients or collinear features (no unique
        estimate, so no standard errors).
    """
    d = w.shape[0]
    n = moments.n
    df = n - d - 1
    if df <= 0:
        raise ValueError(f"{n} rows for {d + 1} coefficients: no degrees of freedom left")
    _, scatter = scaler.scaled_moments(moments)
    Szz, Szy, syy = scatter[:d, :d], scatter[:d, d], float(scatter[d, d])
    if solve_penalised(Szz, Szy, 0.0)[1] < d:  # the fit's own rank decision
        raise ValueError("the features are collinear: standard errors are undefined")
    try:
        factor = scipy.linalg.cho_factor(Szz, check_finite=False)
    except np.linalg.LinAlgError:
        raise ValueError("the features are collinear: standard errors are undefined") from None
    rss = max(syy - 2.0 * float(w @ Szy) + float(w @ Szz @ w), 0.0)
    sigma2 = rss / df
    cov_w = sigma2 * scipy.linalg.cho_solve(factor, np.eye(d), check_finite=False)
    estimate, se = _to_federation_units(scaler, cov_w, sigma2 / n, intercept, w)
    statistic, p, low, high = _tests(estimate, se, "t", df)
    r2 = 1.0 - rss / syy if syy > 0.0 else None
    adj = 1.0 - (1.0 - r2) * (n - 1) / df if r2 is not None else None
    return Inference(estimate, se, statistic, p, low, high, "t", float(df), r2, adj, sigma2**0.5)


def wald_inference(scaler: Scaler, w: FloatArray, hessian: FloatArray, n: int) -> Inference:
    """Wald inference of a logistic or Poisson fit from the pooled Hessian of its loss.

    Parameters
    ----------
    scaler : Scaler
        The fit's scaler.
    w : ndarray
        ``[intercept, slopes...]`` on the scaled features.
    hessian : ndarray
        The information ``sum v_i z z^T`` over the pooled rows at ``w`` (``z`` with a
        leading 1; ``v = p (1 - p)`` for logistic, ``v = mu`` for Poisson).
    n : int
        Pooled rows.

    Returns
    -------
    Inference
        Equal to statsmodels ``GLM(y, add_constant(X), family=Binomial()).fit()``
        (or ``Poisson()``, with the exposure) for an unpenalised fit; with a
        penalty the intervals are Wald intervals around the shrunk estimates.

    Raises
    ------
    ValueError
        If the Hessian is singular (separable classes or collinear features).
    """
    try:
        cov = scipy.linalg.inv(hessian, check_finite=True)
    except (np.linalg.LinAlgError, ValueError):
        raise ValueError(
            "the information matrix is singular: standard errors are undefined"
        ) from None
    d = w.shape[0] - 1
    # The intercept at the centre and the slopes are correlated here (unlike OLS):
    # carry the full covariance of (c, w) through b0 = c - (mean / scale) . w.
    gradient = np.concatenate([[1.0], -scaler.mean / scaler.scale])
    var_b0 = float(gradient @ cov @ gradient)
    beta = w[1:] / scaler.scale
    cov_beta = cov[1:, 1:] / np.outer(scaler.scale, scaler.scale)
    estimate = np.concatenate([[w[0] - float(scaler.mean @ beta)], beta])
    se = np.sqrt(np.clip(np.concatenate([[var_b0], np.diag(cov_beta)]), 0.0, None))
    statistic, p, low, high = _tests(estimate, se, "normal", float(n - d - 1))
    return Inference(estimate, se, statistic, p, low, high, "normal", float(n - d - 1))
