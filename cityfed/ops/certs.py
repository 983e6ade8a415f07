"""Certificates and keys of a federation, made with ``cryptography`` (no openssl).

- a federation CA (``ca.pem`` / ``ca.key``);
- the coordinator's TLS certificate for the names cities dial (DNS or IP SANs);
- per city: the node key pair for Flower's node authentication (OpenSSH
  format, ECDSA P-384) and a client certificate signed by the CA for CityFed's
  own mutual-TLS gRPC service;
- analysts and operators: a client certificate for that service.

A client certificate says its holder's role in its organizational unit
(``OU=city``, ``analyst`` or ``operator``); the gRPC service grants by it.

Private keys are written with mode 0600, and nothing is overwritten unless asked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cityfed.errors import CityFedError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "COORDINATOR_CERT",
    "COORDINATOR_KEY",
    "INTERNAL_HOSTS",
    "ROLES",
    "CertificateAuthority",
    "city_files",
    "issue_city",
    "issue_person",
    "load_ca",
    "make_ca",
    "write_coordinator",
]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
COORDINATOR_CERT = "coordinator.pem"
COORDINATOR_KEY = "coordinator.key"

_VALIDITY = dt.timedelta(days=825)

#: The roles a client certificate can carry (its OU).
ROLES = ("city", "analyst", "operator")

#: Names always in the coordinator's certificate, for the hop inside the host.
INTERNAL_HOSTS = ("localhost", "127.0.0.1")


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing for everyone; ECDH for TLS leaves; certificate signing for the CA."""
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """The federation's CA: its key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def issue(
        self,
        subject: str,
        *,
        hosts: Sequence[str] = (),
        client: bool = False,
        role: str | None = None,
        valid_for: dt.timedelta = _VALIDITY,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new key and a certificate for it signed by this CA.

        Parameters
        ----------
        subject : str
            Common name of the certificate.
        hosts : Sequence[str]
            DNS names or IP addresses for the subject alternative names.
        client : bool
            A client certificate (mutual TLS) instead of a server one.
        role : str, optional
            The holder's role, one of :data:`ROLES`, as the subject's OU.
        valid_for : timedelta
            How long the certificate is valid (negative: already expired).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        if client:
            sans.append(x509.DNSName(subject))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        names = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
        if role is not None:
            if role not in ROLES:
                raise CityFedError(f"certs: role {role!r} is not one of {', '.join(ROLES)}")
            names.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(names))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, now + valid_for) - dt.timedelta(minutes=5))
            .not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def make_ca(name: str) -> CertificateAuthority:
    """A new self-signed federation CA."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} federation CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return CertificateAuthority(key, cert)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_free(paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    for path in paths:
        if path.exists():
            raise CityFedError(f"{path}: already exists; pass --force to replace it")


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_coordinator(
    out: Path, hosts: Sequence[str], *, name: str = "cityfed", force: bool = False
) -> list[Path]:
    """``certs init``: a new CA and the coordinator's certificate in ``out``.

    Returns
    -------
    list[Path]
        The files written.
    """
    if not hosts:
        raise CityFedError("certs init: give at least one --coordinator-host")
    paths = [out / CA_CERT, out / CA_KEY, out / COORDINATOR_CERT, out / COORDINATOR_KEY]
    _check_free(paths, force)
    ca = make_ca(name)
    # The internal hop (nginx and the flwr CLI to the SuperLink) dials loopback.
    names = list(dict.fromkeys([*hosts, *INTERNAL_HOSTS]))
    key, cert = ca.issue(hosts[0], hosts=names)
    _write(paths[0], _pem_cert(ca.cert), private=False)
    _write(paths[1], _pem_key(ca.key), private=True)
    _write(paths[2], _pem_cert(cert) + _pem_cert(ca.cert), private=False)
    _write(paths[3], _pem_key(key), private=True)
    return paths


def load_ca(directory: Path) -> CertificateAuthority:
    """Read ``ca.pem`` and ``ca.key`` from a ``certs init`` folder."""
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as exc:
        raise CityFedError(f"{exc.filename}: not found; run `cityfed certs init` first") from None
    except ValueError as exc:
        raise CityFedError(f"{directory}: not a CityFed CA ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CityFedError(f"{directory / CA_KEY}: expected an elliptic-curve key")
    return CertificateAuthority(key, cert)


def city_files(out: Path, name: str) -> dict[str, Path]:
    """Where ``certs city`` writes a city's files."""
    return {
        "node_key": out / f"{name}.node.key",
        "node_pub": out / f"{name}.node.pub",
        "client_cert": out / f"{name}.pem",
        "client_key": out / f"{name}.key",
        "ca": out / CA_CERT,
    }


def issue_city(name: str, ca_dir: Path, out: Path, *, force: bool = False) -> dict[str, Path]:
    """``certs city``: the node key pair and mTLS client certificate of a city.

    Returns
    -------
    dict[str, Path]
        The files written, by role.
    """
    if not name or any(ch in name for ch in "/\\ \t\n"):
        raise CityFedError(f"certs city: {name!r} is not a usable city name")
    ca = load_ca(ca_dir)
    files = city_files(out, name)
    _check_free(
        [files["node_key"], files["node_pub"], files["client_cert"], files["client_key"]], force
    )
    node_key = ec.generate_private_key(ec.SECP384R1())
    node_private = node_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    node_public = node_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    client_key, client_cert = ca.issue(name, client=True, role="city")
    _write(files["node_key"], node_private, private=True)
    _write(files["node_pub"], node_public + f" cityfed-{name}\n".encode(), private=False)
    _write(files["client_cert"], _pem_cert(client_cert), private=False)
    _write(files["client_key"], _pem_key(client_key), private=True)
    _write(files["ca"], _pem_cert(ca.cert), private=False)
    return files


def issue_person(
    name: str, role: str, ca_dir: Path, out: Path, *, force: bool = False
) -> dict[str, Path]:
    """``certs analyst|operator``: a client certificate for the gRPC service.

    Returns
    -------
    dict[str, Path]
        ``client_cert``, ``client_key`` and ``ca``, the files written.
    """
    if role not in ROLES or role == "city":
        raise CityFedError(f"certs: {role!r} is not a person's role (analyst or operator)")
    if not name or any(ch in name for ch in "/\\ \t\n"):
        raise CityFedError(f"certs {role}: {name!r} is not a usable name")
    ca = load_ca(ca_dir)
    files = {
        "client_cert": out / f"{name}.{role}.pem",
        "client_key": out / f"{name}.{role}.key",
        "ca": out / CA_CERT,
    }
    _check_free([files["client_cert"], files["client_key"]], force)
    key, cert = ca.issue(name, client=True, role=role)
    _write(files["client_cert"], _pem_cert(cert), private=False)
    _write(files["client_key"], _pem_key(key), private=True)
    _write(files["ca"], _pem_cert(ca.cert), private=False)
    return files
