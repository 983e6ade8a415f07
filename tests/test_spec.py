from __future__ import annotations

from pathlib import Path

import pytest

from cityfed.config.spec import federation_from_json, federation_to_json, load_city, load_federation
from cityfed.errors import SpecError

GOOD = """
[federation]
name = "world"
task = "regression"
model = "ridge"
alpha = 2.5

[target]
name = "avg_temp"
unit = "degC"

[[features]]
name = "avg_dewpt"
unit = "degC"

[[features]]
name = "avg_hg"
unit = "hPa"
"""


def _write(tmp_path: Path, text: str, name: str = "federation.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_federation_parses_with_sklearn_meanings(tmp_path: Path) -> None:
    spec = load_federation(_write(tmp_path, GOOD))
    assert spec.alpha == 2.5
    assert spec.penalty == 2.5
    assert spec.feature_names == ("avg_dewpt", "avg_hg")
    assert spec.target.unit == "degC"
    assert spec.standardize is True
    assert federation_from_json(federation_to_json(spec)) == spec


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (
            lambda t: t.replace("alpha = 2.5", "alpha = 2.5\nalpah = 1"),
            ["federation.toml", "alpah", "unknown key"],
        ),
        (
            lambda t: t.replace("alpha = 2.5", 'alpha = "strong"'),
            ["federation.toml", "alpha", "number"],
        ),
        (lambda t: t.replace("alpha = 2.5", "alpha = -1"), ["alpha", ">= 0"]),
        (
            lambda t: t.replace('model = "ridge"', 'model = "logistic"'),
            ["model", "'logistic' does not fit task 'regression'"],
        ),
        (
            lambda t: t.replace('name = "avg_hg"', 'name = "avg_dewpt"'),
            ["[[features]] 2", "avg_dewpt", "twice"],
        ),
        (
            lambda t: t.replace('unit = "hPa"', 'unit = "furlongs_per_fortnight_squared"'),
            ["[[features]] 2 unit", "unknown unit"],
        ),
        (lambda t: t.replace('name = "world"\n', ""), ["[federation] name", "missing"]),
        (
            lambda t: t.replace('[target]\nname = "avg_temp"', '[target]\nname = "avg_hg"'),
            ["[target] name", "also a feature"],
        ),
        (
            lambda t: t.replace('task = "regression"', 'task = "forecast"'),
            ["task", "'regression', 'classification'"],
        ),
        (lambda t: t + "\n[extra]\nx = 1\n", ["extra", "unknown key"]),
        (
            lambda t: t.replace("standardize = true", "").replace(
                "alpha = 2.5", 'standardize = "yes"'
            ),
            ["standardize", "true or false"],
        ),
        (
            lambda t: t.replace("alpha = 2.5", "holdout_fraction = 1.5"),
            ["holdout_fraction", "<= 0.9"],
        ),
        (lambda t: t.replace("alpha = 2.5", "min_cities = 0"), ["min_cities", ">= 1"]),
        (
            lambda t: t.replace('model = "ridge"\nalpha = 2.5', 'model = "linear"\nalpha = 2.5'),
            ["alpha", "linear"],
        ),
        (lambda t: t.replace("[target]\nname", "[target]\nname ="), ["invalid TOML"]),
    ],
)
def test_bad_federation_is_one_line_naming_file_and_key(tmp_path: Path, edit, fragments) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(SpecError) as info:
        load_federation(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("federation.toml")
    for fragment in fragments:
        assert fragment in message


def test_classification_target_must_be_unitless(tmp_path: Path) -> None:
    text = GOOD.replace(
        'task = "regression"\nmodel = "ridge"\nalpha = 2.5', 'task = "classification"'
    )
    with pytest.raises(SpecError, match=r"\[target\] unit"):
        load_federation(_write(tmp_path, text))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_federation(tmp_path / "nope.toml")


CITY = """
[city]
name = "chicago"
data = "chicago.csv"
delimiter = ";"
decimal = ","

[columns]
avg_dewpt = { source = "dewpoint", unit = "degF" }
avg_temp = { source = "(high_f + low_f) / 2", unit = "degF" }
avg_hg = "pressure_hpa"

[personalize]
tau = 3.0
"""


def test_city_parses_relative_data_path(tmp_path: Path) -> None:
    city = load_city(_write(tmp_path, CITY, "chicago.toml"))
    assert city.data == tmp_path.resolve() / "chicago.csv"
    assert city.delimiter == ";" and city.decimal == ","
    dew = city.column("avg_dewpt")
    assert dew is not None and dew.unit == "degF"
    hg = city.column("avg_hg")
    assert hg is not None and hg.source == "pressure_hpa" and hg.unit is None
    assert city.personalize_tau == 3.0


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda t: t.replace('data = "chicago.csv"\n', ""), ["[city] data", "missing"]),
        (
            lambda t: t.replace(
                'unit = "degF" }\navg_temp', 'unit = "parsecs_per_goat" }\navg_temp'
            ),
            ["[columns] avg_dewpt unit", "unknown unit"],
        ),
        (lambda t: t.replace('decimal = ","', 'decimal = ";"'), ["decimal"]),
        (lambda t: t.replace("tau = 3.0", 'tau = "big"'), ["[personalize] tau"]),
        (
            lambda t: t.replace(
                'avg_hg = "pressure_hpa"', 'avg_hg = { source = "p", units = "hPa" }'
            ),
            ["units", "unknown key"],
        ),
        (lambda t: t.replace('avg_hg = "pressure_hpa"', "avg_hg = 3"), ["[columns] avg_hg"]),
    ],
)
def test_bad_city_names_file_and_key(tmp_path: Path, edit, fragments) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError) as info:
        load_city(_write(tmp_path, edit(CITY), "chicago.toml"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("chicago.toml")
    for fragment in fragments:
        assert fragment in message
