"""The README's Python snippet runs as written on the demo's own model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from cityfed_server.publish import publish
from cityfed_server.training import train

from cityfed.cli.demo import DEMO_CITIES, copy_demo_data
from cityfed.config.spec import load_federation
from tests.synthetic import local_exchange

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_load_model_snippet_runs_on_the_demo_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = copy_demo_data(tmp_path / "data")
    fed = load_federation(work / "federation.toml")
    cities = [work / toml for toml in DEMO_CITIES.values()]
    publish(fed, train(fed, local_exchange(cities), run_id="readme"), tmp_path / "cityfed-demo")
    [snippet] = [block for block in _python_blocks() if "load_model(" in block]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # our own README
    model, rows = namespace["model"], namespace["rows"]
    predicted = model.predict(rows)  # type: ignore[attr-defined]
    assert predicted.shape == (1,) and np.isfinite(predicted).all()
    assert -40.0 < float(predicted[0]) < 50.0  # a temperature in °C
