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
    config = content[_CONFIG]
    phase = str(config[_KEY_PHASE])
    if phase not in ("moments", "newton", "fedavg", "evaluate"):
        raise ValueError(f"unknown phase {phase!r}")
    fed = federation_from_json(str(config[_KEY_FEDERATION]))
    scaler = weights = None
    if _MODEL in content:
        model = content[_MODEL]
        scaler = Scaler(model[_KEY_MEAN].numpy(), model[_KEY_SCALE].numpy())
        weights = model[_KEY_WEIGHTS].numpy()
    return Instruction(phase, fed, int(config[_KEY_ROUND]), scaler, weights)  # type: ignore[arg-type]


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
        content[_COUNTS][_KEY_LOSS] = reply.terms.loss
    if reply.weights is not None:
        arrays[_KEY_WEIGHTS] = _array(reply.weights)
    if arrays:
        content[_STATS] = ArrayRecord(arrays)
    return content


def decode_reply(content: RecordDict) -> CityReply:
    """Parse a city's reply."""
    status = content[_STATUS]
    counts = content[_COUNTS]
    n = int(counts[_KEY_N])
    stats = content[_STATS] if _STATS in content else None
    moments = terms = weights = None
    if stats is not None and _KEY_SCATTER in stats:
        moments = Moments(n, stats[_KEY_MEAN].numpy(), stats[_KEY_SCATTER].numpy())
    if stats is not None and _KEY_GRAD in stats:
        terms = LogisticTerms(
            float(counts[_KEY_LOSS]), stats[_KEY_GRAD].numpy(), stats[_KEY_HESS].numpy()
        )
    if stats is not None and _KEY_WEIGHTS in stats:
        weights = stats[_KEY_WEIGHTS].numpy()
    evaluation = (
        json.loads(str(status[_KEY_EVALUATION])) if _KEY_EVALUATION in status else None
    )
    return CityReply(
        city=str(status[_KEY_CITY]),
        status=str(status[_STATUS]),  # type: ignore[arg-type]
        reason=str(status[_KEY_REASON]),
        n=n,
        rows_read=int(counts[_KEY_ROWS_READ]),
        drop_reasons={str(k): int(v) for k, v in json.loads(str(status[_KEY_DROPS])).items()},
        moments=moments,
        terms=terms,
        weights=weights,
        evaluation=evaluation,
    )
