"""The deterministic per-city holdout split."""

from __future__ import annotations

import hashlib

import numpy as np

from cityfed.typing import BoolArray, IntArray

__all__ = ["fold_ids", "holdout_mask"]


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
    mask[_rng(seed, city).permutation(n_rows)[:n_holdout]] = True
    return mask


def _rng(seed: int, city: str, stream: int | None = None) -> np.random.Generator:
    digest = hashlib.sha256(city.encode("utf-8")).digest()
    key = [seed, int.from_bytes(digest[:8], "little")]
    return np.random.default_rng(key if stream is None else [*key, stream])


def fold_ids(n_rows: int, folds: int, seed: int, city: str) -> IntArray:
    """The fold (``0 .. folds - 1``) of each of a city's training rows, fixed by the city.

    Folds as even as possible (sizes differ by at most one), assigned by a
    permutation seeded like the holdout split but from a separate stream, so
    the same city, seed and row count always give the same folds.
    """
    order = _rng(seed, city, stream=1).permutation(n_rows)
    ids = np.empty(n_rows, dtype=np.int64)
    ids[order] = np.arange(n_rows) % folds
    return ids
