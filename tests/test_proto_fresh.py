"""The committed generated code equals what protoc makes from protos/ now."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    assert protos
    plugin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_grpc_out={tmp_path}",
            *map(str, protos),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated
    for rel in generated:
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is not committed; run scripts/gen_protos.sh"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), (
            f"{rel} is stale; run scripts/gen_protos.sh"
        )
    shutil.rmtree(tmp_path, ignore_errors=True)
