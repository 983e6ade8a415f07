"""The coordinator's side of a run: exchanges, exact aggregation, the model.

Pure orchestration over an :class:`~cityfed.federation.exchange.Exchange` (no
Flower import: the same code runs over Flower's Grid and in-process exchanges);
the numerics live in :mod:`cityfed.core.linear`, :mod:`cityfed.core.logistic` and
:mod:`cityfed.core.stats`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np

from cityfed.config.spec import FederationSpec
from cityfed.core.fedavg import WeightedAverage
from cityfed.core.fixedpoint import decode, decode_fractions
from cityfed.core.inference import Inference, ols_inference, wald_inference
from cityfed.core.linear import fit_linear
from cityfed.core.logistic import (
    starting_intercept,
    terms_at_intercept,
)
from cityfed.core.newton import ROUND_LENGTHS, NewtonSolver, NewtonTerms, intercept_gram
from cityfed.core.poisson import (
    exposure_from_start,
    poisson_starting_intercept,
    poisson_terms_at_intercept,
)
from cityfed.core.privacy import gram_length, moments_from_gram
from cityfed.core.ridge_cv import RidgeCVResult, ridge_cv
from cityfed.core.scaling import Scaler
from cityfed.core.secure_stats import (
    moments_from_sums,
    moments_length,
    terms_from_vector,
    terms_length,
)
from cityfed.core.stats import Moments
from cityfed.errors import FederationError
from cityfed.federation.classes import one_class_problem
from cityfed.federation.exchange import Exchange
from cityfed.federation.outcome import CityOutcome, RoundFate, RunResult, Status
from cityfed.federation.protocol import CityReply, Instruction, Phase
from cityfed.model.record import FederatedModel
from cityfed.ops.progress import EventKind, Progress
from cityfed.typing import FloatArray
from cityfed.version import __version__
from cityfed_server.secure_sum import SecureSum, secure_sum

__all__ = ["train"]


def _quiet(kind: EventKind, message: str, **fields: object) -> None:
    del kind, message, fields


class _Run:
    """State of one run: who takes part, and how many training rounds so far."""

    def __init__(self, fed: FederationSpec, exchange: Exchange, progress: Progress) -> None:
        self.fed = fed
        self.exchange = exchange
        self.progress = progress
        self.outcomes: dict[int, CityOutcome] = {}
        self.fates: dict[int, dict[tuple[int, str], Status]] = {}
        self.active: list[int] = []
        self.rounds = 0
        self.aggregation_seconds = 0.0
        #: The first question of the run; asked again, word for word, when a city
        #: leaves, so that the scaler and the row count are those of the cities left.
        self.moments_question: Instruction | None = None
        #: The nodes whose moments the current scaler and row count sum.
        self.summed: set[int] = set()
        #: Each summed city's training rows and mean target (a class share for
        #: classification), from its moments: what a one-class refusal names.
        self.targets: dict[str, tuple[int, float]] = {}
        #: ``alpha = "cv"``: each fold's moments summed over the cities.
        self.folds: list[Moments] = []
        #: Secure sums so far (each city derives a sum's keys from its number).
        self.aggregations = 0
        #: Secure aggregation: the cities whose statistics the moments sum holds.
        self.in_sum: list[str] = []
        #: Bytes the secure sums received (keys, shares, masked vectors, reveals).
        self.secure_bytes = 0

    def left_since_last_round(self) -> bool:
        """True if a city whose moments are in the sums has left the run since."""
        return set(self.active) != self.summed

    def _record(self, node: int, reply: CityReply, ins: Instruction) -> None:
        earlier = self.outcomes.get(node)
        self.outcomes[node] = reply.outcome if earlier is None else earlier.then(reply.outcome)
        phase = ins.phase if ins.secagg is None else f"{ins.phase} ({ins.secagg.step})"
        self.fates.setdefault(node, {})[(ins.round, phase)] = reply.status
        if reply.status != "ok":
            self.progress(
                "city",
                f"{reply.city}: {reply.status}: {reply.reason}",
                city=reply.city,
                status=reply.status,
            )

    def _require_quorum(self) -> None:
        if len(self.active) >= self.fed.min_cities:
            return
        failures = "; ".join(
            f"{o.city}: {o.reason}" for o in self.outcomes.values() if o.status != "ok"
        )
        raise FederationError(
            f"only {len(self.active)} of {len(self.outcomes)} cities can take part; the "
            f"federation needs min_cities = {self.fed.min_cities}"
            + (f" ({failures})" if failures else "")
        )

    def secure(self, statistics: Instruction, length: int) -> SecureSum:
        """One secure sum of ``length`` numbers with the active cities.

        The cities that took every step stay active; a city whose masked
        statistics arrived is in the sum even if it left afterwards (its self
        mask is rebuilt from the others' shares). The sum is final: it is never
        asked again of fewer cities, since the difference of the two sums would
        be the departed city's statistics.
        """
        self.aggregations += 1
        tick = time.perf_counter()
        result = secure_sum(
            self.exchange,
            statistics,
            list(self.active),
            aggregation=self.aggregations,
            length=length,
            record=self._record,
        )
        self.aggregation_seconds += time.perf_counter() - tick
        self.secure_bytes += result.bytes_received
        self.active = sorted(result.answered)
        self._require_quorum()
        return result

    def round_trip(
        self,
        phase: Phase,
        *,
        scaler: Scaler,
        weights: FloatArray,
        valid: Callable[[CityReply], bool] = lambda reply: True,
    ) -> list[tuple[int, CityReply]]:
        """One training exchange with the active cities; failures leave the run.

        A reply that ``valid`` rejects is a failure too ("sent malformed statistics").
        """
        self.rounds += 1
        instruction = Instruction(phase, self.fed, self.rounds, scaler, weights)
        replies = []
        for node, reply in self.exchange.exchange(instruction, list(self.active)):
            if reply.status == "ok" and not valid(reply):
                reply = CityReply.failed(reply.city, "sent malformed statistics")
            self._record(node, reply, instruction)
            if reply.status == "ok":
                replies.append((node, reply))
        self.active = [node for node, _ in replies]
        self.active.sort()
        self._require_quorum()
        return replies


def _gathered(
    run: _Run,
    instruction: Instruction,
    valid: Callable[[CityReply], bool],
    *,
    announce: bool = False,
) -> list[tuple[str, int, CityReply]]:
    """One statistics exchange with the active cities: their well-formed replies, in name order.

    Every reply is recorded as it arrives; one from a second node answering as a city
    already heard of, or one that ``valid`` rejects, is a failure. With ``announce``
    each kept reply's row count is reported. The replies come back sorted by city name
    (then node), not by arrival, so that the same data gives the same model bytes on
    every run (floating-point sums depend on their order); they are held until then:
    O(cities * d^2).
    """
    kept: list[tuple[str, int, CityReply]] = []
    first_node: dict[str, int] = {}  # city name -> first node that answered as it
    for node, reply in run.exchange.exchange(instruction, list(run.active)):
        run._record(node, reply, instruction)
        first_node.setdefault(reply.city, node)
        if reply.status != "ok":
            continue
        if first_node[reply.city] != node:  # O(1): this loop stays linear in cities
            run._record(
                node,
                CityReply.failed(reply.city, "another node already answers as this city"),
                instruction,
            )
            continue
        if not valid(reply):
            run._record(
                node, CityReply.failed(reply.city, "sent malformed statistics"), instruction
            )
            continue
        kept.append((reply.city, node, reply))
        if announce:
            run.progress("city", f"{reply.city}: statistics of {reply.n} rows", city=reply.city)
    return sorted(kept, key=lambda item: (item[0], item[1]))


def _secure_moments(run: _Run) -> Moments:
    """The cities' moments (total and folds) in one secure sum; never asked again.

    Raises
    ------
    FederationError
        If the sum does not decode to statistics (counts not whole, values not finite).
    """
    fed = run.fed
    dim = len(fed.design) + 1
    parts = 1 + (fed.cv_folds if fed.alpha_cv else 0)
    run.rounds += 1
    instruction = run.moments_question = Instruction("moments", fed, run.rounds)
    result = run.secure(instruction, moments_length(parts, dim))
    try:
        pooled = moments_from_sums(decode_fractions(result.total), parts, dim)
    except ValueError as exc:
        raise FederationError(f"{fed.name}: secure aggregation: {exc}") from None
    if not all(_finite(m) for m in pooled):
        raise FederationError(
            f"{fed.name}: the cities' statistics overflow when summed; declare the columns "
            "in units that scale them down"
        )
    run.folds = pooled[1:]
    run.summed = set(run.active)
    run.in_sum = result.cities
    run.progress(
        "info",
        f"secure sum of {len(result.summed)} cities' statistics: {pooled[0].n} rows in all",
    )
    return pooled[0]


def _private_moments(run: _Run) -> Moments:
    """A private run's moments: the cities' noisy triangles summed (masked or not), decoded.

    Raises
    ------
    FederationError
        If the sum is not finite, or too few cities answer.
    """
    fed = run.fed
    length = gram_length(len(fed.design) + 1)
    run.rounds += 1
    instruction = run.moments_question = Instruction("moments", fed, run.rounds)
    if fed.secure_aggregation:
        result = run.secure(instruction, length)
        released = decode(result.total)
        run.in_sum = result.cities
    else:

        def valid(reply: CityReply) -> bool:
            return (
                reply.gram is not None
                and reply.gram.shape == (length,)
                and bool(np.isfinite(reply.gram).all())
            )

        kept = _gathered(run, instruction, valid)
        released = np.zeros(length)
        for _, _, reply in kept:
            assert reply.gram is not None
            released = released + reply.gram
        run.active = sorted(node for _, node, _ in kept)
        run.in_sum = [city for city, _, _ in kept]
        run._require_quorum()
    if not np.isfinite(released).all():
        raise FederationError(f"{fed.name}: the cities' noisy statistics are not finite")
    low, high = fed.clip_range()
    run.summed = set(run.active)
    total = moments_from_gram(released, low, high, floor=float(fed.min_cities))
    run.progress("info", f"noisy statistics of {len(run.in_sum)} cities: about {total.n} rows")
    return total


def _moments_round(run: _Run) -> Moments:
    """The cities' moments, summed; asked again (the same question) after a city left."""
    if run.fed.private:
        return _private_moments(run)
    if run.fed.secure_aggregation:
        return _secure_moments(run)
    dim = len(run.fed.design) + 1
    k = run.fed.cv_folds if run.fed.alpha_cv else 0
    total = Moments.empty(dim)
    instruction = run.moments_question
    if instruction is None:
        run.rounds += 1
        instruction = run.moments_question = Instruction("moments", run.fed, run.rounds)

    def valid(reply: CityReply) -> bool:
        return (
            reply.moments is not None
            and reply.moments.dim == dim
            and _finite(reply.moments)
            and len(reply.folds) == k
            and all(f.dim == dim and _finite(f) for f in reply.folds)
        )

    kept = _gathered(run, instruction, valid, announce=True)
    tick = time.perf_counter()
    run.folds = [Moments.empty(dim) for _ in range(k)]
    for _, _, reply in kept:
        assert reply.moments is not None
        total = total.merge(reply.moments)
        for j, fold in enumerate(reply.folds):
            run.folds[j] = run.folds[j].merge(fold)
    run.aggregation_seconds += time.perf_counter() - tick
    if not _finite(total):
        raise FederationError(
            f"{run.fed.name}: the cities' statistics overflow when summed (values too large "
            "for double precision); declare the columns in units that scale them down"
        )
    nodes = [node for _, node, _ in kept]
    run.targets = {
        city: (int(r.moments.n), float(r.moments.mean[-1]))
        for city, _, r in kept
        if r.moments is not None
    }
    run.active = sorted(nodes)
    run.summed = set(nodes)
    run._require_quorum()
    return total


def _finite(moments: Moments) -> bool:
    """Every number of a city's statistics is finite (an overflow poisons every sum)."""
    return bool(
        np.isfinite(moments.mean).all()
        and np.isfinite(moments.low).all()
        and np.isfinite(moments.scatter).all()
    )


def _without_the_departed(
    run: _Run, scaler: Scaler, w: FloatArray
) -> tuple[Moments, Scaler, FloatArray]:
    """After a city left: the moments, scaler and ``w`` of the cities still in the run.

    The remaining cities are asked the run's first question again (they answer it
    as before, at no cost to their limits), so that the published model is the
    pooled fit of exactly the cities that completed the run: standardisation and
    row count included. ``w`` is carried over to the new scaler unchanged in
    federation units.
    """
    run.progress("info", "a city left the run; the others' statistics are summed again")
    total = _moments_round(run)
    new = _scaler(run.fed, total)
    coef, intercept = scaler.unscale(w[1:], float(w[0]))
    return total, new, new.rescale(coef, intercept)


def _scaler(fed: FederationSpec, total: Moments) -> Scaler:
    """The pooled scaler: numeric features standardised (if asked), indicators only centred."""
    return Scaler.from_moments(total, len(fed.design), fed.standardize, fed.indicator_mask)


def _require_two_classes(run: _Run, total: Moments) -> None:
    """Refuse, before any Newton round, a classification whose pooled labels are one class.

    Raises
    ------
    FederationError
        Naming every city's count of each class (under secure aggregation, where
        no city's counts are known, the pooled counts).
    """
    if run.fed.secure_aggregation or run.fed.private:
        ones = round(total.n * float(total.mean[-1] + total.low[-1]))
        if ones in (0, total.n):
            raise FederationError(
                f"{run.fed.name}: all {total.n} training rows of the cities are class "
                f"{int(ones > 0)}; a classifier needs both classes"
            )
        return
    counts = {
        city: (n - round(n * share), round(n * share)) for city, (n, share) in run.targets.items()
    }
    problem = one_class_problem(counts)
    if problem is not None:
        raise FederationError(f"{run.fed.name}: {problem}")


def _inference(
    fed: FederationSpec,
    total: Moments,
    scaler: Scaler,
    w: FloatArray,
    hessian: FloatArray | None,
    converged: bool,
) -> tuple[Inference | None, str]:
    """Standard errors of the fit, or why there are none (said in the model and report)."""
    if fed.algorithm == "fedavg":
        return None, "FedAvg is an iterative approximation: no standard errors"
    if fed.private:
        return None, (
            "differential privacy: the statistics are noisy, so standard errors computed "
            "from them would not have their nominal coverage; not reported"
        )
    if fed.model == "ridge":
        return None, (
            "ridge: the penalty biases the estimates, so standard errors and intervals "
            "would not have their nominal coverage; not reported"
        )
    try:
        if fed.model == "linear":
            return ols_inference(total, scaler, w[1:], float(w[0])), ""
        if hessian is None or not converged:
            return None, "the Newton fit did not converge: no standard errors"
        return wald_inference(scaler, w, hessian, int(total.n)), ""
    except ValueError as exc:
        return None, str(exc)


def _cross_validate(run: _Run) -> RidgeCVResult:
    """``alpha = "cv"``: the grid scored on the cities' folds, summed over the cities.

    Raises
    ------
    FederationError
        If the folds cannot be scored (a fold without rows, a constant target).
    """
    fed = run.fed
    try:
        return ridge_cv(
            run.folds,
            fed.alphas,
            standardize=fed.standardize,
            unscaled=fed.indicator_mask,
        )
    except ValueError as exc:
        raise FederationError(f'{fed.name}: alpha = "cv": {exc}') from None


def _in_city_order(replies: list[tuple[int, CityReply]]) -> list[tuple[int, CityReply]]:
    """Replies sorted by city name (then node): sums independent of arrival order."""
    return sorted(replies, key=lambda item: (item[1].city, item[0]))


def _summed_terms(replies: list[tuple[int, CityReply]], run: _Run) -> list[NewtonTerms]:
    """The cities' Newton terms at each point, summed in the order of their names."""
    tick = time.perf_counter()
    ordered = [reply.terms for _, reply in _in_city_order(replies)]
    if not ordered:
        raise FederationError("no city returned Newton terms")
    summed = list(ordered[0])
    for terms in ordered[1:]:
        summed = [a + b for a, b in zip(summed, terms, strict=True)]
    run.aggregation_seconds += time.perf_counter() - tick
    return summed


def _newton_sums(run: _Run, scaler: Scaler, points: FloatArray) -> list[NewtonTerms]:
    """The cities' Newton terms at every point, summed (in a secure sum if the federation says)."""
    if not run.fed.secure_aggregation:
        return _summed_terms(_newton_round(run, scaler, points), run)
    k, dim = points.shape
    run.rounds += 1
    instruction = Instruction("newton", run.fed, run.rounds, scaler, points)
    values = decode(run.secure(instruction, terms_length(k, dim)).total)
    if not np.isfinite(values).all():
        raise FederationError(f"{run.fed.name}: the summed Newton terms are not finite")
    return terms_from_vector(values, k, dim)


def _newton_round(run: _Run, scaler: Scaler, points: FloatArray) -> list[tuple[int, CityReply]]:
    """One Newton exchange: the terms at every point, well formed, from every active city."""
    k, dim = points.shape

    def valid(reply: CityReply) -> bool:
        return len(reply.terms) == k and all(
            t.grad.shape == (dim,)
            and t.hess.shape == (dim, dim)
            and np.isfinite(t.grad).all()
            and np.isfinite(t.hess).all()
            and not np.isnan(t.loss)
            for t in reply.terms
        )

    return run.round_trip("newton", scaler=scaler, weights=points, valid=valid)


def _started_solver(run: _Run, total: Moments, scaler: Scaler) -> NewtonSolver | None:
    """A Newton solver at the intercept-only optimum, its terms known; None if a city left.

    Logistic and Poisson without an exposure start from the moments alone. With
    an exposure the cities evaluate the start (one round), whose Hessian also
    gives the total exposure that scales Poisson's penalty
    (:func:`~cityfed.core.poisson.exposure_from_start`).
    """
    fed = run.fed
    dim = len(fed.design) + 1
    start = np.zeros(dim)
    penalty: FloatArray | None = None  # logistic: 1 on the slopes, scaled by C
    if fed.model == "logistic":
        C = fed.C
        start[0] = starting_intercept(total)
        terms = terms_at_intercept(total, scaler, start[0])
    else:
        try:
            start[0] = poisson_starting_intercept(total)
        except ValueError as exc:
            raise FederationError(f"{fed.name}: {exc}") from None
        if fed.exposure is None:
            terms, exposure = poisson_terms_at_intercept(total, scaler, start[0]), float(total.n)
        else:
            before = set(run.active)
            [terms] = _newton_sums(run, scaler, start[None, :])
            if set(run.active) != before and not fed.secure_aggregation:
                return None
            exposure = exposure_from_start(terms, start[0])
        C = 1.0
        penalty = np.full(dim, fed.alpha * exposure)
        penalty[0] = 0.0
    solver = NewtonSolver(
        C,
        dim,
        tolerance=fed.tolerance,
        max_evaluations=fed.max_rounds,
        penalty=penalty,
        lengths=ROUND_LENGTHS,
        halley=True,
    )
    solver.start(terms, start)
    return solver


def _fit_private_newton(run: _Run, total: Moments, scaler: Scaler) -> FloatArray:
    """Logistic under differential privacy: ``newton_rounds`` steps on noisy gradients.

    The objective is sklearn's, ``C * sum of log-losses + |slopes|^2 / 2``. Each
    step uses the cities' noisy gradient at one point and Böhning's bound on
    the Hessian, ``C * sum u u^T / 4 + penalty`` (from the private moments):
    a majorant everywhere, so each step decreases the objective and none
    overshoots (:mod:`cityfed.core.privacy`).
    """
    fed = run.fed
    dim = len(fed.design) + 1
    w = np.zeros(dim)
    w[0] = starting_intercept(total)
    penalty = np.ones(dim)
    penalty[0] = 0.0
    gram, _, _ = intercept_gram(total, scaler)
    bound = fed.C * gram / 4.0 + np.diag(penalty)
    for step in range(fed.newton_rounds):
        [terms] = _newton_sums(run, scaler, w[None, :])
        w = w - np.linalg.solve(bound, fed.C * terms.grad + penalty * w)
        run.progress(
            "round", f"private Newton step {step + 1} of {fed.newton_rounds}", round=run.rounds
        )
    return w


def _fit_newton(
    run: _Run, total: Moments, scaler: Scaler
) -> tuple[FloatArray, bool, Moments, Scaler, FloatArray | None]:
    """Logistic or Poisson by federated Newton rounds, restarted when a city leaves."""
    solver = _started_solver(run, total, scaler)
    while solver is None or not solver.done:
        if solver is None:  # a city left while the start was evaluated
            total, scaler, _ = _without_the_departed(run, scaler, np.zeros(len(run.fed.design) + 1))
            solver = _started_solver(run, total, scaler)
            continue
        before = set(run.active)
        summed = _newton_sums(run, scaler, solver.trials())
        if set(run.active) != before and run.fed.secure_aggregation:
            # The sums are valid (the departed city's terms are in them) and final:
            # Newton goes on with the others from new points, never asking a
            # point again (two sums of one point would give the city's terms away).
            run.progress("info", "a city left; Newton goes on with the others")
        elif set(run.active) != before:
            # A city left: its terms are gone from the sums, its rows from the scaler.
            # Newton goes on from its current point, carried to the new scaler.
            total, scaler, point = _without_the_departed(run, scaler, solver.w)
            run.progress("info", "Newton restarts from the current point")
            if run.fed.model == "poisson":
                # Poisson's penalty scales with the exposure of the cities left.
                solver = _restarted_poisson(run, total, scaler, point, solver)
            else:
                solver.restart(point)
            continue
        solver.observe_all(summed)
        run.progress("round", f"Newton round {run.rounds}: objective evaluated", round=run.rounds)
    hessian = None if solver.terms is None else solver.terms.hess
    return solver.w, solver.converged, total, scaler, hessian


def _restarted_poisson(
    run: _Run, total: Moments, scaler: Scaler, point: FloatArray, solver: NewtonSolver
) -> NewtonSolver | None:
    """Poisson after a departure: from ``point`` with the penalty of the rows left.

    Without an exposure the penalty is ``alpha * n`` for the new row count; with
    one, the start is evaluated again for the new total exposure.
    """
    if run.fed.exposure is not None:
        return _started_solver(run, total, scaler)
    solver.penalty[1:] = run.fed.alpha * float(total.n)
    solver.restart(point)
    return solver


def _fit_fedavg(run: _Run, total: Moments, scaler: Scaler) -> tuple[FloatArray, Moments, Scaler]:
    dim = len(run.fed.design) + 1
    weights = np.zeros(dim)
    for _ in range(run.fed.rounds):
        if run.left_since_last_round():
            total, scaler, weights = _without_the_departed(run, scaler, weights)
        average = WeightedAverage(dim)
        for _, reply in _in_city_order(run.round_trip("fedavg", scaler=scaler, weights=weights)):
            if reply.weights is not None and reply.weights.shape == (dim,):
                tick = time.perf_counter()
                average.add(reply.weights, reply.n)
                run.aggregation_seconds += time.perf_counter() - tick
        weights = average.mean()
        run.progress("round", f"FedAvg round {run.rounds}", round=run.rounds)
    if run.left_since_last_round():
        total, scaler, weights = _without_the_departed(run, scaler, weights)
    return weights, total, scaler


def train(
    fed: FederationSpec,
    exchange: Exchange,
    *,
    run_id: str,
    nodes: Sequence[int] | None = None,
    progress: Progress = _quiet,
) -> RunResult:
    """Fit the federation's model with the cities behind ``exchange``.

    Parameters
    ----------
    fed : FederationSpec
        What to fit.
    exchange : Exchange
        How to reach the cities.
    run_id : str
        Recorded in the model's provenance.
    nodes : Sequence[int], optional
        Nodes to ask; default every connected node.
    progress : callable
        ``progress(kind, message, **fields)`` for each step.

    Returns
    -------
    RunResult
        The model and every city's outcome, holdout scores included when
        ``holdout_fraction > 0``.

    Raises
    ------
    FederationError
        If fewer than ``min_cities`` cities can take part.
    """
    started = time.monotonic()
    run = _Run(fed, exchange, progress)
    run.active = sorted(nodes if nodes is not None else exchange.nodes())
    progress("info", f"asking {len(run.active)} cities for their statistics")
    total = _moments_round(run)
    scaler = _scaler(fed, total)
    converged = True
    metrics: dict[str, float] = {}
    hessian: FloatArray | None = None
    alpha = fed.alpha if fed.model in ("ridge", "poisson") else 0.0
    selection: RidgeCVResult | None = None
    if fed.task == "classification":
        _require_two_classes(run, total)
    if fed.algorithm == "fedavg":
        w, total, scaler = _fit_fedavg(run, total, scaler)
    elif fed.newton and fed.private:
        w = _fit_private_newton(run, total, scaler)
    elif fed.newton:
        w, converged, total, scaler, hessian = _fit_newton(run, total, scaler)
    else:
        tick = time.perf_counter()
        if fed.alpha_cv:
            selection = _cross_validate(run)
            alpha = selection.best_alpha
            progress("info", f"alpha = {alpha:g} chosen by {fed.cv_folds}-fold cross-validation")
        fit = fit_linear(
            total,
            penalty=alpha if fed.model == "ridge" else 0.0,
            standardize=fed.standardize,
            unscaled=fed.indicator_mask,
        )
        run.aggregation_seconds += time.perf_counter() - tick
        w = np.concatenate([[fit.intercept_scaled], fit.coef_scaled])
        if fit.train_r2 is not None:
            metrics["train_r2"] = fit.train_r2
        metrics["rank"] = float(fit.rank)
    training_rounds = run.rounds
    progress("info", f"model fitted in {training_rounds} training round(s)", rounds=training_rounds)

    coef, intercept = scaler.unscale(w[1:], float(w[0]))
    inference, inference_note = _inference(fed, total, scaler, w, hessian, converged)
    model = FederatedModel(
        kind=fed.model,
        task=fed.task,
        features=fed.design,
        categories=tuple((f.name, f.levels) for f in fed.features if f.categorical),
        exposure=fed.exposure,
        target=fed.target,
        standardize=fed.standardize,
        scaler=scaler,
        coef_scaled=w[1:].copy(),
        intercept_scaled=float(w[0]),
        coef=coef,
        intercept=intercept,
        alpha=alpha,
        C=fed.C if fed.model == "logistic" else 0.0,
        federation=fed.name,
        run_id=run_id,
        rounds=training_rounds,
        cities=tuple(
            sorted(
                run.in_sum
                if (fed.secure_aggregation or fed.private) and not fed.newton
                else (run.outcomes[n].city for n in run.active)
            )
        ),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        cityfed_version=__version__,
        algorithm=fed.algorithm,
        converged=converged,
        training_rows=int(total.n),
        min_rows_per_city=fed.min_rows_per_city,
        metrics=metrics,
        inference=inference,
        inference_note=inference_note,
        secure_aggregation=fed.secure_aggregation,
        epsilon=fed.epsilon,
        delta=fed.delta,
        privacy_spent=tuple(
            sorted(
                (o.city, o.epsilon_run, o.epsilon_total)
                for o in run.outcomes.values()
                if o.epsilon_run > 0
            )
        ),
        alpha_path=()
        if selection is None
        else tuple(zip(selection.alphas.tolist(), selection.mean_test_score.tolist(), strict=True)),
    )

    if fed.holdout_fraction > 0:
        progress("info", "cities score the models on their holdout rows")
        instruction = Instruction("evaluate", fed, run.rounds, scaler, w)
        for node, reply in exchange.exchange(instruction, list(run.active)):
            run.fates.setdefault(node, {})[(instruction.round, "evaluate")] = reply.status
            earlier = run.outcomes[node]
            if reply.status == "ok":
                run.outcomes[node] = replace(earlier, evaluation=reply.outcome.evaluation)
            else:
                reason = f"holdout evaluation failed: {reply.reason}"
                run.outcomes[node] = replace(earlier, reason=reason)
    outcomes = [
        replace(
            outcome,
            rounds=tuple(
                RoundFate(round=r, phase=phase, status=status)
                for (r, phase), status in run.fates.get(node, {}).items()
            ),
        )
        for node, outcome in run.outcomes.items()
    ]
    return RunResult(
        model=model,
        cities={o.city: o for o in outcomes},
        wall_seconds=time.monotonic() - started,
        aggregation_seconds=run.aggregation_seconds,
    )
