"""``cityfed simulate`` and ``cityfed demo`` end to end: real Flower simulation engine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed import load_model

from .synthetic import FEATURES, write_federation


def cityfed(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cityfed.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def _engine_processes() -> list[str]:
    """Engine or Ray processes whose run folder is gone: left behind by a finished run.

    Each simulation runs in its own staging folder (Ray's sessions included), removed
    when the command returns; a process that still names a removed one leaked.
    """
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for match in re.finditer(r"(/\S*?/cityfed-sim-[A-Za-z0-9_]+)", cmd):
            if not Path(match.group(1)).exists():
                found.append(cmd)
                break
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "alpha", "secure"), [("ridge", 2.0, False), ("linear", 0.0, True)]
)
def test_simulate_equals_pooled_sklearn_in_one_round(
    tmp_path: Path, model: str, alpha: float, secure: bool
) -> None:
    # Prepare: four cities with different names, units, delimiters and derived columns
    # (the linear one under secure aggregation: one secure sum, still the pooled fit)
    extra = "\n[privacy]\nsecure_aggregation = true\n" if secure else ""
    files = write_federation(
        tmp_path / "in", model=model, alpha=alpha, sizes=(300, 120, 500, 80), extra=extra
    )
    out = tmp_path / "out"
    # Execute
    proc = cityfed("simulate", files.federation, *files.cities, "--out", out, "--json")
    # Assert
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model"]["rounds"] == 1
    assert set(report["cities"]) == {"city0", "city1", "city2", "city3"}
    assert report["cities"]["city1"]["holdout"] is None  # holdout_fraction = 0
    est = load_model(out / "model.pb")
    X, y = files.X_pooled, files.y_pooled
    frame = pd.DataFrame(X, columns=[name for name, _ in FEATURES])
    reference = make_pipeline(
        StandardScaler(), Ridge(alpha=alpha) if alpha else LinearRegression()
    ).fit(X, y)
    assert np.max(np.abs(est.predict(frame) - reference.predict(X))) <= 1e-6 * np.std(y)
    np.testing.assert_allclose(est.coef_, reference[-1].coef_ / reference[0].scale_, rtol=1e-9)
    assert report["pooled_check"]["within_tolerance"] is True
    assert report["pooled_check"]["max_abs_prediction_diff"] <= 1e-6 * np.std(y)
    assert report["model"]["secure_aggregation"] is secure
    html = (out / "report.html").read_text()
    assert "Pooled check" in html
    assert all(f"city{k}" in html for k in range(4))
    assert not _engine_processes()


@pytest.mark.slow
def test_simulate_logistic_matches_pooled_probabilities(tmp_path: Path) -> None:
    """Under secure aggregation: every Newton round is a secure sum."""
    files = write_federation(
        tmp_path / "in",
        task="classification",
        model="logistic",
        C=0.5,
        sizes=(400, 250, 300),
        holdout_fraction=0.0,
        extra="\n[privacy]\nsecure_aggregation = true\n",
    )
    out = tmp_path / "out"
    proc = cityfed("simulate", files.federation, *files.cities, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert 2 <= report["model"]["rounds"] <= 10
    est = load_model(out / "model.pb")
    X, y = files.X_pooled, files.y_pooled
    frame = pd.DataFrame(X, columns=[name for name, _ in FEATURES])
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    assert np.max(np.abs(est.predict_proba(frame) - reference.predict_proba(X))) <= 1e-6
    assert report["model"]["secure_aggregation"] is True
    assert not _engine_processes()


@pytest.mark.slow
def test_refusing_city_leaves_the_run_going_and_holdout_is_scored(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path / "in", sizes=(300, 30, 400), holdout_fraction=0.2, min_rows_per_city=50
    )
    out = tmp_path / "out"
    proc = cityfed("simulate", files.federation, *files.cities, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Mutual benefit" in proc.stdout and "refused" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["cities"]["city1"]["status"] == "refused"
    assert report["model"]["cities"] == ["city0", "city2"]
    for name in ("city0", "city2"):
        holdout = report["cities"][name]["holdout"]
        assert {"local_only", "federated", "personalized"} <= set(holdout)
    html = (out / "report.html").read_text()
    assert "city1" in html and "<svg" in html


@pytest.mark.slow
def test_too_few_cities_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    files = write_federation(tmp_path / "in", sizes=(300, 30, 20), min_rows_per_city=50)
    out = tmp_path / "out"
    proc = cityfed("simulate", files.federation, *files.cities, "--out", out)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "city1" in proc.stderr and "city2" in proc.stderr and "min_cities" in proc.stderr
    assert not out.exists()
    assert not _engine_processes()


def _corrupt(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("breakage", "fragments"),
    [
        (
            lambda d: _corrupt(d / "city_1.toml", 'source = "Wind_mph"', 'source = "Wind_kts"'),
            ["city_1.csv", "Wind_kts"],
        ),
        (
            lambda d: _corrupt(
                d / "city_0.csv",
                "\n",
                "\nabc",
            ),
            ["city_0.csv", "row 1", "not a number"],
        ),
        (
            lambda d: _corrupt(d / "city_1.toml", 'unit = "mph"', 'unit = "smoots_per_blink"'),
            ["city_1.toml", "[columns] wind unit", "unknown unit"],
        ),
        (
            lambda d: _corrupt(d / "city_2.toml", 'unit = "kPa"', 'unit = "kg"'),
            ["city_2.toml", "[columns] pressure", "kg"],
        ),
        (lambda d: (d / "city_0.csv").write_text(""), ["city_0.csv", "empty"]),
        (
            lambda d: _corrupt(
                d / "city_1.toml", 'agreed = ["agreed-federation.toml"]', "agreed = []"
            ),
            ["city_1.toml", "[policy] agreed", "has not agreed"],
        ),
        (
            lambda d: _corrupt(d / "federation.toml", "seed = 3", "seed = 4"),
            ["city_0.toml", "[policy] agreed", "has not agreed"],
        ),
        (
            lambda d: _corrupt(d / "federation.toml", "[target]", "[target"),
            ["federation.toml", "invalid TOML"],
        ),
    ],
)
def test_bad_input_is_one_line_with_no_traceback_and_nothing_written(
    tmp_path: Path, breakage, fragments
) -> None:  # type: ignore[no-untyped-def]
    # Not marked slow: each mistake is found before the engine starts.
    files = write_federation(tmp_path / "in", sizes=(60, 60, 60))
    breakage(tmp_path / "in")
    out = tmp_path / "out"
    proc = cityfed("simulate", files.federation, *files.cities, "--out", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_demo_runs_on_the_bundled_data(tmp_path: Path) -> None:
    proc = cityfed("demo", "--out", tmp_path / "demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Mutual benefit" in proc.stdout and "report.html" in proc.stdout
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert set(report["cities"]) == {"EWR", "JFK", "LGA", "NEW"}
    assert report["model"]["rounds"] == 1
    assert report["pooled_check"]["within_tolerance"] is True
    # The metric city (LGA, decimal commas) lands in the same units as the others.
    assert report["cities"]["LGA"]["holdout"]["federated"]["r2"] > 0.95
    # The new station (one month of four-hourly rows) gains from joining, and says so.
    new = report["cities"]["NEW"]["holdout"]
    assert new["federated"]["rmse"] < new["local_only"]["rmse"]
    assert "NEW: Joining improved your RMSE by" in " ".join(proc.stdout.split())
    curve = report["cities"]["NEW"]["learning_curve"]
    assert curve[0]["rows"] == 50
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "<h2>Learning curves</h2>" in html and "NEW: Joining improved" not in html
    assert "Joining improved your RMSE by" in html
    assert not _engine_processes()


@pytest.mark.slow
def test_the_count_demo_runs_and_reports_its_inference_table(tmp_path: Path) -> None:
    proc = cityfed("demo", "--counts", "--out", tmp_path / "counts", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "CityFed count demo" in proc.stdout
    report = json.loads((tmp_path / "counts" / "report.json").read_text())
    model = report["model"]
    assert (model["kind"], model["task"], model["converged"]) == ("poisson", "count", True)
    assert set(report["cities"]) == {"EWR", "JFK", "LGA", "NEW"}
    assert all(c["status"] == "ok" for c in report["cities"].values())
    assert report["pooled_check"]["within_tolerance"] is True
    assert report["pooled_check"]["compared"] == "expected count"
    # Hour of day (17 levels) and weekday (7) as indicators, then the weather.
    names = [row["name"] for row in model["inference"]["coefficients"]]
    assert names[:3] == ["(intercept)", "hour=6", "hour=7"] and "weekday=Sun" in names
    assert len(names) == 1 + 16 + 6 + 4
    assert report["cities"]["LGA"]["holdout"]["federated"]["d2"] > 0.4
    html = (tmp_path / "counts" / "report.html").read_text()
    assert "<h3>Inference</h3>" in html and "weekday=Sat" in html


@pytest.mark.slow
def test_the_private_demo_shows_what_privacy_costs(tmp_path: Path) -> None:
    """Secure aggregation and ε = 1 on the bundled data: the report tells the accuracy cost."""
    proc = cityfed("demo", "--private", "--out", tmp_path / "private", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "CityFed private demo" in proc.stdout and "Accuracy cost" in proc.stdout
    report = json.loads((tmp_path / "private" / "report.json").read_text())
    model = report["model"]
    assert model["secure_aggregation"] is True and model["epsilon"] == 1.0
    check = report["pooled_check"]
    assert check["private"] is True and check["cost_metric"] == "rmse"
    assert set(check["cost"]) == {"EWR", "JFK", "LGA", "NEW"}
    for private, plain in check["cost"].values():
        assert private > 0 and plain > 0
    for city in report["cities"].values():
        assert city["epsilon_run"] == pytest.approx(1.0, rel=1e-6)
    est = load_model(tmp_path / "private" / "model.pb")
    assert est.model_.epsilon == 1.0 and len(est.model_.privacy_spent) == 4
    html = (tmp_path / "private" / "report.html").read_text()
    assert "<h2>Privacy</h2>" in html and "Non-private rmse" in html
    assert not _engine_processes()
