from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from cityfed.config.units import check_convertible, convert, is_dimensionless, validate_unit
from cityfed.errors import SpecError

WHERE = "city.toml: [columns.temp] unit"

ALL_UNITS = [
    # temperature
    "degC",
    "degF",
    "K",
    "°C",
    "°F",
    "celsius",
    "fahrenheit",
    "kelvin",
    # pressure
    "hPa",
    "mbar",
    "millibar",
    "inHg",
    "kPa",
    "Pa",
    "mmHg",
    # speed
    "mph",
    "km/h",
    "kph",
    "m/s",
    "knot",
    "kt",
    # distance
    "mile",
    "mi",
    "km",
    "m",
    # energy
    "kWh",
    "MWh",
    "MJ",
    "J",
    # power
    "W",
    "kW",
    "MW",
    # dimensionless
    "percent",
    "%",
    "count",
    "dimensionless",
]


def conv(values: list[float], src: str | None, dst: str | None) -> NDArray[np.float64]:
    return convert(np.array(values, dtype=np.float64), src, dst)


# --- validation ---------------------------------------------------------------


@pytest.mark.parametrize("unit", [*ALL_UNITS, None, "", "  "])
def test_supported_units_validate(unit: str | None) -> None:
    validate_unit(unit, where=WHERE)


@pytest.mark.parametrize(
    "unit",
    ["foo", "degF2", "2*m", "m/0", "(m", ":", "nan", "inf", "__class__", "m*" * 60],
)
def test_unknown_unit_message(unit: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_unit(unit, where=WHERE)
    message = str(info.value)
    shown = unit if len(unit) <= 40 else unit[:39] + "…"  # long strings are cut
    assert message.startswith(f"{WHERE}: unknown unit {shown!r}")
    assert "degC" in message  # the hint
    assert "\n" not in message and len(message) < 250


@settings(max_examples=300, deadline=None)
@given(unit=st.text(max_size=12))
def test_arbitrary_unit_text_is_valid_or_spec_error(unit: str) -> None:
    try:
        validate_unit(unit, where=WHERE)
    except SpecError as exc:
        assert str(exc).startswith(f"{WHERE}: unknown unit ")


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        (None, True),
        ("", True),
        ("dimensionless", True),
        ("count", True),
        ("percent", True),
        ("%", True),
        ("m", False),
        ("degC", False),
        ("hPa", False),
    ],
)
def test_is_dimensionless(unit: str | None, expected: bool) -> None:
    assert is_dimensionless(unit) is expected


def test_is_dimensionless_unknown_unit() -> None:
    with pytest.raises(SpecError, match=r"^here: unknown unit 'zzz'"):
        is_dimensionless("zzz", where="here")


# --- convertibility -----------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("degF", "degC"),
        ("°C", "K"),
        ("inHg", "hPa"),
        ("mmHg", "mbar"),
        ("kph", "mph"),
        ("kt", "m/s"),
        ("mi", "km"),
        ("MWh", "MJ"),
        ("kW", "MW"),
        ("%", None),
        ("count", ""),
        (None, "percent"),
    ],
)
def test_convertible_pairs(src: str | None, dst: str | None) -> None:
    check_convertible(src, dst, where=WHERE)


def test_dimension_mismatch_message_names_units_and_dimensions() -> None:
    with pytest.raises(SpecError) as info:
        check_convertible("degF", "hPa", where=WHERE)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: ")
    assert "'degF'" in message
    assert "'hPa'" in message
    assert "[temperature]" in message
    assert "[mass] / [length] / [time] ** 2" in message
    assert "\n" not in message


def test_unitless_to_dimensioned_message() -> None:
    with pytest.raises(SpecError) as info:
        check_convertible(None, "kWh", where=WHERE)
    message = str(info.value)
    assert "'dimensionless' (dimensionless)" in message
    assert "'kWh'" in message


def test_energy_is_not_power() -> None:
    with pytest.raises(SpecError, match=r"'kWh'.*'kW'"):
        check_convertible("kWh", "kW", where=WHERE)


def test_absolute_temperature_to_difference_is_refused() -> None:
    with pytest.raises(SpecError, match="temperature difference"):
        check_convertible("degC", "delta_degC", where=WHERE)


def test_check_convertible_unknown_unit() -> None:
    with pytest.raises(SpecError, match=r"unknown unit 'furlongz'"):
        check_convertible("m", "furlongz", where=WHERE)


def test_convert_mismatch_raises_spec_error() -> None:
    with pytest.raises(SpecError, match=r"^x: cannot convert"):
        convert(np.ones(2), "mph", "degC", where="x")


# --- reference values ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (68.0, "degF", "degC", 20.0),
        (-40.0, "degF", "degC", -40.0),
        (212.0, "fahrenheit", "celsius", 100.0),
        (0.0, "degC", "K", 273.15),
        (300.0, "kelvin", "°C", 26.85),
        (20.0, "°C", "°F", 68.0),
        (273.15, "K", "degF", 32.0),
        (29.92, "inHg", "hPa", 29.92 * 3386.389 / 100),
        (29.92, "inHg", "Pa", 29.92 * 3386.389),
        (1013.25, "mbar", "hPa", 1013.25),
        (1013.25, "millibar", "kPa", 101.325),
        (760.0, "mmHg", "Pa", 760 * 133.322387415),
        (10.0, "mph", "m/s", 4.4704),
        (36.0, "km/h", "m/s", 10.0),
        (36.0, "kph", "m/s", 10.0),
        (10.0, "knot", "m/s", 10 * 1852 / 3600),
        (10.0, "kt", "km/h", 18.52),
        (1.0, "mile", "km", 1.609344),
        (1.0, "mi", "m", 1609.344),
        (1.0, "kWh", "MJ", 3.6),
        (1.0, "kWh", "J", 3.6e6),
        (2.0, "MWh", "kWh", 2000.0),
        (1500.0, "W", "kW", 1.5),
        (2.5, "MW", "kW", 2500.0),
        (50.0, "percent", "dimensionless", 0.5),
        (50.0, "%", None, 0.5),
        (0.25, None, "%", 25.0),
        (0.25, "", "percent", 25.0),
        (7.0, "count", None, 7.0),
    ],
)
def test_reference_values(value: float, src: str | None, dst: str | None, expected: float) -> None:
    (out,) = conv([value], src, dst)
    # pint defines inHg from a conventional mercury density (3386.38864 Pa);
    # 3386.389 Pa is the rounded reference value, so allow 1e-6 relative there.
    rel = 1e-6 if src == "inHg" else 1e-12
    assert out == pytest.approx(expected, rel=rel, abs=1e-9)


def test_temperature_array() -> None:
    out = conv([32.0, 68.0, 212.0, -459.67], "degF", "degC")
    np.testing.assert_allclose(out, [0.0, 20.0, 100.0, -273.15], atol=1e-9)


def test_matches_pint_elementwise() -> None:
    import pint

    registry: Any = pint.UnitRegistry()
    values = np.linspace(-50.0, 150.0, 7)
    for src, dst in [("degF", "degC"), ("inHg", "hPa"), ("mph", "knot")]:
        expected = [registry.Quantity(v, src).to(dst).magnitude for v in values]
        np.testing.assert_allclose(convert(values, src, dst), expected, rtol=1e-13)


# --- array behaviour ----------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [("degC", "degC"), (None, ""), ("dimensionless", None), ("degC", "celsius")],
)
def test_identity_returns_float64_copy(src: str | None, dst: str | None) -> None:
    values = np.array([1.0, np.nan, 3.0])
    out = convert(values, src, dst)
    assert out.dtype == np.float64
    assert out is not values
    assert not np.shares_memory(out, values)
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize(("src", "dst"), [("degF", "degC"), ("mph", "m/s")])
def test_input_is_not_modified(src: str, dst: str) -> None:
    values = np.array([68.0, 10.0])
    before = values.copy()
    out = convert(values, src, dst)
    np.testing.assert_array_equal(values, before)
    assert not np.shares_memory(out, values)


def test_integer_input_and_shape_are_handled() -> None:
    values = np.array([[32, 212], [68, 50]])
    out = convert(values, "degF", "degC")
    assert out.dtype == np.float64
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.0, 100.0], [20.0, 10.0]], atol=1e-9)


def test_nan_and_inf_pass_through() -> None:
    out = conv([np.nan, np.inf], "degF", "degC")
    assert np.isnan(out[0])
    assert out[1] == np.inf
    out = conv([np.nan, -np.inf], "mph", "m/s")
    assert np.isnan(out[0])
    assert out[1] == -np.inf


def test_large_arrays_are_vectorised() -> None:
    values = np.linspace(-40.0, 120.0, 1_000_000)
    start = time.perf_counter()
    celsius = convert(values, "degF", "degC")
    pascal = convert(values, "inHg", "Pa")
    elapsed = time.perf_counter() - start
    np.testing.assert_allclose(celsius, (values - 32.0) * 5.0 / 9.0, atol=1e-9)
    np.testing.assert_allclose(pascal, values * 3386.388640341, rtol=1e-12)
    assert elapsed < 5.0  # a per-element loop through pint takes minutes


# --- round trips --------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=20))
def test_fahrenheit_celsius_round_trip(values: list[float]) -> None:
    array = np.array(values)
    back = convert(convert(array, "degF", "degC"), "degC", "degF")
    np.testing.assert_allclose(back, array, rtol=1e-12, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(finite, min_size=1, max_size=20),
    pair=st.sampled_from(
        [
            ("K", "°F"),
            ("inHg", "hPa"),
            ("mmHg", "kPa"),
            ("mph", "km/h"),
            ("kt", "m/s"),
            ("mi", "km"),
            ("kWh", "MJ"),
            ("MW", "W"),
            ("%", None),
        ]
    ),
)
def test_round_trips(values: list[float], pair: tuple[str, str | None]) -> None:
    src, dst = pair
    array = np.array(values)
    back = convert(convert(array, src, dst), dst, src)
    np.testing.assert_allclose(back, array, rtol=1e-12, atol=1e-9)
