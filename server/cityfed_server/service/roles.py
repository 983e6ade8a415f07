"""Who is calling: the role and name in a client certificate, and what was revoked.

gRPC has verified the certificate against the federation CA before a handler
runs; this module reads the verified certificate from the call's auth context
and refuses those that were withdrawn since: a city whose enrolment was revoked,
and any certificate whose serial number is in ``revoked-certs.json`` under the
coordinator's state. Both files are read again when they change, so a revocation
needs no restart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["Caller", "RefusedError", "Revocations", "Role", "caller_of"]

Role = Literal["city", "analyst", "operator"]
_ROLES: dict[str, Role] = {"city": "city", "analyst": "analyst", "operator": "operator"}


class RefusedError(Exception):
    """A caller who may not call: why (the status is PERMISSION_DENIED or UNAUTHENTICATED)."""

    def __init__(self, message: str, *, unauthenticated: bool = False) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated


@dataclass(frozen=True)
class Caller:
    """The holder of a verified client certificate."""

    name: str
    role: Role
    serial: int


class _Watched:
    """A JSON file re-read whenever its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._data: object = None

    def data(self) -> object:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._data = None, None
            return None
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                self._data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._data = None  # half-written: keep refusing nothing new
            self._stamp = stamp
        return self._data


class Revocations:
    """Revoked cities (from the enrolment registry) and revoked certificate serials."""

    def __init__(self, registry: Path, revoked_certs: Path) -> None:
        self._registry = _Watched(registry)
        self._certs = _Watched(revoked_certs)

    def city_revoked(self, name: str) -> bool:
        """True if the city was enrolled and then revoked."""
        data = self._registry.data()
        entry = data.get(name) if isinstance(data, dict) else None
        return isinstance(entry, dict) and bool(entry.get("revoked_at"))

    def serial_revoked(self, serial: int) -> bool:
        """True if the certificate's serial number is listed as revoked."""
        data = self._certs.data()
        serials = data.get("serials", []) if isinstance(data, dict) else []
        return isinstance(serials, list) and (str(serial) in map(str, serials))


def caller_of(auth_context: dict[str, list[bytes]], revocations: Revocations) -> Caller:
    """The caller of one RPC, from gRPC's auth context.

    Raises
    ------
    RefusedError
        No verified certificate, a certificate without a known role, or one revoked.
    """
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        raise RefusedError(
            "a client certificate from the federation CA is required", unauthenticated=True
        )
    cert = x509.load_pem_x509_certificate(pems[0])
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = str(names[0].value) if names else ""
    # Certificates of cities made before roles existed carry no OU: they are cities'.
    role = _ROLES.get(str(units[0].value) if units else "city")
    if not name or role is None:
        raise RefusedError(
            "the client certificate names no CityFed role (OU city, analyst, operator)"
        )
    if revocations.serial_revoked(cert.serial_number):
        raise RefusedError(
            f"the certificate of {name!r} (serial {cert.serial_number:x}) was revoked"
        )
    if role == "city" and revocations.city_revoked(name):
        raise RefusedError(f"city {name!r} was revoked by the coordinator")
    return Caller(name=name, role=role, serial=cert.serial_number)
