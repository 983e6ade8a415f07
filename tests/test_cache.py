"""A city reads its data once per run: the harmonised-data cache on the city host."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cityfed_client.node_config import default_state
from cityfed_server.training import train

import cityfed.data.cache as cache_module
import cityfed.data.harmonise as harmonise_module
from cityfed.config.spec import CitySpec, FederationSpec, load_city, load_federation
from cityfed.data.cache import DataCache
from cityfed.data.city_data import CityData, load_city_data

from .synthetic import local_exchange, write_federation


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of a city's data source (all of them go through ``frames``), by city name."""
    calls: list[str] = []
    reading = harmonise_module.frames

    def counting(city: CitySpec, *args: Any) -> Any:
        calls.append(city.name)
        return reading(city, *args)

    monkeypatch.setattr(harmonise_module, "frames", counting)
    return calls


def _assert_same(a: CityData, b: CityData) -> None:
    for name in ("X_train", "y_train", "X_holdout", "y_holdout"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.city, a.features, a.rows_read, dict(a.drop_reasons)) == (
        b.city,
        b.features,
        b.rows_read,
        dict(b.drop_reasons),
    )


def test_logistic_run_parses_each_csv_once(tmp_path: Path, parses: list[str]) -> None:
    # Prepare: a Newton run of several rounds plus the evaluation
    files = write_federation(
        tmp_path, task="classification", model="logistic", holdout_fraction=0.2
    )
    fed = load_federation(files.federation)
    # Execute
    result = train(fed, local_exchange(files.cities), run_id="r")
    # Assert
    assert result.model.rounds >= 3
    assert sorted(parses) == sorted(load_city(p).name for p in files.cities)
    # Each city's entry is gone from its node's cache after its evaluation.
    for path in files.cities:
        assert list((default_state(path) / "cache").iterdir()) == []


def test_without_a_folder_every_load_reads_the_data(tmp_path: Path, parses: list[str]) -> None:
    files = write_federation(tmp_path)
    fed, city = load_federation(files.federation), load_city(files.cities[0])
    uncached = DataCache(None, "r")
    _assert_same(uncached.load(city, fed), uncached.load(city, fed))
    assert parses == [city.name, city.name]


def test_hit_equals_a_fresh_read_and_entries_are_private(tmp_path: Path, parses: list[str]) -> None:
    files = write_federation(tmp_path / "fed", holdout_fraction=0.3)
    fed, city = load_federation(files.federation), load_city(files.cities[1])
    cache = DataCache(tmp_path / "cache", "run-1")
    first = cache.load(city, fed)
    second = cache.load(city, fed)
    _assert_same(first, second)
    assert parses == [city.name]
    _assert_same(second, load_city_data(city, fed))
    folder = tmp_path / "cache"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files_in = [p for p in folder.rglob("*") if p.is_file()]
    assert files_in and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files_in)


def test_another_run_a_changed_file_or_spec_is_a_miss(tmp_path: Path, parses: list[str]) -> None:
    files = write_federation(tmp_path / "fed")
    fed, city = load_federation(files.federation), load_city(files.cities[0])
    folder = tmp_path / "cache"
    DataCache(folder, "run-1").load(city, fed)
    DataCache(folder, "run-2").load(city, fed)  # another run
    assert len(parses) == 2
    # The same run after the city edited its CSV: the new rows, not the cached ones.
    text = city.data.read_text(encoding="utf-8-sig")
    header, *rows = text.splitlines()
    city.data.write_text("\n".join([header, *rows[:-5]]) + "\n", encoding="utf-8")
    changed = DataCache(folder, "run-1").load(city, fed)
    assert len(parses) == 3
    assert changed.rows_read == len(rows) - 5
    # A different federation spec (another holdout split) is another entry.
    other = load_federation(files.federation)
    other = FederationSpec(**{**other.__dict__, "holdout_fraction": 0.5})
    DataCache(folder, "run-1").load(city, other)
    assert len(parses) == 4


def test_forget_removes_only_that_city_and_run(tmp_path: Path) -> None:
    files = write_federation(tmp_path / "fed")
    fed = load_federation(files.federation)
    first, second = load_city(files.cities[0]), load_city(files.cities[1])
    folder = tmp_path / "cache"
    one, two = DataCache(folder, "run-1"), DataCache(folder, "run-2")
    for cache in (one, two):
        cache.load(first, fed)
        cache.load(second, fed)
    one.forget(first, fed)
    assert len(list(folder.iterdir())) == 3
    two.forget(first, fed)
    one.forget(second, fed)
    two.forget(second, fed)
    assert list(folder.iterdir()) == []


def test_stale_entries_expire(tmp_path: Path) -> None:
    files = write_federation(tmp_path / "fed")
    fed = load_federation(files.federation)
    folder = tmp_path / "cache"
    DataCache(folder, "old-run").load(load_city(files.cities[0]), fed)
    [old] = list(folder.iterdir())
    long_ago = old.stat().st_mtime - cache_module.MAX_AGE_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    DataCache(folder, "new-run").load(load_city(files.cities[1]), fed)
    assert old not in list(folder.iterdir()) and len(list(folder.iterdir())) == 1


def test_a_damaged_entry_is_read_again(tmp_path: Path, parses: list[str]) -> None:
    files = write_federation(tmp_path / "fed")
    fed, city = load_federation(files.federation), load_city(files.cities[0])
    cache = DataCache(tmp_path / "cache", "run-1")
    cache.load(city, fed)
    [entry] = list((tmp_path / "cache").iterdir())
    (entry / "X_train.npy").write_bytes(b"not an array")
    _assert_same(cache.load(city, fed), load_city_data(city, fed))
    assert len(parses) == 3  # the first load, the damaged entry read again, the reference


def test_an_unwritable_folder_costs_speed_not_the_answer(tmp_path: Path, parses: list[str]) -> None:
    files = write_federation(tmp_path / "fed")
    fed, city = load_federation(files.federation), load_city(files.cities[0])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    data = DataCache(blocker, "run-1").load(city, fed)
    _assert_same(data, load_city_data(city, fed))
