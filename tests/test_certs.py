from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from cityfed.cli.main import main
from cityfed.errors import CityFedError
from cityfed.ops.certs import issue_city, write_coordinator


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_init_writes_ca_and_coordinator_with_sans_and_private_modes(tmp_path: Path) -> None:
    # Execute
    paths = write_coordinator(tmp_path, ["coord.example.org", "10.1.2.3"])
    # Assert
    assert {p.name for p in paths} == {"ca.pem", "ca.key", "coordinator.pem", "coordinator.key"}
    for name in ("ca.key", "coordinator.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    ca, leaf = _cert(tmp_path / "ca.pem"), _cert(tmp_path / "coordinator.pem")
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"coord.example.org", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
    }
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_city_keys_are_in_flower_formats_and_signed(tmp_path: Path) -> None:
    write_coordinator(tmp_path / "ca", ["localhost"])
    files = issue_city("lisbon", tmp_path / "ca", tmp_path / "lisbon")
    private = load_ssh_private_key(files["node_key"].read_bytes(), None)
    public = load_ssh_public_key(files["node_pub"].read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()
    assert stat.S_IMODE(files["node_key"].stat().st_mode) == 0o600
    assert stat.S_IMODE(files["client_key"].stat().st_mode) == 0o600
    client = _cert(files["client_cert"])
    client.verify_directly_issued_by(_cert(tmp_path / "ca" / "ca.pem"))
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert files["ca"].read_bytes() == (tmp_path / "ca" / "ca.pem").read_bytes()


def test_existing_keys_are_not_overwritten_unless_forced(tmp_path: Path) -> None:
    write_coordinator(tmp_path, ["localhost"])
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(CityFedError, match=r"ca\.pem: already exists; pass --force"):
        write_coordinator(tmp_path, ["localhost"])
    assert (tmp_path / "ca.key").read_bytes() == before
    write_coordinator(tmp_path, ["localhost"], force=True)
    assert (tmp_path / "ca.key").read_bytes() != before
    issue_city("oslo", tmp_path, tmp_path / "oslo")
    with pytest.raises(CityFedError, match="already exists"):
        issue_city("oslo", tmp_path, tmp_path / "oslo")


def test_cli_says_what_it_wrote_and_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["certs", "init", "--out", str(tmp_path / "c"), "--coordinator-host", "localhost"])
        == 0
    )
    out = capsys.readouterr().out
    assert "ca.key (0o600)" in out and "coordinator.pem" in out
    assert (
        main(
            [
                "certs",
                "city",
                "rome",
                "--ca",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "ca.pem: not found" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("public", "local"),
    [
        ("0.0.0.0:9443", "localhost:9443"),
        ("[::]:9443", "localhost:9443"),
        ("10.0.0.5:443", "10.0.0.5:443"),
    ],
)
def test_coordinator_checks_a_wildcard_front_through_localhost(public: str, local: str) -> None:
    from cityfed_server.layout import CoordinatorConfig

    config = CoordinatorConfig(federation="f.toml", certs="certs", public=public)
    assert str(config.local_address) == local
