"""The deterministic per-city holdout split."""

from __future__ import annotations

import hashlib

import numpy as np

from cityfed.typing import BoolArray

__all__ = ["holdout_mask"]


def holdout_mask(n_rows: int, fraction: float, seed: int, city: str) -> BoolArray:
    """The deterministic per-city holdout rows.

    The same city, seed and row count always give the same split, whatever the
    machine; ``fraction = 0`` keeps every row for training.
    """
    mask = np.zeros(n_rows, dtype=bool)
    n_holdout = round(fraction * n_rows)
    if n_holdout == 0 or n_rows < 2:
        return mask
    n_holdout = min(n_holdout, n_rows - 1)
    digest = hashlib.sha256(city.encode("utf-8")).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
    mask[rng.permutation(n_rows)[:n_holdout]] = True
    return mask
