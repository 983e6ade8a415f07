"""What each city did in a run, and the run's result, as the coordinator knows it (no rows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from cityfed.federation.evaluation import CityEvaluation
from cityfed.model.record import FederatedModel

__all__ = ["CityOutcome", "RoundFate", "RunResult", "Status"]

#: A city took part (``ok``), declined under a limit (``refused``) or could not (``failed``).
Status = Literal["ok", "refused", "failed"]


@dataclass(frozen=True)
class RoundFate:
    """What became of one city in one exchange of a run (the coordinator's record)."""

    round: int
    phase: str
    status: Status


@dataclass(frozen=True)
class CityOutcome:
    """One city's part in a run: its status, its row counts and its evaluation.

    A city's reply carries one of these; the run keeps the latest per city,
    folded with :meth:`then`.
    """

    city: str
    status: Status
    reason: str = ""
    rows_read: int = 0
    rows_train: int = 0
    drop_reasons: Mapping[str, int] = field(default_factory=dict)
    evaluation: CityEvaluation | None = None
    #: A private run: the ε this run spent of the city's budget, and all its runs so far.
    epsilon_run: float = 0.0
    epsilon_total: float = 0.0
    #: The city kept its row counts and drop reasons to itself (``[policy]
    #: release_counts = false`` under secure aggregation or differential privacy).
    counts_withheld: bool = False
    #: The city's fate in each exchange it was asked to take part in, in order.
    rounds: tuple[RoundFate, ...] = ()

    @property
    def rows_used(self) -> int:
        """Rows left after dropping those with missing values."""
        return self.rows_read - sum(self.drop_reasons.values())

    @property
    def rows_dropped(self) -> int:
        """Rows dropped under ``missing = "drop"``."""
        return self.rows_read - self.rows_used

    @property
    def rows_holdout(self) -> int:
        """Usable rows kept back for evaluation."""
        return max(self.rows_used - self.rows_train, 0)

    def then(self, later: CityOutcome) -> CityOutcome:
        """The outcome after a later reply of the same node.

        A failure or refusal is kept once it happened; row counts come from the
        latest reply that read the city's data (a reply that never got that far,
        such as a timeout, keeps the earlier counts); an evaluation, once sent,
        stays.
        """
        status, reason = self.status, self.reason
        if later.status != "ok":
            status, reason = later.status, later.reason
        counts = later if later.rows_read else self
        return replace(
            self,
            city=later.city,
            status=status,
            reason=reason,
            rows_read=counts.rows_read,
            rows_train=counts.rows_train,
            drop_reasons=dict(counts.drop_reasons),
            counts_withheld=self.counts_withheld or later.counts_withheld,
            evaluation=later.evaluation or self.evaluation,
            epsilon_run=max(self.epsilon_run, later.epsilon_run),
            epsilon_total=max(self.epsilon_total, later.epsilon_total),
        )


@dataclass(frozen=True)
class RunResult:
    """The fitted model and every city's outcome."""

    model: FederatedModel
    cities: Mapping[str, CityOutcome]
    wall_seconds: float
    aggregation_seconds: float = 0.0
