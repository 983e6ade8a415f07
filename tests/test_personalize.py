"""The city's choice of the personalisation strength tau, by cross-validation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cityfed.core.personalize import TAU_GRID, choose_tau, fit_personal_linear
from cityfed.typing import FloatArray


def _squared_error(Z: FloatArray, y: FloatArray, w: FloatArray) -> float:
    return float(np.sum((y - w[0] - Z @ w[1:]) ** 2))


def _shrinking_to(w_global: FloatArray) -> Callable[[FloatArray, FloatArray, float], FloatArray]:
    def fit(Z: FloatArray, y: FloatArray, tau: float) -> FloatArray:
        return fit_personal_linear(Z, y, w_global, tau)

    return fit


def _city(slopes: FloatArray, n: int, noise: float, seed: int) -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, slopes.size))
    return Z, 2.0 + Z @ slopes + rng.normal(0.0, noise, n)


def test_a_city_like_the_federation_shrinks_all_the_way() -> None:
    # The global slopes are this city's truth; its own few rows are noisy.
    w_global = np.array([0.0, 1.5, -2.0, 0.5])
    Z, y = _city(w_global[1:], n=40, noise=3.0, seed=1)
    tau = choose_tau(Z, y, _shrinking_to(w_global), _squared_error, seed=0)
    assert tau >= 10.0 * y.size


def test_a_city_unlike_the_federation_keeps_its_own_slopes() -> None:
    # The federation says "no effect"; this city has strong, clean effects.
    w_global = np.zeros(4)
    Z, y = _city(np.array([3.0, -4.0, 2.0]), n=400, noise=0.1, seed=2)
    tau = choose_tau(Z, y, _shrinking_to(w_global), _squared_error, seed=0)
    assert tau <= 1e-2 * y.size
    personal = fit_personal_linear(Z, y, w_global, tau)
    np.testing.assert_allclose(personal[1:], [3.0, -4.0, 2.0], atol=0.05)


def test_tau_is_from_the_grid_and_reproducible() -> None:
    Z, y = _city(np.array([1.0, 0.0]), n=60, noise=1.0, seed=3)

    fit = _shrinking_to(np.array([0.0, 0.8, 0.1]))
    first = choose_tau(Z, y, fit, _squared_error, seed=5)
    assert first in [t * y.size for t in TAU_GRID]
    assert choose_tau(Z, y, fit, _squared_error, seed=5) == first


def test_too_few_rows_for_cross_validation_take_the_middle_of_the_grid() -> None:
    Z, y = _city(np.array([1.0]), n=3, noise=1.0, seed=4)
    tau = choose_tau(Z, y, _shrinking_to(np.zeros(2)), _squared_error)
    assert tau == TAU_GRID[len(TAU_GRID) // 2] * 3
