"""``cityfed demo --deploy``: the real deployment, all on loopback, then a clean stop.

Certificates, a coordinator (SuperLink + nginx TLS front), three enrolled city
nodes, one training run through the Control API, the report, and every process
stopped again — the same functions the ``certs``, ``coordinator``, ``city`` and
``run`` commands call.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path

from cityfed_client.node import NodeLayout, start_node, stop_node
from cityfed_server.coordinator import start_coordinator, stop_coordinator
from cityfed_server.enrolment import enrol
from cityfed_server.layout import CoordinatorConfig, CoordinatorLayout
from cityfed_server.runs import run_federation

from cityfed.errors import CityFedError
from cityfed.files import write_atomic
from cityfed.ops.certs import COORDINATOR_CERT, issue_city, write_coordinator
from cityfed.ops.netns import check_private_network
from cityfed.ops.progress import ProgressEvent
from cityfed.report.build import read_report
from cityfed.report.types import Report
from cityfed.sim.simulate import ARTIFACTS

__all__ = ["COUNT_CITIES", "DEMO_CITIES", "copy_demo_data", "deploy_demo"]

#: The demo's cities and their ``city.toml`` (relative to the copied sample).
DEMO_CITIES = {"EWR": "ewr.toml", "JFK": "jfk.toml", "LGA": "lga.toml", "NEW": "new.toml"}
#: The count demo's cities (``cityfed demo --counts``): hourly departures.
COUNT_CITIES = {name: f"counts/{toml}" for name, toml in DEMO_CITIES.items()}


def copy_demo_data(target: Path) -> Path:
    """Copy the bundled samples (CSVs and TOMLs; the count sample in ``counts/``) to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    sample = resources.files("cityfed.demo_data")
    for folder, into in ((sample, target), (sample / "counts", target / "counts")):
        into.mkdir(exist_ok=True)
        for entry in folder.iterdir():
            if entry.name.endswith((".csv", ".toml")):
                (into / entry.name).write_bytes(entry.read_bytes())
    return target


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deploy_demo(
    out: Path,
    *,
    federation: str = "federation.toml",
    cities: Mapping[str, str] = DEMO_CITIES,
    say: Callable[[str], None] = lambda text: None,
    on_event: Callable[[ProgressEvent], None] = lambda event: None,
) -> Report:
    """Run the demo federation as a real deployment on 127.0.0.1.

    Returns
    -------
    Report
        The run's report, with the coordinator certificate's path under
        ``deployment``; its artifacts are copied into ``out``.
    """
    work = Path(tempfile.mkdtemp(prefix="cityfed-deploy-demo-"))
    layout = CoordinatorLayout(work / "coordinator")
    nodes: list[NodeLayout] = []
    try:
        data = copy_demo_data(work / "data")
        certs = work / "certs"
        write_coordinator(certs, ["localhost"], name="cityfed-demo")
        say(f"certificates: federation CA and coordinator certificate in {certs}")
        public = f"127.0.0.1:{_free_port()}"
        try:
            check_private_network()
            private = True
        except CityFedError as exc:
            say(f"note: the SuperLink shares this host's loopback ({exc})")
            private = False
        config = CoordinatorConfig(
            federation=str(data / federation),
            certs=str(certs),
            public=public,
            superlink_port=_free_port(),
            private_network=private,
        )
        start_coordinator(layout, config)
        where = "in its own network namespace" if private else "on this host's loopback"
        say(
            f"coordinator: SuperLink on 127.0.0.1:{config.superlink_port} {where}, "
            f"TLS front on {public}"
        )
        for name, toml in cities.items():
            keys = issue_city(name, certs, work / "cities" / name)
            entry = enrol(layout, name, keys["node_pub"])
            node = NodeLayout(work / "cities" / name / "node")
            nodes.append(node)
            start_node(
                node,
                city_config=data / toml,
                coordinator=f"localhost:{config.public_address.port}",
                ca=keys["ca"],
                key=keys["node_key"],
            )
            say(f"city {name}: node key enrolled (node {entry['node_id']}), SuperNode admitted")
        run_dir = run_federation(layout, expected_cities=len(cities), on_event=on_event)
        out.mkdir(parents=True, exist_ok=True)
        for artifact in ARTIFACTS:
            write_atomic(out / artifact, (run_dir / artifact).read_bytes())
        certificate = str(Path(config.certs) / COORDINATOR_CERT)
        return replace(
            read_report(run_dir / "report.json"),
            deployment={"coordinator_certificate": certificate},
        )
    finally:
        for node in nodes:
            stop_node(node)
        stop_coordinator(layout)
        say("stopped the city nodes, the TLS front and the SuperLink")
        shutil.rmtree(work, ignore_errors=True)
