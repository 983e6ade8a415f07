"""What travels between coordinator and cities: typed instructions and replies.

A reply carries statistics of rows (counts, means, scatter, gradients, Hessians,
holdout scores), never rows. The wire form of these types is in
:mod:`cityfed.flower.records`; nothing here imports Flower.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from cityfed.config.spec import FederationSpec, federation_digest
from cityfed.core.newton import NewtonTerms
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.federation.outcome import CityOutcome, Status
from cityfed.federation.secagg import SecAgg, SecAggKeys, roster_digest
from cityfed.typing import FloatArray

__all__ = [
    "PHASES",
    "CityReply",
    "Instruction",
    "MessageType",
    "Phase",
    "instruction_digest",
    "message_type_of",
    "point_digests",
    "question_digest",
]

#: What an instruction asks for (``secagg``: a step of a secure sum that carries no statistics).
Phase = Literal["moments", "newton", "fedavg", "evaluate", "secagg"]
PHASES: tuple[Phase, ...] = ("moments", "newton", "fedavg", "evaluate", "secagg")
#: Flower's message types: fitting is ``train``, scoring ``evaluate``.
MessageType = Literal["train", "evaluate"]


def message_type_of(phase: Phase) -> MessageType:
    """Flower message type for a phase."""
    return "evaluate" if phase == "evaluate" else "train"


@dataclass(frozen=True)
class Instruction:
    """What the coordinator asks of every city in one exchange."""

    phase: Phase
    federation: FederationSpec
    round: int = 0
    scaler: Scaler | None = None
    #: Intercept first, on scaled features; for ``newton`` one row per point to
    #: evaluate (several points per round: a line search inside one exchange).
    weights: FloatArray | None = None
    #: Secure aggregation: the step of a secure sum this instruction is.
    secagg: SecAgg | None = None


def instruction_digest(ins: Instruction) -> str:
    """``sha256:`` of everything an instruction asks: the same question, the same digest.

    A city answers a question it already answered (a coordinator asking again
    after a lost reply) without counting it twice against its policy: the
    answer is the same, and so discloses nothing new.
    """
    digest = hashlib.sha256()
    digest.update(federation_digest(ins.federation).encode())
    digest.update(f"|{ins.phase}|{ins.round}|".encode())
    for part in (
        None if ins.scaler is None else ins.scaler.mean,
        None if ins.scaler is None else ins.scaler.scale,
        ins.weights,
    ):
        data = b"-" if part is None else np.ascontiguousarray(part, dtype="<f8").tobytes()
        digest.update(len(data).to_bytes(8, "little") + data)
    if ins.secagg is not None:
        sa = ins.secagg
        digest.update(
            f"secagg|{sa.aggregation}|{sa.step}|{sa.threshold}|{roster_digest(sa.roster)}|"
            f"{sa.included}|{sa.survivors}|".encode()
        )
        for sender, sealed in sa.inbox:
            digest.update(sender.to_bytes(4, "little") + hashlib.sha256(sealed).digest())
    return "sha256:" + digest.hexdigest()


def question_digest(ins: Instruction) -> str:
    """The digest of the statistics asked, whichever secure sum asks them.

    A city masks the same statistics for one secure sum of a run only: two sums
    of one question over cities that differ by one would give that city's
    statistics away. The round number is left out (asking again under another
    number is the same question).
    """
    return instruction_digest(replace(ins, secagg=None, round=0))


def point_digests(ins: Instruction) -> list[str]:
    """``newton``: one digest per point asked (with the scaler), so a point is masked once."""
    if ins.phase != "newton" or ins.weights is None or ins.scaler is None:
        return []
    out = []
    for point in np.atleast_2d(ins.weights):
        digest = hashlib.sha256()
        for part in (ins.scaler.mean, ins.scaler.scale, point):
            digest.update(np.ascontiguousarray(part, dtype="<f8").tobytes())
        out.append(digest.hexdigest()[:32])
    return out


@dataclass(frozen=True)
class CityReply:
    """One city's answer: its outcome so far, and the statistics of the phase."""

    outcome: CityOutcome
    moments: Moments | None = None
    #: ``newton``: the terms at each point of the instruction, in its order.
    terms: tuple[NewtonTerms, ...] = ()
    weights: FloatArray | None = None
    #: ``alpha = "cv"``: the moments of each of the city's folds of its training rows.
    folds: tuple[Moments, ...] = ()
    #: Secure aggregation, ``keys``: the city's public keys for this sum.
    keys: SecAggKeys | None = None
    #: ``shares``: the city's sealed shares, by recipient index.
    sealed: tuple[tuple[int, bytes], ...] = ()
    #: ``masked``: the city's statistics, masked (ring elements as bytes).
    masked: bytes | None = None
    #: ``unmask``: the city's shares of the others' seeds, by owner index.
    revealed: tuple[tuple[int, bytes], ...] = ()
    #: A private run's ``moments``: the noisy triangle of ``sum [1, u][1, u]^T``
    #: (:func:`cityfed.core.privacy.noisy_gram`), when not masked.
    gram: FloatArray | None = None

    @classmethod
    def failed(cls, city: str, reason: str) -> CityReply:
        """A reply for a city that could not answer."""
        return cls(CityOutcome(city=city, status="failed", reason=reason))

    @property
    def city(self) -> str:
        """The name the city answers as."""
        return self.outcome.city

    @property
    def status(self) -> Status:
        """Whether it took part."""
        return self.outcome.status

    @property
    def reason(self) -> str:
        """Why not, if it did not."""
        return self.outcome.reason

    @property
    def n(self) -> int:
        """Training rows the statistics summarise."""
        return self.outcome.rows_train
