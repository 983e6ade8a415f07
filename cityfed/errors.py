"""Typed errors, one per layer; the message of each is a one-line user message."""

from __future__ import annotations

__all__ = ["CityFedError", "DataError", "FederationError", "SpecError"]


class CityFedError(Exception):
    """Base of every expected CityFed error.

    ``str(error)`` is a single line that names the file, the column or key and,
    where it applies, the row, so the CLI can print it without a traceback.
    """


class SpecError(CityFedError):
    """A ``federation.toml`` or ``city.toml`` is malformed or inconsistent."""


class DataError(CityFedError):
    """A city's CSV cannot be harmonised into federation columns and units."""


class FederationError(CityFedError):
    """The federation cannot produce a model (too few cities answered, ...)."""
