"""CityFed: exact federated regression across partner cities, on Flower."""

from __future__ import annotations

from cityfed.errors import CityFedError, DataError, FederationError, SpecError
from cityfed.model.estimator import CityFedClassifier, CityFedRegressor, load_model
from cityfed.version import __version__

__all__ = [
    "CityFedClassifier",
    "CityFedError",
    "CityFedRegressor",
    "DataError",
    "FederationError",
    "SpecError",
    "__version__",
    "load_model",
]
