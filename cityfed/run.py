"""The outcome of a federation run, as the coordinator knows it (no rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cityfed.model import FederatedModel

__all__ = ["CityOutcome", "RunResult"]


@dataclass
class CityOutcome:
    """What one city did in a run: took part, refused, or failed, and its scores."""

    city: str
    status: str
    reason: str = ""
    rows_train: int = 0
    rows_read: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    rows_used: int = 0
    evaluation: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunResult:
    """The fitted model and every city's outcome."""

    model: FederatedModel
    cities: dict[str, CityOutcome]
    wall_seconds: float
    aggregation_seconds: float = 0.0
