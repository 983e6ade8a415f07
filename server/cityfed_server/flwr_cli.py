"""The ``flwr`` command line, as the coordinator uses it (JSON output only).

The Control API is reached from the coordinator host only, on the SuperLink's
loopback (inside its private network namespace: the caller passes the
``nsenter`` prefix of :func:`cityfed_server.layout.control_prefix`); the
connection lives in ``$FLWR_HOME/config.toml`` under the coordinator's state.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cityfed.errors import CityFedError
from cityfed.ops.processes import executable, flower_env

__all__ = ["CONNECTION", "flwr_json", "write_connection"]

#: Name of the connection in the coordinator's flwr config.
CONNECTION = "coordinator"


def write_connection(flwr_home: Path, port: int, ca: Path) -> None:
    """Point the flwr CLI at the SuperLink on loopback, verified with ``ca``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "127.0.0.1:{port}"\n'
        f"root-certificates = {json.dumps(str(ca))}\n",
        encoding="utf-8",
    )


def flwr_json(
    args: Sequence[str],
    flwr_home: Path,
    *,
    prefix: Sequence[str] = (),
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Run ``PREFIX flwr ARGS --format json`` and return its JSON answer.

    Raises
    ------
    CityFedError
        If flwr fails or answers ``success: false``.
    """
    command = [*prefix, executable("flwr"), *args, "--format", "json"]
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=flower_env(flwr_home),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CityFedError(f"flwr {' '.join(args[:2])}: no answer within {timeout:g} s") from None
    text = proc.stdout.strip()
    start = text.find("{")
    try:
        answer: dict[str, Any] = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        answer = {}
    if proc.returncode != 0 or not answer.get("success", False):
        detail = answer.get("error-message") or (proc.stderr or proc.stdout).strip().splitlines()
        if isinstance(detail, list):
            detail = detail[-1] if detail else f"exit code {proc.returncode}"
        raise CityFedError(f"flwr {' '.join(args[:2])}: {detail}")
    return answer
