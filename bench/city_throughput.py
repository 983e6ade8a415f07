"""One city's statistics at scale: CityFed's reading path against pandas/pyarrow + numpy.

For each row count, a city table of 5 columns in US units (°F, inHg, mph, percent,
kWh) is written once as CSV and as Parquet; then each way of computing the city's
statistics runs in a fresh process, alternating, ``--repeat`` times:

* ``pandas``: ``pandas.read_csv`` + the same moments in numpy (the baseline);
* ``pyarrow``: ``pyarrow.csv.read_csv`` (or ``pyarrow.parquet``) + the moments;
* ``cityfed``: what a city node computes for the moments: its source streamed in
  chunks (mapping, units, missing values, holdout split, block by block) and the
  moments of the training rows merged block by block (``streamed_blocks`` +
  ``summarise``), in memory bounded whatever the row count.

Wall time and the peak resident memory of the process (``ru_maxrss``) are reported
with their ratio to the baseline of the same run.

    python bench/city_throughput.py                       # 1,000,000 rows, 3 runs each
    python bench/city_throughput.py --rows 1000000 10000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, command_line, machine, machine_line, print_table, write_json

FEDERATION = """[federation]
name = "throughput"
model = "ridge"
holdout_fraction = 0.2

[target]
name = "load"
unit = "kWh"

[[features]]
name = "temp"
unit = "degC"

[[features]]
name = "pressure"
unit = "hPa"

[[features]]
name = "wind"
unit = "m/s"

[[features]]
name = "humid"
unit = "percent"
"""

CITY = """[city]
name = "city"
data = "{data}"

[columns]
temp = {{ source = "temp_f", unit = "degF" }}
pressure = {{ source = "pressure_inhg", unit = "inHg" }}
wind = {{ source = "wind_mph", unit = "mph" }}
humid = {{ source = "humid", unit = "percent" }}
load = {{ source = "kwh", unit = "kWh" }}
"""


def write_city(root: Path, rows: int) -> None:
    """The table as ``city.csv`` and ``city.parquet``, and a ``city.toml`` for each."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "temp_f": rng.normal(50.0, 15.0, rows).round(2),
            "pressure_inhg": rng.normal(29.9, 0.3, rows).round(3),
            "wind_mph": rng.gamma(2.0, 4.0, rows).round(2),
            "humid": rng.uniform(20.0, 100.0, rows).round(1),
            "kwh": rng.normal(500.0, 80.0, rows).round(3),
        }
    )
    frame.to_csv(root / "city.csv", index=False)
    frame.to_parquet(root / "city.parquet", index=False)
    (root / "federation.toml").write_text(FEDERATION, encoding="utf-8")
    for kind in ("csv", "parquet"):
        text = CITY.format(data=f"city.{kind}")
        (root / f"city-{kind}.toml").write_text(text, encoding="utf-8")


def measure(way: str, kind: str, root: Path) -> dict[str, float]:
    """Run one way in this process (the child): seconds and peak RSS in MiB.

    The libraries are imported before the clock starts (a per-process constant
    that does not grow with the rows; the same for every way).
    """
    import pandas as pd
    import pyarrow.csv
    import pyarrow.parquet

    from cityfed.config.spec import load_city, load_federation
    from cityfed.core.stats import Moments
    from cityfed.data.rows import Tally, streamed_blocks, summarise

    started = time.perf_counter()
    if way == "pandas":
        frame = (
            pd.read_csv(root / "city.csv")
            if kind == "csv"
            else pd.read_parquet(root / "city.parquet")
        )
        Moments.of(frame.to_numpy(dtype=np.float64))
    elif way == "pyarrow":
        table = (
            pyarrow.csv.read_csv(root / "city.csv")
            if kind == "csv"
            else pyarrow.parquet.read_table(root / "city.parquet")
        )
        Moments.of(np.column_stack([c.to_numpy() for c in table.columns]))
    else:
        city = load_city(root / f"city-{kind}.toml")
        fed = load_federation(root / "federation.toml")
        summarise(streamed_blocks(city, fed, Tally()), city, fed)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mib": _peak_mib()}


def _peak_mib() -> float:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` survives ``exec``,
    so a child would report its parent's peak when that was higher)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    """Parse arguments, write the tables, run every way in fresh processes, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "city_throughput.json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        way, kind, root = args.child
        print(json.dumps(measure(way, kind, Path(root))))
        return 0
    info = machine()
    results = []
    started = time.perf_counter()
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="cityfed-throughput-") as tmp:
            root = Path(tmp)
            write_city(root, rows)
            for kind in ("csv", "parquet"):
                runs: dict[str, list[dict[str, float]]] = {w: [] for w in WAYS}
                for _ in range(args.repeat):
                    for way in WAYS:  # alternating: drift hits every way alike
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", way, kind, str(root)],
                            check=True, capture_output=True, text=True,
                        )  # fmt: skip
                        runs[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
                base = runs["pandas"]
                for way in WAYS:
                    seconds = statistics.median(r["seconds"] for r in runs[way])
                    peak = statistics.median(r["peak_mib"] for r in runs[way])
                    results.append(
                        {
                            "rows": rows,
                            "format": kind,
                            "way": way,
                            "seconds": seconds,
                            "peak_mib": peak,
                            "time_ratio": seconds / statistics.median(r["seconds"] for r in base),
                            "memory_ratio": peak / statistics.median(r["peak_mib"] for r in base),
                        }
                    )
    columns = ["rows", "format", "way", "time (median)", "× pandas", "peak RSS", "× pandas"]
    table = [
        [
            f"{r['rows']:,}", r["format"], r["way"], f"{r['seconds']:.2f} s",
            f"{r['time_ratio']:.2f}", f"{r['peak_mib']:.0f} MiB", f"{r['memory_ratio']:.2f}",
        ]
        for r in results
    ]  # fmt: skip
    print_table(
        "One city's statistics: time and peak memory against pandas + numpy", columns, table
    )
    print(machine_line(info) + f"; total {time.perf_counter() - started:.0f} s")
    write_json(
        args.json,
        {"command": command_line(), "machine": info, "repeat": args.repeat, "rows": results},
    )
    print(f"results: {args.json}")
    return 0


WAYS = ("pandas", "pyarrow", "cityfed")

if __name__ == "__main__":
    sys.exit(main())
