"""Readable terminal tables of a report (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cityfed.report.types import Report, ScoreName, holdout_models, score_of
from cityfed.report.verdict import verdict

__all__ = ["print_summary"]

#: Column labels of the three models, in the order of ``holdout_models``.
_MODELS = ("local", "fed.", "pers.")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _benefit_table(report: Report) -> Table:
    classify = report.model.task == "classification"
    keys: tuple[ScoreName, ScoreName] = ("roc_auc", "log_loss") if classify else ("r2", "rmse")
    labels = ("AUC", "log-loss") if classify else ("R²", "RMSE")
    table = Table(
        title="Mutual benefit on each city's own holdout rows "
        "(local only / federated / personalised)",
        title_justify="left",
    )
    table.add_column("city")
    table.add_column("rows\nused", justify="right")
    table.add_column("held\nout", justify="right")
    for label in labels:
        for model in _MODELS:
            table.add_column(f"{label}\n{model}", justify="right")
    for name, city in report.cities.items():
        if city.status != "ok":
            table.add_row(escape(name), _fmt(city.rows_used), "", f"[yellow]{city.status}[/]")
            continue
        scores = holdout_models(city)
        cells = [_fmt(score_of(s, key)) for key in keys for s in scores]
        table.add_row(escape(name), _fmt(city.rows_used), _fmt(city.rows_holdout), *cells)
    return table


def print_summary(report: Report, console: Console) -> None:
    """Print the model, the per-city benefit and the pooled check.

    Parameters
    ----------
    report : Report
        The run's report.
    console : Console
        Where to print.
    """
    model = report.model
    console.print(
        f"[bold]{escape(report.federation.name)}[/]: "
        f"{model.kind} ({model.algorithm}) on "
        f"{len(model.cities)} cities, {model.training_rows} training rows, "
        f"{model.rounds} training round(s)"
        + ("" if model.converged else " [red](not converged)[/]")
    )
    coef = Table(title="Model in federation units", title_justify="left")
    coef.add_column("feature")
    coef.add_column("unit")
    coef.add_column("coefficient", justify="right")
    for name, unit, value in zip(model.features, model.units, model.coef, strict=True):
        coef.add_row(escape(name), escape(unit), f"{value:.6g}")
    coef.add_row("(intercept)", "", f"{model.intercept:.6g}")
    console.print(coef)
    console.print(_benefit_table(report))
    classify = model.task == "classification"
    for name, city in report.cities.items():
        if city.status == "ok":
            console.print(f"  [bold]{escape(name)}[/]: {escape(verdict(city, classify))}")
    for name, city in report.cities.items():
        if city.status != "ok" or city.reason:
            console.print(f"  [yellow]{escape(name)}[/]: {escape(city.reason or city.status)}")
        elif city.drop_reasons:
            reasons = ", ".join(f"{k}: {v}" for k, v in city.drop_reasons.items())
            console.print(escape(f"  {name} dropped {city.rows_dropped} rows ({reasons})"))
    if model.secure_aggregation:
        console.print("Secure aggregation: the coordinator learned only sums over the cities")
    if model.epsilon > 0:
        spent = ", ".join(
            f"{escape(name)} {city.epsilon_run:.3g} (all runs {city.epsilon_total:.3g})"
            for name, city in report.cities.items()
            if city.epsilon_run > 0
        )
        console.print(
            f"Differential privacy: ε = {model.epsilon:g}, δ = {model.delta:g}; ε spent: {spent}"
        )
    check = report.pooled_check
    if check is not None and check.cost:
        costs = "; ".join(
            f"{escape(name)} {ours:.4g} vs {theirs:.4g}"
            for name, (ours, theirs) in check.cost.items()
        )
        console.print(f"Accuracy cost ({check.cost_metric}, private vs non-private): {costs}")
    if check is not None:
        outcome = (
            "[green]equal within tolerance[/]"
            if check.within_tolerance and not check.private
            else "[yellow]differs by its noise (private)[/]"
            if check.private
            else "[red]OUTSIDE tolerance[/]"
        )
        relative = check.relative_to_std_y
        console.print(
            f"Pooled check against {escape(check.reference)} on {check.rows} rows: "
            f"max |{check.compared} difference| = {check.max_abs_prediction_diff:.3g}"
            + (f" ({relative:.3g} × std(y))" if relative is not None else "")
            + f" — {outcome}"
        )
