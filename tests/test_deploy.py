"""The real deployment on 127.0.0.1: CA, coordinator (SuperLink + nginx), city nodes.

Every process is real and is stopped by the fixture, whatever happens.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cityfed_server.publish import publish
from cityfed_server.training import train
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed import load_model
from cityfed.config.spec import federation_digest, load_federation
from cityfed.ops.audit import AuditLog
from cityfed.ops.processes import flower_env

from .synthetic import FEATURES, SyntheticFederation, local_exchange, write_federation

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]

NAMES = [name for name, _ in FEATURES]


def cityfed(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("CITYFED_STATE", None)
    return subprocess.run(
        [sys.executable, "-m", "cityfed.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    root: Path
    state: Path
    certs: Path
    public_port: int
    superlink_port: int
    service_port: int
    regression: SyntheticFederation
    classification: SyntheticFederation
    timings: dict[str, float] = field(default_factory=dict)
    #: The federation whose data the three city nodes serve now.
    serving: SyntheticFederation | None = None

    @property
    def coordinator(self) -> str:
        return f"localhost:{self.public_port}"

    def keys(self, city: str) -> Path:
        return self.root / "keys" / city

    def node_state(self, city: str) -> Path:
        return self.root / "nodes" / city

    def start_city(
        self, city: str, config: Path, ca: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return cityfed(
            "city",
            "start",
            "--config",
            config,
            "--coordinator",
            self.coordinator,
            "--ca",
            ca or self.keys(city) / "ca.pem",
            "--key",
            self.keys(city) / f"{city}.node.key",
            "--state",
            self.node_state(city),
        )

    def serve(self, fed: SyntheticFederation) -> None:
        """Make the three city nodes serve ``fed``'s data (restarting them if needed).

        Each test says which data it trains on, so that none depends on what an
        earlier test left running.
        """
        if self.serving is fed:
            return
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # three hosts, in parallel
            starts = [pool.submit(self.start_city, f"city{k}", fed.cities[k]) for k in range(3)]
            for started in starts:
                ok(started.result())
        self.serving = fed

    def coordinator_start(self) -> subprocess.CompletedProcess[str]:
        return cityfed(
            "coordinator",
            "start",
            "--federation",
            self.regression.federation,
            "--certs",
            self.certs,
            "--state",
            self.state,
            "--public",
            f"127.0.0.1:{self.public_port}",
            "--superlink-port",
            self.superlink_port,
            "--service",
            f"127.0.0.1:{self.service_port}",
        )


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            found.append(f"{pid}: {cmd}")
    return found


def _listening_hosts(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            host, _, port_hex = fields[1].partition(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                hosts.add(host)
    return hosts


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deploy(tmp_path_factory)


def deploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Certificates, a coordinator, three enrolled cities serving the regression data.

    Everything is stopped at the end, and nothing started under its folder is left.
    """
    root = tmp_path_factory.mktemp("deploy")
    dep = Deployment(
        root=root,
        state=root / "coordinator",
        certs=root / "certs",
        public_port=free_port(),
        superlink_port=free_port(),
        service_port=free_port(),
        regression=write_federation(root / "regression", sizes=(300, 150, 400), alpha=2.0),
        classification=write_federation(
            root / "classification",
            task="classification",
            model="logistic",
            C=0.5,
            sizes=(300, 150, 400),
        ),
    )
    _agree_to_the_secure_twin(dep.regression)
    try:
        ok(cityfed("certs", "init", "--out", dep.certs, "--coordinator-host", "localhost"))
        started = time.monotonic()
        ok(dep.coordinator_start())
        dep.timings["coordinator_start"] = time.monotonic() - started
        for k in range(3):
            city = f"city{k}"
            ok(cityfed("certs", "city", city, "--ca", dep.certs, "--out", dep.keys(city)))
            ok(
                cityfed(
                    "coordinator",
                    "enrol",
                    city,
                    dep.keys(city) / f"{city}.node.pub",
                    "--state",
                    dep.state,
                )
            )
        dep.serve(dep.regression)
        yield dep
    finally:
        for node in (root / "nodes").glob("*"):
            cityfed("city", "stop", "--state", node)
        cityfed("coordinator", "stop", "--state", dep.state)
        leftovers = _processes_mentioning(str(root))
        for line in leftovers:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        assert not leftovers, f"processes left behind: {leftovers}"


def _secure_twin(fed: SyntheticFederation) -> Path:
    """The regression federation under secure aggregation (the same cities, the same data)."""
    return fed.federation.parent / "secure-federation.toml"


def _agree_to_the_secure_twin(fed: SyntheticFederation) -> None:
    """Write the secure twin and let the cities agree to it (no node restart needed)."""
    text = fed.federation.read_text()
    _secure_twin(fed).write_text(
        text.replace("[target]", "[privacy]\nsecure_aggregation = true\n\n[target]", 1)
    )
    for city in fed.cities:
        city.write_text(
            city.read_text().replace(
                'agreed = ["agreed-federation.toml"]',
                'agreed = ["agreed-federation.toml", "secure-federation.toml"]',
            )
        )


#: Keys that every city reply carries (cityfed.flower.records): found in a database
#: file, they mean a reply's bytes are still there.
_REPLY_MARKERS = (b"rows_read", b"drop_reasons", b"scatter")


def _payload_traces(state: Path) -> list[str]:
    """Reply markers found in ``superlink.db`` and its WAL and shared-memory files."""
    found = []
    for path in sorted(state.glob("superlink.db*")):
        data = path.read_bytes()
        found += [f"{path.name}: {m.decode()}" for m in _REPLY_MARKERS if m in data]
    return found


def _run(dep: Deployment, federation: Path) -> tuple[dict, Path]:  # type: ignore[type-arg]
    started = time.monotonic()
    proc = ok(cityfed("run", federation, "--coordinator", dep.state, "--json", "--wait", "60"))
    elapsed = time.monotonic() - started
    report = json.loads(proc.stdout)
    store = dep.state / "models" / report["run_id"]
    report["_elapsed"] = elapsed
    return report, store


def _fitted_here(dep: Deployment, federation: Path, cities: list[Path], name: str) -> Path:
    """The same cities' handlers trained in this process (once per name): the reference.

    The simulation engine's path to the same model is tested by test_simulate_cli;
    here the deployment is compared with the training code it runs, fed by the
    cities' own handlers, without paying for another engine start.
    """
    out = dep.root / f"here-{name}"
    if not (out / "model.pb").exists():
        fed = load_federation(federation)
        publish(fed, train(fed, local_exchange(cities), run_id=name), out)
    return out / "model.pb"


def _simulated(dep: Deployment, fed: SyntheticFederation) -> Path:
    """The reference model of one of the deployment's federations."""
    return _fitted_here(dep, fed.federation, fed.cities, fed.federation.parent.name)


def _assert_equals_simulation(dep: Deployment, store: Path) -> None:
    """The deployed regression model of ``store`` predicts what `cityfed simulate` fits."""
    deployed = load_model(store / "model.pb")
    simulated = load_model(_simulated(dep, dep.regression))
    frame = pd.DataFrame(dep.regression.X_pooled, columns=NAMES)
    tolerance = 1e-6 * np.std(dep.regression.y_pooled)
    assert np.max(np.abs(deployed.predict(frame) - simulated.predict(frame))) <= tolerance


def test_coordinator_exposes_only_the_fleet_api(deployment: Deployment) -> None:
    status = json.loads(
        ok(cityfed("coordinator", "status", "--state", deployment.state, "--json")).stdout
    )
    assert status["healthy"] and status["superlink"]["running"] and status["nginx"]["running"]
    enrolled = sorted(n for n, e in status["cities"].items() if not e.get("revoked_at"))
    assert enrolled == ["city0", "city1", "city2"]
    ca = ssl.create_default_context(cafile=str(deployment.certs / "ca.pem"))
    for method, path, expected in (
        ("GET", "/health", 200),
        ("POST", "/v1/control/list-runs", 404),
        ("POST", "/v1/control/start-run", 404),
        ("POST", "/v1/runtime/get-nodes", 404),
        ("GET", "/docs", 404),
    ):
        conn = http.client.HTTPSConnection(
            "localhost", deployment.public_port, context=ca, timeout=10
        )
        conn.request(method, path, body=b"" if method == "POST" else None)
        assert conn.getresponse().status == expected, path
        conn.close()
    # The SuperLink does not listen in the host's network at all (its own namespace).
    assert _listening_hosts(deployment.superlink_port) == set()


OTHER_USER = "cityfed-other"


@pytest.fixture
def other_user() -> Iterator[str]:
    """A second local account, created for the test and removed after it."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a second local user")
    subprocess.run(["userdel", OTHER_USER], capture_output=True, check=False)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", OTHER_USER],
        check=True,
        capture_output=True,
    )
    try:
        yield OTHER_USER
    finally:
        subprocess.run(["userdel", OTHER_USER], capture_output=True, check=False)


_ATTACK = r"""
import http.client, json, socket, ssl, sys
port, sock_path = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
results = {}
for path in ("/v1/control/list-runs", "/v1/control/register-node"):
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        results[path] = conn.getresponse().status
    except OSError as exc:
        results[path] = type(exc).__name__
for name in (sock_path, sock_path.rsplit("/", 2)[0]):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock_path) if name == sock_path else __import__("os").listdir(name)
        results[name] = "open"
    except OSError as exc:
        results[name] = type(exc).__name__
print(json.dumps(results))
"""


def test_another_local_user_cannot_reach_the_control_api(
    deployment: Deployment, other_user: str
) -> None:
    dep = deployment
    socket_path = dep.state / "run" / "superlink.sock"
    # The folders above the state folder are traversable, as on a real host, so that
    # only the state folder's own mode keeps the second user out.
    above = [p for p in dep.state.parents if str(p).startswith("/tmp/") and p != Path("/tmp")]
    modes = {p: p.stat().st_mode & 0o7777 for p in above}
    for folder in above:
        folder.chmod(modes[folder] | 0o011)
    try:
        # Execute: as the second user, the Control API on the SuperLink's port and socket
        attack = subprocess.run(
            ["su", other_user, "-s", "/bin/sh", "-c",
             f"/usr/bin/python3 - {dep.superlink_port} {socket_path}"],
            input=_ATTACK, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)
    # Assert: nothing listens there, and the socket and state are the operator's only
    assert attack.returncode == 0, attack.stderr
    results = json.loads(attack.stdout)
    assert results == {
        "/v1/control/list-runs": "ConnectionRefusedError",
        "/v1/control/register-node": "ConnectionRefusedError",
        str(socket_path): "PermissionError",
        str(dep.state): "PermissionError",
    }
    # ... and neither can the second user enter the SuperLink's network namespace.
    pid = int((dep.state / "run" / "superlink.pid").read_text())
    enter = subprocess.run(
        ["su", other_user, "-s", "/bin/sh", "-c",
         f"nsenter --target={pid} --net -- true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert enter.returncode != 0
    # The operator can: list runs and register a key through the same Control API.
    from cityfed_server.flwr_cli import CONNECTION, flwr_json
    from cityfed_server.layout import CoordinatorLayout, control_prefix

    layout = CoordinatorLayout(dep.state)
    listed = flwr_json(["ls", CONNECTION], layout.flwr_home, prefix=control_prefix(layout))
    assert listed["success"]
    ok(cityfed("certs", "city", "probe", "--ca", dep.certs, "--out", dep.keys("probe")))
    try:
        ok(cityfed("coordinator", "enrol", "probe", dep.keys("probe") / "probe.node.pub",
                   "--state", dep.state))  # fmt: skip
    finally:
        ok(cityfed("coordinator", "revoke", "probe", "--state", dep.state))


def _post_body(dep: Deployment, size: int, *, chunked: bool) -> int:
    """POST ``size`` junk bytes to the Fleet API; the front's status code."""
    ca = ssl.create_default_context(cafile=str(dep.certs / "ca.pem"))
    conn = http.client.HTTPSConnection("localhost", dep.public_port, context=ca, timeout=30)
    conn.putrequest("POST", "/v1/fleet/push-messages")
    conn.putheader("Content-Type", "application/protobuf")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(size))
    conn.endheaders()
    block = os.urandom(1 << 20)
    try:
        for _ in range(size >> 20):
            conn.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # the front stopped reading: its answer is already on the way
    try:
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_front_refuses_oversized_bodies_without_writing_them(deployment: Deployment) -> None:
    body_dir = deployment.state / "nginx" / "tmp" / "body"
    for size, chunked in ((100 << 20, False), (40 << 20, True)):
        # Execute
        status = _post_body(deployment, size, chunked=chunked)
        # Assert: refused, and no part of it was kept on disk
        assert status == 413, (size, chunked)
        kept = [p for p in body_dir.rglob("*") if p.is_file()] if body_dir.exists() else []
        assert kept == []
    # The front still serves.
    ca = ssl.create_default_context(cafile=str(deployment.certs / "ca.pem"))
    conn = http.client.HTTPSConnection("localhost", deployment.public_port, context=ca)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()


def _flood(dep: Deployment, clients: int, seconds: float) -> dict[str, int]:
    """``clients`` concurrent clients from 127.0.0.2 hammering the Fleet API; outcomes."""
    import collections
    import threading

    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    context = ssl.create_default_context(cafile=str(dep.certs / "ca.pem"))
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            try:
                raw = socket.create_connection(
                    ("127.0.0.1", dep.public_port), timeout=5, source_address=("127.0.0.2", 0)
                )
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    body = os.urandom(2048)
                    tls.sendall(
                        b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: localhost\r\n"
                        b"Content-Type: application/protobuf\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                    )
                    status = tls.recv(64).split(b" ")[1].decode()
            except (OSError, IndexError) as exc:
                status = type(exc).__name__
            with lock:
                counts[status] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return dict(counts)


def test_a_flood_of_clients_does_not_stop_a_run(deployment: Deployment) -> None:
    # Prepare: 200 concurrent clients for 10 s from another address, during a run
    import concurrent.futures

    dep = deployment
    dep.serve(dep.regression)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        flood = pool.submit(_flood, dep, 200, 10.0)
        # Execute
        report, store = _run(dep, dep.regression.federation)
        outcomes = flood.result()
    # Assert: the front limited the flood (429) and the run equals the simulation
    assert outcomes.get("429", 0) > 0, outcomes
    assert report["model"]["cities"] == ["city0", "city1", "city2"]
    _assert_equals_simulation(dep, store)
    print(f"\nflood outcomes: {dict(sorted(outcomes.items()))}; run {report['_elapsed']:.1f} s")


def test_plaintext_to_the_public_port_is_refused(deployment: Deployment) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", deployment.public_port, timeout=10)
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 400
    assert b"plain HTTP request was sent to HTTPS port" in response.read()
    conn.close()


def test_ridge_run_publishes_the_simulated_model(deployment: Deployment) -> None:
    # Prepare
    deployment.serve(deployment.regression)
    # Execute
    report, store = _run(deployment, deployment.regression.federation)
    # Assert: artifacts in the model store, equal to simulate and to sklearn pooled
    assert report["model"]["rounds"] == 1
    assert {p.name for p in store.iterdir()} >= {"model.pb", "report.json", "report.html"}
    deployed = load_model(store / "model.pb")
    simulated = load_model(_simulated(deployment, deployment.regression))
    X, y = deployment.regression.X_pooled, deployment.regression.y_pooled
    frame = pd.DataFrame(X, columns=NAMES)
    tolerance = 1e-6 * np.std(y)
    assert np.max(np.abs(deployed.predict(frame) - simulated.predict(frame))) <= tolerance
    reference = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(X, y)
    assert np.max(np.abs(deployed.predict(frame) - reference.predict(X))) <= tolerance
    # The coordinator's audit trail has the run, its app and the published model.
    audit = AuditLog(deployment.state / "audit.jsonl")
    assert audit.verify() == []
    events = list(audit.entries())
    assert {e["city"] for e in events if e["kind"] == "enrol"} >= {"city0", "city1", "city2"}
    [submitted] = [
        e for e in events if e["kind"] == "run-submitted" and e["run"] == report["run_id"]
    ]
    assert (
        submitted["app"].startswith("cityfed/cityfed-federation ") and "sha256:" in submitted["app"]
    )
    [published] = [
        e for e in events if e["kind"] == "model-published" and e["run"] == report["run_id"]
    ]
    digest = hashlib.sha256((store / "model.pb").read_bytes()).hexdigest()
    assert published["model"] == f"sha256:{digest}" and published["user"]
    ok(cityfed("coordinator", "audit", "verify", "--state", deployment.state))
    # Private state: every folder 0700 and file 0600 that the coordinator wrote or
    # started a process to write, the run's model and report included.
    status = json.loads(
        ok(cityfed("coordinator", "status", "--state", deployment.state, "--json")).stdout
    )
    assert status["warnings"] == []
    for path in [store, *store.iterdir(), deployment.state / "superlink.db"]:
        assert path.stat().st_mode & 0o077 == 0, path
    loose = store / "report.json"
    loose.chmod(0o644)
    try:
        status = json.loads(
            ok(cityfed("coordinator", "status", "--state", deployment.state, "--json")).stdout
        )
        assert status["warnings"] == [f"{loose}: file mode 644, expected private"]
    finally:
        loose.chmod(0o600)
    # No message payload is left in the SuperLink's database files after the run.
    assert _payload_traces(deployment.state) == []
    deployment.timings["ridge_run"] = report["_elapsed"]
    print(f"\ndeployed ridge run: {report['_elapsed']:.1f} s, {report['model']['rounds']} round(s)")


def test_secure_aggregation_through_real_supernodes(deployment: Deployment) -> None:
    """Five exchanges per sum over the SuperLink; the coordinator learns only the sum."""
    dep = deployment
    dep.serve(dep.regression)  # the regression cities, which also agreed to the secure twin
    report, store = _run(dep, _secure_twin(dep.regression))
    assert report["model"]["secure_aggregation"] is True and report["model"]["rounds"] == 1
    deployed = load_model(store / "model.pb")
    X, y = dep.regression.X_pooled, dep.regression.y_pooled
    reference = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(X, y)
    np.testing.assert_allclose(deployed.coef_, reference[-1].coef_ / reference[0].scale_, rtol=1e-9)
    digest = federation_digest(load_federation(_secure_twin(dep.regression)))
    for k in range(3):
        audit = AuditLog(dep.node_state(f"city{k}") / "audit.jsonl")
        assert audit.verify() == []
        steps = [
            e["secagg"]["step"]
            for e in audit.entries()
            if e.get("federation_digest") == digest and e.get("secagg")
        ]
        assert steps[-5:] == ["keys", "shares", "masked", "confirm", "unmask"]
        # What the city sent under secure aggregation: keys, sealed shares, one masked
        # vector and its reveals; never moments.
        sent = [
            e["sent"]
            for e in audit.entries()
            if e.get("federation_digest") == digest and e.get("secagg")
        ][-5:]
        assert all("moments" not in s for s in sent)
        assert sent[2]["masked_bytes"] > 0


def test_a_city_requests_enrolment_the_operator_approves_and_it_trains(
    deployment: Deployment,
) -> None:
    # Prepare: a fourth city with its own keys (its data: a copy of city0's file)
    from cityfed import Client

    dep = deployment
    dep.serve(dep.regression)
    ok(cityfed("certs", "city", "city3", "--ca", dep.certs, "--out", dep.keys("city3")))
    ok(cityfed("certs", "operator", "olga", "--ca", dep.certs, "--out", dep.root / "people"))
    city3 = dep.regression.cities[0].with_name("city_3.toml")
    city3.write_text(
        dep.regression.cities[0].read_text().replace('name = "city0"', 'name = "city3"')
    )
    service = ["--service", f"localhost:{dep.service_port}", "--ca", dep.keys("city3") / "ca.pem"]
    as_city3 = ["--cert", dep.keys("city3") / "city3.pem", "--key", dep.keys("city3") / "city3.key"]
    try:
        # Execute: the city asks through the gRPC service; the operator approves
        node_pub = dep.keys("city3") / "city3.node.pub"
        ok(cityfed("city", "enrol", *service, *as_city3, "city3", node_pub,
                   "--contact", "ops@city3.example"))  # fmt: skip
        requests = json.loads(
            ok(cityfed("coordinator", "requests", "--state", dep.state, "--json")).stdout
        )
        assert requests["city3"]["status"] == "requested"
        ok(cityfed("coordinator", "approve", "city3", "--state", dep.state))
        ok(dep.start_city("city3", city3))
        # The operator starts the run through the service and watches it.
        operator = Client(
            f"localhost:{dep.service_port}", ca=dep.certs / "ca.pem",
            cert=dep.root / "people" / "olga.operator.pem",
            key=dep.root / "people" / "olga.operator.key",
        )  # fmt: skip
        with operator:
            run_id = operator.start_run(expected_cities=4, wait_seconds=60)
            kinds = [event["kind"] for event in operator.watch(run_id, timeout=300)]
            report = operator.report(run_id)
            predicted = operator.predict(
                pd.DataFrame(dep.regression.X_pooled, columns=NAMES), run_id
            )
    finally:
        cityfed("city", "stop", "--state", dep.node_state("city3"))
        cityfed("coordinator", "revoke", "city3", "--state", dep.state)
    # Assert: city3 took part; the model equals the simulation of the four cities
    assert kinds[-1] == "done", kinds
    assert report["model"]["cities"] == ["city0", "city1", "city2", "city3"]
    store = dep.state / "models" / run_id
    four = [*dep.regression.cities, city3]
    deployed = load_model(store / "model.pb")
    simulated = load_model(_fitted_here(dep, dep.regression.federation, four, "four"))
    # The statistics are summed in the cities' name order: the same bits as here.
    np.testing.assert_allclose(deployed.coef_scaled_, simulated.coef_scaled_, rtol=1e-13)
    frame = pd.DataFrame(dep.regression.X_pooled, columns=NAMES)
    tolerance = 1e-6 * np.std(dep.regression.y_pooled)
    assert np.max(np.abs(deployed.predict(frame) - simulated.predict(frame))) <= tolerance
    np.testing.assert_allclose(predicted.values, deployed.predict(frame), rtol=1e-12)
    audit = [e["kind"] for e in AuditLog(dep.state / "audit.jsonl").entries()]
    assert "enrolment-requested" in audit and "enrolment-approved" in audit


def test_refused_nodes_do_not_disturb_the_federation(deployment: Deployment) -> None:
    dep = deployment
    dep.serve(dep.regression)
    # A node whose key was never enrolled.
    ok(cityfed("certs", "city", "rogue", "--ca", dep.certs, "--out", dep.keys("rogue")))
    rogue_toml = dep.root / "regression" / "rogue.toml"
    rogue_toml.write_text(
        dep.regression.cities[0].read_text().replace('name = "city0"', 'name = "rogue"')
    )
    proc = dep.start_city("rogue", rogue_toml)
    assert proc.returncode != 0
    assert "refused city 'rogue'" in proc.stderr and "not enrolled" in proc.stderr
    assert "Traceback" not in proc.stderr
    # A node that does not trust the federation CA (another CA's certificate).
    ok(cityfed("certs", "init", "--out", dep.root / "other-ca", "--coordinator-host", "localhost"))
    proc = dep.start_city("city0", dep.regression.cities[0], ca=dep.root / "other-ca" / "ca.pem")
    assert proc.returncode != 0 and "TLS verification failed" in proc.stderr
    # A plain Flower SuperNode without the CA never gets in.
    raw = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "flower-supernode"),
            "--superlink",
            dep.coordinator,
            "--auth-supernode-private-key",
            str(dep.keys("city0") / "city0.node.key"),
            "--max-retries",
            "1",
            "--max-wait-time",
            "10",
            "--port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=flower_env(),
    )
    try:
        output, _ = raw.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(raw.pid, signal.SIGKILL)
        output, _ = raw.communicate()
    assert "SuperNode ID:" not in output
    assert "certificate verify failed" in output.lower(), output[-2000:]
    # An enrolled node, revoked: refused from then on.
    ok(
        cityfed(
            "coordinator",
            "enrol",
            "rogue",
            dep.keys("rogue") / "rogue.node.pub",
            "--state",
            dep.state,
        )
    )
    ok(dep.start_city("rogue", rogue_toml))
    ok(cityfed("coordinator", "revoke", "rogue", "--state", dep.state))
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and cityfed("city", "status", "--state", dep.node_state("rogue")).returncode == 0
    ):
        time.sleep(1)
    # The revoked node says why it stopped.
    cut_off = cityfed("city", "status", "--state", dep.node_state("rogue"))
    assert "cut off: CityFed: the coordinator refused this node's key (HTTP 401" in (
        cut_off.stdout.replace("\n", " ")
    ), cut_off.stdout
    cityfed("city", "stop", "--state", dep.node_state("rogue"))
    proc = dep.start_city("rogue", rogue_toml)
    assert proc.returncode != 0 and "not enrolled or was revoked" in proc.stderr
    status = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    assert status["cities"]["rogue"]["revoked_at"]
    # The federation is unaffected: the next test's run (three cities) shows it.


HARVEST_PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "harvest"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "mallory"

[tool.flwr.app.components]
serverapp = "harvest:server"
clientapp = "harvest:client"

[tool.flwr.app.config]
out = ""
marker = ""
"""

#: A Flower App written by an attacker on the coordinator: its ClientApp would
#: read the city's CSV (named in the node config) and send it back, leaving a
#: marker file; its ServerApp records what the cities answered.
HARVEST_CODE = """
import json, pathlib, tomllib
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

client = ClientApp()
server = ServerApp()


@client.train()
def steal(msg, context):
    pathlib.Path(str(context.run_config["marker"])).write_text("ran on a city")
    config = pathlib.Path(str(context.node_config["city-config"]))
    data = config.parent / tomllib.loads(config.read_text())["city"]["data"]
    return Message(RecordDict({"loot": ConfigRecord({"csv": data.read_text()})}), reply_to=msg)


@server.main()
def main(grid, context):
    nodes = list(grid.get_node_ids())
    asks = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in nodes]
    replies = grid.send_and_receive(asks, timeout=120)
    seen = [
        {
            "code": r.error.code if r.has_error() else None,
            "reason": r.error.reason if r.has_error() else None,
            "records": [] if r.has_error() else list(r.content.keys()),
        }
        for r in replies
    ]
    pathlib.Path(str(context.run_config["out"])).write_text(json.dumps(seen))
"""


def test_an_impostor_is_refused_under_its_enrolled_name(deployment: Deployment) -> None:
    # Prepare: mallory's key is enrolled as "mallory", but its node says it is city1.
    dep = deployment
    dep.serve(dep.regression)
    ok(cityfed("certs", "city", "mallory", "--ca", dep.certs, "--out", dep.keys("mallory")))
    pub = dep.keys("mallory") / "mallory.node.pub"
    ok(cityfed("coordinator", "enrol", "mallory", pub, "--state", dep.state))
    claims_city1 = dep.root / "regression" / "claims-city1.toml"
    claims_city1.write_text(dep.regression.cities[1].read_text())
    try:
        ok(dep.start_city("mallory", claims_city1))
        # Execute
        report, _ = _run(dep, dep.regression.federation)
    finally:
        cityfed("city", "stop", "--state", dep.node_state("mallory"))
        cityfed("coordinator", "revoke", "mallory", "--state", dep.state)
    # Assert: the real city1 is in the model and the report; mallory is refused
    assert report["model"]["cities"] == ["city0", "city1", "city2"]
    refused = report["cities"]["mallory"]
    assert refused["status"] == "refused"
    assert "enrolled as 'mallory' but answered as 'city1'" in refused["reason"]
    assert report["cities"]["city1"]["rows_read"] == len(dep.regression.y[1])
    assert report["model"]["training_rows"] == sum(
        report["cities"][c]["rows_train"] for c in ("city0", "city1", "city2")
    )


@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")  # flwr's FAB build
def test_a_foreign_app_is_refused_by_every_city(deployment: Deployment) -> None:
    # Prepare: the attacker's app, submitted through the coordinator's own Control API
    from flwr.cli.build import build_fab_from_disk

    dep = deployment
    dep.serve(dep.regression)
    app = dep.root / "harvest"
    app.mkdir(exist_ok=True)
    (app / "pyproject.toml").write_text(HARVEST_PYPROJECT)
    (app / "harvest.py").write_text(HARVEST_CODE)
    out, marker = dep.root / "harvest-replies.json", dep.root / "harvest-marker"
    fab_hash = hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    from cityfed_server.layout import CoordinatorLayout, control_prefix

    # Execute
    submitted = subprocess.run(
        [*control_prefix(CoordinatorLayout(dep.state)),
         str(Path(sys.executable).parent / "flwr"), "run", str(app), "coordinator",
         "--run-config", f"out={json.dumps(str(out))} marker={json.dumps(str(marker))}",
         "--format", "json"],
        capture_output=True, text=True, timeout=120, env=flower_env(dep.state / "flwr"),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + 180
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(1)
    # Assert: every city refused before running any of its code
    replies = json.loads(out.read_text())
    assert len(replies) == 3
    for reply in replies:
        assert reply["code"] == 7 and reply["records"] == []  # INVALID_FAB, nothing sent
        assert "'mallory/harvest' is not CityFed's" in reply["reason"]
    assert not marker.exists()
    for k in range(3):
        audit = AuditLog(dep.node_state(f"city{k}") / "audit.jsonl")
        assert audit.verify() == []
        refusals = [e for e in audit.entries() if e["kind"] == "refused" and "mallory" in e["app"]]
        assert refusals and f"sha256:{fab_hash}" in refusals[-1]["app"]
    # A CityFed run right after works and equals the simulation.
    report, store = _run(dep, dep.regression.federation)
    assert report["model"]["cities"] == ["city0", "city1", "city2"]
    _assert_equals_simulation(dep, store)


def test_superlink_killed_and_restarted_keeps_cities_and_models(deployment: Deployment) -> None:
    dep = deployment
    dep.serve(dep.regression)
    before = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    pid = before["superlink"]["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    after_kill = json.loads(cityfed("coordinator", "status", "--state", dep.state, "--json").stdout)
    assert not after_kill["superlink"]["running"]
    # Start again with the same command: only the SuperLink comes back.
    ok(dep.coordinator_start())
    status = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    assert status["superlink"]["pid"] != pid
    assert status["nginx"]["pid"] == before["nginx"]["pid"]
    assert status["cities"] == before["cities"]
    assert set(before["models"]) <= set(status["models"])
    # The city nodes reconnect by themselves; a new run works.
    report, _ = _run(dep, dep.regression.federation)
    assert report["model"]["cities"] == ["city0", "city1", "city2"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_orphaned_front_workers_are_reported_and_replaced(deployment: Deployment) -> None:
    dep = deployment
    status = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    master = status["nginx"]["pid"]
    # A changed config is reloaded by the running master, not restarted.
    (dep.state / "nginx" / "nginx.conf").write_text("# stale\n")
    ok(dep.coordinator_start())
    status = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    assert status["nginx"]["pid"] == master and status["healthy"]
    last_start = [e for e in AuditLog(dep.state / "audit.jsonl").entries()][-1]
    assert last_start["kind"] == "coordinator-start"
    assert last_start["started"] == ["nginx-reloaded"]
    # kill -9 of the master leaves its worker serving: status says so.
    os.kill(master, signal.SIGKILL)
    time.sleep(1)
    status = json.loads(cityfed("coordinator", "status", "--state", dep.state, "--json").stdout)
    orphans = status["nginx"]["orphans"]
    assert not status["nginx"]["running"] and orphans
    assert any(
        "nginx: stopped, but processes it started still run" in w for w in status["warnings"]
    )
    # Starting again replaces them with a new master and workers.
    ok(dep.coordinator_start())
    status = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    assert status["nginx"]["running"] and status["healthy"] and status["nginx"]["orphans"] == []
    assert not any(_alive(pid) for pid in orphans)
    assert status["warnings"] == []


def test_a_live_backup_restored_onto_a_fresh_folder_runs(deployment: Deployment) -> None:
    # Prepare: a backup taken while the coordinator runs; then the coordinator is gone
    dep = deployment
    dep.serve(dep.regression)
    before = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    backup = dep.root / "backup"
    ok(cityfed("coordinator", "backup", backup, "--state", dep.state))
    ok(cityfed("coordinator", "stop", "--state", dep.state))
    # Execute: restore onto a new folder and start the coordinator from it
    dep.state = dep.root / "restored"
    ok(cityfed("coordinator", "restore", backup, "--state", dep.state))
    ok(dep.coordinator_start())
    # Assert: the same cities (their keys, in the restored database) and models
    status = json.loads(ok(cityfed("coordinator", "status", "--state", dep.state, "--json")).stdout)
    assert status["cities"] == before["cities"] and status["models"] == before["models"]
    assert status["warnings"] == []
    report, store = _run(dep, dep.regression.federation)
    assert report["model"]["cities"] == ["city0", "city1", "city2"]
    _assert_equals_simulation(dep, store)
    audit = AuditLog(dep.state / "audit.jsonl")
    assert audit.verify() == []
    kinds = [e["kind"] for e in audit.entries()]
    assert "restore" in kinds and kinds[-1] == "model-published"


def test_logistic_run_publishes_the_simulated_model(deployment: Deployment) -> None:
    dep = deployment
    dep.serve(dep.classification)  # the same cities, with their classification data
    report, store = _run(dep, dep.classification.federation)
    assert 2 <= report["model"]["rounds"] <= 10
    deployed = load_model(store / "model.pb")
    simulated = load_model(_simulated(dep, dep.classification))
    X, y = dep.classification.X_pooled, dep.classification.y_pooled
    frame = pd.DataFrame(X, columns=NAMES)
    np.testing.assert_allclose(
        deployed.predict_proba(frame), simulated.predict_proba(frame), atol=1e-6
    )
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    assert np.max(np.abs(deployed.predict_proba(frame) - reference.predict_proba(X))) <= 1e-5
    dep.timings["logistic_run"] = report["_elapsed"]
    print(
        f"\ndeployed logistic run: {report['_elapsed']:.1f} s, {report['model']['rounds']} round(s)"
    )
