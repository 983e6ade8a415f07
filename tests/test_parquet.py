"""A city's data in Parquet (a file or a folder of files): the same rows as its CSV."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cityfed.cli.demo import copy_demo_data
from cityfed.config.spec import load_city, load_federation
from cityfed.data.city_data import load_city_data
from cityfed.errors import CityFedError

pytest.importorskip("pyarrow")


def _as_parquet(toml: Path, target: str) -> Path:
    text = toml.read_text()
    city = load_city(toml)
    other = toml.with_name(toml.stem + "-parquet.toml")
    other.write_text(text.replace(f'data = "{city.data.name}"', f'data = "{target}"'))
    return other


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_parquet_gives_the_same_rows_as_the_csv(tmp_path: Path, layout: str) -> None:
    work = copy_demo_data(tmp_path / "demo")
    fed = load_federation(work / "federation.toml")
    # EWR's published CSV, typed by pandas (numbers as float64, "NA" as null).
    frame = pd.read_csv(work / "EWR.csv")
    if layout == "file":
        frame.to_parquet(work / "EWR.parquet", index=False)
        target = "EWR.parquet"
    else:
        (work / "EWR-parts").mkdir()
        # Months in separate files, as a data lake writes them; one dataset in file order.
        bounds = np.linspace(0, len(frame), 5).astype(int)
        for k, (start, stop) in enumerate(pairwise(bounds)):
            part = frame.iloc[start:stop]
            part.to_parquet(work / "EWR-parts" / f"part-{k}.parquet", index=False)
        target = "EWR-parts"
    csv = load_city_data(load_city(work / "ewr.toml"), fed)
    parquet = load_city_data(load_city(_as_parquet(work / "ewr.toml", target)), fed)
    np.testing.assert_array_equal(parquet.X_train, csv.X_train)
    np.testing.assert_array_equal(parquet.y_train, csv.y_train)
    np.testing.assert_array_equal(parquet.X_holdout, csv.X_holdout)
    assert parquet.rows_read == csv.rows_read
    assert parquet.drop_reasons == csv.drop_reasons  # nulls are missing values


def test_parquet_text_columns_and_errors_name_the_row(tmp_path: Path) -> None:
    work = copy_demo_data(tmp_path / "demo")
    fed = load_federation(work / "federation.toml")
    frame = pd.read_csv(work / "EWR.csv", dtype=str, keep_default_na=False)
    frame.to_parquet(work / "EWR.parquet", index=False)  # every column text
    toml = _as_parquet(work / "ewr.toml", "EWR.parquet")
    csv = load_city_data(load_city(work / "ewr.toml"), fed)
    np.testing.assert_array_equal(load_city_data(load_city(toml), fed).X_train, csv.X_train)
    frame.loc[6, "dewp"] = "warm"
    frame.to_parquet(work / "EWR.parquet", index=False)
    with pytest.raises(CityFedError) as caught:
        load_city_data(load_city(toml), fed)
    assert str(caught.value) == "EWR.parquet: column 'dewp', row 7: 'warm' is not a number"
    frame.drop(columns=["dewp"]).to_parquet(work / "EWR.parquet", index=False)
    with pytest.raises(CityFedError, match=r"^EWR\.parquet: column 'dewp' not found"):
        load_city_data(load_city(toml), fed)
    (work / "EWR.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CityFedError, match=r"^EWR\.parquet: not a readable Parquet dataset"):
        load_city_data(load_city(toml), fed)


def test_a_rewritten_part_of_a_folder_is_read_again(tmp_path: Path) -> None:
    from cityfed.data.cache import DataCache

    work = copy_demo_data(tmp_path / "demo")
    fed = load_federation(work / "federation.toml")
    frame = pd.read_csv(work / "EWR.csv")
    (work / "parts").mkdir()
    frame.iloc[:4000].to_parquet(work / "parts" / "a.parquet", index=False)
    frame.iloc[4000:].to_parquet(work / "parts" / "b.parquet", index=False)
    city = load_city(_as_parquet(work / "ewr.toml", "parts"))
    first = DataCache(tmp_path / "cache", "run-1").load(city, fed)
    frame.iloc[4000:6000].to_parquet(work / "parts" / "b.parquet", index=False)
    again = DataCache(tmp_path / "cache", "run-1").load(city, fed)
    assert again.rows_read == 6000 != first.rows_read


def test_a_parquet_folder_passes_the_node_start_check(tmp_path: Path) -> None:
    from cityfed.data.sources import require_data

    work = copy_demo_data(tmp_path / "demo")
    (work / "parts").mkdir()
    pd.read_csv(work / "EWR.csv").to_parquet(work / "parts" / "a.parquet", index=False)
    require_data(load_city(_as_parquet(work / "ewr.toml", "parts")))  # what city start checks
    (work / "empty").mkdir()
    with pytest.raises(CityFedError, match="is a folder, not a data file"):
        require_data(load_city(_as_parquet(work / "ewr.toml", "empty")))
    with pytest.raises(CityFedError, match="data file not found"):
        require_data(load_city(_as_parquet(work / "ewr.toml", "gone.parquet")))
