"""Per-city sufficient statistics and their exact, stable combination.

A city summarises its training rows ``[x_1 .. x_d, y]`` by their count, mean and
centred scatter matrix. Two summaries combine with the parallel formula of Chan,
Golub and LeVeque, so the coordinator holds one ``(d+1) x (d+1)`` matrix however
many cities answer, and never forms raw sums of squares (which lose precision
when a column's mean is large against its spread).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cityfed.typing import FloatArray

__all__ = ["Moments", "merge_all"]


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred scatter ``sum (z - mean)(z - mean)^T`` of rows ``z``.

    Attributes
    ----------
    n : int
        Number of rows.
    mean : ndarray of shape (p,)
        Column means.
    scatter : ndarray of shape (p, p)
        Centred scatter matrix (``n`` times the population covariance).
    """

    n: int
    mean: FloatArray
    scatter: FloatArray

    @property
    def dim(self) -> int:
        """Number of columns ``p``."""
        return int(self.mean.shape[0])

    @classmethod
    def empty(cls, dim: int) -> Moments:
        """The statistics of no rows, the neutral element of :meth:`merge`."""
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def of(cls, rows: FloatArray) -> Moments:
        """Statistics of a table of rows (two passes: mean, then centred products)."""
        table = np.asarray(rows, dtype=np.float64)
        if table.ndim != 2:
            raise ValueError(f"expected a 2-D table, got shape {table.shape}")
        n = int(table.shape[0])
        if n == 0:
            return cls.empty(int(table.shape[1]))
        mean = table.mean(axis=0)
        centred = table - mean
        # A second pass removes the rounding left in the first mean.
        correction = centred.mean(axis=0)
        mean = mean + correction
        centred -= correction
        scatter = centred.T @ centred
        return cls(n, mean, (scatter + scatter.T) / 2.0)

    def merge(self, other: Moments) -> Moments:
        """The statistics of both sets of rows together, exactly.

        Raises
        ------
        ValueError
            If the two summaries have different numbers of columns.
        """
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {self.dim} columns with {other.dim}")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, scatter)

    @property
    def variance(self) -> FloatArray:
        """Population variance (``ddof = 0``) of each column."""
        if self.n == 0:
            return np.zeros(self.dim)
        return np.clip(np.diag(self.scatter) / self.n, 0.0, None)


def merge_all(parts: Iterable[Moments], dim: int) -> Moments:
    """Fold summaries one at a time: O(p^2) memory whatever their number."""
    total = Moments.empty(dim)
    for part in parts:
        total = total.merge(part)
    return total
