from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cityfed.core.stats import Moments, merge_all


@st.composite
def split_tables(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    n = draw(st.integers(min_value=1, max_value=200))
    p = draw(st.integers(min_value=1, max_value=6))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    offset = draw(st.sampled_from([0.0, 1e3, 1e6]))
    table = rng.normal(size=(n, p)) * rng.uniform(0.1, 10, size=p) + offset
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=n), max_size=6)))
    return table, cuts


@given(split_tables())
@settings(max_examples=80, deadline=None)
def test_merged_parts_equal_the_pooled_table(case: tuple[np.ndarray, list[int]]) -> None:
    # Prepare
    table, cuts = case
    parts = np.split(table, cuts)
    # Execute
    merged = merge_all((Moments.of(part) for part in parts), table.shape[1])
    # Assert: against numpy's own centred computation on the pooled rows
    centred = table - table.mean(axis=0)
    assert merged.n == table.shape[0]
    np.testing.assert_allclose(merged.mean, table.mean(axis=0), rtol=1e-12, atol=1e-9)
    scale = max(1.0, float(np.abs(centred.T @ centred).max()))
    np.testing.assert_allclose(merged.scatter, centred.T @ centred, rtol=1e-9, atol=1e-9 * scale)


def test_merge_is_order_independent() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (Moments.of(rng.normal(size=(n, 3))) for n in (5, 50, 500))
    left = a.merge(b).merge(c)
    right = c.merge(a.merge(b))
    np.testing.assert_allclose(left.mean, right.mean, rtol=1e-14)
    np.testing.assert_allclose(left.scatter, right.scatter, rtol=1e-12)


def test_large_offset_keeps_precision() -> None:
    # Raw sums of squares would lose every digit here; centred scatter does not.
    rng = np.random.default_rng(1)
    table = 1e8 + rng.normal(size=(1000, 2))
    merged = Moments.of(table[:300]).merge(Moments.of(table[300:]))
    np.testing.assert_allclose(merged.variance, table.var(axis=0), rtol=1e-9)


def test_empty_is_neutral() -> None:
    m = Moments.of(np.arange(12.0).reshape(4, 3))
    assert Moments.empty(3).merge(m) is m
    assert m.merge(Moments.empty(3)) is m
