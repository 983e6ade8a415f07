"""Where a city's rows come from: a CSV, Parquet files or a database, read in chunks.

Each source yields the needed columns as data frames of at most
:data:`CHUNK_ROWS` rows, so that a city of any size is read in bounded memory. A
CSV is read on a fast path first (pyarrow's streaming reader, numbers typed);
anything that path cannot read exactly as the cell-by-cell text path would (a bad
or infinite cell, digit grouping, a padded label, a malformed row) switches to
the text path from the first row not yet delivered, which then names the first
bad cell. Errors name the file, the column and the 1-based data row.
"""

from __future__ import annotations

import csv
import queue
import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from cityfed.config.spec import CitySpec
from cityfed.data.sql import iter_sql_columns, read_sql_header
from cityfed.errors import DataError

__all__ = [
    "CHUNK_ROWS",
    "DECIMAL_COMMA",
    "check_header",
    "frames",
    "is_parquet",
    "numeric_missing_token",
    "read_header",
    "require_data",
    "row_label",
    "short",
]

T = TypeVar("T")

#: Rows per chunk of the text path and of Parquet batches.
CHUNK_ROWS = 131_072

#: Bytes per block of the fast CSV reader: its memory grows with the block (4 MiB
#: blocks held ~190 MiB over 10 million rows, 256 KiB ones ~35 MiB, at the same speed).
CSV_BLOCK_BYTES = 256 << 10

#: File names of Parquet data (a file, or the files of a folder).
_PARQUET_SUFFIXES = (".parquet", ".pq")

#: A number written with a decimal comma ("3,5", "-12,25").
DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


def short(text: str, limit: int = 60) -> str:
    """An expression or cell cut for a one-line message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def require_data(city: CitySpec) -> None:
    """The city's data source exists: a CSV or Parquet file, or a folder of Parquet files.

    Raises
    ------
    DataError
        Naming the path, and what it is instead (missing, or a folder of something else).
    """
    path = city.data
    if city.database is not None or (path.is_dir() and is_parquet(city)):
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


def is_parquet(city: CitySpec) -> bool:
    """A Parquet file, or a folder of them (``*.parquet``), rather than a CSV."""
    path = city.data
    if city.database is not None:
        return False
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return True
    return path.is_dir() and any(
        child.suffix.lower() in _PARQUET_SUFFIXES for child in path.iterdir()
    )


def row_label(city: CitySpec, row: int) -> str:
    """Where a 0-based data row is: its line in a CSV (header = line 1), its row in Parquet."""
    typed = city.database is not None or is_parquet(city)
    return f"row {row + 1}" if typed else f"row {row + 1} (line {row + 2})"


def numeric_missing_token(city: CitySpec) -> bool:
    """True when a missing-value token reads as a finite number (such as ``-999``)."""
    tokens = pd.to_numeric(pd.Series(list(city.missing_values), dtype=object), errors="coerce")
    return bool(np.isfinite(tokens.to_numpy(dtype=np.float64, na_value=np.nan)).any())


def _parquet_dataset(city: CitySpec) -> Any:
    import pyarrow.dataset as ds

    try:
        return ds.dataset(str(city.data), format="parquet")
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"{city.label}: not a readable Parquet dataset ({exc})") from None


def read_header(city: CitySpec) -> list[str]:
    """The header's column names, stripped, in file order (duplicates kept)."""
    path = city.data
    require_data(city)
    if city.database is not None:
        return read_sql_header(city)
    if is_parquet(city):
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


def check_header(city: CitySpec, header: list[str], needed: set[str]) -> None:
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
    """The source has every needed column, or the error names the first missing one."""
    missing = sorted(needed - set(header))
    if missing:
        available = ", ".join(repr(c) for c in header[:12])
        text = city.database is None and not is_parquet(city)
        more = ", ..." if len(header) > 12 and text else ""
        hint = _delimiter_hint(city, header) if text else ""
        raise DataError(
            f"{city.label}: column {short(missing[0])!r} not found (columns are "
            f"{short(available + more, 200)}); fix [columns] in {city.source}{hint}"
        )


def frames(
    city: CitySpec, numeric: set[str], textual: set[str], header: list[str]
) -> Iterator[pd.DataFrame]:
    """The needed columns of every row, in order, as frames of at most :data:`CHUNK_ROWS` rows.

    Numbers come typed from Parquet, SQL and the fast CSV path, as text from the
    CSV text path; labels as text. An empty source yields no frame (the caller
    says so).

    Raises
    ------
    DataError
        A missing column, or a source that cannot be read, naming it.
    """
    needed = numeric | textual
    require_data(city)
    _require_columns(city, needed, header)
    if city.database is not None:
        return prefetched(iter_sql_columns(city, needed))
    reader = (
        _parquet_frames(city, needed)
        if is_parquet(city)
        else _csv_frames(city, numeric, textual, header)
    )
    return prefetched(reader) if _size(city.data) > READ_AHEAD_BYTES else reader


#: A source of fewer bytes is read in the consumer's thread (a reader thread
#: would cost more than the one or two chunks it could overlap).
READ_AHEAD_BYTES = 8 << 20


def _size(path: Path) -> int:
    """Bytes of a file, or of the files of a folder."""
    try:
        if path.is_dir():
            return sum(child.stat().st_size for child in path.iterdir() if child.is_file())
        return path.stat().st_size
    except OSError:
        return 0


#: Frames read ahead of the one being harmonised (the memory of as many chunks).
READ_AHEAD = 2

_DONE = object()


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, produced by a reader thread up to :data:`READ_AHEAD` ahead of the consumer.

    Parsing (pyarrow, pandas' C parser, a database driver) mostly runs without
    the GIL, so reading the next chunk overlaps harmonising this one: on two
    cores that is most of the reading time. Errors reach the consumer at the
    position they happened; a consumer that stops early stops the thread.
    """
    out: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
            return
        finally:
            close = getattr(items, "close", None)
            if stop.is_set() and close is not None:
                close()
        put((True, _DONE))

    thread = threading.Thread(target=produce, name="cityfed-reader", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = out.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _parquet_frames(city: CitySpec, needed: set[str]) -> Iterator[pd.DataFrame]:
    """The needed columns, file by file in the dataset's order, batch by batch.

    ``ParquetFile.iter_batches`` decodes one row group at a time (a dataset
    scanner reads ahead many: 400 MiB over 10 million rows against 70 MiB).
    """
    import pyarrow.parquet as pq

    dataset = _parquet_dataset(city)  # one discovery of the files for the schema and rows
    by_stripped = {name.strip(): name for name in dataset.schema.names}
    columns = [by_stripped[n] for n in sorted(needed)]
    try:
        for path in dataset.files:
            handle = pq.ParquetFile(path, pre_buffer=False)
            try:
                for batch in handle.iter_batches(
                    batch_size=CHUNK_ROWS, columns=columns, use_threads=False
                ):
                    if batch.num_rows:
                        frame: pd.DataFrame = batch.to_pandas()
                        frame.columns = [str(c).strip() for c in frame.columns]
                        yield frame
            finally:
                handle.close()
    except (OSError, ValueError) as exc:
        raise DataError(f"{city.label}: not a readable Parquet dataset ({exc})") from None


class _FallbackError(Exception):
    """The fast CSV path cannot read what follows exactly as the text path would."""


def _csv_frames(
    city: CitySpec, numeric: set[str], textual: set[str], header: list[str]
) -> Iterator[pd.DataFrame]:
    delivered = 0
    fast = _typed_csv(city, numeric, textual, header)
    if fast is not None:
        try:
            for frame in fast:
                delivered += len(frame)
                yield frame
        except _FallbackError:
            pass
        else:
            if delivered:
                return
    yield from _text_csv(city, skip=delivered)


def _typed_csv(
    city: CitySpec, numeric: set[str], textual: set[str], header: list[str]
) -> Iterator[pd.DataFrame] | None:
    """The fast path of a CSV, or None where it cannot apply to this file at all.

    pyarrow's streaming reader with typed columns, the city's delimiter, decimal
    mark and missing-value tokens. A batch it cannot read exactly as the text
    path would raises :class:`_FallbackError`.
    """
    if city.thousands is not None or numeric & textual or numeric_missing_token(city):
        return None
    try:
        with city.data.open(encoding=city.encoding, newline="") as handle:
            raw_header = next(csv.reader([handle.readline()], delimiter=city.delimiter))
    except (OSError, UnicodeDecodeError, StopIteration):
        return None
    if raw_header != header:  # names padded with spaces: the text path strips them
        return None
    return _typed_batches(city, numeric, textual)


def _typed_batches(city: CitySpec, numeric: set[str], textual: set[str]) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    types = {name: pa.float64() for name in numeric} | {name: pa.string() for name in textual}
    encoding = "utf8" if city.encoding == "utf-8-sig" else city.encoding
    failures = (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError)
    try:
        reader = pacsv.open_csv(
            city.data,
            read_options=pacsv.ReadOptions(
                encoding=encoding, block_size=CSV_BLOCK_BYTES, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(delimiter=city.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=sorted(numeric | textual),
                null_values=list(city.missing_values),
                strings_can_be_null=True,
                decimal_point=city.decimal,
            ),
        )
    except failures:
        raise _FallbackError from None
    batches: list[Any] = []
    rows = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            batch = None
        except failures:
            raise _FallbackError from None
        if batch is not None:
            for name in numeric:
                # "inf" or a "NaN" that is not a missing token: the text path names the cell.
                if pc.all(pc.is_finite(batch.column(name))).as_py() is False:
                    raise _FallbackError
            batches.append(batch)
            rows += batch.num_rows
        if rows and (batch is None or rows >= CHUNK_ROWS):
            # Small blocks keep the reader's memory low; frames of CHUNK_ROWS the overhead.
            frame: pd.DataFrame = pa.Table.from_batches(batches).to_pandas()
            batches, rows = [], 0
            for name in textual:
                column = frame[name]
                if not column.str.strip().equals(column):
                    raise _FallbackError
            yield frame
        if batch is None:
            return


def _text_csv(city: CitySpec, *, skip: int) -> Iterator[pd.DataFrame]:
    """Every cell as text, in chunks, from data row ``skip`` on (the slow, exact path)."""
    path = city.data
    label = path.name
    seen = 0
    try:
        reader = pd.read_csv(
            path,
            sep=city.delimiter,
            encoding=city.encoding,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
            engine="c",
            chunksize=CHUNK_ROWS,
        )
        with reader:
            for frame in reader:
                frame.columns = [str(c).strip() for c in frame.columns]
                start, seen = seen, seen + len(frame)
                if seen <= skip:
                    continue
                yield frame.iloc[max(skip - start, 0) :] if start < skip else frame
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
