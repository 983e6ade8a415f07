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

from collections.abc import Sequence
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


#: Step lengths evaluated in one federated round: the Newton (or Halley) step, twice
#: it, and two shorter ones, so that neither an overshoot nor a short step costs a
#: round (measured on the benchmark data: rain demo 7 -> 5 rounds to 1e-6).
ROUND_LENGTHS: tuple[float, ...] = (2.0, 1.0, 0.5, 0.25)


class NewtonSolver:
    """Damped Newton iterations on a penalised GLM objective, several points per round.

    Call :meth:`trials` for the points to evaluate (one row each), then
    :meth:`observe_all` with the summed terms at each, until :attr:`done`; each
    observation is one round. With the default ``lengths = (1.0,)`` a round is one
    point and a rejected point halves the step (:meth:`trial` / :meth:`observe`, the
    classic damped Newton). With several lengths, the candidates ``w + t s`` of one
    round are a line search inside one exchange: the best that satisfies Armijo's
    condition is taken, and with ``halley`` the Hessians along the line give the
    third derivative in that direction, used for a Halley step (cubic convergence
    where Newton's is quadratic). Convergence is always decided on the Newton step,
    and the published point is the Newton step's, so the optimum is the same.

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
    lengths : tuple of float
        Step lengths evaluated per round; ``1.0`` must be among them.
    halley : bool
        Correct the step with the third derivative along the last line (needs two or
        more lengths).
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
        lengths: tuple[float, ...] = (1.0,),
        halley: bool = False,
    ) -> None:
        if 1.0 not in lengths or min(lengths) <= 0.0:
            raise ValueError(f"step lengths must be > 0 and include 1, got {lengths}")
        self.C = C
        self.tolerance = tolerance
        self.max_evaluations = max_evaluations
        if penalty is None:
            penalty = np.ones(dim)
            penalty[0] = 0.0
        self.penalty = np.asarray(penalty, dtype=np.float64)
        self.prior = np.zeros(dim) if prior is None else np.asarray(prior, dtype=np.float64)
        self.lengths = tuple(float(t) for t in lengths)
        self.halley = halley and len(self.lengths) > 1
        #: Shortening after a round where no candidate was good enough.
        self._shrink_by = min(self.lengths) / (2.0 * max(self.lengths))
        self.w = self.prior.copy()
        self.evaluations = 0
        self.converged = False
        self.exhausted = False
        self._objective = np.inf
        self._grad = np.zeros(dim)
        self._hess = np.eye(dim)
        self._step = np.zeros(dim)
        self._scale = 1.0
        self._restarting = False
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

        The next round is ``w`` alone, and its observation is accepted.
        """
        self.w = np.asarray(w, dtype=np.float64).copy()
        self._objective = np.inf
        self._step = np.zeros_like(self.w)
        self._scale = 1.0
        self._restarting = True

    def trials(self) -> FloatArray:
        """The points at which the cities evaluate their terms this round, one per row."""
        if self._restarting:
            return self.w[None, :].copy()
        return np.stack([self.w + (self._scale * t) * self._step for t in self.lengths])

    def trial(self) -> FloatArray:
        """The one point of a single-length solver's round."""
        points = self.trials()
        if points.shape[0] != 1:
            raise ValueError("trial() is for one point per round; use trials()")
        return np.asarray(points[0])

    def observe(self, terms: NewtonTerms) -> None:
        """Take the summed terms at :meth:`trial` (one point per round)."""
        self.observe_all([terms])

    def observe_all(self, terms: Sequence[NewtonTerms]) -> None:
        """Take the summed terms at each of :meth:`trials`; accept the best or shorten."""
        points = self.trials()
        if len(terms) != points.shape[0]:
            raise ValueError(f"{len(terms)} terms for {points.shape[0]} points")
        self.evaluations += 1
        if self._restarting:
            self._restarting = False
            self._accept(points[0], terms[0])
        else:
            self._take_best(points, terms)
        if not self.converged and self.evaluations >= self.max_evaluations:
            self.exhausted = True

    def _take_best(self, points: FloatArray, terms: Sequence[NewtonTerms]) -> None:
        noise = 1e-12 * max(1.0, abs(self._objective))
        slope = float(self._grad @ self._step)
        evaluated = [self._objective_of(p, t) for p, t in zip(points, terms, strict=True)]
        best: tuple[float, int] | None = None
        for k, (value, _, _) in enumerate(evaluated):
            length = self._scale * self.lengths[k]
            armijo = self._objective + 1e-4 * length * min(slope, 0.0) + noise
            if np.isfinite(value) and value <= armijo and (best is None or value < best[0]):
                best = (value, k)
        if best is None:
            self._scale *= self._shrink_by
            if self._scale * max(self.lengths) < 1e-10:
                self.converged = True  # no descent left at machine precision
            return
        k = best[1]
        along = None
        if self.halley:
            along = self._third_along_line([hess for _, _, hess in evaluated], k)
        self._accept(points[k], terms[k], along)

    def _third_along_line(
        self, candidate_hessians: Sequence[FloatArray], k: int
    ) -> tuple[FloatArray, FloatArray]:
        """``dH/dt`` at candidate ``k`` along the line, from its nearest neighbour's Hessian.

        The line's points are ``w + t s`` (``t = 0`` the current point, whose Hessian
        is known): a secant of the Hessians is the third derivative contracted with
        ``s``, with no extra point asked of the cities.
        """
        ts = [0.0, *(self._scale * t for t in self.lengths)]
        hessians = [self._hess, *candidate_hessians]
        j = k + 1
        others = [i for i in range(len(ts)) if i != j]
        near = min(others, key=lambda i: abs(ts[i] - ts[j]))
        return (hessians[near] - hessians[j]) / (ts[near] - ts[j]), self._step.copy()

    def _accept(
        self,
        w: FloatArray,
        terms: NewtonTerms,
        along: tuple[FloatArray, FloatArray] | None = None,
    ) -> None:
        self.terms = terms
        value, grad, hess = self._objective_of(w, terms)
        newton = _solve(hess, grad)
        step = newton
        if along is not None and np.all(np.isfinite(along[0])):
            # Halley: (H + 1/2 T[s_N]) s = -g, with T[s_N] ~ (projection of s_N on the
            # last direction d) * dH/dt along d.
            derivative, direction = along
            curvature = float(direction @ hess @ direction)
            if curvature > 0.0:
                share = float(newton @ hess @ direction) / curvature
                corrected = hess + 0.5 * share * derivative
                try:
                    factor = scipy.linalg.cho_factor((corrected + corrected.T) / 2.0)
                    step = -scipy.linalg.cho_solve(factor, grad)
                except (np.linalg.LinAlgError, ValueError):
                    step = newton
        self.w = w
        self._objective = value
        self._grad = grad
        self._hess = hess
        self._step = step
        self._scale = 1.0
        if np.max(np.abs(newton)) <= self.tolerance * max(1.0, float(np.max(np.abs(w)))):
            # Quadratic convergence: the last step lands within rounding of the optimum.
            self.w = w + newton
            self.converged = True


def _solve(hess: FloatArray, grad: FloatArray) -> FloatArray:
    """The Newton step ``-H^-1 g`` (least squares when ``H`` is singular)."""
    try:
        return np.asarray(-scipy.linalg.solve(hess, grad, assume_a="pos", check_finite=False))
    except (np.linalg.LinAlgError, ValueError):
        return np.asarray(-scipy.linalg.lstsq(hess, grad)[0])
