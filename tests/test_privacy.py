"""Differential privacy: the noise is what the accountant says, and each city holds its budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cityfed_client.handlers import responder
from cityfed_client.privacy import epsilon_of, noise_multiplier
from cityfed_server.training import train
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import load_federation, parse_federation
from cityfed.core.privacy import gram_sensitivity, noisy_gram
from cityfed.errors import FederationError, SpecError
from cityfed.federation.protocol import Instruction
from cityfed.flower.exchange import LocalExchange

from .synthetic import write_federation

_BOUNDS = "dewpoint = [-20, 40]\npressure = [980, 1040]\nwind = [0, 20]\nhumidity = [0, 100]\n"


def _private(
    root: Path,
    *,
    model: str = "ridge",
    epsilon: float = 1.0,
    secure: bool = False,
    policy: str = "",
    sizes: tuple[int, ...] = (600, 400, 800),
    min_cities: int = 2,
) -> tuple[Path, list[Path], np.ndarray, np.ndarray]:
    task = "classification" if model == "logistic" else "regression"
    bounds = _BOUNDS + ("" if task == "classification" else "load = [0, 400]\n")
    extra = (
        f"\n[privacy]\nsecure_aggregation = {str(secure).lower()}\nepsilon = {epsilon}\n"
        f"delta = 1e-6\n\n[privacy.bounds]\n{bounds}"
    )
    fed = write_federation(
        root,
        task=task,
        model=model,
        sizes=sizes,
        extra=extra,
        min_cities=min_cities,
        policy=f'agreed = ["agreed-federation.toml"]\nmin_rows = 10\n{policy}',
    )
    return fed.federation, fed.cities, fed.X_pooled, fed.y_pooled


def _spec(privacy: str, model: str = "ridge") -> str:
    return (
        f'[federation]\nname = "p"\nmodel = "{model}"\n\n[privacy]\n{privacy}\n'
        '[target]\nname = "y"\n\n[[features]]\nname = "a"\n\n[[features]]\nname = "b"\n'
        'levels = ["x", "y"]\n'
    )


def _parse(text: str) -> object:
    import tomllib

    return parse_federation(tomllib.loads(text), "federation.toml")


def test_a_private_spec_needs_a_range_for_every_numeric_column() -> None:
    with pytest.raises(SpecError, match=r"\[privacy\] bounds: 'a' has no clipping range"):
        _parse(_spec("epsilon = 1.0\n[privacy.bounds]\ny = [0, 1]\n"))
    with pytest.raises(SpecError, match=r"bounds a: expected \[low, high\] with low < high"):
        _parse(_spec("epsilon = 1.0\n[privacy.bounds]\na = [3, 1]\ny = [0, 1]\n"))
    with pytest.raises(SpecError, match=r"bounds: clipping bounds need an epsilon"):
        _parse(_spec("[privacy.bounds]\na = [0, 1]\n"))
    with pytest.raises(SpecError, match="not model 'poisson'"):
        text = _spec("epsilon = 1.0\n", "poisson").replace(
            'name = "p"', 'name = "p"\ntask = "count"'
        )
        _parse(text)
    spec = _parse(_spec("epsilon = 1.0\n[privacy.bounds]\na = [0, 5]\ny = [-1, 1]\n"))
    low, high = spec.clip_range()  # type: ignore[attr-defined]
    assert low.tolist() == [0.0, 0.0, -1.0] and high.tolist() == [5.0, 1.0, 1.0]


def test_the_epsilon_reported_is_dp_accountings(tmp_path: Path) -> None:
    fed, cities, _, _ = _private(tmp_path, model="logistic", epsilon=0.8)
    result = train(load_federation(fed), LocalExchange([responder(c) for c in cities]), run_id="r")
    spec = load_federation(fed)
    releases = spec.releases  # the moments and five gradient steps
    assert releases == 6
    multiplier = noise_multiplier(0.8, 1e-6, releases)
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(multiplier), releases))
    expected = accountant.get_epsilon(1e-6)
    assert expected == pytest.approx(0.8, rel=1e-6)
    spent = result.model.privacy_spent
    assert [c for c, _, _ in spent] == ["city0", "city1", "city2"]
    for _, run, total in spent:
        assert run == pytest.approx(expected, rel=1e-9) and total == pytest.approx(run)
    assert result.model.epsilon == 0.8 and result.model.delta == 1e-6


def test_the_noise_has_the_calibrated_variance(tmp_path: Path) -> None:
    """Over many runs the released triangle's spread is the Gaussian the accountant chose."""
    fed_path, cities, _, _ = _private(
        tmp_path, epsilon=2.0, sizes=(300, 200), policy="max_runs_per_day = 1000\n"
    )
    fed = load_federation(fed_path)
    draws = []
    for k in range(200):
        # A new run each time, on a node of its own (its own secret, so its own noise).
        reply = responder(cities[0], tmp_path / f"node{k}")(Instruction("moments", fed, 1))
        assert reply.gram is not None
        draws.append(reply.gram)
    released = np.array(draws)
    sigma = noise_multiplier(2.0, 1e-6, 1) * gram_sensitivity(len(fed.design) + 1)
    deviations = released - released.mean(axis=0)
    variance = float(np.mean(deviations**2)) * 200 / 199
    assert variance == pytest.approx(sigma**2, rel=0.1)  # 200 x 21 draws: 2.2 % s.e.
    # Not the same noise twice: each run draws its own.
    assert np.unique(released[:, 0]).size == 200


def test_asking_again_gives_the_same_noisy_answer(tmp_path: Path) -> None:
    """A repeated question cannot be averaged: the noise is fixed per run and question."""
    fed_path, cities, _, _ = _private(tmp_path)
    fed = load_federation(fed_path)
    city = responder(cities[0])
    first, again = city(Instruction("moments", fed, 1)), city(Instruction("moments", fed, 1))
    assert first.gram is not None and again.gram is not None
    assert np.array_equal(first.gram, again.gram)
    assert again.outcome.epsilon_total == first.outcome.epsilon_total  # nothing new spent


def test_the_ledger_refuses_a_run_past_the_budget(tmp_path: Path) -> None:
    fed, cities, _, _ = _private(tmp_path, epsilon=1.0, policy="budget_epsilon = 1.5\n")
    spec = load_federation(fed)
    train(spec, LocalExchange([responder(c) for c in cities]), run_id="first")
    second = LocalExchange([responder(c) for c in cities])
    with pytest.raises(FederationError, match=r"budget_epsilon = 1\.5"):
        train(spec, second, run_id="second")
    reply = responder(cities[0])(Instruction("moments", spec, 1))
    assert reply.status == "refused" and reply.gram is None
    assert "ε left: 0.5" in reply.reason
    # The ledger is the city's own, hash-chained, beside its audit trail.
    from cityfed_client.node_config import NodeSettings, default_state

    from cityfed.ops.audit import AuditLog

    ledger = AuditLog(NodeSettings(cities[0], default_state(cities[0])).privacy_ledger)
    assert ledger.verify() == []
    assert [e["kind"] for e in ledger.entries()] == ["release"]


def test_a_tampered_ledger_does_not_refund_the_budget(tmp_path: Path) -> None:
    """Deleting the last release line is caught by the head file; the city does not answer."""
    fed, cities, _, _ = _private(tmp_path, epsilon=1.0, policy="budget_epsilon = 1.5\n")
    spec = load_federation(fed)
    train(spec, LocalExchange([responder(c) for c in cities]), run_id="first")
    from cityfed_client.node_config import NodeSettings, default_state

    path = NodeSettings(cities[0], default_state(cities[0])).privacy_ledger
    path.write_text("")  # the city's ledger emptied by a second local user, say
    reply = responder(cities[0])(Instruction("moments", spec, 1))
    assert reply.status == "failed" and reply.gram is None
    assert "ledger" in reply.reason


def test_a_private_round_evaluates_one_point(tmp_path: Path) -> None:
    fed_path, cities, X, _ = _private(tmp_path, model="logistic")
    fed = load_federation(fed_path)
    city = responder(cities[0])
    city(Instruction("moments", fed, 1))
    from cityfed.core.scaling import Scaler

    scaler = Scaler(X.mean(axis=0), X.std(axis=0))
    reply = city(Instruction("newton", fed, 2, scaler, np.zeros((3, 5))))
    assert reply.status == "refused" and "one point per round" in reply.reason


@pytest.mark.parametrize("secure", [False, True])
def test_private_ridge_is_near_the_pooled_fit_and_says_what_it_cost(
    tmp_path: Path, secure: bool
) -> None:
    sizes = (20_000, 15_000, 25_000)
    fed, cities, X, y = _private(tmp_path, epsilon=4.0, secure=secure, sizes=sizes)
    result = train(load_federation(fed), LocalExchange([responder(c) for c in cities]), run_id="r")
    ref = Ridge(alpha=1.0).fit(StandardScaler().fit_transform(X), y)
    m = result.model
    assert m.secure_aggregation == secure and m.inference is None
    assert "differential privacy" in m.inference_note
    # Noisy but close: within a fifth of the largest coefficient (the target's spread
    # is small against its declared range, the hardest case for statistics perturbation).
    assert np.max(np.abs(m.coef_scaled - ref.coef_)) < 0.2 * np.max(np.abs(ref.coef_))


def test_distributed_noise_is_carried_once_by_the_secure_sum(tmp_path: Path) -> None:
    """With secure aggregation each of the threshold's cities adds 1/threshold of the variance."""
    fed_path, _, _, _ = _private(tmp_path, epsilon=2.0, secure=True, min_cities=2)
    fed = load_federation(fed_path)
    sigma = noise_multiplier(2.0, 1e-6, 1) * gram_sensitivity(len(fed.design) + 1)
    table = np.ones((10, 5))
    low, high = fed.clip_range()
    rng = np.random.default_rng(1)
    sums = np.array(
        [
            sum(noisy_gram(table, low, high, sigma / np.sqrt(2), rng) for _ in range(2))
            for _ in range(2000)
        ]
    )
    assert float(np.var(sums[:, 3])) == pytest.approx(sigma**2, rel=0.1)


def test_private_logistic_steps_never_overshoot(tmp_path: Path) -> None:
    """Böhning's bound: with little noise the private fit is the pooled fit's neighbour."""
    fed, cities, X, y = _private(tmp_path, model="logistic", epsilon=50.0, sizes=(3000, 2000, 4000))
    text = fed.read_text().replace("epsilon = 50.0", "epsilon = 50.0\nnewton_rounds = 12")
    fed.write_text(text)
    (fed.parent / "agreed-federation.toml").write_text(text)
    result = train(load_federation(fed), LocalExchange([responder(c) for c in cities]), run_id="r")
    Z = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=1.0, tol=1e-10).fit(Z, y)
    m = result.model
    p_ours = 1 / (1 + np.exp(-(m.scaler.transform(X) @ m.coef_scaled + m.intercept_scaled)))
    assert np.max(np.abs(p_ours - ref.predict_proba(Z)[:, 1])) < 0.05
    assert epsilon_of(noise_multiplier(50.0, 1e-6, 13), 13, 1e-6) == pytest.approx(50.0, rel=1e-6)


def test_the_city_reads_its_ledger_and_identity_from_the_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    fed, cities, _, _ = _private(tmp_path)
    train(load_federation(fed), LocalExchange([responder(c) for c in cities]), run_id="r")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cityfed.cli", *args], capture_output=True, text=True
        )

    verified = cli("city", "ledger", "verify", "--config", str(cities[0]))
    assert verified.returncode == 0, verified.stderr
    assert "intact (1 entries)" in verified.stdout  # one release: the moments
    identity = cli("city", "identity", "--config", str(cities[0]))
    assert identity.returncode == 0, identity.stderr
    assert identity.stdout.startswith('city0 = "ed25519:')
