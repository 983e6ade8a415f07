"""Logistic regression by (federated) Newton's method with a line search.

The objective is scikit-learn's for ``LogisticRegression(C=C)`` on scaled
features: ``C * sum(log-loss) + 1/2 * sum_j penalty_j * (w_j - prior_j)^2`` with
the intercept unpenalised. Each city returns the log-loss, gradient and Hessian of
its rows at the point the coordinator proposes; the coordinator sums them and
takes the step. :class:`NewtonSolver` holds that state, with no I/O, so the same
solver runs across cities, on one city (personalisation) or in tests.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from cityfed.core.newton import NewtonSolver, NewtonTerms, intercept_gram
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = [
    "fit_logistic_rows",
    "logistic_terms",
    "starting_intercept",
    "terms_at_intercept",
]


def logistic_terms(Z: FloatArray, y: FloatArray, w: FloatArray) -> NewtonTerms:
    """Log-loss, gradient and Hessian of rows ``Z`` (with intercept column) at ``w``."""
    t = Z @ w
    loss = float(np.sum(np.logaddexp(0.0, t) - y * t))
    p = expit(t)
    grad = Z.T @ (p - y)
    hess = (Z * (p * (1.0 - p))[:, None]).T @ Z
    return NewtonTerms(loss, grad, (hess + hess.T) / 2.0)


def terms_at_intercept(moments: Moments, scaler: Scaler, intercept: float) -> NewtonTerms:
    """The terms at ``w = (intercept, 0, ..., 0)`` from pooled moments alone.

    With every slope at zero each row has the same probability ``p``, so the
    loss is ``n log(1 + e^b) - b sum(y)``, the gradient ``p sum z - sum y z`` and
    the Hessian ``p (1 - p) sum z z^T``: all functions of the count, mean and
    scatter of ``[x, y]``. No round with the cities is needed.
    """
    zz, zy, sum_y = intercept_gram(moments, scaler)
    p = float(expit(intercept))
    loss = moments.n * float(np.logaddexp(0.0, intercept)) - intercept * sum_y
    return NewtonTerms(loss, p * zz[:, 0] - zy, p * (1.0 - p) * zz)


def starting_intercept(moments: Moments) -> float:
    """The intercept-only optimum ``logit(mean(y))``, clipped away from 0 and 1."""
    rate = min(max(float(moments.mean[-1]), 1e-6), 1.0 - 1e-6)
    return float(np.log(rate / (1.0 - rate)))


def fit_logistic_rows(
    Z: FloatArray,
    y: FloatArray,
    C: float,
    *,
    prior: FloatArray | None = None,
    penalty: FloatArray | None = None,
    tolerance: float = 1e-10,
    max_evaluations: int = 100,
) -> NewtonSolver:
    """Newton's method on rows held in memory (one city, or a local model)."""
    solver = NewtonSolver(
        C,
        Z.shape[1],
        tolerance=tolerance,
        max_evaluations=max_evaluations,
        penalty=penalty,
        prior=prior,
    )
    solver.start(logistic_terms(Z, y, solver.w))
    while not solver.done:
        solver.observe(logistic_terms(Z, y, solver.trial()))
    return solver
