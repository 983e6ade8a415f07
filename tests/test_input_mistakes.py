"""Every input mistake a city can make gets one clear line, or a declared behaviour.

Each case writes a tiny federation and city as a data officer might, with one
mistake, and checks the message: the file, the column or key, the row, and what
to do. None may be read silently in another way than meant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cityfed.config.spec import load_city, load_federation
from cityfed.data.city_data import load_city_data
from cityfed.errors import CityFedError

FEDERATION = """[federation]
name = "mistakes"
task = "regression"
model = "ridge"
holdout_fraction = 0.0
min_rows_per_city = 1

[target]
name = "load"
unit = "MW"

[[features]]
name = "temp"
unit = "degC"

[[features]]
name = "wind"
unit = "m/s"
"""

MAPPING = """temp = { source = "t", unit = "degC" }
wind = { source = "w", unit = "m/s" }
load = { source = "y", unit = "MW" }
"""


def _load(tmp_path: Path, csv: str, *, city: str = "", columns: str = MAPPING) -> np.ndarray:
    (tmp_path / "federation.toml").write_text(FEDERATION)
    (tmp_path / "data.csv").write_text(csv)
    (tmp_path / "city.toml").write_text(
        f'[city]\nname = "A"\ndata = "data.csv"\n{city}\n[columns]\n{columns}'
    )
    fed = load_federation(tmp_path / "federation.toml")
    data = load_city_data(load_city(tmp_path / "city.toml"), fed)
    return np.column_stack([data.X_train, data.y_train])


def _error(tmp_path: Path, csv: str, **kwargs: str) -> str:
    with pytest.raises(CityFedError) as caught:
        _load(tmp_path, csv, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_a_needed_column_named_twice_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, "t,w,t,y\n1,2,3,4\n5,6,7,8\n")
    assert message.startswith("data.csv: header: column 't' appears 2 times (columns 1 and 3)")


def test_an_unused_column_named_twice_is_harmless(tmp_path: Path) -> None:
    rows = _load(tmp_path, "t,w,note,note,y\n1,2,a,b,4\n5,6,c,d,8\n")
    np.testing.assert_array_equal(rows, [[1, 2, 4], [5, 6, 8]])


def test_a_dot_in_a_decimal_comma_file_is_refused_unless_declared(tmp_path: Path) -> None:
    csv = "t;w;y\n1,5;2;1.013\n2,5;3;2.026\n"
    message = _error(tmp_path, csv, city='delimiter = ";"\ndecimal = ","')
    assert message.startswith("data.csv: column 'y', row 1 (line 2): '1.013' has a '.' but")
    assert 'declare thousands = "." in [city] of city.toml' in message
    rows = _load(tmp_path, csv, city='delimiter = ";"\ndecimal = ","\nthousands = "."')
    np.testing.assert_array_equal(rows[:, 2], [1013.0, 2026.0])
    np.testing.assert_array_equal(rows[:, 0], [1.5, 2.5])


def test_thousands_commas_with_a_decimal_point(tmp_path: Path) -> None:
    csv = 't,w,y\n1.5,2,"1,013.25"\n2.5,3,"12,026.5"\n'
    rows = _load(tmp_path, csv, city='thousands = ","')
    np.testing.assert_array_equal(rows[:, 2], [1013.25, 12026.5])


def test_a_forgotten_decimal_comma_gets_a_hint(tmp_path: Path) -> None:
    message = _error(tmp_path, 't,w,y\n"1,5",2,3\n')
    assert "'1,5' is not a number" in message
    assert 'set decimal = "," in [city] of city.toml' in message


def test_a_forgotten_delimiter_gets_a_hint(tmp_path: Path) -> None:
    message = _error(tmp_path, "t;w;y\n1;2;3\n")
    assert message.startswith("data.csv: column 't' not found")
    assert "the header is one column containing ';': set delimiter = \";\"" in message


def test_a_tab_delimiter_as_the_readme_writes_it(tmp_path: Path) -> None:
    rows = _load(tmp_path, "t\tw\ty\n1\t2\t3\n", city='delimiter = "\\t"')
    np.testing.assert_array_equal(rows, [[1, 2, 3]])
    rows = _load(tmp_path, "t\tw\ty\n1\t2\t3\n", city="delimiter = '\\t'")
    np.testing.assert_array_equal(rows, [[1, 2, 3]])


def test_two_federation_columns_from_one_source_are_refused(tmp_path: Path) -> None:
    columns = 'temp = { source = "t", unit = "degC" }\nwind = "t"\nload = "y"\n'
    with pytest.raises(CityFedError) as caught:
        _load(tmp_path, "t,y\n1,2\n", columns=columns)
    assert str(caught.value) == (
        "city.toml: [columns] wind: reads the same source 't' as [columns] temp; each "
        "federation column needs its own source column"
    )


def test_a_data_path_that_is_a_folder_says_so(tmp_path: Path) -> None:
    _load(tmp_path, "t,w,y\n1,2,3\n")  # a good city; then its data path becomes a folder
    (tmp_path / "folder").mkdir()
    text = (tmp_path / "city.toml").read_text().replace('"data.csv"', '"folder"')
    (tmp_path / "city.toml").write_text(text)
    fed = load_federation(tmp_path / "federation.toml")
    with pytest.raises(CityFedError) as caught:
        load_city_data(load_city(tmp_path / "city.toml"), fed)
    assert str(caught.value).startswith(f"folder: {tmp_path / 'folder'} is a folder, not a data")


@pytest.mark.parametrize(("unit", "hint"), [("F", "degF"), ("C", "degC")])
def test_a_temperature_in_f_or_c_gets_a_hint(tmp_path: Path, unit: str, hint: str) -> None:
    columns = MAPPING.replace('unit = "degC"', f'unit = "{unit}"')
    message = _error(tmp_path, "t,w,y\n1,2,3\n", columns=columns)
    assert f"for {'Fahrenheit' if unit == 'F' else 'Celsius'} write '{hint}'" in message


def test_a_huge_expression_is_not_echoed_whole(tmp_path: Path) -> None:
    expression = "t + " * 25_000 + "t / 0"
    columns = MAPPING.replace('source = "t"', f'source = "{expression}"')
    message = _error(tmp_path, "t,w,y\n1,2,3\n", columns=columns)
    assert len(message) < 400 and "…" in message


def test_a_value_too_large_to_summarise_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, "t,w,y\n1,2,3\n1e200,2,3\n")
    assert message.startswith("data.csv: column 'temp', row 2 (line 3): 1e+200 degC is too large")
