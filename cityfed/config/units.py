"""Unit validation and conversion with pint.

Cities declare the unit of each CSV column (``"degF"``, ``"inHg"``, ``"mph"``,
...) and the federation declares the unit it models in; this module checks
the declarations and converts whole columns. ``None``, ``""`` and
``"dimensionless"`` all mean "no unit"; ``"count"`` and ``"percent"``/``"%"``
are dimensionless too (``50 %`` converts to ``0.5`` dimensionless).

Temperatures are absolute: ``68 degF`` converts to ``20 degC``. A single pint
registry is created lazily and shared.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pint
from pint.errors import PintError

from cityfed.errors import SpecError
from cityfed.typing import FloatArray

__all__ = ["check_convertible", "convert", "is_dimensionless", "validate_unit"]

_UNITLESS = "dimensionless"
_HINT = "use a pint unit such as 'degC', 'hPa', 'mph', 'km/h', 'kWh' or '%'"

#: Longer unit strings are rejected before reaching pint's recursive parser.
_MAX_UNIT_LENGTH = 100


@functools.cache
def _registry() -> Any:
    """Return the shared unit registry, created on first use.

    pint parses its definitions in about 0.3 s, which every fresh process (a
    Flower ClientApp per message) would pay; with a private cache folder pint
    keeps the parsed definitions there (0.05 s). Its files are pickles, so the
    folder is used only when it is this user's own, not a symlink, and writable by
    nobody else; anything else, or a cache that fails, parses anew.
    """
    folder = _cache_folder()
    if folder is not None:
        try:
            return pint.UnitRegistry(cache_folder=folder)
        except Exception:  # a broken cache costs speed, never the units
            pass
    return pint.UnitRegistry()


def _cache_folder() -> Path | None:
    """``$XDG_CACHE_HOME/cityfed/pint`` (or ``~/.cache/...``) if private to this user, else None."""
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = base / "cityfed" / "pint"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in (folder.parent, folder):
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
                return None
    except (OSError, RuntimeError):  # no home, a read-only disk
        return None
    return folder


def _canonical(unit: str | None) -> str:
    """Map the spellings of "no unit" to ``"dimensionless"``."""
    if unit is None or not unit.strip():
        return _UNITLESS
    return unit.strip()


@functools.lru_cache(maxsize=256)
def _parse(unit: str) -> Any:
    """Parse a canonical unit string; raises on any invalid unit."""
    registry = _registry()
    parsed = registry.Unit(unit)
    # Exercise the conversion machinery once so that units pint parses but
    # cannot compute with fail here rather than mid-conversion.
    registry.Quantity(1.0, parsed).to_base_units()
    return parsed


def _unit(unit: str | None, where: str) -> Any:
    """Return the pint unit for `unit` or raise a one-line SpecError."""
    canonical = _canonical(unit)
    if len(canonical) <= _MAX_UNIT_LENGTH:
        try:
            return _parse(canonical)
        # pint's unit-string parser raises many unrelated types on bad input
        # (UndefinedUnitError, DefinitionSyntaxError, ValueError, TypeError,
        # KeyError, ZeroDivisionError, AssertionError, tokenize.TokenError,
        # RecursionError, ...), so every Exception means "not a unit".
        except Exception:
            pass
    raise SpecError(f"{where}: unknown unit {_display(unit)}; {_HINT}")


def _display(unit: str | None) -> str:
    if not unit:
        return repr(_UNITLESS)
    return repr(unit if len(unit) <= 40 else unit[:39] + "…")


#: Unit symbols that pint reads as something else than a city usually means.
_LOOKALIKES = {
    "F": "'F' is the farad; for Fahrenheit write 'degF'",
    "C": "'C' is the coulomb; for Celsius write 'degC'",
    "K": "'K' is the kelvin (absolute); write 'kelvin' or 'degC' as meant",
    "m": "'m' is the metre; for minutes write 'minute'",
    "M": "'M' is molar; for millions write the scale into the number or use 'MW'",
    "b": "'b' is the barn; for bits write 'bit'",
    "B": "'B' is the bel; for bytes write 'byte'",
}


def validate_unit(unit: str | None, *, where: str) -> None:
    """Check that `unit` is a unit pint understands.

    Parameters
    ----------
    unit : str or None
        The unit string; ``None`` and ``""`` mean dimensionless.
    where : str
        Location prefix for error messages.

    Raises
    ------
    SpecError
        The unit is unknown or malformed.
    """
    _unit(unit, where)


def is_dimensionless(unit: str | None, *, where: str = "unit") -> bool:
    """Return whether `unit` has no physical dimension.

    ``None``, ``""``, ``"dimensionless"``, ``"count"``, ``"percent"`` and
    ``"%"`` are all dimensionless.

    Parameters
    ----------
    unit : str or None
        The unit string.
    where : str, optional
        Location prefix for the error message of an unknown unit.

    Returns
    -------
    bool
        ``True`` if the unit is dimensionless.

    Raises
    ------
    SpecError
        The unit is unknown or malformed.
    """
    if _canonical(unit) == _UNITLESS:
        return True
    return bool(_unit(unit, where).dimensionless)


@functools.lru_cache(maxsize=1024)
def _converts(src_unit: Any, dst_unit: Any) -> None:
    """Raise pint's error unless ``src_unit`` converts to ``dst_unit`` (remembered)."""
    _registry().Quantity(1.0, src_unit).to(dst_unit)


def check_convertible(src: str | None, dst: str | None, *, where: str) -> None:
    """Check that values in unit `src` can be converted to unit `dst`.

    Parameters
    ----------
    src, dst : str or None
        Source and destination units; ``None`` and ``""`` mean dimensionless.
    where : str
        Location prefix for error messages.

    Raises
    ------
    SpecError
        Either unit is unknown, or the two have different dimensions; the
        message names both units and both dimensionalities.
    """
    src_unit = _unit(src, where)
    dst_unit = _unit(dst, where)
    try:
        _converts(src_unit, dst_unit)
    except PintError as exc:
        src_dim = str(src_unit.dimensionality)
        dst_dim = str(dst_unit.dimensionality)
        if src_dim != dst_dim:
            advice = f"the dimensions differ; declare the column in a unit of dimension {dst_dim}"
        else:
            advice = (
                "pint cannot convert between them (e.g. an absolute temperature "
                "and a temperature difference); use units of the same kind"
            )
        for unit in (src, dst):
            lookalike = _LOOKALIKES.get((unit or "").strip())
            if lookalike is not None:
                advice += f" ({lookalike})"
        message = (
            f"{where}: cannot convert unit {_display(src)} ({src_dim}) to "
            f"{_display(dst)} ({dst_dim}): {advice}"
        )
        raise SpecError(message) from exc


@functools.lru_cache(maxsize=256)
def _scale_factor(src: str, dst: str) -> float | None:
    """Return the factor for a purely multiplicative conversion, else None."""
    quantity = _registry().Quantity
    src_unit, dst_unit = _parse(src), _parse(dst)
    if float(quantity(0.0, src_unit).to(dst_unit).magnitude) != 0.0:
        return None  # offset units (absolute temperatures): let pint convert
    return float(quantity(1.0, src_unit).to(dst_unit).magnitude)


def convert(
    values: FloatArray,
    src: str | None,
    dst: str | None,
    *,
    where: str = "unit conversion",
) -> FloatArray:
    """Convert an array of values from unit `src` to unit `dst`.

    Parameters
    ----------
    values : ndarray of float64
        Values in unit `src`; any shape. Not modified.
    src, dst : str or None
        Source and destination units; ``None`` and ``""`` mean dimensionless.
    where : str, optional
        Location prefix for error messages.

    Returns
    -------
    ndarray of float64
        A new array of the same shape, in unit `dst`.

    Raises
    ------
    SpecError
        A unit is unknown or the units are not convertible (see
        :func:`check_convertible`).
    """
    array = np.asarray(values, dtype=np.float64)
    src_key, dst_key = _canonical(src), _canonical(dst)
    if src_key == dst_key:
        return array.copy()
    check_convertible(src, dst, where=where)
    factor = _scale_factor(src_key, dst_key)
    if factor is not None:
        return np.asarray(np.multiply(array, factor), dtype=np.float64)
    converted = _registry().Quantity(array, _parse(src_key)).to(_parse(dst_key))
    out = np.asarray(converted.magnitude, dtype=np.float64)
    if np.may_share_memory(out, array):
        out = out.copy()
    return out
