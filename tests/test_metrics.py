"""Holdout scores against scikit-learn's metrics, and the calibration bins' floor."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, r2_score, roc_auc_score

from cityfed.core.metrics import calibration_bins, classification_scores, regression_scores


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=300),
    decimals=st.integers(min_value=1, max_value=6),  # few decimals: many tied scores
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_classification_scores_equal_sklearn(n: int, decimals: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)
    y[0], y[1] = 0.0, 1.0  # both classes
    proba = np.round(rng.random(n), decimals)
    scores = classification_scores(y, proba)
    assert scores.roc_auc is not None and scores.log_loss is not None
    np.testing.assert_allclose(scores.roc_auc, roc_auc_score(y, proba), rtol=1e-12)
    clipped = np.clip(proba, 1e-15, 1 - 1e-15)
    # atol: for perfect predictions both losses are ~1e-15, rounding apart in the 4th digit
    np.testing.assert_allclose(scores.log_loss, log_loss(y, clipped), rtol=1e-10, atol=1e-13)
    assert scores.accuracy == accuracy_score(y, proba > 0.5)


def test_single_class_has_no_auc_and_no_rows_no_scores() -> None:
    scores = classification_scores(np.zeros(5), np.full(5, 0.2))
    assert scores.roc_auc is None and scores.accuracy == 1.0
    assert classification_scores(np.zeros(0), np.zeros(0)).log_loss is None
    assert regression_scores(np.zeros(0), np.zeros(0)).rmse is None
    assert regression_scores(np.ones(4), np.ones(4)).r2 is None  # constant y


def test_regression_scores_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(10.0, 3.0, 200)
    predicted = y + rng.normal(0.0, 1.0, 200)
    scores = regression_scores(y, predicted)
    assert scores.r2 is not None and scores.rmse is not None
    np.testing.assert_allclose(scores.r2, r2_score(y, predicted), rtol=1e-12)
    np.testing.assert_allclose(scores.mae, mean_absolute_error(y, predicted), rtol=1e-12)
    np.testing.assert_allclose(scores.rmse, np.sqrt(np.mean((y - predicted) ** 2)), rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=400),
    bins=st.integers(min_value=1, max_value=20),
    min_count=st.integers(min_value=1, max_value=30),
)
def test_no_calibration_bin_has_fewer_rows_than_the_floor(
    n: int, bins: int, min_count: int
) -> None:
    rng = np.random.default_rng(n)
    observed, predicted = rng.random(n), rng.random(n)
    result = calibration_bins(observed, predicted, bins=bins, min_count=min_count)
    assert all(b.count >= min_count for b in result)
    assert len(result) <= bins
    if n < min_count:
        assert result == ()
    else:
        assert sum(b.count for b in result) == n  # every row in some bin, none alone
        means = [b.predicted for b in result]
        assert means == sorted(means)


def test_calibration_bins_are_means_of_sorted_groups() -> None:
    predicted = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0, 0.95, 0.05])
    observed = (predicted > 0.45).astype(np.float64)
    first, second = calibration_bins(observed, predicted, bins=10, min_count=5)
    order = np.argsort(predicted)
    assert (first.count, second.count) == (6, 6)
    np.testing.assert_allclose(first.predicted, predicted[order[:6]].mean())
    np.testing.assert_allclose(second.observed, observed[order[6:]].mean())
    assert calibration_bins(observed[:4], predicted[:4], min_count=5) == ()
