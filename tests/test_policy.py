"""The city decides: its agreement, its row set and its limits, tried as an attacker would.

Each test plays a coordinator that sends CityFed's own instructions to the
unmodified city handlers, with the choices an attacker would make.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from cityfed_client.handlers import responder
from cityfed_client.node_config import default_state
from cityfed_server.training import train

from cityfed.config.spec import FederationSpec, VariableSpec, load_city, load_federation
from cityfed.core.scaling import Scaler
from cityfed.errors import FederationError
from cityfed.federation.protocol import CityReply, Instruction
from cityfed.ops.audit import AuditLog

from .synthetic import local_exchange, write_federation

AGREED = 'agreed = ["agreed-federation.toml"]\nmin_rows = 10\n'


def _model(fed: FederationSpec, weights: np.ndarray | None = None) -> dict[str, object]:
    d = len(fed.features)
    return {
        "scaler": Scaler(np.zeros(d), np.ones(d)),
        "weights": np.zeros(d + 1) if weights is None else weights,
    }


def _refused(reply: CityReply, key: str) -> None:
    assert reply.status == "refused", reply
    assert key in reply.reason, reply.reason
    assert reply.moments is None and not reply.terms and reply.weights is None


def test_differencing_by_changing_the_row_set_recovers_nothing(tmp_path: Path) -> None:
    # The attack: moments at holdout fractions (k-1)/N and k/N differ by one row.
    files = write_federation(tmp_path, holdout_fraction=0.2)
    agreed = load_federation(files.federation)
    n = len(files.y[0])
    for change in (
        {"holdout_fraction": 0.2 + 1.0 / n},
        {"seed": agreed.seed + 1},
        {"missing": "error"},
        {"features": agreed.features[:-1]},
        {"target": VariableSpec("load", "kW")},
        {"min_rows_per_city": 1},
        {"max_rounds": 200},
    ):
        attack = dataclasses.replace(agreed, **change)  # type: ignore[arg-type]
        reply = responder(files.cities[0])(Instruction("moments", attack, 1))
        _refused(reply, "[policy] agreed")
    # The agreed spec, asked again and again, always summarises the same rows.
    first = responder(files.cities[0])(Instruction("moments", agreed, 1))
    again = responder(files.cities[0])(Instruction("moments", agreed, 1))
    assert first.moments is not None and again.moments is not None
    assert first.moments.n == again.moments.n == round(0.8 * n)
    np.testing.assert_array_equal(first.moments.mean, again.moments.mean)


def test_the_city_owns_its_split(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path, holdout_fraction=0.2, policy=AGREED + "holdout_fraction = 0.5\n"
    )
    fed = load_federation(files.federation)
    reply = responder(files.cities[0])(Instruction("moments", fed, 1))
    assert reply.status == "ok" and reply.n == len(files.y[0]) // 2


def test_a_federation_with_a_changed_spec_fails_with_every_city_refusing(tmp_path: Path) -> None:
    files = write_federation(tmp_path)
    attack = dataclasses.replace(load_federation(files.federation), min_rows_per_city=1)
    with pytest.raises(FederationError, match=r"\[policy\] agreed"):
        train(attack, local_exchange(files.cities), run_id="attack")


def test_the_city_floor_beats_the_federation_floor(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path,
        sizes=(40, 300, 300),
        min_rows_per_city=1,
        policy='agreed = ["agreed-federation.toml"]\n',
    )
    fed = load_federation(files.federation)
    reply = responder(files.cities[0])(Instruction("moments", fed, 1))
    _refused(reply, "[policy] min_rows = 50")


def test_too_many_parameters_for_the_rows(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path, sizes=(12, 300), policy=AGREED.replace("10", "5"), min_rows_per_city=1
    )
    fed = load_federation(files.federation)
    reply = responder(files.cities[0])(Instruction("moments", fed, 1))
    _refused(reply, "[policy] max_params_fraction = 0.33")


def test_training_rounds_are_capped_by_the_stricter_limit(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path, task="classification", model="logistic", policy=AGREED + "max_rounds = 4\n"
    )
    fed = load_federation(files.federation)
    respond = responder(files.cities[0])  # one run
    replies = [respond(Instruction("newton", fed, r, **_model(fed))) for r in range(1, 6)]  # type: ignore[arg-type]
    assert [r.status for r in replies] == ["ok"] * 4 + ["refused"]
    _refused(replies[-1], "[policy] max_rounds = 4")


def test_a_third_evaluation_is_refused(tmp_path: Path) -> None:
    files = write_federation(tmp_path, holdout_fraction=0.3)
    fed = load_federation(files.federation)
    respond = responder(files.cities[0])
    d = len(fed.features)
    models = [_model(fed, np.full(d + 1, 0.1 * k)) for k in range(3)]  # three questions
    replies = [respond(Instruction("evaluate", fed, 2, **m)) for m in models]  # type: ignore[arg-type]
    assert [r.status for r in replies[:2]] == ["ok", "ok"]
    _refused(replies[2], "[policy] max_evaluations = 2")


def test_the_same_question_asked_again_gets_the_same_answer_and_counts_once(
    tmp_path: Path,
) -> None:
    # Prepare: a coordinator whose first reply was lost asks again, more than the limit
    files = write_federation(
        tmp_path, holdout_fraction=0.3, policy=AGREED + "max_evaluations = 1\n"
    )
    fed = load_federation(files.federation)
    respond = responder(files.cities[0])
    question = Instruction("evaluate", fed, 2, **_model(fed))  # type: ignore[arg-type]
    # Execute
    replies = [respond(question) for _ in range(3)]
    # Assert: answered each time with the very same scores; a new question is refused
    assert [r.status for r in replies] == ["ok", "ok", "ok"]
    assert replies[0].outcome.evaluation == replies[2].outcome.evaluation
    d = len(fed.features)
    other = Instruction("evaluate", fed, 2, **_model(fed, np.full(d + 1, 0.5)))  # type: ignore[arg-type]
    _refused(respond(other), "[policy] max_evaluations = 1")


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        (np.zeros(3), "are not 5 finite numbers"),
        (np.array([0.0, 1.0, np.nan, 0.0, 0.0]), "are not 5 finite numbers"),
        (np.array([0.0, 1e6, 0.0, 0.0, 0.0]), "[policy] max_abs_weight = 10000"),
    ],
)
def test_weights_are_checked(tmp_path: Path, weights: np.ndarray, reason: str) -> None:
    files = write_federation(tmp_path, task="classification", model="logistic")
    fed = load_federation(files.federation)
    reply = responder(files.cities[0])(Instruction("newton", fed, 2, **_model(fed, weights)))  # type: ignore[arg-type]
    assert reply.status == "refused" and reason in reply.reason


def test_points_per_round_are_capped_and_every_point_is_checked(tmp_path: Path) -> None:
    """The coordinator's line search sends several points in one round; a coordinator
    that sends many (to read the loss surface around the city's rows) is refused."""
    files = write_federation(tmp_path, task="classification", model="logistic")
    fed = load_federation(files.federation)
    respond = responder(files.cities[0])
    d = len(fed.features)
    line = np.linspace(-0.5, 0.5, 4)[:, None] * np.ones(d + 1)
    ok = respond(Instruction("newton", fed, 2, **_model(fed, line)))  # type: ignore[arg-type]
    assert ok.status == "ok" and len(ok.terms) == 4
    many = np.zeros((9, d + 1))
    _refused(
        respond(Instruction("newton", fed, 3, **_model(fed, many))),  # type: ignore[arg-type]
        "[policy] max_points_per_round = 8: 9 points asked in one round",
    )
    wild = line.copy()
    wild[2, 1] = 1e6
    _refused(
        respond(Instruction("newton", fed, 4, **_model(fed, wild))),  # type: ignore[arg-type]
        "[policy] max_abs_weight = 10000",
    )


def test_runs_per_day_are_counted_from_the_city_audit_trail(tmp_path: Path) -> None:
    files = write_federation(tmp_path, policy=AGREED + "max_runs_per_day = 2\n")
    fed = load_federation(files.federation)
    statuses = [responder(files.cities[0])(Instruction("moments", fed, 1)).status for _ in range(3)]
    assert statuses == ["ok", "ok", "refused"]
    reply = responder(files.cities[0])(Instruction("moments", fed, 1))
    _refused(reply, "[policy] max_runs_per_day = 2")


def test_a_small_holdout_gives_no_scores(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path, sizes=(60, 300), holdout_fraction=0.1, policy=AGREED + "min_bin_rows = 20\n"
    )
    fed = load_federation(files.federation)
    small = responder(files.cities[0])(Instruction("evaluate", fed, 2, **_model(fed)))  # type: ignore[arg-type]
    large = responder(files.cities[1])(Instruction("evaluate", fed, 2, **_model(fed)))  # type: ignore[arg-type]
    assert small.outcome.evaluation is not None and small.outcome.evaluation.holdout is None
    assert large.outcome.evaluation is not None and large.outcome.evaluation.holdout is not None
    assert all(b.count >= 20 for b in large.outcome.evaluation.calibration)


def test_every_answer_and_refusal_is_in_the_audit_trail_without_values(tmp_path: Path) -> None:
    files = write_federation(tmp_path)
    fed = load_federation(files.federation)
    respond = responder(files.cities[0])
    respond(Instruction("moments", fed, 1))
    respond(Instruction("moments", dataclasses.replace(fed, seed=99), 1))
    log = AuditLog(default_state(files.cities[0]) / "audit.jsonl")
    answer, refusal = list(log.entries())
    assert log.verify() == []
    assert answer["kind"] == "answer" and answer["sent"]["moments"]["scatter"] == [5, 5]
    assert refusal["kind"] == "refused" and "[policy] agreed" in refusal["reason"]
    assert answer["app"].startswith("cityfed_client.app:app")
    text = log.path.read_text()
    city = load_city(files.cities[0])
    assert str(files.X[0][0, 0]) not in text and city.name in text


def test_a_city_that_cannot_write_its_audit_trail_sends_nothing(tmp_path: Path) -> None:
    files = write_federation(tmp_path)
    fed = load_federation(files.federation)
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("not a folder")
    reply = responder(files.cities[0], blocker)(Instruction("moments", fed, 1))
    assert reply.status == "failed" and "audit trail" in reply.reason and reply.moments is None
