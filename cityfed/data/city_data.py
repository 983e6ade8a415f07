"""A city's usable rows in federation units, split into training and holdout rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cityfed.config.spec import CitySpec, FederationSpec
from cityfed.data.harmonise import harmonise
from cityfed.data.holdout import holdout_mask
from cityfed.typing import FloatArray

__all__ = ["CityData", "city_data", "load_city_data", "row_set"]


@dataclass(frozen=True)
class CityData:
    """A city's usable rows in federation columns and units, split for holdout."""

    city: str
    features: tuple[str, ...]
    X_train: FloatArray
    y_train: FloatArray
    X_holdout: FloatArray
    y_holdout: FloatArray
    rows_read: int
    drop_reasons: Mapping[str, int] = field(default_factory=dict)
    #: Poisson with an exposure: each row's exposure (None without one).
    exposure_train: FloatArray | None = None
    exposure_holdout: FloatArray | None = None

    @property
    def offset_train(self) -> FloatArray | None:
        """``log(exposure)`` of the training rows (the Poisson offset), or None."""
        return None if self.exposure_train is None else np.log(self.exposure_train)

    @property
    def offset_holdout(self) -> FloatArray | None:
        """``log(exposure)`` of the holdout rows, or None."""
        return None if self.exposure_holdout is None else np.log(self.exposure_holdout)

    @property
    def rows_used(self) -> int:
        """Usable rows, training and holdout together."""
        return int(self.y_train.shape[0] + self.y_holdout.shape[0])

    @property
    def rows_dropped(self) -> int:
        """Rows dropped under ``missing = "drop"``."""
        return self.rows_read - self.rows_used


def row_set(city: CitySpec, fed: FederationSpec) -> tuple[float, int]:
    """The city's holdout fraction and seed: its own ``[policy]`` ones, else the spec's.

    The city owns its row set: whatever a coordinator asks, the rows a city
    summarises for one agreed federation are always the same.
    """
    policy = city.policy
    fraction = fed.holdout_fraction if policy.holdout_fraction is None else policy.holdout_fraction
    seed = fed.seed if policy.seed is None else policy.seed
    return fraction, seed


def load_city_data(city: CitySpec, fed: FederationSpec) -> CityData:
    """Harmonise a city's CSV and split it into training and holdout rows."""
    table, rows_read, reasons = harmonise(city, fed)
    fraction, seed = row_set(city, fed)
    holdout = holdout_mask(table.shape[0], fraction, seed, city.name)
    return city_data(city.name, fed, table[~holdout], table[holdout], rows_read, reasons)


def city_data(
    city: str,
    fed: FederationSpec,
    train: FloatArray,
    holdout: FloatArray,
    rows_read: int,
    drop_reasons: Mapping[str, int],
) -> CityData:
    """:class:`CityData` from harmonised training and holdout tables.

    A table's columns are the design, the target, then the exposure if any (as
    :func:`~cityfed.data.harmonise.harmonise` gives them).
    """
    d = len(fed.design)
    exposure = fed.exposure is not None
    return CityData(
        city=city,
        features=fed.design_names,
        X_train=np.ascontiguousarray(train[:, :d]),
        y_train=np.ascontiguousarray(train[:, d]),
        X_holdout=np.ascontiguousarray(holdout[:, :d]),
        y_holdout=np.ascontiguousarray(holdout[:, d]),
        rows_read=rows_read,
        drop_reasons=drop_reasons,
        exposure_train=np.ascontiguousarray(train[:, d + 1]) if exposure else None,
        exposure_holdout=np.ascontiguousarray(holdout[:, d + 1]) if exposure else None,
    )
