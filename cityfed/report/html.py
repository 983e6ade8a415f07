"""Render a run's :class:`~cityfed.report.types.Report` as one self-contained HTML page.

The page needs nothing from the network: the styles are inline, there is no
JavaScript, and the plots are inline SVG drawn by the small helpers below.
Every string that comes from the report is escaped with :func:`html.escape`.
Undefined scores (None, or not finite) show as "n/a", a report without a pooled
check has no such section, and refused cities show their reason.

Conventions used throughout: helpers whose names end in ``_svg``,
``_section`` or ``_table`` return HTML; their *text* arguments are raw strings
that they escape themselves, while *cell* arguments of :func:`_table` are
HTML that the caller has already escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cityfed.config.spec import FederationSpec
from cityfed.core.metrics import CalibrationBin, Scores
from cityfed.federation.outcome import CityOutcome, Status
from cityfed.report.types import (
    ModelSection,
    PooledCheck,
    Report,
    ScoreName,
    holdout_models,
    score_of,
)
from cityfed.report.verdict import change, na_reason, verdict

__all__ = ["render_html"]

NA: Final = "n/a"
_SVG_NS: Final = "http://www.w3.org/2000/svg"


# --------------------------------------------------------------------------
# Fixed vocabulary: the three models compared and the scores per task
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """One of the three models compared on each city's holdout rows."""

    label: str
    colour: str


@dataclass(frozen=True)
class _Metric:
    """A holdout score: its name in the score records, label and direction."""

    key: ScoreName
    label: str
    higher_is_better: bool
    #: False for a fact of the data (the base rate): never shown as "best".
    ranked: bool = True


# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
# In the order of :func:`~cityfed.report.types.holdout_models`.
_SERIES: Final = (
    _Series("local-only", "#7f7f7f"),
    _Series("federated", "#0072b2"),
    _Series("personalised", "#e69f00"),
)

_REGRESSION_METRICS: Final = (
    _Metric("r2", "R²", higher_is_better=True),
    _Metric("rmse", "RMSE", higher_is_better=False),
    _Metric("mae", "MAE", higher_is_better=False),
)

_CLASSIFICATION_METRICS: Final = (
    _Metric("accuracy", "Accuracy", higher_is_better=True),
    _Metric("log_loss", "Log-loss", higher_is_better=False),
    _Metric("roc_auc", "ROC AUC", higher_is_better=True),
    _Metric("precision", "Precision", higher_is_better=True),
    _Metric("recall", "Recall", higher_is_better=True),
    _Metric("base_rate", "Base rate", higher_is_better=True, ranked=False),
)

_CSS: Final = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: #1f2933; background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 36px 0 8px; padding-bottom: 4px;
     border-bottom: 2px solid #e4e7eb; }
h3 { font-size: 1rem; margin: 20px 0 6px; }
.subtitle { color: #52606d; margin: 0 0 8px; }
.caption, figcaption { color: #52606d; font-size: 0.9rem; margin: 4px 0 10px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #e4e7eb; padding: 5px 12px; text-align: left;
         vertical-align: top; }
th { background: #f5f7fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.group-start td { border-top: 2px solid #cbd2d9; }
td strong { color: #0b4f6c; }
ul.reasons { margin: 0; padding-left: 1.1em; }
.status { display: inline-block; padding: 0 8px; border-radius: 9px;
          font-size: 0.85rem; font-weight: 600; }
.status-ok { background: #e3f9e5; color: #1f6f2b; }
.status-refused { background: #ffe3e3; color: #9b1c1c; }
.status-other { background: #fff3c4; color: #7c5e10; }
.verdict { font-weight: 600; padding: 8px 12px; border-radius: 6px;
           display: inline-block; }
.verdict.pass { background: #e3f9e5; color: #1f6f2b; }
.verdict.fail { background: #ffe3e3; color: #9b1c1c; }
figure { margin: 8px 0 16px; }
.scroll { overflow-x: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 12px 24px; }
svg { font-family: inherit; }
svg text { fill: #1f2933; font-size: 11px; }
svg text.muted { fill: #7b8794; }
svg text.title { font-size: 13px; font-weight: 600; }
svg text.axis-label { font-size: 12px; }
svg .grid-line { stroke: #e4e7eb; stroke-width: 1; }
svg .axis { stroke: #52606d; stroke-width: 1; fill: none; }
svg .identity { stroke: #9aa5b1; stroke-width: 1.5; stroke-dasharray: 5 4; }
svg .point { fill: #0072b2; fill-opacity: 0.7; stroke: #064a75; stroke-width: 1; }
svg text.count { fill: #52606d; font-size: 10px; }
ul.verdicts { padding-left: 1.2em; }
ul.verdicts li { margin: 4px 0; }
footer { margin-top: 40px; color: #7b8794; font-size: 0.85rem; }
"""


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    """Return ``value`` if it is a finite number, else None."""
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 4) -> str:
    """Format a number for display; None and non-finite floats are ``n/a``.

    Parameters
    ----------
    value : float or None
        The value to format. Integers keep every digit (with thousands
        separators); floats get ``digits`` significant digits.
    digits : int, optional
        Significant digits for floats, by default 4.

    Returns
    -------
    str
        Plain text, safe to embed in HTML as is. Very small or very large
        magnitudes are written in scientific notation, e.g. ``3.1e-13``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    number = _finite(value)
    if number is None:
        return NA
    if number == 0:
        return "0"
    if abs(number) < 1e-3 or abs(number) >= 1e12:
        mantissa, exponent = f"{number:.{digits - 1}e}".split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    text = f"{number:.{digits}g}"
    return f"{number:,.0f}" if "e" in text else text


def _text(value: str | float | None) -> str:
    """Return a report value as escaped HTML text (bools are yes/no, None ``n/a``)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or isinstance(value, int | float):
        return _fmt(value)
    return html.escape(value)


def _metrics(classification: bool) -> tuple[_Metric, ...]:
    """Return the scores shown for the task."""
    return _CLASSIFICATION_METRICS if classification else _REGRESSION_METRICS


def _shorten(label: str, limit: int = 16) -> str:
    """Shorten a raw label to ``limit`` characters, ending with an ellipsis."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


# --------------------------------------------------------------------------
# Generic HTML pieces
# --------------------------------------------------------------------------


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: frozenset[int] = frozenset(),
    row_classes: Sequence[str] | None = None,
) -> str:
    """Render a table.

    Parameters
    ----------
    header : Sequence[str]
        Raw column titles; they are escaped here.
    rows : Sequence[Sequence[str]]
        Cells as HTML that the caller has already escaped.
    numeric : frozenset[int], optional
        Indices of right-aligned numeric columns.
    row_classes : Sequence[str] or None, optional
        One CSS class per row ("" for none).

    Returns
    -------
    str
        The ``<table>`` element.
    """

    def cls(index: int) -> str:
        return ' class="num"' if index in numeric else ""

    head = "".join(f"<th{cls(i)}>{html.escape(title)}</th>" for i, title in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        row_class = row_classes[r] if row_classes and r < len(row_classes) else ""
        tr = f'<tr class="{row_class}">' if row_class else "<tr>"
        cells = "".join(f"<td{cls(i)}>{cell}</td>" for i, cell in enumerate(row))
        body.append(f"{tr}{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(title: str, *parts: str) -> str:
    """Wrap HTML parts in a ``<section>`` headed by an escaped ``title``."""
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def _caption(text: str) -> str:
    """Return a one-paragraph caption from raw text."""
    return f'<p class="caption">{html.escape(text)}</p>'


# --------------------------------------------------------------------------
# SVG primitives
# --------------------------------------------------------------------------


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round tick values covering ``[low, high]`` in about ``count`` steps.

    Parameters
    ----------
    low, high : float
        The data range; a degenerate range is widened around its value.
    count : int, optional
        Target number of intervals, by default 5.

    Returns
    -------
    list[float]
        Increasing ticks; the first is ``<= low`` and the last ``>= high``.
    """
    if high - low <= 1e-12 * max(1.0, abs(low), abs(high)):
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw_step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    start = math.floor(low / step + 1e-9) * step
    stop = math.ceil(high / step - 1e-9) * step
    ticks = []
    for i in range(round((stop - start) / step) + 1):
        tick = start + i * step
        ticks.append(0.0 if abs(tick) < step * 1e-9 else round(tick, 12))
    return ticks


def _svg_open(width: float, height: float, css_class: str, label: str) -> str:
    """Open an ``<svg>`` element with a raw accessible ``label``."""
    return (
        f'<svg xmlns="{_SVG_NS}" class="{css_class}" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{html.escape(label)}">'
    )


def _svg_text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "middle",
    css_class: str = "",
    rotate: bool = False,
) -> str:
    """Return an SVG ``<text>`` element holding escaped raw ``text``."""
    cls = f' class="{css_class}"' if css_class else ""
    turn = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{cls}{turn}>'
        f"{html.escape(text)}</text>"
    )


def _svg_line(x1: float, y1: float, x2: float, y2: float, css_class: str) -> str:
    """Return an SVG ``<line>`` element."""
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{css_class}"/>'


# --------------------------------------------------------------------------
# Bar chart
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _BarGroup:
    """One city's bars: one value (or None) per series."""

    label: str
    values: tuple[float | None, ...]


def _bar_chart_svg(groups: Sequence[_BarGroup], series: Sequence[_Series], y_label: str) -> str:
    """Draw a grouped bar chart.

    Parameters
    ----------
    groups : Sequence[_BarGroup]
        One group per city; a None value draws no bar but an "n/a" mark.
    series : Sequence[_Series]
        The series, in the order of each group's values (legend and colours).
    y_label : str
        Raw y-axis label.

    Returns
    -------
    str
        An ``<svg>`` element with exactly one ``<rect>`` per non-null value.
    """
    bar_w, bar_gap, group_gap = 30.0, 4.0, 40.0
    left, right, top, bottom, plot_h = 64.0, 16.0, 48.0, 40.0, 240.0
    group_w = len(series) * bar_w + (len(series) - 1) * bar_gap
    pitch = group_w + group_gap
    plot_w = max(360.0, len(groups) * pitch)
    width, height = left + plot_w + right, top + plot_h + bottom

    values = [v for group in groups for v in group.values if v is not None]
    ticks = _nice_ticks(min([0.0, *values]), max([0.0, *values]))
    y_low, y_high = ticks[0], ticks[-1]

    def y_of(value: float) -> float:
        return top + plot_h * (y_high - value) / (y_high - y_low)

    parts = [_svg_open(width, height, "bar-chart", f"Grouped bar chart of {y_label}")]
    for tick in ticks:
        parts.append(_svg_line(left, y_of(tick), left + plot_w, y_of(tick), "grid-line"))
        parts.append(_svg_text(left - 6, y_of(tick) + 4, _fmt(tick), anchor="end"))
    parts.append(_svg_line(left, top, left, top + plot_h, "axis"))
    parts.append(_svg_line(left, y_of(0.0), left + plot_w, y_of(0.0), "axis"))
    parts.append(_svg_text(16, top + plot_h / 2, y_label, css_class="axis-label", rotate=True))

    first_x = left + (plot_w - len(groups) * pitch) / 2 + group_gap / 2
    for g, group in enumerate(groups):
        group_x = first_x + g * pitch
        for s, (item, value) in enumerate(zip(series, group.values, strict=False)):
            centre = group_x + s * (bar_w + bar_gap) + bar_w / 2
            parts.append(_bar_svg(centre, bar_w, value, y_of, item, group.label))
        parts.append(_svg_text(group_x + group_w / 2, top + plot_h + 26, _shorten(group.label)))
    parts.append(_legend_svg(series, left, 18))
    parts.append("</svg>")
    return "".join(parts)


def _bar_svg(
    centre: float,
    bar_w: float,
    value: float | None,
    y_of: Callable[[float], float],
    series: _Series,
    group_label: str,
) -> str:
    """Draw one bar with its value label, or an "n/a" mark for a null value."""
    zero = y_of(0.0)
    if value is None:
        return _svg_text(centre, zero - 4, NA, css_class="muted")
    y = y_of(value)
    top, height = min(y, zero), abs(zero - y)
    tooltip = html.escape(f"{group_label} — {series.label}: {_fmt(value)}")
    label_y = top - 4 if value >= 0 else top + height + 12
    return (
        f'<rect x="{centre - bar_w / 2:.1f}" y="{top:.1f}" width="{bar_w:.1f}" '
        f'height="{height:.1f}" fill="{series.colour}"><title>{tooltip}</title></rect>'
        + _svg_text(centre, label_y, _fmt(value, 3))
    )


def _legend_svg(series: Sequence[_Series], x: float, y: float) -> str:
    """Draw a horizontal legend; swatches are paths so bars stay the only rects."""
    parts = []
    for item in series:
        parts.append(f'<path d="M{x:.1f} {y - 9:.1f}h12v12h-12z" fill="{item.colour}"/>')
        parts.append(_svg_text(x + 17, y + 1, item.label, anchor="start"))
        x += 30 + 7 * len(item.label)
    return "".join(parts)


# --------------------------------------------------------------------------
# Calibration plot
# --------------------------------------------------------------------------


def _calibration_svg(
    title: str,
    bins: Sequence[CalibrationBin],
    x_label: str,
    y_label: str,
    bounds: tuple[float, float] | None = None,
) -> str:
    """Plot observed against predicted bin means, with the line y = x.

    Parameters
    ----------
    title : str
        Raw plot title (the city name).
    bins : Sequence[CalibrationBin]
        The bins, with finite means; point area grows with the bin's row count.
    x_label, y_label : str
        Raw axis labels.
    bounds : tuple[float, float] or None, optional
        Shared axis range; by default it is fitted to the data.

    Returns
    -------
    str
        An ``<svg>`` element; both axes share one scale.
    """
    left, right, top, bottom, size = 64.0, 16.0, 36.0, 48.0, 240.0
    width, height = left + size + right, top + size + bottom
    if bounds is None:
        coords = [b.predicted for b in bins] + [b.observed for b in bins]
        pad = 0.05 * (max(coords) - min(coords))
        bounds = (min(coords) - pad, max(coords) + pad)
    ticks = _nice_ticks(*bounds)
    # A margin inside the axes: points at the ends stay off the axes and labels.
    margin = 0.04 * (ticks[-1] - ticks[0])
    low, high = ticks[0] - margin, ticks[-1] + margin

    def sx(value: float) -> float:
        return left + size * (value - low) / (high - low)

    def sy(value: float) -> float:
        return top + size * (high - value) / (high - low)

    parts = [_svg_open(width, height, "calibration", f"Predicted vs observed: {title}")]
    parts.append(_svg_text(left + size / 2, 18, _shorten(title, 40), css_class="title"))
    for tick in ticks:
        parts.append(_svg_line(sx(tick), top, sx(tick), top + size, "grid-line"))
        parts.append(_svg_line(left, sy(tick), left + size, sy(tick), "grid-line"))
        parts.append(_svg_text(sx(tick), top + size + 15, _fmt(tick)))
        parts.append(_svg_text(left - 6, sy(tick) + 4, _fmt(tick), anchor="end"))
    parts.append(f'<path d="M{left:.1f} {top:.1f}v{size:.1f}h{size:.1f}" class="axis"/>')
    parts.append(_svg_line(sx(ticks[0]), sy(ticks[0]), sx(ticks[-1]), sy(ticks[-1]), "identity"))
    parts.append(_svg_text(left + size / 2, height - 8, x_label, css_class="axis-label"))
    parts.append(_svg_text(16, top + size / 2, y_label, css_class="axis-label", rotate=True))
    largest = max((b.count for b in bins if b.count > 0), default=None)
    for item in bins:
        radius = 4.0
        if largest and item.count > 0:
            radius = 2.5 + 5.5 * math.sqrt(item.count / largest)
        tooltip = (
            f"predicted {_fmt(item.predicted)}, observed {_fmt(item.observed)}, "
            f"{_fmt(float(item.count))} rows"
        )
        parts.append(
            f'<circle cx="{sx(item.predicted):.1f}" cy="{sy(item.observed):.1f}" '
            f'r="{radius:.1f}" class="point"><title>{html.escape(tooltip)}</title>'
            "</circle>"
        )
        parts.append(
            _svg_text(
                sx(item.predicted) + radius + 2,
                sy(item.observed) - radius,
                _fmt(float(item.count), 3),
                css_class="count",
                anchor="start",
            )
        )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def _header(report: Report) -> str:
    """Return the page title and the one-line run description."""
    details = [
        f"model {_text(report.model.kind)}",
        f"task {_text(report.federation.task)}",
        f"algorithm {_text(report.federation.algorithm)}",
        f"rounds {_text(report.model.rounds)}",
        f"created {_text(report.created_at)}",
        f"run {_text(report.run_id)}",
    ]
    return (
        f"<header><h1>CityFed report — {_text(report.federation.name)}</h1>"
        f'<p class="subtitle">{" · ".join(details)}</p></header>'
    )


def _benefit_table(scored: Sequence[CityOutcome], metrics: Sequence[_Metric]) -> str:
    """Tabulate each city's holdout scores for the three models.

    The best of the three values of each score is shown in bold.
    """
    rows: list[list[str]] = []
    row_classes: list[str] = []
    for city in scored:
        scores = holdout_models(city)
        if all(item is None for item in scores):
            rows.append([_text(city.city), "no holdout rows scored", *[NA] * len(metrics)])
            row_classes.append("group-start")
            continue
        best = {metric.key: _best(scores, metric) for metric in metrics}
        for s, item in enumerate(_SERIES):
            cells = [_text(city.city) if s == 0 else "", html.escape(item.label)]
            for metric in metrics:
                value = score_of(scores[s], metric.key)
                cell = _fmt(value)
                is_best = metric.ranked and value is not None and value == best[metric.key]
                cells.append(f"<strong>{cell}</strong>" if is_best else cell)
            rows.append(cells)
            row_classes.append("group-start" if s == 0 else "")
    header = ["City", "Model", *[metric.label for metric in metrics]]
    numeric = frozenset(range(2, 2 + len(metrics)))
    return _table(header, rows, numeric=numeric, row_classes=row_classes)


def _best(scores: Sequence[Scores | None], metric: _Metric) -> float | None:
    """Return the best defined value of ``metric`` among the models."""
    values = [v for v in (score_of(s, metric.key) for s in scores) if v is not None]
    if not values:
        return None
    return max(values) if metric.higher_is_better else min(values)


def _gain_groups(
    scored: Sequence[CityOutcome], classification: bool
) -> tuple[list[_BarGroup], list[str]]:
    """Per city, the federated and personalised error reduction against local-only, in %.

    Returns the bar groups and, for each city without a comparison, why.
    """
    groups: list[_BarGroup] = []
    reasons: list[str] = []
    for city in scored:
        why = na_reason(city, classification)
        if why is not None:
            reasons.append(f"{city.city}: {why}")
        c = change(city, classification)
        values = tuple(
            None if g is None else 100.0 * g for g in (c.gain("federated"), c.gain("personalized"))
        )
        groups.append(_BarGroup(city.city, values))
    return groups, reasons


def _verdicts(scored: Sequence[CityOutcome], classification: bool) -> str:
    items = "".join(
        f"<li><strong>{_text(city.city)}</strong>: "
        f"{html.escape(verdict(city, classification))}</li>"
        for city in scored
    )
    return f'<ul class="verdicts">{items}</ul>'


def _benefit_section(cities: Mapping[str, CityOutcome], classification: bool) -> str:
    """Return the "Mutual benefit" section: verdicts, scores table and the gain chart."""
    scored = [city for city in cities.values() if city.status != "refused"]
    refused = [name for name, city in cities.items() if city.status == "refused"]
    parts = [
        _caption(
            "Did joining help? Each city scored, on its own holdout rows, a model "
            "trained on that city alone (local-only), the shared federated model, and "
            "the federated model personalised to the city."
        )
    ]
    if refused:
        parts.append(_caption(f"Refused cities are not scored: {', '.join(refused)}."))
    if not scored:
        return _section("Mutual benefit", *parts, _caption("No city was scored."))
    parts.append(_verdicts(scored, classification))
    parts.append(_benefit_table(scored, _metrics(classification)))
    parts.append(_caption("Best value of each score in bold."))
    groups, reasons = _gain_groups(scored, classification)
    error = "log-loss" if classification else "RMSE"
    y_label = f"% lower {error} than local-only"
    chart = _bar_chart_svg(groups, _SERIES[1:], y_label)
    why = (" n/a: " + "; ".join(reasons) + ".") if reasons else ""
    parts.append(
        f'<figure><div class="scroll">{chart}</div><figcaption>'
        f"How much lower each model's {error} is than the city's own model's, in per cent "
        f"of it: above 0 the federation helped, below 0 the city's own model was better."
        f"{html.escape(why)}</figcaption></figure>"
    )
    return _section("Mutual benefit", *parts)


def _plotted_bins(city: CityOutcome) -> list[CalibrationBin]:
    """Return a city's calibration bins whose two means are finite."""
    bins = city.evaluation.calibration if city.evaluation is not None else ()
    return [b for b in bins if math.isfinite(b.predicted) and math.isfinite(b.observed)]


def _calibration_section(report: Report, classification: bool) -> str:
    """Return the "Predicted vs observed" section, or "" if no city has bins."""
    if classification:
        x_label, y_label = "predicted probability", "observed frequency"
        bounds: tuple[float, float] | None = (0.0, 1.0)
    else:
        target = report.federation.target
        name = target.name or "target"
        suffix = f" ({target.unit})" if target.unit else ""
        x_label, y_label = f"predicted {name}{suffix}", f"observed {name}{suffix}"
        bounds = None
    plots = []
    for city_name, city in report.cities.items():
        bins = _plotted_bins(city)
        if bins:
            plots.append(_calibration_svg(city_name, bins, x_label, y_label, bounds))
    if not plots:
        return ""
    binning = (
        "bins of predicted probability 0–0.1, 0.1–0.2, … (a sparse bin is merged with the next)"
        if classification
        else "equal-count bins sorted by prediction"
    )
    caption = _caption(
        f"Each point is a bin of holdout rows ({binning}): mean prediction (x) against "
        "mean observed value (y), sized and labelled by row count; the dashed line is "
        "y = x. These are binned aggregates computed by each city — the coordinator "
        "never sees rows."
    )
    return _section("Predicted vs observed", caption, f'<div class="grid">{"".join(plots)}</div>')


def _curve_svg(title: str, city: CityOutcome, classification: bool) -> str | None:
    """One city's learning curve: holdout error against its own training rows (log scale)."""
    curve = city.evaluation.learning_curve if city.evaluation is not None else ()
    points = [(p.rows, _finite(p.local_only), _finite(p.personalized)) for p in curve if p.rows > 0]
    federated = score_of(holdout_models(city)[1], "log_loss" if classification else "rmse")
    values = [v for _, a, b in points for v in (a, b) if v is not None]
    if len(points) < 2 or not values:
        return None
    if federated is not None:
        values.append(federated)
    left, right, top, bottom, plot_w, plot_h = 64.0, 48.0, 48.0, 48.0, 300.0, 200.0
    width, height = left + plot_w + right, top + plot_h + bottom
    ticks = _nice_ticks(min(values), max(values))
    low, high = ticks[0], ticks[-1]
    x_low, x_high = math.log(points[0][0]), math.log(points[-1][0])

    def sx(rows: float) -> float:
        return left + plot_w * (math.log(rows) - x_low) / max(x_high - x_low, 1e-12)

    def sy(value: float) -> float:
        return top + plot_h * (high - value) / (high - low)

    error = "log-loss" if classification else "RMSE"
    parts = [_svg_open(width, height, "curve", f"Learning curve: {title}")]
    parts.append(_svg_text(left + plot_w / 2, 18, _shorten(title, 40), css_class="title"))
    for tick in ticks:
        parts.append(_svg_line(left, sy(tick), left + plot_w, sy(tick), "grid-line"))
        parts.append(_svg_text(left - 6, sy(tick) + 4, _fmt(tick), anchor="end"))
    for rows, _, _ in points:
        parts.append(_svg_text(sx(rows), top + plot_h + 15, _fmt(rows)))
    parts.append(f'<path d="M{left:.1f} {top:.1f}v{plot_h:.1f}h{plot_w:.1f}" class="axis"/>')
    parts.append(
        _svg_text(left + plot_w / 2, height - 8, "own training rows", css_class="axis-label")
    )
    parts.append(
        _svg_text(16, top + plot_h / 2, f"{error} on holdout", css_class="axis-label", rotate=True)
    )
    if federated is not None:
        parts.append(
            f'<path d="M{left:.1f} {sy(federated):.1f}h{plot_w:.1f}" stroke="{_SERIES[1].colour}"'
            ' stroke-dasharray="6 4" fill="none" stroke-width="2"/>'
        )
    for index, series in ((1, _SERIES[0]), (2, _SERIES[2])):
        line = [(rows, vals) for rows, *rest in points if (vals := rest[index - 1]) is not None]
        if not line:
            continue
        d = "M" + "L".join(f"{sx(r):.1f} {sy(v):.1f}" for r, v in line)
        parts.append(f'<path d="{d}" stroke="{series.colour}" fill="none" stroke-width="2"/>')
        for r, v in line:
            tooltip = html.escape(f"{series.label}, {r} rows: {error} {_fmt(v)}")
            parts.append(
                f'<circle cx="{sx(r):.1f}" cy="{sy(v):.1f}" r="3" fill="{series.colour}">'
                f"<title>{tooltip}</title></circle>"
            )
    parts.append(_legend_svg(_SERIES, left, 36))
    parts.append("</svg>")
    return "".join(parts)


def _curve_section(cities: Mapping[str, CityOutcome], classification: bool) -> str:
    """Return the "Learning curves" section, or "" when no city computed one."""
    plots = [
        svg
        for name, city in cities.items()
        if (svg := _curve_svg(name, city, classification)) is not None
    ]
    if not plots:
        return ""
    caption = _caption(
        "What a city gains the less data it has: each city trained its own model "
        "(local-only) and personalised the federated model on the first 50, 100, 200, … "
        "of its own training rows, and scored both on its holdout rows. The dashed "
        "line is this run's federated model, which does not depend on the subset."
    )
    return _section("Learning curves", caption, f'<div class="grid">{"".join(plots)}</div>')


def _model_section(report: Report, classification: bool) -> str:
    """Return the "Model" section: coefficients, intercept, target, settings."""
    model, target = report.model, report.federation.target
    rows = [
        [_text(name), _text(unit), _fmt(coef, 6)]
        for name, unit, coef in zip(model.features, model.units, model.coef, strict=True)
    ]
    intercept_unit = "log-odds" if classification else _text(target.unit)
    rows.append(["<em>intercept</em>", intercept_unit, _fmt(model.intercept, 6)])
    effect = "the change in log-odds" if classification else f"the change in {target.name}"
    parts = [
        f"<p>Target: <strong>{_text(target.name)}</strong> ({_text(target.unit)})</p>",
        _caption(
            f"Coefficients are in federation units: each is {effect} per one unit of the feature."
        ),
        _table(["Feature", "Unit", "Coefficient"], rows, numeric=frozenset({2})),
        "<h3>Inference</h3>",
        _inference_table(model),
        "<h3>Settings</h3>",
        _settings_table(report.federation, model),
    ]
    return _section("Model", *parts)


def _inference_table(model: ModelSection) -> str:
    """Standard errors, tests and 95 % intervals, or why the model has none."""
    inference = model.inference
    if inference is None:
        return _caption(f"No standard errors: {model.inference_note or 'not computed'}.")
    test = "t" if inference.distribution == "t" else "z"
    rows = [
        [
            _text(row.name),
            _fmt(row.estimate, 6),
            _fmt(row.std_error, 4),
            _fmt(row.statistic, 4),
            _fmt(row.p_value, 3),
            f"{_fmt(row.ci_low, 5)} … {_fmt(row.ci_high, 5)}",
        ]
        for row in inference.coefficients
    ]
    facts = [f"residual degrees of freedom {_fmt(inference.df_resid, 8)}"]
    if inference.r2 is not None:
        facts.append(f"R² {_fmt(inference.r2)}")
    if inference.adj_r2 is not None:
        facts.append(f"adjusted R² {_fmt(inference.adj_r2)}")
    if inference.rse is not None:
        facts.append(f"residual standard error {_fmt(inference.rse)}")
    how = (
        "ordinary least squares from the pooled statistics (equal to statsmodels OLS on "
        "the pooled rows)"
        if test == "t"
        else "Wald intervals from the pooled Hessian at the final weights (equal to "
        "statsmodels' binomial GLM when C is large)"
    )
    return _caption(f"{how}; " + ", ".join(facts) + ".") + _table(
        ["Coefficient", "Estimate", "Std. error", test, f"P>|{test}|", "95 % interval"],
        rows,
        numeric=frozenset({1, 2, 3, 4, 5}),
    )


def _settings_table(federation: FederationSpec, model: ModelSection) -> str:
    """Tabulate the federation settings and the fit status."""
    settings: list[tuple[str, str | float]] = [
        ("model", federation.model),
        ("algorithm", federation.algorithm),
    ]
    # Only what applies to this model: alpha is ridge's and Poisson's, C is logistic's.
    if federation.model in ("ridge", "poisson"):
        alpha = model.alpha if model.alpha is not None else federation.alpha
        if federation.alpha_cv:
            path = ", ".join(f"{a:g}: {score:.4g}" for a, score in model.alpha_path)
            settings.append(
                (
                    "alpha",
                    f"{alpha:g}, chosen by {federation.cv_folds}-fold cross-validation "
                    f"(mean R² per alpha: {path})",
                )
            )
        else:
            settings.append(("alpha", alpha))
    if federation.exposure is not None:
        settings.append(("exposure", f"{federation.exposure.name} [{federation.exposure.unit}]"))
    if federation.model == "logistic":
        settings.append(("C", federation.C))
    settings += [
        ("standardize", federation.standardize),
        ("holdout_fraction", federation.holdout_fraction),
        ("seed", federation.seed),
        ("min_cities", federation.min_cities),
        ("min_rows_per_city", federation.min_rows_per_city),
        ("missing", federation.missing),
        ("training rounds", model.rounds),
    ]
    if federation.newton or federation.algorithm == "fedavg":
        settings.append(("converged", model.converged))
    return _table(["Setting", "Value"], [[html.escape(k), _text(v)] for k, v in settings])


def _drop_reasons(reasons: Mapping[str, int]) -> str:
    """Render ``drop_reasons`` as a list of "reason: count", largest first."""
    if not reasons:
        return "none"
    ordered = sorted(reasons.items(), key=lambda kv: -kv[1])
    items = "".join(f"<li>{_text(reason)}: {_fmt(count)}</li>" for reason, count in ordered)
    return f'<ul class="reasons">{items}</ul>'


def _status_badge(status: Status) -> str:
    """Render a city's status as a coloured badge."""
    kind = status if status in ("ok", "refused") else "other"
    return f'<span class="status status-{kind}">{_text(status)}</span>'


def _fates(city: CityOutcome) -> str:
    """Render a city's fate per exchange, e.g. "1 moments ok · 2 newton failed"."""
    if not city.rounds:
        return "—"
    return " · ".join(_text(f"{f.round} {f.phase} {f.status}") for f in city.rounds)


def _cities_section(cities: Mapping[str, CityOutcome]) -> str:
    """Return the "Cities" section: one row per city with its row accounting."""
    withheld = _text("withheld by the city")
    rows = [
        [
            _text(name),
            _status_badge(city.status),
            *(
                [withheld] * 5
                if city.counts_withheld
                else [
                    _fmt(city.rows_used),
                    _fmt(city.rows_train),
                    _fmt(city.rows_holdout),
                    _fmt(city.rows_dropped),
                    _drop_reasons(city.drop_reasons),
                ]
            ),
            _fates(city),
            _text(city.reason),
        ]
        for name, city in cities.items()
    ]
    if not rows:
        return _section("Cities", _caption("The report lists no cities."))
    header = [
        "City",
        "Status",
        "Rows used",
        "Train",
        "Holdout",
        "Dropped",
        "Drop reasons",
        "Exchanges",
        "Reason",
    ]
    return _section("Cities", _table(header, rows, numeric=frozenset({2, 3, 4, 5})))


def _pooled_section(check: PooledCheck | None) -> str:
    """Return the "Pooled check" section, or "" when the report has none."""
    if check is None:
        return ""
    if check.private:
        verdict = (
            '<p class="verdict pass">Differentially private: the model differs from the '
            "pooled reference fit by its noise, by design (its accuracy cost is in the "
            "Privacy section).</p>"
        )
    elif check.within_tolerance:
        verdict = (
            '<p class="verdict pass">Within tolerance: the federated model '
            "reproduces the pooled reference fit.</p>"
        )
    else:
        verdict = (
            '<p class="verdict fail">Not within tolerance: the federated model '
            "differs from the pooled reference fit.</p>"
        )
    rows = [
        ["Max |prediction difference|", _fmt(check.max_abs_prediction_diff)],
        ["Relative to std(y)", _fmt(check.relative_to_std_y)],
        ["Rows", _fmt(check.rows)],
        ["Reference", _text(check.reference)],
    ]
    caption = _caption(
        "The federated model compared with a reference model fitted on all "
        "cities' rows pooled in one place (done only in simulation)."
    )
    return _section("Pooled check", caption, verdict, _table(["Quantity", "Value"], rows))


def _privacy_section(report: Report) -> str:
    """Return the "Privacy" section (secure aggregation, ε per city, the accuracy cost)."""
    model = report.model
    if not model.secure_aggregation and model.epsilon <= 0:
        return ""
    lines = []
    if model.secure_aggregation:
        lines.append(
            "Secure aggregation: the coordinator received only masked statistics and "
            "learned their sum over the cities, nothing of any one city."
        )
    if model.epsilon > 0:
        lines.append(
            f"Differential privacy: ε = {model.epsilon:g}, δ = {model.delta:g} per run, "
            "noise added by each city before its statistics left it, each city's budget "
            "kept in its own ledger."
        )
    parts = [_caption(" ".join(lines))]
    check = report.pooled_check
    cost = check.cost if check is not None else {}
    rows = []
    for name, city in report.cities.items():
        if city.epsilon_run <= 0 and name not in cost:
            continue
        private, plain = cost.get(name, (None, None))
        rows.append(
            [
                _text(name),
                _fmt(city.epsilon_run if city.epsilon_run > 0 else None),
                _fmt(city.epsilon_total if city.epsilon_total > 0 else None),
                _fmt(private),
                _fmt(plain),
            ]
        )
    if rows:
        metric = check.cost_metric if check is not None and check.cost_metric else "score"
        header = [
            "City",
            "ε this run",
            "ε all runs",
            f"Private model {metric}",
            f"Non-private {metric}",
        ]
        parts.append(_table(header, rows, numeric=frozenset({1, 2, 3, 4})))
        if cost:
            parts.append(
                _caption(
                    "The accuracy cost of privacy: each city's holdout rows scored by the "
                    "private model and by the same model fitted without noise on the pooled "
                    "rows (simulation only; lower is better)."
                )
            )
    return _section("Privacy", *parts)


def _footer(report: Report) -> str:
    """Return the footer with the CityFed version and wall time."""
    parts = [f"CityFed {_text(report.cityfed_version)}"]
    if math.isfinite(report.timing.wall_seconds):
        parts.append(f"wall time {_fmt(report.timing.wall_seconds)} s")
    return f"<footer>{' · '.join(parts)}</footer>"


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def render_html(report: Report) -> str:
    """Render a run's report as one self-contained HTML page.

    Parameters
    ----------
    report : Report
        The report. Undefined scores show as "n/a", a report without a pooled
        check omits its section, refused cities show their reason.

    Returns
    -------
    str
        A complete HTML document with inline CSS and inline SVG plots; it
        loads nothing from the network and needs no JavaScript.
    """
    classification = report.federation.task == "classification"
    body = "".join(
        [
            _header(report),
            _benefit_section(report.cities, classification),
            _curve_section(report.cities, classification),
            _calibration_section(report, classification),
            _model_section(report, classification),
            _cities_section(report.cities),
            _pooled_section(report.pooled_check),
            _privacy_section(report),
            _footer(report),
        ]
    )
    title = f"CityFed report — {_text(report.federation.name)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
