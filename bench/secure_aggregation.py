"""What secure aggregation costs: a secure run against a plain run of the same federation.

For 3, 10 and 100 cities (synthetic non-IID cities, d = 8 features, 500 rows each,
written as CSV + ``city.toml``), in this process, one after the other and
alternating: the same federation trained by ``cityfed_server.training.train``
over the cities' own handlers (``LocalExchange``: every instruction and reply
goes through its Flower ``RecordDict`` wire form), once plain and once with
``[privacy] secure_aggregation = true``. Ridge (one secure sum) and logistic
(one per Newton round).

Measured for each: wall time of the whole run (all cities answer in this one
process, one after the other, as on a single core: the cities' key agreements,
Shamir splits and masks are all counted) and bytes on the wire, the serialised
size of every instruction and reply (``flwr.common.serde``'s protobuf of each
``RecordDict``). Printed: the ratios secure / plain, the baseline run in the same
script.

    python bench/secure_aggregation.py --quick   # 3 and 10 cities, 2 runs each
    python bench/secure_aggregation.py           # 3, 10 and 100 cities, 3 runs each
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS_DIR, command_line, machine, machine_line, markdown_table, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cityfed_client.handlers import responder
from cityfed_server.training import train
from flwr.common.serde import recorddict_to_proto

from cityfed.config.spec import load_federation
from cityfed.federation.protocol import CityReply, Instruction
from cityfed.flower.exchange import LocalExchange
from cityfed.flower.records import encode_instruction, encode_reply

D = 8
ROWS = 500


class CountingExchange:
    """A :class:`LocalExchange` that adds up the serialised bytes of everything sent."""

    def __init__(self, inner: LocalExchange) -> None:
        self.inner = inner
        self.bytes = 0

    def nodes(self) -> list[int]:
        return self.inner.nodes()

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        own = personal or {}
        common = recorddict_to_proto(encode_instruction(instruction)).ByteSize()
        for node in nodes:
            sent = own.get(node)
            self.bytes += (
                common if sent is None else recorddict_to_proto(encode_instruction(sent)).ByteSize()
            )
        for node, reply in self.inner.exchange(instruction, nodes, personal):
            self.bytes += recorddict_to_proto(encode_reply(reply)).ByteSize()
            yield node, reply


def write_cities(
    root: Path, count: int, model: str, secure: bool, seed: int = 0
) -> tuple[Path, list[Path]]:
    """A federation of ``count`` cities (the same rows whether secure or not)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    task = "classification" if model == "logistic" else "regression"
    features = "".join(f'[[features]]\nname = "x{j}"\n\n' for j in range(D))
    privacy = "[privacy]\nsecure_aggregation = true\n\n" if secure else ""
    fed = root / "federation.toml"
    fed.write_text(
        f'[federation]\nname = "bench"\ntask = "{task}"\nmodel = "{model}"\n'
        f"holdout_fraction = 0.0\nmin_cities = 2\nmin_rows_per_city = 50\n\n{privacy}"
        f'[target]\nname = "y"\n\n{features}',
        encoding="utf-8",
    )
    beta = rng.normal(size=D)
    cities = []
    for k in range(count):
        X = rng.normal(rng.normal(0, 2, D), rng.uniform(0.5, 3, D), (ROWS, D))
        signal = X @ beta / 4 + rng.normal()
        y = (
            (signal + rng.normal(size=ROWS) > 0).astype(float)
            if task == "classification"
            else (signal + rng.normal(size=ROWS))
        )
        csv = root / f"c{k}.csv"
        header = ",".join([*(f"x{j}" for j in range(D)), "y"])
        body = "\n".join(",".join(f"{v:.6f}" for v in row) for row in np.column_stack([X, y]))
        csv.write_text(header + "\n" + body + "\n", encoding="utf-8")
        columns = "".join(f'x{j} = "x{j}"\n' for j in range(D)) + 'y = "y"\n'
        toml = root / f"c{k}.toml"
        toml.write_text(
            f'[city]\nname = "c{k}"\ndata = "{csv.name}"\n\n[columns]\n{columns}\n'
            '[policy]\nagreed = ["federation.toml"]\nmax_runs_per_day = 1000\n',
            encoding="utf-8",
        )
        cities.append(toml)
    return fed, cities


def one_run(fed: Path, cities: list[Path]) -> tuple[float, int, int]:
    """Wall seconds, bytes on the wire and training rounds of one run."""
    spec = load_federation(fed)
    exchange = CountingExchange(LocalExchange([responder(c) for c in cities]))
    started = time.perf_counter()
    result = train(spec, exchange, run_id="bench")
    return time.perf_counter() - started, exchange.bytes, result.model.rounds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 and 10 cities, 2 runs each")
    args = parser.parse_args(argv)
    counts = (3, 10) if args.quick else (3, 10, 100)
    repeats = 2 if args.quick else 3
    info = machine()
    print(machine_line(info))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cityfed-bench-secagg-") as tmp:
        for model in ("ridge", "logistic"):
            for count in counts:
                plain = write_cities(Path(tmp) / f"{model}-{count}-plain", count, model, False)
                secure = write_cities(Path(tmp) / f"{model}-{count}-secure", count, model, True)
                times: dict[str, list[float]] = {"plain": [], "secure": []}
                sizes: dict[str, int] = {}
                rounds: dict[str, int] = {}
                for _ in range(repeats):  # alternating, pair by pair
                    for name, (fed, cities) in (("plain", plain), ("secure", secure)):
                        seconds, size, r = one_run(fed, cities)
                        times[name].append(seconds)
                        sizes[name], rounds[name] = size, r
                row = {
                    "model": model,
                    "cities": count,
                    "rounds": rounds["secure"],
                    "plain_s": statistics.median(times["plain"]),
                    "secure_s": statistics.median(times["secure"]),
                    "plain_bytes": sizes["plain"],
                    "secure_bytes": sizes["secure"],
                }
                row["time_ratio"] = row["secure_s"] / row["plain_s"]
                row["bytes_ratio"] = row["secure_bytes"] / row["plain_bytes"]
                rows.append(row)
                print(
                    f"{model:8s} {count:4d} cities: plain {row['plain_s']:.2f} s, "
                    f"secure {row['secure_s']:.2f} s (x{row['time_ratio']:.2f}); bytes "
                    f"{row['plain_bytes']:,} -> {row['secure_bytes']:,} "
                    f"(x{row['bytes_ratio']:.2f})",
                    flush=True,
                )
    table = markdown_table(
        ["model", "cities", "rounds", "plain s", "secure s", "time ratio", "plain bytes",
         "secure bytes", "bytes ratio"],
        [
            [r["model"], str(r["cities"]), str(r["rounds"]), f"{r['plain_s']:.2f}",
             f"{r['secure_s']:.2f}", f"{r['time_ratio']:.2f}", f"{r['plain_bytes']:,}",
             f"{r['secure_bytes']:,}", f"{r['bytes_ratio']:.2f}"]
            for r in rows
        ],
    )  # fmt: skip
    print(table)
    write_json(
        RESULTS_DIR / "secure_aggregation.json",
        {"machine": info, "command": command_line(), "rows": rows},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
