"""A city's training rows in blocks: from memory, or streamed from its source.

Every statistic a city sends (moments, fold moments, Newton terms) is computed
block by block over blocks of :data:`~cityfed.data.holdout.BLOCK_ROWS`
training rows and combined in block order. The blocks are the same whether the
rows sit in memory (:func:`data_blocks`) or stream past from the source
(:func:`streamed_blocks`, memory bounded by a few blocks whatever the row
count), so both give the same bytes, run after run.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from cityfed.config.spec import CitySpec, FederationSpec
from cityfed.core.newton import NewtonTerms
from cityfed.core.stats import Moments
from cityfed.data.city_data import CityData, row_set
from cityfed.data.harmonise import harmonised_chunks
from cityfed.data.holdout import BLOCK_ROWS, block_folds, block_holdout
from cityfed.typing import BoolArray, FloatArray

__all__ = [
    "BlockTerms",
    "Summary",
    "Tally",
    "data_blocks",
    "rebatch",
    "split_blocks",
    "streamed_blocks",
    "summarise",
]


@dataclass
class Tally:
    """A city's row counts, complete once a pass over its rows has ended."""

    rows_read: int = 0
    rows_train: int = 0
    rows_holdout: int = 0
    drop_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def reasons(self) -> dict[str, int]:
        """Drop reasons in name order."""
        return dict(sorted(self.drop_reasons.items()))


def rebatch(parts: Iterable[FloatArray], size: int) -> Iterator[FloatArray]:
    """The rows of ``parts`` in blocks of ``size`` rows; the last has 0 to ``size`` rows.

    The last block is held back until the parts end, so that whoever splits it
    knows it is the last; it is empty only when there are no rows at all. A block
    inside one part is a view of it: rows are copied only across part boundaries.
    """
    pending: deque[FloatArray] = deque()
    count = 0
    seen = False
    for part in parts:
        seen = True
        pending.append(part)
        count += int(part.shape[0])
        while count > size:
            yield _take(pending, size)
            count -= size
    if not seen:
        raise ValueError("no rows to block (not even an empty table)")
    yield np.concatenate(list(pending)) if len(pending) > 1 else pending[0]


def _take(pending: deque[FloatArray], size: int) -> FloatArray:
    """The first ``size`` rows of the pending parts (which hold more than that)."""
    first = pending[0]
    if first.shape[0] >= size:
        if first.shape[0] == size:
            pending.popleft()
        else:
            pending[0] = first[size:]
        return first[:size]
    pieces = []
    need = size
    while need:
        part = pending[0]
        if part.shape[0] <= need:
            pieces.append(pending.popleft())
            need -= int(part.shape[0])
        else:
            pieces.append(part[:need])
            pending[0] = part[need:]
            need = 0
    return np.concatenate(pieces)


def split_blocks(
    tables: Iterable[FloatArray], fraction: float, seed: int, city: str
) -> Iterator[tuple[FloatArray, BoolArray]]:
    """Each block of a city's usable rows, in order, with its holdout rows marked.

    The split of :func:`~cityfed.data.holdout.holdout_mask`, decided block by
    block as the rows arrive.
    """
    blocks = rebatch(tables, BLOCK_ROWS)
    current = next(blocks)
    index = 0
    for following in blocks:
        yield current, block_holdout(index, current.shape[0], fraction, seed, city, last=False)
        current, index = following, index + 1
    yield current, block_holdout(index, current.shape[0], fraction, seed, city, last=True)


def streamed_blocks(
    city: CitySpec,
    fed: FederationSpec,
    tally: Tally,
    keep: Callable[[FloatArray, BoolArray], None] | None = None,
) -> Iterator[FloatArray]:
    """Blocks of the city's training rows read from its source, in bounded memory.

    Rows are ``[design..., target, exposure]`` as :class:`CityData` holds them.
    ``tally`` is filled as the rows pass; ``keep`` (if given) sees each block
    and its holdout mask (to keep the rows for later messages of the run).
    The mapping and header are checked when this is called, before any row is read.
    """
    chunks = harmonised_chunks(city, fed)
    fraction, seed = row_set(city, fed)

    def tables() -> Iterator[FloatArray]:
        for chunk in chunks:
            tally.rows_read += chunk.rows_read
            tally.drop_reasons.update(chunk.drop_reasons)
            yield chunk.table

    def training() -> Iterator[FloatArray]:
        for block, holdout in split_blocks(tables(), fraction, seed, city.name):
            held = int(holdout.sum())
            tally.rows_train += int(block.shape[0]) - held
            tally.rows_holdout += held
            if keep is not None:
                keep(block, holdout)
            yield np.compress(~holdout, block, axis=0) if held else block

    return rebatch(training(), BLOCK_ROWS)


def data_blocks(data: CityData) -> Iterator[FloatArray]:
    """Blocks of the training rows of a city's data in memory (as :func:`streamed_blocks`)."""
    n = int(data.y_train.shape[0])
    columns = [data.X_train, data.y_train[:, None]]
    if data.exposure_train is not None:
        columns.append(data.exposure_train[:, None])
    for start in range(0, max(n, 1), BLOCK_ROWS):
        yield np.hstack([c[start : start + BLOCK_ROWS] for c in columns])


#: A block's Newton terms at every point asked: ``terms(X, y, offset)``, where
#: ``offset`` is the log exposure of a Poisson model with one, else None.
BlockTerms = Callable[[FloatArray, FloatArray, FloatArray | None], list[NewtonTerms]]


@dataclass(frozen=True)
class Summary:
    """What one pass over a city's training rows gives.

    Attributes
    ----------
    moments : Moments
        Of ``[design..., target]``.
    folds : tuple of Moments
        ``alpha = "cv"``: the moments of each fold (empty otherwise).
    sums : ndarray
        Column sums of the design's level indicators (a level's count of
        rows; zero for the other columns).
    terms : tuple of NewtonTerms
        The Newton terms at each point asked (empty when none were).
    """

    moments: Moments
    folds: tuple[Moments, ...]
    sums: FloatArray
    terms: tuple[NewtonTerms, ...] = ()


def summarise(
    blocks: Iterable[FloatArray],
    city: CitySpec,
    fed: FederationSpec,
    terms: BlockTerms | None = None,
) -> Summary:
    """Moments, fold moments and Newton terms of the training rows, in block order."""
    d = len(fed.design)
    folds = fed.cv_folds if fed.alpha_cv else 0
    _, seed = row_set(city, fed)
    moments = Moments.empty(d + 1)
    fold_moments = [Moments.empty(d + 1) for _ in range(folds)]
    levels = np.flatnonzero(fed.indicator_mask)  # only a level's count is needed
    sums = np.zeros(d)
    total: list[NewtonTerms] = []
    for index, block in enumerate(blocks):
        # One layout whatever the path (a harmonised chunk is column-major, a
        # compressed block row-major): BLAS sums depend on it, the bytes must not.
        rows = np.ascontiguousarray(block[:, : d + 1])
        moments = moments.merge(Moments.of(rows))
        if levels.size:
            sums[levels] += rows[:, levels].sum(axis=0)
        if folds:
            ids = block_folds(index, rows.shape[0], folds, seed, city.name)
            for j in range(folds):
                fold_moments[j] = fold_moments[j].merge(Moments.of(rows[ids == j]))
        if terms is not None:
            offset = None if fed.exposure is None else np.log(block[:, d + 1])
            part = terms(rows[:, :d], rows[:, d], offset)
            total = part if index == 0 else [a + b for a, b in zip(total, part, strict=True)]
    return Summary(moments, tuple(fold_moments), sums, tuple(total))
