"""Logistic regression by (federated) Newton's method with a line search.

The objective is scikit-learn's for ``LogisticRegression(C=C)`` on scaled
features: ``C * sum(log-loss) + 1/2 * sum_j penalty_j * (w_j - prior_j)^2`` with
the intercept unpenalised. Each city returns the log-loss, gradient and Hessian of
its rows at the point the coordinator proposes; the coordinator sums them and
takes the step. :class:`NewtonSolver` holds that state, with no I/O, so the same
solver runs across cities, on one city (personalisation) or in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.special import expit

from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = [
    "LogisticTerms",
    "NewtonSolver",
    "fit_logistic_rows",
    "logistic_terms",
    "starting_intercept",
    "terms_at_intercept",
]


@dataclass(frozen=True)
class LogisticTerms:
    """Summed log-loss, gradient and Hessian of some rows at one weight vector."""

    loss: float
    grad: FloatArray
    hess: FloatArray

    def __add__(self, other: LogisticTerms) -> LogisticTerms:
        return LogisticTerms(self.loss + other.loss, self.grad + other.grad, self.hess + other.hess)


def logistic_terms(Z: FloatArray, y: FloatArray, w: FloatArray) -> LogisticTerms:
    """Log-loss, gradient and Hessian of rows ``Z`` (with intercept column) at ``w``."""
    t = Z @ w
    loss = float(np.sum(np.logaddexp(0.0, t) - y * t))
    p = expit(t)
    grad = Z.T @ (p - y)
    hess = (Z * (p * (1.0 - p))[:, None]).T @ Z
    return LogisticTerms(loss, grad, (hess + hess.T) / 2.0)


def terms_at_intercept(moments: Moments, scaler: Scaler, intercept: float) -> LogisticTerms:
    """The terms at ``w = (intercept, 0, ..., 0)`` from pooled moments alone.

    With every slope at zero each row has the same probability ``p``, so the
    loss is ``n log(1 + e^b) - b sum(y)``, the gradient ``p sum z - sum y z`` and
    the Hessian ``p (1 - p) sum z z^T``: all functions of the count, mean and
    scatter of ``[x, y]``. No round with the cities is needed.
    """
    d = moments.dim - 1
    mean, scatter = scaler.scaled_moments(moments)
    u_mean = np.concatenate([[1.0], mean])  # [1, z_1..z_d, y]
    u_scatter = np.zeros((d + 2, d + 2))
    u_scatter[1:, 1:] = scatter
    gram = moments.n * np.outer(u_mean, u_mean) + u_scatter
    zz, zy = gram[: d + 1, : d + 1], gram[: d + 1, d + 1]
    p = float(expit(intercept))
    sum_y = moments.n * float(mean[d])
    loss = moments.n * float(np.logaddexp(0.0, intercept)) - intercept * sum_y
    return LogisticTerms(loss, p * gram[: d + 1, 0] - zy, p * (1.0 - p) * zz)


def starting_intercept(moments: Moments) -> float:
    """The intercept-only optimum ``logit(mean(y))``, clipped away from 0 and 1."""
    rate = min(max(float(moments.mean[-1]), 1e-6), 1.0 - 1e-6)
    return float(np.log(rate / (1.0 - rate)))


class NewtonSolver:
    """Damped Newton iterations on the penalised logistic objective.

    Call :meth:`trial` for the point to evaluate, then :meth:`observe` with the
    summed terms there, until :attr:`done`. Each observation is one round.

    Parameters
    ----------
    C : float
        Inverse regularisation strength, as in sklearn.
    dim : int
        Number of weights, intercept first.
    tolerance : float
        Stop when the largest Newton step is below ``tolerance * max(1, |w|)``.
    max_evaluations : int
        Give up (``converged`` stays False) after this many observations.
    penalty : ndarray, optional
        Per-weight penalty; default 0 for the intercept and 1 for the slopes.
    prior : ndarray, optional
        Centre of the penalty; default 0.
    """

    def __init__(
        self,
        C: float,
        dim: int,
        *,
        tolerance: float = 1e-8,
        max_evaluations: int = 50,
        penalty: FloatArray | None = None,
        prior: FloatArray | None = None,
    ) -> None:
        self.C = C
        self.tolerance = tolerance
        self.max_evaluations = max_evaluations
        if penalty is None:
            penalty = np.ones(dim)
            penalty[0] = 0.0
        self.penalty = np.asarray(penalty, dtype=np.float64)
        self.prior = np.zeros(dim) if prior is None else np.asarray(prior, dtype=np.float64)
        self.w = self.prior.copy()
        self.evaluations = 0
        self.converged = False
        self.exhausted = False
        self._objective = np.inf
        self._slope = 0.0
        self._step = np.zeros(dim)
        self._t = 1.0
        #: The summed terms at the last accepted point (the Hessian for inference).
        self.terms: LogisticTerms | None = None

    @property
    def done(self) -> bool:
        """True once converged or out of evaluations."""
        return self.converged or self.exhausted

    def _objective_of(
        self, w: FloatArray, terms: LogisticTerms
    ) -> tuple[float, FloatArray, FloatArray]:
        diff = w - self.prior
        value = self.C * terms.loss + 0.5 * float(np.sum(self.penalty * diff * diff))
        grad = self.C * terms.grad + self.penalty * diff
        hess = self.C * terms.hess + np.diag(self.penalty)
        return value, grad, hess

    def start(self, terms: LogisticTerms, w: FloatArray | None = None) -> None:
        """Take the terms at the starting point ``w`` (default the prior)."""
        if w is not None:
            self.w = np.asarray(w, dtype=np.float64).copy()
        self._accept(self.w, terms)

    def restart(self, w: FloatArray) -> None:
        """Continue from ``w`` with unknown terms (after the set of rows changed).

        The next :meth:`trial` is ``w`` itself, and its observation is accepted.
        """
        self.w = np.asarray(w, dtype=np.float64).copy()
        self._objective = np.inf
        self._step = np.zeros_like(self.w)
        self._slope = 0.0
        self._t = 1.0

    def trial(self) -> FloatArray:
        """The next point at which the cities must evaluate their terms."""
        return self.w + self._t * self._step

    def observe(self, terms: LogisticTerms) -> None:
        """Take the summed terms at :meth:`trial`; accept the point or backtrack."""
        self.evaluations += 1
        w_new = self.trial()
        value = self.C * terms.loss + 0.5 * float(np.sum(self.penalty * (w_new - self.prior) ** 2))
        noise = 1e-12 * max(1.0, abs(self._objective))
        if value <= self._objective + 1e-4 * self._t * self._slope + noise:
            self._accept(w_new, terms)
        else:
            self._t *= 0.5
            if self._t < 1e-10:
                self.converged = True  # no descent left at machine precision
        if not self.converged and self.evaluations >= self.max_evaluations:
            self.exhausted = True

    def _accept(self, w: FloatArray, terms: LogisticTerms) -> None:
        self.terms = terms
        value, grad, hess = self._objective_of(w, terms)
        try:
            step = -scipy.linalg.solve(hess, grad, assume_a="pos", check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            step = -scipy.linalg.lstsq(hess, grad)[0]
        self.w = w
        self._objective = value
        self._step = step
        self._slope = float(grad @ step)
        self._t = 1.0
        if np.max(np.abs(step)) <= self.tolerance * max(1.0, float(np.max(np.abs(w)))):
            # Quadratic convergence: the last step lands within rounding of the optimum.
            self.w = w + step
            self.converged = True


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
