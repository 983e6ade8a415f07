"""The report's answer to "did joining help us?", and the scores behind it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_score, recall_score

from cityfed.core.metrics import (
    ClassificationScores,
    RegressionScores,
    classification_scores,
    probability_bins,
)
from cityfed.federation.evaluation import CityEvaluation, HoldoutScores
from cityfed.federation.outcome import CityOutcome
from cityfed.report.verdict import verdict


def _city(local: float | None, federated: float, personalized: float) -> CityOutcome:
    def reg(rmse: float | None) -> RegressionScores | None:
        return None if rmse is None else RegressionScores(0.9, rmse, rmse)

    scores = HoldoutScores(reg(local), reg(federated), reg(personalized))  # type: ignore[arg-type]
    return CityOutcome(
        city="X", status="ok", rows_read=100, rows_train=80,
        evaluation=CityEvaluation(holdout=scores),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("local", "federated", "personalized", "expected"),
    [
        (2.0, 1.76, 1.8, "Joining improved your RMSE by 12.0 % (2 → 1.76)."),
        (1.6, 1.624, 1.601, "The federated model is 1.5 % worse than your own (RMSE 1.624 vs 1.6); "
         "the personalised model keeps your accuracy (RMSE 1.601)."),
        (1.6, 1.601, 1.5, "The federated model predicts as well as your own (RMSE 1.601 vs 1.6, "
         "within 0.5 %); the personalised model improves on your own by 6.3 % (1.5)."),
        (2.0, 1.0, 0.5, "Joining improved your RMSE by 50.0 % (2 → 1); the personalised model "
         "does better still (0.5)."),
    ],
)  # fmt: skip
def test_verdicts_say_what_the_numbers_say(
    local: float, federated: float, personalized: float, expected: str
) -> None:
    assert verdict(_city(local, federated, personalized), classification=False) == expected


def test_no_verdict_says_why() -> None:
    text = verdict(_city(None, 1.0, 1.0), classification=True)
    assert text == (
        "No verdict: the city's own training rows have one class, so it has no model of its own."
    )
    empty = CityOutcome(city="Y", status="ok", evaluation=CityEvaluation())
    assert verdict(empty, classification=False).startswith("No verdict: no holdout rows")
    refused = CityOutcome(city="Z", status="refused", reason="only 12 usable rows")
    assert verdict(refused, False) == (
        "No verdict: the city did not take part (refused: only 12 usable rows)."
    )


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(5, 300), rate=st.floats(0.0, 1.0))
def test_precision_recall_and_base_rate_equal_sklearn(seed: int, n: int, rate: float) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(np.float64)
    p = rng.random(n)
    scores = classification_scores(y, p)
    assert isinstance(scores, ClassificationScores)
    assert scores.base_rate == pytest.approx(y.mean())
    said = p > 0.5
    if said.any():
        assert scores.precision == pytest.approx(precision_score(y, said))
    else:
        assert scores.precision is None
    if y.any():
        assert scores.recall == pytest.approx(recall_score(y, said))
    else:
        assert scores.recall is None


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(0, 400), min_count=st.integers(1, 30))
def test_probability_bins_keep_every_row_and_no_small_bin(
    seed: int, n: int, min_count: int
) -> None:
    rng = np.random.default_rng(seed)
    p = rng.beta(0.3, 6.0, n)  # a rare event: most probabilities near 0
    y = (rng.random(n) < p).astype(np.float64)
    bins = probability_bins(y, p, min_count=min_count)
    if n < min_count:
        assert bins == ()
        return
    assert sum(b.count for b in bins) == n
    assert all(b.count >= min_count for b in bins)
    predicted = [b.predicted for b in bins]
    assert predicted == sorted(predicted)
    assert all(0.0 <= b.predicted <= 1.0 and 0.0 <= b.observed <= 1.0 for b in bins)
