"""A city's rows from a SQL database (PostgreSQL, SQLite), read-only, through SQLAlchemy.

The table (in its primary key's order when it has one, else as stored) or the
city's own ``SELECT`` is read in chunks of :data:`CHUNK_ROWS`, keeping only the
columns the mapping needs; numbers arrive typed, text as text, and the same
harmonisation as for a CSV follows. The connection cannot write: PostgreSQL
sessions start with ``default_transaction_read_only = on`` (a ``WITH ... DELETE``
hidden in a query fails), SQLite files are opened ``mode=ro``. The password is
read from the environment variable or file the city names, never from
``city.toml``, and never appears in a message.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from cityfed.config.spec import CitySpec, DatabaseSpec
from cityfed.errors import DataError, SpecError

__all__ = ["CHUNK_ROWS", "iter_sql_columns", "read_sql_header"]

#: Rows fetched per round trip to the database.
CHUNK_ROWS = 100_000


def _password(db: DatabaseSpec, city: CitySpec) -> str | None:
    """The password from ``password_env`` or ``password_file``, or None without either.

    Raises
    ------
    SpecError
        If the variable is unset or the file unreadable, naming the key.
    """
    if db.password_env is not None:
        value = os.environ.get(db.password_env)
        if value is None:
            raise SpecError(
                f"{city.source}: [city] password_env: the environment variable "
                f"{db.password_env!r} is not set"
            )
        return value
    if db.password_file is not None:
        try:
            return db.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SpecError(
                f"{city.source}: [city] password_file: cannot read {db.password_file.name} "
                f"({exc.strerror})"
            ) from None
    return None


def _engine(city: CitySpec) -> Any:
    import sqlalchemy

    db = city.database
    assert db is not None
    url = sqlalchemy.engine.make_url(db.url)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if not os.path.isfile(path):
            raise DataError(f"{city.label}: database file not found (set [city] data)")

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            connection.execute("PRAGMA query_only = ON")
            return connection

        return sqlalchemy.create_engine("sqlite://", creator=connect, poolclass=sqlalchemy.NullPool)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    password = _password(db, city)
    if password is not None:
        url = url.set(password=password)
    return sqlalchemy.create_engine(
        url,
        poolclass=sqlalchemy.NullPool,
        connect_args={"options": "-c default_transaction_read_only=on", "connect_timeout": 10},
    )


@contextmanager
def _connection(city: CitySpec) -> Iterator[Any]:
    """A read-only connection; a failure is one line naming the source (no password)."""
    import sqlalchemy.exc

    engine = _engine(city)
    try:
        with engine.connect() as connection:
            yield connection
    except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        # pandas wraps the driver's error (with the SQL); the driver's first line says why.
        cause: BaseException = exc
        while not isinstance(cause, sqlalchemy.exc.SQLAlchemyError) and cause.__cause__:
            cause = cause.__cause__
        lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        detail = _redacted(lines[0] if lines else type(exc).__name__, city)
        raise DataError(f"{city.label}: {detail}") from None
    finally:
        engine.dispose()


def _redacted(text: str, city: CitySpec) -> str:
    """A driver's message without the city's host, port, user and database name.

    The message can travel to the coordinator in a refusal; like a CSV's folders,
    where the city's database lives stays on the city.
    """
    import sqlalchemy

    assert city.database is not None
    url = sqlalchemy.engine.make_url(city.database.url)
    for secret, shown in (
        (url.host, "<host>"),
        (str(url.port) if url.port else None, "<port>"),
        (url.username, "<user>"),
        (url.database, "<database>"),
    ):
        if secret:
            text = text.replace(secret, shown)
    return text


def read_sql_header(city: CitySpec) -> list[str]:
    """The columns of the table or query, in order (no rows fetched)."""
    import sqlalchemy

    db = city.database
    assert db is not None
    with _connection(city) as connection:
        if db.query is not None:
            result = connection.execute(
                sqlalchemy.text(f"SELECT * FROM ({db.query}) AS cityfed_source LIMIT 0")
            )
            return [str(name).strip() for name in result.keys()]  # noqa: SIM118 (not a dict)
        schema, _, name = (db.table or "").rpartition(".")
        inspector = sqlalchemy.inspect(connection)
        if not inspector.has_table(name, schema=schema or None):
            raise DataError(f"{city.label}: table {db.table!r} not found")
        return [str(c["name"]).strip() for c in inspector.get_columns(name, schema=schema or None)]


def iter_sql_columns(city: CitySpec, needed: set[str]) -> Iterator[pd.DataFrame]:
    """The needed columns of every row in chunks of :data:`CHUNK_ROWS`, numbers typed.

    The connection stays open while the chunks are read (a read-only session);
    a query that returns no rows yields nothing (the caller says so).

    Raises
    ------
    DataError
        A connection or query failure (a write refused by the read-only session
        included).
    """
    import sqlalchemy

    db = city.database
    assert db is not None
    names = sorted(needed)
    with _connection(city) as connection:
        if db.query is not None:
            quoted = ", ".join(connection.dialect.identifier_preparer.quote(n) for n in names)
            statement: Any = sqlalchemy.text(f"SELECT {quoted} FROM ({db.query}) AS cityfed_source")
        else:
            schema, _, name = (db.table or "").rpartition(".")
            statement = sqlalchemy.select(*[sqlalchemy.column(n) for n in names]).select_from(
                sqlalchemy.table(name, schema=schema or None)
            )
            key = sqlalchemy.inspect(connection).get_pk_constraint(name, schema=schema or None)
            order = key.get("constrained_columns") or []
            if order:  # a stable row order, so the holdout split is the same every run
                statement = statement.order_by(*[sqlalchemy.column(c) for c in order])
        # A server-side cursor: the database sends the rows chunk by chunk.
        streaming = connection.execution_options(stream_results=True, max_row_buffer=CHUNK_ROWS)
        for frame in pd.read_sql_query(
            statement, streaming, chunksize=CHUNK_ROWS, coerce_float=True
        ):
            if len(frame):
                frame.columns = [str(c).strip() for c in frame.columns]
                yield frame
