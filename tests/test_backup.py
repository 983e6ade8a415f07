"""Backup and restore of a coordinator's state folder (no processes)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cityfed_server.audit import coordinator_audit, record
from cityfed_server.backup import MANIFEST, backup_state, restore_state
from cityfed_server.layout import CoordinatorLayout

from cityfed.errors import CityFedError


@pytest.fixture
def live(tmp_path: Path) -> tuple[CoordinatorLayout, sqlite3.Connection]:
    """A state folder as a running coordinator has it, its database open in WAL mode."""
    layout = CoordinatorLayout(tmp_path / "state")
    (layout.models / "run-1").mkdir(parents=True)
    (layout.state / "run").mkdir()
    (layout.state / "logs").mkdir()
    layout.config_file.write_text('{"federation": "f.toml"}')
    layout.enrolment.write_text('{"EWR": {"node_id": "7"}}')
    (layout.models / "run-1" / "model.pb").write_bytes(b"model")
    (layout.state / "run" / "superlink.pid").write_text("1\n")
    (layout.state / "logs" / "superlink.log").write_text("log\n")
    record(layout, "enrol", city="EWR")
    db = sqlite3.connect(layout.database, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE node (id INTEGER)")
    db.execute("INSERT INTO node VALUES (42)")
    return layout, db


def test_a_backup_of_a_live_state_restores_into_a_fresh_folder(
    tmp_path: Path, live: tuple[CoordinatorLayout, sqlite3.Connection]
) -> None:
    layout, db = live
    # Execute: back up while the database is open and written, then restore
    backup = backup_state(layout, tmp_path / "backup")
    db.execute("INSERT INTO node VALUES (43)")  # after the snapshot
    db.close()
    target = CoordinatorLayout(tmp_path / "restored")
    manifest = restore_state(backup, target)
    # Assert: the snapshot, whole and private; pids and logs are not state
    assert manifest["source"] == str(layout.state)
    assert not list(backup.glob("superlink.db-*")) and not (backup / "run").exists()
    assert not (backup / "logs").exists()
    assert (target.models / "run-1" / "model.pb").read_bytes() == b"model"
    assert json.loads(target.enrolment.read_text()) == {"EWR": {"node_id": "7"}}
    restored = sqlite3.connect(target.database)
    assert restored.execute("SELECT id FROM node").fetchall() == [(42,)]
    restored.close()
    for path in [target.state, *target.state.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path
    # Both audit logs verify: the source says it was backed up, the copy restored.
    assert coordinator_audit(layout).verify() == []
    assert [e["kind"] for e in coordinator_audit(layout).entries()] == ["enrol", "backup"]
    assert coordinator_audit(target).verify() == []
    assert [e["kind"] for e in coordinator_audit(target).entries()] == ["enrol", "restore"]


def test_a_changed_missing_or_added_file_is_refused_by_name(
    tmp_path: Path, live: tuple[CoordinatorLayout, sqlite3.Connection]
) -> None:
    layout, db = live
    db.close()
    backup = backup_state(layout, tmp_path / "backup")
    model = backup / "models" / "run-1" / "model.pb"
    cases = [
        (lambda: model.write_bytes(b"other"), "model.pb: changed since the backup"),
        (lambda: model.unlink(), "model.pb: missing from the backup"),
        (lambda: (backup / "extra.txt").write_text("x"), "extra.txt: not in the backup's"),
    ]
    original = model.read_bytes()
    for k, (damage, message) in enumerate(cases):
        model.write_bytes(original)
        (backup / "extra.txt").unlink(missing_ok=True)
        damage()
        target = tmp_path / f"restored-{k}"
        with pytest.raises(CityFedError, match=message):
            restore_state(backup, CoordinatorLayout(target))
        assert not target.exists()  # nothing half-written
        assert not list(tmp_path.glob(".restored*"))


def test_restore_never_overwrites_and_backup_never_reuses_a_folder(
    tmp_path: Path, live: tuple[CoordinatorLayout, sqlite3.Connection]
) -> None:
    layout, db = live
    db.close()
    backup = backup_state(layout, tmp_path / "backup")
    with pytest.raises(CityFedError, match="not empty; restore into a new folder"):
        restore_state(backup, layout)
    with pytest.raises(CityFedError, match="already exists"):
        backup_state(layout, backup)
    (backup / MANIFEST).unlink()
    with pytest.raises(CityFedError, match="not a CityFed backup"):
        restore_state(backup, CoordinatorLayout(tmp_path / "new"))
    with pytest.raises(CityFedError, match="not a coordinator state folder"):
        backup_state(CoordinatorLayout(tmp_path / "nothing"), tmp_path / "b2")
