"""What ``cityfed simulate`` costs at 10, 100 and 1,000 cities, against plain Flower.

For each number of cities, synthetic non-IID cities (d = 20 features, 1,000 rows
each, own feature means and spreads, own intercept) are written as CSV +
``city.toml``; then, in this script, one after the other:

* ``cityfed simulate FEDERATION CITY... --out OUT --json`` (the CLI, as a user
  runs it: validation of every CSV (beyond 100 cities: of specs and headers,
  each node validating its rows), Flower's simulation engine with one node per
  city, the exact ridge fit, the pooled check against scikit-learn (beyond 100
  cities only with ``--check``), report);
* ``python bench/plain_flower.py``: a plain Flower app, one round of Flower's
  built-in FedAvg strategy over ClientApps that fit scikit-learn Ridge on their
  CSV (see that file).

Measured for each: wall time of the whole command, peak memory of its whole
process tree (sum of PSS over the command, the engine and every Ray process,
sampled every 0.2 s from /proc) and the time spent in aggregation alone
(CityFed: ``report["timing"]["aggregation_seconds"]``, the merges of the cities'
statistics and the solve; plain Flower: its strategy's ``aggregate_train``).

    python bench/scale.py --quick     # 10 and 100 cities, 3 runs each: about 3 minutes
    python bench/scale.py             # 10, 100 and 1,000 cities
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    BENCH_DIR,
    RESULTS_DIR,
    command_line,
    machine,
    machine_line,
    markdown_table,
    print_table,
    run_measured,
    write_json,
)


def write_cities(
    root: Path, n_cities: int, *, d: int, rows: int, holdout: float, seed: int = 0
) -> tuple[Path, list[Path], list[Path]]:
    """Write the federation, one CSV and one ``city.toml`` per city.

    Returns
    -------
    tuple
        ``(federation.toml, city configs, CSVs)``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"x{j}" for j in range(d)]
    features = "".join(f'[[features]]\nname = "{n}"\nunit = "dimensionless"\n\n' for n in names)
    federation = root / "federation.toml"
    federation.write_text(
        '[federation]\nname = "scale"\ntask = "regression"\nmodel = "ridge"\nalpha = 1.0\n'
        f"standardize = true\nholdout_fraction = {holdout}\nseed = 0\nmin_cities = 2\n"
        'min_rows_per_city = 50\nmissing = "drop"\n\n'
        f'[target]\nname = "y"\nunit = "dimensionless"\n\n{features}',
        encoding="utf-8",
    )
    beta = rng.normal(0.0, 1.0, d)
    header = ",".join([*names, "y"])
    configs, csvs = [], []
    for k in range(n_cities):
        centre = rng.normal(0.0, 2.0, d)
        spread = rng.uniform(0.5, 2.0, d)
        X = centre + rng.normal(size=(rows, d)) * spread
        y = 10.0 + rng.normal(0.0, 3.0) + X @ beta + rng.normal(0.0, 1.0, rows)
        csv = root / f"city{k:04d}.csv"
        np.savetxt(csv, np.column_stack([X, y]), delimiter=",", fmt="%.9g", header=header)
        text = csv.read_text(encoding="utf-8")
        csv.write_text(text[2:], encoding="utf-8")  # savetxt writes "# " before the header
        config = root / f"city{k:04d}.toml"
        mapping = "".join(f'{name} = "{name}"\n' for name in (*names, "y"))
        config.write_text(
            f'[city]\nname = "city{k:04d}"\ndata = "{csv.name}"\n\n[columns]\n{mapping}\n'
            '[policy]\nagreed = ["federation.toml"]\n',
            "utf-8",
        )
        configs.append(config)
        csvs.append(csv)
    return federation, configs, csvs


def run_cityfed(federation: Path, configs: Sequence[Path], out: Path) -> dict[str, Any]:
    """``cityfed simulate`` as a user runs it, measured."""
    command = [sys.executable, "-m", "cityfed.cli", "simulate", str(federation)]
    command += [str(p) for p in configs] + ["--out", str(out), "--json"]
    measured = run_measured(command)
    if measured.returncode != 0:
        raise RuntimeError(f"cityfed simulate failed:\n{measured.stderr[-3000:]}")
    report = json.loads(measured.stdout)
    check = report["pooled_check"] or {}
    return {
        **measured.figures(),
        "aggregation_seconds": report["timing"]["aggregation_seconds"],
        "server_seconds": report["timing"]["wall_seconds"],
        "rounds": report["model"]["rounds"],
        "cities": len(report["model"]["cities"]),
        # None above 100 cities: the pooled check is opt-in there (--check).
        "pooled_check_within_tolerance": check.get("within_tolerance"),
        "pooled_check_relative_to_std_y": check.get("relative_to_std_y"),
    }


def run_plain(csvs: Sequence[Path], work: Path) -> dict[str, Any]:
    """The plain Flower app on the same CSVs, measured."""
    listing = work / "plain-cities.txt"
    listing.write_text("\n".join(str(p) for p in csvs) + "\n")
    out = work / "plain.json"
    command = [sys.executable, str(BENCH_DIR / "plain_flower.py"), str(listing), str(out)]
    measured = run_measured(command)
    if measured.returncode != 0 or not out.exists():
        raise RuntimeError(f"plain Flower app failed:\n{measured.stderr[-3000:]}")
    result = json.loads(out.read_text())
    return {
        **measured.figures(),
        "aggregation_seconds": result["aggregation_seconds"],
        "server_seconds": result["server_seconds"],
        "rounds": 1,
        "cities": result["replies"],
    }


class _StreamedCities:
    """An Exchange whose cities' statistics are made on the fly, one reply at a time.

    It feeds CityFed's own coordinator code (``cityfed_server.training.train``)
    without a Flower runtime, so that the aggregation alone can be timed and its
    memory traced at any number of cities.
    """

    def __init__(self, count: int, d: int, seed: int = 0) -> None:
        self.count = count
        self.d = d
        self.seed = seed

    def nodes(self) -> list[int]:
        return list(range(1, self.count + 1))

    def exchange(self, instruction: Any, nodes: Sequence[int]) -> Iterator[tuple[int, Any]]:
        from cityfed.core.stats import Moments
        from cityfed.federation.outcome import CityOutcome
        from cityfed.federation.protocol import CityReply

        rng = np.random.default_rng(self.seed)
        p = self.d + 1
        for node in nodes:
            factor = rng.normal(size=(p, p))
            moments = Moments(1000, rng.normal(size=p), factor @ factor.T + p * np.eye(p))
            outcome = CityOutcome(f"city{node}", "ok", rows_read=1000, rows_train=1000)
            yield node, CityReply(outcome, moments=moments)


def aggregation_alone(counts: Sequence[int], d: int) -> list[dict[str, Any]]:
    """Time and trace the memory of CityFed's coordinator over streamed replies."""
    from cityfed_server.training import train

    from cityfed.config.spec import parse_federation

    fed = parse_federation(
        {
            "federation": {
                "name": "stream",
                "task": "regression",
                "model": "ridge",
                "holdout_fraction": 0.0,
            },
            "target": {"name": "y", "unit": "dimensionless"},
            "features": [{"name": f"x{j}", "unit": "dimensionless"} for j in range(d)],
        },
        "stream",
    )
    rows = []
    for count in counts:
        tracemalloc.start()
        started = time.perf_counter()
        result = train(fed, _StreamedCities(count, d), run_id="stream")
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(
            {
                "cities": count,
                "train_seconds": seconds,
                "aggregation_seconds": result.aggregation_seconds,
                "aggregation_us_per_city": result.aggregation_seconds / count * 1e6,
                "peak_traced_kib": peak / 1024,
            }
        )
    return rows


#: Measurements of which :func:`median_run` takes the median over repeated runs.
MEASURES = ("wall_seconds", "peak_pss_mib", "peak_rss_mib", "aggregation_seconds", "server_seconds")


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each measure over repeated runs; every run is kept too."""
    summary = dict(runs[len(runs) // 2])
    for key in MEASURES:
        summary[key] = float(np.median([run[key] for run in runs]))
    summary["runs"] = list(runs)
    return summary


COLUMNS = (
    "cities",
    "CityFed wall",
    "Flower wall",
    "ratio",
    "CityFed peak mem",
    "Flower peak mem",
    "ratio",
    "CityFed aggregation",
    "Flower aggregation",
    "ratio",
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table cells: one line per number of cities, CityFed against plain Flower."""
    cells = []
    for row in rows:
        ours, plain = row["cityfed"], row["flower"]
        if plain is None:  # --cityfed-only
            plain = {key: float("nan") for key in ("wall_seconds", "peak_pss_mib")} | {
                "aggregation_seconds": float("nan")
            }
        cells.append(
            [
                f"{row['cities']:,}",
                f"{ours['wall_seconds']:.1f} s",
                f"{plain['wall_seconds']:.1f} s",
                f"{ours['wall_seconds'] / plain['wall_seconds']:.2f}",
                f"{ours['peak_pss_mib']:,.0f} MiB",
                f"{plain['peak_pss_mib']:,.0f} MiB",
                f"{ours['peak_pss_mib'] / plain['peak_pss_mib']:.2f}",
                _ms(ours["aggregation_seconds"]),
                _ms(plain["aggregation_seconds"]),
                f"{ours['aggregation_seconds'] / plain['aggregation_seconds']:.2f}",
            ]
        )
    return cells


#: Numbers of cities of the coordinator-alone measurement (cheap: no engine).
STREAM_COUNTS = (10, 100, 1000, 10000)
STREAM_COLUMNS = ("cities", "train()", "aggregation", "per city", "peak traced memory")


def stream_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table cells of the coordinator-alone measurement."""
    return [
        [
            f"{row['cities']:,}",
            _ms(row["train_seconds"]),
            _ms(row["aggregation_seconds"]),
            f"{row['aggregation_us_per_city']:.0f} µs",
            f"{row['peak_traced_kib']:,.0f} KiB",
        ]
        for row in rows
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run both apps for each number of cities; print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 cities only")
    parser.add_argument("--cities", type=int, nargs="+", help="numbers of cities to run")
    parser.add_argument("--features", type=int, default=20, help="d (default 20)")
    parser.add_argument("--rows", type=int, default=1000, help="rows per city")
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="holdout_fraction of the federation (0: one training round, as the plain app)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each app per size; medians are shown"
    )
    parser.add_argument("--json", type=Path, help="results file (default bench/results/)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument(
        "--cityfed-only", action="store_true", help="run cityfed simulate only (no plain app)"
    )
    args = parser.parse_args(argv)
    counts = args.cities or ([10, 100] if args.quick else [10, 100, 1000])

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="cityfed-bench-scale-"))
    rows: list[dict[str, Any]] = []
    try:
        for count in counts:
            work = root / f"cities-{count}"
            tick = time.perf_counter()
            federation, configs, csvs = write_cities(
                work, count, d=args.features, rows=args.rows, holdout=args.holdout
            )
            print(f"{count} cities written in {time.perf_counter() - tick:.0f} s", flush=True)
            ours_runs, plain_runs = [], []
            for attempt in range(args.repeat):  # alternate, so drift hits both alike
                ours_runs.append(run_cityfed(federation, configs, work / f"out-{attempt}"))
                if not args.cityfed_only:
                    plain_runs.append(run_plain(csvs, work))
                plain = f"{plain_runs[-1]['wall_seconds']:.1f} s" if plain_runs else "not run"
                print(
                    f"  run {attempt + 1}: cityfed simulate {ours_runs[-1]['wall_seconds']:.1f} s "
                    f"(peak {ours_runs[-1]['peak_pss_mib']:,.0f} MiB PSS), plain Flower {plain}",
                    flush=True,
                )
            rows.append(
                {
                    "cities": count,
                    "cityfed": median_run(ours_runs),
                    "flower": median_run(plain_runs) if plain_runs else None,
                }
            )
    finally:
        if args.keep:
            print(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    streamed = aggregation_alone(STREAM_COUNTS, args.features)
    info = machine()
    elapsed = time.perf_counter() - started
    title = (
        f"cityfed simulate vs a plain Flower FedAvg app, one round each "
        f"(d = {args.features}, {args.rows:,} rows per city; median of {args.repeat} runs); "
        "ratio = CityFed / Flower"
    )
    print_table(title, COLUMNS, table_rows(rows), left=1)
    print_table(
        f"CityFed's coordinator alone (cityfed_server.training.train, d = {args.features}) "
        "over replies streamed one at a time, no Flower runtime",
        STREAM_COLUMNS,
        stream_rows(streamed),
        left=1,
    )
    print(f"machine: {machine_line(info)}; total {elapsed:.0f} s")
    out = args.json or RESULTS_DIR / ("scale-quick.json" if args.quick else "scale.json")
    write_json(
        out,
        {
            "command": command_line(),
            "machine": info,
            "seconds": round(elapsed, 1),
            "settings": {
                "repeat": args.repeat,
                "features": args.features,
                "rows_per_city": args.rows,
                "holdout_fraction": args.holdout,
            },
            "rows": rows,
            "markdown": markdown_table(COLUMNS, table_rows(rows), left=1),
            "coordinator_alone": streamed,
            "coordinator_alone_markdown": markdown_table(
                STREAM_COLUMNS, stream_rows(streamed), left=1
            ),
        },
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
