"""Poisson regression (log link) by (federated) Newton's method, with an optional exposure.

The objective is scikit-learn's for ``PoissonRegressor(alpha)`` on scaled
features: the mean half Poisson deviance plus ``alpha / 2 * |w_slopes|^2``. Times
the total exposure ``S`` (the row count without an exposure column) that is
``sum(mu - y * eta) + (alpha * S) / 2 * |w_slopes|^2`` up to a constant, with
``eta = z . w + log(exposure)`` and ``mu = exp(eta)``: a sum over rows the cities
compute at the coordinator's point, solved by :class:`~cityfed.core.newton.NewtonSolver`
with ``C = 1`` and the penalty ``alpha * S``.

With an exposure ``e`` (trips per station-day, accidents per km of road) the
model is ``E[y] = e * exp(z . w)``; scikit-learn fits the same model as
``PoissonRegressor().fit(X, y / e, sample_weight=e)``, whose objective divides by
``sum(e)``: hence ``S = sum(e)``. With ``alpha = 0`` it is statsmodels'
``GLM(y, X, family=Poisson(), exposure=e)``.
"""

from __future__ import annotations

import numpy as np

from cityfed.core.newton import NewtonSolver, NewtonTerms, intercept_gram
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = [
    "exposure_from_start",
    "fit_poisson_rows",
    "poisson_starting_intercept",
    "poisson_terms",
    "poisson_terms_at_intercept",
]

#: Linear predictors above this give ``exp`` = inf: the point is rejected by the line search.
_MAX_ETA = 700.0


def poisson_terms(
    Z: FloatArray, y: FloatArray, w: FloatArray, offset: FloatArray | None = None
) -> NewtonTerms:
    """Negative log-likelihood (less ``sum log y!``), gradient and Hessian at ``w``.

    Parameters
    ----------
    Z : ndarray of shape (n, d + 1)
        Scaled rows with a leading column of ones.
    y : ndarray of shape (n,)
        Counts (any values >= 0).
    w : ndarray of shape (d + 1,)
        Intercept first.
    offset : ndarray of shape (n,), optional
        ``log(exposure)`` of each row.

    Returns
    -------
    NewtonTerms
        ``sum(mu - y eta)``, ``Z^T (mu - y)`` and ``Z^T diag(mu) Z``. A point whose
        predictions overflow gives an infinite loss (the solver steps back).
    """
    eta = Z @ w if offset is None else Z @ w + offset
    if not np.all(eta <= _MAX_ETA):
        dim = w.shape[0]
        return NewtonTerms(float("inf"), np.zeros(dim), np.zeros((dim, dim)))
    mu = np.exp(eta)
    loss = float(np.sum(mu - y * eta))
    grad = Z.T @ (mu - y)
    hess = (Z * mu[:, None]).T @ Z
    return NewtonTerms(loss, grad, (hess + hess.T) / 2.0)


def poisson_terms_at_intercept(moments: Moments, scaler: Scaler, intercept: float) -> NewtonTerms:
    """The terms at ``w = (intercept, 0, ..., 0)`` from pooled moments (no exposure).

    Every row then has the same mean ``m = e^b``: the loss is ``n m - b sum(y)``,
    the gradient ``m sum z - sum y z`` and the Hessian ``m sum z z^T``, functions
    of the count, mean and scatter of ``[x, y]``; no round with the cities.
    """
    zz, zy, sum_y = intercept_gram(moments, scaler)
    m = float(np.exp(intercept))
    loss = moments.n * m - intercept * sum_y
    return NewtonTerms(loss, m * zz[:, 0] - zy, m * zz)


def poisson_starting_intercept(moments: Moments) -> float:
    """The intercept-only optimum without exposure, ``log(mean(y))``.

    Raises
    ------
    ValueError
        If every count is 0 (the optimum is at minus infinity).
    """
    rate = float(moments.mean[-1] + moments.low[-1])
    if not rate > 0.0:
        raise ValueError("every count of the target is 0: a Poisson model has no finite fit")
    return float(np.log(rate))


def exposure_from_start(terms: NewtonTerms, intercept: float) -> float:
    """The total exposure ``sum(e)`` from the terms at ``(intercept, 0, ..., 0)``.

    There every row's mean is ``e_i * exp(intercept)``, and the Hessian's
    intercept entry is their sum: ``sum(e) = H[0, 0] * exp(-intercept)``. The
    coordinator learns the total exposure (which scales the penalty) from the
    first Newton round, with no extra statistic asked of the cities.
    """
    return float(terms.hess[0, 0]) * float(np.exp(-intercept))


def fit_poisson_rows(
    Z: FloatArray,
    y: FloatArray,
    alpha: float,
    *,
    offset: FloatArray | None = None,
    prior: FloatArray | None = None,
    penalty: FloatArray | None = None,
    tolerance: float = 1e-10,
    max_evaluations: int = 100,
) -> NewtonSolver:
    """Newton's method on rows in memory (one city, a local model, tests).

    Parameters
    ----------
    Z : ndarray of shape (n, d + 1)
        Scaled rows with a leading column of ones.
    y : ndarray of shape (n,)
        Counts.
    alpha : float
        ``PoissonRegressor``'s ``alpha`` (ignored when ``penalty`` is given).
    offset : ndarray, optional
        ``log(exposure)`` per row.
    prior, penalty : ndarray, optional
        Centre and per-weight strength of the penalty (default 0 and ``alpha * S``
        on the slopes).
    tolerance, max_evaluations : float, int
        As for :class:`~cityfed.core.newton.NewtonSolver`.
    """
    dim = Z.shape[1]
    if penalty is None:
        total = float(y.shape[0]) if offset is None else float(np.sum(np.exp(offset)))
        penalty = np.full(dim, alpha * total)
        penalty[0] = 0.0
    solver = NewtonSolver(
        1.0, dim, tolerance=tolerance, max_evaluations=max_evaluations, penalty=penalty, prior=prior
    )
    start = solver.w.copy()
    if prior is None:
        exposure = float(y.shape[0]) if offset is None else float(np.sum(np.exp(offset)))
        start[0] = float(np.log(max(float(np.sum(y)), 1e-12) / exposure))
    solver.start(poisson_terms(Z, y, start, offset), start)
    while not solver.done:
        solver.observe(poisson_terms(Z, y, solver.trial(), offset))
    return solver
