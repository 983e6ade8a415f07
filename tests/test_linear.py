from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.core.linear import fit_linear
from cityfed.core.stats import Moments, merge_all


def _reference(model: str, alpha: float, standardize: bool):  # type: ignore[no-untyped-def]
    est = Ridge(alpha=alpha) if model == "ridge" else LinearRegression()
    return make_pipeline(StandardScaler(), est) if standardize else est


@st.composite
def federations(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray]]:
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    k = draw(st.integers(min_value=1, max_value=6))
    d = draw(st.integers(min_value=1, max_value=6))
    collinear = draw(st.booleans()) and d >= 3
    constant = draw(st.booleans()) and d >= 2
    scales = 10.0 ** rng.uniform(-2, 3, size=d)
    offsets = rng.choice([0.0, 50.0, 1013.0, 1e5], size=d)
    beta = rng.normal(size=d)
    Xs, ys = [], []
    for city in range(k):
        n = int(rng.integers(d + 2, 120))
        X = offsets + scales * rng.normal(city, 1.0 + city, size=(n, d))
        if collinear:
            X[:, 2] = 2.0 * X[:, 0] - X[:, 1]
        if constant:
            X[:, -1] = 7.5
        y = (X / scales) @ beta + 3.0 * city + rng.normal(0, 0.5, n)
        Xs.append(X)
        ys.append(y)
    return Xs, ys


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize(("model", "alpha"), [("linear", 0.0), ("ridge", 1.0), ("ridge", 37.5)])
@given(case=federations())
@settings(max_examples=40, deadline=None)
def test_one_round_equals_sklearn_on_pooled_rows(
    case: tuple[list[np.ndarray], list[np.ndarray]], model: str, alpha: float, standardize: bool
) -> None:
    # Prepare
    Xs, ys = case
    d = Xs[0].shape[1]
    X, y = np.vstack(Xs), np.concatenate(ys)
    # Execute: each city's moments, merged as the coordinator does
    total = merge_all(
        (Moments.of(np.column_stack([a, b])) for a, b in zip(Xs, ys, strict=True)), d + 1
    )
    fit = fit_linear(total, penalty=alpha, standardize=standardize)
    # Assert
    reference = _reference(model, alpha, standardize).fit(X, y)
    ours = X @ fit.coef + fit.intercept
    tolerance = 1e-6 * max(float(np.std(y)), 1e-12)
    assert np.max(np.abs(ours - reference.predict(X))) <= tolerance


def test_minimum_norm_coefficients_match_lstsq_when_collinear() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3))
    X = np.column_stack([X, X[:, 0] + X[:, 1]])
    y = X @ np.array([1.0, 2.0, -1.0, 0.5]) + rng.normal(size=200)
    total = Moments.of(np.column_stack([X[:80], y[:80]])).merge(
        Moments.of(np.column_stack([X[80:], y[80:]]))
    )
    fit = fit_linear(total, penalty=0.0, standardize=False)
    reference = LinearRegression().fit(X, y)
    assert fit.rank == 3
    np.testing.assert_allclose(fit.coef, reference.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.intercept, reference.intercept_, rtol=1e-10)


def test_ridge_coefficients_equal_sklearn_pipeline_internals() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 4)) * [1.0, 100.0, 0.01, 5.0] + [0.0, 1013.0, 3.0, 50.0]
    y = X @ np.array([1.0, 0.01, 50.0, -0.2]) + rng.normal(size=300)
    fit = fit_linear(Moments.of(np.column_stack([X, y])), penalty=2.0, standardize=True)
    pipe = _reference("ridge", 2.0, True).fit(X, y)
    np.testing.assert_allclose(fit.coef_scaled, pipe[-1].coef_, rtol=1e-10)
    np.testing.assert_allclose(fit.intercept_scaled, pipe[-1].intercept_, rtol=1e-12)
    np.testing.assert_allclose(fit.scaler.mean, pipe[0].mean_, rtol=1e-12)
    np.testing.assert_allclose(fit.scaler.scale, pipe[0].scale_, rtol=1e-12)
    assert fit.train_r2 == pytest.approx(pipe.score(X, y), rel=1e-10)
