"""The statistics of a secure sum as integer vectors, and the pooled statistics back.

A masked sum can only add, so every statistic is sent in an additive form that
keeps its precision (:mod:`cityfed.core.fixedpoint` holds 2**-160):

- moments as raw sums, **computed exactly**: the count ``n``, the column sums
  ``n (m + m_low)`` and the cross-products ``S + n (m + m_low)(m + m_low)^T``
  (upper triangle), the products of the two-double means done in rationals, so
  the only rounding is that of the city's own centred scatter ``S``. The
  coordinator subtracts ``n mu mu^T`` in exact rational arithmetic too: a column
  at 1e9 with a spread of 0.1, whose raw sum of squares would lose the spread
  entirely in doubles, keeps it. One sum, for the total and every fold;
- Newton terms at each point: loss, gradient and the Hessian's upper triangle,
  which only add.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from cityfed.core.fixedpoint import fixed
from cityfed.core.newton import NewtonTerms
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = [
    "moments_from_sums",
    "moments_length",
    "moments_vector",
    "terms_from_vector",
    "terms_length",
    "terms_vector",
]


def _width(dim: int) -> int:
    return 1 + dim + dim * (dim + 1) // 2


def moments_length(parts: int, dim: int) -> int:
    """Integers of a moments sum: per part a count, ``dim`` sums and the upper cross-products."""
    return parts * _width(dim)


def terms_length(points: int, dim: int) -> int:
    """Integers of a Newton sum: per point the loss, gradient and the Hessian's upper triangle."""
    return points * _width(dim)


def moments_vector(parts: Sequence[Moments]) -> list[int]:
    """Count, column sums and cross-products of each part, exact, as fixed-point integers."""
    out: list[int] = []
    for part in parts:
        n = part.n
        means = [
            Fraction(hi) + Fraction(lo)
            for hi, lo in zip(part.mean.tolist(), part.low.tolist(), strict=True)
        ]
        out.append(fixed(Fraction(n)))
        out.extend(fixed(m, n) for m in means)
        rows, cols = np.triu_indices(part.dim)
        for i, j, s in zip(
            rows.tolist(), cols.tolist(), part.scatter[rows, cols].tolist(), strict=True
        ):
            out.append(fixed(Fraction(s) + n * means[i] * means[j]))
    return out


def moments_from_sums(sums: Sequence[Fraction], parts: int, dim: int) -> list[Moments]:
    """The pooled :class:`Moments` of every part from the decoded sum (exact until the end).

    Raises
    ------
    ValueError
        If the sum has the wrong length, or a count is not a whole number >= 0.
    """
    width = _width(dim)
    if len(sums) != parts * width:
        raise ValueError("the secure moments sum does not have the expected length")
    rows, cols = np.triu_indices(dim)
    out = []
    for p in range(parts):
        chunk = sums[p * width : (p + 1) * width]
        count = chunk[0]
        if count.denominator != 1 or count < 0:
            raise ValueError(f"a pooled row count ({float(count):g}) is not a whole number")
        n = int(count)
        if n == 0:
            out.append(Moments.empty(dim))
            continue
        mean = [s / n for s in chunk[1 : 1 + dim]]
        scatter = np.zeros((dim, dim))
        for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            scatter[i, j] = scatter[j, i] = float(chunk[1 + dim + k] - n * mean[i] * mean[j])
        hi = np.array([float(m) for m in mean])
        lo = np.array([float(m - Fraction(h)) for m, h in zip(mean, hi.tolist(), strict=True)])
        out.append(Moments(n, hi, scatter, lo))
    return out


def terms_vector(terms: Sequence[NewtonTerms]) -> list[int]:
    """Loss, gradient and upper-triangular Hessian of each point, as fixed-point integers."""
    out: list[int] = []
    for t in terms:
        rows, cols = np.triu_indices(t.grad.shape[0])
        values = [float(t.loss), *t.grad.tolist(), *t.hess[rows, cols].tolist()]
        out.extend(fixed(v) for v in values)
    return out


def terms_from_vector(values: FloatArray, points: int, dim: int) -> list[NewtonTerms]:
    """The summed Newton terms at each point (the inverse of :func:`terms_vector`).

    Raises
    ------
    ValueError
        If ``values`` has the wrong length.
    """
    if values.shape != (terms_length(points, dim),):
        raise ValueError("the secure Newton sum does not have the expected length")
    width = _width(dim)
    rows, cols = np.triu_indices(dim)
    out = []
    for j in range(points):
        chunk = values[j * width : (j + 1) * width]
        hess = np.zeros((dim, dim))
        hess[rows, cols] = chunk[1 + dim :]
        hess = hess + np.triu(hess, 1).T
        out.append(NewtonTerms(float(chunk[0]), chunk[1 : 1 + dim].copy(), hess))
    return out
