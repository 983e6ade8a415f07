"""The city's privacy accountant and the budget it enforces itself.

The noise of a private run is calibrated by the city, not the coordinator: from
the agreed federation's ``epsilon`` and ``delta`` and the number of releases
its plan needs (:attr:`~cityfed.config.spec.FederationSpec.releases`),
``dp-accounting``'s Rényi accountant gives the Gaussian noise multiplier whose
composition over the releases spends exactly that budget. The ε of the
releases made so far comes from the same accountant, never by hand.

The ledger is a hash-chained log on the city's disk (``privacy-ledger.jsonl``,
next to its audit trail, 0600): one line per release, with the run's ε so far.
Runs compose by summing their ε and δ (basic composition: no assumption about
how the runs relate). Before a run's first release the city refuses it if the
run's whole plan would exceed ``[policy] budget_epsilon`` (or ``budget_delta``),
and before every release if that release would, naming what is left.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

from cityfed.config.spec import CitySpec, FederationSpec
from cityfed.errors import CityFedError
from cityfed.ops.audit import AuditLog

__all__ = ["Charge", "Ledger", "LedgerError", "epsilon_of", "noise_multiplier"]


class LedgerError(CityFedError):
    """The city's privacy ledger cannot be trusted (it was changed, or cannot be read)."""


def _accountant() -> rdp_privacy_accountant.RdpAccountant:
    return rdp_privacy_accountant.RdpAccountant()


def _gaussian(multiplier: float, releases: int) -> dp_event.DpEvent:
    return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(multiplier), releases)


@functools.lru_cache(maxsize=256)
def noise_multiplier(epsilon: float, delta: float, releases: int) -> float:
    """The Gaussian noise multiplier (sigma over sensitivity) that spends ``(epsilon, delta)``.

    Over ``releases`` Gaussian releases, composed by ``dp-accounting``'s RDP accountant.
    """
    return float(
        dp_accounting.calibrate_dp_mechanism(
            _accountant,
            lambda multiplier: _gaussian(float(multiplier), releases),
            epsilon,
            delta,
        )
    )


@functools.lru_cache(maxsize=1024)
def epsilon_of(multiplier: float, releases: int, delta: float) -> float:
    """The ε spent by ``releases`` Gaussian releases of ``multiplier``, at ``delta``."""
    if releases == 0:
        return 0.0
    accountant = _accountant()
    accountant.compose(_gaussian(multiplier, releases))
    return float(accountant.get_epsilon(delta))


@dataclass(frozen=True)
class Charge:
    """One release the city makes: its noise, and the ε of the run and of all runs after it."""

    multiplier: float
    release: int  # 1, 2, ... within the run
    epsilon_run: float
    epsilon_total: float
    delta_total: float
    repeat: bool  # the same question again: the same noisy answer, nothing new spent


class Ledger:
    """The city's record of what its private releases spent.

    Parameters
    ----------
    path : Path
        The ledger (a hash-chained JSON-lines log).
    """

    def __init__(self, path: Path) -> None:
        self.log = AuditLog(path)

    def _runs(self, entries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        runs: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if entry.get("kind") != "release":
                continue
            run = runs.setdefault(
                str(entry.get("run")), {"epsilon": 0.0, "delta": 0.0, "questions": set()}
            )
            run["epsilon"] = max(run["epsilon"], float(entry.get("epsilon_run", 0.0)))
            run["delta"] = max(run["delta"], float(entry.get("delta", 0.0)))
            run["questions"].add(str(entry.get("question")))
        return runs

    def spent(self) -> tuple[float, float]:
        """ε and δ spent over every run so far."""
        runs = self._runs(self.log.entries())
        return sum(r["epsilon"] for r in runs.values()), sum(r["delta"] for r in runs.values())

    def charge(self, city: CitySpec, fed: FederationSpec, run: str, question: str) -> Charge | str:
        """Record one release of ``question`` in ``run``, or say why the budget refuses it.

        Returns
        -------
        Charge or str
            The release's noise and ε, or the one-line refusal.

        Raises
        ------
        LedgerError
            If the ledger's hash chain is broken (lines changed or removed).
        """
        problems = self.log.verify()
        if problems:
            raise LedgerError(
                f"{self.log.path.name} is not intact ({problems[0]}): the budget spent "
                "cannot be known, so nothing private is released"
            )
        policy = city.policy
        runs = self._runs(self.log.entries())
        this = runs.pop(run, {"epsilon": 0.0, "delta": 0.0, "questions": set()})
        other_eps = sum(r["epsilon"] for r in runs.values())
        other_delta = sum(r["delta"] for r in runs.values())
        multiplier = noise_multiplier(fed.epsilon, fed.delta, fed.releases)
        done = len(this["questions"])
        if question in this["questions"]:
            return Charge(multiplier, done, this["epsilon"], other_eps + this["epsilon"],
                          other_delta + this["delta"], repeat=True)  # fmt: skip
        release = done + 1
        if release > fed.releases:
            return (
                f"privacy: the federation plans {fed.releases} private release(s) per run and "
                "this run already had them all"
            )
        epsilon_run = epsilon_of(multiplier, release, fed.delta)
        budget, delta_budget = policy.budget_epsilon, policy.budget_delta
        planned = fed.epsilon if done == 0 else epsilon_run
        if budget is not None and other_eps + planned > budget + 1e-12:
            left = max(budget - other_eps - this["epsilon"], 0.0)
            return (
                f"[policy] budget_epsilon = {budget:g}: this run would spend up to ε = "
                f"{planned:.4g} on top of {other_eps:.4g} already spent; ε left: {left:.4g}"
            )
        if delta_budget is not None and other_delta + fed.delta > delta_budget * (1 + 1e-12):
            return (
                f"[policy] budget_delta = {delta_budget:g}: this run's δ = {fed.delta:g} on top "
                f"of {other_delta:.3g} already spent exceeds it; δ left: "
                f"{max(delta_budget - other_delta, 0.0):.3g}"
            )
        self.log.append(
            "release",
            run=run,
            city=city.name,
            federation=fed.name,
            question=question,
            release=release,
            planned=fed.releases,
            noise_multiplier=multiplier,
            epsilon_run=epsilon_run,
            delta=fed.delta,
        )
        return Charge(multiplier, release, epsilon_run, other_eps + epsilon_run,
                      other_delta + fed.delta, repeat=False)  # fmt: skip
