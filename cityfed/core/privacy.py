"""Differential privacy's numerics: clipped rows, bounded statistics, Gaussian noise.

Sufficient-statistics perturbation for linear and ridge regression: each row
``(x, y)`` is clipped to the bounds the federation declares, mapped to
``u = (x - mid) / half`` in ``[-1, 1]``, and the city releases the upper
triangle of ``sum [1, u][1, u]^T`` (its count, sums and cross-products) plus
Gaussian noise. One row changes that triangle by at most ``|[1, u]|^2 <=
p + 1`` in L2 norm (``p`` columns), the sensitivity the noise is scaled to.

For logistic regression each round releases only the **gradient** at one
point, noised: with ``z`` the row's scaled features (bounded through the bounds
and the public scaler) and ``v = [1, z]``, one row moves the gradient
``(p - y) v`` by at most ``|v|``. The curvature is not released at all: the
coordinator steps with Böhning's bound ``sum v v^T / 4`` (from the private
moments, so free), which majorises the logistic Hessian everywhere, so every
step decreases the objective however noisy the start: no line search, no loss
released, and a Hessian's ``|v|^2 / 4`` sensitivity (far larger) never paid.

Nothing here accounts for the privacy loss (``dp-accounting`` does, on the city)
or draws random numbers itself: the caller passes the generator.
"""

from __future__ import annotations

import numpy as np

from cityfed.core.newton import NewtonTerms
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = [
    "clip_rows",
    "gradient_sensitivity",
    "gram_length",
    "gram_sensitivity",
    "moments_from_gram",
    "noisy_gradient",
    "noisy_gram",
]


def clip_rows(table: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    """Every column clipped into its declared ``[low, high]``."""
    return np.clip(np.asarray(table, dtype=np.float64), low, high)


def gram_length(columns: int) -> int:
    """Numbers of the upper triangle of ``[1, u][1, u]^T`` for ``columns`` columns."""
    p = columns + 1
    return p * (p + 1) // 2


def gram_sensitivity(columns: int) -> float:
    """L2 sensitivity of the released triangle to one row: ``|[1, u]|^2 <= columns + 1``."""
    return float(columns + 1)


def _normalised(table: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    mid, half = (high + low) / 2.0, (high - low) / 2.0
    return (clip_rows(table, low, high) - mid) / half


def noisy_gram(
    table: FloatArray,
    low: FloatArray,
    high: FloatArray,
    sigma: float,
    rng: np.random.Generator,
) -> FloatArray:
    """The released triangle of ``sum [1, u][1, u]^T`` (rows clipped), plus ``N(0, sigma^2)``."""
    u = _normalised(table, low, high)
    v = np.column_stack([np.ones(u.shape[0]), u])
    gram = v.T @ v
    rows, cols = np.triu_indices(v.shape[1])
    released = gram[rows, cols]
    return released + rng.normal(0.0, sigma, released.shape) if sigma > 0 else released


def moments_from_gram(
    released: FloatArray, low: FloatArray, high: FloatArray, floor: float = 1.0
) -> Moments:
    """Pooled :class:`Moments` in federation units from a (noisy, summed) released triangle.

    The count is rounded to a whole number of at least ``floor``; the scatter
    is repaired to be positive semi-definite (noise can make it indefinite).
    """
    p = low.shape[0] + 1
    gram = np.zeros((p, p))
    rows, cols = np.triu_indices(p)
    gram[rows, cols] = released
    gram = gram + np.triu(gram, 1).T
    n = max(float(np.rint(gram[0, 0])), floor)
    mean_u = gram[0, 1:] / n
    scatter_u = gram[1:, 1:] - n * np.outer(mean_u, mean_u)
    values, vectors = np.linalg.eigh((scatter_u + scatter_u.T) / 2.0)
    scatter_u = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    mid, half = (high + low) / 2.0, (high - low) / 2.0
    scatter = scatter_u * np.outer(half, half)
    return Moments(int(n), mid + half * mean_u, (scatter + scatter.T) / 2.0)


def gradient_sensitivity(scaler: Scaler, low: FloatArray, high: FloatArray) -> float:
    """L2 sensitivity of the released gradient to one row: ``B = max |[1, z]|`` over the box.

    ``low`` and ``high`` bound the design columns in federation units.
    """
    far = np.maximum(np.abs(low - scaler.mean), np.abs(high - scaler.mean)) / scaler.scale
    return float(np.sqrt(1.0 + np.sum(far**2)))


def noisy_gradient(terms: NewtonTerms, sigma: float, rng: np.random.Generator) -> NewtonTerms:
    """The gradient plus ``N(0, sigma^2)``; neither the loss nor the Hessian is released (0)."""
    dim = terms.grad.shape[0]
    return NewtonTerms(0.0, terms.grad + rng.normal(0.0, sigma, dim), np.zeros((dim, dim)))
