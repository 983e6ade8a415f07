"""``cityfed certs``, ``coordinator``, ``city`` and ``run``: the real deployment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["certs_app", "city_app", "coordinator_app", "register"]

certs_app = typer.Typer(help="Certificates and keys of a federation.", no_args_is_help=True)
coordinator_app = typer.Typer(
    help="The coordinator host: SuperLink, TLS front, model store.", no_args_is_help=True
)
city_app = typer.Typer(help="A city node: the city's Flower SuperNode.", no_args_is_help=True)

StateOption = Annotated[
    Path,
    typer.Option("--state", envvar="CITYFED_STATE", help="the coordinator's state folder"),
]
_DEFAULT_STATE = Path("cityfed-coordinator")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _console() -> Console:
    return Console(soft_wrap=True)


@certs_app.command("init")
def certs_init(
    out: Annotated[
        Path, typer.Option("--out", help="folder for ca.pem/.key and coordinator.pem/.key")
    ],
    coordinator_host: Annotated[
        list[str],
        typer.Option("--coordinator-host", help="DNS name or IP cities dial (repeatable)"),
    ],
    name: Annotated[
        str, typer.Option("--name", help="federation name in the CA's subject")
    ] = "cityfed",
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
) -> None:
    """Create the federation CA and the coordinator's TLS certificate."""
    from cityfed.ops.certs import write_coordinator

    for path in write_coordinator(out, coordinator_host, name=name, force=force):
        mode = oct(path.stat().st_mode & 0o777)
        _console().print(f"wrote {escape(str(path))} ({mode})")


@certs_app.command("city")
def certs_city(
    name: Annotated[str, typer.Argument(help="the city's name, as in its city.toml")],
    ca: Annotated[Path, typer.Option("--ca", help="the folder of `certs init`")],
    out: Annotated[Path, typer.Option("--out", help="folder for the city's keys")],
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
) -> None:
    """Create a city's node key pair and its client certificate."""
    from cityfed.ops.certs import issue_city

    files = issue_city(name, ca, out, force=force)
    roles = {
        "node_key": "node private key for the SuperNode (keep it on the city host)",
        "node_pub": "node public key (send it to the coordinator for `cityfed coordinator enrol`)",
        "client_cert": "client certificate for CityFed's gRPC service (mutual TLS)",
        "client_key": "its private key",
        "ca": "the federation CA the city trusts",
    }
    for role, path in files.items():
        _console().print(f"wrote {escape(str(path))}: {roles[role]}")


def _certs_person(role: str, name: str, ca: Path, out: Path, force: bool) -> None:
    from cityfed.ops.certs import issue_person

    files = issue_person(name, role, ca, out, force=force)
    for path in files.values():
        _console().print(f"wrote {escape(str(path))}")


@certs_app.command("analyst")
def certs_analyst(
    name: Annotated[str, typer.Argument(help="the analyst's name")],
    ca: Annotated[Path, typer.Option("--ca", help="the folder of `certs init`")],
    out: Annotated[Path, typer.Option("--out", help="folder for the certificate and key")],
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
) -> None:
    """A client certificate for an analyst (models, predictions, reports, runs)."""
    _certs_person("analyst", name, ca, out, force)


@certs_app.command("operator")
def certs_operator(
    name: Annotated[str, typer.Argument(help="the operator's name")],
    ca: Annotated[Path, typer.Option("--ca", help="the folder of `certs init`")],
    out: Annotated[Path, typer.Option("--out", help="folder for the certificate and key")],
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
) -> None:
    """A client certificate for an operator (also starts runs, approves enrolments)."""
    _certs_person("operator", name, ca, out, force)


@coordinator_app.command("start")
def coordinator_start(
    federation: Annotated[
        Path, typer.Option("--federation", help="federation.toml to train by default")
    ],
    certs: Annotated[Path, typer.Option("--certs", help="the folder of `certs init`")],
    public: Annotated[str, typer.Option("--public", help="HOST:PORT where cities connect (TLS)")],
    state: StateOption = _DEFAULT_STATE,
    superlink_port: Annotated[
        int, typer.Option("--superlink-port", help="the SuperLink's loopback port")
    ] = 9092,
    private_network: Annotated[
        bool,
        typer.Option(
            "--private-network/--no-private-network",
            help="run the SuperLink in a network namespace of its own, so that no other "
            "local user reaches its Control API; turn off only where the network is "
            "private already (a container)",
        ),
    ] = True,
    service: Annotated[
        str,
        typer.Option(
            "--service",
            help="HOST:PORT of the gRPC service (mutual TLS); default the --public host "
            "on port 9444; 'none' for no service",
        ),
    ] = "",
) -> None:
    """Start the SuperLink (private loopback), the TLS front and the gRPC service; idempotent."""
    from cityfed_server.coordinator import start_coordinator
    from cityfed_server.layout import CoordinatorConfig, CoordinatorLayout

    config = CoordinatorConfig(
        federation=str(federation.resolve()),
        certs=str(certs.resolve()),
        public=public,
        superlink_port=superlink_port,
        private_network=private_network,
        service=_service_address(service, public),
    )
    status = start_coordinator(CoordinatorLayout(state.resolve()), config)
    where = "its own network namespace" if private_network else "this host's"
    _console().print(
        f"coordinator running: cities connect to [bold]{escape(public)}[/] "
        f"(SuperLink on 127.0.0.1:{superlink_port} in {where}, state in {escape(str(state))})"
    )
    _print_status(status)


def _service_address(option: str, public: str) -> str:
    """The gRPC service's address from ``--service``: "" when turned off."""
    from cityfed.ops.tls import parse_address

    if option == "none":
        return ""
    if option:
        return option
    host = parse_address(public, what="--public").host
    return f"[{host}]:9444" if ":" in host else f"{host}:9444"


def _print_status(status: dict[str, Any]) -> None:
    console = _console()
    for name in ("superlink", "nginx", "service"):
        if name not in status:
            continue
        info = status[name]
        where = f" on {info['listen']}" if info.get("listen") else ""
        state = f"running, pid {info['pid']}{where}" if info["running"] else "stopped"
        console.print(f"  {name}: {state}")
    console.print(f"  public front healthy: {status['healthy']}")
    for city, entry in status["cities"].items():
        state = "revoked " + entry["revoked_at"] if entry.get("revoked_at") else "enrolled"
        console.print(f"  city {escape(city)}: {state} (node {entry['node_id']})")
    console.print(f"  models: {len(status['models'])}")
    for warning in status.get("warnings", []):
        console.print(f"  [yellow]warning[/]: {escape(warning)}")


@coordinator_app.command("stop")
def coordinator_stop(state: StateOption = _DEFAULT_STATE) -> None:
    """Stop the TLS front and the SuperLink."""
    from cityfed_server.coordinator import stop_coordinator
    from cityfed_server.layout import CoordinatorLayout

    stopped = stop_coordinator(CoordinatorLayout(state.resolve()))
    _console().print(
        ", ".join(f"{k}: {'stopped' if v else 'was not running'}" for k, v in stopped.items())
    )


@coordinator_app.command("status")
def coordinator_status(
    state: StateOption = _DEFAULT_STATE,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Processes, health, enrolled cities and published models."""
    from cityfed_server.coordinator import coordinator_status as status_of
    from cityfed_server.layout import CoordinatorLayout

    status = status_of(CoordinatorLayout(state.resolve()))
    if as_json:
        _print_json(status)
    else:
        _print_status(status)
    names = ("superlink", "nginx", "service")
    if not all(status[name]["running"] for name in names if name in status):
        raise typer.Exit(1)


@coordinator_app.command("enrol")
def coordinator_enrol(
    name: Annotated[str, typer.Argument(help="the city's name")],
    key: Annotated[Path, typer.Argument(help="the city's NAME.node.pub")],
    state: StateOption = _DEFAULT_STATE,
) -> None:
    """Admit a city's node key."""
    from cityfed_server.enrolment import enrol
    from cityfed_server.layout import CoordinatorLayout

    entry = enrol(CoordinatorLayout(state.resolve()), name, key)
    _console().print(f"enrolled {escape(name)} (node {entry['node_id']})")


@coordinator_app.command("revoke")
def coordinator_revoke(
    name: Annotated[str, typer.Argument(help="the city's name")],
    state: StateOption = _DEFAULT_STATE,
) -> None:
    """Remove a city's node key; its node is refused from then on."""
    from cityfed_server.enrolment import revoke
    from cityfed_server.layout import CoordinatorLayout

    entry = revoke(CoordinatorLayout(state.resolve()), name)
    _console().print(f"revoked {escape(name)} (node {entry['node_id']})")


def _node_layout(config: Path | None, state: Path | None) -> Any:
    from cityfed_client.node import NodeLayout, default_state

    if state is None and config is None:
        raise typer.BadParameter("give --config or --state")
    return NodeLayout((state or default_state(config)).resolve())  # type: ignore[arg-type]


@city_app.command("start")
def city_start(
    config: Annotated[Path, typer.Option("--config", help="the city's city.toml")],
    coordinator: Annotated[
        str, typer.Option("--coordinator", help="HOST:PORT of the coordinator's front")
    ],
    ca: Annotated[Path, typer.Option("--ca", help="the federation's ca.pem")],
    key: Annotated[Path, typer.Option("--key", help="the city's NAME.node.key")],
    state: Annotated[Path | None, typer.Option("--state", help="node state folder")] = None,
    runtime_port: Annotated[
        int | None, typer.Option("--runtime-port", help="local port of the SuperNode's runtime API")
    ] = None,
) -> None:
    """Start the city's SuperNode and wait until the coordinator admits it."""
    from cityfed_client.node import start_node

    status = start_node(
        _node_layout(config, state),
        city_config=config,
        coordinator=coordinator,
        ca=ca,
        key=key,
        runtime_port=runtime_port,
    )
    _console().print(
        f"city {escape(status['city'])} connected to {escape(coordinator)} (pid {status['pid']})"
    )


@city_app.command("stop")
def city_stop(
    config: Annotated[Path | None, typer.Option("--config")] = None,
    state: Annotated[Path | None, typer.Option("--state")] = None,
) -> None:
    """Stop the city's SuperNode."""
    from cityfed_client.node import stop_node

    stopped = stop_node(_node_layout(config, state))
    _console().print("stopped" if stopped else "was not running")


@city_app.command("status")
def city_status(
    config: Annotated[Path | None, typer.Option("--config")] = None,
    state: Annotated[Path | None, typer.Option("--state")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Whether the city's SuperNode runs and was admitted."""
    from cityfed_client.node import node_status

    status = node_status(_node_layout(config, state))
    if as_json:
        _print_json(status)
    else:
        _console().print(
            f"city {escape(status['city'])}: {'running' if status['running'] else 'stopped'}"
            f"{', admitted by ' + escape(status['coordinator']) if status['admitted'] else ''}"
        )
        if status.get("cut_off"):
            _console().print(f"  [red]cut off[/]: {escape(status['cut_off'])}")
    if not status["running"]:
        raise typer.Exit(1)


def _audit(log_path: Path, action: str, as_json: bool) -> None:
    """``audit show`` (the entries) or ``audit verify`` (the hash chain) of one log."""
    from cityfed.ops.audit import AuditLog

    if action not in ("show", "verify"):
        raise typer.BadParameter(f"expected show or verify, got {action!r}")
    log = AuditLog(log_path)
    if action == "show":
        entries = list(log.entries())
        if as_json:
            _print_json(entries)
            return
        console = _console()
        for entry in entries:
            what = entry.get("phase") or entry.get("message_type") or entry.get("city") or ""
            subject = entry.get("federation") or entry.get("run") or entry.get("app") or ""
            console.print(
                f"{entry['seq']:>5} {entry['kind']:<16} {escape(str(subject))} "
                f"{escape(str(what))} {escape(str(entry.get('reason') or ''))}"
            )
        return
    problems = log.verify()
    if as_json:
        _print_json({"intact": not problems, "problems": [str(p) for p in problems]})
    elif problems:
        for problem in problems:
            Console(stderr=True).print(f"[red]{escape(str(log.path))}: {escape(str(problem))}[/]")
    else:
        count = sum(1 for _ in log.entries())
        _console().print(f"{escape(str(log.path))}: intact ({count} entries)")
    if problems:
        raise typer.Exit(1)


AuditAction = Annotated[str, typer.Argument(help="show: the entries; verify: check the hash chain")]


@city_app.command("audit")
def city_audit(
    action: AuditAction = "verify",
    config: Annotated[Path | None, typer.Option("--config")] = None,
    state: Annotated[Path | None, typer.Option("--state")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The city's audit trail: every instruction, what was sent back, every refusal."""
    _audit(_node_layout(config, state).state / "audit.jsonl", action, as_json)


@city_app.command("ledger")
def city_ledger(
    action: AuditAction = "verify",
    config: Annotated[Path | None, typer.Option("--config")] = None,
    state: Annotated[Path | None, typer.Option("--state")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The city's privacy ledger: every differentially private release and its ε."""
    _audit(_node_layout(config, state).state / "privacy-ledger.jsonl", action, as_json)


@city_app.command("identity")
def city_identity(
    config: Annotated[Path | None, typer.Option("--config")] = None,
    state: Annotated[Path | None, typer.Option("--state")] = None,
) -> None:
    """The node's identity key for secure aggregation, as [privacy.city_keys] lists it.

    Made on first use (``secagg-identity.key`` in the node's state folder, 0600);
    the coordinator puts the printed line in ``federation.toml``, each city agrees
    to that spec, and from then on no key the coordinator relays can be its own.
    """
    from cityfed_client.node_config import NodeSettings
    from cityfed_client.secagg import load_secret

    from cityfed.config.spec import load_city
    from cityfed.federation.secagg import identity_public

    layout = _node_layout(config, state)
    seed = load_secret(NodeSettings(config or layout.state, layout.state).secagg_identity)
    line = f'"{identity_public(seed)}"'
    if config is not None:
        line = f"{load_city(config).name} = {line}"
    _console().print(line, highlight=False, soft_wrap=True)


@coordinator_app.command("approve")
def coordinator_approve(
    name: Annotated[str, typer.Argument(help="the city that asked")],
    state: StateOption = _DEFAULT_STATE,
) -> None:
    """Enrol the node key a city asked for (through the gRPC service)."""
    from cityfed_server.layout import CoordinatorLayout
    from cityfed_server.requests import approve

    entry = approve(CoordinatorLayout(state.resolve()), name)
    _console().print(f"enrolled {escape(name)} (node {entry['node_id']}): its node may join")


@coordinator_app.command("reject")
def coordinator_reject(
    name: Annotated[str, typer.Argument(help="the city that asked")],
    reason: Annotated[str, typer.Option("--reason", help="told to the city")] = "",
    state: StateOption = _DEFAULT_STATE,
) -> None:
    """Turn a city's enrolment request down."""
    from cityfed_server.layout import CoordinatorLayout
    from cityfed_server.requests import reject

    reject(CoordinatorLayout(state.resolve()), name, reason)
    _console().print(f"rejected the enrolment request of {escape(name)}")


@coordinator_app.command("revoke-cert")
def coordinator_revoke_cert(
    cert: Annotated[Path, typer.Argument(help="the client certificate (PEM) to refuse")],
    state: StateOption = _DEFAULT_STATE,
) -> None:
    """Refuse a client certificate at the gRPC service from its next call on."""
    from cityfed_server.layout import CoordinatorLayout
    from cityfed_server.requests import revoke_certificate

    from cityfed.errors import CityFedError

    try:
        pem = cert.read_bytes()
    except OSError as exc:
        raise CityFedError(f"{cert}: cannot read ({exc.strerror})") from None
    serial = revoke_certificate(CoordinatorLayout(state.resolve()), pem)
    _console().print(f"revoked certificate {serial:x} ({escape(cert.name)})")


@coordinator_app.command("requests")
def coordinator_requests(
    state: StateOption = _DEFAULT_STATE,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Enrolment requests and enrolled cities."""
    from cityfed_server.layout import CoordinatorLayout
    from cityfed_server.requests import enrolments

    found = enrolments(CoordinatorLayout(state.resolve()))
    if as_json:
        _print_json(found)
        return
    for name, entry in sorted(found.items()):
        contact = f" ({escape(entry['contact'])})" if entry.get("contact") else ""
        _console().print(f"{escape(name)}: {entry.get('status', '?')}{contact}")


@coordinator_app.command("backup")
def coordinator_backup(
    dest: Annotated[Path, typer.Argument(help="a new folder for the backup")],
    state: StateOption = _DEFAULT_STATE,
) -> None:
    """Copy the coordinator's state, consistent while it runs (database, models, audit)."""
    from cityfed_server.backup import MANIFEST, backup_state
    from cityfed_server.layout import CoordinatorLayout

    done = backup_state(CoordinatorLayout(state.resolve()), dest.resolve())
    _console().print(f"backup written to {escape(str(done))} (hashes in {MANIFEST})")


@coordinator_app.command("restore")
def coordinator_restore(
    backup: Annotated[Path, typer.Argument(help="a folder made by `coordinator backup`")],
    state: StateOption = _DEFAULT_STATE,
) -> None:
    """Restore a backup into a new state folder; then `coordinator start` from it."""
    from cityfed_server.backup import restore_state
    from cityfed_server.layout import CoordinatorLayout

    manifest = restore_state(backup.resolve(), CoordinatorLayout(state.resolve()))
    _console().print(
        f"restored the backup of {escape(str(manifest.get('source')))} made "
        f"{escape(str(manifest.get('created')))} into {escape(str(state))}; start it with "
        "`cityfed coordinator start --state ...`"
    )


@coordinator_app.command("audit")
def coordinator_audit(
    action: AuditAction = "verify",
    state: StateOption = _DEFAULT_STATE,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The coordinator's audit trail: starts, enrolments, runs, published models."""
    from cityfed_server.audit import coordinator_audit as audit_of
    from cityfed_server.layout import CoordinatorLayout

    _audit(audit_of(CoordinatorLayout(state.resolve())).path, action, as_json)


def run_command(
    federation: Annotated[
        Path | None, typer.Argument(help="federation.toml (default: the coordinator's)")
    ] = None,
    coordinator: Annotated[
        Path,
        typer.Option(
            "--coordinator",
            envvar="CITYFED_STATE",
            help="the coordinator's state folder (run this on the coordinator host)",
        ),
    ] = _DEFAULT_STATE,
    expected_cities: Annotated[
        int | None,
        typer.Option("--expected-cities", help="cities to wait for (default: all enrolled)"),
    ] = None,
    wait: Annotated[float, typer.Option("--wait", help="seconds to wait for them")] = 120.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="print report.json instead of tables")
    ] = False,
) -> None:
    """Submit a training run to the coordinator and wait for the model."""
    from cityfed_server.layout import CoordinatorLayout
    from cityfed_server.runs import run_federation

    from cityfed.ops.progress import ProgressEvent
    from cityfed.report.build import read_report, report_json_text
    from cityfed.report.terminal import print_summary

    console = Console(stderr=True, log_path=False) if as_json else Console(log_path=False)
    with console.status("Submitting the run...") as status:

        def on_event(event: ProgressEvent) -> None:
            console.log(escape(event.message))
            status.update(escape(event.message))

        out = run_federation(
            CoordinatorLayout(coordinator.resolve()),
            federation,
            expected_cities=expected_cities,
            wait_seconds=wait,
            on_event=on_event,
        )
    report = read_report(out / "report.json")
    if as_json:
        typer.echo(report_json_text(report), nl=False)
        return
    print_summary(report, console)
    console.print(f"Model store: [bold]{escape(str(out))}[/] (model.pb, report.json, report.html)")


def register(app: typer.Typer) -> None:
    """Add the deployment commands to the main app."""
    from cityfed.cli.service import register as register_service

    register_service(app, city_app)
    app.add_typer(certs_app, name="certs")
    app.add_typer(coordinator_app, name="coordinator")
    app.add_typer(city_app, name="city")
    app.command("run")(run_command)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
