"""Output folders checked before any work: a run never fails at its end on ``--out``."""

from __future__ import annotations

import os
from pathlib import Path

from cityfed.errors import CityFedError

__all__ = ["check_output_dir"]


def check_output_dir(path: Path, what: str = "--out") -> Path:
    """Check, before any work, that ``path`` is or can become a folder this process writes.

    Parameters
    ----------
    path : Path
        The output folder; it need not exist yet.
    what : str
        How to name it in the message (the option that gave it).

    Returns
    -------
    Path
        ``path``, absolute.

    Raises
    ------
    CityFedError
        If ``path`` is a file, lies under a file, or its nearest existing folder
        cannot be written; the message names the path that is in the way.
    """
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise CityFedError(f"{what} {path}: is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CityFedError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CityFedError(f"{what} {path}: {existing} is not writable by this user")
    return path
