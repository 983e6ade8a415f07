"""The report contract on the real producer: a run's result, built once, rendered twice.

``train`` runs the coordinator over cities answered in process, ``build_report``
makes the typed report, and the HTML page, the terminal summary and
``report.json`` all come from that one value.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cityfed_server.training import train
from rich.console import Console

from cityfed.config.spec import FederationSpec, load_city, load_federation
from cityfed.data.city_data import load_city_data
from cityfed.errors import CityFedError
from cityfed.federation.evaluation import CityEvaluation
from cityfed.federation.outcome import RunResult
from cityfed.report.build import (
    build_report,
    read_report,
    report_from_json,
    report_json_text,
    report_to_json,
    write_report,
)
from cityfed.report.html import _fmt, render_html
from cityfed.report.pooled import pooled_check
from cityfed.report.terminal import print_summary
from cityfed.report.types import Report, ScoreName, holdout_models, score_of
from cityfed.report.verdict import change as verdict_change

from .synthetic import SyntheticFederation, local_exchange, write_federation

#: The published keys of report.json (adding one is fine; removing one breaks readers).
TOP_KEYS = {
    "cityfed_version",
    "created_at",
    "run_id",
    "federation",
    "model",
    "cities",
    "pooled_check",
    "timing",
}
FEDERATION_KEYS = {
    "name",
    "task",
    "model",
    "target",
    "features",
    "alpha",
    "C",
    "standardize",
    "holdout_fraction",
    "seed",
    "min_cities",
    "min_rows_per_city",
    "missing",
    "algorithm",
    "rounds",
    "local_epochs",
    "max_rounds",
    "tolerance",
    "reply_timeout",
    "resend_after",
}
MODEL_KEYS = {
    "kind",
    "task",
    "algorithm",
    "features",
    "units",
    "target",
    "coef",
    "intercept",
    "rounds",
    "converged",
    "training_rows",
    "cities",
    "metrics",
    "inference",
    "inference_note",
    "alpha",
    "alpha_path",
    "secure_aggregation",
    "epsilon",
    "delta",
}
CITY_KEYS = {
    "status",
    "reason",
    "rows_read",
    "rows_used",
    "rows_dropped",
    "drop_reasons",
    "rows_train",
    "rows_holdout",
    "rounds",
    "holdout",
    "personalization",
    "calibration",
    "learning_curve",
}
POOLED_KEYS = {
    "max_abs_prediction_diff",
    "relative_to_std_y",
    "rows",
    "reference",
    "compared",
    "within_tolerance",
    "private",
    "cost_metric",
    "cost",
}


@dataclass
class Run:
    files: SyntheticFederation
    fed: FederationSpec
    result: RunResult
    report: Report


def _run(root: Path, run_id: str, **federation: Any) -> Run:
    files = write_federation(root, **federation)
    fed = load_federation(files.federation)
    result = train(fed, local_exchange(files.cities), run_id=run_id)
    return Run(files, fed, result, build_report(fed, result))


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("regression")
    return _run(root, "contract-ridge", sizes=(200, 150, 300), holdout_fraction=0.25)


@pytest.fixture(scope="module")
def classification(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("classification")
    return _run(
        root,
        "contract-logistic",
        task="classification",
        model="logistic",
        sizes=(300, 200, 400),
        holdout_fraction=0.3,
    )


@pytest.fixture(scope="module")
def with_refusal(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("refusal")
    # city1 is too small to take part; city2 keeps no holdout row (24 × 0.02 rounds to 0)
    return _run(
        root,
        "contract-refusal",
        sizes=(600, 10, 24),
        holdout_fraction=0.02,
        min_rows_per_city=20,
    )


def _headline(run: Run) -> ScoreName:
    return "roc_auc" if run.fed.task == "classification" else "r2"


def _summary(report: Report) -> str:
    console = Console(record=True, width=200)
    print_summary(report, console)
    return console.export_text()


RUNS = ["regression", "classification"]


@pytest.mark.parametrize("name", RUNS)
def test_the_report_holds_every_city_with_its_holdout_scores(
    name: str, request: pytest.FixtureRequest
) -> None:
    run: Run = request.getfixturevalue(name)
    report = run.report
    assert list(report.cities) == ["city0", "city1", "city2"]
    assert report.run_id == f"contract-{run.fed.model}"
    assert report.federation == run.fed
    assert report.model.cities == ("city0", "city1", "city2")
    assert report.model.training_rows == sum(c.rows_train for c in report.cities.values())
    for city in report.cities.values():
        assert city.status == "ok"
        assert city.rows_holdout == round(run.fed.holdout_fraction * city.rows_used)
        assert city.evaluation is not None and city.evaluation.calibration
        for scores in holdout_models(city):
            value = score_of(scores, _headline(run))
            assert value is not None and 0.5 < value <= 1.0


@pytest.mark.parametrize("name", RUNS)
def test_the_page_names_every_city_and_shows_its_scores(
    name: str, request: pytest.FixtureRequest
) -> None:
    run: Run = request.getfixturevalue(name)
    page = render_html(run.report)
    assert f"CityFed report — {html.escape(run.fed.name)}" in page
    (table,) = re.findall(r"<h2>Mutual benefit</h2>.*?(<table>.*?</table>)", page, flags=re.DOTALL)
    (chart,) = re.findall(r'<svg[^>]*class="bar-chart".*?</svg>', page, flags=re.DOTALL)
    plots = re.findall(r'<svg[^>]*class="calibration".*?</svg>', page, flags=re.DOTALL)
    # Federated and personalised against each city's own model.
    assert chart.count("<rect") == 2 * len(run.report.cities)
    assert len(plots) == len(run.report.cities)
    for city_name, city in run.report.cities.items():
        assert f"<td>{html.escape(city_name)}</td>" in page
        assert f">{html.escape(city_name)}</text>" in chart
        assert f"<td>{html.escape(city_name)}</td>" in table
        for scores in holdout_models(city):
            value = score_of(scores, _headline(run))
            assert value is not None
            assert f"{value:.4g}" in table  # the benefit table's 4 significant digits
        # Each bar is labelled with its gain over the city's own model, in per cent.
        change = verdict_change(city, run.report.model.task == "classification")
        for which in ("federated", "personalized"):
            gain = change.gain(which)
            assert gain is not None
            assert f">{_fmt(100.0 * gain, 3)}</text>" in chart
    for coef in run.report.model.coef:
        assert f"{coef:.6g}" in page


@pytest.mark.parametrize("name", RUNS)
def test_the_terminal_summary_prints_every_city(name: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(name)
    text = _summary(run.report)
    assert run.fed.name in text
    assert f"{run.report.model.training_rows} training rows" in text
    for city_name, city in run.report.cities.items():
        (row,) = [line for line in text.splitlines() if f"│ {city_name} " in line]
        assert str(city.rows_used) in row
        for scores in holdout_models(city):
            value = score_of(scores, _headline(run))
            assert value is not None and f"{value:.4g}" in row


@pytest.mark.parametrize("name", RUNS)
def test_report_json_round_trips(name: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(name)
    data = report_to_json(run.report)
    text = json.dumps(data, allow_nan=False)
    assert report_from_json(json.loads(text), "report.json") == run.report
    assert report_from_json(data, "report.json") == run.report
    assert json.loads(report_json_text(run.report)) == data


@pytest.mark.parametrize("name", RUNS)
def test_report_json_has_the_published_keys(name: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(name)
    data = report_to_json(run.report)
    assert set(data) == TOP_KEYS
    assert set(data["federation"]) == FEDERATION_KEYS
    assert set(data["federation"]["target"]) == {"name", "unit"}
    assert set(data["model"]) == MODEL_KEYS
    assert set(data["timing"]) == {"wall_seconds", "aggregation_seconds"}
    assert data["pooled_check"] is None
    for city_name, city in data["cities"].items():
        assert set(city) == CITY_KEYS
        assert set(city["holdout"]) == {"local_only", "federated", "personalized"}
        assert set(city["personalization"]) == {"tau"}
        assert all(set(b) == {"predicted", "observed", "count"} for b in city["calibration"])
        curve = city["learning_curve"]
        assert all(set(p) == {"rows", "local_only", "personalized"} for p in curve)
        assert curve and curve[0]["rows"] == 50 and curve[-1]["rows"] == city["rows_train"]
        outcome = run.report.cities[city_name]
        assert city["rows_holdout"] == outcome.rows_holdout > 0
        assert city["rows_dropped"] == outcome.rows_dropped
    assert data["model"]["coef"] == pytest.approx(run.result.model.coef.tolist(), rel=1e-12)
    assert data["model"]["intercept"] == pytest.approx(run.result.model.intercept, rel=1e-12)


def test_a_refused_city_and_no_holdout_are_reported_and_round_trip(with_refusal: Run) -> None:
    report = with_refusal.report
    refused = report.cities["city1"]
    assert refused.status == "refused" and refused.evaluation is None
    # city2 sent an empty evaluation; report.json cannot tell it from none at all
    assert with_refusal.result.cities["city2"].evaluation == CityEvaluation()
    assert report.cities["city2"].evaluation is None
    assert report.cities["city0"].rows_holdout == round(0.02 * 600) == 12
    page = render_html(report)
    assert "Refused cities are not scored: city1." in page
    assert html.escape(refused.reason) in page
    assert page.count("no holdout rows scored") == 1
    text = _summary(report)
    assert "city1" in text and "refused" in text
    data = report_to_json(report)
    assert data["cities"]["city0"]["holdout"] is not None
    for name in ("city1", "city2"):
        assert data["cities"][name]["holdout"] is None
        assert data["cities"][name]["rows_holdout"] == 0
    assert data["cities"]["city1"]["reason"] == refused.reason
    assert report_from_json(json.loads(json.dumps(data, allow_nan=False)), "r.json") == report


def test_the_pooled_check_equals_the_federated_fit_and_round_trips(
    regression: Run, tmp_path: Path
) -> None:
    data = [load_city_data(load_city(p), regression.fed) for p in regression.files.cities]
    check = pooled_check(regression.result.model, data)
    assert check.within_tolerance
    assert check.rows == regression.report.model.training_rows
    assert check.max_abs_prediction_diff <= 1e-6 * float(np.std(regression.files.y_pooled))
    assert check.relative_to_std_y is not None and check.relative_to_std_y <= 1e-6
    report = replace(regression.report, pooled_check=check)
    write_report(report, tmp_path)
    assert read_report(tmp_path / "report.json") == report
    assert set(json.loads((tmp_path / "report.json").read_text())["pooled_check"]) == POOLED_KEYS
    page = (tmp_path / "report.html").read_text()
    assert page == render_html(report)
    assert "Within tolerance" in page
    assert "equal within tolerance" in _summary(report)


def test_command_seconds_and_deployment_appear_only_when_set(regression: Run) -> None:
    report = replace(
        regression.report,
        timing=replace(regression.report.timing, command_seconds=4.25),
        deployment={"coordinator_certificate": "/tmp/certs/coordinator.pem"},
    )
    data = report_to_json(report)
    assert data["timing"]["command_seconds"] == pytest.approx(4.25)
    assert data["deployment"] == {"coordinator_certificate": "/tmp/certs/coordinator.pem"}
    assert report_from_json(data, "report.json") == report


def test_non_finite_floats_are_written_as_null(regression: Run) -> None:
    model = replace(regression.report.model, intercept=math.nan, coef=(math.inf,) * 4)
    data = report_to_json(replace(regression.report, model=model))
    json.dumps(data, allow_nan=False)
    assert data["model"]["intercept"] is None and data["model"]["coef"] == [None] * 4
    back = report_from_json(data, "report.json")
    assert math.isnan(back.model.intercept) and all(math.isnan(c) for c in back.model.coef)


def _broken(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(data))
    *parents, last = path.split("/")
    node = copy
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return copy


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("cities/city0/rows_read", KeyError, "cities.city0.rows_read: missing key"),
        ("cities/city0/rows_train", "many", "cities.city0.rows_train: expected an integer"),
        ("cities/city0/status", "maybe", "cities.city0.status: expected one of"),
        ("cities/city0/holdout", [1], "cities.city0: evaluation: holdout is not an object"),
        ("model/coef", "1.0", "model.coef: expected a list of numbers"),
        ("model/kind", "forest", "model.kind: expected one of"),
        ("timing", None, "timing: expected a JSON object"),
        ("pooled_check", {"rows": 3}, "pooled_check.max_abs_prediction_diff: missing key"),
        ("federation/alpha", "strong", "federation: [federation] alpha: expected a number"),
        ("run_id", 7, "run_id: expected a string, got 7"),
    ],
)
def test_a_malformed_report_fails_with_one_line_naming_file_and_key(
    regression: Run, path: str, value: Any, where: str
) -> None:
    data = _broken(report_to_json(regression.report), path, value)
    with pytest.raises(CityFedError) as info:
        report_from_json(data, "runs/r1/report.json")
    message = str(info.value)
    assert message.startswith("runs/r1/report.json: ")
    assert where in message
    assert "\n" not in message


def test_an_unreadable_report_file_is_a_cityfed_error(tmp_path: Path) -> None:
    with pytest.raises(CityFedError, match=r"report\.json: cannot read"):
        read_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(CityFedError, match=r"report\.json: not a JSON report"):
        read_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("[]")
    with pytest.raises(CityFedError, match="the top level: expected a JSON object"):
        read_report(tmp_path / "report.json")
