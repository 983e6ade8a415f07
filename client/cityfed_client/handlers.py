"""A city's answers to the coordinator's instructions, computed from its own rows.

Everything here runs next to the city's data; only the returned
:class:`~cityfed.federation.protocol.CityReply` leaves the city. Before anything
is read or computed, the city's policy (:mod:`cityfed_client.policy`) decides
whether to answer at all; every instruction and what was sent back (phases,
shapes and counts, never values) or refused goes to the city's hash-chained audit
trail. The harmonised rows come from a :class:`~cityfed.data.cache.DataCache`,
so a run reads the city's CSV once, not once per message.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cityfed.config.spec import CitySpec, federation_digest, load_city
from cityfed.core.fixedpoint import fixed
from cityfed.core.logistic import logistic_terms
from cityfed.core.newton import NewtonTerms
from cityfed.core.poisson import poisson_terms
from cityfed.core.privacy import (
    clip_rows,
    gradient_sensitivity,
    gram_sensitivity,
    noisy_gradient,
    noisy_gram,
)
from cityfed.core.secure_stats import moments_vector, terms_vector
from cityfed.data.cache import DataCache
from cityfed.data.city_data import CityData, row_set
from cityfed.data.rows import BlockTerms, Summary, summarise
from cityfed.errors import CityFedError
from cityfed.federation.outcome import CityOutcome
from cityfed.federation.protocol import (
    CityReply,
    Instruction,
    instruction_digest,
    point_digests,
    question_digest,
)
from cityfed.federation.secagg import derive
from cityfed.ops.audit import AuditLog
from cityfed_client.evaluation import evaluate_city
from cityfed_client.fedavg import local_update
from cityfed_client.node_config import NodeSettings, default_state
from cityfed_client.policy import (
    RunHistory,
    check_data,
    check_instruction,
    check_levels,
    counts_as_round,
)
from cityfed_client.privacy import Ledger
from cityfed_client.secagg import SecAggRefusedError, SecureCity, audit_fields, load_secret

__all__ = ["INSTALLED_APP", "NodeRuntime", "answer", "answer_for_city", "responder"]

logger = logging.getLogger(__name__)

#: How the audit trail names the code that answered: the ClientApp installed here.
INSTALLED_APP = "cityfed_client.app:app (installed)"


@dataclass(frozen=True)
class NodeRuntime:
    """What a city node knows besides the message: the run, its state, the app.

    Parameters
    ----------
    run : str
        The run the message belongs to (Flower's run id).
    settings : NodeSettings
        The city's config and the node's state folder (audit trail, cache).
    app : str
        The app that delivered the message, as the audit trail records it.
    """

    run: str
    settings: NodeSettings
    app: str = INSTALLED_APP

    @property
    def audit(self) -> AuditLog:
        """The city's audit trail."""
        return AuditLog(self.settings.audit_log)

    @property
    def cache(self) -> DataCache:
        """The harmonised data of the run."""
        return DataCache(self.settings.cache, self.run)


def answer(ins: Instruction, node: NodeRuntime) -> CityReply:
    """Load the city named by its ``city.toml`` and answer one instruction.

    A broken config or CSV, a policy refusal or too few rows give a reply with
    status ``failed`` or ``refused`` and a one-line reason, never an exception: one
    bad city must not bring down the federation. A city that cannot write its
    audit trail does not answer.
    """
    path = node.settings.city_config
    try:
        city = load_city(path)
    except CityFedError as exc:
        reply = CityReply.failed(path.stem, _redact(str(exc), [path]))
        return _audited(node, ins, reply)
    reply = answer_for_city(ins, city, node)
    if reply.reason:
        reason = _redact(reply.reason, [path] if city.database else [path, city.data])
        reply = replace(reply, outcome=replace(reply.outcome, reason=reason))
    return _audited(node, ins, reply)


def responder(city_config: Path, state: Path | None = None) -> Callable[[Instruction], CityReply]:
    """A city answering in this process (tests, benchmarks, in-process exchanges).

    The responder is one run of its own (a fresh run id) on the city's node state
    (default: beside its ``city.toml``, as for ``cityfed city start``).
    """
    settings = NodeSettings(city_config, state or default_state(city_config))
    node = NodeRuntime(run=f"local-{uuid.uuid4().hex[:12]}", settings=settings)

    def respond(ins: Instruction) -> CityReply:
        return answer(ins, node)

    return respond


def _sent(reply: CityReply) -> dict[str, Any]:
    """Shapes and counts of what a reply carries (for the audit trail: no values)."""
    sent: dict[str, Any] = {}
    if reply.moments is not None:
        sent["moments"] = {"n": reply.moments.n, "scatter": list(reply.moments.scatter.shape)}
    if reply.folds:
        sent["fold_moments"] = [fold.n for fold in reply.folds]
    if reply.terms:
        sent["newton_terms"] = {"points": len(reply.terms), "hess": list(reply.terms[0].hess.shape)}
    if reply.weights is not None:
        sent["weights"] = list(reply.weights.shape)
    if reply.keys is not None:
        sent["secagg_keys"] = 3
    if reply.sealed:
        sent["sealed_shares"] = len(reply.sealed)
    if reply.masked is not None:
        sent["masked_bytes"] = len(reply.masked)
    if reply.revealed:
        sent["revealed_shares"] = len(reply.revealed)
    if reply.gram is not None:
        sent["noisy_gram"] = int(reply.gram.size)
    if reply.outcome.epsilon_run:
        sent["epsilon_run"] = reply.outcome.epsilon_run
    evaluation = reply.outcome.evaluation
    if evaluation is not None:
        sent["evaluation"] = {
            "scores": evaluation.holdout is not None,
            "calibration_bins": [b.count for b in evaluation.calibration],
            "learning_curve_rows": [point.rows for point in evaluation.learning_curve],
        }
    return sent


def _audited(node: NodeRuntime, ins: Instruction, reply: CityReply) -> CityReply:
    outcome = reply.outcome
    kind = "answer" if outcome.status == "ok" else outcome.status
    try:
        node.audit.append(
            kind,
            run=node.run,
            app=node.app,
            city=outcome.city,
            federation=ins.federation.name,
            federation_digest=federation_digest(ins.federation),
            phase=ins.phase,
            round=ins.round,
            instruction=instruction_digest(ins),
            counts_round=counts_as_round(ins),
            secagg=None
            if ins.secagg is None
            else audit_fields(ins.secagg, question_digest(ins), point_digests(ins)),
            rows_train=outcome.rows_train,
            reason=outcome.reason or None,
            sent=_sent(reply) if outcome.status == "ok" else {},
        )
    except (OSError, CityFedError) as exc:
        logger.error("city %s: audit trail not writable, nothing sent: %s", outcome.city, exc)
        return CityReply.failed(outcome.city, "the city cannot write its audit trail")
    return reply


def _redact(text: str, paths: list[Path]) -> str:
    """Keep file names but not the city's folders in what leaves the city."""
    for path in paths:
        for folder in {str(path.parent), str(path.resolve().parent)}:
            if folder not in ("", "."):
                text = text.replace(folder + os.sep, "")
    return text


def _rows_needed_again(ins: Instruction, city: CitySpec) -> bool:
    """Whether a later message of the run reads this city's rows again.

    The moments of a linear or ridge model without a holdout (the federation's
    or the city's own) under plain aggregation are the run's only question to
    the city: keeping its rows would only leave them on disk.
    """
    fed = ins.federation
    fraction, _ = row_set(city, fed)
    return ins.phase != "moments" or not (
        fed.model in ("linear", "ridge")
        and fed.algorithm == "exact"
        and fraction == 0.0
        and ins.secagg is None
    )


def _block_terms(ins: Instruction) -> BlockTerms:
    """A block's Newton terms at every point the instruction sends."""
    assert ins.scaler is not None and ins.weights is not None  # checked by the policy
    scaler, points = ins.scaler, np.atleast_2d(ins.weights)

    def terms(X: np.ndarray, y: np.ndarray, offset: np.ndarray | None) -> list[NewtonTerms]:
        Z = scaler.design(X)
        return [_newton_terms(ins, Z, y, w, offset) for w in points]

    return terms


def _newton_terms(
    ins: Instruction, Z: np.ndarray, y: np.ndarray, w: np.ndarray, offset: np.ndarray | None
) -> NewtonTerms:
    """The family's loss, gradient and Hessian of rows ``Z`` at one point sent."""
    if ins.federation.model == "poisson":
        return poisson_terms(Z, y, w, offset)
    return logistic_terms(Z, y, w)


def _bare(city: str) -> CityOutcome:
    """The outcome of a secure-aggregation step that reads no rows."""
    return CityOutcome(city=city, status="ok")


def _masked(
    outcome: CityOutcome, secure: SecureCity, ins: Instruction, values: list[int]
) -> CityReply:
    """The statistics ``values`` masked for the secure sum (or a refusal saying why)."""
    assert ins.secagg is not None
    try:
        return CityReply(outcome, masked=secure.masked(ins.secagg, values))
    except SecAggRefusedError as exc:
        return CityReply(replace(outcome, status="refused", reason=str(exc)))
    except ValueError as exc:  # a statistic outside the secure sum's range
        return CityReply(replace(outcome, status="failed", reason=f"secure aggregation: {exc}"))


def _private(
    ins: Instruction,
    city: CitySpec,
    node: NodeRuntime,
    data: CityData,
    outcome: CityOutcome,
    secure: SecureCity | None,
) -> CityReply:
    """A private run's release: clipped rows, the city's own noise, charged to its ledger.

    The noise is the city's: its multiplier from the agreed ``epsilon``,
    ``delta`` and plan (:mod:`cityfed_client.privacy`), its sensitivity from the
    declared bounds, its random numbers seeded from the node's secret and the
    question (asked again, the same question gets the same answer: repeats
    cannot be averaged). Under secure aggregation each city adds the share
    ``1 / threshold`` of the variance: a sum can only be unmasked with at least
    ``threshold`` cities in it (the city checked the threshold is a majority of
    the roster and at least ``min_cities``), so it carries the whole noise once.
    """
    fed = ins.federation
    if ins.phase == "newton" and np.atleast_2d(np.asarray(ins.weights)).shape[0] != 1:
        return CityReply(
            replace(
                outcome, status="refused", reason="privacy: a private run asks one point per round"
            )
        )
    question = question_digest(ins)
    try:
        charge = Ledger(node.settings.privacy_ledger).charge(city, fed, node.run, question)
        secret = secure.secret if secure is not None else load_secret(node.settings.secagg_secret)
    except (OSError, ValueError, CityFedError, SecAggRefusedError) as exc:
        return CityReply.failed(city.name, f"privacy: the city's ledger or secret: {exc}")
    if isinstance(charge, str):
        logger.warning("city %s refuses: %s", city.name, charge)
        return CityReply(replace(outcome, status="refused", reason=charge))
    seed = derive(secret, node.run, "noise", question)
    rng = np.random.default_rng(int.from_bytes(seed, "little"))
    share = 1.0
    if secure is not None and ins.secagg is not None:
        share = 1.0 / np.sqrt(max(ins.secagg.threshold, 1))
    low, high = fed.clip_range()
    spent = replace(outcome, epsilon_run=charge.epsilon_run, epsilon_total=charge.epsilon_total)
    if ins.phase == "moments":
        table = np.column_stack([data.X_train, data.y_train])
        sigma = charge.multiplier * gram_sensitivity(table.shape[1]) * share
        gram = noisy_gram(table, low, high, sigma, rng)
        if secure is not None:
            return _masked(spent, secure, ins, [fixed(v) for v in gram.tolist()])
        return CityReply(spent, gram=gram)
    assert ins.scaler is not None and ins.weights is not None
    X = clip_rows(data.X_train, low[:-1], high[:-1])
    Z = ins.scaler.design(X)
    sigma = charge.multiplier * gradient_sensitivity(ins.scaler, low[:-1], high[:-1]) * share
    point = np.atleast_2d(ins.weights)[0]
    terms = noisy_gradient(
        _newton_terms(ins, Z, data.y_train, point, data.offset_train), sigma, rng
    )
    if secure is not None:
        return _masked(spent, secure, ins, terms_vector([terms]))
    return CityReply(spent, terms=(terms,))


def answer_for_city(ins: Instruction, city: CitySpec, node: NodeRuntime) -> CityReply:
    """Answer one instruction for an already parsed city spec, under its policy."""
    fed = ins.federation
    digest = federation_digest(fed)
    try:
        history = RunHistory.of(node.audit.entries(), run=node.run, digest=digest)
    except (OSError, ValueError) as exc:
        logger.error("city %s: audit trail not readable, nothing sent: %s", city.name, exc)
        return CityReply.failed(city.name, "the city cannot read its audit trail")
    refusal = check_instruction(ins, city, history)
    if refusal is not None:
        logger.warning("city %s refuses %s: %s", city.name, ins.phase, refusal)
        return CityReply(CityOutcome(city=city.name, status="refused", reason=refusal))
    secure = None
    if ins.secagg is not None:
        try:
            secret = load_secret(node.settings.secagg_secret)
            identity = load_secret(node.settings.secagg_identity) if fed.city_keys else None
        except (OSError, SecAggRefusedError) as exc:
            return CityReply.failed(city.name, f"secure aggregation: the node's secret: {exc}")
        secure = SecureCity(secret, node.run, city.name, fed, history.secagg, identity)
        try:
            secure.check(
                ins.secagg, instruction_digest(ins), question_digest(ins), point_digests(ins)
            )
            if ins.secagg.step == "shares":
                return CityReply(_bare(city.name), sealed=secure.shares(ins.secagg))
            if ins.secagg.step == "confirm":
                secure.confirm(ins.secagg)
                return CityReply(_bare(city.name))
            if ins.secagg.step == "unmask":
                return CityReply(_bare(city.name), revealed=secure.unmask(ins.secagg))
        except SecAggRefusedError as exc:
            logger.warning("city %s refuses: %s", city.name, exc)
            return CityReply(CityOutcome(city=city.name, status="refused", reason=str(exc)))
    cache = node.cache
    data: CityData | None = None
    summary: Summary | None = None
    try:
        if ins.phase in ("moments", "newton") and not fed.private:
            # Statistics only: one pass over the training rows in blocks (streamed
            # from the source in bounded memory unless the run already keeps them).
            blocks, tally = cache.training(city, fed, keep=_rows_needed_again(ins, city))
            keys_only = secure is not None and ins.secagg is not None and ins.secagg.step == "keys"
            terms = None if ins.phase != "newton" or keys_only else _block_terms(ins)
            summary = summarise(blocks, city, fed, terms)
            rows_read, rows_train, reasons = tally.rows_read, tally.rows_train, tally.reasons
            sums = summary.sums
        else:
            data = cache.load(city, fed)
            rows_read, rows_train = data.rows_read, int(data.y_train.size)
            reasons, sums = dict(data.drop_reasons), data.X_train.sum(axis=0)
    except CityFedError as exc:
        logger.warning("city %s cannot take part: %s", city.name, exc)
        return CityReply.failed(city.name, str(exc))
    outcome = CityOutcome(
        city=city.name,
        status="ok",
        rows_read=rows_read,
        rows_train=rows_train,
        drop_reasons=reasons,
    )
    too_few = check_data(fed, city, rows_train) or check_levels(fed, city, sums, rows_train)
    if too_few is not None:
        return CityReply(replace(outcome, status="refused", reason=too_few))
    if (fed.secure_aggregation or fed.private) and not city.policy.release_counts:
        # The masked or noisy statistics no longer tell the city's counts; it keeps them.
        outcome = replace(outcome, rows_read=0, rows_train=0, drop_reasons={}, counts_withheld=True)
    if secure is not None and ins.secagg is not None and ins.secagg.step == "keys":
        return CityReply(outcome, keys=secure.keys(ins.secagg.aggregation))
    if summary is not None and ins.phase == "moments":
        if secure is not None and ins.secagg is not None:
            return _masked(outcome, secure, ins, moments_vector((summary.moments, *summary.folds)))
        return CityReply(outcome, moments=summary.moments, folds=summary.folds)
    if summary is not None:  # newton
        if secure is not None and ins.secagg is not None:
            return _masked(outcome, secure, ins, terms_vector(summary.terms))
        return CityReply(outcome, terms=summary.terms)
    assert data is not None
    if fed.private and ins.phase in ("moments", "newton"):
        return _private(ins, city, node, data, outcome, secure)
    assert ins.scaler is not None and ins.weights is not None  # checked by the policy
    if ins.phase == "fedavg":
        Z = ins.scaler.transform(data.X_train)
        weights = local_update(Z, data.y_train, ins.weights, fed, ins.round)
        return CityReply(outcome, weights=weights)
    evaluation = evaluate_city(
        data, city, fed, ins.scaler, ins.weights, min_rows=city.policy.min_bin_rows
    )
    cache.forget(city, fed)  # the evaluation is a run's last message
    return CityReply(replace(outcome, evaluation=evaluation))
