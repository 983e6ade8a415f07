"""Enrolment of cities: whose node keys the SuperLink admits.

The SuperLink keeps the registered keys (and refuses every other node); this
module keeps the human side beside it: which city a node id belongs to, when it
was enrolled and when revoked.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from cityfed.errors import CityFedError
from cityfed.files import privately
from cityfed_server.audit import record
from cityfed_server.flwr_cli import CONNECTION, flwr_json
from cityfed_server.layout import CoordinatorLayout, control_prefix
from cityfed_server.registry import load_registry, save_registry

__all__ = ["active_cities", "enrol", "revoke"]


def active_cities(layout: CoordinatorLayout) -> list[str]:
    """Names of the cities enrolled and not revoked."""
    return sorted(n for n, e in load_registry(layout.enrolment).items() if not e.get("revoked_at"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@privately
def enrol(layout: CoordinatorLayout, name: str, public_key: Path) -> dict[str, Any]:
    """Register a city's node key with the SuperLink.

    Raises
    ------
    CityFedError
        If the key is not an OpenSSH elliptic-curve public key, the name is
        already enrolled, or the SuperLink refuses.
    """
    try:
        text = public_key.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CityFedError(f"{public_key}: public key not found") from None
    try:
        key = load_ssh_public_key(text.encode())
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CityFedError(
            f"{public_key.name}: not an OpenSSH elliptic-curve public key "
            "(use the NAME.node.pub written by `cityfed certs city`)"
        )
    registry = load_registry(layout.enrolment)
    existing = registry.get(name)
    if existing and not existing.get("revoked_at"):
        raise CityFedError(
            f"city {name!r} is already enrolled (node {existing['node_id']}); revoke it first"
        )
    answer = flwr_json(
        ["supernode", "register", str(public_key), CONNECTION, "--name", name],
        layout.flwr_home,
        prefix=control_prefix(layout),
    )
    entry = {
        "node_id": str(answer["node-id"]),
        "public_key": text,
        "enrolled_at": _now(),
        "revoked_at": None,
    }
    registry[name] = entry
    save_registry(layout.enrolment, registry)
    key_digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    record(layout, "enrol", city=name, node_id=entry["node_id"], public_key=key_digest)
    return entry


@privately
def revoke(layout: CoordinatorLayout, name: str) -> dict[str, Any]:
    """Unregister a city's node: the SuperLink refuses it from now on."""
    registry = load_registry(layout.enrolment)
    entry = registry.get(name)
    if entry is None or entry.get("revoked_at"):
        raise CityFedError(f"city {name!r} is not enrolled")
    flwr_json(
        ["supernode", "unregister", str(entry["node_id"]), CONNECTION],
        layout.flwr_home,
        prefix=control_prefix(layout),
    )
    entry["revoked_at"] = _now()
    save_registry(layout.enrolment, registry)
    record(layout, "revoke", city=name, node_id=entry["node_id"])
    return entry
