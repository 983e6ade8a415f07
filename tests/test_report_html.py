"""Tests for cityfed.report.html: the self-contained HTML report."""

from __future__ import annotations

import copy
import html
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from cityfed.report.html import render_html

EVIL = "<script>alert('x')</script>"
SVG_XMLNS = 'xmlns="http://www.w3.org/2000/svg"'
VOID_TAGS = {"meta", "br", "hr", "img", "input", "link"}


def _scores(r2: float | None, rmse: float, mae: float) -> dict[str, Any]:
    return {"r2": r2, "rmse": rmse, "mae": mae}


def regression_report() -> dict[str, Any]:
    calibration = [
        {"predicted": 30.0 + 10 * i, "observed": 29.5 + 10.2 * i, "count": 100 + i}
        for i in range(8)
    ]
    return {
        "cityfed_version": "0.1.0",
        "created_at": "2026-11-24T08:00:00Z",
        "run_id": "sim-1234",
        "federation": {
            "name": "nyc-airports",
            "task": "regression",
            "model": "ridge",
            "algorithm": "exact",
            "alpha": 1.0,
            "standardize": True,
            "holdout_fraction": 0.2,
            "seed": 0,
            "min_cities": 2,
            "min_rows_per_city": 50,
            "missing": "drop",
            "target": {"name": "temp", "unit": "degF"},
            "features": [
                {"name": "dewp", "unit": "degF"},
                {"name": "humid", "unit": "percent"},
            ],
        },
        "model": {
            "kind": "ridge",
            "task": "regression",
            "features": ["dewp", "humid"],
            "coef": [1.0234567, -0.3],
            "intercept": 20.1,
            "rounds": 1,
            "converged": True,
        },
        "cities": {
            "EWR": {
                "status": "ok",
                "rows_read": 8703,
                "rows_used": 8500,
                "rows_dropped": 203,
                "drop_reasons": {"missing pressure": 200, "missing dewp": 3},
                "rows_train": 6800,
                "rows_holdout": 1700,
                "holdout": {
                    "local_only": _scores(0.95, 2.1, 1.6),
                    "federated": _scores(0.96, 2.0, 1.5),
                    "personalized": _scores(0.97, 1.9, 1.4),
                },
                "personalization": {"tau": 12.5},
                "calibration": calibration,
            },
            "JFK": {  # local-only model missing, personalised R² null
                "status": "ok",
                "rows_used": 8000,
                "rows_dropped": 0,
                "drop_reasons": {},
                "rows_train": 6400,
                "rows_holdout": 1600,
                "holdout": {
                    "local_only": None,
                    "federated": _scores(0.94, 2.2, 1.7),
                    "personalized": _scores(None, 2.1, 1.6),
                },
                "calibration": [],
            },
            "LGA": {  # holdout_fraction = 0 style: no holdout at all
                "status": "ok",
                "rows_used": 7000,
                "rows_train": 7000,
                "rows_holdout": 0,
                "holdout": None,
            },
            EVIL: {
                "status": "ok",
                "rows_used": 600,
                "rows_train": 480,
                "rows_holdout": 120,
                "rows_dropped": 1,
                "drop_reasons": {"<b>bad</b> row": 1},
                "holdout": {
                    "local_only": _scores(-0.4, 5.0, 4.0),
                    "federated": _scores(0.9, 2.5, 2.0),
                    "personalized": _scores(0.91, 2.4, 1.9),
                },
                "calibration": [{"predicted": 50.0, "observed": 51.0, "count": 120}],
            },
            "TINY": {
                "status": "refused",
                "reason": "only 12 usable rows; the federation requires at least 50",
            },
        },
        "pooled_check": {
            "max_abs_prediction_diff": 3.1e-13,
            "relative_to_std_y": 1.7e-14,
            "rows": 20000,
            "reference": "sklearn make_pipeline(StandardScaler(), Ridge(alpha=1.0))",
            "within_tolerance": True,
        },
        "timing": {"wall_seconds": 12.3},
    }


def classification_report() -> dict[str, Any]:
    def scores(acc: float | None, ll: float | None, auc: float | None) -> Any:
        return {"accuracy": acc, "log_loss": ll, "roc_auc": auc}

    return {
        "cityfed_version": "0.1.0",
        "created_at": "2026-11-24T08:00:00Z",
        "run_id": "sim-5678",
        "federation": {
            "name": "rain-or-not",
            "task": "classification",
            "model": "logistic",
            "algorithm": "newton",
            "C": 1.0,
            "target": {"name": "rain", "unit": "1"},
            "features": [{"name": "humid", "unit": "percent"}],
        },
        "model": {
            "kind": "logistic",
            "task": "classification",
            "features": ["humid"],
            "coef": [0.05],
            "intercept": -3.2,
            "rounds": 6,
            "converged": False,
        },
        "cities": {
            "A": {
                "status": "ok",
                "rows_used": 900,
                "holdout": {
                    "local_only": scores(0.81, 0.42, 0.85),
                    "federated": scores(0.83, 0.40, 0.88),
                    "personalized": scores(0.84, 0.39, None),
                },
                "calibration": [
                    {"predicted": p / 10 + 0.05, "observed": p / 10, "count": 90} for p in range(10)
                ],
            },
            "B": {  # AUC undefined (one class on holdout): fall back to accuracy
                "status": "ok",
                "rows_used": 300,
                "holdout": {
                    "local_only": scores(0.7, None, None),
                    "federated": scores(0.75, None, None),
                    "personalized": None,
                },
            },
            EVIL: {"status": "refused", "reason": f"name {EVIL} is suspicious"},
        },
        "pooled_check": None,
    }


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
    for name in report["cities"]:
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


def test_regression_bar_chart_has_one_rect_per_non_null_bar() -> None:
    report = regression_report()
    page = render_html(report)
    (chart,) = svg_with_class(page, "bar-chart")
    expected = 0
    for city in report["cities"].values():
        if city["status"] == "refused":
            continue
        for scores in (city.get("holdout") or {}).values():
            expected += scores is not None and scores.get("r2") is not None
    assert expected == 7  # EWR 3, JFK 1, LGA 0, EVIL 3
    assert chart.count("<rect") == expected
    assert chart.count(">n/a</text>") == 5  # JFK 2, LGA 3
    for label in ("local-only", "federated", "personalised"):
        assert label in chart  # legend
    assert "R²" in chart  # axis label
    assert "0.96" in chart and "-0.4" in chart  # value labels


def test_classification_chart_falls_back_to_accuracy() -> None:
    page = render_html(classification_report())
    (chart,) = svg_with_class(page, "bar-chart")
    # A: two AUCs; B: no AUC at all so two accuracies; refused city: nothing.
    assert chart.count("<rect") == 4
    assert "B (accuracy)" in chart
    assert "ROC AUC / accuracy" in chart
    assert "Log-loss" in page and "Accuracy" in page


def test_calibration_plots_only_for_cities_with_bins() -> None:
    report = regression_report()
    page = render_html(report)
    plots = svg_with_class(page, "calibration")
    assert len(plots) == 2  # EWR and the escaped city; JFK's list is empty
    assert plots[0].count("<circle") == len(report["cities"]["EWR"]["calibration"])
    assert ">EWR</text>" in plots[0]
    assert "predicted temp (degF)" in plots[0]
    assert "never sees rows" in page
    for plot in plots:
        assert 'class="identity"' in plot


def test_classification_calibration_uses_probability_axes() -> None:
    page = render_html(classification_report())
    (plot,) = svg_with_class(page, "calibration")
    assert "mean predicted probability" in plot
    assert "observed frequency" in plot


def test_model_cities_and_pooled_sections() -> None:
    page = render_html(regression_report())
    assert "CityFed report — nyc-airports" in page
    assert "sim-1234" in page and "2026-11-24T08:00:00Z" in page
    assert "1.02346" in page  # six significant digits
    assert "20.1" in page and "percent" in page
    assert "missing pressure: 200" in page
    assert "only 12 usable rows" in page
    assert "8,500" in page
    assert "3.1e-13" in page and "1.7e-14" in page
    assert "Within tolerance" in page
    assert "Not within tolerance" not in page


def test_pooled_check_failure_and_absence() -> None:
    report = regression_report()
    report["pooled_check"]["within_tolerance"] = False
    assert "Not within tolerance" in render_html(report)
    page = render_html(classification_report())
    assert "Pooled check" not in page


def test_degenerate_reports_do_not_crash() -> None:
    base = regression_report()
    odd = copy.deepcopy(base)
    odd["model"] = None
    odd["federation"]["target"] = None
    odd["pooled_check"] = {"within_tolerance": None}
    odd["cities"]["EWR"]["holdout"]["federated"]["r2"] = float("nan")
    odd["cities"]["EWR"]["calibration"] = [
        {"predicted": None, "observed": 1.0, "count": 3},
        {"predicted": 5.0, "observed": 5.0, "count": None},
    ]
    for report in ({}, {"cities": None, "federation": None}, odd):
        page = render_html(report)
        assert not re.search(r"\b(None|nan|NaN)\b", page)
        for block in svg_blocks(page):
            ET.fromstring(block)
