"""What travels between coordinator and cities: typed instructions and replies.

Record keys are named once here; the Flower apps only call :func:`encode_*` and
:func:`decode_*`. A reply carries statistics of rows (counts, means, scatter,
gradients, Hessians, holdout scores), never rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from numpy.typing import NDArray

from cityfed.logistic import LogisticTerms
from cityfed.scaling import Scaler
from cityfed.spec import FederationSpec, federation_from_json, federation_to_json
from cityfed.stats import Moments

__all__ = [
    "CityReply",
    "Instruction",
    "Phase",
    "decode_instruction",
    "decode_reply",
    "encode_instruction",
    "encode_reply",
    "message_type_of",
]

FloatArray = NDArray[np.float64]
Phase = Literal["moments", "newton", "fedavg", "evaluate"]
Status = Literal["ok", "refused", "failed"]

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


def message_type_of(phase: Phase) -> str:
    """Flower message type for a phase: fitting is ``train``, scoring ``evaluate``."""
    return "evaluate" if phase == "evaluate" else "train"


@dataclass(frozen=True)
class Instruction:
    """What the coordinator asks of every city in one exchange."""

    phase: Phase
    federation: FederationSpec
    round: int = 0
    scaler: Scaler | None = None
    weights: FloatArray | None = None  # intercept first, on scaled features


@dataclass(frozen=True)
class CityReply:
    """One city's answer: statistics for the phase, or why it did not take part."""

    city: str
    status: Status
    reason: str = ""
    n: int = 0
    rows_read: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    moments: Moments | None = None
    terms: LogisticTerms | None = None
    weights: FloatArray | None = None
    evaluation: dict[str, Any] | None = None


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


def encode_instruction(ins: Instruction) -> RecordDict:
    """The Flower content of an instruction."""
    content = RecordDict(
        {
            _CONFIG: ConfigRecord(
                {
                    _KEY_PHASE: ins.phase,
                    _KEY_FEDERATION: federation_to_json(ins.federation),
                    _KEY_ROUND: ins.round,
                }
            )
        }
    )
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
    phase = _text(config, _KEY_PHASE)
    if phase not in ("moments", "newton", "fedavg", "evaluate"):
        raise ValueError(f"unknown phase {phase!r}")
    fed = federation_from_json(_text(config, _KEY_FEDERATION))
    scaler = weights = None
    if _MODEL in content.array_records:
        model = content.array_records[_MODEL]
        scaler = Scaler(_numpy(model, _KEY_MEAN), _numpy(model, _KEY_SCALE))
        weights = _numpy(model, _KEY_WEIGHTS)
    return Instruction(phase, fed, int(_number(config, _KEY_ROUND)), scaler, weights)  # type: ignore[arg-type]


def encode_reply(reply: CityReply) -> RecordDict:
    """The Flower content of a reply."""
    status = ConfigRecord(
        {
            _KEY_CITY: reply.city,
            _STATUS: reply.status,
            _KEY_REASON: reply.reason,
            _KEY_DROPS: json.dumps(reply.drop_reasons),
        }
    )
    if reply.evaluation is not None:
        status[_KEY_EVALUATION] = json.dumps(reply.evaluation)
    content = RecordDict(
        {
            _STATUS: status,
            _COUNTS: MetricRecord({_KEY_N: reply.n, _KEY_ROWS_READ: reply.rows_read}),
        }
    )
    arrays: dict[str, Array] = {}
    if reply.moments is not None:
        arrays[_KEY_MEAN] = _array(reply.moments.mean)
        arrays[_KEY_SCATTER] = _array(reply.moments.scatter)
    if reply.terms is not None:
        arrays[_KEY_GRAD] = _array(reply.terms.grad)
        arrays[_KEY_HESS] = _array(reply.terms.hess)
        content.metric_records[_COUNTS][_KEY_LOSS] = reply.terms.loss
    if reply.weights is not None:
        arrays[_KEY_WEIGHTS] = _array(reply.weights)
    if arrays:
        content[_STATS] = ArrayRecord(arrays)
    return content


def decode_reply(content: RecordDict) -> CityReply:
    """Parse a city's reply."""
    status = content.config_records[_STATUS]
    counts = content.metric_records[_COUNTS]
    n = int(_number(counts, _KEY_N))
    stats = content.array_records.get(_STATS)
    moments = terms = weights = None
    if stats is not None and _KEY_SCATTER in stats:
        moments = Moments(n, _numpy(stats, _KEY_MEAN), _numpy(stats, _KEY_SCATTER))
    if stats is not None and _KEY_GRAD in stats:
        terms = LogisticTerms(
            _number(counts, _KEY_LOSS), _numpy(stats, _KEY_GRAD), _numpy(stats, _KEY_HESS)
        )
    if stats is not None and _KEY_WEIGHTS in stats:
        weights = _numpy(stats, _KEY_WEIGHTS)
    evaluation = json.loads(_text(status, _KEY_EVALUATION)) if _KEY_EVALUATION in status else None
    state = _text(status, _STATUS)
    if state not in ("ok", "refused", "failed"):
        raise ValueError(f"unknown status {state!r}")
    return CityReply(
        city=_text(status, _KEY_CITY),
        status=state,  # type: ignore[arg-type]
        reason=_text(status, _KEY_REASON),
        n=n,
        rows_read=int(_number(counts, _KEY_ROWS_READ)),
        drop_reasons={str(k): int(v) for k, v in json.loads(_text(status, _KEY_DROPS)).items()},
        moments=moments,
        terms=terms,
        weights=weights,
        evaluation=evaluation,
    )
