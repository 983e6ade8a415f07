"""A published model's coefficient table as statsmodels prints it: ``model.summary()``."""

from __future__ import annotations

from cityfed.model.record import FederatedModel

__all__ = ["summary_text"]


def _num(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if value == 0.0 or 1e-4 <= abs(value) < 1e6:
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"
    return f"{value:.3e}"


def summary_text(model: FederatedModel) -> str:
    """The fit, its coefficients with standard errors, tests and 95 % intervals.

    Parameters
    ----------
    model : FederatedModel
        A published model.

    Returns
    -------
    str
        A plain-text table; without inference (ridge, FedAvg, a collinear fit)
        the coefficients and the reason why there are no standard errors.
    """
    lines = [
        f"CityFed {model.kind} ({model.algorithm}) of {model.target.name} "
        f"[{model.target.unit}] — federation {model.federation or '?'}, run "
        f"{model.run_id or '?'}",
        f"rows: {model.training_rows:,}   cities: {', '.join(model.cities) or '?'}   "
        f"training rounds: {model.rounds}",
    ]
    names = ["(intercept)", *model.feature_names]
    inference = model.inference
    if inference is None:
        lines.append(f"no standard errors: {model.inference_note or 'not computed'}")
        lines.append(f"{'':<16}{'coef':>12}")
        values = [model.intercept, *model.coef.tolist()]
        lines += [f"{name:<16}{_num(v):>12}" for name, v in zip(names, values, strict=True)]
        return "\n".join(lines)
    fit = [f"df_resid: {inference.df_resid:,.0f}"]
    if inference.r2 is not None and inference.adj_r2 is not None:
        fit += [f"R²: {inference.r2:.4f}", f"adj. R²: {inference.adj_r2:.4f}"]
    if inference.rse is not None:
        fit.append(f"residual std. error: {_num(inference.rse)} {model.target.unit}")
    lines.append("   ".join(fit))
    test = "t" if inference.distribution == "t" else "z"
    lines.append(
        f"{'':<16}{'coef':>12}{'std err':>12}{test:>10}{f'P>|{test}|':>10}"
        f"{'[0.025':>12}{'0.975]':>12}"
    )
    rows = inference.rows(names)
    for name, est, se, stat, p, low, high in rows:
        lines.append(
            f"{name:<16}{_num(est):>12}{_num(se):>12}{stat:>10.3f}{p:>10.3g}"
            f"{_num(low):>12}{_num(high):>12}"
        )
    if model.kind == "logistic" and model.C < 1e8:
        lines.append(
            f"(C = {model.C:g}: Wald intervals around estimates shrunk by the penalty; "
            "a large C gives statsmodels' unpenalised GLM)"
        )
    if model.kind == "poisson":
        link = "log link" + (f", offset log({model.exposure.name})" if model.exposure else "")
        lines.append(f"(Poisson, {link}: exp(coef) is the rate ratio of one unit more)")
        if model.alpha > 0.0:
            lines.append(
                f"(alpha = {model.alpha:g}: Wald intervals around estimates shrunk by the "
                "penalty; alpha = 0 gives statsmodels' unpenalised GLM)"
            )
    return "\n".join(lines)
