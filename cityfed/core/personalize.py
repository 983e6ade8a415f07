"""Personalised models: a city's own fit shrunk toward the global weights.

On the global scaled features, a city solves
``argmin ||Z w - y||^2 + tau ||w_s - w_global,s||^2`` (slopes shrunk, its own
intercept free) in closed form for regression, and the same penalty on the
log-loss with Newton's method for classification. ``tau`` is chosen by the city
with K-fold cross-validation on its training rows, unless its ``city.toml``
fixes it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cityfed.core.linear import solve_penalised
from cityfed.core.logistic import fit_logistic_rows
from cityfed.core.poisson import fit_poisson_rows
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = [
    "TAU_GRID",
    "choose_tau",
    "fit_personal_linear",
    "fit_personal_logistic",
    "fit_personal_poisson",
]


#: Candidate strengths, relative to the number of training rows.
TAU_GRID = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e4)


def fit_personal_linear(
    Z: FloatArray, y: FloatArray, w_global: FloatArray, tau: float
) -> FloatArray:
    """Closed-form shrinkage fit; ``Z`` without intercept column, ``w`` with it."""
    d = Z.shape[1]
    moments = Moments.of(np.column_stack([Z, y]))
    prior = w_global[1:]
    Szz, Szy = moments.scatter[:d, :d], moments.scatter[:d, d]
    if tau > 0.0:
        # (Szz + tau I) w = Szy + tau prior  <=>  shift to delta = w - prior.
        delta, _ = solve_penalised(Szz, Szy - Szz @ prior, tau)
        slopes = prior + delta
    else:
        slopes, _ = solve_penalised(Szz, Szy, 0.0)
    intercept = float(moments.mean[d] - slopes @ moments.mean[:d])
    return np.concatenate([[intercept], slopes])


def fit_personal_logistic(
    Z: FloatArray, y: FloatArray, w_global: FloatArray, tau: float, C: float
) -> FloatArray:
    """Newton fit of ``C * log-loss + tau/2 ||w_s - w_global,s||^2`` on one city.

    ``tau`` is floored at 1, the strength sklearn's own ``LogisticRegression``
    puts on the slopes, so that a city whose classes separate still has a
    bounded optimum.
    """
    penalty = np.full(w_global.shape[0], max(tau, 1.0))
    penalty[0] = 0.0
    design = np.column_stack([np.ones(Z.shape[0]), Z])
    solver = fit_logistic_rows(design, y, C, prior=w_global, penalty=penalty, tolerance=1e-6)
    return solver.w


def fit_personal_poisson(
    Z: FloatArray,
    y: FloatArray,
    w_global: FloatArray,
    tau: float,
    offset: FloatArray | None = None,
) -> FloatArray:
    """Newton fit of the Poisson loss ``+ tau/2 ||w_s - w_global,s||^2`` on one city.

    ``tau`` is floored at 1 (as for logistic) so that a city whose counts are
    all zero in some level still has a bounded optimum.
    """
    penalty = np.full(w_global.shape[0], max(tau, 1.0))
    penalty[0] = 0.0
    design = np.column_stack([np.ones(Z.shape[0]), Z])
    solver = fit_poisson_rows(
        design, y, 0.0, offset=offset, prior=w_global, penalty=penalty, tolerance=1e-6
    )
    return solver.w


def choose_tau(
    Z: FloatArray,
    y: FloatArray,
    fit: Callable[[FloatArray, FloatArray, float], FloatArray],
    loss: Callable[[FloatArray, FloatArray, FloatArray], float],
    *,
    folds: int = 5,
    seed: int = 0,
) -> float:
    """Pick ``tau`` from :data:`TAU_GRID` (times the row count) by K-fold CV.

    Parameters
    ----------
    Z, y : ndarray
        The city's scaled training features (no intercept column) and target.
    fit : callable
        ``fit(Z, y, tau) -> w`` (intercept first).
    loss : callable
        ``loss(Z, y, w) -> float``, lower is better.
    folds : int
        Number of folds (fewer when the city has few rows).
    seed : int
        Seed of the fold assignment.
    """
    n = y.shape[0]
    k = min(folds, n // 2)
    grid = [float(t * n) for t in TAU_GRID]
    if k < 2:
        return grid[len(grid) // 2]
    fold_of = np.random.default_rng(seed).permutation(n) % k
    best_tau, best_loss = grid[-1], float("inf")
    for tau in grid:
        total = 0.0
        for f in range(k):
            test = fold_of == f
            w = fit(Z[~test], y[~test], tau)
            total += loss(Z[test], y[test], w)
        if total < best_loss - 1e-12 * (abs(best_loss) if np.isfinite(best_loss) else 1.0):
            best_tau, best_loss = tau, total
    return best_tau
