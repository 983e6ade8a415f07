"""Harmonise a city's rows into federation columns and units, one chunk at a time.

Mapping, derived columns, unit conversion and the missing-value policy happen
here, chunk by chunk as :mod:`cityfed.data.sources` reads them, before any
statistic is computed: a city of any size is harmonised in bounded memory. Every
error names the file, the column and the 1-based data row (counted over the whole
source, not the chunk).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cityfed.config.expr import Expression, parse_expression
from cityfed.config.spec import CitySpec, FederationSpec, VariableSpec
from cityfed.config.units import check_convertible, convert
from cityfed.data.categories import LabelSource, indicators, label_source, labels_of
from cityfed.data.sources import (
    DECIMAL_COMMA,
    check_header,
    frames,
    is_parquet,
    numeric_missing_token,
    read_header,
    require_data,
    row_label,
    short,
)
from cityfed.errors import DataError, SpecError
from cityfed.typing import BoolArray, FloatArray

__all__ = [
    "MAX_MAGNITUDE",
    "Harmonised",
    "check_city_units",
    "harmonise",
    "harmonised_chunks",
    "require_data",
]

#: Largest magnitude a value may have in federation units: products of two values,
#: summed over 10^8 rows, stay finite in double precision (1e300 / 1e8 > (1e146)^2).
MAX_MAGNITUDE = 1e146

Locate = Callable[[int], str]


@dataclass(frozen=True)
class _Plan:
    """How one federation column is computed from the source's columns."""

    variable: VariableSpec
    source: str
    unit: str | None
    where: str
    labels: Mapping[str, str]

    def expression(self, header: set[str]) -> Expression:
        """The source as an expression; a source that is a header name is a column."""
        name = self.source.strip()
        if name in header and "`" not in name:
            return parse_expression(f"`{name}`", where=self.where)
        return parse_expression(self.source, where=self.where)

    def label_source(self, header: set[str]) -> LabelSource:
        """A categorical feature's column (and derivation, such as ``hour(time)``)."""
        return label_source(self.source, header, self.where)


def _plan(city: CitySpec, fed: FederationSpec) -> list[_Plan]:
    plans = []
    for var in fed.variables:
        col = city.column(var.name)
        if col is None:
            raise SpecError(
                f"{city.source}: [columns] has no entry for federation column {var.name!r}; "
                f'a city summarises only what it maps ({var.name} = "{var.name}" for a CSV '
                "column of that name)"
            )
        else:
            where = f"{city.source}: [columns] {var.name}"
            unit = col.unit if col.unit is not None else var.unit
            if col.labels and not var.categorical:
                raise SpecError(
                    f"{where} labels: {var.name!r} is not categorical in the federation; "
                    "labels map a categorical feature's values to its levels"
                )
            plans.append(_Plan(var, col.source, unit, where, col.labels))
    return plans


def check_city_units(city: CitySpec, fed: FederationSpec) -> None:
    """Fail before any data is read if a city unit cannot become the federation unit.

    Raises
    ------
    SpecError
        On a dimension mismatch (``kg`` for a temperature), naming the key.
    """
    for plan in _plan(city, fed):
        if plan.variable.categorical:
            if plan.unit not in (None, "dimensionless"):
                raise SpecError(f"{plan.where} unit: a categorical feature has no unit")
            continue
        check_convertible(plan.unit, plan.variable.unit, where=f"{plan.where} unit")
        if fed.task in ("classification", "count") and plan.variable is fed.target:
            check_convertible(plan.unit, None, where=f"{plan.where} unit")


def _plain_numbers_possible(city: CitySpec) -> bool:
    """True when a column of finite numbers can skip the cell-by-cell checks.

    That holds with a decimal point and no missing-value token that reads as a
    finite number (such as ``-999``): a column that then parses entirely into
    finite numbers has no missing cell and no bad cell.
    """
    return city.decimal == "." and not numeric_missing_token(city)


def _to_numbers(
    frame: pd.DataFrame, column: str, city: CitySpec, at: Locate, *, plain: bool = False
) -> FloatArray:
    series = frame[column]
    if series.dtype == np.float64:  # the fast CSV path, Parquet, SQL: no copy
        typed_floats: FloatArray = series.to_numpy()
        return _finite_or_refuse(typed_floats, city, column, at, lambda row: "the value")
    if series.dtype == object and series.isna().all():
        return np.full(len(series), np.nan)  # a chunk of a typed source with only nulls
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        # A typed source (Parquet): numbers already; a null is a missing value.
        typed: FloatArray = np.asarray(
            series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64
        )
        return _finite_or_refuse(typed, city, column, at, lambda row: "the value")
    if plain:
        # Fast path (most columns of most files): parse the whole column at once.
        numbers = pd.to_numeric(frame[column], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        if np.isfinite(numbers).all():
            return numbers
    raw = frame[column].astype(str).str.strip()
    is_missing = raw.isin(set(city.missing_values)).to_numpy()
    text = raw
    if city.thousands is not None:
        text = text.str.replace(city.thousands, "", regex=False)
    elif city.decimal == ",":
        # "1.013" in a decimal-comma file: a thousands separator or a decimal
        # point? Either reading could be wrong, so neither is made silently.
        dotted = text.str.contains(".", regex=False).to_numpy() & ~is_missing
        if dotted.any():
            row = int(np.argmax(dotted))
            raise DataError(
                f"{city.label}: column {column!r}, {at(row)}: "
                f"{short(raw.iloc[row])!r} has a '.' but the decimal mark is ','; if it "
                f'groups digits, declare thousands = "." in [city] of {city.source}'
            )
    if city.decimal == ",":
        text = text.str.replace(",", ".", regex=False)
    numbers = pd.to_numeric(text.where(~is_missing, None), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    bad = np.isnan(numbers) & ~is_missing
    if bad.any():
        row = int(np.argmax(bad))
        cell = raw.iloc[row]
        hint = ""
        if city.decimal == "." and DECIMAL_COMMA.match(cell):
            hint = f"; if ',' is the decimal mark, set decimal = \",\" in [city] of {city.source}"
        raise DataError(
            f"{city.label}: column {column!r}, {at(row)}: {short(cell)!r} is not a number{hint}"
        )
    return _finite_or_refuse(numbers, city, column, at, lambda row: repr(raw.iloc[row]))


def _finite_or_refuse(
    numbers: FloatArray, city: CitySpec, column: str, at: Locate, shown: Callable[[int], str]
) -> FloatArray:
    """``numbers``, unless one is infinite: then the error names its row (``shown`` its cell)."""
    infinite = np.isinf(numbers)
    if infinite.any():
        row = int(np.argmax(infinite))
        raise DataError(f"{city.label}: column {column!r}, {at(row)}: {shown(row)} is infinite")
    return numbers


def _check_domain(
    city: CitySpec,
    fed: FederationSpec,
    variable: VariableSpec,
    values: FloatArray,
    missing: BoolArray,
    at: Locate,
) -> None:
    """A count target is >= 0 and an exposure > 0 (else a Poisson fit has no meaning).

    Raises
    ------
    DataError
        Naming the file, column and row of the first value out of range.
    """
    if fed.task == "count" and variable is fed.target:
        bad, wanted = (values < 0.0) & ~missing, "a count >= 0"
    elif variable is fed.exposure:
        bad, wanted = (values <= 0.0) & ~missing, "an exposure > 0"
    else:
        return
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{city.label}: column {variable.name!r}, {at(row)}: {values[row]:g} is not {wanted}"
        )


@dataclass(frozen=True)
class Harmonised:
    """One chunk's usable rows in federation columns and units.

    Attributes
    ----------
    table : ndarray
        The design columns (a numeric feature, or a categorical feature's
        indicators), the target, then the exposure if any.
    rows_read : int
        The chunk's rows as read, usable or not.
    drop_reasons : dict
        Rows dropped under ``missing = "drop"``, by the first missing column.
    """

    table: FloatArray
    rows_read: int
    drop_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Setup:
    """What every chunk of one city's source is harmonised with."""

    city: CitySpec
    fed: FederationSpec
    plans: list[_Plan]
    expressions: dict[int, Expression]
    sources: dict[int, LabelSource]
    numeric: set[str]
    plain: bool


def harmonised_chunks(city: CitySpec, fed: FederationSpec) -> Iterator[Harmonised]:
    """The city's usable rows in federation units, chunk by chunk, in source order.

    The mapping, units and header are checked before the first row is read; a
    source without data rows is an error.

    Raises
    ------
    DataError, SpecError
        A missing column, a non-numeric or infinite cell, a derived value that is
        not finite, a class label that is not 0 or 1, or (with ``missing = "error"``)
        a missing value: each named with file, column and 1-based row.
    """
    plans = _plan(city, fed)
    check_city_units(city, fed)
    header = read_header(city)
    names = set(header)
    expressions = {
        j: plan.expression(names) for j, plan in enumerate(plans) if not plan.variable.categorical
    }
    sources = {j: plan.label_source(names) for j, plan in enumerate(plans) if j not in expressions}
    numeric: set[str] = set().union(set(), *(e.columns for e in expressions.values()))
    textual = {source.column for source in sources.values()}
    check_header(city, header, numeric | textual)
    chunks = frames(city, numeric, textual, header)
    setup = _Setup(city, fed, plans, expressions, sources, numeric, _plain_numbers_possible(city))
    return _harmonised(setup, chunks)


def _harmonised(setup: _Setup, chunks: Iterator[pd.DataFrame]) -> Iterator[Harmonised]:
    offset = 0
    for frame in chunks:
        yield _harmonise_frame(setup, frame, offset)
        offset += int(frame.shape[0])
    if offset == 0:
        city = setup.city
        typed = city.database is not None or is_parquet(city)
        raise DataError(f"{city.label}: no data rows{'' if typed else ' below the header'}")


def harmonise(city: CitySpec, fed: FederationSpec) -> tuple[FloatArray, int, dict[str, int]]:
    """The city's usable rows in federation units, all in memory.

    Returns
    -------
    tuple
        ``(table, rows_read, drop_reasons)``, the chunks of
        :func:`harmonised_chunks` joined.
    """
    parts = list(harmonised_chunks(city, fed))
    reasons: Counter[str] = Counter()
    for part in parts:
        reasons.update(part.drop_reasons)
    table = np.concatenate([part.table for part in parts])
    return table, sum(part.rows_read for part in parts), dict(sorted(reasons.items()))


def _harmonise_frame(setup: _Setup, frame: pd.DataFrame, offset: int) -> Harmonised:
    """One chunk of the source (its first row is data row ``offset``) in federation units."""
    city, fed, plans = setup.city, setup.fed, setup.plans

    def at(row: int) -> str:
        return row_label(city, offset + row)

    n_rows = int(frame.shape[0])
    raw = {n: _to_numbers(frame, n, city, at, plain=setup.plain) for n in sorted(setup.numeric)}
    label = city.label
    widths = [
        len(plan.variable.levels) - 1 if j in setup.sources else 1 for j, plan in enumerate(plans)
    ]
    # Column-major: each column is written (and each mask filled) in one sweep.
    table = np.empty((n_rows, sum(widths)), order="F")
    missing = np.zeros((n_rows, len(plans)), dtype=bool, order="F")  # per plan
    column = 0
    for j, plan in enumerate(plans):
        if j in setup.sources:
            source = setup.sources[j]
            index, absent = labels_of(
                frame[source.column], source, plan.variable, city, plan.labels, at
            )
            table[:, column : column + widths[j]] = indicators(index, len(plan.variable.levels))
            missing[:, j] = absent
            column += widths[j]
            continue
        expression = setup.expressions[j]
        inputs_missing = missing[:, j]
        for name in expression.columns:
            inputs_missing |= np.isnan(raw[name])
        values = expression.evaluate(raw, n_rows)
        broken = None if np.isfinite(values).all() else ~np.isfinite(values) & ~inputs_missing
        if broken is not None and broken.any():
            row = int(np.argmax(broken))
            raise DataError(
                f"{label}: column {plan.variable.name!r} = {short(expression.text)!r}, "
                f"{at(row)}: the result is not finite "
                "(division by zero?)"
            )
        values = convert(values, plan.unit, plan.variable.unit)
        if n_rows and max(np.fmax.reduce(values), -np.fmin.reduce(values)) > MAX_MAGNITUDE:
            row = int(np.argmax(np.abs(values) > MAX_MAGNITUDE))
            raise DataError(
                f"{label}: column {plan.variable.name!r}, {at(row)}: "
                f"{values[row]:.3g} {plan.variable.unit} is too large to summarise (sums of "
                f"squares would overflow; |value| must stay below {MAX_MAGNITUDE:.0e}): check "
                "the unit or the value"
            )
        _check_domain(city, fed, plan.variable, values, inputs_missing, at)
        table[:, column] = values
        column += 1

    drop_reasons: dict[str, int] = {}
    if missing.any():
        if fed.missing == "error":
            row, j = (int(v) for v in np.argwhere(missing)[0])
            raise DataError(
                f"{label}: column {plans[j].variable.name!r}, {at(row)}: "
                'missing value (the federation sets missing = "error")'
            )
        dropped = missing.any(axis=1)
        first = np.bincount(np.argmax(missing[dropped], axis=1), minlength=len(plans))
        reasons: Counter[str] = Counter()
        for k in np.flatnonzero(first).tolist():
            reasons[f"missing {plans[k].variable.name}"] += int(first[k])
        table = table[~dropped]
        drop_reasons = dict(sorted(reasons.items()))

    if fed.task == "classification":
        labels = table[:, len(fed.design)]
        bad = (labels != 0.0) & (labels != 1.0)
        if bad.any():
            row = int(np.flatnonzero(~missing.any(axis=1))[int(np.argmax(bad))])
            raise DataError(
                f"{label}: column {fed.target.name!r}, {at(row)}: "
                f"class label {labels[int(np.argmax(bad))]:g} is not 0 or 1"
            )
    return Harmonised(table, n_rows, drop_reasons)
