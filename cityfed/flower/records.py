"""The wire form of the protocol: Flower ``RecordDict`` content of instructions and replies.

Record names and keys are defined once here; the Flower apps only call
:func:`encode_*` and :func:`decode_*`. Decoding checks types and value sets, so a
malformed message becomes a ``ValueError`` (or ``KeyError``) the caller turns into a
failed reply.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from cityfed.config.spec import federation_from_json, federation_to_json
from cityfed.core.newton import NewtonTerms
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.federation.evaluation import evaluation_from_json, evaluation_to_json
from cityfed.federation.outcome import CityOutcome, Status
from cityfed.federation.protocol import PHASES, CityReply, Instruction, Phase
from cityfed.federation.secagg import STEPS, Member, SecAgg, SecAggKeys, Step
from cityfed.typing import FloatArray

__all__ = ["decode_instruction", "decode_reply", "encode_instruction", "encode_reply"]

# Record names and keys, defined once.
_CONFIG = "config"
_MODEL = "model"
_STATUS = "status"
_STATS = "stats"
_COUNTS = "counts"
_KEY_PHASE = "phase"
_KEY_FEDERATION = "federation"
_KEY_ROUND = "round"
_KEY_MEAN = "mean"
_KEY_MEAN_LOW = "mean_low"
_KEY_SCALE = "scale"
_KEY_WEIGHTS = "weights"
_KEY_SCATTER = "scatter"
_KEY_GRAD = "grad"
_KEY_HESS = "hess"
_KEY_LOSS = "loss"
_KEY_N = "n"
_KEY_ROWS_READ = "rows_read"
_KEY_CITY = "city"
_KEY_REASON = "reason"
_KEY_DROPS = "drop_reasons"
_KEY_EVALUATION = "evaluation"
_KEY_FOLD_N = "fold_n"
_KEY_FOLD_MEAN = "fold_mean"
_KEY_FOLD_MEAN_LOW = "fold_mean_low"
_KEY_FOLD_SCATTER = "fold_scatter"
_SECURE = "secure"
_KEY_GRAM = "gram"
_KEY_WITHHELD = "counts_withheld"
_KEY_EPS_RUN = "epsilon_run"
_KEY_EPS_TOTAL = "epsilon_total"
_KEY_SECAGG = "secagg"
_KEY_MASKED = "masked"
_STEPS: dict[str, Step] = {step: step for step in STEPS}

_STATUSES: dict[str, Status] = {"ok": "ok", "refused": "refused", "failed": "failed"}
_PHASES: dict[str, Phase] = {phase: phase for phase in PHASES}


def _array(values: FloatArray) -> Array:
    return Array(np.ascontiguousarray(values, dtype=np.float64))


def _numpy(record: ArrayRecord, key: str) -> FloatArray:
    """A float64 array from a record, whatever dtype it travelled in."""
    return np.asarray(record[key].numpy(), dtype=np.float64)


def _number(record: MetricRecord | ConfigRecord, key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"record key {key!r} is not a number: {value!r}")
    return float(value)


def _text(record: ConfigRecord, key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise ValueError(f"record key {key!r} is not text: {value!r}")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _keys_json(keys: SecAggKeys) -> list[str]:
    return [
        _b64(keys.cipher_key),
        _b64(keys.mask_key),
        _b64(keys.self_commitment),
        _b64(keys.signature),
    ]


def _keys_from(data: object) -> SecAggKeys:
    if not isinstance(data, list) or len(data) != 4:
        raise ValueError("secure-aggregation keys are not four values")
    return SecAggKeys(*(_bytes(part) for part in data))


def _pairs_json(pairs: tuple[tuple[int, bytes], ...]) -> list[list[Any]]:
    return [[index, _b64(data)] for index, data in pairs]


def _pairs_from(data: object) -> tuple[tuple[int, bytes], ...]:
    if not isinstance(data, list):
        raise ValueError("expected a list of (index, bytes) pairs")
    out = []
    for item in data:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], int):
            raise ValueError("a secure-aggregation pair is not (index, bytes)")
        out.append((int(item[0]), _bytes(item[1])))
    return tuple(out)


def _indices(data: object) -> tuple[int, ...]:
    if not isinstance(data, list) or not all(isinstance(i, int) for i in data):
        raise ValueError("expected a list of indices")
    return tuple(int(i) for i in data)


def _secagg_json(sa: SecAgg) -> str:
    return json.dumps(
        {
            "aggregation": sa.aggregation,
            "step": sa.step,
            "threshold": sa.threshold,
            "roster": [[m.index, m.city, _keys_json(m.keys)] for m in sa.roster],
            "included": list(sa.included),
            "survivors": list(sa.survivors),
            "inbox": _pairs_json(sa.inbox),
        }
    )


def _secagg_from(text: str) -> SecAgg:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the secure-aggregation step is not an object")
    step = _STEPS.get(str(data.get("step")))
    if step is None:
        raise ValueError(f"unknown secure-aggregation step {data.get('step')!r}")
    roster = []
    for entry in data.get("roster", []):
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], int):
            raise ValueError("a roster entry is not (index, city, keys)")
        roster.append(Member(int(entry[0]), str(entry[1]), _keys_from(entry[2])))
    aggregation, threshold = data.get("aggregation"), data.get("threshold")
    if not isinstance(aggregation, int) or not isinstance(threshold, int):
        raise ValueError("the secure-aggregation step has no aggregation or threshold")
    return SecAgg(
        aggregation=aggregation,
        step=step,
        threshold=threshold,
        roster=tuple(roster),
        included=_indices(data.get("included", [])),
        survivors=_indices(data.get("survivors", [])),
        inbox=_pairs_from(data.get("inbox", [])),
    )


def encode_instruction(ins: Instruction) -> RecordDict:
    """The Flower content of an instruction."""
    config = ConfigRecord(
        {
            _KEY_PHASE: ins.phase,
            _KEY_FEDERATION: federation_to_json(ins.federation),
            _KEY_ROUND: ins.round,
        }
    )
    if ins.secagg is not None:
        config[_KEY_SECAGG] = _secagg_json(ins.secagg)
    content = RecordDict({_CONFIG: config})
    if ins.scaler is not None and ins.weights is not None:
        content[_MODEL] = ArrayRecord(
            {
                _KEY_MEAN: _array(ins.scaler.mean),
                _KEY_SCALE: _array(ins.scaler.scale),
                _KEY_WEIGHTS: _array(ins.weights),
            }
        )
    return content


def decode_instruction(content: RecordDict) -> Instruction:
    """Parse an instruction (the federation spec is validated again on arrival)."""
    config = content.config_records[_CONFIG]
    phase = _PHASES.get(_text(config, _KEY_PHASE))
    if phase is None:
        raise ValueError(f"unknown phase {config[_KEY_PHASE]!r}")
    fed = federation_from_json(_text(config, _KEY_FEDERATION))
    scaler = weights = None
    if _MODEL in content.array_records:
        model = content.array_records[_MODEL]
        scaler = Scaler(_numpy(model, _KEY_MEAN), _numpy(model, _KEY_SCALE))
        weights = _numpy(model, _KEY_WEIGHTS)
    secagg = _secagg_from(_text(config, _KEY_SECAGG)) if _KEY_SECAGG in config else None
    return Instruction(phase, fed, int(_number(config, _KEY_ROUND)), scaler, weights, secagg)


def encode_reply(reply: CityReply) -> RecordDict:
    """The Flower content of a reply."""
    outcome = reply.outcome
    status = ConfigRecord(
        {
            _KEY_CITY: outcome.city,
            _STATUS: outcome.status,
            _KEY_REASON: outcome.reason,
            _KEY_DROPS: json.dumps(dict(outcome.drop_reasons)),
        }
    )
    if outcome.counts_withheld:
        status[_KEY_WITHHELD] = True
    if outcome.evaluation is not None:
        status[_KEY_EVALUATION] = json.dumps(evaluation_to_json(outcome.evaluation))
    if reply.keys is not None or reply.sealed or reply.revealed:
        status[_KEY_SECAGG] = json.dumps(
            {
                "keys": None if reply.keys is None else _keys_json(reply.keys),
                "sealed": _pairs_json(reply.sealed),
                "revealed": _pairs_json(reply.revealed),
            }
        )
    content = RecordDict(
        {
            _STATUS: status,
            _COUNTS: MetricRecord(
                {
                    _KEY_N: outcome.rows_train,
                    _KEY_ROWS_READ: outcome.rows_read,
                    _KEY_EPS_RUN: outcome.epsilon_run,
                    _KEY_EPS_TOTAL: outcome.epsilon_total,
                }
            ),
        }
    )
    arrays: dict[str, Array] = {}
    if reply.moments is not None:
        arrays[_KEY_MEAN] = _array(reply.moments.mean)
        arrays[_KEY_MEAN_LOW] = _array(reply.moments.low)
        arrays[_KEY_SCATTER] = _array(reply.moments.scatter)
    if reply.terms:
        arrays[_KEY_LOSS] = _array(np.array([t.loss for t in reply.terms], dtype=np.float64))
        arrays[_KEY_GRAD] = _array(np.stack([t.grad for t in reply.terms]))
        arrays[_KEY_HESS] = _array(np.stack([t.hess for t in reply.terms]))
    if reply.weights is not None:
        arrays[_KEY_WEIGHTS] = _array(reply.weights)
    if reply.gram is not None:
        arrays[_KEY_GRAM] = _array(reply.gram)
    if reply.folds:
        arrays[_KEY_FOLD_N] = _array(np.array([fold.n for fold in reply.folds], dtype=np.float64))
        arrays[_KEY_FOLD_MEAN] = _array(np.stack([fold.mean for fold in reply.folds]))
        arrays[_KEY_FOLD_MEAN_LOW] = _array(np.stack([fold.low for fold in reply.folds]))
        arrays[_KEY_FOLD_SCATTER] = _array(np.stack([fold.scatter for fold in reply.folds]))
    if arrays:
        content[_STATS] = ArrayRecord(arrays)
    if reply.masked is not None:
        masked = np.frombuffer(reply.masked, dtype="<u8").astype(np.uint64)
        content[_SECURE] = ArrayRecord({_KEY_MASKED: Array(masked)})
    return content


def decode_reply(content: RecordDict) -> CityReply:
    """Parse a city's reply."""
    status = content.config_records[_STATUS]
    counts = content.metric_records[_COUNTS]
    n = int(_number(counts, _KEY_N))
    stats = content.array_records.get(_STATS)
    moments = weights = None
    terms: tuple[NewtonTerms, ...] = ()
    if stats is not None and _KEY_SCATTER in stats:
        mean = _numpy(stats, _KEY_MEAN)
        low = _numpy(stats, _KEY_MEAN_LOW) if _KEY_MEAN_LOW in stats else np.zeros(mean.shape)
        if low.shape != mean.shape:
            raise ValueError(f"{_KEY_MEAN_LOW} has shape {low.shape}, the mean {mean.shape}")
        moments = Moments(n, mean, _numpy(stats, _KEY_SCATTER), low)
    if stats is not None and _KEY_GRAD in stats:
        terms = _terms(stats)
    if stats is not None and _KEY_WEIGHTS in stats:
        weights = _numpy(stats, _KEY_WEIGHTS)
    gram = _numpy(stats, _KEY_GRAM) if stats is not None and _KEY_GRAM in stats else None
    folds = _folds(stats) if stats is not None and _KEY_FOLD_N in stats else ()
    evaluation = (
        evaluation_from_json(json.loads(_text(status, _KEY_EVALUATION)))
        if _KEY_EVALUATION in status
        else None
    )
    state = _STATUSES.get(_text(status, _STATUS))
    if state is None:
        raise ValueError(f"unknown status {status[_STATUS]!r}")
    drops = json.loads(_text(status, _KEY_DROPS))
    if not isinstance(drops, dict):
        raise ValueError("drop_reasons is not an object")
    keys: SecAggKeys | None = None
    sealed: tuple[tuple[int, bytes], ...] = ()
    revealed: tuple[tuple[int, bytes], ...] = ()
    if _KEY_SECAGG in status:
        secure = json.loads(_text(status, _KEY_SECAGG))
        if not isinstance(secure, dict):
            raise ValueError("the secure-aggregation reply is not an object")
        keys = None if secure.get("keys") is None else _keys_from(secure["keys"])
        sealed = _pairs_from(secure.get("sealed", []))
        revealed = _pairs_from(secure.get("revealed", []))
    masked = None
    if _SECURE in content.array_records:
        array = content.array_records[_SECURE][_KEY_MASKED].numpy()
        if array.dtype != np.uint64 or array.ndim != 1:
            raise ValueError("the masked statistics are not 64-bit words")
        masked = np.ascontiguousarray(array, dtype="<u8").tobytes()
    outcome = CityOutcome(
        city=_text(status, _KEY_CITY),
        status=state,
        reason=_text(status, _KEY_REASON),
        rows_read=int(_number(counts, _KEY_ROWS_READ)),
        rows_train=n,
        drop_reasons={str(k): int(v) for k, v in drops.items()},
        evaluation=evaluation,
        epsilon_run=_number(counts, _KEY_EPS_RUN) if _KEY_EPS_RUN in counts else 0.0,
        epsilon_total=_number(counts, _KEY_EPS_TOTAL) if _KEY_EPS_TOTAL in counts else 0.0,
        counts_withheld=status.get(_KEY_WITHHELD) is True,
    )
    return CityReply(
        outcome,
        moments=moments,
        terms=terms,
        weights=weights,
        folds=folds,
        keys=keys,
        sealed=sealed,
        revealed=revealed,
        masked=masked,
        gram=gram,
    )


def _terms(stats: ArrayRecord) -> tuple[NewtonTerms, ...]:
    """Newton terms at K points: losses (K,), gradients (K, p), Hessians (K, p, p)."""
    loss, grad, hess = (_numpy(stats, k) for k in (_KEY_LOSS, _KEY_GRAD, _KEY_HESS))
    k = loss.shape[0] if loss.ndim == 1 else -1
    if k < 1 or grad.ndim != 2 or grad.shape[0] != k:
        raise ValueError("Newton terms have inconsistent shapes")
    p = grad.shape[1]
    if hess.shape != (k, p, p):
        raise ValueError(f"Newton Hessians have shape {hess.shape}, expected {(k, p, p)}")
    return tuple(NewtonTerms(float(loss[j]), grad[j], hess[j]) for j in range(k))


def _folds(stats: ArrayRecord) -> tuple[Moments, ...]:
    """Per-fold moments: counts (k,), means and low parts (k, p), scatters (k, p, p)."""
    counts = _numpy(stats, _KEY_FOLD_N)
    means, lows = _numpy(stats, _KEY_FOLD_MEAN), _numpy(stats, _KEY_FOLD_MEAN_LOW)
    scatters = _numpy(stats, _KEY_FOLD_SCATTER)
    k = counts.shape[0]
    if counts.ndim != 1 or means.ndim != 2 or means.shape[0] != k or lows.shape != means.shape:
        raise ValueError("fold statistics have inconsistent shapes")
    p = means.shape[1]
    if scatters.shape != (k, p, p):
        raise ValueError(f"fold scatters have shape {scatters.shape}, expected {(k, p, p)}")
    if not np.all(counts == np.round(counts)) or np.any(counts < 0):
        raise ValueError("fold counts are not counts")
    return tuple(Moments(int(counts[j]), means[j], scatters[j], lows[j]) for j in range(k))
