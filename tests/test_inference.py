"""Coefficient inference from pooled statistics equals statsmodels on the pooled rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityfed.core.inference import ols_inference, wald_inference
from cityfed.core.linear import fit_linear
from cityfed.core.logistic import fit_logistic_rows, logistic_terms
from cityfed.core.poisson import fit_poisson_rows, poisson_terms
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is a test dependency")


def _cities(rng: np.random.Generator, d: int, offset: float) -> list[np.ndarray]:
    parts = []
    for k, n in enumerate(rng.integers(15, 120, size=3)):
        X = rng.normal(offset + k, 1.0 + k, size=(int(n), d))
        parts.append(X)
    return parts


def _assert_close(ours: np.ndarray, theirs: np.ndarray, rtol: float = 1e-6) -> None:
    """Within ``rtol`` of each value, or 1e-7 of the largest one for values near zero.

    With features at 1e8 ± 1 the data hold ~8 digits of their spread, so a
    coefficient 300 times smaller than the largest cannot agree to 1e-6 of itself
    between two correct solvers (seen: 1.2e-8 apart at -0.0117).
    """
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-7 * np.max(np.abs(theirs)))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    d=st.integers(1, 5),
    offset=st.sampled_from([0.0, 10.0, 1e4, 1e8]),
    noise=st.sampled_from([0.01, 1.0, 30.0]),
)
def test_ols_inference_equals_statsmodels(seed: int, d: int, offset: float, noise: float) -> None:
    """At offsets where statsmodels' own design matrix is ill-conditioned (1e8) it is
    given centred features (the same slopes and slope errors); the intercept then
    follows from the pooled means, which the other offsets check against it directly.
    """
    rng = np.random.default_rng(seed)
    Xs = _cities(rng, d, offset)
    coef = rng.normal(0.0, 2.0, d)
    ys = [X @ coef + 5.0 + rng.normal(0.0, noise, X.shape[0]) for X in Xs]
    total = Moments.empty(d + 1)
    for X, y in zip(Xs, ys, strict=True):
        total = total.merge(Moments.of(np.column_stack([X, y])))
    fit = fit_linear(total, penalty=0.0, standardize=True)
    ours = ols_inference(total, fit.scaler, fit.coef_scaled, fit.intercept_scaled)
    X, y = np.vstack(Xs), np.concatenate(ys)
    far = offset > 1e6
    ref = sm.OLS(y, sm.add_constant(X - X.mean(axis=0) if far else X)).fit()
    part = slice(1, None) if far else slice(None)
    _assert_close(ours.estimate[part], ref.params[part])
    _assert_close(ours.std_error[part], ref.bse[part])
    _assert_close(ours.statistic[part], ref.tvalues[part])
    # A two-sided p-value moves by about t^2 times the relative change of t: at 1e8
    # offsets (8 digits of spread left in the data) t agrees to ~1e-8 of itself, so
    # p to ~t^2 * 1e-8 (seen: 1.7e-6 relative at t = 5.1, p = 3.5e-7).
    rtol_p = 1e-6 * (np.maximum(1.0, np.asarray(ref.tvalues[part]) ** 2) if far else 1.0)
    gap = np.abs(ours.p_value[part] - ref.pvalues[part])
    assert np.all(gap <= 1e-14 + rtol_p * np.abs(ref.pvalues[part])), (ours.p_value, ref.pvalues)
    low, high = ref.conf_int(alpha=0.05).T
    _assert_close(ours.ci_low[part], low[part])
    _assert_close(ours.ci_high[part], high[part])
    if far:
        # b0 = mean(y) - mean(x) . beta from the centred reference. At 1e8 the plain
        # intercept amplifies the slopes' last digits by 1e8, so the estimates agree
        # to a tiny fraction of their standard error, and the standard errors closely.
        m = X.mean(axis=0)
        b0 = ref.params[0] - m @ ref.params[1:]
        se_b0 = np.sqrt(ref.bse[0] ** 2 + m @ ref.cov_params()[1:, 1:] @ m)
        assert abs(ours.estimate[0] - b0) <= 1e-4 * se_b0
        assert ours.std_error[0] == pytest.approx(se_b0, rel=1e-6)
    # R² is a share in [0, 1]: near 0 (noise 30 against a small slope) the pooled
    # reference's own rounding (its residuals of values at 1e8) is what differs.
    assert ours.r2 == pytest.approx(ref.rsquared, rel=1e-6, abs=1e-8)
    assert ours.adj_r2 == pytest.approx(ref.rsquared_adj, rel=1e-6, abs=1e-8)
    assert ours.rse == pytest.approx(np.sqrt(ref.scale), rel=1e-6)
    assert ours.df_resid == ref.df_resid


def test_ols_inference_refuses_collinear_features_and_too_few_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    rows = np.column_stack([x, 2 * x, x + rng.normal(size=40)])
    total = Moments.of(rows)
    fit = fit_linear(total, penalty=0.0, standardize=True)
    with pytest.raises(ValueError, match="collinear"):
        ols_inference(total, fit.scaler, fit.coef_scaled, fit.intercept_scaled)
    few = Moments.of(rows[:3])
    fit = fit_linear(few, penalty=0.0, standardize=True)
    with pytest.raises(ValueError, match="no degrees of freedom"):
        ols_inference(few, fit.scaler, fit.coef_scaled, fit.intercept_scaled)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(1, 4), offset=st.sampled_from([0.0, 50.0]))
def test_wald_inference_equals_statsmodels_glm(seed: int, d: int, offset: float) -> None:
    rng = np.random.default_rng(seed)
    X = np.vstack(_cities(rng, d, offset))
    coef = rng.normal(0.0, 0.7, d)
    t = (X - X.mean(axis=0)) @ coef - 0.3
    y = (rng.random(X.shape[0]) < 1.0 / (1.0 + np.exp(-t))).astype(np.float64)
    if y.min() == y.max():
        return
    scaler = Scaler.from_moments(Moments.of(np.column_stack([X, y])), d, True)
    solver = fit_logistic_rows(scaler.design(X), y, 1e12, tolerance=1e-12)
    hessian = logistic_terms(scaler.design(X), y, solver.w).hess
    ours = wald_inference(scaler, solver.w, hessian, X.shape[0])
    try:
        ref = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit(tol=1e-12)
    except Exception:  # statsmodels' own failure on separable draws
        return
    if not np.all(np.isfinite(ref.bse)) or np.max(np.abs(ref.params)) > 1e3:
        return  # (quasi-)separation: no finite MLE for either tool
    _assert_close(ours.estimate, ref.params, rtol=1e-6)
    _assert_close(ours.std_error, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(ours.p_value, ref.pvalues, rtol=1e-5, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    d=st.integers(1, 4),
    offset=st.sampled_from([0.0, 50.0, 1e4]),
    exposure=st.booleans(),
)
def test_poisson_wald_inference_equals_statsmodels_glm(
    seed: int, d: int, offset: float, exposure: bool
) -> None:
    rng = np.random.default_rng(seed)
    X = np.vstack(_cities(rng, d, offset))
    coef = rng.normal(0.0, 0.4, d) / np.std(X, axis=0)
    e = rng.uniform(0.1, 10.0, X.shape[0]) if exposure else np.ones(X.shape[0])
    y = rng.poisson(e * np.exp(0.5 + (X - X.mean(axis=0)) @ coef)).astype(np.float64)
    if y.max() == 0.0:
        return
    scaler = Scaler.from_moments(Moments.of(np.column_stack([X, y])), d, True)
    offsets = np.log(e) if exposure else None
    solver = fit_poisson_rows(scaler.design(X), y, 0.0, offset=offsets, tolerance=1e-12)
    hessian = poisson_terms(scaler.design(X), y, solver.w, offsets).hess
    ours = wald_inference(scaler, solver.w, hessian, X.shape[0])
    ref = sm.GLM(
        y, sm.add_constant(X), family=sm.families.Poisson(), exposure=e if exposure else None
    ).fit(tol=1e-13)
    _assert_close(ours.estimate, ref.params, rtol=1e-6)
    _assert_close(ours.std_error, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(ours.p_value, ref.pvalues, rtol=1e-5, atol=1e-12)
    low, high = ref.conf_int(alpha=0.05).T
    _assert_close(ours.ci_low, low, rtol=1e-6)
    _assert_close(ours.ci_high, high, rtol=1e-6)


@pytest.mark.parametrize("model", ["linear", "logistic"])
def test_a_federated_run_publishes_statsmodels_inference(tmp_path: Path, model: str) -> None:
    from cityfed_server.publish import publish
    from cityfed_server.training import train

    from cityfed import load_model
    from cityfed.config.spec import load_federation
    from tests.synthetic import local_exchange, write_federation

    task = "classification" if model == "logistic" else "regression"
    files = write_federation(tmp_path / "fed", model=model, task=task, C=1e12)
    fed = load_federation(files.federation)
    publish(fed, train(fed, local_exchange(files.cities), run_id="inf"), tmp_path / "out")
    loaded = load_model(tmp_path / "out" / "model.pb")
    inference = loaded.model_.inference
    assert inference is not None
    X = sm.add_constant(files.X_pooled)
    if model == "linear":
        ref = sm.OLS(files.y_pooled, X).fit()
        assert inference.r2 == pytest.approx(ref.rsquared, rel=1e-9)
    else:
        ref = sm.GLM(files.y_pooled, X, family=sm.families.Binomial()).fit(tol=1e-12)
    _assert_close(inference.estimate, ref.params)
    _assert_close(inference.std_error, ref.bse)
    np.testing.assert_allclose(inference.p_value, ref.pvalues, rtol=1e-5, atol=1e-300)
    text = loaded.summary()
    for name in ("(intercept)", "dewpoint", "pressure", "wind", "humidity", "std err"):
        assert name in text


def test_ridge_says_why_it_has_no_standard_errors(tmp_path: Path) -> None:
    from cityfed_server.publish import publish
    from cityfed_server.training import train

    from cityfed import CityFedRegressor, load_model
    from cityfed.config.spec import load_federation
    from cityfed.errors import CityFedError
    from tests.synthetic import local_exchange, write_federation

    files = write_federation(tmp_path / "fed", model="ridge")
    fed = load_federation(files.federation)
    publish(fed, train(fed, local_exchange(files.cities), run_id="r"), tmp_path / "out")
    loaded = load_model(tmp_path / "out" / "model.pb")
    assert loaded.model_.inference is None
    assert "no standard errors: ridge: the penalty biases the estimates" in loaded.summary()
    with pytest.raises(CityFedError, match="only a published model"):
        CityFedRegressor().fit(files.X_pooled, files.y_pooled).summary()


@pytest.mark.parametrize(("model", "expected"), [("linear", "P&gt;|t|"), ("ridge", "No standard")])
def test_the_report_carries_the_inference_table(tmp_path: Path, model: str, expected: str) -> None:
    import json

    from cityfed_server.training import train

    from cityfed.config.spec import load_federation
    from cityfed.report.build import build_report, report_from_json, report_json_text
    from cityfed.report.html import render_html
    from tests.synthetic import local_exchange, write_federation

    files = write_federation(tmp_path / "fed", model=model)
    fed = load_federation(files.federation)
    report = build_report(fed, train(fed, local_exchange(files.cities), run_id="rep"))
    data = json.loads(report_json_text(report))
    again = report_from_json(data, "report.json")
    assert again.model == report.model
    page = render_html(report)
    assert "<h3>Inference</h3>" in page and expected in page
    if model == "linear":
        rows = data["model"]["inference"]["coefficients"]
        names = ["(intercept)", "dewpoint", "pressure", "wind", "humidity"]
        assert [r["name"] for r in rows] == names
        assert data["model"]["inference_note"] == ""
    else:
        assert data["model"]["inference"] is None
        assert data["model"]["inference_note"].startswith("ridge: the penalty biases")
