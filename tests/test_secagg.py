"""Secure aggregation: the coordinator sees only masked vectors, and still the exact pooled fit.

Every attack here is a coordinator (or a city) that does not follow the protocol:
the refusal is shown, and the honest runs are compared with sklearn and
statsmodels on the pooled rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from cityfed_client.handlers import responder
from cityfed_server.training import train
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor, Ridge
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import load_federation
from cityfed.core import fixedpoint as fp
from cityfed.core import shamir
from cityfed.core.secure_stats import moments_from_sums, moments_length, moments_vector
from cityfed.core.stats import Moments, merge_all
from cityfed.errors import FederationError
from cityfed.federation.protocol import CityReply, Instruction
from cityfed.federation.secagg import Member, SecAggKeys
from cityfed.flower.exchange import LocalExchange

from .synthetic import AlteredExchange

# ------------------------------------------------------------------ fixed point

_finite = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_infinity=False)


@given(st.lists(st.lists(_finite, min_size=3, max_size=3), min_size=1, max_size=12))
@settings(max_examples=30, deadline=None)
def test_fixed_point_sums_are_exact(vectors: list[list[float]]) -> None:
    encoded = [fp.encode([fp.fixed(v) for v in vec]) for vec in vectors]
    summed = fp.decode_fractions(fp.total(encoded, 3))
    exact = [sum((Fraction(v[j]) for v in vectors), Fraction(0)) for j in range(3)]
    for got, want in zip(summed, exact, strict=True):
        assert abs(got - want) <= Fraction(len(vectors), 2**fp.FRACTION_BITS)


@given(st.lists(_finite, min_size=1, max_size=8), st.lists(_finite, min_size=1, max_size=8))
@settings(max_examples=30, deadline=None)
def test_ring_subtraction_undoes_addition(a: list[float], b: list[float]) -> None:
    size = min(len(a), len(b))
    x = fp.encode([fp.fixed(v) for v in a[:size]])
    y = fp.encode([fp.fixed(v) for v in b[:size]])
    assert np.array_equal(fp.subtract(fp.add(x, y), y), x)
    assert np.array_equal(fp.add(x, fp.negate(x)), np.zeros_like(x))


@given(
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=2, max_value=12).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n))
    ),
    st.randoms(use_true_random=False),
)
@settings(max_examples=30, deadline=None)
def test_any_threshold_of_shamir_shares_rebuilds_the_seed(
    seed: bytes, sizes: tuple[int, int], rng: random.Random
) -> None:
    count, threshold = sizes
    shares = list(enumerate(shamir.split(seed, threshold, count), start=1))
    chosen = rng.sample(shares, threshold)
    assert shamir.combine(chosen) == seed
    if threshold > 1:  # one share fewer: a different polynomial through them, almost surely
        fewer = chosen[:-1]
        with contextlib.suppress(ValueError):  # or not even a 32-byte secret
            assert shamir.combine(fewer) != seed


def test_a_value_outside_the_ring_is_refused_not_wrapped() -> None:
    with pytest.raises(ValueError, match="secure sum's range"):
        fp.fixed(1e44)
    with pytest.raises(ValueError, match="not a finite number"):
        fp.fixed(float("nan"))
    fp.fixed(2e43)  # inside


def test_moments_of_wildly_scaled_columns_sum_exactly() -> None:
    rng = np.random.default_rng(4)
    scale = np.array([1e-6, 1.0, 1e9, 1e3])
    offset = np.array([0.0, 5.0, 3e9, -1e4])
    tables = [rng.normal(size=(int(rng.integers(20, 300)), 4)) * scale + offset for _ in range(6)]
    parts = [Moments.of(t) for t in tables]
    encoded = [fp.encode(moments_vector([p])) for p in parts]
    [pooled] = moments_from_sums(fp.decode_fractions(fp.total(encoded, moments_length(1, 4))), 1, 4)
    reference = merge_all(parts, 4)
    assert pooled.n == reference.n
    np.testing.assert_allclose(pooled.mean + pooled.low, reference.mean + reference.low, rtol=1e-15)
    spread = np.sqrt(np.outer(np.diag(reference.scatter), np.diag(reference.scatter)))
    assert np.max(np.abs(pooled.scatter - reference.scatter) / spread) < 1e-13


# ------------------------------------------------------------------ federations

_FEATURES = (("tiny", 1e-6, 0.0), ("plain", 1.0, 5.0), ("huge", 1e9, 3e9), ("mid", 1e3, -1e4))


def _federation(
    root: Path,
    *,
    model: str = "ridge",
    sizes: Sequence[int] = (120, 80, 200, 150),
    extra: str = "",
    policy: str = "",
    seed: int = 0,
) -> tuple[Path, list[Path], list[np.ndarray], list[np.ndarray]]:
    """A federation whose features live on scales from 1e-6 to 1e9, one CSV per city."""
    task = {"logistic": "classification", "poisson": "count"}.get(model, "regression")
    penalty = {"ridge": "alpha = 2.5\n", "logistic": "C = 0.7\n", "poisson": "alpha = 0.01\n"}
    features = "".join(f'[[features]]\nname = "{name}"\n\n' for name, _, _ in _FEATURES)
    (root / "federation.toml").write_text(
        f'[federation]\nname = "wide"\ntask = "{task}"\nmodel = "{model}"\n'
        f"{penalty.get(model, '')}holdout_fraction = 0.0\nmin_cities = 2\n"
        f"min_rows_per_city = 20\ntolerance = 1e-10\n\n"
        f'[privacy]\nsecure_aggregation = true\n{extra}\n[target]\nname = "y"\n\n{features}',
        encoding="utf-8",
    )
    rng = np.random.default_rng(seed)
    cities, Xs, ys = [], [], []
    for k, n in enumerate(sizes):
        z = rng.normal(size=(n, len(_FEATURES)))
        X = np.column_stack(
            [z[:, j] * scale + offset + k * scale for j, (_, scale, offset) in enumerate(_FEATURES)]
        )
        signal = z @ np.array([0.8, -0.5, 1.2, 0.3]) + 0.2 * k
        if task == "classification":
            y = (signal + rng.normal(size=n) > 0).astype(float)
        elif task == "count":
            y = rng.poisson(np.exp(0.4 * signal)).astype(float)
        else:
            y = 50.0 + 3.0 * signal + rng.normal(scale=0.5, size=n)
        csv = root / f"city{k}.csv"
        header = ",".join([name for name, _, _ in _FEATURES] + ["y"])
        rows = [",".join(repr(float(v)) for v in row) for row in np.column_stack([X, y])]
        csv.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
        columns = "".join(f'{name} = "{name}"\n' for name, _, _ in _FEATURES) + 'y = "y"\n'
        toml = root / f"city{k}.toml"
        toml.write_text(
            f'[city]\nname = "city{k}"\ndata = "{csv.name}"\n\n[columns]\n{columns}\n'
            f'[policy]\nagreed = ["federation.toml"]\nmin_rows = 10\n{policy}',
            encoding="utf-8",
        )
        cities.append(toml)
        Xs.append(X)
        ys.append(y)
    return root / "federation.toml", cities, Xs, ys


class Spy:
    """An exchange that keeps every reply the coordinator receives (what a ServerApp sees)."""

    def __init__(self, inner: LocalExchange, fail: Mapping[tuple[int, str], str] = {}) -> None:
        self.inner = inner
        self.replies: list[tuple[Instruction, int, CityReply]] = []
        #: (node, step) -> reason: that node fails from that step on (killed).
        self.fail = dict(fail)
        self.dead: set[int] = set()
        self.names: dict[int, str] = {}

    def nodes(self) -> list[int]:
        return self.inner.nodes()

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        step = "plain" if instruction.secagg is None else instruction.secagg.step
        alive = [n for n in nodes if n not in self.dead and (n, step) not in self.fail]
        for node in nodes:
            if node not in alive:
                self.dead.add(node)
                name = self.names.get(node, f"node {node}")
                yield node, CityReply.failed(name, "no reply within 600 s")
        for node, reply in self.inner.exchange(instruction, alive, personal):
            self.replies.append((instruction, node, reply))
            self.names[node] = reply.city
            yield node, reply


def _run(fed_path: Path, cities: list[Path], **spy: object) -> tuple[object, Spy]:
    exchange = Spy(LocalExchange([responder(c) for c in cities]), **spy)  # type: ignore[arg-type]
    result = train(load_federation(fed_path), exchange, run_id="secure-test")
    return result, exchange


def _scaled(X: np.ndarray) -> np.ndarray:
    return StandardScaler().fit_transform(X)


# ------------------------------------------------------------------ honest runs


@pytest.mark.parametrize("model", ["linear", "ridge"])
def test_secure_linear_and_ridge_equal_the_pooled_fit(tmp_path: Path, model: str) -> None:
    fed, cities, Xs, ys = _federation(tmp_path, model=model)
    result, _ = _run(fed, cities)
    X, y = np.vstack(Xs), np.concatenate(ys)
    ref = (LinearRegression() if model == "linear" else Ridge(alpha=2.5)).fit(_scaled(X), y)
    m = result.model  # type: ignore[attr-defined]
    np.testing.assert_allclose(m.coef_scaled, ref.coef_, rtol=1e-9)
    np.testing.assert_allclose(m.intercept_scaled, ref.intercept_, rtol=1e-9)
    assert m.training_rows == len(y)
    # In federation units (sklearn on the raw columns is itself unstable at 1e-6 vs 1e9).
    np.testing.assert_allclose(m.coef, ref.coef_ / X.std(axis=0), rtol=1e-9)


def test_secure_logistic_equals_the_pooled_fit(tmp_path: Path) -> None:
    fed, cities, Xs, ys = _federation(tmp_path, model="logistic")
    result, _ = _run(fed, cities)
    X, y = np.vstack(Xs), np.concatenate(ys)
    Z = _scaled(X)
    ref = LogisticRegression(C=0.7, tol=1e-12, max_iter=10_000).fit(Z, y)
    m = result.model  # type: ignore[attr-defined]
    ours = 1.0 / (1.0 + np.exp(-(Z @ m.coef_scaled + m.intercept_scaled)))
    assert np.max(np.abs(ours - ref.predict_proba(Z)[:, 1])) < 1e-6


def test_secure_poisson_equals_the_pooled_fit(tmp_path: Path) -> None:
    fed, cities, Xs, ys = _federation(tmp_path, model="poisson")
    result, _ = _run(fed, cities)
    X, y = np.vstack(Xs), np.concatenate(ys)
    Z = _scaled(X)
    ref = PoissonRegressor(alpha=0.01, tol=1e-12, max_iter=10_000).fit(Z, y)
    m = result.model  # type: ignore[attr-defined]
    np.testing.assert_allclose(m.coef_scaled, ref.coef_, rtol=1e-6, atol=1e-8)


def test_the_coordinator_sees_no_city_statistics(tmp_path: Path) -> None:
    """Only keys, sealed shares, masked vectors and reveals reach the ServerApp."""
    fed, cities, Xs, ys = _federation(tmp_path, model="ridge")
    result, spy = _run(fed, cities)
    assert result.model.cities == ("city0", "city1", "city2", "city3")  # type: ignore[attr-defined]
    masked = []
    for _, _, reply in spy.replies:
        assert reply.moments is None and not reply.folds and not reply.terms
        if reply.masked is not None:
            masked.append(reply.masked)
    assert len(masked) == 4
    # What each city's plain statistics would have been, encoded:
    plain = [
        fp.to_bytes(fp.encode(moments_vector([Moments.of(np.column_stack([X, y]))])))
        for X, y in zip(Xs, ys, strict=True)
    ]
    for vector in masked:
        words = np.frombuffer(vector, dtype="<u8")
        # Uniform-looking: every bit position set about half the time (4-sigma bounds).
        bits = np.unpackbits(words.view(np.uint8)).reshape(-1, 64).mean(axis=0)
        assert np.all(np.abs(bits - 0.5) < 4 * 0.5 / np.sqrt(words.size) + 0.01)
        for p in plain:
            same = np.frombuffer(p, dtype="<u8") == words
            assert same.mean() < 0.01  # no number went out as itself
    # Byte histogram of all masked bytes: chi-square against uniform, far from rejection.
    counts = np.bincount(np.frombuffer(b"".join(masked), dtype=np.uint8), minlength=256)
    expected = counts.sum() / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 400  # 255 degrees of freedom: the 99.99th percentile is ~ 350


def test_a_city_killed_before_its_masked_input_is_left_out(tmp_path: Path) -> None:
    fed, cities, Xs, ys = _federation(tmp_path, model="linear", sizes=(120, 80, 200, 150, 90))
    result, _ = _run(fed, cities, fail={(2, "masked"): "killed"})
    keep = [0, 2, 3, 4]
    X, y = np.vstack([Xs[k] for k in keep]), np.concatenate([ys[k] for k in keep])
    ref = LinearRegression().fit(_scaled(X), y)
    m = result.model  # type: ignore[attr-defined]
    np.testing.assert_allclose(m.coef_scaled, ref.coef_, rtol=1e-9)
    assert m.training_rows == len(y)
    assert "city1" not in m.cities


def test_a_city_killed_after_its_masked_input_is_left_out(tmp_path: Path) -> None:
    """Its masked input arrived, then it died: the round completes with the others.

    It does not confirm, so the others reveal its pairwise seed (its input, still
    under its self mask, is set aside): the model is the pooled fit of the cities
    that completed.
    """
    fed, cities, Xs, ys = _federation(tmp_path, model="ridge", sizes=(120, 80, 200, 150, 90))
    spy = Spy(LocalExchange([responder(c) for c in cities]), fail={(4, "confirm"): "killed"})
    result = train(load_federation(fed), spy, run_id="killed")
    masked_from = {node for ins, node, r in spy.replies if r.masked is not None}
    assert 4 in masked_from  # it did send its masked statistics
    keep = [0, 1, 2, 4]
    X, y = np.vstack([Xs[k] for k in keep]), np.concatenate([ys[k] for k in keep])
    ref = Ridge(alpha=2.5).fit(_scaled(X), y)
    m = result.model
    np.testing.assert_allclose(m.coef_scaled, ref.coef_, rtol=1e-9)
    assert m.cities == ("city0", "city1", "city2", "city4") and m.training_rows == len(y)
    assert result.cities["city3"].status == "failed"


def test_a_city_killed_after_confirming_is_in_the_sum(tmp_path: Path) -> None:
    """Its self mask is rebuilt from the others' shares: the round completes."""
    fed, cities, Xs, ys = _federation(tmp_path, model="ridge", sizes=(120, 80, 200, 150, 90))
    result, _ = _run(fed, cities, fail={(4, "unmask"): "killed"})
    X, y = np.vstack(Xs), np.concatenate(ys)
    ref = Ridge(alpha=2.5).fit(_scaled(X), y)
    m = result.model  # type: ignore[attr-defined]
    np.testing.assert_allclose(m.coef_scaled, ref.coef_, rtol=1e-9)
    assert m.cities == ("city0", "city1", "city2", "city3", "city4")
    assert result.cities["city3"].status == "failed"  # type: ignore[attr-defined]


def test_a_city_leaving_mid_newton_does_not_make_the_others_repeat(tmp_path: Path) -> None:
    """After a departure Newton goes on with the others at new points: no city refuses."""
    fed, cities, Xs, ys = _federation(tmp_path, model="logistic", sizes=(150, 120, 200, 160, 90))
    exchange = Spy(LocalExchange([responder(c) for c in cities]))
    result = train(load_federation(fed), KillAfter(exchange, node=5, sums=2), run_id="leave")
    m = result.model
    assert m.converged
    assert [r.reason for _, _, r in exchange.replies if r.status == "refused"] == []
    assert result.cities["city4"].status == "failed"
    # The optimum is that of the four cities left (the scaler is that of all five).
    Z = m.scaler.transform(np.vstack(Xs[:4]))
    ref = LogisticRegression(C=0.7, tol=1e-12, max_iter=10_000).fit(Z, np.concatenate(ys[:4]))
    ours = 1.0 / (1.0 + np.exp(-(Z @ m.coef_scaled + m.intercept_scaled)))
    assert np.max(np.abs(ours - ref.predict_proba(Z)[:, 1])) < 1e-6


class KillAfter:
    """Node ``node`` stops answering after ``sums`` secure sums."""

    def __init__(self, inner: Spy, node: int, sums: int) -> None:
        self.inner = inner
        self.node = node
        self.sums = sums
        self.seen = 0

    def nodes(self) -> list[int]:
        return self.inner.nodes()

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        if instruction.secagg is not None and instruction.secagg.step == "keys":
            self.seen += 1
        if self.seen > self.sums:
            self.inner.dead.add(self.node)
        yield from self.inner.exchange(instruction, nodes, personal)


def test_below_the_threshold_the_run_stops(tmp_path: Path) -> None:
    fed, cities, _, _ = _federation(tmp_path, model="ridge", sizes=(120, 80, 200, 150, 90))
    kills = {(n, "unmask"): "killed" for n in (1, 2, 3)}
    with pytest.raises(FederationError, match=r"only 2 cities revealed .* threshold"):
        _run(fed, cities, fail=kills)


# ------------------------------------------------------------------ attacks


class Tamper:
    """A coordinator that rewrites the instructions of one step before they leave."""

    def __init__(self, inner: LocalExchange, step: str, change: object) -> None:
        self.inner = inner
        self.step = step
        self.change = change
        self.replies: list[CityReply] = []

    def nodes(self) -> list[int]:
        return self.inner.nodes()

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        if instruction.secagg is not None and instruction.secagg.step == self.step:
            instruction = self.change(instruction)  # type: ignore[operator]
            if personal is not None:
                personal = {n: self.change(i) for n, i in personal.items()}  # type: ignore[operator]
        for node, reply in self.inner.exchange(instruction, nodes, personal):
            self.replies.append(reply)
            yield node, reply


def _secagg(ins: Instruction, **changes: object) -> Instruction:
    assert ins.secagg is not None
    return dataclasses.replace(ins, secagg=dataclasses.replace(ins.secagg, **changes))


def _attack(tmp_path: Path, step: str, change: object) -> list[str]:
    fed, cities, _, _ = _federation(tmp_path, model="ridge")
    exchange = Tamper(LocalExchange([responder(c) for c in cities]), step, change)
    with pytest.raises(FederationError):
        train(load_federation(fed), exchange, run_id="attack")
    return [r.reason for r in exchange.replies if r.status == "refused"]


def test_a_low_threshold_is_refused(tmp_path: Path) -> None:
    reasons = _attack(tmp_path, "shares", lambda ins: _secagg(ins, threshold=2))
    assert reasons and all("threshold 2 for 4 cities" in r for r in reasons)


def test_swapped_keys_are_refused(tmp_path: Path) -> None:
    """The coordinator puts its own mask key in place of a city's between two steps."""

    def swap(ins: Instruction) -> Instruction:
        assert ins.secagg is not None
        first = ins.secagg.roster[0]
        fake = SecAggKeys(first.keys.cipher_key, bytes(range(32)), first.keys.self_commitment)
        roster = (Member(first.index, first.city, fake), *ins.secagg.roster[1:])
        return _secagg(ins, roster=roster)

    reasons = _attack(tmp_path, "masked", swap)
    assert len(reasons) >= 3
    assert all("did not seal its shares to" in r or "own keys" in r for r in reasons)


def test_a_roster_of_the_coordinators_own_keys_is_refused(tmp_path: Path) -> None:
    """Sybils: the roster lists a city under keys that are not its own."""

    def sybil(ins: Instruction) -> Instruction:
        assert ins.secagg is not None
        roster = tuple(
            Member(
                m.index,
                m.city,
                SecAggKeys(bytes([m.index] * 32), bytes([m.index + 9] * 32), b"x" * 32),
            )
            for m in ins.secagg.roster
        )
        return _secagg(ins, roster=roster)

    reasons = _attack(tmp_path, "shares", sybil)
    assert len(reasons) == 4 and all("own keys" in r for r in reasons)


def test_reveals_for_a_shrunken_survivor_set_are_refused(tmp_path: Path) -> None:
    """Claiming a city dropped (to get its mask seed) while it is a survivor elsewhere."""

    def shrink(ins: Instruction) -> Instruction:
        assert ins.secagg is not None
        return _secagg(ins, included=ins.secagg.included[1:])

    reasons = _attack(tmp_path, "unmask", shrink)
    assert reasons and all("masked its input against" in r for r in reasons)


def test_a_tampered_share_is_refused(tmp_path: Path) -> None:
    def flip(ins: Instruction) -> Instruction:
        assert ins.secagg is not None
        inbox = tuple((s, sealed[:-1] + bytes([sealed[-1] ^ 1])) for s, sealed in ins.secagg.inbox)
        return _secagg(ins, inbox=inbox)

    reasons = _attack(tmp_path, "unmask", flip)
    assert reasons and all("does not open" in r for r in reasons)


def test_the_same_statistics_are_masked_for_one_sum_only(tmp_path: Path) -> None:
    """The differencing attack: ask the moments again in a new sum, without one city.

    (Logistic, so that the round limits leave room: the guard is the refusal here.)
    """
    fed_path, cities, _, _ = _federation(tmp_path, model="logistic")
    fed = load_federation(fed_path)
    exchange = LocalExchange([responder(c) for c in cities])
    train(fed, exchange, run_id="first")  # one honest sum
    # The same responders (the same run), asked the moments again in sum 2:
    from cityfed_server.secure_sum import secure_sum

    refusals: list[str] = []
    with pytest.raises(FederationError, match="only 0 cities sent their masked"):
        secure_sum(
            exchange,
            Instruction("moments", fed, 7),
            [1, 2, 3],
            aggregation=99,  # a sum number the run has not used
            length=moments_length(1, 5),
            record=lambda node, reply, ins: refusals.append(reply.reason),
        )
    assert any("already masked for secure sum 1" in r for r in refusals)
    assert not any("already answered" in r for r in refusals)


def test_plain_statistics_are_refused_in_a_secure_federation(tmp_path: Path) -> None:
    fed_path, cities, _, _ = _federation(tmp_path, model="ridge")
    reply = responder(cities[0])(Instruction("moments", load_federation(fed_path), 1))
    assert reply.status == "refused" and reply.moments is None
    assert "secure_aggregation = true" in reply.reason


def test_a_city_may_require_secure_aggregation(tmp_path: Path) -> None:
    fed_path, cities, _, _ = _federation(
        tmp_path, model="ridge", policy="secure_aggregation = true\n"
    )
    text = fed_path.read_text().replace("secure_aggregation = true", "secure_aggregation = false")
    plain = tmp_path / "plain.toml"
    plain.write_text(text)
    for city in cities:
        city.write_text(city.read_text().replace('"federation.toml"', '"plain.toml"'))
    reply = responder(cities[0])(Instruction("moments", load_federation(plain), 1))
    assert reply.status == "refused"
    assert "[policy] secure_aggregation = true" in reply.reason


def test_a_wrong_share_from_a_city_is_caught(tmp_path: Path) -> None:
    """A malicious city reveals garbage: the seed does not rebuild, nothing is published."""
    fed, cities, _, _ = _federation(tmp_path, model="ridge")
    inner = LocalExchange([responder(c) for c in cities])

    def lie(replies: list[tuple[int, CityReply]]) -> list[tuple[int, CityReply]]:
        return [
            (node, dataclasses.replace(r, revealed=tuple((i, bytes(32)) for i, _ in r.revealed)))
            if node == 1 and r.revealed
            else (node, r)
            for node, r in replies
        ]

    with pytest.raises(FederationError, match="do not rebuild"):
        train(load_federation(fed), AlteredExchange(inner, lie), run_id="liar")


def test_secure_steps_do_not_count_as_rounds_and_are_audited(tmp_path: Path) -> None:
    fed, cities, _, _ = _federation(tmp_path, model="ridge", policy="max_rounds = 1\n")
    result, _ = _run(fed, cities)
    assert result.model.rounds == 1  # type: ignore[attr-defined]
    from cityfed_client.node_config import NodeSettings, default_state

    from cityfed.ops.audit import AuditLog

    log = AuditLog(NodeSettings(cities[0], default_state(cities[0])).audit_log)
    steps = [e["secagg"]["step"] for e in log.entries() if e.get("secagg")]
    assert steps == ["keys", "shares", "masked", "confirm", "unmask"]
    assert log.verify() == []
    text = log.path.read_text()
    assert "secagg.key" not in text
    secret = default_state(cities[0]) / "secagg.key"
    assert secret.stat().st_mode & 0o077 == 0


# ------------------------------------------------------------------ signed keys


def _signed_federation(tmp_path: Path, *, wrong: str | None = None) -> tuple[Path, list[Path]]:
    """The wide federation with [privacy.city_keys]: every city's identity key listed."""
    from cityfed_client.node_config import NodeSettings, default_state
    from cityfed_client.secagg import load_secret

    from cityfed.federation.secagg import identity_public

    fed, cities, _, _ = _federation(tmp_path, model="ridge")
    lines = []
    for city in cities:
        name = city.stem
        seed = load_secret(NodeSettings(city, default_state(city)).secagg_identity)
        key = identity_public(bytes(32) if name == wrong else seed)
        lines.append(f'{name} = "{key}"')
    text = fed.read_text().replace(
        "[target]", "[privacy.city_keys]\n" + "\n".join(lines) + "\n\n[target]"
    )
    fed.write_text(text)
    return fed, cities


def test_signed_keys_check_every_member(tmp_path: Path) -> None:
    fed, cities = _signed_federation(tmp_path)
    spec = load_federation(fed)
    assert len(spec.city_keys) == 4
    result = train(spec, LocalExchange([responder(c) for c in cities]), run_id="signed")
    assert result.model.cities == ("city0", "city1", "city2", "city3")


def test_a_forged_member_is_refused_when_keys_are_signed(tmp_path: Path) -> None:
    """The coordinator swaps in keys it holds for one member: its signature cannot follow."""
    fed, cities = _signed_federation(tmp_path)

    def forge(ins: Instruction) -> Instruction:
        assert ins.secagg is not None
        first = ins.secagg.roster[0]
        forged = SecAggKeys(bytes([7] * 32), bytes([8] * 32), b"c" * 32, first.keys.signature)
        return _secagg(ins, roster=(Member(1, first.city, forged), *ins.secagg.roster[1:]))

    exchange = Tamper(LocalExchange([responder(c) for c in cities]), "shares", forge)
    with pytest.raises(FederationError):
        train(load_federation(fed), exchange, run_id="forged")
    reasons = [r.reason for r in exchange.replies if r.status == "refused"]
    others = [r for r in reasons if "not signed by the key" in r and "'city0'" in r]
    assert len(others) == 3  # city1..city3 refuse; city0 does not see its own keys


def test_a_city_whose_key_is_not_listed_is_left_out(tmp_path: Path) -> None:
    fed, cities = _signed_federation(tmp_path, wrong="city2")
    exchange = Spy(LocalExchange([responder(c) for c in cities]))
    result = train(load_federation(fed), exchange, run_id="unlisted")
    assert "city2" not in result.model.cities
    assert result.cities["city2"].status != "ok"


def test_a_city_may_require_signed_keys(tmp_path: Path) -> None:
    fed, cities, _, _ = _federation(tmp_path, model="ridge", policy="require_signed_keys = true\n")
    exchange = Spy(LocalExchange([responder(c) for c in cities]))
    with pytest.raises(FederationError):
        train(load_federation(fed), exchange, run_id="unsigned")
    reasons = {r.reason for _, _, r in exchange.replies if r.status == "refused"}
    assert any("require_signed_keys = true" in r for r in reasons)


def test_alpha_cv_folds_are_summed_securely_too(tmp_path: Path) -> None:
    """The fold moments travel in the same secure sum: the same alpha, the same model."""
    fed, cities, _, _ = _federation(tmp_path, model="ridge")
    text = fed.read_text().replace("alpha = 2.5", 'alpha = "cv"\ncv_folds = 3')
    fed.write_text(text)
    secure = train(load_federation(fed), LocalExchange([responder(c) for c in cities]), run_id="s")
    fed.write_text(text.replace("secure_aggregation = true", "secure_aggregation = false"))
    plain = train(load_federation(fed), LocalExchange([responder(c) for c in cities]), run_id="p")
    assert secure.model.alpha == plain.model.alpha
    np.testing.assert_allclose(secure.model.coef_scaled, plain.model.coef_scaled, rtol=1e-10)
    for (a1, s1), (a2, s2) in zip(secure.model.alpha_path, plain.model.alpha_path, strict=True):
        assert a1 == a2 and s1 == pytest.approx(s2, rel=1e-9)


def test_fedavg_cannot_be_summed_securely(tmp_path: Path) -> None:
    from cityfed.errors import SpecError

    fed, _, _, _ = _federation(tmp_path, model="ridge")
    fed.write_text(fed.read_text().replace("alpha = 2.5", 'alpha = 2.5\nalgorithm = "fedavg"'))
    with pytest.raises(SpecError, match=r"\[privacy\] secure_aggregation: needs algorithm"):
        load_federation(fed)


def test_a_city_may_keep_its_counts_and_scores(tmp_path: Path) -> None:
    """Under secure aggregation the counts are the city's to give: city0 keeps them."""
    fed, cities, Xs, _ = _federation(tmp_path, model="ridge")
    fed.write_text(fed.read_text().replace("holdout_fraction = 0.0", "holdout_fraction = 0.2"))
    keep = "release_counts = false\nrelease_scores = false\n"
    cities[0].write_text(cities[0].read_text() + keep)
    spy = Spy(LocalExchange([responder(c) for c in cities]))
    result = train(load_federation(fed), spy, run_id="withheld")
    mine = result.cities["city0"]
    assert mine.counts_withheld and mine.rows_read == mine.rows_train == 0
    assert not mine.drop_reasons and mine.evaluation is None
    assert "release_scores = false" in mine.reason
    sent = [r for _, node, r in spy.replies if node == 1]
    assert all(r.outcome.rows_read == 0 and r.outcome.rows_train == 0 for r in sent)
    other = result.cities["city1"]
    assert not other.counts_withheld and other.rows_read == Xs[1].shape[0]
    assert other.evaluation is not None
    assert "city0" in result.model.cities  # its statistics are in the sum all the same
    from cityfed.report.build import build_report, report_from_json, report_to_json
    from cityfed.report.html import render_html

    report = build_report(load_federation(fed), result)
    data = report_to_json(report)
    assert data["cities"]["city0"]["counts_withheld"] is True
    assert report_from_json(data, "report.json").cities["city0"].counts_withheld
    assert "withheld by the city" in render_html(report)
