"""Files: atomic writes (readers see the old content or the new, never a part) and umasks."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

__all__ = ["PRIVATE_UMASK", "current_umask", "private_umask", "privately", "write_atomic"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The umask of everything the coordinator writes and starts: files 0600, folders 0700.
PRIVATE_UMASK = 0o077


def current_umask() -> int:
    """The umask of this process (read from ``/proc`` where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Create files 0600 and folders 0700 (and start processes so) inside the block."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def privately(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` under :func:`private_umask` (for the coordinator's commands)."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with private_umask():
            return func(*args, **kwargs)

    return wrapper


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Parameters
    ----------
    path : Path
        The file to (re)place; its folder is created if needed.
    data : bytes
        The whole new content.
    mode : int, optional
        Permission bits of the new file; default what the umask gives a new file
        (0644 under the usual 022, 0600 under :func:`private_umask`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, (0o666 & ~current_umask()) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
