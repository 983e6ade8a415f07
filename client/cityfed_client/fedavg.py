"""A city's local step of the iterative baseline: a warm-started scikit-learn fit.

This is the approach of Flower's own scikit-learn examples: each round a city
starts from the global weights and fits its own rows for ``local_epochs`` passes;
the coordinator averages the weights by row count
(:class:`cityfed.core.fedavg.WeightedAverage`).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDRegressor

from cityfed.config.spec import FederationSpec
from cityfed.typing import FloatArray

__all__ = ["local_update"]


def local_update(
    Z: FloatArray, y: FloatArray, w_global: FloatArray, fed: FederationSpec, round_number: int
) -> FloatArray:
    """One city's local fit, warm-started at the global weights (intercept first).

    Parameters
    ----------
    Z : ndarray of shape (n, d)
        The city's training features on the federation's scaled coordinates.
    y : ndarray of shape (n,)
        Target values or 0/1 labels.
    w_global : ndarray of shape (d + 1,)
        Global weights of the previous round.
    fed : FederationSpec
        Model kind, penalty, ``local_epochs`` and ``seed``.
    round_number : int
        Varies the shuffling from round to round, reproducibly.
    """
    n = y.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        if fed.task == "classification":
            if np.unique(y).size < 2:
                return w_global.copy()
            clf = LogisticRegression(C=fed.C, max_iter=fed.local_epochs, warm_start=True)
            clf.classes_ = np.array([0.0, 1.0])
            clf.coef_ = w_global[None, 1:].copy()
            clf.intercept_ = w_global[:1].copy()
            clf.fit(Z, y)
            return np.concatenate([clf.intercept_, clf.coef_[0]])
        reg = SGDRegressor(
            penalty="l2",
            alpha=fed.penalty / n,
            learning_rate="constant",
            eta0=0.01,
            max_iter=fed.local_epochs,
            tol=None,
            random_state=fed.seed + round_number,
        )
        reg.fit(Z, y, coef_init=w_global[1:].copy(), intercept_init=w_global[:1].copy())
        return np.concatenate([np.atleast_1d(reg.intercept_), reg.coef_]).astype(np.float64)
