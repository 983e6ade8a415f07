"""Exact linear and ridge regression from pooled moments: one training round.

With rows standardised by the pooled scaler, sklearn's
``make_pipeline(StandardScaler(), Ridge(alpha))`` solves
``(Szz + alpha I) w = Szy`` on centred data and sets the intercept to the mean of
``y``; ``LinearRegression`` takes the minimum-norm least-squares solution. Both
depend on the rows only through their count, mean and centred scatter, which the
cities send and :class:`~cityfed.core.stats.Moments` combines exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments
from cityfed.typing import FloatArray

__all__ = ["RANK_RTOL", "LinearFit", "fit_linear", "solve_penalised"]


#: Eigenvalues of the feature correlation matrix below this fraction of the
#: largest count as exact collinearity (the matrix carries rounding of ~1e-16).
RANK_RTOL = 1e-11


@dataclass(frozen=True)
class LinearFit:
    """A fitted linear model on scaled features and in federation units."""

    scaler: Scaler
    coef_scaled: FloatArray
    intercept_scaled: float
    coef: FloatArray
    intercept: float
    rank: int
    train_r2: float | None


def solve_penalised(Szz: FloatArray, Szy: FloatArray, penalty: float) -> tuple[FloatArray, int]:
    """Solve ``(Szz + penalty I) w = Szy``; minimum-norm when unpenalised and singular.

    Parameters
    ----------
    Szz : ndarray of shape (d, d)
        Centred scatter of the (scaled) features.
    Szy : ndarray of shape (d,)
        Centred cross-products of features and target.
    penalty : float
        Ridge strength; 0 gives ordinary least squares.

    Returns
    -------
    tuple
        The weights and the numerical rank of ``Szz``.
    """
    d = Szz.shape[0]
    if d == 0:
        return np.zeros(0), 0
    # Rank is invariant under diagonal scaling, so decide it on the correlation
    # matrix, whose eigenvalues lie in [0, d] whatever the units.
    diag = np.sqrt(np.clip(np.diag(Szz), 0.0, None))
    live = diag > 0.0
    norm = np.where(live, diag, 1.0)
    corr = Szz / np.outer(norm, norm)
    corr_eig = np.linalg.eigvalsh(corr[np.ix_(live, live)]) if live.any() else np.zeros(0)
    top = float(corr_eig.max()) if corr_eig.size else 0.0
    rank = int(np.sum(corr_eig > RANK_RTOL * max(top, 1.0)))
    if penalty > 0.0:
        matrix = Szz + penalty * np.eye(d)
        try:
            factor = scipy.linalg.cho_factor(matrix, check_finite=False)
            return scipy.linalg.cho_solve(factor, Szy, check_finite=False), rank
        except np.linalg.LinAlgError:
            return scipy.linalg.lstsq(matrix, Szy)[0], rank
    if rank == d:
        # Full rank: solve on the correlation scale, which is far better conditioned.
        w_corr = scipy.linalg.solve(corr, Szy / norm, assume_a="pos", check_finite=False)
        return w_corr / norm, rank
    # Collinear: the minimum-norm solution in these coordinates, as lstsq gives.
    eigval, eigvec = np.linalg.eigh(Szz)
    order = np.argsort(eigval)[::-1][:rank]
    kept_val, kept_vec = eigval[order], eigvec[:, order]
    return kept_vec @ ((kept_vec.T @ Szy) / kept_val), rank


def fit_linear(
    moments: Moments,
    *,
    penalty: float,
    standardize: bool,
    unscaled: Sequence[bool] | None = None,
) -> LinearFit:
    """The pooled least-squares or ridge fit from pooled moments of ``[x, y]``.

    Parameters
    ----------
    moments : Moments
        Pooled count, mean and centred scatter of features then target.
    penalty : float
        ``alpha`` of sklearn's ``Ridge``; 0 for ``LinearRegression``.
    standardize : bool
        Fit on features scaled by the pooled ``StandardScaler``.
    unscaled : Sequence[bool], optional
        Columns left unscaled (a categorical feature's indicators), as in
        :meth:`~cityfed.core.scaling.Scaler.from_moments`.

    Returns
    -------
    LinearFit
        Equal to sklearn's pipeline fitted on the pooled rows, to rounding.
    """
    d = moments.dim - 1
    if moments.n == 0:
        raise ValueError("no rows to fit")
    scaler = Scaler.from_moments(moments, d, standardize, unscaled)
    mean, scatter = scaler.scaled_moments(moments)
    Szz, Szy = scatter[:d, :d], scatter[:d, d]
    w, rank = solve_penalised(Szz, Szy, penalty)
    intercept_scaled = float(mean[d] - w @ mean[:d])
    coef, intercept = scaler.unscale(w, intercept_scaled)
    syy = float(scatter[d, d])
    rss = syy - 2.0 * float(w @ Szy) + float(w @ Szz @ w)
    train_r2 = 1.0 - max(rss, 0.0) / syy if syy > 0.0 else None
    return LinearFit(scaler, w, intercept_scaled, coef, intercept, rank, train_r2)
