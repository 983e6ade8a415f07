"""A city's answers to the coordinator's instructions, computed from its own rows.

Everything here runs next to the city's data; only the returned
:class:`~cityfed.federation.protocol.CityReply` leaves the city. The harmonised
rows come from a :class:`~cityfed.data.cache.DataCache`, so a run reads the
city's CSV once, not once per message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from cityfed.config.spec import CitySpec, load_city
from cityfed.core.logistic import logistic_terms
from cityfed.core.stats import Moments
from cityfed.data.cache import DataCache
from cityfed.errors import CityFedError
from cityfed.federation.outcome import CityOutcome
from cityfed.federation.protocol import CityReply, Instruction
from cityfed_client.evaluation import evaluate_city
from cityfed_client.fedavg import local_update

__all__ = ["answer", "answer_for_city", "responder"]

logger = logging.getLogger(__name__)


def answer(ins: Instruction, city_config: str | Path, cache: DataCache | None = None) -> CityReply:
    """Load the city named by its ``city.toml`` and answer one instruction.

    A broken config or CSV, or too few rows, gives a reply with status
    ``failed`` or ``refused`` and a one-line reason, never an exception: one bad
    city must not bring down the federation.
    """
    path = Path(city_config)
    try:
        city = load_city(path)
    except CityFedError as exc:
        return CityReply.failed(path.stem, _redact(str(exc), [path]))
    reply = answer_for_city(ins, city, cache or DataCache(None, ""))
    if reply.reason:
        reason = _redact(reply.reason, [path, city.data])
        reply = replace(reply, outcome=replace(reply.outcome, reason=reason))
    return reply


def responder(
    city_config: str | Path, cache: DataCache | None = None
) -> Callable[[Instruction], CityReply]:
    """A city answering in this process (tests, benchmarks, in-process exchanges)."""

    def respond(ins: Instruction) -> CityReply:
        return answer(ins, city_config, cache)

    return respond


def _redact(text: str, paths: list[Path]) -> str:
    """Keep file names but not the city's folders in what leaves the city."""
    for path in paths:
        for folder in {str(path.parent), str(path.resolve().parent)}:
            if folder not in ("", "."):
                text = text.replace(folder + os.sep, "")
    return text


def answer_for_city(ins: Instruction, city: CitySpec, cache: DataCache) -> CityReply:
    """Answer one instruction for an already parsed city spec."""
    fed = ins.federation
    try:
        data = cache.load(city, fed)
    except CityFedError as exc:
        logger.warning("city %s cannot take part: %s", city.name, exc)
        return CityReply.failed(city.name, str(exc))
    outcome = CityOutcome(
        city=city.name,
        status="ok",
        rows_read=data.rows_read,
        rows_train=int(data.y_train.size),
        drop_reasons=dict(data.drop_reasons),
    )
    if data.y_train.size < fed.min_rows_per_city:
        reason = (
            f"only {data.y_train.size} usable training rows; the federation requires at "
            f"least {fed.min_rows_per_city} (min_rows_per_city), so no statistics are sent"
        )
        return CityReply(replace(outcome, status="refused", reason=reason))
    if ins.phase == "moments":
        return CityReply(outcome, moments=Moments.of(np.column_stack([data.X_train, data.y_train])))
    if ins.scaler is None or ins.weights is None:
        reason = f"phase {ins.phase!r} sent without a model"
        return CityReply(replace(outcome, status="failed", reason=reason))
    if ins.phase == "newton":
        Z = ins.scaler.design(data.X_train)
        return CityReply(outcome, terms=logistic_terms(Z, data.y_train, ins.weights))
    if ins.phase == "fedavg":
        Z = ins.scaler.transform(data.X_train)
        weights = local_update(Z, data.y_train, ins.weights, fed, ins.round)
        return CityReply(outcome, weights=weights)
    evaluation = evaluate_city(data, city, fed, ins.scaler, ins.weights)
    cache.forget(city, fed)  # the evaluation is a run's last message
    return CityReply(replace(outcome, evaluation=evaluation))
