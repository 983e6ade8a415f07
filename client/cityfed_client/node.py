"""A city node: ``flower-supernode`` with TLS and node authentication.

The city's ``city.toml`` path goes to the SuperNode's node config, on the city
host; the ClientApp reads it there. Nothing about the CSV leaves the host.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from cityfed.config.spec import load_city
from cityfed.data.sources import require_data
from cityfed.errors import CityFedError
from cityfed.files import write_atomic
from cityfed.ops.processes import Daemon, executable, flower_env
from cityfed.ops.tls import parse_address, probe_coordinator
from cityfed_client.node_config import CUT_OFF, default_state, node_config_argument

__all__ = [
    "NodeConfig",
    "NodeLayout",
    "check_node_key",
    "default_state",
    "ensure_secret",
    "gatekeeper_argv",
    "node_status",
    "start_node",
    "stop_node",
    "supernode_argv",
]

#: What the SuperNode prints once the SuperLink accepted it.
_CONNECTED = "SuperNode ID:"
#: Flower's code for "the SuperLink refused to activate this node".
_REFUSED = "code: 2004"
#: How long the SuperLink keeps counting a node that vanished without signing off
#: (a crash, ``kill -9``) as online, refusing to activate it again: Flower's
#: heartbeat patience (2) times its interval (30 s), plus a margin.
ONLINE_PATIENCE = 75.0


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

    @property
    def gatekeeper(self) -> Daemon:
        """The process that answers the SuperNode with the installed ClientApp only."""
        return Daemon("gatekeeper", self.state / "gatekeeper.pid", self.state / "gatekeeper.log")

    @property
    def secret(self) -> Path:
        """The secret the SuperNode and the gatekeeper share (0600)."""
        return self.state / "superexec.secret"


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


def _state(config: NodeConfig) -> Path:
    return Path(config.state) if config.state else default_state(Path(config.config))


def supernode_argv(config: NodeConfig) -> list[str]:
    """The SuperNode's command line: TLS to the front, node key, city config.

    ``--isolation process``: the SuperNode runs no ClientApp itself; only the
    gatekeeper, which holds the shared secret, takes its tasks.
    """
    state = _state(config)
    return [
        executable("cityfed-supernode"),  # flower-supernode, saying why it was cut off
        "--superlink", config.coordinator,
        "--root-certificates", config.ca,
        "--auth-supernode-private-key", config.key,
        "--node-config",
        node_config_argument(Path(config.config), state),
        "--port", str(config.runtime_port),
        "--isolation", "process",
        "--superexec-auth-secret-file", str(state / "superexec.secret"),
    ]  # fmt: skip


def gatekeeper_argv(config: NodeConfig) -> list[str]:
    """The gatekeeper's command line (:mod:`cityfed_client.gatekeeper`)."""
    state = _state(config)
    return [
        sys.executable, "-m", "cityfed_client.gatekeeper",
        "--runtime-api", f"127.0.0.1:{config.runtime_port}",
        "--secret-file", str(state / "superexec.secret"),
        "--config", config.config,
        "--state", str(state),
    ]  # fmt: skip


def ensure_secret(path: Path) -> None:
    """Create the SuperNode/gatekeeper secret (32 random bytes, 0600) if missing."""
    if path.is_file() and path.stat().st_size > 0:
        os.chmod(path, 0o600)
        return
    write_atomic(path, secrets.token_bytes(32), mode=0o600)


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
    require_data(city)  # a CSV or Parquet file, or a folder of Parquet files
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
    layout.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(layout.state, 0o700)
    write_atomic(layout.config_file, (json.dumps(asdict(config), indent=2) + "\n").encode())
    ensure_secret(layout.secret)
    # An earlier session that was admitted and not cut off may still count as
    # online at the coordinator if it ended without signing off: then Flower
    # refuses the new one (2004) until that session expires, and we try again.
    earlier = layout.supernode.log_since_start(400)
    lingering = _CONNECTED in earlier and CUT_OFF not in earlier
    stop_node(layout)
    layout.gatekeeper.start(gatekeeper_argv(config), flower_env(), cwd=layout.state)
    daemon = layout.supernode
    daemon.start(supernode_argv(config), flower_env(), cwd=layout.state)
    started = time.monotonic()
    patience_until = started + (ONLINE_PATIENCE if lingering else 0.0)
    deadline = max(started + timeout, patience_until + 15.0)
    while time.monotonic() < deadline:
        log = daemon.log_since_start(200)
        if _CONNECTED in log:
            return node_status(layout)
        if not daemon.running() and _REFUSED in log and time.monotonic() < patience_until:
            time.sleep(3.0)
            daemon.start(supernode_argv(config), flower_env(), cwd=layout.state)
            continue
        if not daemon.running():
            stop_node(layout)
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
    stop_node(layout)
    raise CityFedError(
        f"city node {city.name!r}: not admitted within {timeout:g} s (log: {daemon.log_file})"
    )


def stop_node(layout: NodeLayout) -> bool:
    """Stop the city's gatekeeper, then its SuperNode; True if the SuperNode was running."""
    layout.gatekeeper.stop()
    return layout.supernode.stop()


def node_status(layout: NodeLayout) -> dict[str, Any]:
    """Whether the node runs, and its settings."""
    try:
        config = json.loads(layout.config_file.read_text())
    except FileNotFoundError:
        raise CityFedError(
            f"{layout.state}: no city node here (run `cityfed city start` first)"
        ) from None
    log = layout.supernode.log_since_start(400)
    cut_off = [line for line in log.splitlines() if CUT_OFF in line]
    return {
        **config,
        "running": layout.supernode.running() and layout.gatekeeper.running(),
        "pid": layout.supernode.pid(),
        "gatekeeper_pid": layout.gatekeeper.pid(),
        "admitted": _CONNECTED in log,
        "cut_off": cut_off[-1][cut_off[-1].index(CUT_OFF) :] if cut_off else None,
        "state": str(layout.state),
    }
