#!/usr/bin/env python3
"""Run CityFed's processes in the foreground, under Docker, Kubernetes or systemd.

``cityfed coordinator start`` and ``cityfed city start`` start background
processes and return; a container or a systemd unit wants one foreground process
that it can supervise instead. This script prepares exactly what those commands
prepare, then replaces itself (``exec``) with the same program and the same
flags, so the supervisor sees ``flower-superlink``, ``nginx`` or
``flower-supernode`` itself::

    cityfed-entrypoint superlink           # flower-superlink, loopback only
    cityfed-entrypoint prepare-superlink   # only the state (systemd ExecStartPre)
    cityfed-entrypoint front               # nginx with deploy/nginx/nginx.conf
    cityfed-entrypoint service             # CityFed's gRPC service (mutual TLS)
    cityfed-entrypoint city                # flower-supernode of one city
    cityfed-entrypoint check-city          # only the checks (systemd ExecStartPre)
    cityfed-entrypoint gatekeeper          # the city's gatekeeper: the installed ClientApp
    cityfed-entrypoint health [HOST:PORT]  # exit 0 when /health answers 200 over TLS
    cityfed-entrypoint health-service [HOST:PORT]  # exit 0 when the gRPC service shakes hands
    cityfed-entrypoint backup DEST         # consistent copy of the coordinator's state

Settings come from options or, in containers, from the environment:

======================== =================================== ===========================
variable                 meaning                             default
======================== =================================== ===========================
CITYFED_STATE            coordinator state folder            /var/lib/cityfed
CITYFED_CERTS            folder with ca.pem, coordinator.*   /etc/cityfed/certs
CITYFED_FEDERATION       the default federation.toml         /etc/cityfed/federation.toml
CITYFED_SUPERLINK_PORT   the SuperLink's loopback port       9092
CITYFED_FRONT            the front, as seen from the host    localhost:9443
CITYFED_SERVICE          where the gRPC service listens      0.0.0.0:9444
CITYFED_NGINX_CONF       nginx config of the front           /etc/cityfed/nginx/nginx.conf
CITYFED_CITY_CONFIG      the city's city.toml                /data/city.toml
CITYFED_COORDINATOR      HOST:PORT of the coordinator front  (required for a city)
CITYFED_CA               the federation's ca.pem             /etc/cityfed/certs/ca.pem
CITYFED_NODE_KEY         the city's NAME.node.key            /etc/cityfed/keys/node.key
CITYFED_RUNTIME_PORT     the SuperNode's local runtime port  9094
CITYFED_NODE_STATE       the SuperNode's working folder      /var/lib/cityfed-node
CITYFED_WAIT             seconds a city waits for the front  60
======================== =================================== ===========================

The state written under ``CITYFED_STATE`` is the one ``cityfed coordinator
start`` writes (``coordinator.json``, the flwr CLI connection, the Flower App),
so ``cityfed coordinator enrol|revoke|status`` and ``cityfed run`` work on the
coordinator host as documented. ``CITYFED_FRONT`` becomes the ``public``
address in ``coordinator.json``: the address ``cityfed coordinator status``
dials to check the front from inside the host, pod or compose network namespace.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from cityfed_client.node import NodeConfig as NodeConfigType
    from cityfed_server.layout import CoordinatorConfig as CoordinatorConfigType

__all__ = [
    "CitySettings",
    "SuperlinkSettings",
    "backup_state",
    "check_city",
    "check_health",
    "check_service",
    "front_argv",
    "main",
    "prepare_front",
    "prepare_superlink",
    "service_argv",
    "superlink_argv",
    "supernode_argv",
]


class EntrypointError(Exception):
    """A setting or a file is wrong; the message says which and what to do."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class SuperlinkSettings:
    """Settings of the coordinator's SuperLink."""

    state: Path
    certs: Path
    federation: Path
    port: int
    front: str
    #: HOST:PORT of the gRPC service, recorded for ``cityfed coordinator status``.
    service: str = ""


@dataclass(frozen=True)
class CitySettings:
    """Settings of a city's SuperNode."""

    config: Path
    coordinator: str
    ca: Path
    key: Path
    runtime_port: int
    state: Path
    wait: float


def prepare_superlink(settings: SuperlinkSettings) -> list[str]:
    """Write the coordinator's state as ``cityfed coordinator start`` does.

    Parameters
    ----------
    settings : SuperlinkSettings
        Where the state, certificates and federation are.

    Returns
    -------
    list of str
        The ``flower-superlink`` command line to run.

    Raises
    ------
    cityfed.errors.CityFedError
        If the federation spec or the certificates are not usable.
    """
    from cityfed_server import coordinator
    from cityfed_server.layout import CoordinatorConfig, CoordinatorLayout

    layout = CoordinatorLayout(settings.state.absolute())
    config = CoordinatorConfig(
        federation=str(settings.federation.absolute()),
        certs=str(settings.certs.absolute()),
        public=settings.front,
        superlink_port=settings.port,
        service=settings.service,
        # The container (or systemd's PrivateNetwork=) gives the SuperLink its own
        # network; the entrypoint does not make another one.
        private_network=False,
    )
    coordinator.prepare_state(layout, config)
    (layout.state / "run").mkdir(parents=True, exist_ok=True)
    return coordinator.superlink_argv(layout, config)


def superlink_argv(state: Path, certs: Path, port: int) -> list[str]:
    """The SuperLink's command line: the one of ``server/cityfed_server/coordinator.py``.

    Parameters
    ----------
    state : Path
        The coordinator's state folder (its ``superlink.db`` lives there).
    certs : Path
        The folder of ``cityfed certs init``.
    port : int
        The SuperLink's port on 127.0.0.1.

    Returns
    -------
    list of str
        Executable and arguments.
    """
    from cityfed_server.coordinator import superlink_argv as argv_of
    from cityfed_server.layout import CoordinatorLayout

    return argv_of(CoordinatorLayout(state), _process_config(certs, superlink_port=port))


def service_argv(state: Path, certs: Path, listen: str) -> list[str]:
    """The gRPC service's command line: the one of ``cityfed coordinator start``.

    Parameters
    ----------
    state : Path
        The coordinator's state folder (models, runs, enrolment requests).
    certs : Path
        The folder with ``ca.pem``, ``coordinator.pem`` and ``coordinator.key``.
    listen : str
        HOST:PORT to listen on.

    Returns
    -------
    list of str
        Executable and arguments.
    """
    from cityfed_server.coordinator import service_argv as argv_of
    from cityfed_server.layout import CoordinatorLayout

    config = _process_config(certs.absolute(), service=listen)
    return argv_of(CoordinatorLayout(state.absolute()), config)


def _process_config(certs: Path, **settings: Any) -> CoordinatorConfigType:
    """The settings one process's command line needs; the container gives the network."""
    from cityfed_server.layout import CoordinatorConfig

    return CoordinatorConfig(
        federation="", certs=str(certs), public="localhost:9443", private_network=False,
        **settings,
    )  # fmt: skip


_NGINX_PATHS = re.compile(r"^\s*(pid|\w+_temp_path)\s+(\S+?);", re.MULTILINE)


def prepare_front(conf: Path) -> None:
    """Create the folders the nginx config writes to (its pid and temp files).

    Parameters
    ----------
    conf : Path
        The nginx config, ``deploy/nginx/nginx.conf`` in the images.

    Raises
    ------
    EntrypointError
        If the config cannot be read.
    """
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError as exc:
        raise EntrypointError(f"{conf}: cannot read the nginx config ({exc.strerror})") from None
    for _, path in _NGINX_PATHS.findall(text):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def front_argv(conf: Path) -> list[str]:
    """The front's command line: nginx in the foreground, errors on stderr.

    Parameters
    ----------
    conf : Path
        The nginx config.

    Returns
    -------
    list of str
        Executable and arguments.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return [nginx, "-c", str(conf), "-e", "stderr"]


def check_city(settings: CitySettings, *, say: bool = True) -> list[str]:
    """Check a city as ``cityfed city start`` does; return the SuperNode command.

    The city's config and data must load, the node key must be an OpenSSH
    elliptic-curve key, and the coordinator's front must answer ``/health``
    over TLS signed by the federation CA (tried for ``settings.wait`` seconds).

    Parameters
    ----------
    settings : CitySettings
        The city's files and the coordinator's address.
    say : bool
        Print on stderr what it is waiting for.

    Returns
    -------
    list of str
        The ``flower-supernode`` command line to run.

    Raises
    ------
    cityfed.errors.CityFedError
        With the reason, as ``cityfed city start`` words it.
    """
    from cityfed_client.node import check_node_key

    from cityfed.config.spec import load_city
    from cityfed.data.sources import require_data
    from cityfed.errors import CityFedError
    from cityfed.ops.tls import parse_address, probe_coordinator

    if not settings.coordinator:
        raise EntrypointError("CITYFED_COORDINATOR: set it to HOST:PORT of the coordinator front")
    city = load_city(settings.config)
    require_data(city)  # a CSV or Parquet file, or a folder of Parquet files
    check_node_key(settings.key)
    address = parse_address(settings.coordinator, what="CITYFED_COORDINATOR")
    deadline = time.monotonic() + settings.wait
    last = ""
    while True:
        try:
            probe_coordinator(address, settings.ca)
            break
        except CityFedError as exc:
            if time.monotonic() >= deadline:
                raise
            if say and str(exc) != last:
                print(f"waiting for the coordinator: {exc}", file=sys.stderr, flush=True)
            last = str(exc)
            time.sleep(3.0)
    from cityfed_client.node import ensure_secret

    settings.state.mkdir(parents=True, exist_ok=True)
    ensure_secret(settings.state / "superexec.secret")  # shared with the gatekeeper
    return supernode_argv(
        str(address),
        settings.ca,
        settings.key,
        settings.config,
        settings.runtime_port,
        settings.state,
    )


def supernode_argv(
    coordinator: str, ca: Path, key: Path, config: Path, port: int, state: Path
) -> list[str]:
    """The SuperNode's command line: the one of ``client/cityfed_client/node.py``.

    Paths are made absolute but symlinks are kept, so that a Kubernetes Secret
    that is updated in place (its files are symlinks) stays readable.

    Parameters
    ----------
    coordinator : str
        HOST:PORT of the coordinator's front.
    ca : Path
        The federation's ``ca.pem``.
    key : Path
        The city's ``NAME.node.key``.
    config : Path
        The city's ``city.toml``; its path goes into the node config.
    port : int
        Local port of the SuperNode's runtime API (127.0.0.1).
    state : Path
        The node's state folder (its audit trail and cache).

    Returns
    -------
    list of str
        Executable and arguments.
    """
    from cityfed_client.node import supernode_argv as argv_of

    return argv_of(_node_config(config, port, state, coordinator=coordinator, ca=ca, key=key))


def _node_config(
    config: Path,
    port: int,
    state: Path,
    *,
    coordinator: str = "",
    ca: Path | None = None,
    key: Path | None = None,
) -> NodeConfigType:
    """The settings ``cityfed city start`` keeps, from the entrypoint's (paths absolute)."""
    from cityfed_client.node import NodeConfig

    return NodeConfig(
        city="",
        config=str(config.absolute()),
        coordinator=coordinator,
        ca=str(ca.absolute()) if ca is not None else "",
        key=str(key.absolute()) if key is not None else "",
        runtime_port=port,
        state=str(state.absolute()),
    )


def _host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) split, with the standard library only."""
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), int(port)


def check_health(address: str, ca: Path, *, timeout: float = 5.0) -> int:
    """HTTP status of ``GET /health`` at ``address``, over TLS verified with ``ca``.

    Only the standard library is imported, so a health check costs little.

    Parameters
    ----------
    address : str
        HOST:PORT; the host name is checked against the certificate.
    ca : Path
        The federation's ``ca.pem``.
    timeout : float
        Seconds to wait for the answer.

    Returns
    -------
    int
        The status code (200 when healthy).
    """
    host, port = _host_port(address)
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def check_service(address: str, ca: Path, *, timeout: float = 5.0) -> None:
    """Shake hands with the gRPC service at ``address`` (TLS, HTTP/2) and hang up.

    The service asks every caller for a client certificate, so a probe without
    one cannot make a call; the handshake alone shows that the service listens
    and presents a certificate of the federation CA for ``address``'s host.

    Parameters
    ----------
    address : str
        HOST:PORT; the host name is checked against the certificate.
    ca : Path
        The federation's ``ca.pem``.
    timeout : float
        Seconds to wait.

    Raises
    ------
    OSError
        If nothing listens or the handshake fails (``ssl.SSLError``).
    """
    host, port = _host_port(address)
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        if tls.selected_alpn_protocol() != "h2":
            raise ssl.SSLError(f"{address}: no HTTP/2 (not a gRPC service?)")


def backup_state(state: Path, dest: Path) -> Path:
    """Copy a coordinator's state folder while the SuperLink runs.

    The same backup as ``cityfed coordinator backup``
    (:func:`cityfed_server.backup.backup_state`): SQLite's online backup of the
    database, the audit log under its lock, the rest as files, and a manifest of
    sha256 hashes that ``cityfed coordinator restore`` checks.

    Parameters
    ----------
    state : Path
        The coordinator's state folder.
    dest : Path
        A folder that does not exist yet.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    EntrypointError
        If ``state`` is not a coordinator's state or ``dest`` exists.
    """
    from cityfed_server.backup import backup_state as back_up
    from cityfed_server.layout import CoordinatorLayout

    from cityfed.errors import CityFedError

    try:
        return back_up(CoordinatorLayout(state), dest)
    except CityFedError as exc:
        raise EntrypointError(str(exc)) from None


def _write_pid(pid_file: Path) -> None:
    """Record this process (about to ``exec``) where ``cityfed coordinator status`` looks."""
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        print(f"note: cannot write {pid_file} ({exc.strerror})", file=sys.stderr)


def _exec(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> NoReturn:
    if cwd is not None:
        os.chdir(cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], list(argv), dict(env))


def _superlink_settings(args: argparse.Namespace) -> SuperlinkSettings:
    return SuperlinkSettings(
        state=Path(args.state),
        certs=Path(args.certs),
        federation=Path(args.federation),
        port=int(args.superlink_port),
        front=args.front,
        service=args.service,
    )


def _city_settings(args: argparse.Namespace) -> CitySettings:
    return CitySettings(
        config=Path(args.config),
        coordinator=args.coordinator,
        ca=Path(args.ca),
        key=Path(args.key),
        runtime_port=int(args.runtime_port),
        state=Path(args.node_state),
        wait=float(args.wait),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityfed-entrypoint",
        description="Run CityFed's processes in the foreground (containers, systemd).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    coordinator = argparse.ArgumentParser(add_help=False)
    coordinator.add_argument("--state", default=_env("CITYFED_STATE", "/var/lib/cityfed"))
    coordinator.add_argument("--certs", default=_env("CITYFED_CERTS", "/etc/cityfed/certs"))
    coordinator.add_argument(
        "--federation", default=_env("CITYFED_FEDERATION", "/etc/cityfed/federation.toml")
    )
    coordinator.add_argument(
        "--superlink-port", type=int, default=_env("CITYFED_SUPERLINK_PORT", "9092")
    )
    coordinator.add_argument("--front", default=_env("CITYFED_FRONT", "localhost:9443"))
    coordinator.add_argument("--service", default=_env("CITYFED_SERVICE", "0.0.0.0:9444"))
    commands.add_parser("superlink", parents=[coordinator], help="run flower-superlink")
    commands.add_parser(
        "prepare-superlink", parents=[coordinator], help="only write the coordinator's state"
    )

    front = commands.add_parser("front", help="run nginx, the TLS front")
    front.add_argument(
        "--conf", default=_env("CITYFED_NGINX_CONF", "/etc/cityfed/nginx/nginx.conf")
    )
    front.add_argument("--state", default=_env("CITYFED_STATE", "/var/lib/cityfed"))

    service = commands.add_parser("service", help="run CityFed's gRPC service (mutual TLS)")
    service.add_argument("--state", default=_env("CITYFED_STATE", "/var/lib/cityfed"))
    service.add_argument("--certs", default=_env("CITYFED_CERTS", "/etc/cityfed/certs"))
    service.add_argument("--listen", default=_env("CITYFED_SERVICE", "0.0.0.0:9444"))
    service.add_argument("--wait", type=float, default=_env("CITYFED_WAIT", "60"))

    city = argparse.ArgumentParser(add_help=False)
    city.add_argument("--config", default=_env("CITYFED_CITY_CONFIG", "/data/city.toml"))
    city.add_argument("--coordinator", default=_env("CITYFED_COORDINATOR", ""))
    city.add_argument("--ca", default=_env("CITYFED_CA", "/etc/cityfed/certs/ca.pem"))
    city.add_argument("--key", default=_env("CITYFED_NODE_KEY", "/etc/cityfed/keys/node.key"))
    city.add_argument("--runtime-port", type=int, default=_env("CITYFED_RUNTIME_PORT", "9094"))
    city.add_argument("--node-state", default=_env("CITYFED_NODE_STATE", "/var/lib/cityfed-node"))
    city.add_argument("--wait", type=float, default=_env("CITYFED_WAIT", "60"))
    commands.add_parser("city", parents=[city], help="run flower-supernode")
    commands.add_parser("check-city", parents=[city], help="only check the city's files")
    commands.add_parser(
        "gatekeeper", parents=[city], help="run the gatekeeper (the installed ClientApp only)"
    )

    health = commands.add_parser("health", help="exit 0 when /health answers 200")
    health.add_argument(
        "address",
        nargs="?",
        help="HOST:PORT (default: CITYFED_COORDINATOR, else localhost:CITYFED_SUPERLINK_PORT)",
    )
    health.add_argument("--ca", help="default: CITYFED_CA, else CITYFED_CERTS/ca.pem")
    grpc_health = commands.add_parser(
        "health-service", help="exit 0 when the gRPC service completes a TLS handshake"
    )
    grpc_health.add_argument(
        "address", nargs="?", help="HOST:PORT (default: localhost and CITYFED_SERVICE's port)"
    )
    grpc_health.add_argument("--ca", help="default: CITYFED_CA, else CITYFED_CERTS/ca.pem")

    backup = commands.add_parser("backup", help="consistent copy of the coordinator's state")
    backup.add_argument("dest", help="a new folder")
    backup.add_argument("--state", default=_env("CITYFED_STATE", "/var/lib/cityfed"))
    return parser


def _ca(args: argparse.Namespace) -> Path:
    return Path(
        args.ca
        or os.environ.get("CITYFED_CA")
        or Path(_env("CITYFED_CERTS", "/etc/cityfed/certs")) / "ca.pem"
    )


def _health_service(args: argparse.Namespace) -> int:
    port = _env("CITYFED_SERVICE", "0.0.0.0:9444").rpartition(":")[2]
    address = args.address or f"localhost:{port}"
    try:
        check_service(address, _ca(args))
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {address}: {exc}", file=sys.stderr)
        return 1
    return 0


def _service(args: argparse.Namespace) -> int:
    from cityfed_server.layout import CoordinatorLayout

    from cityfed.ops.processes import flower_env

    layout = CoordinatorLayout(Path(args.state).absolute())
    deadline = time.monotonic() + float(args.wait)
    while not layout.config_file.is_file():  # written by `superlink`/`prepare-superlink`
        if time.monotonic() >= deadline:
            raise EntrypointError(
                f"{layout.config_file}: not found; start the coordinator's superlink first"
            )
        time.sleep(1.0)
    argv = service_argv(layout.state, Path(args.certs), args.listen)
    _write_pid(layout.service.pid_file)
    _exec(argv, flower_env(layout.flwr_home), cwd=layout.state)


def _health(args: argparse.Namespace) -> int:
    address = (
        args.address
        or os.environ.get("CITYFED_COORDINATOR")
        or f"localhost:{_env('CITYFED_SUPERLINK_PORT', '9092')}"
    )
    ca = _ca(args)
    try:
        status = check_health(address, ca)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {address}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {address}/health answered HTTP {status}", file=sys.stderr)
        return 1
    return 0


def _backup(args: argparse.Namespace) -> int:
    print(backup_state(Path(args.state), Path(args.dest)))
    return 0


def _front(args: argparse.Namespace) -> int:
    conf = Path(args.conf)
    prepare_front(conf)
    _write_pid(Path(args.state) / "run" / "nginx-master.pid")
    _exec(front_argv(conf), os.environ)


def _superlink(args: argparse.Namespace) -> int:
    from cityfed_server.layout import CoordinatorLayout

    from cityfed.ops.processes import flower_env

    settings = _superlink_settings(args)
    argv = prepare_superlink(settings)
    if args.command == "prepare-superlink":
        return 0
    layout = CoordinatorLayout(settings.state.absolute())
    _write_pid(layout.superlink.pid_file)
    _exec(argv, flower_env(layout.flwr_home), cwd=layout.state)


def gatekeeper_argv(config: Path, port: int, state: Path) -> list[str]:
    """The gatekeeper's command line: the one of ``client/cityfed_client/node.py``.

    Parameters
    ----------
    config : Path
        The city's ``city.toml``.
    port : int
        Local port of the SuperNode's runtime API (127.0.0.1).
    state : Path
        The node's state folder (the shared secret, the audit trail, the cache).

    Returns
    -------
    list of str
        Executable and arguments.
    """
    from cityfed_client.node import gatekeeper_argv as argv_of

    return argv_of(_node_config(config, port, state))


def _gatekeeper(args: argparse.Namespace) -> int:
    from cityfed.config.spec import load_city
    from cityfed.ops.processes import flower_env

    settings = _city_settings(args)
    load_city(settings.config)  # a broken config fails here, in one line
    secret = settings.state / "superexec.secret"
    deadline = time.monotonic() + settings.wait
    while not secret.is_file():  # written by the SuperNode's side (`city`/`check-city`)
        if time.monotonic() >= deadline:
            raise EntrypointError(f"{secret}: not found; start the city's SuperNode first")
        time.sleep(1.0)
    argv = gatekeeper_argv(settings.config, settings.runtime_port, settings.state)
    _exec(argv, flower_env(), cwd=settings.state)


def _city(args: argparse.Namespace) -> int:
    from cityfed.ops.processes import flower_env

    settings = _city_settings(args)
    argv = check_city(settings)
    if args.command == "check-city":
        return 0
    settings.state.mkdir(parents=True, exist_ok=True)
    env = flower_env()
    env.setdefault("FLWR_HOME", str(settings.state.absolute() / "flwr"))
    _exec(argv, env, cwd=settings.state)


_COMMANDS = {
    "superlink": _superlink,
    "prepare-superlink": _superlink,
    "front": _front,
    "service": _service,
    "city": _city,
    "check-city": _city,
    "gatekeeper": _gatekeeper,
    "health": _health,
    "health-service": _health_service,
    "backup": _backup,
}


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; expected mistakes end in one line on stderr.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code (the ``exec`` sub-commands return only on failure).
    """
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except EntrypointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from cityfed.errors import CityFedError

        if isinstance(exc, CityFedError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
