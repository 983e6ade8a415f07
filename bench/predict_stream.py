"""PredictStream throughput against ``load_model(...).predict`` on the same rows.

A real gRPC server (mutual TLS, certificates minted here, on 127.0.0.1) serves a
published ridge model; the client streams ``--rows`` rows through
``cityfed.Client.predict`` (PredictStream, ``--chunk-rows`` rows per chunk, the
columns packed as little-endian doubles). The baseline is the published
estimator predicting the same DataFrame in this process: one matrix product,
memory-bound. Prints both throughputs and their ratio (service / in-process).

A second baseline shows what the transport alone costs: a bare gRPC
bidirectional stream over the same mutual TLS on the same loopback that moves
the same bytes (the packed columns in, one double per row back) and does
nothing else. ``ratio to the transport`` is what CityFed's own code (validation,
unpacking, prediction, packing) leaves of that ceiling.
Run from the repository root:
``python bench/predict_stream.py [--rows N] [--repeat K] [--chunk-rows C]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
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
_OPTIONS = [
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 16 << 20),
]


def _echo_server(certs: Path, columns: int) -> tuple[grpc.Server, int]:
    """A stream that answers each chunk of ``columns`` packed columns with one column."""

    def echo(chunks: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for chunk in chunks:
            yield chunk[: len(chunk) // columns]

    def same(data: bytes) -> bytes:
        return data

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(echo, same, same)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [((certs / "coordinator.key").read_bytes(), (certs / "coordinator.pem").read_bytes())],
        (certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    return server, server.add_secure_port("127.0.0.1:0", credentials)


def _transport_seconds(
    certs: Path, person: dict[str, Path], frame: pd.DataFrame, chunk_rows: int, repeat: int
) -> float:
    """Median seconds of the bare stream moving ``frame``'s bytes and one column back."""
    server, port = _echo_server(certs, frame.shape[1])
    server.start()
    credentials = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        person["client_key"].read_bytes(),
        person["client_cert"].read_bytes(),
    )
    options = [*_OPTIONS, ("grpc.ssl_target_name_override", "localhost")]
    times = []
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
            stream = channel.stream_stream("/bench.Echo/Stream", lambda b: b, lambda b: b)

            def chunks() -> Iterator[bytes]:
                for start in range(0, len(frame), chunk_rows):
                    part = frame.iloc[start : start + chunk_rows]
                    yield b"".join(part[c].to_numpy("<f8").tobytes() for c in part.columns)

            sum(len(b) for b in stream(chunks()))  # the handshake, outside the timing
            for _ in range(repeat):
                started = time.perf_counter()
                sum(len(b) for b in stream(chunks()))
                times.append(time.perf_counter() - started)
    finally:
        server.stop(grace=None)
    return sorted(times)[len(times) // 2]


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
    c = _transport_seconds(certs, person, frame, args.chunk_rows, args.repeat)
    print(
        f"{args.rows:,} rows, median of {args.repeat}: load_model(...).predict "
        f"{args.rows / a:,.0f} rows/s ({a:.3f} s); PredictStream over mutual TLS "
        f"{args.rows / b:,.0f} rows/s ({b:.3f} s); ratio {a / b:.3f}\n"
        f"the bare transport (same bytes, same mutual TLS, no work) "
        f"{args.rows / c:,.0f} rows/s ({c:.3f} s): ratio to load_model {a / c:.3f}; "
        f"PredictStream's ratio to the transport {c / b:.3f}"
    )


if __name__ == "__main__":
    main()
