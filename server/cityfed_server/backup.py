"""Backup and restore of a coordinator's state, consistent while it runs.

A backup is a new private folder with everything a coordinator needs to come
back: the SuperLink's database (enrolled node keys, runs), the model store, the
enrolment registry, the audit log and the settings, plus ``backup.json``, the
sha256 of every file. The database is copied with SQLite's online backup API (a
consistent snapshot while the SuperLink writes), the audit log under its lock;
models and the registry are written atomically, so a file copy is whole.
Restoring checks every hash first, writes into a fresh folder only, and records
itself in the restored audit log.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from cityfed.errors import CityFedError
from cityfed.files import private_umask, privately, write_atomic
from cityfed.version import __version__
from cityfed_server.audit import coordinator_audit, record
from cityfed_server.layout import CoordinatorLayout
from cityfed_server.scrub import scrub_database

__all__ = ["MANIFEST", "backup_state", "restore_state"]

#: The list of files and their hashes, at the top of a backup.
MANIFEST = "backup.json"
#: What is not state: live database files (copied by SQLite instead), pids,
#: sockets, logs, nginx's scratch space.
_SKIP = ("superlink.db", "superlink.db-wal", "superlink.db-shm", "superlink.db-journal")
_SKIP_FOLDERS = ("run", "logs", "tmp")
_AUDIT = ("audit.jsonl", "audit.jsonl.head")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_database(database: Path, target: Path) -> None:
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(target, isolation_level=None)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
    finally:
        source.close()
        copy.close()
    scrub_database(target)  # no deleted bytes travel in a backup either


def _copy_audit(state: Path, dest: Path) -> None:
    log = state / _AUDIT[0]
    if not log.exists():
        return
    with log.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # appends wait until both files are copied
        for name in _AUDIT:
            if (state / name).exists():
                shutil.copy2(state / name, dest / name)


@privately
def backup_state(layout: CoordinatorLayout, dest: Path) -> Path:
    """Copy the coordinator's state to the new folder ``dest``; returns ``dest``.

    Raises
    ------
    CityFedError
        If ``layout`` holds no coordinator or ``dest`` exists.
    """
    state = layout.state
    if not layout.config_file.is_file():
        raise CityFedError(f"{state}: not a coordinator state folder (no coordinator.json)")
    if dest.exists():
        raise CityFedError(f"{dest}: already exists; give a new folder")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(
            state,
            partial,
            ignore=shutil.ignore_patterns(*_SKIP, *_SKIP_FOLDERS, *_AUDIT, "*.sock"),
        )
        _copy_audit(state, partial)
        if layout.database.is_file():
            _copy_database(layout.database, partial / layout.database.name)
        files = {
            str(path.relative_to(partial)): _sha256(path)
            for path in sorted(partial.rglob("*"))
            if path.is_file()
        }
        manifest = {
            "cityfed": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": str(state),
            "files": files,
        }
        write_atomic(partial / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        os.replace(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    record(layout, "backup", dest=str(dest), manifest=f"sha256:{_sha256(dest / MANIFEST)}")
    return dest


def _check_backup(backup: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, str] = dict(manifest["files"])
    except FileNotFoundError:
        raise CityFedError(f"{backup}: not a CityFed backup (no {MANIFEST})") from None
    except (ValueError, KeyError, TypeError):
        raise CityFedError(f"{backup / MANIFEST}: damaged") from None
    for name, digest in files.items():
        path = backup / name
        if not path.is_file():
            raise CityFedError(f"{path}: missing from the backup")
        if _sha256(path) != digest:
            raise CityFedError(f"{path}: changed since the backup was made (sha256 differs)")
    extra = sorted(
        str(p.relative_to(backup))
        for p in backup.rglob("*")
        if p.is_file() and p.name != MANIFEST and str(p.relative_to(backup)) not in files
    )
    if extra:
        raise CityFedError(f"{backup / extra[0]}: not in the backup's manifest")
    if "coordinator.json" not in files:
        raise CityFedError(f"{backup}: the backup has no coordinator.json")
    return manifest


@privately
def restore_state(backup: Path, layout: CoordinatorLayout) -> dict[str, Any]:
    """Restore ``backup`` into the fresh folder ``layout.state``.

    Returns
    -------
    dict
        The backup's manifest.

    Raises
    ------
    CityFedError
        If the backup is damaged or incomplete (naming the file), or the target
        folder already holds something.
    """
    manifest = _check_backup(backup)
    state = layout.state
    if state.exists() and any(state.iterdir()):
        raise CityFedError(f"{state}: not empty; restore into a new folder")
    partial = state.with_name(f".{state.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with private_umask():
            shutil.copytree(backup, partial, ignore=shutil.ignore_patterns(MANIFEST))
            for path in [partial, *partial.rglob("*")]:
                os.chmod(path, 0o700 if path.is_dir() else 0o600)
        problems = coordinator_audit(CoordinatorLayout(partial)).verify()
        if problems:
            raise CityFedError(f"{backup}: its audit log does not verify: {problems[0]}")
        if state.exists():
            state.rmdir()
        os.replace(partial, state)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    record(
        layout,
        "restore",
        backup=str(backup),
        source=manifest.get("source"),
        created=manifest.get("created"),
        manifest=f"sha256:{_sha256(backup / MANIFEST)}",
    )
    return manifest
