"""PredictStream throughput against ``load_model(...).predict`` on the same rows.

A real gRPC server (mutual TLS, certificates minted here, on 127.0.0.1) serves a
published ridge model; the client streams ``--rows`` rows through
``cityfed.Client.predict`` (PredictStream, ``--chunk-rows`` rows per chunk, the
columns packed as little-endian doubles). The baseline is the published
estimator predicting the same DataFrame in this process: one matrix product,
memory-bound. Prints both throughputs and their ratio (service / in-process).
Run from the repository root:
``python bench/predict_stream.py [--rows N] [--repeat K] [--chunk-rows C]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.synthetic: the same synthetic cities as the tests

from cityfed_server.layout import CoordinatorLayout  # noqa: E402
from cityfed_server.publish import publish  # noqa: E402
from cityfed_server.service.server import build_server  # noqa: E402
from cityfed_server.training import train  # noqa: E402

from cityfed import Client, load_model  # noqa: E402
from cityfed.config.spec import load_federation  # noqa: E402
from cityfed.ops.certs import issue_person, write_coordinator  # noqa: E402
from tests.synthetic import FEATURES, local_exchange, write_federation  # noqa: E402

RUN = "20261201T000000Z-bbbbbb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way (median)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cityfed-bench-service-"))
    certs = work / "certs"
    write_coordinator(certs, ["localhost"], name="bench")
    person = issue_person("bench", "analyst", certs, work / "people")
    layout = CoordinatorLayout(work / "state")
    files = write_federation(work / "fed")
    fed = load_federation(files.federation)
    out = layout.models / RUN
    out.mkdir(parents=True)
    publish(fed, train(fed, local_exchange(files.cities), run_id=RUN), out)
    (out / "run.json").write_text(json.dumps({"run": RUN, "federation": fed.name}))
    rng = np.random.default_rng(1)
    pooled = files.X_pooled
    frame = pd.DataFrame(
        pooled[rng.integers(0, len(pooled), args.rows)], columns=[n for n, _ in FEATURES]
    )
    estimator = load_model(out / "model.pb")
    server, port = build_server(layout, "127.0.0.1:0", certs)
    server.start()
    local, remote = [], []
    try:
        with Client(
            f"127.0.0.1:{port}", ca=certs / "ca.pem", cert=person["client_cert"],
            key=person["client_key"], server_name="localhost",
        ) as client:  # fmt: skip
            client.list_models()  # the TLS handshake, outside the timing
            for _ in range(args.repeat):
                started = time.perf_counter()
                expected = estimator.predict(frame)
                local.append(time.perf_counter() - started)
                started = time.perf_counter()
                got = client.predict(frame, RUN, chunk_rows=args.chunk_rows)
                remote.append(time.perf_counter() - started)
                np.testing.assert_allclose(got.values, expected, rtol=1e-12)
    finally:
        server.stop(grace=None)
    a, b = sorted(local)[len(local) // 2], sorted(remote)[len(remote) // 2]
    print(
        f"{args.rows:,} rows, median of {args.repeat}: load_model(...).predict "
        f"{args.rows / a:,.0f} rows/s ({a:.3f} s); PredictStream over mutual TLS "
        f"{args.rows / b:,.0f} rows/s ({b:.3f} s); ratio {a / b:.3f}"
    )


if __name__ == "__main__":
    main()
