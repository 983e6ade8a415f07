"""A city node: ``flower-supernode`` with TLS and node authentication.

The city's ``city.toml`` path goes to the SuperNode's node config, on the city
host; the ClientApp reads it there. Nothing about the CSV leaves the host.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from cityfed.config.spec import load_city
from cityfed.errors import CityFedError
from cityfed.files import write_atomic
from cityfed.ops.processes import Daemon, executable, flower_env
from cityfed.ops.tls import parse_address, probe_coordinator
from cityfed_client.node_config import default_state, node_config_argument

__all__ = [
    "NodeConfig",
    "NodeLayout",
    "check_node_key",
    "default_state",
    "node_status",
    "start_node",
    "stop_node",
    "supernode_argv",
]

#: What the SuperNode prints once the SuperLink accepted it.
_CONNECTED = "SuperNode ID:"
#: Flower's code for "the SuperLink refused to activate this node".
_REFUSED = "code: 2004"


@dataclass(frozen=True)
class NodeLayout:
    """Where a city node keeps its pid, log and settings."""

    state: Path

    @property
    def config_file(self) -> Path:
        """Settings of ``city start``."""
        return self.state / "node.json"

    @property
    def supernode(self) -> Daemon:
        """The ``flower-supernode`` process."""
        return Daemon("supernode", self.state / "supernode.pid", self.state / "supernode.log")


@dataclass(frozen=True)
class NodeConfig:
    """Settings of a city node."""

    city: str
    config: str
    coordinator: str
    ca: str
    key: str
    runtime_port: int
    state: str = ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_node_key(key: Path) -> None:
    """Fail unless ``key`` is an OpenSSH elliptic-curve private key (a node key)."""
    try:
        private = load_ssh_private_key(key.read_bytes(), None)
    except FileNotFoundError:
        raise CityFedError(f"{key}: node key not found") from None
    except (ValueError, TypeError):
        private = None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise CityFedError(
            f"{key.name}: not an OpenSSH elliptic-curve private key "
            "(use the NAME.node.key written by `cityfed certs city`)"
        )


def supernode_argv(config: NodeConfig) -> list[str]:
    """The SuperNode's command line: TLS to the front, node key, city config."""
    config_path = Path(config.config)
    state = Path(config.state) if config.state else default_state(config_path)
    return [
        executable("flower-supernode"),
        "--superlink", config.coordinator,
        "--root-certificates", config.ca,
        "--auth-supernode-private-key", config.key,
        "--node-config",
        node_config_argument(config_path, state),
        "--port", str(config.runtime_port),
    ]  # fmt: skip


def start_node(
    layout: NodeLayout,
    *,
    city_config: Path,
    coordinator: str,
    ca: Path,
    key: Path,
    runtime_port: int | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Start the city's SuperNode and wait until the coordinator admitted it.

    Raises
    ------
    CityFedError
        A bad config or key, a coordinator that cannot be reached or whose
        certificate is not from ``ca``, or a node key the coordinator refuses.
    """
    city = load_city(city_config)
    if not city.data.is_file():
        raise CityFedError(f"{city.source}: data file {city.data.name} not found next to it")
    check_node_key(key)
    address = parse_address(coordinator, what="--coordinator")
    probe_coordinator(address, ca)
    config = NodeConfig(
        city=city.name,
        config=str(city_config.resolve()),
        coordinator=str(address),
        ca=str(ca.resolve()),
        key=str(key.resolve()),
        runtime_port=runtime_port or _free_port(),
        state=str(layout.state),
    )
    layout.state.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.config_file, (json.dumps(asdict(config), indent=2) + "\n").encode())
    daemon = layout.supernode
    if daemon.running():
        daemon.stop()
    daemon.log_file.unlink(missing_ok=True)
    daemon.start(supernode_argv(config), flower_env(), cwd=layout.state)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = daemon.log_tail(200)
        if _CONNECTED in log:
            return node_status(layout)
        if not daemon.running():
            daemon.stop()
            if _REFUSED in log:
                raise CityFedError(
                    f"coordinator {address} refused city {city.name!r}: its node key is not "
                    f"enrolled or was revoked (coordinator: `cityfed coordinator enrol "
                    f"{city.name} {key.with_suffix('.pub').name}`)"
                )
            lines = [line for line in log.splitlines() if line.strip()]
            raise CityFedError(
                f"city node {city.name!r} stopped: {lines[-1] if lines else 'no output'} "
                f"(log: {daemon.log_file})"
            )
        time.sleep(0.3)
    daemon.stop()
    raise CityFedError(
        f"city node {city.name!r}: not admitted within {timeout:g} s (log: {daemon.log_file})"
    )


def stop_node(layout: NodeLayout) -> bool:
    """Stop the city's SuperNode; True if it was running."""
    return layout.supernode.stop()


def node_status(layout: NodeLayout) -> dict[str, Any]:
    """Whether the node runs, and its settings."""
    try:
        config = json.loads(layout.config_file.read_text())
    except FileNotFoundError:
        raise CityFedError(
            f"{layout.state}: no city node here (run `cityfed city start` first)"
        ) from None
    log = layout.supernode.log_tail(400)
    return {
        **config,
        "running": layout.supernode.running(),
        "pid": layout.supernode.pid(),
        "admitted": _CONNECTED in log,
        "state": str(layout.state),
    }
