"""Ridge's ``alpha`` by k-fold cross-validation, exactly, from per-fold moments.

Every city splits its rows into the same ``k`` folds and sends the moments of
each; the coordinator merges them fold by fold, so it holds ``k`` summaries of
``[x_1 .. x_d, y]``. That is all cross-validation of ridge needs:

* The training part of fold ``j`` is the merge of the other folds (in index
  order). The fit on it is what ``make_pipeline(StandardScaler(), Ridge(alpha))``
  finds on those rows, the scaler refitted on the training part as it is inside
  ``GridSearchCV``: ``(Szz + alpha I) w = Szy`` on the training part's
  standardised features (:func:`~cityfed.core.linear.solve_penalised`).
* Its squared error on fold ``j`` depends on the fold's rows only through their
  count, mean and centred scatter ``S_j``. With ``v = [-w / scale, 1]`` and
  ``r`` the residual at the fold's mean,

  ``SSE_j = n_j r^2 + v^T S_j v``,

  so ``R²_j = 1 - SSE_j / SST_j`` (``SST_j`` the last diagonal entry of ``S_j``)
  and ``MSE_j = SSE_j / n_j`` are sklearn's ``r2_score`` and
  ``mean_squared_error`` on the fold's rows, to rounding.

The residual at the fold's mean is computed from differences of the fold's and
the training part's two-double means (``mean`` and ``low``), so a feature at
``1e9 +- 1e-3`` keeps the digits of its spread. The choice of ``alpha`` is
``GridSearchCV``'s: the unweighted mean of the per-fold scores, the first alpha
of the grid among equal best means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cityfed.core.linear import solve_penalised
from cityfed.core.scaling import Scaler
from cityfed.core.stats import Moments, merge_all
from cityfed.typing import FloatArray, IntArray

__all__ = ["DEFAULT_ALPHAS", "SCORINGS", "RidgeCVResult", "Scoring", "ridge_cv"]

#: The scores :func:`ridge_cv` can select by, named as in scikit-learn.
Scoring = Literal["r2", "neg_mean_squared_error"]

#: The accepted values of ``scoring``.
SCORINGS: tuple[Scoring, ...] = ("r2", "neg_mean_squared_error")

#: One alpha per decade from 1e-3 to 1e3 (seven values), sklearn's ``RidgeCV``
#: default ``(0.1, 1.0, 10.0)`` widened by two decades each way.
#:
#: On standardised features, ridge shrinks the fit along an eigen-direction of the
#: training features' correlation matrix with eigenvalue ``mu`` by the factor
#: ``n mu / (n mu + alpha)`` (``n`` the training rows). At 1e-3 that is least
#: squares to four digits for any direction with ``n mu >= 10``, yet exactly
#: collinear features still get a unique solution; at 1e3 a direction with
#: ``mu = 1`` is halved on a thousand rows, and nearly collinear directions
#: (``mu ~ 1e-3``) are shrunk away on up to a million, which is where ridge earns
#: its keep on large federations (strong directions are estimated well there
#: without help). A decade between neighbours is ``RidgeCV``'s own resolution.
#: The same grid as ``alpha = "cv"``'s default in the federation spec.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(10.0**k for k in range(-3, 4))


@dataclass(frozen=True)
class RidgeCVResult:
    """Cross-validated scores of ridge for each alpha of a grid, and the choice.

    Attributes
    ----------
    alphas : ndarray of shape (m,)
        The grid, in the order given.
    scoring : {"r2", "neg_mean_squared_error"}
        The score the choice maximises.
    fold_sizes : ndarray of shape (k,)
        Rows in each fold.
    r2 : ndarray of shape (m, k)
        Test R² of each alpha on each fold (``split{j}_test_score`` of
        ``GridSearchCV`` with ``scoring="r2"``). NaN on a fold whose ``y`` is
        constant, which only ``scoring="neg_mean_squared_error"`` accepts.
    mse : ndarray of shape (m, k)
        Test mean squared error of each alpha on each fold.
    mean_r2 : ndarray of shape (m,)
        Unweighted mean of ``r2`` over the folds (``mean_test_score``).
    best_index : int
        Position in the grid of the chosen alpha: the best mean score, the first
        such alpha among equal means (``GridSearchCV.best_index_``).
    best_alpha : float
        ``alphas[best_index]``.
    """

    alphas: FloatArray
    scoring: Scoring
    fold_sizes: IntArray
    r2: FloatArray
    mse: FloatArray
    mean_r2: FloatArray
    best_index: int
    best_alpha: float

    @property
    def mean_mse(self) -> FloatArray:
        """Unweighted mean of ``mse`` over the folds, for each alpha."""
        return np.asarray(self.mse.mean(axis=1), dtype=np.float64)

    @property
    def split_test_scores(self) -> FloatArray:
        """Per-alpha, per-fold scores of ``scoring`` (shape ``(m, k)``), sklearn's sign."""
        return self.r2 if self.scoring == "r2" else -self.mse

    @property
    def mean_test_score(self) -> FloatArray:
        """Per-alpha mean score of ``scoring`` over the folds, sklearn's ``mean_test_score``."""
        return self.mean_r2 if self.scoring == "r2" else -self.mean_mse

    @property
    def best_score(self) -> float:
        """The chosen alpha's mean score (``GridSearchCV.best_score_``)."""
        return float(self.mean_test_score[self.best_index])


def ridge_cv(
    folds: Sequence[Moments],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    standardize: bool = True,
    scoring: Scoring = "r2",
    unscaled: Sequence[bool] | None = None,
) -> RidgeCVResult:
    """Score ridge on each fold for each alpha, trained on the other folds.

    Parameters
    ----------
    folds : sequence of Moments
        Fold ``j``'s moments of the rows ``[x_1 .. x_d, y]`` (every city's fold
        ``j`` merged); at least two folds, none empty, all with the same columns.
    alphas : sequence of float, default DEFAULT_ALPHAS
        The grid: finite values ``>= 0`` (0 is least squares, minimum-norm when
        the training features are collinear).
    standardize : bool, default True
        Fit on features standardised by the training part's ``StandardScaler``
        (``make_pipeline(StandardScaler(), Ridge(alpha))``); ``False`` is
        ``Ridge(alpha)`` on the raw features.
    scoring : {"r2", "neg_mean_squared_error"}, default "r2"
        What the choice maximises; ``"r2"`` is ``GridSearchCV``'s default for a
        regressor.
    unscaled : sequence of bool, optional
        One flag per feature: columns centred but not divided by their scale
        when standardising (a categorical feature's 0/1 indicators, passed
        through a ``ColumnTransformer`` beside the ``StandardScaler``), as in
        :meth:`~cityfed.core.scaling.Scaler.from_moments`.

    Returns
    -------
    RidgeCVResult
        Per-fold R² and MSE for every alpha, their means, and the chosen alpha.

    Raises
    ------
    ValueError
        With fewer than two folds, an empty fold (named), folds of different
        widths or without a feature, non-finite moments, an empty grid or an
        alpha that is negative or not finite, an unknown ``scoring``, or
        ``unscaled`` of the wrong length. With ``scoring="r2"``, also on a fold
        (named) whose ``y`` is constant or which has a single row: its R² is
        undefined, and sklearn's stand-in for it (0.0, or 1.0 for a perfect
        fit) depends on whether ``np.mean`` of the constant rounds back to it
        (when it does not, the score is about ``-5e27``), so no alpha can be
        chosen honestly by it; ``"neg_mean_squared_error"`` is defined there.
    """
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    grid = _check_alphas(alphas)
    _check_folds(folds)
    k = len(folds)
    p = folds[0].dim
    d = p - 1
    if unscaled is not None and len(unscaled) != d:
        raise ValueError(f"unscaled has {len(unscaled)} flags for {d} features")
    r2 = np.empty((grid.size, k))
    mse = np.empty((grid.size, k))
    for j, test in enumerate(folds):
        sst = float(test.scatter[d, d])
        if sst <= 0.0 and scoring == "r2":
            raise ValueError(
                f"fold {j}: y is constant on its {test.n} row(s), so its R² is undefined; "
                'score by "neg_mean_squared_error", or fold the rows differently'
            )
        train = merge_all((folds[i] for i in range(k) if i != j), p)
        scaler = Scaler.from_moments(train, d, standardize, unscaled)
        _, train_scatter = scaler.scaled_moments(train)
        factor = np.ones(p)
        factor[:d] = 1.0 / scaler.scale
        # The fold's mean against the training mean, both as two doubles: close
        # means subtract exactly, and their low parts restore what rounding left.
        shift = ((test.mean - train.mean) + (test.low - train.low)) * factor
        test_scatter = test.scatter * np.outer(factor, factor)
        for a, alpha in enumerate(grid):
            w, _ = solve_penalised(train_scatter[:d, :d], train_scatter[:d, d], float(alpha))
            # Residual at the fold's mean: the model's intercept is the training
            # mean of y, its prediction there ybar_train + w . (zbar_j - zbar_train).
            residual = float(shift[d] - w @ shift[:d])
            v = np.append(-w, 1.0)
            spread = max(float(v @ test_scatter @ v), 0.0)
            sse = test.n * residual**2 + spread
            mse[a, j] = sse / test.n
            r2[a, j] = 1.0 - sse / sst if sst > 0.0 else math.nan
    mean_r2 = r2.mean(axis=1)
    target = mean_r2 if scoring == "r2" else -mse.mean(axis=1)
    # np.argmax keeps the first of equal maxima: GridSearchCV ranks with
    # rankdata(method="min") and takes the first of the best rank.
    best = int(np.argmax(target))
    sizes = np.array([fold.n for fold in folds], dtype=np.int64)
    for array in (grid, sizes, r2, mse, mean_r2):
        array.flags.writeable = False
    return RidgeCVResult(
        alphas=grid,
        scoring=scoring,
        fold_sizes=sizes,
        r2=r2,
        mse=mse,
        mean_r2=mean_r2,
        best_index=best,
        best_alpha=float(grid[best]),
    )


def _check_alphas(alphas: Sequence[float]) -> FloatArray:
    """The grid as a float array, refused when empty, negative or not finite."""
    grid = np.array([float(alpha) for alpha in alphas], dtype=np.float64)
    if grid.size == 0:
        raise ValueError("the alpha grid is empty")
    bad = [float(alpha) for alpha in grid if not (math.isfinite(alpha) and alpha >= 0.0)]
    if bad:
        raise ValueError(f"every alpha must be finite and >= 0, got {bad}")
    return grid


def _check_folds(folds: Sequence[Moments]) -> None:
    """Refuse fewer than two folds, an empty one, or folds of different widths."""
    if len(folds) < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {len(folds)}")
    p = folds[0].dim
    if p < 2:
        raise ValueError(f"folds need at least one feature and y, got {p} column(s)")
    for j, fold in enumerate(folds):
        if fold.dim != p:
            raise ValueError(f"fold {j} has {fold.dim} columns, fold 0 has {p}")
        if fold.n == 0:
            raise ValueError(f"fold {j} is empty")
        finite = np.isfinite(fold.mean).all() and np.isfinite(fold.low).all()
        if not (finite and np.isfinite(fold.scatter).all()):
            raise ValueError(f"fold {j} has non-finite moments")
