"""Run a server in a private network namespace, reachable only through a socket file.

``python -m cityfed.ops.isolate --socket PATH --port N -- COMMAND...`` is what
:func:`cityfed.ops.netns.private_argv` starts for the coordinator's SuperLink:
it brings the new namespace's loopback up, starts ``COMMAND`` (which listens on
``127.0.0.1:N`` there), and bridges ``PATH`` to that port until ``COMMAND`` ends,
with its exit code. SIGTERM and SIGINT are passed on to ``COMMAND``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cityfed.ops.bridge import serve_bridge
from cityfed.ops.netns import loopback_up

__all__ = ["main"]


async def _supervise(socket_path: Path, port: int, command: Sequence[str]) -> int:
    loop = asyncio.get_running_loop()
    child = subprocess.Popen(list(command), stdin=subprocess.DEVNULL)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, child.send_signal, sig)
    server = await serve_bridge(socket_path, port)
    try:
        return await asyncio.to_thread(child.wait)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        socket_path.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the command's exit code."""
    parser = argparse.ArgumentParser(prog="python -m cityfed.ops.isolate")
    parser.add_argument("--socket", type=Path, required=True, help="socket file to listen on")
    parser.add_argument("--port", type=int, required=True, help="the command's loopback port")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    try:
        loopback_up()
    except OSError as exc:
        print(f"cityfed.ops.isolate: cannot bring loopback up ({exc.strerror})", file=sys.stderr)
        return 2
    return asyncio.run(_supervise(args.socket, args.port, command))


if __name__ == "__main__":
    sys.exit(main())
