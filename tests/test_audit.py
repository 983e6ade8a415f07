"""Hash-chained audit logs: tampering, reordering and deletion are detected."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cityfed.ops.audit import AuditLog


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "audit" / "city.jsonl")
    for k in range(5):
        audit.append("answer", run="r1", phase="newton", round=k, rows=120)
    return audit


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_an_intact_log_verifies_and_is_private(log: AuditLog) -> None:
    assert log.verify() == []
    assert [e["seq"] for e in log.entries()] == [0, 1, 2, 3, 4]
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700


def test_a_changed_value_is_found_at_its_line(log: AuditLog) -> None:
    lines = _lines(log)
    entry = json.loads(lines[2])
    entry["rows"] = 1  # the hash stays as it was
    lines[2] = json.dumps(entry, sort_keys=True)
    _write(log, lines)
    [problem] = log.verify()
    assert problem.line == 3 and "changed" in problem.message


def test_a_recomputed_hash_still_breaks_the_chain(log: AuditLog) -> None:
    from cityfed.ops.audit import entry_hash

    lines = _lines(log)
    entry = json.loads(lines[1])
    entry["phase"] = "moments"
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry, sort_keys=True)
    _write(log, lines)
    problems = log.verify()
    assert problems[0].line == 3 and "chain" in problems[0].message


def test_swapped_lines_are_found(log: AuditLog) -> None:
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    problems = log.verify()
    assert problems and problems[0].line == 2 and "missing" in problems[0].message


def test_a_deleted_line_is_found(log: AuditLog) -> None:
    lines = _lines(log)
    del lines[3]
    _write(log, lines)
    problems = log.verify()
    assert problems[0].line == 4 and "entries missing" in problems[0].message


def test_deleting_the_last_lines_is_found_by_the_head(log: AuditLog) -> None:
    _write(log, _lines(log)[:3])
    [problem] = log.verify()
    assert "removed" in problem.message and "entry 4" in problem.message


def test_appending_after_verification_continues_the_chain(log: AuditLog) -> None:
    entry = log.append("refusal", run="r2", reason="not agreed")
    assert entry["seq"] == 5 and log.verify() == []


def test_cityfed_city_audit_verify_names_the_tampered_line(
    log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    from cityfed.cli.main import main

    state = ["--state", str(log.path.parent)]
    log.path.rename(log.path.with_name("audit.jsonl"))
    log.head.rename(log.path.with_name("audit.jsonl.head"))
    audit = AuditLog(log.path.with_name("audit.jsonl"))
    assert main(["city", "audit", "verify", *state]) == 0
    assert "intact (5 entries)" in capsys.readouterr().out
    lines = _lines(audit)
    lines[3] = lines[3].replace('"rows": 120', '"rows": 7')
    _write(audit, lines)
    assert main(["city", "audit", "verify", *state]) == 1
    assert "line 4: content changed" in capsys.readouterr().err
    assert main(["city", "audit", "show", *state]) == 0
    assert "newton" in capsys.readouterr().out
