"""A private network namespace for a process, and commands that join it.

Flower's SuperLink serves its Control and Runtime APIs without authentication on
the port it listens on; on a shared host, any local user reaching that port can
submit runs or enrol nodes. Started in a network namespace of its own, the
SuperLink's ``127.0.0.1`` is a loopback no other user's process shares: the
front reaches it through a Unix socket in the coordinator's private state folder
(:mod:`cityfed.ops.bridge`), and the operator's ``flwr`` commands run inside the
namespace (:func:`join_argv`).

As root the namespace is a plain one (``unshare --net``); as any other user it
sits in a user namespace the operator owns (``unshare --user --map-root-user
--net``), which only that user (and root) can enter. util-linux's ``unshare`` and
``nsenter`` do the system calls: Python 3.11 has no ``os.setns``/``os.unshare``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cityfed.errors import CityFedError

__all__ = [
    "check_private_network",
    "join_argv",
    "loopback_up",
    "private_argv",
    "same_network",
]

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, flags, padding to 40 bytes


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/bin/{name}") if Path(p).exists()), None
    )
    if found is None:
        raise CityFedError(f"{name}: not found (it comes with util-linux)")
    return found


def private_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run in a new network namespace (and user namespace unless root)."""
    flags = ["--net"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--net"]
    return [_tool("unshare"), *flags, "--", *argv]


def check_private_network() -> None:
    """Fail with the way out unless this user can create a private network namespace."""
    try:
        proc = subprocess.run(
            private_argv(["true"]), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        detail = str(exc)
    else:
        if proc.returncode == 0:
            return
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    raise CityFedError(
        f"cannot give the SuperLink a private network namespace ({detail}); run as root, "
        "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
        "or kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu), or pass "
        "--no-private-network where the host's network is private already (a container)"
    )


def _namespace(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def same_network(pid: int) -> bool:
    """True if process ``pid`` shares this process's network namespace."""
    return _namespace(pid, "net") == _namespace("self", "net")


def join_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run in the network namespace of process ``pid`` (as is, if it is ours).

    Raises
    ------
    CityFedError
        If ``pid`` is not running or its namespaces cannot be read (another user's).
    """
    try:
        if same_network(pid):
            return list(argv)
        own_user = _namespace(pid, "user") == _namespace("self", "user")
    except OSError as exc:
        raise CityFedError(f"process {pid}: cannot read its namespaces ({exc.strerror})") from None
    enter = ["--net"] if own_user else ["--user", "--net", "--preserve-credentials"]
    return [_tool("nsenter"), f"--target={pid}", *enter, "--", *argv]


def loopback_up() -> None:
    """Bring ``lo`` up in this (new) network namespace; needs CAP_NET_ADMIN there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))
