"""Heterogeneous synthetic federations written to disk, with an independent truth.

Rows are drawn in federation units (temperature °C, pressure hPa, wind m/s,
humidity %); each city then writes them in its own column names, units,
delimiter and decimal mark, with hand-written conversion formulas (not pint), and
some cities store a column only as parts of a derived expression. Tests fit
sklearn on the rows as drawn, so the reference never goes through CityFed's
harmonisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityfed_client.handlers import responder
from numpy.typing import NDArray

from cityfed.federation.protocol import CityReply, Instruction
from cityfed.flower.exchange import LocalExchange

FEATURES = (("dewpoint", "degC"), ("pressure", "hPa"), ("wind", "m/s"), ("humidity", "percent"))
#: Conventional inch of mercury: 13595.1 kg/m³ × 9.80665 m/s² × 0.0254 m, in Pa.
INHG_PA = 13595.1 * 9.80665 * 0.0254
TARGET_REGRESSION = ("load", "MW")
TARGET_CLASSIFICATION = ("alert", "dimensionless")


@dataclass
class SyntheticFederation:
    federation: Path
    cities: list[Path]
    X: list[NDArray[np.float64]]  # per city, federation units, every row
    y: list[NDArray[np.float64]]

    @property
    def X_pooled(self) -> NDArray[np.float64]:
        return np.vstack(self.X)

    @property
    def y_pooled(self) -> NDArray[np.float64]:
        return np.concatenate(self.y)


def _fmt(values: NDArray[np.float64], decimal: str = ".") -> list[str]:
    out = [repr(float(v)) for v in values]
    return [s.replace(".", ",") for s in out] if decimal == "," else out


def draw_city(
    rng: np.random.Generator, k: int, n: int, task: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Non-IID rows: each city has its own climate and its own baseline."""
    dew = rng.normal(5.0 + 4.0 * k, 3.0 + k, n)
    pressure = rng.normal(1013.0 - 3.0 * k, 6.0, n)
    wind = np.abs(rng.normal(4.0 + k, 2.0, n))
    humidity = np.clip(rng.normal(60.0 + 5.0 * k, 12.0, n), 5.0, 100.0)
    X = np.column_stack([dew, pressure, wind, humidity])
    logit_or_load = 0.8 * dew - 0.05 * (pressure - 1010.0) + 0.3 * wind + 0.02 * humidity
    if task == "classification":
        t = 0.6 * (logit_or_load - logit_or_load.mean()) + 0.3 * k + rng.normal(0, 1.0, n)
        y = (t > 0).astype(np.float64)
    else:
        y = 120.0 + 2.0 * logit_or_load + 4.0 * k + rng.normal(0, 1.5, n)
    return X, y


def write_federation(
    root: Path,
    *,
    task: str = "regression",
    model: str = "ridge",
    sizes: tuple[int, ...] = (300, 120, 500),
    seed: int = 0,
    alpha: float = 1.0,
    C: float = 1.0,
    standardize: bool = True,
    holdout_fraction: float = 0.0,
    min_rows_per_city: int = 20,
    min_cities: int = 2,
    extra: str = "",
    policy: str = 'agreed = ["agreed-federation.toml"]\nmin_rows = 10\n',
) -> SyntheticFederation:
    """Write ``federation.toml`` and one ``city_k.toml`` + CSV per city."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    target = TARGET_CLASSIFICATION if task == "classification" else TARGET_REGRESSION
    penalty = (
        f"alpha = {alpha}\n" if model == "ridge" else (f"C = {C}\n" if model == "logistic" else "")
    )
    features = "".join(f'[[features]]\nname = "{n}"\nunit = "{u}"\n\n' for n, u in FEATURES)
    (root / "federation.toml").write_text(
        f'[federation]\nname = "synthetic"\ntask = "{task}"\nmodel = "{model}"\n{penalty}'
        f"standardize = {str(standardize).lower()}\nholdout_fraction = {holdout_fraction}\n"
        f"seed = 3\nmin_cities = {min_cities}\nmin_rows_per_city = {min_rows_per_city}\n{extra}\n"
        f'[target]\nname = "{target[0]}"\nunit = "{target[1]}"\n\n{features}',
        encoding="utf-8",
    )
    # The cities' own copy of the spec they agreed to (the coordinator's may change).
    (root / "agreed-federation.toml").write_bytes((root / "federation.toml").read_bytes())
    fed = SyntheticFederation(root / "federation.toml", [], [], [])
    for k, n in enumerate(sizes):
        X, y = draw_city(rng, k, n, task)
        fed.X.append(X)
        fed.y.append(y)
        fed.cities.append(_write_city(root, k, X, y, task, policy))
    return fed


def _write_city(
    root: Path, k: int, X: NDArray[np.float64], y: NDArray[np.float64], task: str, policy: str
) -> Path:
    dew, pressure, wind, humidity = X.T
    style = k % 3
    label = "alert" if task == "classification" else "load"
    if style == 0:
        # Federation names and units, plain CSV with a UTF-8 byte-order mark.
        columns = {
            "dewpoint": dew,
            "pressure": pressure,
            "wind": wind,
            "humidity": humidity,
            label: y,
        }
        mapping = "".join(f'{name} = "{name}"\n' for name in (*columns,))
        delimiter, decimal, encoding = ",", ".", "utf-8-sig"
    elif style == 1:
        # US units and own names; the load is stored as two parts (derived column).
        dew_f = dew * 9.0 / 5.0 + 32.0
        columns = {
            "DewPt_F": dew_f,
            "Baro_inHg": pressure * 100.0 / INHG_PA,
            "Wind_mph": wind / 0.44704,
            "RH_frac": humidity / 100.0,
        }
        if task == "classification":
            columns["Alert"] = y
            target_map = 'alert = { source = "Alert" }\n'
        else:
            columns["load_a_kW"] = y * 1000.0 * 0.25
            columns["load_b_kW"] = y * 1000.0 * 0.75
            target_map = 'load = { source = "load_a_kW + load_b_kW", unit = "kW" }\n'
        mapping = (
            'dewpoint = { source = "DewPt_F", unit = "degF" }\n'
            'pressure = { source = "Baro_inHg", unit = "inHg" }\n'
            'wind = { source = "Wind_mph", unit = "mph" }\n'
            'humidity = { source = "RH_frac", unit = "dimensionless" }\n' + target_map
        )
        delimiter, decimal, encoding = ",", ".", "utf-8"
    else:
        # Metric but other names, kPa and km/h, semicolons and decimal commas;
        # the dew point is derived from a column in kelvin.
        columns = {
            "taupunkt K": dew + 273.15,
            "druck_kpa": pressure / 10.0,
            "wind_kmh": wind * 3.6,
            "feuchte": humidity,
            "ziel": y,
        }
        target_unit = "" if task == "classification" else ', unit = "MW"'
        mapping = (
            'dewpoint = { source = "`taupunkt K` - 273.15", unit = "degC" }\n'
            'pressure = { source = "druck_kpa", unit = "kPa" }\n'
            'wind = { source = "wind_kmh", unit = "km/h" }\n'
            'humidity = { source = "feuchte", unit = "%" }\n'
            f'{label} = {{ source = "ziel"{target_unit} }}\n'
        )
        delimiter, decimal, encoding = ";", ",", "utf-8"
    csv = root / f"city_{k}.csv"
    names = list(columns)
    lines = [delimiter.join(names)]
    cells = [_fmt(np.asarray(columns[c]), decimal) for c in names]
    lines += [delimiter.join(row) for row in zip(*cells, strict=True)]
    csv.write_text("\n".join(lines) + "\n", encoding=encoding)
    toml = root / f"city_{k}.toml"
    toml.write_text(
        f'[city]\nname = "city{k}"\ndata = "{csv.name}"\ndelimiter = "{delimiter}"\n'
        f'decimal = "{decimal}"\n\n[columns]\n{mapping}\n[policy]\n{policy}',
        encoding="utf-8",
    )
    return toml


def local_exchange(city_configs: list[Path]) -> LocalExchange:
    """Cities answered in this process by the city's own handlers, one node each.

    Each exchange object is one run; the nodes keep their state (audit trail,
    cache) beside their ``city.toml``.
    """
    return LocalExchange([responder(path) for path in city_configs])


class AlteredExchange:
    """The same cities, each exchange's replies passed through ``alter`` on the way back.

    Tests use it to reorder, corrupt or silence replies as a network or an attacker
    would; ``alter`` takes and returns the ``(node, reply)`` pairs of one exchange.
    """

    def __init__(
        self,
        inner: LocalExchange,
        alter: Callable[[list[tuple[int, CityReply]]], Iterable[tuple[int, CityReply]]],
    ) -> None:
        self.inner = inner
        self.alter = alter

    def nodes(self) -> list[int]:
        return self.inner.nodes()

    def exchange(
        self,
        instruction: Instruction,
        nodes: Sequence[int],
        personal: Mapping[int, Instruction] | None = None,
    ) -> Iterator[tuple[int, CityReply]]:
        yield from self.alter(list(self.inner.exchange(instruction, nodes, personal)))
