"""A deployed round: CityFed's ridge run against a plain Flower app, same SuperLink and SuperNodes.

Real Flower processes on 127.0.0.1: one ``flower-superlink`` and one
``flower-supernode --isolation process`` per city, started once. What answers
each SuperNode's runtime API is what differs, attached in turn:

* for the plain app, Flower's own ClientApp runner (``flower-superexec``), and a
  Flower App of one round of Flower's built-in FedAvg whose ClientApps fit
  scikit-learn Ridge on their city's CSV (the app of ``bench/plain_flower.py``);
* for CityFed, a city node's gatekeeper (``cityfed_client.gatekeeper``, the
  process a deployed city runs) and CityFed's codeless app: the exact ridge fit,
  one round.

Each run is submitted with ``flwr run`` and timed from submission until
``flwr ls`` says it finished (polled every 0.1 s); the apps alternate, ``--repeat``
times, and the ServerApp's own time is reported beside it. A production
coordinator adds its TLS front and node authentication, the same for both apps,
so they are left out here.

    python bench/deployed_round.py                  # 3 cities, 5 runs of each app
    python bench/deployed_round.py --cities 10 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cityfed_server.coordinator import app_pyproject
from common import (
    RESULTS_DIR,
    command_line,
    machine,
    machine_line,
    print_table,
    write_json,
)
from scale import write_cities

from cityfed.ops.processes import executable, flower_env, stop_process_group

PLAIN_PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "plain-ridge"
version = "1.0.0"
license = "Apache-2.0"
dependencies = []

[tool.setuptools]
py-modules = ["plainapp"]

[tool.flwr.app]
publisher = "bench"

[tool.flwr.app.components]
serverapp = "plainapp:server"
clientapp = "plainapp:client"

[tool.flwr.app.config]
nodes = 3
dim = 21
out = ""
"""

PLAIN_APP = '''"""One round of Flower's FedAvg over ClientApps that fit Ridge on their CSV."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from sklearn.linear_model import Ridge

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    frame = pd.read_csv(str(context.node_config["csv"]))
    table = frame.to_numpy(dtype=np.float64)
    X, y = table[:, :-1], table[:, -1]
    model = Ridge(alpha=1.0).fit(X, y)
    w = np.concatenate([[model.intercept_], model.coef_])
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(w)}),
            "metrics": MetricRecord({"num-examples": int(y.size)}),
        }
    )
    return Message(content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    nodes = int(context.run_config["nodes"])
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_evaluate_nodes=0,
        min_available_nodes=nodes,
    )
    started = time.perf_counter()
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({"w": Array(np.zeros(int(context.run_config["dim"])))}),
        num_rounds=1,
    )
    seconds = time.perf_counter() - started
    Path(str(context.run_config["out"])).write_text(json.dumps({"server_seconds": seconds}))
'''


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    """One SuperLink and its SuperNodes, and the processes answering the nodes."""

    def __init__(self, root: Path, cities: Sequence[Path], csvs: Sequence[Path]) -> None:
        self.root = root
        self.cities = list(cities)
        self.csvs = list(csvs)
        self.port = free_port()  # Flower 1.42: Fleet, Control and runtime APIs on one port
        self.node_ports = [free_port() for _ in cities]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.answering: list[subprocess.Popen[bytes]] = []
        self.flwr_home = root / "flwr"
        self.flwr_home.mkdir()
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n',
            encoding="utf-8",
        )

    def _start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        handle = (self.root / f"{log}.log").open("ab")
        return subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=flower_env(self.flwr_home),
            cwd=self.root,
            start_new_session=True,
        )

    def start(self) -> None:
        """The SuperLink, then one SuperNode per city (each with its own runtime secret)."""
        superlink = [
            executable("flower-superlink"),
            "--insecure",
            "--database", str(self.root / "superlink.db"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        self.procs.append(self._start(superlink, "superlink"))
        _wait_port(self.port, "the SuperLink")
        for k, (city, csv, port) in enumerate(
            zip(self.cities, self.csvs, self.node_ports, strict=True)
        ):
            secret = self.root / f"node{k}.secret"
            secret.write_text(secrets.token_hex(32), encoding="ascii")
            os.chmod(secret, 0o600)
            (self.root / f"node{k}").mkdir(mode=0o700)
            node_config = f"city-config={json.dumps(str(city))} csv={json.dumps(str(csv))}"
            supernode = [
                executable("flower-supernode"),
                "--insecure",
                "--superlink", f"127.0.0.1:{self.port}",
                "--node-config", node_config,
                "--isolation", "process",
                "--port", str(port),
                "--superexec-auth-secret-file", str(secret),
            ]  # fmt: skip
            self.procs.append(self._start(supernode, f"supernode{k}"))
        for port in self.node_ports:
            _wait_port(port, "a SuperNode's runtime API")

    def answer_with(self, kind: str) -> None:
        """Attach Flower's ClientApp runner (``plain``) or CityFed's gatekeeper to every node."""
        self.detach()
        for k, (city, port) in enumerate(zip(self.cities, self.node_ports, strict=True)):
            secret = str(self.root / f"node{k}.secret")
            if kind == "plain":
                argv = [
                    executable("flower-superexec"),
                    "--runtime-api-address", f"127.0.0.1:{port}",
                    "--insecure",
                    "--superexec-auth-secret-file", secret,
                ]  # fmt: skip
            else:
                argv = [
                    sys.executable, "-m", "cityfed_client.gatekeeper",
                    "--runtime-api", f"127.0.0.1:{port}",
                    "--secret-file", secret,
                    "--config", str(city),
                    "--state", str(self.root / f"node{k}"),
                ]  # fmt: skip
            self.answering.append(self._start(argv, f"{kind}{k}"))
        time.sleep(1.0)  # each runner connects to its SuperNode before the run

    def detach(self) -> None:
        """Stop whatever answers the nodes now."""
        for proc in self.answering:
            stop_process_group(proc.pid)
            proc.wait(timeout=10)
        self.answering = []

    def stop(self) -> None:
        """Stop every process this stack started."""
        self.detach()
        for proc in reversed(self.procs):
            stop_process_group(proc.pid)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def flwr(self, *args: str) -> dict[str, Any]:
        """``flwr ARGS --format json`` against this SuperLink."""
        proc = subprocess.run(
            [executable("flwr"), *args, "--format", "json"],
            capture_output=True,
            text=True,
            env=flower_env(self.flwr_home),
            timeout=120,
            check=False,
        )
        text = proc.stdout
        answer: dict[str, Any] = json.loads(text[text.find("{") :]) if "{" in text else {}
        if proc.returncode != 0 or not answer.get("success", False):
            raise RuntimeError(f"flwr {' '.join(args[:2])}: {text[-2000:]} {proc.stderr[-2000:]}")
        return answer

    def run(self, app: Path, run_config: Path) -> float:
        """Submit one run and wait until Flower says it finished; seconds from submission."""
        started = time.perf_counter()
        answer = self.flwr("run", str(app), "bench", "--run-config", str(run_config))
        run_id = str(answer["run-id"])
        while True:
            rows = self.flwr("ls", "bench", "--run-id", run_id).get("runs") or []
            status = str(rows[0].get("status", "")) if rows else ""
            if status.startswith("finished"):
                seconds = time.perf_counter() - started
                if status != "finished:completed":
                    raise RuntimeError(f"run {run_id}: {status}")
                return seconds
            time.sleep(0.1)


def _wait_port(port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


@contextmanager
def stack(root: Path, cities: Sequence[Path], csvs: Sequence[Path]) -> Iterator[Stack]:
    """A started stack, stopped whatever happens."""
    started = Stack(root, cities, csvs)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run both apps alternately on one stack; print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1000, help="rows per city")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "deployed_round.json")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="cityfed-bench-deployed-"))
    begun = time.perf_counter()
    try:
        federation, configs, csvs = write_cities(
            root / "cities", args.cities, d=args.features, rows=args.rows, holdout=0.0
        )
        plain_app, ours_app = root / "plain-app", root / "cityfed-app"
        plain_app.mkdir()
        (plain_app / "pyproject.toml").write_text(
            PLAIN_PYPROJECT.replace("nodes = 3", f"nodes = {args.cities}").replace(
                "dim = 21", f"dim = {args.features + 1}"
            ),
            encoding="utf-8",
        )
        (plain_app / "plainapp.py").write_text(PLAIN_APP, encoding="utf-8")
        ours_app.mkdir()
        (ours_app / "pyproject.toml").write_text(app_pyproject(), encoding="utf-8")
        runs: dict[str, list[dict[str, float]]] = {"plain": [], "cityfed": []}
        with stack(root, configs, csvs) as running:
            for attempt in range(args.repeat):
                for kind in ("plain", "cityfed"):  # alternating: drift hits both alike
                    running.answer_with(kind)
                    out = root / f"{kind}-{attempt}"
                    out.mkdir()
                    config = root / f"{kind}-{attempt}.toml"
                    if kind == "plain":
                        config.write_text(f"out = {json.dumps(str(out / 'plain.json'))}\n")
                    else:
                        config.write_text(
                            f"federation = {json.dumps(str(federation))}\n"
                            f"out-dir = {json.dumps(str(out))}\n"
                            f'run-id = "bench-{attempt}"\n'
                            f"expected-cities = {args.cities}\nwait-seconds = 60.0\n"
                        )
                    seconds = running.run(plain_app if kind == "plain" else ours_app, config)
                    if kind == "plain":
                        server = json.loads((out / "plain.json").read_text())["server_seconds"]
                    else:
                        report = json.loads((out / "report.json").read_text())
                        server = float(report["timing"]["wall_seconds"])
                    runs[kind].append({"seconds": seconds, "server_seconds": server})
                    print(f"  run {attempt + 1} {kind}: {seconds:.2f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {
        kind: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for kind, rows in runs.items()
    }
    ratio = medians["cityfed"]["seconds"] / medians["plain"]["seconds"]
    table = [
        [
            kind,
            f"{medians[kind]['seconds']:.2f} s",
            f"{medians[kind]['server_seconds']:.2f} s",
            f"{medians[kind]['seconds'] / medians['plain']['seconds']:.2f}",
        ]
        for kind in ("plain", "cityfed")
    ]
    info = machine()
    print_table(
        f"One deployed round, {args.cities} cities x {args.rows:,} rows (d = {args.features}); "
        f"median of {args.repeat}",
        ["app", "submit -> finished", "ServerApp", "x plain"],
        table,
    )
    print(machine_line(info) + f"; total {time.perf_counter() - begun:.0f} s")
    write_json(
        args.json,
        {
            "command": command_line(),
            "machine": info,
            "settings": vars(args) | {"json": str(args.json)},
            "runs": runs,
            "medians": medians,
            "ratio": ratio,
        },
    )
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
