"""``cityfed simulate`` at scale: validation in parallel or in the nodes, the check opt-in.

Many cities are validated by a pool of processes (the same facts, the same first
error as one process); beyond the scale threshold only what can be known before
a row is read is checked up front, and the pooled check runs only when asked.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import cityfed.sim.simulate as sim
from cityfed.errors import DataError, SpecError
from cityfed.sim.simulate import prepare

from .synthetic import write_federation


def _break_a_cell(config: Path, row: int) -> None:
    """Write ``twelve`` into the first cell of a data line of the city's CSV."""
    csv = config.parent / tomllib.loads(config.read_text(encoding="utf-8"))["city"]["data"]
    text = csv.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    delimiter = next(d for d in (";", "\t", ",") if d in lines[0])
    cells = lines[row].split(delimiter)
    cells[0] = "twelve"
    lines[row] = delimiter.join(cells)
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_pool_validates_many_cities_as_one_process_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: five cities, one with a bad cell
    files = write_federation(tmp_path, sizes=(120, 80, 150, 90, 60), holdout_fraction=0.25)
    serial = prepare(files.federation, files.cities)
    # Execute: the same cities through the pool
    monkeypatch.setattr(sim, "PARALLEL_CITIES", 2)
    pooled = prepare(files.federation, files.cities)
    # Assert: the same facts, in the cities' order, and the check on (few cities)
    assert pooled.facts == serial.facts and pooled.check
    assert [f.rows_train for f in pooled.facts] == [90, 60, 112, 68, 45]
    # ... and the first bad city's one-line error, as without the pool.
    bad = files.cities[3]
    _break_a_cell(bad, 7)
    with pytest.raises(DataError) as in_pool:
        prepare(files.federation, files.cities)
    monkeypatch.setattr(sim, "PARALLEL_CITIES", 100)
    with pytest.raises(DataError) as alone:
        prepare(files.federation, files.cities)
    assert str(in_pool.value) == str(alone.value)
    assert "'twelve' is not a number" in str(alone.value)


def test_at_scale_the_nodes_validate_their_rows_and_the_check_is_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: "scale" starts at two cities here; a bad cell in one city
    files = write_federation(tmp_path, sizes=(120, 80, 150))
    monkeypatch.setattr(sim, "CHECK_CITIES", 2)
    _break_a_cell(files.cities[1], 5)
    # Execute / Assert: up front, only what is known before a row is read
    plan = prepare(files.federation, files.cities)
    assert plan.facts == () and not plan.check
    # --check reads every row up front (the pooled check needs them): the bad cell is named.
    with pytest.raises(DataError, match="'twelve' is not a number"):
        prepare(files.federation, files.cities, check=True)
    # A missing column is still refused before the engine starts.
    text = files.cities[0].read_text(encoding="utf-8")
    assert 'dewpoint = "dewpoint"' in text
    files.cities[0].write_text(
        text.replace('dewpoint = "dewpoint"', 'dewpoint = "no_such_column"'), encoding="utf-8"
    )
    with pytest.raises((DataError, SpecError), match="no_such_column"):
        prepare(files.federation, files.cities)
