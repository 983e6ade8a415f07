"""A byte-for-byte bridge from a Unix socket to a TCP port on loopback.

It runs inside the SuperLink's private network namespace
(:mod:`cityfed.ops.netns`) and listens on a socket file under the coordinator's
state folder (0700, the socket 0600), so the front in the host's namespace
reaches the SuperLink and other local users do not. TLS passes through it
unchanged: the front verifies the SuperLink's certificate end to end.

Written with asyncio rather than a tool (socat, systemd-socket-proxyd) so that the
CLI deployment needs nothing beyond Python and util-linux; systemd deployments use
``systemd-socket-proxyd`` for the same job (``deploy/systemd``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

__all__ = ["serve_bridge"]

_CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _connect(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, port: int
) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        await _close(client_writer)
        return
    try:
        await asyncio.gather(
            _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
        )
    finally:
        await _close(upstream_writer)
        await _close(client_writer)


async def serve_bridge(socket_path: Path, port: int) -> asyncio.Server:
    """Listen on ``socket_path`` and forward each connection to ``127.0.0.1:port``.

    The socket file is made 0600 whatever the umask (under the coordinator's 077
    it is born so); a stale one from a killed bridge is replaced.
    """
    socket_path.unlink(missing_ok=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _connect(reader, writer, port)

    server = await asyncio.start_unix_server(handle, path=str(socket_path))
    os.chmod(socket_path, 0o600)
    return server
