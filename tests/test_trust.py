"""Results that cannot silently go wrong: centred predictions, fixed merge order, loud failures.

Each test attacks one way a wrong or unstable model could have been published as
a success: a feature far from zero (an intercept near -1e12 cancels digits),
replies in another order (floating-point sums depend on it), one class only,
a pooled check that fails, an output folder that cannot be written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cityfed_server.training import train
from hypothesis import given, settings
from hypothesis import strategies as st

import cityfed
from cityfed.config.spec import load_federation
from cityfed.core.linear import fit_linear
from cityfed.core.stats import Moments
from cityfed.errors import FederationError, SpecError
from cityfed.federation.protocol import CityReply
from cityfed.model.record import FederatedModel, predict_centred
from cityfed.sim.simulate import prepare
from tests.synthetic import AlteredExchange, local_exchange, write_federation
from tests.test_simulate_cli import cityfed as run_cli

L = np.longdouble


def _exact_ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares predictions in 80-bit long double on exactly centred columns."""
    XL, yL = X.astype(L), y.astype(L)
    first = XL.mean(axis=0)
    # The second pass's correction stays apart: added to ``first`` it would be
    # rounded to the ulp of the offset again, even in long double.
    Z = (XL - first) - (XL - first).mean(axis=0)
    ym = yL.mean()
    A, b = Z.T @ Z, Z.T @ (yL - ym)
    # Gaussian elimination in long double (numpy's solvers stop at float64).
    d = A.shape[0]
    M = np.concatenate([A, b[:, None]], axis=1)
    for i in range(d):
        M[i] = M[i] / M[i, i]
        for j in range(d):
            if j != i:
                M[j] = M[j] - M[j, i] * M[i]
    return np.asarray(Z @ M[:, d] + ym)


@settings(max_examples=25, deadline=None)
@given(
    offset=st.sampled_from([1e6, 1e9, -3e9, 1e12]),
    spread=st.sampled_from([1e-1, 1.0, 10.0]),
    seed=st.integers(0, 2**16),
)
def test_predictions_keep_their_digits_when_a_feature_is_far_from_zero(
    offset: float, spread: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    parts = []
    for k, n in enumerate((40, 75, 120)):
        x1 = offset + rng.normal(0.0, spread, n)
        x2 = rng.normal(3.0 * k, 2.0, n)
        y = 1e3 * (x1 - offset) / spread + 0.5 * x2 + rng.normal(0.0, 0.1, n)
        parts.append(np.column_stack([x1, x2, y]))
    total = Moments.empty(3)
    for part in parts:
        total = total.merge(Moments.of(part))
    rows = np.vstack(parts)
    X, y = rows[:, :2], rows[:, 2]
    fit = fit_linear(total, penalty=0.0, standardize=False)
    truth = _exact_ols(X, y)
    centred = predict_centred(fit.scaler, fit.coef_scaled, fit.intercept_scaled, X)
    assert np.max(np.abs(centred - truth)) <= 1e-9 * np.std(y)
    # The plain form is still there for reading, and is the same model.
    plain = X @ fit.coef + fit.intercept
    np.testing.assert_allclose(plain, centred, rtol=0, atol=1e-3 * abs(offset) * 1e-6 + 1e-6)


def test_estimator_and_artifact_predict_from_the_centre(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    X = np.column_stack([1e9 + rng.normal(0.0, 1.0, 400), rng.normal(0.0, 1.0, 400)])
    y = 250.0 * (X[:, 0] - 1e9) + X[:, 1] + rng.normal(0.0, 0.01, 400)
    model = cityfed.CityFedRegressor(model="linear", standardize=False).fit(X, y)
    assert model.intercept_ < -1e11  # the published plain form: a huge intercept
    truth = _exact_ols(X, y)
    assert np.max(np.abs(model.predict(X) - truth)) <= 1e-9 * np.std(y)
    assert np.max(np.abs(X @ model.coef_ + model.intercept_ - truth)) > 1e-8 * np.std(y)


@pytest.mark.parametrize("model", ["ridge", "logistic"])
def test_the_same_data_gives_the_same_bits_whatever_the_arrival_order(
    tmp_path: Path, model: str
) -> None:
    task = "classification" if model == "logistic" else "regression"
    files = write_federation(tmp_path, task=task, model=model, sizes=(300, 120, 500, 77))
    fed = load_federation(files.federation)
    first = train(fed, local_exchange(files.cities), run_id="a").model
    # The same cities, their replies arriving in the opposite order.
    reversed_order = AlteredExchange(local_exchange(files.cities), lambda r: r[::-1])
    second = train(fed, reversed_order, run_id="b").model
    assert first.coef_scaled.tobytes() == second.coef_scaled.tobytes()
    assert first.intercept_scaled == second.intercept_scaled
    assert first.scaler.mean.tobytes() == second.scaler.mean.tobytes()
    assert first.scaler.scale.tobytes() == second.scaler.scale.tobytes()
    # The whole model.pb, apart from the run's id and time.
    from dataclasses import replace as with_fields

    from cityfed.model.proto import model_to_proto

    def content(m: FederatedModel) -> bytes:
        fixed = with_fields(m, run_id="", created_at="")
        return model_to_proto(fixed).SerializeToString(deterministic=True)

    assert content(first) == content(second)


def _one_class(root: Path) -> list[Path]:
    files = write_federation(root, task="classification", model="logistic", sizes=(60, 80))
    for k in range(2):
        # Every city's label (its CSV's last column) becomes 0.
        csv = root / f"city_{k}.csv"
        header, *rows = csv.read_text(encoding="utf-8-sig").splitlines()
        rows = [row.rsplit(",", 1)[0] + ",0" for row in rows]
        csv.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return [files.federation, *files.cities]


def test_one_class_is_refused_before_the_engine_naming_each_citys_counts(tmp_path: Path) -> None:
    federation, *cities = _one_class(tmp_path)
    with pytest.raises(SpecError) as caught:
        prepare(federation, cities)
    message = str(caught.value)
    assert message.startswith("federation.toml: every pooled training label is 0 (")
    assert "city0: 60 of class 0, 0 of class 1; city1: 80 of class 0, 0 of class 1" in message
    assert "\n" not in message


def test_one_class_is_refused_before_any_newton_round(tmp_path: Path) -> None:
    federation, *cities = _one_class(tmp_path)
    fed = load_federation(federation)
    events: list[str] = []
    with pytest.raises(FederationError, match="every pooled training label is 0"):
        train(fed, local_exchange(cities), run_id="x", progress=lambda k, m, **_: events.append(m))
    assert not any("Newton" in e for e in events), events


def test_too_few_training_rows_after_the_holdout_split_are_found_before_the_engine(
    tmp_path: Path,
) -> None:
    files = write_federation(
        tmp_path, sizes=(300, 40, 500), holdout_fraction=0.5, min_rows_per_city=25
    )
    # One small city leaves the run (the others go on) ...
    plan = prepare(files.federation, files.cities)
    assert list(plan.refusals) == ["city1"]
    assert plan.refusals["city1"].startswith("only 20 usable training rows")
    # ... but a run that cannot have min_cities fails before the engine starts.
    text = files.federation.read_text().replace("min_cities = 2", "min_cities = 3")
    for spec in (files.federation, tmp_path / "agreed-federation.toml"):
        spec.write_text(text)
    with pytest.raises(SpecError) as caught:
        prepare(files.federation, files.cities)
    message = str(caught.value)
    assert message.startswith("only 2 of 3 cities can take part; the federation needs min_cities")
    assert "city1: only 20 usable training rows" in message and "min_rows_per_city = 25" in message


def test_a_city_given_twice_is_named_as_given_twice(tmp_path: Path) -> None:
    files = write_federation(tmp_path)
    with pytest.raises(SpecError, match=r"^simulate: city_1\.toml is given twice"):
        prepare(files.federation, [*files.cities, files.cities[1]])


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_unusable_out_is_refused_before_anything_runs(tmp_path: Path, where: str) -> None:
    files = write_federation(tmp_path / "fed")
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    out = blocker if where == "file" else blocker / "models" / "run1"
    proc = run_cli("simulate", files.federation, *files.cities, "--out", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --out {out}: ") and "is a file, not a folder" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert blocker.read_text() == "not a folder\n"


def test_failed_pooled_check_is_not_published_as_a_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityfed.report import pooled
    from cityfed.sim import simulate as sim

    files = write_federation(tmp_path / "fed")
    plan = prepare(files.federation, files.cities)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pb").write_bytes(b"an earlier run's model")
    real = pooled.pooled_check

    def strict(model: object, cities: object) -> object:
        check = real(model, cities)  # type: ignore[arg-type]
        return type(check)(**{**check.__dict__, "within_tolerance": False})

    monkeypatch.setattr(sim, "pooled_check", strict)
    with pytest.raises(sim.PooledCheckError) as caught:
        sim.simulate(plan, out)
    message = str(caught.value)
    assert message.startswith("pooled check failed: the federated model's prediction differs")
    assert "model.rejected.pb" in message and "\n" not in message
    assert not (out / "model.pb").exists()
    assert (out / "model.rejected.pb").is_file()
    report = cityfed.load_model(out / "model.rejected.pb")  # kept for inspection
    assert report.coef_.shape == (4,)
    text = (out / "report.json").read_text()
    assert '"within_tolerance": false' in text
    assert "Not within tolerance" in (out / "report.html").read_text()


def test_estimators_show_every_setting_and_log_probabilities() -> None:
    assert repr(cityfed.CityFedRegressor()) == (
        "CityFedRegressor(alpha=1.0, model='ridge', standardize=True)"
    )
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + rng.normal(0, 0.5, 200) > 0).astype(int)
    clf = cityfed.CityFedClassifier(C=0.5).fit(X, y)
    assert repr(clf) == "CityFedClassifier(C=0.5, standardize=True)"
    far = np.array([[60.0, 0.0], [-60.0, 0.0]])
    log_p = clf.predict_log_proba(far)
    assert np.all(np.isfinite(log_p))  # log(predict_proba) would give -inf here
    np.testing.assert_allclose(np.logaddexp(log_p[:, 0], log_p[:, 1]), 0.0, atol=1e-15)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(clf.predict_proba(X)), rtol=1e-12)


def test_version_option() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"cityfed {cityfed.__version__} (flwr ")


def test_the_low_part_of_the_mean_crosses_the_wire_and_a_malformed_one_is_refused() -> None:
    from cityfed.federation.outcome import CityOutcome
    from cityfed.flower.records import decode_reply, encode_reply

    rows = np.column_stack([1e9 + np.linspace(0.0, 1e-3, 7), np.arange(7.0)])
    moments = Moments.of(rows)
    assert np.any(moments.low != 0.0)
    outcome = CityOutcome(city="A", status="ok", rows_read=7, rows_train=7)
    back = decode_reply(encode_reply(CityReply(outcome, moments=moments))).moments
    assert back is not None
    np.testing.assert_array_equal(back.low, moments.low)
    content = encode_reply(CityReply(outcome, moments=moments))
    from flwr.app import Array

    content["stats"]["mean_low"] = Array(np.zeros(3))
    with pytest.raises(ValueError, match="mean_low has shape"):
        decode_reply(content)


def _poisoned(replies: list[tuple[int, CityReply]]) -> list[tuple[int, CityReply]]:
    """city1's statistics arrive with an infinity in them (an overflow, or an attack)."""
    altered = []
    for node, reply in replies:
        if reply.city == "city1" and reply.moments is not None:
            scatter = reply.moments.scatter.copy()
            scatter[0, 0] = np.inf
            reply = CityReply(
                reply.outcome, moments=Moments(reply.moments.n, reply.moments.mean, scatter)
            )
        altered.append((node, reply))
    return altered


def test_non_finite_statistics_leave_the_run_instead_of_poisoning_it(tmp_path: Path) -> None:
    files = write_federation(tmp_path, sizes=(300, 120, 500))
    fed = load_federation(files.federation)
    result = train(fed, AlteredExchange(local_exchange(files.cities), _poisoned), run_id="p")
    assert result.model.cities == ("city0", "city2")
    assert result.cities["city1"].reason == "sent malformed statistics"
    assert np.isfinite(result.model.coef_scaled).all()
