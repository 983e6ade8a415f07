from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array

from cityfed.config.spec import load_federation
from cityfed.core.newton import NewtonTerms
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.federation.outcome import CityOutcome
from cityfed.federation.protocol import CityReply, Instruction
from cityfed.flower.records import (
    decode_instruction,
    decode_reply,
    encode_instruction,
    encode_reply,
)

from .synthetic import write_federation


def test_instruction_round_trip(tmp_path: Path) -> None:
    fed = load_federation(write_federation(tmp_path).federation)
    ins = Instruction(
        "newton", fed, 3, Scaler(np.arange(4.0), np.ones(4) * 2), np.linspace(0, 1, 5)
    )
    back = decode_instruction(encode_instruction(ins))
    assert back.phase == "newton" and back.round == 3 and back.federation == fed
    assert back.scaler is not None and back.weights is not None
    np.testing.assert_array_equal(back.scaler.mean, ins.scaler.mean)  # type: ignore[union-attr]
    np.testing.assert_array_equal(back.weights, ins.weights)  # type: ignore[arg-type]


def test_reply_round_trip_carries_only_statistics() -> None:
    rng = np.random.default_rng(0)
    m = Moments.of(rng.normal(size=(30, 3)))
    terms = NewtonTerms(1.5, rng.normal(size=3), np.eye(3))
    outcome = CityOutcome("oslo", "ok", rows_read=33, rows_train=30, drop_reasons={"missing x": 3})
    reply = CityReply(outcome, moments=m, terms=(terms,))
    content = encode_reply(reply)
    back = decode_reply(content)
    assert back.outcome == outcome
    assert back.moments is not None and len(back.terms) == 1
    np.testing.assert_array_equal(back.moments.scatter, m.scatter)
    assert back.terms[0].loss == 1.5
    # Nothing the size of the rows travels: at most d+1 squared numbers per array.
    sizes = [arr.numpy().size for rec in content.array_records.values() for arr in rec.values()]
    assert max(sizes) <= 9


def test_fold_moments_round_trip_and_malformed_folds_are_refused() -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(40, 3)) * [1.0, 1e6, 1e-6] + [0.0, 1e9, 0.0]
    folds = tuple(Moments.of(rows[j::4]) for j in range(4))
    outcome = CityOutcome("oslo", "ok", rows_read=40, rows_train=40)
    reply = CityReply(outcome, moments=Moments.of(rows), folds=folds)
    content = encode_reply(reply)
    back = decode_reply(content)
    assert [f.n for f in back.folds] == [10, 10, 10, 10]
    for ours, theirs in zip(back.folds, folds, strict=True):
        np.testing.assert_array_equal(ours.mean, theirs.mean)
        np.testing.assert_array_equal(ours.low, theirs.low)
        np.testing.assert_array_equal(ours.scatter, theirs.scatter)
    # A tampered reply: scatters of another width, or a count that is not a count.
    stats = content.array_records["stats"]
    stats["fold_scatter"] = Array(np.zeros((4, 2, 2)))
    with pytest.raises(ValueError, match="fold scatters have shape"):
        decode_reply(content)
    stats["fold_scatter"] = Array(np.stack([f.scatter for f in folds]))
    stats["fold_n"] = Array(np.array([10.0, 10.5, 10.0, 9.5]))
    with pytest.raises(ValueError, match="fold counts are not counts"):
        decode_reply(content)


def test_terms_at_several_points_round_trip_and_bad_shapes_are_refused() -> None:
    rng = np.random.default_rng(2)
    terms = tuple(NewtonTerms(float(k), rng.normal(size=4), np.eye(4) * k) for k in range(3))
    outcome = CityOutcome("oslo", "ok", rows_read=30, rows_train=30)
    content = encode_reply(CityReply(outcome, terms=terms))
    back = decode_reply(content)
    assert [t.loss for t in back.terms] == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(back.terms[2].hess, terms[2].hess)
    content.array_records["stats"]["hess"] = Array(np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match="Newton Hessians have shape"):
        decode_reply(content)
