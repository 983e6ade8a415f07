"""The iterative baseline's aggregation: the row-weighted average of the cities' weights.

FedAvg of locally fitted scikit-learn models (the approach of Flower's own
scikit-learn examples) is kept as ``algorithm = "fedavg"`` so that benchmarks can
put the exact methods beside it on the same data; each city's local fit is in
:mod:`cityfed_client.fedavg`.
"""

from __future__ import annotations

import numpy as np

from cityfed.typing import FloatArray

__all__ = ["WeightedAverage"]


class WeightedAverage:
    """Running row-weighted mean of weight vectors: O(d) memory."""

    def __init__(self, dim: int) -> None:
        self._sum = np.zeros(dim)
        self._weight = 0.0

    def add(self, weights: FloatArray, n: int) -> None:
        """Fold in one city's weights with its row count."""
        self._sum += n * np.asarray(weights, dtype=np.float64)
        self._weight += n

    def mean(self) -> FloatArray:
        """The weighted mean (raises when nothing was added)."""
        if self._weight <= 0:
            raise ValueError("no weights to average")
        return self._sum / self._weight
