"""A city that leaves mid-run: the model is the pooled fit of the cities that stayed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cityfed_client.handlers import responder
from cityfed_server.training import train
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import load_federation
from cityfed.federation.protocol import CityReply, Instruction
from cityfed.flower.exchange import LocalExchange
from cityfed.report.build import build_report, report_from_json, report_to_json

from .synthetic import write_federation


def _dies_at(config: Path, phase: str, round_: int):  # type: ignore[no-untyped-def]
    """A city that answers until ``phase`` round ``round_``, then never again."""
    respond, dead = responder(config), [False]

    def answer(ins: Instruction) -> CityReply:
        if dead[0] or (ins.phase == phase and ins.round >= round_):
            dead[0] = True
            return CityReply.failed("city2", "no reply within 600 s")
        return respond(ins)

    return answer


@pytest.mark.parametrize("round_", [2, 3])
def test_a_city_lost_in_newton_round_k_is_out_of_the_model_and_the_row_count(
    tmp_path: Path, round_: int
) -> None:
    # Prepare: three cities; city2 stops answering in Newton round `round_`
    files = write_federation(
        tmp_path, task="classification", model="logistic", C=0.5, sizes=(300, 150, 400)
    )
    fed = load_federation(files.federation)
    exchange = LocalExchange(
        [responder(files.cities[0]), responder(files.cities[1]),
         _dies_at(files.cities[2], "newton", round_)]
    )  # fmt: skip
    # Execute
    result = train(fed, exchange, run_id="departure")
    # Assert: the pooled fit of city0 and city1 only, standardisation included
    X = np.vstack(files.X[:2])
    y = np.concatenate(files.y[:2])
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    model = result.model
    assert model.cities == ("city0", "city1")
    assert model.training_rows == len(y) == 450
    np.testing.assert_allclose(model.scaler.mean, X.mean(axis=0), rtol=1e-12)
    probabilities = 1.0 / (1.0 + np.exp(-(X @ model.coef + model.intercept)))
    assert np.max(np.abs(probabilities - reference.predict_proba(X)[:, 1])) <= 1e-6
    # Each city's fate per exchange: city2 answered until the round it was lost in.
    fates = {c: [(f.round, f.phase, f.status) for f in o.rounds] for c, o in result.cities.items()}
    assert fates["city2"][0] == (1, "moments", "ok")
    assert fates["city2"][-1] == (round_, "newton", "failed")
    assert all(status == "ok" for _, _, status in fates["city0"])
    assert fates["city0"][-1][1] == "newton" and len(fates["city0"]) > len(fates["city2"])
    # The report says the same, and reads back.
    report = build_report(fed, result)
    data = report_to_json(report)
    assert data["model"]["training_rows"] == 450
    assert data["cities"]["city2"]["rounds"][-1] == {
        "round": round_, "phase": "newton", "status": "failed"
    }  # fmt: skip
    assert report_from_json(data, "report.json") == report
