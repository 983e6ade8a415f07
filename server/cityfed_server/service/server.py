"""The gRPC server: mutual TLS against the federation CA, bounded, with health and reflection.

``python -m cityfed_server.service.server --state STATE --listen HOST:PORT`` is
what ``cityfed coordinator start`` runs beside the SuperLink and the front; it
serves until SIGTERM. Every call must present a client certificate issued by the
federation CA (``require_client_auth=True``); plaintext and other CAs fail the
handshake. Messages stop at 16 MiB each way.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cityfed.errors import CityFedError
from cityfed.ops.certs import CA_CERT, COORDINATOR_CERT, COORDINATOR_KEY
from cityfed.v1 import service_pb2, service_pb2_grpc
from cityfed_server.layout import CoordinatorLayout
from cityfed_server.service.handlers import CityFedService

__all__ = ["MAX_MESSAGE_BYTES", "SERVICE_NAME", "build_server", "main"]

#: Largest message in either direction.
MAX_MESSAGE_BYTES = 16 << 20
#: The full name of the service (health and reflection use it).
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["CityFed"].full_name


def build_server(
    layout: CoordinatorLayout, listen: str, certs: Path, *, workers: int = 16
) -> tuple[grpc.Server, int]:
    """The server of a coordinator state, bound to ``listen``; and its port.

    Raises
    ------
    CityFedError
        If the certificates are missing or the address cannot be bound.
    """
    try:
        key = (certs / COORDINATOR_KEY).read_bytes()
        cert = (certs / COORDINATOR_CERT).read_bytes()
        ca = (certs / CA_CERT).read_bytes()
    except FileNotFoundError as exc:
        raise CityFedError(
            f"{exc.filename}: not found (the folder of `cityfed certs init`)"
        ) from None
    credentials = grpc.ssl_server_credentials([(key, cert)], ca, require_client_auth=True)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cityfed-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_concurrent_streams", 64),
            ("grpc.keepalive_permit_without_calls", 0),
        ],
        maximum_concurrent_rpcs=64,
    )
    # Long-lived streams may hold at most half the workers.
    servicer = CityFedService(layout, max_streams=max(1, workers // 2))
    service_pb2_grpc.add_CityFedServicer_to_server(servicer, server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise CityFedError(f"gRPC service: cannot listen on {listen} ({exc})") from None
    if port == 0:
        raise CityFedError(f"gRPC service: cannot listen on {listen}")
    for name in ("", SERVICE_NAME):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m cityfed_server.service.server")
    parser.add_argument("--state", type=Path, required=True, help="the coordinator's state")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--certs", type=Path, required=True, help="the folder of certs init")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        server, port = build_server(CoordinatorLayout(args.state), args.listen, args.certs)
    except CityFedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    logging.info("CityFed gRPC service on %s (port %d), mutual TLS", args.listen, port)
    stop.wait()
    server.stop(grace=5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
