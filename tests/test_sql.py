"""City data from SQL: a real PostgreSQL server started here, and SQLite, read-only.

The PostgreSQL server runs from Debian's binaries in a private folder, on a free
loopback port (as the unprivileged ``nobody`` when the tests run as root, which
PostgreSQL requires), and is stopped and removed at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cityfed_server.training import train
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import load_city, load_federation
from cityfed.data.city_data import load_city_data
from cityfed.errors import DataError, SpecError

from .synthetic import local_exchange

ADMIN_PASSWORD = "admin-Secret-9"
READER_PASSWORD = "reader-Secret-7"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    matches = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return matches[-1] if matches else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server of this test module."""

    port: int
    admin_url: str

    def execute(self, *statements: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=ADMIN_PASSWORD,
            dbname=database,
            autocommit=True,
        ) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    def frame(self, table: str, frame: pd.DataFrame, database: str = "energy") -> None:
        import sqlalchemy

        url = f"postgresql+psycopg://postgres:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/{database}"
        engine = sqlalchemy.create_engine(url)
        frame.to_sql(table, engine, index=False, if_exists="replace")
        engine.dispose()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.fail("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="cityfed-pg-"))
    as_user: dict[str, int] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = {"user": 65534, "group": 65534}
        os.chown(root, 65534, 65534)
    (root / "pw").write_text(ADMIN_PASSWORD, encoding="utf-8")
    if as_user:
        os.chown(root / "pw", 65534, 65534)
    port = _free_port()
    data = root / "data"

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=120, cwd=root, **as_user)  # type: ignore[call-overload]

    run(
        initdb, "-D", str(data), "-U", "postgres", f"--pwfile={root / 'pw'}",
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions",
    )  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        server = Server(port, f"postgresql://postgres@127.0.0.1:{port}/postgres")
        server.execute(
            f"CREATE ROLE city_reader LOGIN PASSWORD '{READER_PASSWORD}'",
            "CREATE DATABASE energy OWNER postgres",
        )
        yield server
    finally:
        subprocess.run(
            [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
            cwd=root,
            **as_user,  # type: ignore[call-overload]
        )
        shutil.rmtree(root, ignore_errors=True)


def _rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Rows in federation units: temperature °C, wind m/s, load kWh."""
    temp = rng.normal(10.0, 7.0, n)
    wind = rng.gamma(2.0, 2.0, n)
    load = 500.0 - 12.0 * temp + 9.0 * wind + rng.normal(0.0, 5.0, n)
    return pd.DataFrame({"temp": temp, "wind": wind, "load": load})


FEDERATION = """[federation]
name = "grid"
model = "ridge"
alpha = 2.0
min_cities = 2
min_rows_per_city = 20

[target]
name = "load"
unit = "kWh"

[[features]]
name = "temp"
unit = "degC"

[[features]]
name = "wind"
unit = "m/s"
"""


def _city(tmp_path: Path, name: str, head: str, columns: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[city]\nname = "{name}"\n{head}\n[columns]\n{columns}\n'
        '[policy]\nagreed = ["federation.toml"]\n',
        encoding="utf-8",
    )
    return path


def test_csv_parquet_sqlite_and_postgresql_cities_give_the_pooled_fit(
    tmp_path: Path, postgres: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: four cities, four sources, each with its own names, units and gaps.
    rng = np.random.default_rng(4)
    parts = [_rows(rng, n) for n in (150, 220, 180, 260)]
    (tmp_path / "federation.toml").write_text(FEDERATION, encoding="utf-8")
    csv = parts[0].assign(temp_f=parts[0]["temp"] * 9 / 5 + 32).drop(columns="temp")
    csv.loc[3, "wind"] = np.nan
    csv.to_csv(tmp_path / "a.csv", index=False, na_rep="NA")
    parts[1].rename(columns={"load": "energy_mj"}).assign(
        energy_mj=parts[1]["load"] * 3.6
    ).to_parquet(tmp_path / "b.parquet", index=False)
    lite = parts[2].assign(wind_kmh=parts[2]["wind"] * 3.6).drop(columns="wind")
    with sqlite3.connect(tmp_path / "c.db") as connection:
        lite.to_sql("readings", connection, index=False)
    pg = parts[3].rename(columns={"temp": "Temperatur", "load": "verbrauch"})
    pg.loc[7, "wind"] = np.nan  # NULL in the database
    postgres.frame("messwerte", pg)
    postgres.execute("GRANT SELECT ON messwerte TO city_reader", database="energy")
    monkeypatch.setenv("CITY_D_DB_PASSWORD", READER_PASSWORD)
    cities = [
        _city(tmp_path, "a", 'data = "a.csv"',
              'temp = { source = "temp_f", unit = "degF" }\nwind = "wind"\nload = "load"'),
        _city(tmp_path, "b", 'data = "b.parquet"',
              'temp = "temp"\nwind = "wind"\nload = { source = "energy_mj", unit = "MJ" }'),
        _city(tmp_path, "c", 'data = "sqlite:///c.db"\ntable = "readings"',
              'temp = "temp"\nwind = { source = "wind_kmh", unit = "km/h" }\nload = "load"'),
        _city(
            tmp_path, "d",
            f'data = "postgresql://city_reader@127.0.0.1:{postgres.port}/energy"\n'
            'query = "SELECT * FROM messwerte WHERE verbrauch > 0"\n'
            'password_env = "CITY_D_DB_PASSWORD"',
            'temp = "Temperatur"\nwind = "wind"\nload = "verbrauch"',
        ),
    ]  # fmt: skip
    fed = load_federation(tmp_path / "federation.toml")
    # Execute
    result = train(fed, local_exchange(cities), run_id="sql")
    # Assert: every source harmonised alike; the model is the pooled fit.
    data = [load_city_data(load_city(c), fed) for c in cities]
    assert [d.rows_dropped for d in data] == [1, 0, 0, 1]
    assert data[3].drop_reasons == {"missing wind": 1}
    X = np.vstack([d.X_train for d in data])
    y = np.concatenate([d.y_train for d in data])
    reference = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(X, y)
    assert result.model.cities == ("a", "b", "c", "d")
    np.testing.assert_allclose(result.model.decision(X), reference.predict(X), rtol=1e-10)
    # The same rows, whatever the source: the PostgreSQL city's are its own rows.
    full = np.column_stack([parts[3]["temp"], parts[3]["wind"]])
    rows = np.vstack([data[3].X_train, data[3].X_holdout])
    assert rows.shape[0] == 259
    np.testing.assert_allclose(np.sort(rows[:, 0]), np.sort(np.delete(full, 7, axis=0)[:, 0]))


def test_a_query_that_writes_is_refused_by_the_read_only_session(
    tmp_path: Path, postgres: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres.frame("victims", _rows(np.random.default_rng(0), 40))
    postgres.execute(
        "GRANT SELECT, DELETE ON victims TO city_reader",
        "CREATE SEQUENCE counter",
        "GRANT USAGE ON SEQUENCE counter TO city_reader",
        database="energy",
    )
    (tmp_path / "federation.toml").write_text(FEDERATION, encoding="utf-8")
    monkeypatch.setenv("PG_PW", READER_PASSWORD)
    fed = load_federation(tmp_path / "federation.toml")
    url = f"postgresql://city_reader@127.0.0.1:{postgres.port}/energy"
    columns = 'temp = "temp"\nwind = "wind"\nload = "load"'
    # A SELECT with a side effect: the session itself is read-only, so it fails.
    bump = _city(
        tmp_path, "bump", f'data = "{url}"\npassword_env = "PG_PW"\n'
        'query = "SELECT temp, wind, load, nextval("counter") AS n FROM victims"'.replace(
            'nextval("counter")', "nextval('counter')"
        ), columns,
    )  # fmt: skip
    with pytest.raises(DataError, match="read-only transaction") as info:
        load_city_data(load_city(bump), fed)
    assert "\n" not in str(info.value) and READER_PASSWORD not in str(info.value)
    # A DELETE hidden in a WITH: refused, and nothing is deleted.
    evil = _city(
        tmp_path, "evil", f'data = "{url}"\npassword_env = "PG_PW"\n'
        'query = "WITH gone AS (DELETE FROM victims RETURNING *) SELECT * FROM gone"', columns,
    )  # fmt: skip
    with pytest.raises(DataError, match="query \\(postgresql\\): "):
        load_city_data(load_city(evil), fed)
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", password=ADMIN_PASSWORD,
        dbname="energy",
    ) as connection:  # fmt: skip
        assert connection.execute("SELECT count(*) FROM victims").fetchone() == (40,)
    # SQLite: the file is opened read-only.
    with sqlite3.connect(tmp_path / "t.db") as connection:
        _rows(np.random.default_rng(1), 30).to_sql("t", connection, index=False)
    lite = _city(
        tmp_path,
        "lite",
        'data = "sqlite:///t.db"\nquery = "WITH x AS (SELECT 1) DELETE FROM t"',
        'temp = "temp"\nwind = "wind"\nload = "load"',
    )
    with pytest.raises(DataError, match="syntax error"):  # not a SELECT once wrapped
        load_city_data(load_city(lite), load_federation(tmp_path / "federation.toml"))
    # Below the query check, the connection itself cannot write.
    from cityfed.data.sql import _connection

    with pytest.raises(DataError, match="attempt to write a readonly database"):  # noqa: SIM117
        with _connection(load_city(lite)) as connection:
            connection.exec_driver_sql("DELETE FROM t")
    with sqlite3.connect(tmp_path / "t.db") as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone() == (30,)


def test_passwords_never_come_from_the_toml_and_failures_are_one_line(
    tmp_path: Path, postgres: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "federation.toml").write_text(FEDERATION, encoding="utf-8")
    fed = load_federation(tmp_path / "federation.toml")
    url = f"postgresql://city_reader@127.0.0.1:{postgres.port}/energy"
    columns = 'temp = "temp"\nwind = "wind"\nload = "load"'
    with_pw = _city(
        tmp_path, "x", f'data = "postgresql://city_reader:{READER_PASSWORD}@h/energy"\n'
        'table = "t"', columns,
    )  # fmt: skip
    with pytest.raises(SpecError, match="the URL holds a password; a password never goes in"):
        load_city(with_pw)
    unset = _city(tmp_path, "y", f'data = "{url}"\ntable = "t"\npassword_env = "NOPE_PW"', columns)
    monkeypatch.delenv("NOPE_PW", raising=False)
    with pytest.raises(SpecError, match="environment variable 'NOPE_PW' is not set"):
        load_city_data(load_city(unset), fed)
    (tmp_path / "wrong.secret").write_text("not-the-password\n", encoding="utf-8")
    wrong = _city(
        tmp_path, "z", f'data = "{url}"\ntable = "t"\npassword_file = "wrong.secret"', columns
    )
    with pytest.raises(DataError) as info:
        load_city_data(load_city(wrong), fed)
    message = str(info.value)
    assert message.startswith("t (postgresql): ") and "password authentication failed" in message
    assert "\n" not in message and "not-the-password" not in message
    assert "127.0.0.1" not in message  # the city's host stays on the city
    (tmp_path / "right.secret").write_text(READER_PASSWORD, encoding="utf-8")
    missing = _city(
        tmp_path, "w", f'data = "{url}"\ntable = "no_such"\npassword_file = "right.secret"', columns
    )
    with pytest.raises(DataError, match=r"no_such \(postgresql\): table 'no_such' not found"):
        load_city_data(load_city(missing), fed)
    for head, expected in {
        'data = "mysql://u@h/db"\ntable = "t"': "a URL of postgresql",
        f'data = "{url}"': "exactly one of table or query",
        f'data = "{url}"\nquery = "DROP TABLE t"': "one SELECT",
        f'data = "{url}"\nquery = "SELECT 1; DROP TABLE t"': "one SELECT",
        'data = "a.csv"\ntable = "t"': "only for a database",
    }.items():
        with pytest.raises(SpecError, match=expected):
            load_city(_city(tmp_path, "v", head, columns))


def test_a_table_is_read_in_its_key_order_so_the_split_does_not_depend_on_storage(
    tmp_path: Path,
) -> None:
    rows = _rows(np.random.default_rng(2), 120).assign(id=np.arange(120))
    (tmp_path / "federation.toml").write_text(FEDERATION, encoding="utf-8")
    fed = load_federation(tmp_path / "federation.toml")
    loaded = []
    for k, order in enumerate([rows, rows.sample(frac=1.0, random_state=3)]):
        db = tmp_path / f"k{k}.db"
        with sqlite3.connect(db) as connection:
            connection.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, temp, wind, load)")
            connection.executemany(
                "INSERT INTO m VALUES (?, ?, ?, ?)",
                order[["id", "temp", "wind", "load"]].itertuples(index=False),
            )
        city = tmp_path / f"same{k}.toml"  # one city (the split is seeded by its name)
        city.write_text(
            f'[city]\nname = "same"\ndata = "sqlite:///{db.name}"\ntable = "m"\n[columns]\n'
            'temp = "temp"\nwind = "wind"\nload = "load"\n',
            encoding="utf-8",
        )
        loaded.append(load_city_data(load_city(city), fed))
    np.testing.assert_array_equal(loaded[0].X_train, loaded[1].X_train)
    np.testing.assert_array_equal(loaded[0].y_holdout, loaded[1].y_holdout)
