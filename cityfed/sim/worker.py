"""The process that hosts Flower's simulation engine for ``cityfed simulate``.

It is started by :mod:`cityfed.sim.simulate` in a session of its own, so that the
engine and every Ray process it spawns can be stopped together.

    python -m cityfed.sim.worker FEDERATION OUT_DIR RUN_ID CITY [CITY ...]
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run the simulation; the ServerApp reports through its progress file."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Each ClientApp has one CPU: one BLAS thread, else every Ray worker's BLAS
    # threads spin beside the others' (a city's moments took 13 ms instead of 0.3).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    federation, out_dir, run_id, *cities = argv
    from cityfed_client.app import make_client_app
    from cityfed_server.app import ServerSettings, make_server_app
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    settings = ServerSettings(
        federation=Path(federation),
        out_dir=Path(out_dir),
        run_id=run_id,
        expected_cities=len(cities),
        wait_seconds=120.0,
    )
    cpus = max(1, os.cpu_count() or 1)
    run_simulation(
        server_app=make_server_app(settings),
        client_app=make_client_app(cities),
        num_supernodes=len(cities),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": cpus,
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": "error",
                # Ray's sessions live in the run's staging folder: removed with it,
                # and every Ray process of this run can be told apart from others.
                "_temp_dir": str(Path(out_dir) / "ray"),
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
