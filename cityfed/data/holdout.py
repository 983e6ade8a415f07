"""The deterministic per-city holdout split and folds, decided block by block.

A city's rows are split in blocks of :data:`BLOCK_ROWS` consecutive rows, so
that a city of any size can be split while its rows stream past, in bounded
memory, and the split of a row never depends on how the rows were read (in one
piece or in chunks). Block ``b`` covering rows ``[s, s + r)`` holds out
``round(f (s + r)) - round(f s)`` of its rows, chosen by a permutation seeded by
the city, its seed and the block: the blocks' counts add up to exactly
``round(f n)`` of the ``n`` rows, and a city of at most :data:`BLOCK_ROWS` rows
is split exactly as one permutation of all its rows would split it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cityfed.typing import BoolArray, IntArray

__all__ = ["BLOCK_ROWS", "block_folds", "block_holdout", "fold_ids", "holdout_mask"]

#: Rows per block of the split, of the folds and of every blocked statistic.
BLOCK_ROWS = 65_536


def _rng(seed: int, city: str, stream: tuple[int, ...] = ()) -> np.random.Generator:
    digest = hashlib.sha256(city.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little"), *stream])


def block_holdout(
    block: int, rows: int, fraction: float, seed: int, city: str, *, last: bool
) -> BoolArray:
    """The holdout rows of one block of ``rows`` rows (``block`` counts from 0).

    Every block but the last has :data:`BLOCK_ROWS` rows; the last one says so
    (``last = True``), so that at least one of a city's rows is kept for training
    and a city of one row holds none out.
    """
    start = block * BLOCK_ROWS
    total = start + rows
    count = round(fraction * total) - round(fraction * start)
    if last:
        wanted = round(fraction * total)
        if total < 2:
            count -= wanted
        elif wanted > total - 1:
            count -= wanted - (total - 1)
    mask = np.zeros(rows, dtype=bool)
    if count <= 0:
        return mask
    if block == 0:  # a city of one block: one permutation of its rows, as always
        mask[_rng(seed, city).permutation(rows)[:count]] = True
    else:  # a uniform subset as well, without permuting the whole block
        mask[_rng(seed, city, (2, block)).choice(rows, count, replace=False, shuffle=False)] = True
    return mask


def holdout_mask(n_rows: int, fraction: float, seed: int, city: str) -> BoolArray:
    """The deterministic per-city holdout rows of ``n_rows`` rows.

    The same city, seed and row count always give the same split, whatever the
    machine; ``fraction = 0`` keeps every row for training.
    """
    blocks = max(1, -(-n_rows // BLOCK_ROWS))
    return np.concatenate(
        [
            block_holdout(
                b,
                min(BLOCK_ROWS, n_rows - b * BLOCK_ROWS),
                fraction,
                seed,
                city,
                last=b == blocks - 1,
            )
            for b in range(blocks)
        ]
    )


def block_folds(block: int, rows: int, folds: int, seed: int, city: str) -> IntArray:
    """The folds (``0 .. folds - 1``) of one block of a city's training rows.

    Labels ``(start + i) % folds`` over the block's rows in a permutation seeded
    like the holdout split (from a separate stream): over all blocks the fold
    sizes differ by at most one.
    """
    rng = _rng(seed, city, (1,)) if block == 0 else _rng(seed, city, (3, block))
    ids = np.empty(rows, dtype=np.int64)
    ids[rng.permutation(rows)] = (np.arange(rows) + block * BLOCK_ROWS) % folds
    return ids


def fold_ids(n_rows: int, folds: int, seed: int, city: str) -> IntArray:
    """The fold (``0 .. folds - 1``) of each of a city's ``n_rows`` training rows.

    Folds as even as possible (sizes differ by at most one), fixed by the city:
    the same city, seed and row count always give the same folds.
    """
    blocks = max(1, -(-n_rows // BLOCK_ROWS))
    return np.concatenate(
        [
            block_folds(b, min(BLOCK_ROWS, n_rows - b * BLOCK_ROWS), folds, seed, city)
            for b in range(blocks)
        ]
    )
