"""Tests for cityfed.report.html: the self-contained HTML report of a typed Report.

The reports are made by the real producer, :func:`build_report`, from a
federation spec parsed by the spec parser and hand-picked city outcomes: the
edge cases (a missing local-only model, an undefined R², no holdout, a refused
city, a hostile city name) that a real run rarely produces all at once.
"""

from __future__ import annotations

import html
import math
import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from cityfed.config.spec import FederationSpec, parse_federation
from cityfed.core.metrics import CalibrationBin, ClassificationScores, RegressionScores
from cityfed.core.scaling import Scaler
from cityfed.federation.evaluation import CityEvaluation, HoldoutScores
from cityfed.federation.outcome import CityOutcome, RunResult
from cityfed.model.record import FederatedModel
from cityfed.report.build import build_report
from cityfed.report.html import render_html
from cityfed.report.types import PooledCheck, Report, holdout_models, score_of

EVIL = "<script>alert('x')</script>"
SVG_XMLNS = 'xmlns="http://www.w3.org/2000/svg"'
VOID_TAGS = {"meta", "br", "hr", "img", "input", "link"}


def federation(text: str) -> FederationSpec:
    return parse_federation(tomllib.loads(text), "federation.toml")


def make_report(
    fed: FederationSpec,
    cities: list[CityOutcome],
    *,
    coef: list[float],
    intercept: float,
    run_id: str,
    rounds: int = 1,
    converged: bool = True,
    pooled: PooledCheck | None = None,
    wall_seconds: float = 12.3,
) -> Report:
    """The report ``build_report`` makes of a run with these outcomes and this model."""
    model = FederatedModel(
        kind=fed.model,
        task=fed.task,
        features=fed.features,
        target=fed.target,
        standardize=False,
        scaler=Scaler.identity(len(coef)),
        coef_scaled=np.asarray(coef),
        intercept_scaled=intercept,
        coef=np.asarray(coef),
        intercept=intercept,
        federation=fed.name,
        run_id=run_id,
        rounds=rounds,
        cities=tuple(c.city for c in cities if c.status == "ok"),
        created_at="2026-11-24T08:00:00Z",
        algorithm=fed.algorithm,
        converged=converged,
        training_rows=sum(c.rows_train for c in cities if c.status == "ok"),
    )
    result = RunResult(model, {c.city: c for c in cities}, wall_seconds=wall_seconds)
    return replace(build_report(fed, result), pooled_check=pooled)


def _reg(r2: float | None, rmse: float, mae: float) -> RegressionScores:
    return RegressionScores(r2=r2, rmse=rmse, mae=mae)


def _evaluation(
    local_only: Any, federated: Any, personalized: Any, **kwargs: Any
) -> CityEvaluation:
    return CityEvaluation(HoldoutScores(local_only, federated, personalized), **kwargs)


REGRESSION_TOML = """
[federation]
name = "nyc-airports"
task = "regression"
model = "ridge"
alpha = 1.0

[target]
name = "temp"
unit = "degF"

[[features]]
name = "dewp"
unit = "degF"

[[features]]
name = "humid"
unit = "percent"
"""

POOLED = PooledCheck(
    max_abs_prediction_diff=3.1e-13,
    relative_to_std_y=1.7e-14,
    rows=20000,
    reference="sklearn make_pipeline(StandardScaler(), Ridge(alpha=1.0))",
    compared="prediction",
    within_tolerance=True,
)


def regression_report() -> Report:
    calibration = tuple(CalibrationBin(30.0 + 10 * i, 29.5 + 10.2 * i, 100 + i) for i in range(8))
    cities = [
        CityOutcome(
            "EWR",
            "ok",
            rows_read=8703,
            rows_train=6800,
            drop_reasons={"missing pressure": 200, "missing dewp": 3},
            evaluation=_evaluation(
                _reg(0.95, 2.1, 1.6),
                _reg(0.96, 2.0, 1.5),
                _reg(0.97, 1.9, 1.4),
                tau=12.5,
                calibration=calibration,
            ),
        ),
        CityOutcome(  # local-only model missing, personalised R² undefined
            "JFK",
            "ok",
            rows_read=8000,
            rows_train=6400,
            evaluation=_evaluation(None, _reg(0.94, 2.2, 1.7), _reg(None, 2.1, 1.6)),
        ),
        CityOutcome("LGA", "ok", rows_read=7000, rows_train=7000),  # no holdout at all
        CityOutcome(
            EVIL,
            "ok",
            rows_read=601,
            rows_train=480,
            drop_reasons={"<b>bad</b> row": 1},
            evaluation=_evaluation(
                _reg(-0.4, 5.0, 4.0),
                _reg(0.9, 2.5, 2.0),
                _reg(0.91, 2.4, 1.9),
                calibration=(CalibrationBin(50.0, 51.0, 120),),
            ),
        ),
        CityOutcome(
            "TINY",
            "refused",
            reason="only 12 usable rows; the federation requires at least 50",
            rows_read=12,
        ),
    ]
    fed = federation(REGRESSION_TOML)
    return make_report(
        fed, cities, coef=[1.0234567, -0.3], intercept=20.1, run_id="sim-1234", pooled=POOLED
    )


CLASSIFICATION_TOML = """
[federation]
name = "rain-or-not"
task = "classification"
model = "logistic"
C = 1.0

[target]
name = "rain"
unit = "dimensionless"

[[features]]
name = "humid"
unit = "percent"
"""


def classification_report() -> Report:
    def scores(acc: float | None, ll: float | None, auc: float | None) -> ClassificationScores:
        return ClassificationScores(accuracy=acc, log_loss=ll, roc_auc=auc)

    cities = [
        CityOutcome(
            "A",
            "ok",
            rows_read=900,
            rows_train=720,
            evaluation=_evaluation(
                scores(0.81, 0.42, 0.85),
                scores(0.83, 0.40, 0.88),
                scores(0.84, 0.39, None),
                calibration=tuple(CalibrationBin(p / 10 + 0.05, p / 10, 90) for p in range(10)),
            ),
        ),
        CityOutcome(  # AUC undefined (one class on holdout): fall back to accuracy
            "B",
            "ok",
            rows_read=300,
            rows_train=240,
            evaluation=_evaluation(
                scores(0.7, None, None), scores(0.75, None, None), scores(None, None, None)
            ),
        ),
        CityOutcome(EVIL, "refused", reason=f"name {EVIL} is suspicious"),
    ]
    fed = federation(CLASSIFICATION_TOML)
    return make_report(
        fed, cities, coef=[0.05], intercept=-3.2, run_id="sim-5678", rounds=6, converged=False
    )


def svg_blocks(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)


def svg_with_class(page: str, css_class: str) -> list[str]:
    return [s for s in svg_blocks(page) if f'class="{css_class}"' in s.split(">")[0]]


class _BalanceChecker(HTMLParser):
    """Checks that every non-void HTML element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"unexpected </{tag}>"
        assert self.stack.pop() == tag, f"mismatched </{tag}>"


REPORTS = [regression_report, classification_report]


@pytest.mark.parametrize("make", REPORTS)
def test_page_is_balanced_and_svgs_parse_as_xml(make: Any) -> None:
    page = render_html(make())
    assert page.startswith("<!DOCTYPE html>")
    checker = _BalanceChecker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    blocks = svg_blocks(page)
    assert blocks
    for block in blocks:
        ET.fromstring(block)


@pytest.mark.parametrize("make", REPORTS)
def test_city_names_are_escaped(make: Any) -> None:
    report = make()
    page = render_html(report)
    assert EVIL in report.cities
    for name in report.cities:
        assert html.escape(name) in page
    assert "<script" not in page
    assert "<b>bad</b>" not in page


@pytest.mark.parametrize("make", REPORTS)
def test_no_none_nan_or_external_urls(make: Any) -> None:
    page = render_html(make())
    assert not re.search(r"\b(None|nan|NaN|inf|null)\b", page)
    without_ns = page.replace(SVG_XMLNS, "")
    assert "http://" not in without_ns
    assert "https://" not in without_ns
    for tag in ("<script", "<link", "<img", "<iframe", "@import", "url("):
        assert tag not in page


def test_regression_chart_shows_the_change_against_local_only() -> None:
    report = regression_report()
    page = render_html(report)
    (chart,) = svg_with_class(page, "bar-chart")
    # One bar per city and model that has an RMSE to compare with the city's own.
    expected = 0
    for city in report.cities.values():
        if city.status == "refused":
            continue
        local, *others = (score_of(s, "rmse") for s in holdout_models(city))
        expected += sum(local is not None and o is not None for o in others)
    assert chart.count("<rect") == expected
    assert ">local-only</text>" not in chart  # the baseline is the zero line, not a bar
    for label in ("federated", "personalised"):
        assert label in chart  # legend
    assert "% lower RMSE than local-only" in chart  # axis label
    ewr = report.cities["EWR"]
    local, federated, _ = (score_of(s, "rmse") for s in holdout_models(ewr))
    assert local is not None and federated is not None
    gain = 100.0 * (local - federated) / local
    assert f">{float(f'{gain:.3g}'):g}</text>" in chart or f"{gain:.3g}" in chart
    assert "n/a: " in page  # why a city has no bars


def test_classification_chart_compares_log_losses_and_says_why_not() -> None:
    page = render_html(classification_report())
    (chart,) = svg_with_class(page, "bar-chart")
    assert "% lower log-loss than local-only" in chart
    for label in ("Log-loss", "Accuracy", "Precision", "Recall", "Base rate"):
        assert f">{label}</th>" in page
    assert '<ul class="verdicts">' in page and "No verdict: " in page


def test_calibration_plots_only_for_cities_with_bins() -> None:
    report = regression_report()
    page = render_html(report)
    plots = svg_with_class(page, "calibration")
    assert len(plots) == 2  # EWR and the escaped city; JFK has no bins
    (ewr,) = [plot for plot in plots if ">EWR</text>" in plot]
    evaluation = report.cities["EWR"].evaluation
    assert evaluation is not None
    assert ewr.count("<circle") == len(evaluation.calibration) == 8
    assert "predicted temp (degF)" in ewr
    assert "never sees rows" in page
    for plot in plots:
        assert 'class="identity"' in plot


def test_classification_calibration_uses_probability_axes() -> None:
    page = render_html(classification_report())
    (plot,) = svg_with_class(page, "calibration")
    assert "predicted probability" in plot and "observed frequency" in plot
    ticks = re.findall(r'text-anchor="middle">([0-9.]+)</text>', plot)
    assert ticks[0] == "0" and ticks[-1] == "1"  # 0-1 axes whatever the data
    assert 'class="count"' in plot  # each bin says how many rows it holds


def test_model_cities_and_pooled_sections() -> None:
    page = render_html(regression_report())
    assert "CityFed report — nyc-airports" in page
    assert "sim-1234" in page and "2026-11-24T08:00:00Z" in page
    assert "1.02346" in page  # six significant digits
    assert "20.1" in page and "percent" in page
    assert "missing pressure: 200" in page
    assert "only 12 usable rows" in page
    assert "8,500" in page  # EWR: 8,703 read, 203 dropped
    assert "3.1e-13" in page and "1.7e-14" in page
    assert "Within tolerance" in page
    assert "Not within tolerance" not in page


def test_settings_and_fit_status_are_shown() -> None:
    page = render_html(classification_report())
    (settings,) = re.findall(r"<h3>Settings</h3><table>.*?</table>", page, flags=re.DOTALL)
    for key in ("model", "algorithm", "C", "holdout_fraction", "min_rows_per_city"):
        assert f"<td>{key}</td>" in settings
    assert "<td>training rounds</td>" in settings
    assert "<td>alpha</td>" not in settings  # ridge's setting, not logistic's
    assert "<td>converged</td><td>no</td>" in settings
    assert "<td>logistic</td>" in settings
    page = render_html(regression_report())
    (settings,) = re.findall(r"<h3>Settings</h3><table>.*?</table>", page, flags=re.DOTALL)
    assert "<td>C</td>" not in settings and "<td>converged</td>" not in settings


def test_pooled_check_failure_and_absence() -> None:
    report = regression_report()
    assert report.pooled_check is not None
    failed = replace(report, pooled_check=replace(report.pooled_check, within_tolerance=False))
    assert "Not within tolerance" in render_html(failed)
    page = render_html(classification_report())
    assert "Pooled check" not in page


def _degenerate_reports() -> list[Report]:
    base = regression_report()
    ewr = base.cities["EWR"]
    assert ewr.evaluation is not None and ewr.evaluation.holdout is not None
    nan_scores = replace(
        ewr.evaluation,
        holdout=replace(ewr.evaluation.holdout, federated=_reg(math.nan, math.inf, 1.0)),
        calibration=(CalibrationBin(math.nan, 1.0, 3), CalibrationBin(5.0, 5.0, 0)),
    )
    odd = replace(
        base,
        cities={**base.cities, "EWR": replace(ewr, evaluation=nan_scores)},
        model=replace(base.model, coef=(math.nan, 1.0), intercept=math.inf),
        pooled_check=PooledCheck(math.nan, None, 0, "sklearn", "prediction", False),
        timing=replace(base.timing, wall_seconds=math.nan),
    )
    fed = federation(REGRESSION_TOML)
    nobody = make_report(fed, [], coef=[1.0, 2.0], intercept=0.0, run_id="empty")
    refused = [CityOutcome(n, "refused", reason="too small") for n in ("X", "Y")]
    all_refused = make_report(fed, refused, coef=[1.0, 2.0], intercept=0.0, run_id="refused")
    return [odd, nobody, all_refused]


def test_degenerate_reports_do_not_crash() -> None:
    odd, nobody, all_refused = pages = [render_html(r) for r in _degenerate_reports()]
    for page in pages:
        assert not re.search(r"\b(None|nan|NaN|inf)\b", page)
        for block in svg_blocks(page):
            ET.fromstring(block)
    (plot,) = [p for p in svg_with_class(odd, "calibration") if ">EWR</text>" in p]
    assert plot.count("<circle") == 1  # the bin without a finite mean is left out
    assert "wall time" not in odd
    assert "The report lists no cities." in nobody and "No city was scored." in nobody
    assert "No city was scored." in all_refused and "too small" in all_refused
