"""The published model as a frozen record: kind, features, scaler, coefficients, provenance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cityfed.config.spec import Algorithm, ModelKind, Task, VariableSpec, indicator_name
from cityfed.core.inference import Inference
from cityfed.core.scaling import Scaler
from cityfed.typing import FloatArray

__all__ = ["FederatedModel", "predict_centred"]


@dataclass(frozen=True)
class FederatedModel:
    """A fitted CityFed model with its provenance.

    ``coef_scaled`` / ``intercept_scaled`` act on features scaled by ``scaler``
    (centred at their pooled means, divided by their scales when standardised):
    predictions are computed that way. ``coef`` / ``intercept`` are the same
    model in federation units (``X @ coef + intercept``), for reading.
    """

    kind: ModelKind
    task: Task
    features: tuple[VariableSpec, ...]
    target: VariableSpec
    standardize: bool
    scaler: Scaler
    coef_scaled: FloatArray
    intercept_scaled: float
    coef: FloatArray
    intercept: float
    alpha: float = 0.0
    C: float = 0.0
    federation: str = ""
    run_id: str = ""
    rounds: int = 0
    cities: tuple[str, ...] = ()
    created_at: str = ""
    cityfed_version: str = ""
    algorithm: Algorithm = "exact"
    converged: bool = True
    training_rows: int = 0
    min_rows_per_city: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: Standard errors, tests and intervals; None for ridge, FedAvg, or when undefined.
    inference: Inference | None = None
    #: Why ``inference`` is None ("" when it is given).
    inference_note: str = ""
    #: Categorical features ``(name, levels)``; ``features`` holds their indicators.
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Poisson: the exposure column, if any (predicted count = exposure * exp(decision)).
    exposure: VariableSpec | None = None
    #: ``alpha = "cv"``: ``(alpha, mean cross-validation score)`` over the grid.
    alpha_path: tuple[tuple[float, float], ...] = ()
    #: Only masked statistics reached the coordinator (``[privacy] secure_aggregation``).
    secure_aggregation: bool = False
    #: The run's differential privacy (0: none), and per city ``(name, ε this run,
    #: ε over all its runs)`` as each city's ledger counted it.
    epsilon: float = 0.0
    delta: float = 0.0
    privacy_spent: tuple[tuple[str, float, float], ...] = ()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Federation names of the inputs, in order."""
        return tuple(f.name for f in self.features)

    @property
    def indicator_mask(self) -> tuple[bool, ...]:
        """For each feature, whether it is a level indicator of a categorical feature."""
        indicators = {
            indicator_name(name, level) for name, levels in self.categories for level in levels[1:]
        }
        return tuple(f.name in indicators for f in self.features)

    def decision(self, X: FloatArray) -> FloatArray:
        """The linear predictor on federation-unit rows, computed from the centre.

        ``scaler.transform(X) @ coef_scaled + intercept_scaled``: the features
        minus their pooled means (and divided by their scales when standardised),
        so that no digit is lost to a large intercept; the same model as
        ``X @ coef + intercept``.
        """
        return predict_centred(self.scaler, self.coef_scaled, self.intercept_scaled, X)


def predict_centred(
    scaler: Scaler, coef_scaled: FloatArray, intercept_scaled: float, X: FloatArray
) -> FloatArray:
    """``scaler.transform(X) @ coef_scaled + intercept_scaled`` as float64 values."""
    Z = scaler.transform(np.asarray(X, dtype=np.float64))
    return np.asarray(Z @ coef_scaled + intercept_scaled, dtype=np.float64)
