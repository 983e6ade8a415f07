"""Enrolment requests: a city asks, the operator approves or rejects.

Requests wait in ``enrolment-requests.json`` under the coordinator's state. An
approval registers the requested key with the running SuperLink
(:func:`cityfed_server.enrolment.enrol`, nothing restarts) and the city's node
can join the next run; both outcomes go to the coordinator's audit log.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from cityfed.errors import CityFedError
from cityfed.files import privately, write_atomic
from cityfed_server.audit import record
from cityfed_server.enrolment import enrol
from cityfed_server.layout import CoordinatorLayout
from cityfed_server.registry import load_registry

__all__ = ["approve", "enrolments", "reject", "request_enrolment", "revoke_certificate"]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _path(layout: CoordinatorLayout) -> Path:
    return layout.state / "enrolment-requests.json"


def _load(layout: CoordinatorLayout) -> dict[str, dict[str, Any]]:
    try:
        data: dict[str, dict[str, Any]] = json.loads(_path(layout).read_text())
    except FileNotFoundError:
        return {}
    return data


def _save(layout: CoordinatorLayout, requests: dict[str, dict[str, Any]]) -> None:
    write_atomic(_path(layout), (json.dumps(requests, indent=2, sort_keys=True) + "\n").encode())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _check_key(text: str) -> str:
    try:
        key = load_ssh_public_key(text.strip().encode())
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CityFedError(
            "node_public_key: not an OpenSSH elliptic-curve public key (send the "
            "NAME.node.pub that `cityfed certs city` wrote)"
        )
    return text.strip()


@privately
def request_enrolment(
    layout: CoordinatorLayout, name: str, public_key: str, contact: str, *, by: str
) -> dict[str, Any]:
    """Record a city's request to be enrolled; returns the request."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise CityFedError(f"name: {name[:80]!r} is not a city name (letters, digits, - _ .)")
    if len(contact) > 200:
        raise CityFedError("contact: longer than 200 characters")
    key = _check_key(public_key)
    enrolled = load_registry(layout.enrolment).get(name)
    if enrolled and not enrolled.get("revoked_at"):
        raise CityFedError(f"name: city {name!r} is already enrolled")
    requests = _load(layout)
    entry = {
        "public_key": key,
        "contact": contact,
        "requested_at": _now(),
        "status": "requested",
        "by": by,
        "reason": "",
    }
    requests[name] = entry
    _save(layout, requests)
    digest = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    record(layout, "enrolment-requested", city=name, public_key=digest, by=by)
    return entry


def enrolments(layout: CoordinatorLayout) -> dict[str, dict[str, Any]]:
    """Requests and enrolled cities by name, each with its ``status``."""
    found: dict[str, dict[str, Any]] = {}
    for name, entry in _load(layout).items():
        found[name] = dict(entry)
    for name, entry in load_registry(layout.enrolment).items():
        found[name] = {
            **found.get(name, {}),
            "public_key": entry.get("public_key", ""),
            "node_id": str(entry.get("node_id", "")),
            "status": "revoked" if entry.get("revoked_at") else "enrolled",
        }
    return found


@privately
def approve(layout: CoordinatorLayout, name: str) -> dict[str, Any]:
    """Enrol the key a city requested; returns the registry entry."""
    requests = _load(layout)
    entry = requests.get(name)
    if entry is None or entry.get("status") != "requested":
        raise CityFedError(f"name: no pending enrolment request of {name!r}")
    key_file = layout.state / "requests" / f"{name}.node.pub"
    key_file.parent.mkdir(mode=0o700, exist_ok=True)
    write_atomic(key_file, (entry["public_key"] + "\n").encode())
    enrolled = enrol(layout, name, key_file)
    entry["status"] = "enrolled"
    _save(layout, requests)
    record(layout, "enrolment-approved", city=name, node_id=enrolled["node_id"])
    return enrolled


@privately
def reject(layout: CoordinatorLayout, name: str, reason: str) -> dict[str, Any]:
    """Turn a pending request down; returns it."""
    requests = _load(layout)
    entry = requests.get(name)
    if entry is None or entry.get("status") != "requested":
        raise CityFedError(f"name: no pending enrolment request of {name!r}")
    entry["status"], entry["reason"] = "rejected", reason[:200]
    _save(layout, requests)
    record(layout, "enrolment-rejected", city=name, reason=reason[:200])
    return entry


@privately
def revoke_certificate(layout: CoordinatorLayout, cert_pem: bytes) -> int:
    """Refuse a client certificate at the gRPC service from its next call on; its serial.

    The serial goes to ``revoked-certs.json``, which the service re-reads when it
    changes (no restart).
    """
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CityFedError("not a PEM certificate") from None
    path = layout.state / "revoked-certs.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {"serials": []}
    serials = [str(s) for s in data.get("serials", [])]
    if str(cert.serial_number) not in serials:
        serials.append(str(cert.serial_number))
    write_atomic(path, (json.dumps({"serials": serials}, indent=2) + "\n").encode())
    subject = cert.subject.rfc4514_string()
    record(layout, "certificate-revoked", subject=subject, serial=f"{cert.serial_number:x}")
    return int(cert.serial_number)
