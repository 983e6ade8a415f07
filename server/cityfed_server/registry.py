"""The registry of enrolled cities: node ids, keys, enrolment and revocation times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cityfed.files import write_atomic

__all__ = ["load_registry", "save_registry"]


def load_registry(path: Path) -> dict[str, dict[str, Any]]:
    """Enrolled cities by name (revoked ones keep ``revoked_at``)."""
    try:
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return data


def save_registry(path: Path, registry: dict[str, dict[str, Any]]) -> None:
    """Write the registry atomically."""
    write_atomic(path, (json.dumps(registry, indent=2, sort_keys=True) + "\n").encode())
