"""The coordinator host: SuperLink on loopback, the nginx TLS front, the model store.

``cityfed coordinator start`` is idempotent: it starts what is not running and
leaves the rest, so after a crash (even ``SIGKILL`` of the SuperLink) the same
command brings the coordinator back with its enrolled cities and past models,
which live in the SuperLink's database and the model store under ``--state``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from cityfed.certs import CA_CERT, COORDINATOR_CERT, COORDINATOR_KEY
from cityfed.daemon import Daemon, executable, flower_env
from cityfed.errors import CityFedError
from cityfed.model import write_atomic
from cityfed.server.flwr_cli import write_connection
from cityfed.server.nginx import FrontConfig, render_nginx_conf
from cityfed.spec import load_federation
from cityfed.tls import Address, https_request, parse_address

__all__ = [
    "CoordinatorConfig",
    "CoordinatorLayout",
    "app_pyproject",
    "check_certs",
    "coordinator_status",
    "load_config",
    "prepare_state",
    "start_coordinator",
    "stop_coordinator",
    "superlink_argv",
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


def check_certs(certs: Path) -> None:
    """Fail unless ``certs`` holds a CA and a coordinator certificate it issued."""
    for name in (CA_CERT, COORDINATOR_CERT, COORDINATOR_KEY):
        if not (certs / name).is_file():
            raise CityFedError(f"{certs / name}: not found; create it with `cityfed certs init`")
    ca = x509.load_pem_x509_certificate((certs / CA_CERT).read_bytes())
    leaf = x509.load_pem_x509_certificate((certs / COORDINATOR_CERT).read_bytes())
    if leaf.issuer != ca.subject:
        raise CityFedError(f"{certs / COORDINATOR_CERT}: not issued by {certs / CA_CERT}")


def app_pyproject() -> str:
    """The ``pyproject.toml`` of the Flower App that runs are submitted as."""
    return """# The Flower App that CityFed runs are submitted as (generated by cityfed).
# Its components are the installed cityfed.server and cityfed.client apps.
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "cityfed-federation"
version = "1.0.0"
description = "A CityFed federation run"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "cityfed"

[tool.flwr.app.components]
serverapp = "cityfed.server.app:app"
clientapp = "cityfed.client.app:app"

[tool.flwr.app.config]
federation = ""
out-dir = ""
run-id = ""
expected-cities = 0
wait-seconds = 120.0
reply-timeout = 600.0
"""


def _wait_healthy(address: Address, ca: Path, daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if https_request(address, "/health", ca, timeout=2.0) == 200:
                return
        except OSError:
            pass
        if not daemon.running():
            break
        time.sleep(0.3)
    raise CityFedError(
        f"{daemon.name} did not become healthy on {address}; last log lines:\n{daemon.log_tail()}"
    )


def prepare_state(layout: CoordinatorLayout, config: CoordinatorConfig) -> None:
    """Check the spec and certificates and write the state a coordinator runs from."""
    load_federation(config.federation)
    check_certs(Path(config.certs))
    parse_address(config.public, what="--public")
    for folder in (
        layout.state,
        layout.models,
        layout.nginx_conf.parent / "tmp",
        layout.state / "logs",
    ):
        folder.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.config_file, (json.dumps(asdict(config), indent=2) + "\n").encode())
    write_connection(layout.flwr_home, config.superlink_port, config.ca)
    layout.app_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.app_dir / "pyproject.toml", app_pyproject().encode())


def superlink_argv(layout: CoordinatorLayout, config: CoordinatorConfig) -> list[str]:
    """The SuperLink's command line: TLS, node authentication, loopback only."""
    certs = Path(config.certs)
    return [
        executable("flower-superlink"),
        "--ssl-ca-certfile", str(config.ca),
        "--ssl-certfile", str(certs / COORDINATOR_CERT),
        "--ssl-keyfile", str(certs / COORDINATOR_KEY),
        "--enable-supernode-auth",
        "--database", str(layout.database),
        "--host", "127.0.0.1",
        "--port", str(config.superlink_port),
        "--disable-runtime-dependency-installation",
    ]  # fmt: skip


def start_coordinator(layout: CoordinatorLayout, config: CoordinatorConfig) -> dict[str, Any]:
    """Start the SuperLink and the TLS front unless they run; returns the status."""
    prepare_state(layout, config)
    certs = Path(config.certs)
    if not layout.superlink.running():
        layout.superlink.start(
            superlink_argv(layout, config), flower_env(layout.flwr_home), cwd=layout.state
        )
    _wait_healthy(config.internal_address, config.ca, layout.superlink, timeout=60.0)

    front = FrontConfig(
        public=config.public_address,
        upstream_port=config.superlink_port,
        cert=certs / COORDINATOR_CERT,
        key=certs / COORDINATOR_KEY,
        ca=config.ca,
        tls_name="localhost",
        runtime_dir=layout.nginx_conf.parent,
        log_dir=layout.state / "logs",
    )
    write_atomic(layout.nginx_conf, render_nginx_conf(front).encode())
    if not layout.nginx.running():
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise CityFedError("nginx: not installed (apt-get install nginx)")
        layout.nginx.start(
            [
                nginx,
                "-c",
                str(layout.nginx_conf),
                "-e",
                str(layout.state / "logs" / "nginx-error.log"),
            ],
            flower_env(),
        )
    _wait_healthy(config.local_address, config.ca, layout.nginx, timeout=20.0)
    return coordinator_status(layout)


def stop_coordinator(layout: CoordinatorLayout) -> dict[str, bool]:
    """Stop the front, then the SuperLink (and everything they started)."""
    return {"nginx": layout.nginx.stop(), "superlink": layout.superlink.stop()}


def coordinator_status(layout: CoordinatorLayout) -> dict[str, Any]:
    """Processes, health, enrolled cities and published models."""
    from cityfed.server.enrolment import load_registry

    config = load_config(layout)
    healthy = False
    try:
        healthy = https_request(config.local_address, "/health", config.ca, timeout=2.0) == 200
    except OSError:
        healthy = False
    models = (
        sorted(p.name for p in layout.models.iterdir() if (p / "model.pb").is_file())
        if layout.models.is_dir()
        else []
    )
    return {
        "state": str(layout.state),
        "public": config.public,
        "superlink": {"running": layout.superlink.running(), "pid": layout.superlink.pid()},
        "nginx": {"running": layout.nginx.running(), "pid": layout.nginx.pid()},
        "healthy": healthy,
        "cities": load_registry(layout.enrolment),
        "models": models,
    }
