"""`cityfed demo --deploy`: the whole deployment on loopback, and nothing left running.

In a file of its own so that it runs beside the deployment module (tests/test_deploy.py)
rather than after it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .test_deploy import _processes_mentioning, cityfed, ok

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]


def test_demo_deploy_runs_and_leaves_no_process(tmp_path: Path) -> None:
    before = {line.split(":")[0] for line in _processes_mentioning("cityfed-deploy-demo-")}
    proc = ok(cityfed("demo", "--deploy", "--out", tmp_path / "demo"))
    assert "Mutual benefit" in proc.stdout
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["model"]["rounds"] == 1
    assert sorted(report["model"]["cities"]) == ["EWR", "JFK", "LGA", "NEW"]
    assert (tmp_path / "demo" / "model.pb").is_file()
    left = {line.split(":")[0] for line in _processes_mentioning("cityfed-deploy-demo-")} - before
    assert not left
