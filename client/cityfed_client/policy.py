"""The city's disclosure policy, applied to every instruction before anything is computed.

The city holds its agreement (the federation specs it accepted, by digest) and its
own floors and ceilings in ``city.toml`` (``[policy]``); the stricter of the city's
and the federation's limit always applies. Each refusal names the policy key and
the value that applied. The counts of what a run already asked for come from the
city's own audit trail (:class:`RunHistory`), never from the coordinator.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cityfed.config.spec import CitySpec, FederationSpec, federation_digest
from cityfed.federation.protocol import Instruction, instruction_digest
from cityfed.typing import FloatArray

__all__ = [
    "DAY_SECONDS",
    "RunHistory",
    "check_data",
    "check_instruction",
    "check_levels",
    "counts_as_round",
    "training_round_limit",
]

#: The window of ``max_runs_per_day``.
DAY_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class RunHistory:
    """What this city already answered: in the current run, and in the last day."""

    training_answers: int = 0
    evaluation_answers: int = 0
    runs_today: int = 0  # other runs of the same agreed federation
    #: Digests of the questions answered in this run (:func:`instruction_digest`).
    answered: frozenset[str] = frozenset()
    #: Secure aggregation: what each (aggregation, step) of this run was answered
    #: for (the question's digest, the roster's, the indices).
    secagg: Mapping[tuple[int, str], Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        entries: Iterable[Mapping[str, Any]],
        *,
        run: str,
        digest: str,
        now: float | None = None,
    ) -> RunHistory:
        """Count the audit entries of this city (answers only, refusals do not count).

        The same question answered twice (asked again after a lost reply) counts once.
        """
        since = (time.time() if now is None else now) - DAY_SECONDS
        training = evaluations = 0
        answered: set[str] = set()
        other_runs: set[str] = set()
        secure: dict[tuple[int, str], Mapping[str, Any]] = {}
        for entry in entries:
            if entry.get("kind") != "answer" or entry.get("federation_digest") != digest:
                continue
            if entry.get("run") == run:
                question = entry.get("instruction")
                step = entry.get("secagg")
                if isinstance(step, Mapping):
                    key = (int(step.get("aggregation", -1)), str(step.get("step")))
                    secure.setdefault(key, {**step, "instruction": question})
                if not entry.get("counts_round", True):
                    continue
                if question is not None and question in answered:
                    continue
                if question is not None:
                    answered.add(str(question))
                if entry.get("phase") == "evaluate":
                    evaluations += 1
                else:
                    training += 1
            elif float(entry.get("time", 0.0)) >= since:
                other_runs.add(str(entry.get("run")))
        return cls(training, evaluations, len(other_runs), frozenset(answered), secure)


def counts_as_round(ins: Instruction) -> bool:
    """Whether answering ``ins`` counts against the city's round limits.

    The steps of a secure sum that carry no statistics (keys, shares, reveals) do not.
    """
    return ins.phase != "secagg"


def training_round_limit(city: CitySpec, fed: FederationSpec) -> tuple[int, str]:
    """Training exchanges a run may ask for, and which limit set it.

    The federation's own bound is its statistics round plus its iterative rounds
    (``max_rounds`` Newton evaluations, or ``rounds`` of FedAvg).
    """
    if fed.algorithm == "fedavg":
        federation_bound = 1 + fed.rounds
    elif fed.newton:
        # Poisson with an exposure asks one round more: the terms at its start.
        federation_bound = 1 + fed.max_rounds + (fed.exposure is not None)
    else:
        federation_bound = 1
    if city.policy.max_rounds <= federation_bound:
        return city.policy.max_rounds, f"[policy] max_rounds = {city.policy.max_rounds}"
    return federation_bound, "the federation's own round limit"


def _finite_vector(values: Any, size: int) -> bool:
    array = np.asarray(values)
    return array.shape == (size,) and bool(np.all(np.isfinite(array)))


def _over_limits(ins: Instruction, city: CitySpec, history: RunHistory) -> str | None:
    """Why a new question would exceed the city's limits on runs and rounds, or None."""
    policy, fed = city.policy, ins.federation
    new_run = history.training_answers == 0 and history.evaluation_answers == 0
    if new_run and history.runs_today >= policy.max_runs_per_day:
        return (
            f"[policy] max_runs_per_day = {policy.max_runs_per_day}: this city already "
            f"answered {history.runs_today} runs of {fed.name!r} in the last 24 hours"
        )
    if ins.phase == "evaluate":
        if not policy.release_scores:
            return (
                "[policy] release_scores = false: this city keeps its holdout scores, "
                "calibration and learning curve to itself"
            )
        if history.evaluation_answers >= policy.max_evaluations:
            return (
                f"[policy] max_evaluations = {policy.max_evaluations}: this run already had "
                f"{history.evaluation_answers} evaluation exchange(s)"
            )
        return None
    limit, which = training_round_limit(city, fed)
    if history.training_answers >= limit:
        return f"{which}: this run already had {history.training_answers} training rounds"
    return None


def check_instruction(ins: Instruction, city: CitySpec, history: RunHistory) -> str | None:
    """Why the city refuses this instruction, or None when it may answer.

    Parameters
    ----------
    ins : Instruction
        What the coordinator asks.
    city : CitySpec
        The city's spec with its ``[policy]``.
    history : RunHistory
        What the city already answered (from its audit trail).
    """
    policy, fed = city.policy, ins.federation
    if policy.agreement(fed) is None:
        agreed = ", ".join(a.source for a in policy.agreed) or "none"
        return (
            f"[policy] agreed = [{agreed}]: federation {fed.name!r} "
            f"({federation_digest(fed)[:19]}…) is not one this city agreed to"
        )
    unmapped = [v.name for v in fed.variables if city.column(v.name) is None]
    if unmapped:
        return (
            f"[columns]: federation column {unmapped[0]!r} is not mapped in "
            f"{city.source}; this city summarises only the columns it maps"
        )
    if counts_as_round(ins) and instruction_digest(ins) not in history.answered:
        # a repeat is the same answer; a secure sum's keys, shares and reveals carry
        # no statistics (its masked step counts)
        over = _over_limits(ins, city, history)
        if over is not None:
            return over
    secure = _secure_problem(ins, city)
    if secure is not None:
        return secure
    if fed.alpha_cv and fed.cv_folds > policy.max_folds:
        return (
            f'[policy] max_folds = {policy.max_folds}: alpha = "cv" asks the statistics of '
            f"{fed.cv_folds} folds"
        )
    d = len(fed.design)
    if ins.phase not in ("moments", "secagg"):
        if ins.scaler is None or ins.weights is None:
            return f"phase {ins.phase!r} sent without a model"
        points = np.asarray(ins.weights)
        if ins.phase == "newton" and points.ndim == 2:
            if not 1 <= points.shape[0] <= policy.max_points_per_round:
                return (
                    f"[policy] max_points_per_round = {policy.max_points_per_round}: "
                    f"{points.shape[0]} points asked in one round"
                )
            if not all(_finite_vector(row, d + 1) for row in points):
                return f"a point sent is not {d + 1} finite numbers"
        elif not _finite_vector(points, d + 1):
            return f"the weights sent are not {d + 1} finite numbers"
        if not (_finite_vector(ins.scaler.mean, d) and _finite_vector(ins.scaler.scale, d)):
            return f"the scaler sent is not {d} finite means and scales"
        if np.any(np.asarray(ins.scaler.scale) <= 0.0):
            return "the scaler sent has a scale <= 0"
        largest = float(np.max(np.abs(ins.weights)))
        if largest > policy.max_abs_weight:
            return (
                f"[policy] max_abs_weight = {policy.max_abs_weight:g}: a weight sent is "
                f"{largest:.3g}"
            )
    return None


def _secure_problem(ins: Instruction, city: CitySpec) -> str | None:
    """Why a secure-aggregation step (or its absence) is refused, or None."""
    sa = ins.secagg
    if sa is None:
        if ins.phase == "secagg":
            return "a secure-aggregation phase without its step"
        if city.policy.secure_aggregation and ins.phase != "evaluate":
            return (
                "[policy] secure_aggregation = true: this city sends its statistics only "
                "masked for a secure sum"
            )
        if ins.federation.secure_aggregation and ins.phase != "evaluate":
            return (
                "[privacy] secure_aggregation = true in the agreed federation: statistics "
                "are sent only masked for a secure sum"
            )
        return None
    if not ins.federation.secure_aggregation:
        return "secure aggregation asked, but the agreed federation does not declare it"
    if city.policy.require_signed_keys and not ins.federation.city_keys:
        return (
            "[policy] require_signed_keys = true: the agreed federation lists no "
            "[privacy.city_keys], so the other cities' keys cannot be checked"
        )
    statistics = sa.step == "masked"
    if statistics != (ins.phase in ("moments", "newton")) or (
        not statistics and ins.phase != "secagg"
    ):
        return f"secure aggregation: step {sa.step!r} does not go with phase {ins.phase!r}"
    return None


def check_levels(
    fed: FederationSpec, city: CitySpec, sums: FloatArray, rows_train: int
) -> str | None:
    """Why the city refuses a categorical feature whose level singles out a few rows, or None.

    A level indicator is a group: its cross-products with the other columns are
    sums over that level's rows. A federation could declare a level per
    timestamp and read one row from each; so every level the city has rows of
    must have at least ``[policy] min_bin_rows`` of them (levels it has no row
    of reveal nothing). ``sums`` are the design's column sums over the
    ``rows_train`` training rows (an indicator's sum: its level's count).
    """
    floor = city.policy.min_bin_rows
    column = 0
    for feature in fed.features:
        width = len(feature.indicators())
        if not feature.categorical:
            column += width
            continue
        counts = sums[column : column + width]
        reference = rows_train - float(counts.sum())
        for level, count in zip(feature.levels, [reference, *counts.tolist()], strict=True):
            if 0 < round(count) < floor:
                return (
                    f"[policy] min_bin_rows = {floor}: level {level!r} of {feature.name!r} has "
                    f"only {round(count)} training rows; no statistics are sent"
                )
        column += width
    return None


def check_data(fed: FederationSpec, city: CitySpec, rows_train: int) -> str | None:
    """Why the city's rows are too few to answer at all, or None."""
    policy = city.policy
    if policy.min_rows >= fed.min_rows_per_city:
        floor, which = policy.min_rows, f"[policy] min_rows = {policy.min_rows}"
    else:
        floor, which = fed.min_rows_per_city, f"min_rows_per_city = {fed.min_rows_per_city}"
    if rows_train < floor:
        return (
            f"only {rows_train} usable training rows; {which} requires at least {floor}, "
            "so no statistics are sent"
        )
    parameters = len(fed.design) + 1
    if parameters > policy.max_params_fraction * rows_train:
        return (
            f"[policy] max_params_fraction = {policy.max_params_fraction:g}: {parameters} "
            f"parameters for {rows_train} training rows is more than that fraction"
        )
    if fed.alpha_cv and rows_train // fed.cv_folds < floor:
        return (
            f'alpha = "cv": {fed.cv_folds} folds of {rows_train} training rows have fewer than '
            f"{floor} rows each ({which}), so no statistics are sent"
        )
    return None
