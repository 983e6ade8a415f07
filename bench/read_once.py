"""A city reads its data once per run: city-side data time of a logistic run, both ways.

The demo's rain federation (federated logistic regression) needs 9 training
rounds plus the evaluation on the bundled NYC airports. Before the per-run cache,
every message made the city parse and harmonise its CSV again; now the first
message does and the rest load the harmonised arrays from the node's cache.
This script times exactly that city-side work for all three cities, both ways,
in the same process (the baseline first, then CityFed's cache), and prints the
ratio. Run from the repository root: ``python bench/read_once.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cityfed.config.spec import load_city, load_federation
from cityfed.data.cache import DataCache
from cityfed.data.city_data import load_city_data

DEMO = Path(__file__).resolve().parent.parent / "cityfed" / "demo_data"
MESSAGES = 10  # 9 training rounds + the evaluation of the rain demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each way (median)")
    args = parser.parse_args()
    fed = load_federation(DEMO / "rain.toml")
    cities = [load_city(DEMO / name) for name in ("ewr.toml", "jfk.toml", "lga.toml")]
    before, after = [], []
    for k in range(args.repeat):
        started = time.perf_counter()
        for _ in range(MESSAGES):
            for city in cities:
                load_city_data(city, fed)
        before.append(time.perf_counter() - started)
        folder = Path(tempfile.mkdtemp(prefix="cityfed-bench-cache-"))
        try:
            cache = DataCache(folder, f"run-{k}")
            started = time.perf_counter()
            for _ in range(MESSAGES):
                for city in cities:
                    cache.load(city, fed)
            after.append(time.perf_counter() - started)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    b, a = sorted(before)[len(before) // 2], sorted(after)[len(after) // 2]
    print(
        f"city-side data time of a {MESSAGES}-message logistic run, 3 cities, median of "
        f"{args.repeat}: parse per message {b:.3f} s, read once + cache {a:.3f} s, "
        f"ratio {a / b:.2f}"
    )


if __name__ == "__main__":
    main()
