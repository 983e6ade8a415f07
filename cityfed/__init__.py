"""CityFed: exact federated regression across partner cities, on Flower."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from cityfed.errors import CityFedError, DataError, FederationError, SpecError
from cityfed.estimator import CityFedClassifier, CityFedRegressor, load_model

try:
    __version__ = version("cityfed")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"

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
