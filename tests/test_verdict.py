"""The report's answer to "did joining help us?", and the scores behind it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from cityfed_server.training import train
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_score, recall_score

from cityfed.config.spec import load_federation
from cityfed.core.metrics import (
    ClassificationScores,
    RegressionScores,
    classification_scores,
    probability_bins,
)
from cityfed.federation.evaluation import CityEvaluation, HoldoutScores
from cityfed.federation.outcome import CityOutcome
from cityfed.report.build import build_report, report_from_json, report_json_text
from cityfed.report.html import render_html
from cityfed.report.verdict import verdict
from tests.synthetic import local_exchange, write_federation


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


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_learning_curves_are_computed_by_each_city_and_drawn(tmp_path: Path, task: str) -> None:
    model = "logistic" if task == "classification" else "ridge"
    files = write_federation(
        tmp_path, task=task, model=model, holdout_fraction=0.3, sizes=(400, 150, 500)
    )
    fed = load_federation(files.federation)
    result = train(fed, local_exchange(files.cities), run_id="curve")
    for city in result.cities.values():
        assert city.evaluation is not None
        sizes = [point.rows for point in city.evaluation.learning_curve]
        assert sizes[0] == 50 and sizes[-1] == city.rows_train
        assert sizes == sorted(set(sizes))
        assert all(p.local_only is not None for p in city.evaluation.learning_curve)
    # The same curve after report.json and back, and on the page.
    report = build_report(fed, result)
    again = report_from_json(json.loads(report_json_text(report)), "report.json")
    assert again.cities["city1"].evaluation == report.cities["city1"].evaluation
    page = render_html(report)
    curves = re.findall(r'<svg[^>]*class="curve".*?</svg>', page, flags=re.DOTALL)
    assert len(curves) == 3 and "<h2>Learning curves</h2>" in page
    for svg in curves:
        ElementTree.fromstring(svg)  # well-formed
        assert "own training rows" in svg and "stroke-dasharray" in svg  # federated line


def test_a_learning_curve_is_reproducible(tmp_path: Path) -> None:
    files = write_federation(tmp_path, holdout_fraction=0.3, sizes=(300, 120, 500))
    fed = load_federation(files.federation)
    first = train(fed, local_exchange(files.cities), run_id="a").cities["city0"]
    second = train(fed, local_exchange(files.cities), run_id="b").cities["city0"]
    assert first.evaluation is not None and second.evaluation is not None
    assert first.evaluation.learning_curve == second.evaluation.learning_curve


def test_a_city_with_one_class_gets_the_federated_model_as_its_personalised_one(
    tmp_path: Path,
) -> None:
    import warnings

    files = write_federation(
        tmp_path, task="classification", model="logistic", holdout_fraction=0.3,
        sizes=(300, 120, 400),
    )  # fmt: skip
    csv = tmp_path / "city_1.csv"  # city1's labels all become 0
    header, *rows = csv.read_text(encoding="utf-8").splitlines()
    csv.write_text("\n".join([header, *(r.rsplit(",", 1)[0] + ",0" for r in rows)]) + "\n")
    fed = load_federation(files.federation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ill-conditioned Newton steps on the way
        result = train(fed, local_exchange(files.cities), run_id="one-class")
    city = result.cities["city1"]
    assert city.evaluation is not None and city.evaluation.holdout is not None
    holdout = city.evaluation.holdout
    assert holdout.local_only is None and holdout.personalized == holdout.federated
    assert city.evaluation.tau is None and city.evaluation.learning_curve == ()
    assert verdict(city, classification=True).startswith("No verdict: the city's own training")
