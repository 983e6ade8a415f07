from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.core.logistic import (
    fit_logistic_rows,
    logistic_terms,
    starting_intercept,
    terms_at_intercept,
)
from cityfed.core.newton import ROUND_LENGTHS, NewtonSolver, NewtonTerms
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments, merge_all


def _cities(seed: int, k: int, d: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=d)
    Xs, ys = [], []
    for city in range(k):
        n = int(rng.integers(30, 300))
        X = rng.normal(0.5 * city, 1.0 + 0.3 * city, size=(n, d)) * 10.0 ** rng.uniform(-1, 2, d)
        t = (X / X.std(axis=0)) @ beta + 0.5 * city + rng.logistic(size=n)
        y = (t > 0).astype(float)
        Xs.append(X)
        ys.append(y)
    return Xs, ys


def _federated_newton(
    Xs: list[np.ndarray],
    ys: list[np.ndarray],
    C: float,
    standardize: bool,
    lengths: tuple[float, ...] = (1.0,),
) -> tuple[NewtonSolver, Scaler]:
    d = Xs[0].shape[1]
    total = merge_all(
        (Moments.of(np.column_stack([a, b])) for a, b in zip(Xs, ys, strict=True)), d + 1
    )
    scaler = Scaler.from_moments(total, d, standardize)
    solver = NewtonSolver(
        C, d + 1, tolerance=1e-6, max_evaluations=30, lengths=lengths, halley=len(lengths) > 1
    )
    b0 = starting_intercept(total)
    start = np.zeros(d + 1)
    start[0] = b0
    solver.start(terms_at_intercept(total, scaler, b0), start)
    while not solver.done:
        sums = []
        for w in solver.trials():  # each point of the round, summed over the cities
            summed: NewtonTerms | None = None
            for X, y in zip(Xs, ys, strict=True):
                t = logistic_terms(scaler.design(X), y, w)
                summed = t if summed is None else summed + t
            assert summed is not None
            sums.append(summed)
        solver.observe_all(sums)
    return solver, scaler


@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    k=st.integers(min_value=1, max_value=5),
    d=st.integers(min_value=1, max_value=5),
    C=st.sampled_from([0.01, 1.0, 100.0]),
)
@settings(max_examples=30, deadline=None)
def test_federated_newton_equals_sklearn_pooled(seed: int, k: int, d: int, C: float) -> None:
    """One point per round, and the line search of ROUND_LENGTHS with Halley steps."""
    # Prepare
    Xs, ys = _cities(seed, k, d)
    X, y = np.vstack(Xs), np.concatenate(ys)
    if np.unique(y).size < 2:
        return
    # Execute
    solver, scaler = _federated_newton(Xs, ys, C, standardize=True)
    several, _ = _federated_newton(Xs, ys, C, standardize=True, lengths=ROUND_LENGTHS)
    # Assert: the same optimum, in few rounds.
    assert solver.converged and several.converged
    assert solver.evaluations <= 10
    assert several.evaluations <= max(solver.evaluations, 5)
    np.testing.assert_allclose(several.w, solver.w, rtol=1e-8, atol=1e-10)
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    ours = 1.0 / (1.0 + np.exp(-(scaler.design(X) @ solver.w)))
    assert np.max(np.abs(ours - reference.predict_proba(X)[:, 1])) <= 1e-5


def test_unstandardised_matches_plain_logistic_regression() -> None:
    Xs, ys = _cities(11, 3, 3)
    X, y = np.vstack(Xs), np.concatenate(ys)
    solver, scaler = _federated_newton(Xs, ys, 0.5, standardize=False)
    reference = LogisticRegression(C=0.5, tol=1e-12, max_iter=100_000).fit(X, y)
    ours = 1.0 / (1.0 + np.exp(-(scaler.design(X) @ solver.w)))
    assert np.max(np.abs(ours - reference.predict_proba(X)[:, 1])) <= 1e-5


@pytest.mark.parametrize("intercept", [0.0, -2.5, 1.3])
def test_terms_from_moments_equal_direct_terms(intercept: float) -> None:
    Xs, ys = _cities(2, 1, 4)
    X, y = Xs[0], ys[0]
    for standardize in (True, False):
        m = Moments.of(np.column_stack([X, y]))
        scaler = Scaler.from_moments(m, 4, standardize)
        w = np.zeros(5)
        w[0] = intercept
        direct = logistic_terms(scaler.design(X), y, w)
        from_moments = terms_at_intercept(m, scaler, intercept)
        assert from_moments.loss == pytest.approx(direct.loss, rel=1e-12)
        np.testing.assert_allclose(from_moments.grad, direct.grad, rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(from_moments.hess, direct.hess, rtol=1e-9, atol=1e-8)


def test_separable_classes_stay_bounded() -> None:
    X = np.linspace(-3, 3, 100)[:, None]
    y = (X[:, 0] > 0).astype(float)
    solver = fit_logistic_rows(np.column_stack([np.ones(100), X]), y, 1.0)
    reference = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X, y)
    assert solver.converged
    np.testing.assert_allclose(solver.w[1:], reference.coef_[0], rtol=1e-6)
