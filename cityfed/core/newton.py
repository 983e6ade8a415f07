"""Damped Newton iterations for the penalised GLM objectives (logistic, Poisson).

The coordinator proposes a point, the cities return the summed loss, gradient and
Hessian of their rows there (:class:`NewtonTerms`), and :class:`NewtonSolver`
accepts the point or backtracks. The objective is
``C * sum(loss) + 1/2 * sum_j penalty_j * (w_j - prior_j)^2`` with the intercept
unpenalised; the family (log-loss, Poisson deviance) only changes what the cities
sum. No I/O: the same solver runs across cities, on one city (personalisation)
or in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = ["NewtonSolver", "NewtonTerms", "intercept_gram"]


@dataclass(frozen=True)
class NewtonTerms:
    """Summed loss, gradient and Hessian of some rows at one weight vector."""

    loss: float
    grad: FloatArray
    hess: FloatArray

    def __add__(self, other: NewtonTerms) -> NewtonTerms:
        return NewtonTerms(self.loss + other.loss, self.grad + other.grad, self.hess + other.hess)


def intercept_gram(moments: Moments, scaler: Scaler) -> tuple[FloatArray, FloatArray, float]:
    """``sum u u^T`` and ``sum y u`` of the rows ``u = [1, z]``, and ``sum y``, from moments.

    What every family's terms at an intercept-only point need: with all slopes
    at zero each row has the same prediction, so the loss, gradient and Hessian
    are functions of these pooled sums (no round with the cities).
    """
    d = moments.dim - 1
    mean, scatter = scaler.scaled_moments(moments)
    u_mean = np.concatenate([[1.0], mean])  # [1, z_1..z_d, y]
    u_scatter = np.zeros((d + 2, d + 2))
    u_scatter[1:, 1:] = scatter
    gram = moments.n * np.outer(u_mean, u_mean) + u_scatter
    return gram[: d + 1, : d + 1], gram[: d + 1, d + 1], moments.n * float(mean[d])


class NewtonSolver:
    """Damped Newton iterations on a penalised GLM objective.

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
        self.terms: NewtonTerms | None = None

    @property
    def done(self) -> bool:
        """True once converged or out of evaluations."""
        return self.converged or self.exhausted

    def _objective_of(
        self, w: FloatArray, terms: NewtonTerms
    ) -> tuple[float, FloatArray, FloatArray]:
        diff = w - self.prior
        value = self.C * terms.loss + 0.5 * float(np.sum(self.penalty * diff * diff))
        grad = self.C * terms.grad + self.penalty * diff
        hess = self.C * terms.hess + np.diag(self.penalty)
        return value, grad, hess

    def start(self, terms: NewtonTerms, w: FloatArray | None = None) -> None:
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

    def observe(self, terms: NewtonTerms) -> None:
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

    def _accept(self, w: FloatArray, terms: NewtonTerms) -> None:
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
