"""Harmonise a city's CSV into federation columns and units.

Reading, mapping, derived columns, unit conversion and the missing-value policy
happen here, once, before any statistic is computed. Every error names the file,
the column and the 1-based data row.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cityfed.config.expr import Expression, parse_expression
from cityfed.config.spec import CitySpec, FederationSpec, VariableSpec
from cityfed.config.units import check_convertible, convert
from cityfed.data.categories import LabelSource, indicators, label_source, labels_of
from cityfed.data.sql import read_sql_columns, read_sql_header
from cityfed.errors import DataError, SpecError
from cityfed.typing import BoolArray, FloatArray

__all__ = ["MAX_MAGNITUDE", "check_city_units", "harmonise", "require_data"]

#: Largest magnitude a value may have in federation units: products of two values,
#: summed over 10^8 rows, stay finite in double precision (1e300 / 1e8 > (1e146)^2).
MAX_MAGNITUDE = 1e146

#: File names of Parquet data (a file, or the files of a folder).
_PARQUET_SUFFIXES = (".parquet", ".pq")

#: A number written with a decimal comma ("3,5", "-12,25").
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


@dataclass(frozen=True)
class _Plan:
    """How one federation column is computed from the CSV."""

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


def require_data(city: CitySpec) -> None:
    """The city's data source exists: a CSV or Parquet file, or a folder of Parquet files.

    Raises
    ------
    DataError
        Naming the path, and what it is instead (missing, or a folder of something else).
    """
    path = city.data
    if city.database is not None or (path.is_dir() and _is_parquet(city)):
        return
    if path.is_dir():
        raise DataError(
            f"{path.name}: {path} is a folder, not a data file (set [city] data in "
            f"{city.source} to the CSV itself)"
        )
    if not path.is_file():
        raise DataError(
            f"{path.name}: data file not found at {path} (set [city] data in {city.source})"
        )


def _is_parquet(city: CitySpec) -> bool:
    """A Parquet file, or a folder of them (``*.parquet``), rather than a CSV."""
    path = city.data
    if city.database is not None:
        return False
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return True
    return path.is_dir() and any(
        child.suffix.lower() in _PARQUET_SUFFIXES for child in path.iterdir()
    )


def _at(city: CitySpec, row: int) -> str:
    """Where a 0-based data row is: its line in a CSV (header = line 1), its row in Parquet."""
    typed = city.database is not None or _is_parquet(city)
    return f"row {row + 1}" if typed else f"row {row + 1} (line {row + 2})"


def _short(text: str, limit: int = 60) -> str:
    """An expression or cell cut for a one-line message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parquet_dataset(city: CitySpec) -> Any:
    import pyarrow.dataset as ds

    try:
        return ds.dataset(str(city.data), format="parquet")
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"{city.label}: not a readable Parquet dataset ({exc})") from None


def _read_header(city: CitySpec) -> list[str]:
    """The header's column names, stripped, in file order (duplicates kept)."""
    path = city.data
    require_data(city)
    if city.database is not None:
        return read_sql_header(city)
    if _is_parquet(city):
        return [str(name).strip() for name in _parquet_dataset(city).schema.names]
    try:
        with path.open(encoding=city.encoding, newline="") as handle:
            first = handle.readline()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path.name}: not valid {city.encoding} text at byte {exc.start}; "
            f"set [city] encoding in {city.source}"
        ) from None
    if not first.strip():
        raise DataError(f"{path.name}: the file is empty (expected a header row and data rows)")
    return [c.strip() for c in next(csv.reader([first], delimiter=city.delimiter))]


def _check_header(city: CitySpec, header: list[str], needed: set[str]) -> None:
    """A needed column named twice would be read from its first copy: refuse it.

    Raises
    ------
    DataError
        Naming the column and both positions (1-based).
    """
    counts = Counter(header)
    for name in sorted(needed):
        if counts[name] > 1:
            first, second = [i + 1 for i, c in enumerate(header) if c == name][:2]
            raise DataError(
                f"{city.label}: header: column {name!r} appears {counts[name]} times "
                f"(columns {first} and {second}); rename one so that the mapping in "
                f"{city.source} reads the right one"
            )


def _delimiter_hint(city: CitySpec, header: list[str]) -> str:
    """A hint to set the delimiter when the whole header is one column holding another."""
    if len(header) != 1:
        return ""
    for candidate, spelled in ((";", ";"), ("\t", "\\t"), (",", ","), ("|", "|")):
        if candidate != city.delimiter and candidate in header[0]:
            return (
                f"; the header is one column containing {spelled!r}: set "
                f'delimiter = "{spelled}" in [city] of {city.source}'
            )
    return ""


def _require_columns(city: CitySpec, needed: set[str], header: list[str]) -> None:
    """A typed source (Parquet, SQL) has every needed column, or the error names the first."""
    missing = sorted(needed - set(header))
    if missing:
        available = ", ".join(repr(c) for c in header[:12])
        raise DataError(
            f"{city.label}: column {_short(missing[0])!r} not found (columns are "
            f"{_short(available, 200)}); fix [columns] in {city.source}"
        )


def _read_parquet(city: CitySpec, needed: set[str], header: list[str]) -> pd.DataFrame:
    """The needed columns of a Parquet file or folder: numbers stay numbers, text stays text."""
    _require_columns(city, needed, header)
    dataset = _parquet_dataset(city)  # one discovery of the files for the schema and rows
    by_stripped = {name.strip(): name for name in dataset.schema.names}
    table = dataset.to_table(columns=[by_stripped[n] for n in sorted(needed)])
    frame: pd.DataFrame = table.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.shape[0] == 0:
        raise DataError(f"{city.label}: no data rows")
    return frame


def _read_rows(city: CitySpec, needed: set[str], header: list[str]) -> pd.DataFrame:
    """The needed columns of a database, a Parquet source or (as text) a CSV."""
    path = city.data
    label = path.name
    require_data(city)
    if city.database is not None:
        _require_columns(city, needed, header)
        return read_sql_columns(city, needed)
    if _is_parquet(city):
        return _read_parquet(city, needed, header)
    try:
        frame = pd.read_csv(
            path,
            sep=city.delimiter,
            encoding=city.encoding,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{label}: the file is empty (expected a header row and data rows)"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{label}: not valid {city.encoding} text at byte {exc.start}; "
            f"set [city] encoding in {city.source}"
        ) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{label}: malformed CSV: {str(exc).strip().splitlines()[-1]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = sorted(needed - set(frame.columns))
    if missing:
        available = ", ".join(repr(c) for c in frame.columns[:12])
        more = ", ..." if len(frame.columns) > 12 else ""
        raise DataError(
            f"{label}: column {_short(missing[0])!r} not found (columns are "
            f"{_short(available + more, 200)}); fix [columns] in {city.source}"
            f"{_delimiter_hint(city, header)}"
        )
    if frame.shape[0] == 0:
        raise DataError(f"{label}: no data rows below the header")
    return frame


def _read_csv_typed(
    city: CitySpec, numeric: set[str], textual: set[str], header: list[str]
) -> pd.DataFrame | None:
    """The needed columns parsed as numbers (and labels as text) by pyarrow, or None.

    The fast path of a CSV: pyarrow's multi-threaded reader with typed columns,
    the city's delimiter, decimal mark and missing-value tokens. Anything it cannot
    read exactly as the text path would — a bad or infinite cell, digit grouping, a
    missing token that reads as a number, padded names or cells — gives None, and
    the cell-by-cell path reads the file and names the first bad cell, as before.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    if _is_parquet(city) or city.database is not None or city.thousands is not None:
        return None
    if numeric & textual or not (numeric | textual) <= set(header):
        return None
    if _numeric_missing_token(city):
        return None
    try:
        with city.data.open(encoding=city.encoding, newline="") as handle:
            raw_header = next(csv.reader([handle.readline()], delimiter=city.delimiter))
    except (OSError, UnicodeDecodeError, StopIteration):
        return None
    if raw_header != header:  # names padded with spaces: the text path strips them
        return None
    types = {name: pa.float64() for name in numeric} | {name: pa.string() for name in textual}
    encoding = "utf8" if city.encoding == "utf-8-sig" else city.encoding
    try:
        table = pacsv.read_csv(
            city.data,
            read_options=pacsv.ReadOptions(encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter=city.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=sorted(numeric | textual),
                null_values=list(city.missing_values),
                strings_can_be_null=True,
                decimal_point=city.decimal,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError):
        return None
    for name in numeric:
        values = table.column(name)
        # "inf" or a "NaN" that is not a missing token: the text path names the cell.
        if pc.any(pc.or_(pc.is_inf(values), pc.is_nan(values))).as_py():
            return None
    frame: pd.DataFrame = table.to_pandas()
    if frame.shape[0] == 0:
        return None
    for name in textual:
        column = frame[name]
        stripped = column.str.strip()
        if not stripped.equals(column):
            return None
    return frame


def _plain_numbers_possible(city: CitySpec) -> bool:
    """True when a column of finite numbers can skip the cell-by-cell checks.

    That holds with a decimal point and no missing-value token that reads as a
    finite number (such as ``-999``): a column that then parses entirely into
    finite numbers has no missing cell and no bad cell.
    """
    return city.decimal == "." and not _numeric_missing_token(city)


def _numeric_missing_token(city: CitySpec) -> bool:
    """True when a missing-value token reads as a finite number (such as ``-999``)."""
    tokens = pd.to_numeric(pd.Series(list(city.missing_values), dtype=object), errors="coerce")
    return bool(np.isfinite(tokens.to_numpy(dtype=np.float64, na_value=np.nan)).any())


def _to_numbers(
    frame: pd.DataFrame, column: str, city: CitySpec, *, plain: bool = False
) -> FloatArray:
    series = frame[column]
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        # A typed source (Parquet): numbers already; a null is a missing value.
        typed: FloatArray = np.asarray(
            series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64
        )
        return _finite_or_refuse(typed, city, column, lambda row: "the value")
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
                f"{city.label}: column {column!r}, {_at(city, row)}: "
                f"{_short(raw.iloc[row])!r} has a '.' but the decimal mark is ','; if it "
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
        if city.decimal == "." and _DECIMAL_COMMA.match(cell):
            hint = f"; if ',' is the decimal mark, set decimal = \",\" in [city] of {city.source}"
        raise DataError(
            f"{city.label}: column {column!r}, {_at(city, row)}: "
            f"{_short(cell)!r} is not a number{hint}"
        )
    return _finite_or_refuse(numbers, city, column, lambda row: repr(raw.iloc[row]))


def _finite_or_refuse(
    numbers: FloatArray, city: CitySpec, column: str, shown: Callable[[int], str]
) -> FloatArray:
    """``numbers``, unless one is infinite: then the error names its row (``shown`` its cell)."""
    infinite = np.isinf(numbers)
    if infinite.any():
        row = int(np.argmax(infinite))
        raise DataError(
            f"{city.label}: column {column!r}, {_at(city, row)}: {shown(row)} is infinite"
        )
    return numbers


def _check_domain(
    city: CitySpec,
    fed: FederationSpec,
    variable: VariableSpec,
    values: FloatArray,
    missing: BoolArray,
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
            f"{city.label}: column {variable.name!r}, {_at(city, row)}: "
            f"{values[row]:g} is not {wanted}"
        )


def harmonise(city: CitySpec, fed: FederationSpec) -> tuple[FloatArray, int, dict[str, int]]:
    """Read the city's CSV and return its usable rows in federation units.

    Returns
    -------
    tuple
        ``(table, rows_read, drop_reasons)`` where ``table`` has the design
        columns (a numeric feature, or a categorical feature's indicators), the
        target, then the exposure if any, in federation order and units.

    Raises
    ------
    DataError
        A missing column, a non-numeric or infinite cell, a derived value that is
        not finite, a class label that is not 0 or 1, or (with ``missing = "error"``)
        a missing value: each named with file, column and 1-based row.
    """
    plans = _plan(city, fed)
    check_city_units(city, fed)
    header = _read_header(city)
    names = set(header)
    expressions = {
        j: plan.expression(names) for j, plan in enumerate(plans) if not plan.variable.categorical
    }
    sources = {j: plan.label_source(names) for j, plan in enumerate(plans) if j not in expressions}
    numeric: set[str] = set().union(set(), *(e.columns for e in expressions.values()))
    textual = {source.column for source in sources.values()}
    needed = numeric | textual
    _check_header(city, header, needed)
    frame = _read_csv_typed(city, numeric, textual, header)
    if frame is None:  # not a plain file of numbers: every cell checked, errors by row
        frame = _read_rows(city, needed, header)
    n_rows = int(frame.shape[0])
    plain = _plain_numbers_possible(city)
    raw = {name: _to_numbers(frame, name, city, plain=plain) for name in sorted(numeric)}

    label = city.label
    blocks: list[FloatArray] = []
    block_missing: list[FloatArray] = []
    block_of: list[int] = []  # the plan of each column, for messages
    for j, plan in enumerate(plans):
        if j in sources:
            index, absent = labels_of(
                frame[sources[j].column],
                sources[j],
                plan.variable,
                city,
                plan.labels,
                lambda row: _at(city, row),
            )
            columns = indicators(index, len(plan.variable.levels))
            blocks.append(columns)
            block_missing.append(np.repeat(absent[:, None], columns.shape[1], axis=1))
            block_of.extend([j] * columns.shape[1])
            continue
        expression = expressions[j]
        inputs_missing = np.zeros(n_rows, dtype=bool)
        for name in expression.columns:
            inputs_missing |= np.isnan(raw[name])
        values = expression.evaluate(raw, n_rows)
        broken = ~np.isfinite(values) & ~inputs_missing
        if broken.any():
            row = int(np.argmax(broken))
            raise DataError(
                f"{label}: column {plan.variable.name!r} = {_short(expression.text)!r}, "
                f"{_at(city, row)}: the result is not finite "
                "(division by zero?)"
            )
        values = convert(values, plan.unit, plan.variable.unit)
        huge = np.abs(values) > MAX_MAGNITUDE
        if huge.any():
            row = int(np.argmax(huge))
            raise DataError(
                f"{label}: column {plan.variable.name!r}, {_at(city, row)}: "
                f"{values[row]:.3g} {plan.variable.unit} is too large to summarise (sums of "
                f"squares would overflow; |value| must stay below {MAX_MAGNITUDE:.0e}): check "
                "the unit or the value"
            )
        _check_domain(city, fed, plan.variable, values, inputs_missing)
        blocks.append(values[:, None])
        block_missing.append(inputs_missing[:, None])
        block_of.append(j)
    table = np.hstack(blocks)
    missing = np.hstack(block_missing)
    plans = [plans[j] for j in block_of]

    if missing.any():
        if fed.missing == "error":
            row, j = (int(v) for v in np.argwhere(missing)[0])
            raise DataError(
                f"{label}: column {plans[j].variable.name!r}, {_at(city, row)}: "
                'missing value (the federation sets missing = "error")'
            )
        first_missing = np.argmax(missing, axis=1)
        reasons: Counter[str] = Counter()
        for j in first_missing[missing.any(axis=1)]:
            reasons[f"missing {plans[int(j)].variable.name}"] += 1
        keep = ~missing.any(axis=1)
        table = table[keep]
        drop_reasons = dict(sorted(reasons.items()))
    else:
        drop_reasons = {}

    if fed.task == "classification":
        labels = table[:, len(fed.design)]
        bad = (labels != 0.0) & (labels != 1.0)
        if bad.any():
            row = int(np.flatnonzero(~missing.any(axis=1))[int(np.argmax(bad))])
            raise DataError(
                f"{label}: column {fed.target.name!r}, {_at(city, row)}: "
                f"class label {labels[int(np.argmax(bad))]:g} is not 0 or 1"
            )
    return table, n_rows, drop_reasons
