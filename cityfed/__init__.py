"""CityFed: exact federated regression across partner cities, on Flower."""

from __future__ import annotations

from cityfed.errors import CityFedError, DataError, FederationError, SpecError
from cityfed.model.estimator import (
    CityFedClassifier,
    CityFedPoissonRegressor,
    CityFedRegressor,
    load_model,
)
from cityfed.version import __version__

__all__ = [
    "CityFedClassifier",
    "CityFedError",
    "CityFedPoissonRegressor",
    "CityFedRegressor",
    "Client",
    "DataError",
    "FederationError",
    "SpecError",
    "__version__",
    "load_model",
]


def __getattr__(name: str) -> object:
    """``cityfed.Client`` is imported on first use (it loads gRPC)."""
    if name == "Client":
        from cityfed.client_api.client import Client

        return Client
    raise AttributeError(f"module 'cityfed' has no attribute {name!r}")
