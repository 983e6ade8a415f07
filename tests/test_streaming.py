"""A city's statistics streamed from its source in blocks: same bytes, same errors, bounded.

The rows of a city pass in chunks (the reader's) and blocks (the split's and the
statistics'); whatever the chunking, the split, the statistics and the first bad
cell named must be those of the whole table read at once.
"""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cityfed.data.sources as sources
from cityfed.config.spec import CitySpec, FederationSpec, load_city, load_federation
from cityfed.data.cache import DataCache
from cityfed.data.city_data import load_city_data
from cityfed.data.holdout import BLOCK_ROWS, block_holdout, fold_ids, holdout_mask
from cityfed.data.rows import Summary, Tally, data_blocks, rebatch, streamed_blocks, summarise
from cityfed.errors import DataError

FED = """
[federation]
name = "stream"
task = "regression"
model = "ridge"
alpha = "cv"
alphas = [0.1, 1.0]
cv_folds = 3
holdout_fraction = 0.25
missing = "{missing}"

[target]
name = "load"
unit = "kWh"

[[features]]
name = "temp"
unit = "degC"

[[features]]
name = "wind"
unit = "m/s"

[[features]]
name = "day"
levels = ["mon", "tue", "wed"]
"""

CITY = """[city]
name = "stream-city"
data = "{data}"

[columns]
temp = {{ source = "(hi_f + lo_f) / 2", unit = "degF" }}
wind = {{ source = "wind_mph", unit = "mph" }}
day = "weekday"
load = {{ source = "kwh", unit = "kWh" }}
"""


def _write(root: Path, rows: int, *, missing: str = "drop", kind: str = "csv") -> tuple[Path, Path]:
    """A city of ``rows`` rows (some cells missing) as CSV or Parquet, with its specs."""
    rng = np.random.default_rng(rows)
    frame = pd.DataFrame(
        {
            "hi_f": rng.normal(60.0, 10.0, rows).round(2),
            "lo_f": rng.normal(45.0, 10.0, rows).round(2),
            "wind_mph": rng.gamma(2.0, 4.0, rows).round(2),
            "weekday": rng.choice(["mon", "tue", "wed"], rows),
            "kwh": rng.normal(500.0, 80.0, rows).round(3),
        }
    )
    if missing == "drop":
        frame.loc[rng.random(rows) < 0.02, "wind_mph"] = np.nan
        frame.loc[rng.random(rows) < 0.01, "weekday"] = None
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"city.{kind}"
    if kind == "csv":
        frame.to_csv(data, index=False, na_rep="")
    else:
        frame.to_parquet(data, index=False)
    (root / "federation.toml").write_text(FED.format(missing=missing), encoding="utf-8")
    (root / "city.toml").write_text(CITY.format(data=data.name), encoding="utf-8")
    return root / "federation.toml", root / "city.toml"


def _specs(fed_path: Path, city_path: Path) -> tuple[CitySpec, FederationSpec]:
    return load_city(city_path), load_federation(fed_path)


def _same(a: Summary, b: Summary) -> None:
    """Byte for byte: the same statistics, not merely close ones."""
    for left, right in [(a.moments, b.moments), *zip(a.folds, b.folds, strict=True)]:
        assert left.n == right.n
        assert left.mean.tobytes() == right.mean.tobytes()
        assert left.scatter.tobytes() == right.scatter.tobytes()
        assert left.low.tobytes() == right.low.tobytes()
    assert a.sums.tobytes() == b.sums.tobytes()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CSV city of more rows than two blocks, so that the split and folds span blocks."""
    return _write(tmp_path_factory.mktemp("big"), 2 * BLOCK_ROWS + 4_321)


@pytest.mark.parametrize("kind", ["csv", "parquet", "csv-no-holdout"])
def test_streamed_statistics_equal_the_table_in_memory_byte_for_byte(
    tmp_path: Path, big: tuple[Path, Path], kind: str
) -> None:
    # Prepare: the same rows as CSV (the big fixture) or Parquet; without a holdout
    # the streamed blocks are views of the reader's chunks, not copies
    paths = big if kind == "csv" else _write(tmp_path, 2 * BLOCK_ROWS + 4_321, kind="parquet")
    if kind == "csv-no-holdout":
        paths = _write(tmp_path, 2 * BLOCK_ROWS + 4_321)
        text = paths[0].read_text(encoding="utf-8")
        paths[0].write_text(text.replace("holdout_fraction = 0.25", "holdout_fraction = 0.0"))
    city, fed = _specs(*paths)
    data = load_city_data(city, fed)
    # Execute
    tally = Tally()
    streamed = summarise(streamed_blocks(city, fed, tally), city, fed)
    in_memory = summarise(data_blocks(data), city, fed)
    # Assert: the same bytes, and the counts of the table in memory
    _same(streamed, in_memory)
    assert (tally.rows_read, tally.rows_train, tally.reasons) == (
        data.rows_read,
        data.y_train.size,
        dict(data.drop_reasons),
    )
    fraction = 0.0 if kind == "csv-no-holdout" else 0.25
    assert tally.rows_holdout == data.y_holdout.size == round(fraction * data.rows_used)
    assert sum(tally.drop_reasons.values()) > 0
    # ... and the statistics are the training rows' (an independent computation).
    rows = np.column_stack([data.X_train, data.y_train])
    np.testing.assert_allclose(streamed.moments.mean, rows.mean(axis=0), rtol=1e-13)
    centred = rows - rows.mean(axis=0)
    np.testing.assert_allclose(streamed.moments.scatter, centred.T @ centred, rtol=1e-9)
    folds = fold_ids(data.y_train.size, 3, fed.seed, city.name)
    assert [f.n for f in streamed.folds] == np.bincount(folds).tolist()


def test_the_reader_chunks_change_nothing(
    big: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the statistics with the readers' usual chunks
    city, fed = _specs(*big)
    usual = summarise(streamed_blocks(city, fed, Tally()), city, fed)
    # Execute: tiny chunks on both CSV paths (the fast one and the text one)
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(sources, "CHUNK_ROWS", 9_999)
    small = summarise(streamed_blocks(city, fed, Tally()), city, fed)
    text = summarise(streamed_blocks(city, fed, Tally()), city, fed)
    # Assert
    _same(usual, small)
    _same(usual, text)


@pytest.mark.parametrize("row", [3, 70_000, 2 * BLOCK_ROWS + 100])
def test_a_bad_cell_far_down_is_named_with_its_row_after_the_fast_path_gave_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: int
) -> None:
    # Prepare: a cell the fast path cannot read, in a late chunk
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 256 << 10)
    monkeypatch.setattr(sources, "CHUNK_ROWS", 20_000)
    fed_path, city_path = _write(tmp_path, 2 * BLOCK_ROWS + 500, missing="error")
    data = city_path.parent / "city.csv"
    lines = data.read_text(encoding="utf-8").splitlines()
    cells = lines[row].split(",")
    cells[2] = "12,5"  # a decimal comma in a file of decimal points (and one field too many)
    lines[row] = ",".join(cells)
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    city, fed = _specs(fed_path, city_path)
    # Execute / Assert: the same one line as reading the whole file as text
    with pytest.raises(DataError) as streamed:
        summarise(streamed_blocks(city, fed, Tally()), city, fed)
    with pytest.raises(DataError) as whole:
        load_city_data(city, fed)
    assert str(streamed.value) == str(whole.value)
    assert f"line {row + 1}" in str(streamed.value) or f"row {row}" in str(streamed.value)


def test_a_non_numeric_cell_in_a_late_chunk_names_its_column_and_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 128 << 10)
    fed_path, city_path = _write(tmp_path, 40_000, missing="error")
    data = city_path.parent / "city.csv"
    lines = data.read_text(encoding="utf-8").splitlines()
    cells = lines[35_001].split(",")
    cells[4] = "12x"
    lines[35_001] = ",".join(cells)
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    city, fed = _specs(fed_path, city_path)
    with pytest.raises(DataError, match=r"column 'kwh', row 35001 \(line 35002\): '12x' is not a"):
        summarise(streamed_blocks(city, fed, Tally()), city, fed)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 3 * BLOCK_ROWS + 17),
    fraction=st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.333, 0.5, 0.9]),
    cuts=st.lists(st.integers(0, 3 * BLOCK_ROWS), max_size=6),
)
def test_the_split_is_exact_and_the_same_in_any_chunks(
    n: int, fraction: float, cuts: list[int]
) -> None:
    # Prepare: the rows as row numbers, cut into arbitrary chunks
    rows = np.arange(n, dtype=np.float64)[:, None]
    edges = sorted({0, n, *(c for c in cuts if c < n)})
    chunks = [rows[a:b] for a, b in itertools.pairwise(edges)] or [rows]
    # Execute: the blocks as they stream, decided one at a time
    blocks = list(rebatch(iter(chunks), BLOCK_ROWS))
    masks = [
        block_holdout(b, len(block), fraction, 11, "porto", last=b == len(blocks) - 1)
        for b, block in enumerate(blocks)
    ]
    # Assert: the whole-table split, exactly round(f n) rows held out (one row kept)
    mask = holdout_mask(n, fraction, 11, "porto")
    np.testing.assert_array_equal(np.concatenate(masks), mask)
    np.testing.assert_array_equal(np.concatenate(blocks)[:, 0], rows[:, 0])
    expected = 0 if n < 2 else min(round(fraction * n), n - 1)
    assert int(mask.sum()) == expected
    if n:
        sizes = np.bincount(fold_ids(n, 4, 11, "porto"), minlength=4)
        assert sizes.max() - sizes.min() <= 1


def test_a_small_city_is_split_as_one_permutation_of_its_rows() -> None:
    # A city of at most one block keeps the split it always had (one permutation).
    import hashlib

    for n in (2, 10, 999, BLOCK_ROWS):
        digest = hashlib.sha256(b"lisbon").digest()
        rng = np.random.default_rng([7, int.from_bytes(digest[:8], "little")])
        expected = np.zeros(n, dtype=bool)
        expected[rng.permutation(n)[: round(0.2 * n)]] = True
        np.testing.assert_array_equal(holdout_mask(n, 0.2, 7, "lisbon"), expected)


def _peak_streaming(city: CitySpec, fed: FederationSpec) -> int:
    tracemalloc.start()
    try:
        summarise(streamed_blocks(city, fed, Tally()), city, fed)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: two cities, one four times the other's size, both many chunks long
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(sources, "CHUNK_ROWS", 8_192)
    small = _specs(*_write(tmp_path / "small", 3 * BLOCK_ROWS))
    large = _specs(*_write(tmp_path / "large", 12 * BLOCK_ROWS))
    # Execute: the Python and NumPy memory held at the peak of each pass
    peaks = [_peak_streaming(*small), _peak_streaming(*large)]
    # Assert: a few chunks and blocks either way, not four times the rows' worth
    assert peaks[1] < 1.15 * peaks[0] + (1 << 20)


def test_a_run_keeps_small_rows_and_streams_large_ones(
    tmp_path: Path, big: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    import cityfed.data.cache as cache_module

    city, fed = _specs(*big)
    reference = summarise(data_blocks(load_city_data(city, fed)), city, fed)
    # Execute: a pass under the budget keeps the rows for the run...
    cache = DataCache(tmp_path / "cache", "run")
    blocks, _ = cache.training(city, fed)
    _same(summarise(blocks, city, fed), reference)
    [entry] = list((tmp_path / "cache").iterdir())
    blocks, tally = cache.training(city, fed)  # ... from the cache now
    _same(summarise(blocks, city, fed), reference)
    assert tally.rows_train == reference.moments.n
    kept = cache.load(city, fed)
    fresh = load_city_data(city, fed)
    np.testing.assert_array_equal(kept.X_holdout, fresh.X_holdout)
    np.testing.assert_array_equal(kept.y_train, fresh.y_train)
    # ... and a pass over the budget keeps nothing (the next message streams again).
    monkeypatch.setattr(cache_module, "KEEP_BYTES", 1 << 20)
    other = DataCache(tmp_path / "cache-2", "run")
    blocks, _ = other.training(city, fed)
    _same(summarise(blocks, city, fed), reference)
    assert not (tmp_path / "cache-2").exists() or not list((tmp_path / "cache-2").iterdir())
    assert entry.is_dir()
