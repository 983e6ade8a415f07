"""Where a coordinator keeps everything, and the settings it was started with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cityfed.errors import CityFedError
from cityfed.ops.certs import CA_CERT
from cityfed.ops.netns import join_argv
from cityfed.ops.processes import Daemon
from cityfed.ops.tls import Address, parse_address

__all__ = [
    "DEFAULT_SUPERLINK_PORT",
    "CoordinatorConfig",
    "CoordinatorLayout",
    "control_prefix",
    "load_config",
]


#: The SuperLink's loopback port unless told otherwise.
DEFAULT_SUPERLINK_PORT = 9092


@dataclass(frozen=True)
class CoordinatorLayout:
    """Where everything of a coordinator lives under its ``--state`` folder."""

    state: Path

    @property
    def config_file(self) -> Path:
        """Settings of ``coordinator start``."""
        return self.state / "coordinator.json"

    @property
    def database(self) -> Path:
        """The SuperLink's database (registered nodes, runs)."""
        return self.state / "superlink.db"

    @property
    def flwr_home(self) -> Path:
        """``FLWR_HOME`` of the flwr CLI on this host."""
        return self.state / "flwr"

    @property
    def app_dir(self) -> Path:
        """The Flower App that runs are submitted as."""
        return self.state / "app"

    @property
    def models(self) -> Path:
        """The model store: one folder per run."""
        return self.state / "models"

    @property
    def enrolment(self) -> Path:
        """The registry of enrolled cities."""
        return self.state / "enrolment.json"

    @property
    def superlink_socket(self) -> Path:
        """Where the front reaches a SuperLink kept in its own network namespace."""
        return self.state / "run" / "superlink.sock"

    @property
    def nginx_conf(self) -> Path:
        """The generated nginx config."""
        return self.state / "nginx" / "nginx.conf"

    @property
    def superlink(self) -> Daemon:
        """The ``flower-superlink`` process."""
        return Daemon(
            "superlink", self.state / "run" / "superlink.pid", self.state / "logs" / "superlink.log"
        )

    @property
    def service(self) -> Daemon:
        """The gRPC service (mutual TLS) on its own public port."""
        return Daemon(
            "service", self.state / "run" / "service.pid", self.state / "logs" / "service.log"
        )

    @property
    def nginx(self) -> Daemon:
        """The nginx front."""
        return Daemon(
            "nginx", self.state / "run" / "nginx-master.pid", self.state / "logs" / "nginx.log"
        )


@dataclass(frozen=True)
class CoordinatorConfig:
    """Settings of a coordinator, kept in ``coordinator.json``."""

    federation: str
    certs: str
    public: str
    superlink_port: int = DEFAULT_SUPERLINK_PORT
    #: The SuperLink in a network namespace of its own (no other local user reaches
    #: its Control API); False where the network is private already (a container).
    private_network: bool = True
    #: HOST:PORT of the gRPC service (mutual TLS); "" for none.
    service: str = ""

    @property
    def ca(self) -> Path:
        """The federation CA certificate."""
        return Path(self.certs) / CA_CERT

    @property
    def public_address(self) -> Address:
        """Where cities connect."""
        return parse_address(self.public, what="--public")

    @property
    def local_address(self) -> Address:
        """Where this host reaches the front (``localhost`` for a wildcard bind)."""
        public = self.public_address
        if public.host in ("0.0.0.0", "::"):
            return Address("localhost", public.port)
        return public

    @property
    def internal_address(self) -> Address:
        """The SuperLink on loopback."""
        return Address("127.0.0.1", self.superlink_port)


def load_config(layout: CoordinatorLayout) -> CoordinatorConfig:
    """Settings of an earlier ``coordinator start`` under this state folder."""
    try:
        data = json.loads(layout.config_file.read_text())
    except FileNotFoundError:
        raise CityFedError(
            f"{layout.state}: no coordinator here (run `cityfed coordinator start` first)"
        ) from None
    return CoordinatorConfig(**data)


def control_prefix(layout: CoordinatorLayout) -> list[str]:
    """What to put before a ``flwr`` command so that it reaches the Control API.

    Nothing when the SuperLink shares this process's network (a container, or a
    coordinator started with ``--no-private-network``); otherwise ``nsenter``
    into the SuperLink's namespace, which only its operator (and root) may enter.

    Raises
    ------
    CityFedError
        If the SuperLink is not running.
    """
    pid = layout.superlink.pid()
    if pid is None or not layout.superlink.running():
        raise CityFedError(
            f"{layout.state}: the SuperLink is not running (start it with "
            "`cityfed coordinator start`)"
        )
    return join_argv(pid, [])
