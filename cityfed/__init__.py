"""CityFed: exact federated regression across partner cities, on Flower."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cityfed.errors import CityFedError, DataError, FederationError, SpecError
from cityfed.version import __version__

if TYPE_CHECKING:
    from cityfed.client_api.client import Client
    from cityfed.model.estimator import (
        CityFedClassifier,
        CityFedPoissonRegressor,
        CityFedRegressor,
        load_model,
    )

#: Imported on first use: the estimators load scikit-learn, the client gRPC, which a
#: city node computing its statistics (a fresh process per message) does not need.
_LAZY = {
    "CityFedClassifier": "cityfed.model.estimator",
    "CityFedPoissonRegressor": "cityfed.model.estimator",
    "CityFedRegressor": "cityfed.model.estimator",
    "load_model": "cityfed.model.estimator",
    "Client": "cityfed.client_api.client",
}

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
    """The estimators and ``cityfed.Client`` are imported on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cityfed' has no attribute {name!r}")
