"""Addresses and TLS checks against the coordinator's front door."""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path

from cityfed.errors import CityFedError

__all__ = ["Address", "https_request", "parse_address", "probe_coordinator", "unix_https_request"]


class Address(tuple[str, int]):
    """``host:port`` (``[v6]:port`` for IPv6)."""

    __slots__ = ()

    def __new__(cls, host: str, port: int) -> Address:
        """An address from its host and port."""
        return super().__new__(cls, (host, port))

    @property
    def host(self) -> str:
        """Host name or IP address."""
        return self[0]

    @property
    def port(self) -> int:
        """TCP port."""
        return self[1]

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, *, what: str = "address") -> Address:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``."""
    value = text.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_text = value.rpartition(":")
    if not host or not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CityFedError(f"{what}: expected HOST:PORT (e.g. 127.0.0.1:9443), got {text!r}")
    return Address(host, int(port_text))


def https_request(
    address: Address,
    path: str,
    ca: Path,
    *,
    method: str = "GET",
    timeout: float = 5.0,
) -> int:
    """Status code of one HTTPS request verified against ``ca``."""
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(address.host, address.port, context=context, timeout=timeout)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        return conn.getresponse().status
    finally:
        conn.close()


class _UnixHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS over a Unix socket, the certificate checked for ``host``."""

    def __init__(
        self, socket_path: Path, host: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, context=context, timeout=timeout)
        self._socket_path = socket_path
        self._tls = context

    def connect(self) -> None:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(self.timeout)
        try:
            raw.connect(str(self._socket_path))
        except OSError:
            raw.close()
            raise
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def unix_https_request(
    socket_path: Path, path: str, ca: Path, *, tls_name: str, timeout: float = 5.0
) -> int:
    """Status code of one HTTPS GET through the socket file ``socket_path``.

    The server's certificate is verified against ``ca`` for the name ``tls_name``.
    """
    context = ssl.create_default_context(cafile=str(ca))
    conn = _UnixHTTPSConnection(socket_path, tls_name, context, timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def probe_coordinator(address: Address, ca: Path, timeout: float = 5.0) -> None:
    """Check that the coordinator answers ``/health`` over TLS signed by ``ca``.

    Raises
    ------
    CityFedError
        With what went wrong: unreachable, a certificate not from the federation
        CA, or something else answering.
    """
    if not ca.is_file():
        raise CityFedError(f"{ca}: CA certificate not found (use the ca.pem of your federation)")
    try:
        status = https_request(address, "/health", ca, timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        raise CityFedError(
            f"coordinator {address}: TLS verification failed against {ca.name} "
            f"({exc.verify_message}); is this the federation's CA and the coordinator's name?"
        ) from None
    except ssl.SSLError as exc:
        raise CityFedError(f"coordinator {address}: TLS handshake failed ({exc.reason})") from None
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise CityFedError(f"coordinator {address}: not reachable ({exc})") from None
    if status != 200:
        raise CityFedError(f"coordinator {address}: /health answered HTTP {status}")
