from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cityfed.config.spec import load_city, load_federation
from cityfed.data.city_data import load_city_data
from cityfed.data.harmonise import harmonise
from cityfed.data.holdout import holdout_mask
from cityfed.errors import DataError, SpecError

from .synthetic import write_federation

FED = """
[federation]
name = "t"
task = "regression"
model = "ridge"
missing = "{missing}"
holdout_fraction = 0.0

[target]
name = "temp"
unit = "degC"

[[features]]
name = "dew"
unit = "degC"

[[features]]
name = "hg"
unit = "hPa"
"""


def _city(
    tmp_path: Path,
    csv: str,
    columns: str,
    *,
    missing: str = "drop",
    extra: str = "",
    encoding: str = "utf-8",
) -> tuple[Path, Path]:
    (tmp_path / "federation.toml").write_text(FED.format(missing=missing), encoding="utf-8")
    (tmp_path / "c.csv").write_bytes(csv.encode(encoding))
    (tmp_path / "c.toml").write_text(
        f'[city]\nname = "c"\ndata = "c.csv"\n{extra}\n[columns]\n{columns}', encoding="utf-8"
    )
    return tmp_path / "federation.toml", tmp_path / "c.toml"


US_COLUMNS = (
    'temp = { source = "(hi_f + lo_f) / 2", unit = "degF" }\n'
    'dew = { source = "dew_f", unit = "degF" }\n'
    'hg = { source = "baro", unit = "inHg" }\n'
)


def _load(fed: Path, city: Path):  # type: ignore[no-untyped-def]
    return harmonise(load_city(city), load_federation(fed))


def test_heterogeneous_cities_harmonise_to_the_drawn_rows(tmp_path: Path) -> None:
    # Prepare: three cities with different names, units, delimiters and derived columns
    synthetic = write_federation(tmp_path, sizes=(40, 35, 30))
    fed = load_federation(synthetic.federation)
    for path, X, y in zip(synthetic.cities, synthetic.X, synthetic.y, strict=True):
        # Execute
        table, rows_read, reasons = harmonise(load_city(path), fed)
        # Assert: equal to the rows as drawn in federation units
        assert rows_read == len(y) and reasons == {}
        np.testing.assert_allclose(table[:, :-1], X, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(table[:, -1], y, rtol=1e-12, atol=1e-9)


def test_derived_column_and_units(tmp_path: Path) -> None:
    fed, city = _city(tmp_path, "hi_f,lo_f,dew_f,baro\n70,50,32,29.92\n212,212,50,30\n", US_COLUMNS)
    table, _, _ = _load(fed, city)
    np.testing.assert_allclose(table[:, 2], [(60 - 32) * 5 / 9, 100.0])
    np.testing.assert_allclose(table[:, 0], [0.0, 10.0], atol=1e-12)
    np.testing.assert_allclose(table[:, 1], [29.92 * 33.86389, 30 * 33.86389], rtol=1e-6)


def test_bom_and_decimal_comma(tmp_path: Path) -> None:
    csv = "dew;hg;temp\n1,5;1000,25;20,0\n2,5;1001,5;21\n"
    same_names = 'dew = "dew"\nhg = "hg"\ntemp = "temp"\n'  # the explicit short form
    fed, city = _city(
        tmp_path, csv, same_names, extra='delimiter = ";"\ndecimal = ","', encoding="utf-8-sig"
    )
    assert (tmp_path / "c.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    table, _, _ = _load(fed, city)
    np.testing.assert_allclose(table, [[1.5, 1000.25, 20.0], [2.5, 1001.5, 21.0]])


def test_missing_values_dropped_and_counted(tmp_path: Path) -> None:
    csv = "hi_f,lo_f,dew_f,baro\n70,50,32,29.92\n70,,32,29.9\nNA,50,32,29.9\n70,50,,\n70,50,33,30\n"
    fed, city = _city(tmp_path, csv, US_COLUMNS)
    table, rows_read, reasons = _load(fed, city)
    assert rows_read == 5 and table.shape[0] == 2
    assert reasons == {"missing temp": 2, "missing dew": 1}


def test_missing_value_error_policy_names_first_row(tmp_path: Path) -> None:
    csv = "hi_f,lo_f,dew_f,baro\n70,50,32,29.92\n70,50,32,\n"
    fed, city = _city(tmp_path, csv, US_COLUMNS, missing="error")
    with pytest.raises(DataError, match=r"c\.csv: column 'hg', row 2 \(line 3\): missing value"):
        _load(fed, city)


@pytest.mark.parametrize(
    ("csv", "pattern"),
    [
        (
            "hi_f,lo_f,dew_f,baro\n70,50,32,29.92\n70,50,abc,30\n",
            r"c\.csv: column 'dew_f', row 2 \(line 3\): 'abc' is not a number",
        ),
        (
            "hi_f,lo_f,dew_f,baro\n70,50,32,inf\n",
            r"column 'baro', row 1 \(line 2\): 'inf' is infinite",
        ),
        ("hi_f,lo_f,dew_f\n70,50,32\n", r"c\.csv: column 'baro' not found"),
        ("", r"c\.csv: the file is empty"),
        ("hi_f,lo_f,dew_f,baro\n", r"c\.csv: no data rows"),
    ],
)
def test_bad_cells_name_file_column_and_row(tmp_path: Path, csv: str, pattern: str) -> None:
    fed, city = _city(tmp_path, csv, US_COLUMNS)
    with pytest.raises(DataError, match=pattern) as info:
        _load(fed, city)
    assert "\n" not in str(info.value)


def test_division_by_zero_in_derived_column(tmp_path: Path) -> None:
    columns = US_COLUMNS.replace('"(hi_f + lo_f) / 2"', '"hi_f / lo_f"')
    fed, city = _city(tmp_path, "hi_f,lo_f,dew_f,baro\n70,50,32,29.9\n70,0,32,29.9\n", columns)
    with pytest.raises(
        DataError,
        match=r"column 'temp' = 'hi_f / lo_f', row 2 \(line 3\): the result is not finite",
    ):
        _load(fed, city)


def test_dimension_mismatch_is_caught_before_reading(tmp_path: Path) -> None:
    columns = US_COLUMNS.replace('unit = "inHg"', 'unit = "kg"')
    fed, city = _city(tmp_path, "garbage that is never read", columns)
    with pytest.raises(SpecError, match=r"c\.toml: \[columns\] hg unit") as info:
        _load(fed, city)
    assert "kg" in str(info.value)


def test_classification_labels_must_be_binary(tmp_path: Path) -> None:
    text = FED.format(missing="drop").replace(
        'task = "regression"\nmodel = "ridge"', 'task = "classification"'
    )
    text = text.replace('name = "temp"\nunit = "degC"', 'name = "rain"')
    (tmp_path / "federation.toml").write_text(text)
    (tmp_path / "c.csv").write_text("dew,hg,rain\n1,1000,0\n2,1001,1\n3,1002,2\n")
    (tmp_path / "c.toml").write_text(
        '[city]\nname = "c"\ndata = "c.csv"\n[columns]\ndew = "dew"\nhg = "hg"\nrain = "rain"\n'
    )
    with pytest.raises(
        DataError, match=r"column 'rain', row 3 \(line 4\): class label 2 is not 0 or 1"
    ):
        _load(tmp_path / "federation.toml", tmp_path / "c.toml")


def test_holdout_split_is_deterministic_and_sized() -> None:
    a = holdout_mask(1000, 0.2, 7, "lisbon")
    assert a.sum() == 200
    np.testing.assert_array_equal(a, holdout_mask(1000, 0.2, 7, "lisbon"))
    assert not np.array_equal(a, holdout_mask(1000, 0.2, 7, "porto"))
    assert not np.array_equal(a, holdout_mask(1000, 0.2, 8, "lisbon"))
    assert holdout_mask(1000, 0.0, 7, "lisbon").sum() == 0


def test_load_city_data_splits(tmp_path: Path) -> None:
    synthetic = write_federation(tmp_path, sizes=(100, 40, 30), holdout_fraction=0.25)
    fed = load_federation(synthetic.federation)
    data = load_city_data(load_city(synthetic.cities[0]), fed)
    assert data.y_train.size == 75 and data.y_holdout.size == 25
    assert data.rows_used == 100 and data.rows_dropped == 0


def test_an_unmapped_federation_column_is_never_read(tmp_path: Path) -> None:
    # The CSV has a column named like the federation's, but the city did not map it.
    csv = "hi_f,lo_f,dew_f,baro,secret\n70,50,32,29.9,1\n"
    columns = US_COLUMNS.replace('dew = { source = "dew_f", unit = "degF" }\n', "")
    fed, city = _city(tmp_path, csv.replace("secret", "dew"), columns)
    with pytest.raises(SpecError, match=r"c\.toml: \[columns\] has no entry for .*'dew'"):
        _load(fed, city)
