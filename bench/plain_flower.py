"""The reference point of the scale benchmark: a plain Flower app, one FedAvg round.

What a Flower user would write first for the same job: a Message-API ServerApp
running Flower's built-in ``FedAvg`` strategy for one round (no client-side
evaluation), and a ClientApp that reads its city's CSV with pandas, fits
scikit-learn ``Ridge`` on it and returns the weights and its row count. Same
simulation engine and backend settings as ``cityfed simulate``.

    python bench/plain_flower.py CITIES.txt OUT.json [--alpha 1.0]

``CITIES.txt`` lists one CSV per line (features, then the target as last column).
``OUT.json`` receives the server's timings and the averaged weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from common import backend_config
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from sklearn.linear_model import Ridge


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, timing its aggregation of the training replies."""

    def __init__(self, nodes: int) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=nodes,
            min_evaluate_nodes=0,
            min_available_nodes=nodes,
        )
        self.aggregation_seconds = 0.0
        self.replies = 0

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the replies (timed)."""
        replies = list(replies)
        self.replies += len(replies)
        started = time.perf_counter()
        result = super().aggregate_train(server_round, replies)
        self.aggregation_seconds += time.perf_counter() - started
        return result


def make_client_app(csv_paths: Sequence[str], alpha: float) -> ClientApp:
    """One node per CSV: fit Ridge on the whole file, return weights and row count."""
    paths = tuple(csv_paths)
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        frame = pd.read_csv(paths[int(context.node_config["partition-id"])])
        table = frame.to_numpy(dtype=np.float64)
        X, y = table[:, :-1], table[:, -1]
        model = Ridge(alpha=alpha).fit(X, y)
        w = np.concatenate([[model.intercept_], model.coef_])
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(w)}),
                "metrics": MetricRecord({"num-examples": int(y.size)}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def make_server_app(nodes: int, dim: int, out_json: Path) -> ServerApp:
    """One round of Flower's FedAvg from zero weights; timings to ``out_json``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = TimedFedAvg(nodes)
        started = time.perf_counter()
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord({"w": Array(np.zeros(dim))}),
            num_rounds=1,
        )
        seconds = time.perf_counter() - started
        weights = result.arrays["w"].numpy().tolist() if result.arrays is not None else None
        out_json.write_text(
            json.dumps(
                {
                    "server_seconds": seconds,
                    "aggregation_seconds": strategy.aggregation_seconds,
                    "replies": strategy.replies,
                    "weights": weights,
                }
            )
        )

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plain app in Flower's simulation engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cities", type=Path, help="file with one CSV path per line")
    parser.add_argument("out", type=Path, help="where to write the timings (JSON)")
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    paths = [line.strip() for line in args.cities.read_text().splitlines() if line.strip()]
    with open(paths[0], encoding="utf-8") as handle:
        dim = len(handle.readline().split(","))  # d features + target = d + 1 weights
    run_simulation(
        server_app=make_server_app(len(paths), dim, args.out),
        client_app=make_client_app(paths, args.alpha),
        num_supernodes=len(paths),
        backend_config=backend_config(),
    )
    return 0 if args.out.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
