"""A server in a private network namespace, reachable only through its socket file."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cityfed.errors import CityFedError
from cityfed.ops.netns import check_private_network, join_argv, private_argv

try:
    check_private_network()
    PRIVATE = True
except CityFedError:
    PRIVATE = False

pytestmark = pytest.mark.skipif(not PRIVATE, reason="no network namespaces here")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(self._path))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_isolated_server_answers_through_its_socket_only(tmp_path: Path) -> None:
    # Prepare: an HTTP server on 127.0.0.1:PORT inside its own network namespace
    port, sock = _free_port(), tmp_path / "server.sock"
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("inside")
    argv = private_argv(
        [sys.executable, "-m", "cityfed.ops.isolate", "--socket", str(sock), "--port",
         str(port), "--", sys.executable, "-m", "http.server", str(port), "--bind",
         "127.0.0.1", "--directory", str(tmp_path / "www")]
    )  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        body = b""
        while time.monotonic() < deadline and not body:
            try:
                conn = _UnixHTTPConnection(sock)
                conn.request("GET", "/index.html")
                body = conn.getresponse().read()
            except OSError:
                time.sleep(0.2)
        # Assert: the socket reaches it; the host's loopback does not; join_argv does
        assert body == b"inside"
        assert sock.stat().st_mode & 0o777 == 0o600
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        inside = subprocess.run(
            join_argv(proc.pid, [sys.executable, "-c",
                      f"import socket; socket.create_connection(('127.0.0.1', {port}))"]),
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert inside.returncode == 0, inside.stderr
        assert join_argv(os.getpid(), ["true"]) == ["true"]  # our own namespace: as is
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    # SIGTERM reached the server; the socket file is gone.
    assert code == -signal.SIGTERM or code != 0
    assert not sock.exists()


def test_join_argv_of_a_dead_process_is_a_clear_error() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(CityFedError, match=f"process {proc.pid}: cannot read its namespaces"):
        join_argv(proc.pid, ["true"])
