"""The CityFed ServerApp: a thin Flower shell over :mod:`cityfed_server.training`.

Settings come from the run config (deployment) or are bound when the app is
built (simulation). Outcome and progress go to ``progress.jsonl`` in the output
folder, which is where the artifacts land too: the ServerApp runs in a process
of its own, so files at absolute paths are how it reports back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cityfed.config.spec import load_federation
from cityfed.errors import CityFedError
from cityfed.federation.exchange import Exchange
from cityfed.federation.identity import EnrolledExchange
from cityfed.flower.exchange import GridExchange
from cityfed.ops.progress import PROGRESS_FILE, ProgressLog
from cityfed_server.publish import publish
from cityfed_server.registry import load_registry
from cityfed_server.training import train

__all__ = ["ServerSettings", "app", "make_server_app", "run_server"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """Where the federation spec is and where the run's artifacts go."""

    federation: Path
    out_dir: Path
    run_id: str
    expected_cities: int = 0
    wait_seconds: float = 120.0
    #: The registry of enrolled cities; replies are bound to it (deployment only).
    enrolment: Path | None = None

    @classmethod
    def from_run_config(cls, config: dict[str, object], run_id: str) -> ServerSettings:
        """Read the settings from a Flower run config (``flwr run --run-config``)."""
        try:
            federation = Path(str(config["federation"]))
            out_dir = Path(str(config["out-dir"]))
        except KeyError as exc:
            raise CityFedError(f"run config: missing key {exc.args[0]!r}") from None
        return cls(
            federation=federation,
            out_dir=out_dir,
            run_id=str(config.get("run-id", run_id)),
            expected_cities=int(str(config.get("expected-cities", 0))),
            wait_seconds=float(str(config.get("wait-seconds", 120.0))),
            enrolment=Path(str(config["enrolment"])) if config.get("enrolment") else None,
        )


def _enrolled(registry: Path) -> dict[int, str]:
    """Enrolled, not revoked, node ids and their city names."""
    if not registry.is_file():
        raise CityFedError(f"{registry}: enrolment registry not found; no city can be trusted")
    return {
        int(entry["node_id"]): name
        for name, entry in load_registry(registry).items()
        if not entry.get("revoked_at")
    }


def run_server(grid: Grid, settings: ServerSettings) -> None:
    """Run one federation and publish its artifacts; never raises for user errors."""
    if not settings.out_dir.is_dir():
        # `cityfed run` gave up on this run (the SuperLink died) and removed its folder.
        logger.warning("run folder %s is gone; the run was abandoned", settings.out_dir)
        return
    log = ProgressLog(settings.out_dir / PROGRESS_FILE)
    try:
        fed = load_federation(settings.federation)
        grid_exchange = GridExchange(
            grid, reply_timeout=fed.reply_timeout, resend_after=fed.resend_after
        )
        wanted = settings.expected_cities or fed.min_cities
        log.emit("info", f"waiting for {wanted} cities to connect")
        nodes = grid_exchange.wait_for_nodes(wanted, settings.wait_seconds)
        exchange: Exchange = grid_exchange
        if settings.enrolment is not None:
            exchange = EnrolledExchange(grid_exchange, _enrolled(settings.enrolment))
        result = train(fed, exchange, run_id=settings.run_id, nodes=nodes, progress=log.emit)
        publish(fed, result, settings.out_dir)
        log.emit(
            "done",
            f"model published ({result.model.rounds} training round(s))",
            rounds=result.model.rounds,
            out_dir=str(settings.out_dir),
        )
    except CityFedError as exc:
        log.emit("error", str(exc))
    except Exception as exc:
        log.emit("error", f"internal error in the ServerApp: {exc!r}")
        raise


def make_server_app(settings: ServerSettings | None = None) -> ServerApp:
    """Build the ServerApp; without ``settings`` they come from the run config."""
    server_app = ServerApp()

    def main(grid: Grid, context: Context) -> None:
        chosen = settings or ServerSettings.from_run_config(
            dict(context.run_config), str(context.run_id)
        )
        run_server(grid, chosen)

    server_app.main()(main)
    return server_app


#: The ServerApp the SuperLink runs (``cityfed_server.app:app``).
app = make_server_app()
