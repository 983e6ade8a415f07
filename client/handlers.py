"""A city's answers to the coordinator's instructions, computed from its own rows.

Everything here runs next to the city's data; only the returned
:class:`~cityfed.protocol.CityReply` leaves the city.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from cityfed.client.evaluation import evaluate_city
from cityfed.data import load_city_data
from cityfed.errors import CityFedError
from cityfed.fedavg import local_update
from cityfed.logistic import logistic_terms
from cityfed.protocol import CityReply, Instruction
from cityfed.spec import CitySpec, load_city
from cityfed.stats import Moments

__all__ = ["answer", "answer_for_city"]

logger = logging.getLogger(__name__)


def answer(ins: Instruction, city_config: str | Path) -> CityReply:
    """Load the city named by its ``city.toml`` and answer one instruction.

    A broken config or CSV, or too few rows, gives a reply with status
    ``failed`` or ``refused`` and a one-line reason, never an exception: one bad
    city must not bring down the federation.
    """
    path = Path(city_config)
    try:
        city = load_city(path)
    except CityFedError as exc:
        return CityReply(city=path.stem, status="failed", reason=_redact(str(exc), [path]))
    reply = answer_for_city(ins, city)
    if reply.reason:
        reply = replace(reply, reason=_redact(reply.reason, [path, city.data]))
    return reply


def _redact(text: str, paths: list[Path]) -> str:
    """Keep file names but not the city's folders in what leaves the city."""
    for path in paths:
        for folder in {str(path.parent), str(path.resolve().parent)}:
            if folder not in ("", "."):
                text = text.replace(folder + os.sep, "")
    return text


def answer_for_city(ins: Instruction, city: CitySpec) -> CityReply:
    """Answer one instruction for an already parsed city spec."""
    fed = ins.federation
    try:
        data = load_city_data(city, fed)
    except CityFedError as exc:
        logger.warning("city %s cannot take part: %s", city.name, exc)
        return CityReply(city=city.name, status="failed", reason=str(exc))
    base = CityReply(
        city=city.name,
        status="ok",
        n=int(data.y_train.size),
        rows_read=data.rows_read,
        drop_reasons=data.drop_reasons,
    )
    if data.y_train.size < fed.min_rows_per_city:
        reason = (
            f"only {data.y_train.size} usable training rows; the federation requires at "
            f"least {fed.min_rows_per_city} (min_rows_per_city), so no statistics are sent"
        )
        return replace(base, status="refused", reason=reason)
    if ins.phase == "moments":
        return replace(base, moments=Moments.of(np.column_stack([data.X_train, data.y_train])))
    if ins.scaler is None or ins.weights is None:
        return replace(base, status="failed", reason=f"phase {ins.phase!r} sent without a model")
    if ins.phase == "newton":
        Z = ins.scaler.design(data.X_train)
        return replace(base, terms=logistic_terms(Z, data.y_train, ins.weights))
    if ins.phase == "fedavg":
        Z = ins.scaler.transform(data.X_train)
        return replace(base, weights=local_update(Z, data.y_train, ins.weights, fed, ins.round))
    evaluation = evaluate_city(data, city, fed, ins.scaler, ins.weights)
    return replace(base, evaluation=evaluation)
