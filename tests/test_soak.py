"""The fault soak: consecutive deployed runs on loopback, each with a fault mid-round.

A deployment of its own (the fixture of tests/test_deploy.py, instantiated for this
module), so that it runs beside the other deployment tests rather than after them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed import load_model
from cityfed.ops.audit import AuditLog

from .synthetic import SyntheticFederation, write_federation
from .test_deploy import NAMES, Deployment, deploy, ok

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deploy(tmp_path_factory)


#: What can go wrong mid-round in the soak, each once (runs without a fault are
#: every other test of this module).
FAULTS = ("city", "front", "superlink")


def _kill_group(pid_file: Path) -> None:
    """SIGKILL a daemon's whole process group (a crash, not a stop)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _pooled_ridge(fed: SyntheticFederation, cities: list[str], alpha: float) -> Ridge:
    keep = [int(c.removeprefix("city")) for c in cities]
    X = np.vstack([fed.X[k] for k in keep])
    y = np.concatenate([fed.y[k] for k in keep])
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X, y)


def test_fault_soak_every_run_publishes_the_pooled_fit_of_who_finished_or_fails_clearly(
    deployment: Deployment,
) -> None:
    import random

    dep = deployment
    soak = write_federation(
        dep.root / "soak",
        sizes=(200, 150, 250),
        alpha=1.5,
        seed=7,
        # Short for a test, yet long enough for SuperNodes in Flower's reconnect backoff
        # to come back after the front restarts (20 s was not, once in CI).
        extra="reply_timeout = 45.0\nresend_after = 5.0\n",
    )
    dep.serve(soak)
    seed = int(os.environ.get("CITYFED_SOAK_SEED", "2026"))
    rng = random.Random(seed)
    faults = list(FAULTS)
    rng.shuffle(faults)
    counts: dict[str, int] = {}
    published: dict[str, str] = {}  # run -> sha256 of its model.pb
    for fault in faults:
        # Execute: a run, and a fault a random moment after it was submitted
        before = {p.name for p in (dep.state / "models").iterdir()}
        run = subprocess.Popen(
            [sys.executable, "-m", "cityfed.cli", "run", soak.federation, "--coordinator",
             dep.state, "--json", "--wait", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )  # fmt: skip
        time.sleep(rng.uniform(2.0, 8.0))
        victim = f"city{rng.randrange(3)}"
        if fault == "city":
            _kill_group(dep.node_state(victim) / "supernode.pid")
            _kill_group(dep.node_state(victim) / "gatekeeper.pid")
        elif fault == "front":
            _kill_group(dep.state / "run" / "nginx-master.pid")
            time.sleep(2.0)
            ok(dep.coordinator_start())  # what systemd's Restart= would do
        elif fault == "superlink":
            _kill_group(dep.state / "run" / "superlink.pid")
        out, err = run.communicate(timeout=300)
        # Assert: a model equal to the pooled fit of the cities that finished, or a
        # clear one-line failure and no model folder left behind
        if run.returncode == 0:
            report = json.loads(out)
            cities = list(report["model"]["cities"])
            assert len(cities) >= 2 and (fault == "city" or cities == ["city0", "city1", "city2"])
            if fault == "city" and victim in cities:
                assert report["cities"][victim]["status"] == "ok"  # it answered before dying
            store = dep.state / "models" / report["run_id"]
            deployed = load_model(store / "model.pb")
            X = soak.X_pooled
            reference = _pooled_ridge(soak, cities, alpha=1.5)
            tolerance = 1e-6 * np.std(soak.y_pooled)
            frame = pd.DataFrame(X, columns=NAMES)
            assert np.max(np.abs(deployed.predict(frame) - reference.predict(X))) <= tolerance
            rows = sum(len(soak.y[int(c.removeprefix("city"))]) for c in cities)
            assert report["model"]["training_rows"] == rows
            published[report["run_id"]] = hashlib.sha256(
                (store / "model.pb").read_bytes()
            ).hexdigest()
            outcome = f"{fault}: published by {len(cities)} cities"
        else:
            message = err.strip().splitlines()[-1] if err.strip() else ""
            assert fault == "superlink", (fault, out[-500:], err[-2000:])
            assert "is lost: the SuperLink stopped during the run" in message, err[-2000:]
            assert "Traceback" not in err
            after = {p.name for p in (dep.state / "models").iterdir()}
            assert after == before  # no folder of the lost run
            failed = [e for e in AuditLog(dep.state / "audit.jsonl").entries()][-1]
            assert failed["kind"] == "run-failed" and "is lost" in failed["reason"]
            outcome = f"{fault}: failed clearly"
        counts[outcome] = counts.get(outcome, 0) + 1
        # Repair what the fault broke (an operator, or systemd, would).
        ok(dep.coordinator_start())
        if fault == "city":
            ok(dep.start_city(victim, soak.cities[int(victim.removeprefix("city"))]))
    # No earlier model was lost or changed, no folder without a model came back
    # (a ServerApp outliving its SuperLink must not recreate a lost run's folder),
    # and the audit log verifies.
    time.sleep(5)
    assert all((d / "model.pb").is_file() for d in (dep.state / "models").iterdir())
    for run_id, digest in published.items():
        model = dep.state / "models" / run_id / "model.pb"
        assert hashlib.sha256(model.read_bytes()).hexdigest() == digest
    audit = AuditLog(dep.state / "audit.jsonl")
    assert audit.verify() == []
    recorded = {e["run"] for e in audit.entries() if e["kind"] == "model-published"}
    assert set(published) <= recorded
    print(f"\nfault soak (seed {seed}): {counts}")
