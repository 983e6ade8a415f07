"""The coordinator's run over cities answered in process (no Flower runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cityfed_server.training import train
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import load_federation
from cityfed.core.metrics import RegressionScores
from cityfed.errors import FederationError
from cityfed.federation.protocol import CityReply

from .synthetic import local_exchange, write_federation


@pytest.mark.parametrize(
    ("model", "standardize"),
    [("linear", True), ("linear", False), ("ridge", True), ("ridge", False)],
)
def test_linear_models_need_one_round_and_equal_pooled_sklearn(
    tmp_path: Path, model: str, standardize: bool
) -> None:
    # Prepare
    fed_files = write_federation(
        tmp_path, model=model, standardize=standardize, alpha=3.0, sizes=(200, 60, 350, 90)
    )
    fed = load_federation(fed_files.federation)
    # Execute
    result = train(fed, local_exchange(fed_files.cities), run_id="t")
    # Assert
    X, y = fed_files.X_pooled, fed_files.y_pooled
    est = Ridge(alpha=3.0) if model == "ridge" else LinearRegression()
    reference = (make_pipeline(StandardScaler(), est) if standardize else est).fit(X, y)
    assert result.model.rounds == 1
    assert np.max(np.abs(result.model.decision(X) - reference.predict(X))) <= 1e-6 * np.std(y)
    assert result.model.training_rows == len(y)
    assert set(result.cities) == {"city0", "city1", "city2", "city3"}


def test_logistic_converges_to_pooled_sklearn_in_few_rounds(tmp_path: Path) -> None:
    fed_files = write_federation(
        tmp_path, task="classification", model="logistic", C=0.7, sizes=(300, 150, 400)
    )
    fed = load_federation(fed_files.federation)
    result = train(fed, local_exchange(fed_files.cities), run_id="t")
    X, y = fed_files.X_pooled, fed_files.y_pooled
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.7, tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    proba = 1.0 / (1.0 + np.exp(-result.model.decision(X)))
    assert result.model.converged
    assert result.model.rounds <= 10
    assert np.max(np.abs(proba - reference.predict_proba(X)[:, 1])) <= 1e-5


def test_a_small_city_refuses_and_the_run_goes_on(tmp_path: Path) -> None:
    fed_files = write_federation(tmp_path, sizes=(200, 10, 300), min_rows_per_city=50)
    result = train(
        load_federation(fed_files.federation), local_exchange(fed_files.cities), run_id="t"
    )
    assert result.cities["city1"].status == "refused"
    assert "only 10 usable training rows" in result.cities["city1"].reason
    assert result.model.cities == ("city0", "city2")
    # The model equals the pooled fit of the two cities that took part.
    X = np.vstack([fed_files.X[0], fed_files.X[2]])
    y = np.concatenate([fed_files.y[0], fed_files.y[2]])
    reference = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(X, y)
    assert np.max(np.abs(result.model.decision(X) - reference.predict(X))) <= 1e-6 * np.std(y)


def test_a_broken_city_fails_alone(tmp_path: Path) -> None:
    fed_files = write_federation(tmp_path, sizes=(200, 100, 300))
    csv = tmp_path / "city_1.csv"
    lines = csv.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[0], "oops", 1)
    csv.write_text("\n".join(lines) + "\n")
    result = train(
        load_federation(fed_files.federation), local_exchange(fed_files.cities), run_id="t"
    )
    assert result.cities["city1"].status == "failed"
    assert (
        "city_1.csv" in result.cities["city1"].reason and "row 5" in result.cities["city1"].reason
    )
    assert result.model.cities == ("city0", "city2")


def test_too_few_cities_stops_with_the_reasons(tmp_path: Path) -> None:
    fed_files = write_federation(tmp_path, sizes=(200, 10, 12), min_rows_per_city=50)
    with pytest.raises(FederationError) as info:
        train(load_federation(fed_files.federation), local_exchange(fed_files.cities), run_id="t")
    message = str(info.value)
    assert "min_cities = 2" in message
    assert "city1: only 10" in message and "city2: only 12" in message


def test_holdout_scores_for_every_city(tmp_path: Path) -> None:
    fed_files = write_federation(tmp_path, sizes=(200, 150, 300), holdout_fraction=0.25)
    result = train(
        load_federation(fed_files.federation), local_exchange(fed_files.cities), run_id="t"
    )
    for outcome in result.cities.values():
        assert outcome.evaluation is not None
        holdout = outcome.evaluation.holdout
        assert holdout is not None
        for scores in (holdout.local_only, holdout.federated, holdout.personalized):
            assert isinstance(scores, RegressionScores)
            assert scores.r2 is not None and scores.r2 > 0.5
        assert outcome.evaluation.calibration
        assert outcome.rows_used - outcome.rows_train == round(0.25 * outcome.rows_used)


def test_fedavg_baseline_runs_its_rounds(tmp_path: Path) -> None:
    fed_files = write_federation(
        tmp_path, sizes=(200, 150, 300), extra='algorithm = "fedavg"\nrounds = 5'
    )
    result = train(
        load_federation(fed_files.federation), local_exchange(fed_files.cities), run_id="t"
    )
    assert result.model.rounds == 6  # statistics for the scaler, then five FedAvg rounds
    assert result.model.algorithm == "fedavg"


def test_a_city_that_returns_terms_at_too_few_points_fails_alone(tmp_path: Path) -> None:
    """A reply with fewer Newton terms than points asked is malformed: that city leaves,
    the run goes on with the others and publishes their pooled fit."""
    from dataclasses import replace as with_fields

    from .synthetic import AlteredExchange

    fed_files = write_federation(
        tmp_path, task="classification", model="logistic", sizes=(300, 150, 400)
    )
    fed = load_federation(fed_files.federation)

    def truncate(replies: list[tuple[int, CityReply]]) -> list[tuple[int, CityReply]]:
        return [
            (node, with_fields(r, terms=r.terms[:1]) if r.city == "city1" and r.terms else r)
            for node, r in replies
        ]

    result = train(fed, AlteredExchange(local_exchange(fed_files.cities), truncate), run_id="t")
    assert result.cities["city1"].status == "failed"
    assert result.cities["city1"].reason == "sent malformed statistics"
    assert result.model.cities == ("city0", "city2")
    X = np.vstack([fed_files.X[0], fed_files.X[2]])
    y = np.concatenate([fed_files.y[0], fed_files.y[2]])
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    proba = 1.0 / (1.0 + np.exp(-result.model.decision(X)))
    assert np.max(np.abs(proba - reference.predict_proba(X)[:, 1])) <= 1e-5
