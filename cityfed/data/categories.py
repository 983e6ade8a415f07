"""Categorical features: a city's labels mapped to the federation's levels, then indicators.

A categorical feature's source in ``city.toml`` is a column of labels, or a
category derived from a timestamp column: ``hour(col)`` (``"0"`` .. ``"23"``),
``weekday(col)`` (``"Mon"`` .. ``"Sun"``), ``month(col)`` (``"1"`` .. ``"12"``) or
``season(col)`` (meteorological, northern hemisphere: ``"winter"`` = December to
February, ``"spring"``, ``"summer"``, ``"autumn"``). The city's ``labels`` table
then maps its own labels to the federation's levels; a label that is neither a
level nor mapped is an error naming the row. The indicators are those of
sklearn's ``OneHotEncoder(drop="first")``: one 0/1 column per level but the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cityfed.config.spec import CitySpec, VariableSpec, label_text
from cityfed.errors import DataError, SpecError
from cityfed.typing import FloatArray

__all__ = ["DERIVED", "LabelSource", "indicators", "label_source", "labels_of"]

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_SEASONS = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer",
            "autumn", "autumn", "autumn", "winter")  # fmt: skip


def _hour(t: pd.Series) -> pd.Series:
    return pd.Series(t.dt.hour.astype("Int64").astype(str), index=t.index)


def _weekday(t: pd.Series) -> pd.Series:
    return pd.Series(t.dt.day_of_week.map(lambda d: _WEEKDAYS[int(d)]), index=t.index)


def _month(t: pd.Series) -> pd.Series:
    return pd.Series(t.dt.month.astype("Int64").astype(str), index=t.index)


def _season(t: pd.Series) -> pd.Series:
    return pd.Series(t.dt.month.map(lambda m: _SEASONS[int(m) - 1]), index=t.index)


#: Categories derived from a timestamp column, by function name.
DERIVED: Mapping[str, Callable[[pd.Series], pd.Series]] = {
    "hour": _hour,
    "weekday": _weekday,
    "month": _month,
    "season": _season,
}

_CALL = re.compile(r"^\s*(\w+)\s*\(\s*`?([^`()]+?)`?\s*\)\s*$")


@dataclass(frozen=True)
class LabelSource:
    """Where a categorical feature's labels come from: a column, maybe through a function."""

    column: str
    function: str | None


def label_source(source: str, header: set[str], where: str) -> LabelSource:
    """Parse a categorical feature's ``source``: a column name or ``fn(column)``.

    Raises
    ------
    SpecError
        For an unknown function or an expression that is neither.
    """
    name = source.strip().strip("`")
    if name in header:
        return LabelSource(name, None)
    call = _CALL.match(source)
    if call is None:
        return LabelSource(name, None)  # a missing column: reported with the header
    function, column = call.group(1), call.group(2).strip()
    if function not in DERIVED:
        known = ", ".join(f"{f}(column)" for f in DERIVED)
        raise SpecError(
            f"{where}: {function}() is not a category function; a categorical feature "
            f"reads a column of labels or one of {known}"
        )
    return LabelSource(column, function)


def labels_of(
    raw: pd.Series,
    source: LabelSource,
    variable: VariableSpec,
    city: CitySpec,
    mapping: Mapping[str, str],
    at: Callable[[int], str],
) -> tuple[FloatArray, np.ndarray]:
    """The level index of every row (``-1`` where missing) and the missing mask.

    Parameters
    ----------
    raw : Series
        The source column as read (text from a CSV, typed from Parquet or SQL).
    source : LabelSource
        The column and derivation.
    variable : VariableSpec
        The federation's feature with its levels.
    city : CitySpec
        For the missing-value tokens and error messages.
    mapping : Mapping[str, str]
        The city's labels to federation levels.
    at : callable
        ``at(row)`` names a 0-based row in messages.

    Raises
    ------
    DataError
        A label that is not a level and not mapped, or a timestamp that does not
        parse, naming the file, column, row and label.
    """
    label = city.label
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        text = raw.astype(str).str.strip()
        missing = text.isin(set(city.missing_values)).to_numpy() | raw.isna().to_numpy()
    else:
        missing = raw.isna().to_numpy()
        text = raw.map(_typed_label)
    if source.function is not None:
        times = pd.to_datetime(text.where(~missing, None), errors="coerce", format="ISO8601")
        bad = times.isna().to_numpy() & ~missing
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"{label}: column {source.column!r}, {at(row)}: {text.iloc[row]!r} is not a "
                f"date and time (ISO 8601, e.g. 2013-01-01 05:00) for "
                f"{source.function}({source.column})"
            )
        # Missing cells stay missing; a placeholder time keeps the functions total.
        filled = times.where(~missing, pd.Timestamp(2000, 1, 1))
        text = DERIVED[source.function](filled).where(~missing, "")
    levels = {level: i for i, level in enumerate(variable.levels)}

    def level_of(label: str) -> int:
        found = levels.get(mapping.get(label, label), -1)
        if found < 0:  # "5.0" in a text file for the level "5"
            number = _integral(label)
            if number is not None:
                found = levels.get(mapping.get(number, number), -1)
        return found

    index = text.map(level_of).to_numpy(dtype=np.int64)
    unknown = (index < 0) & ~missing
    if unknown.any():
        row = int(np.argmax(unknown))
        shown = ", ".join(repr(v) for v in variable.levels[:12])
        raise DataError(
            f"{label}: column {source.column!r}, {at(row)}: label {text.iloc[row]!r} is not a "
            f"level of {variable.name!r} ({shown}); map it under [columns] {variable.name} "
            f"labels in {city.source}"
        )
    return index.astype(np.float64), missing


def _integral(label: str) -> str | None:
    """``"5"`` for a label that reads as an integral number (``"5.0"``, ``"05"``), else None."""
    try:
        number = float(label)
    except ValueError:
        return None
    return str(int(number)) if np.isfinite(number) and number.is_integer() else None


def _typed_label(value: object) -> str:
    """A typed cell as a label: a timestamp in ISO form, a number as :func:`label_text`."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return label_text(value)


def indicators(index: FloatArray, n_levels: int) -> FloatArray:
    """``OneHotEncoder(drop="first")`` columns of level indices (missing rows all 0)."""
    columns = np.zeros((index.shape[0], n_levels - 1))
    for k in range(1, n_levels):
        columns[:, k - 1] = index == k
    return columns
