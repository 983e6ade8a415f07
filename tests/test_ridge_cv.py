from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import DEFAULT_CV_ALPHAS
from cityfed.core.ridge_cv import DEFAULT_ALPHAS, SCORINGS, RidgeCVResult, Scoring, ridge_cv
from cityfed.core.stats import Moments, merge_all

# Ridge on raw features of scales 1e-6 .. 1e9 is a badly scaled (not an
# ill-posed) system: scipy says so, sklearn's answer and ours still agree.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")

#: Per-alpha scores must agree this closely (relative, or absolute near zero).
RTOL = 1e-9


@dataclass(frozen=True)
class Case:
    X: np.ndarray
    y: np.ndarray
    test_fold: np.ndarray  # fold label of each row, 0 .. k-1

    @property
    def k(self) -> int:
        return int(self.test_fold.max()) + 1

    def fold_moments(self) -> list[Moments]:
        table = np.column_stack([self.X, self.y])
        return [Moments.of(table[self.test_fold == j]) for j in range(self.k)]


def _make_case(
    rng: np.random.Generator,
    sizes: list[int],
    scales: np.ndarray,
    offsets: np.ndarray,
    noise: float = 1.0,
) -> Case:
    d = scales.shape[0]
    n = sum(sizes)
    Z = rng.normal(size=(n, d))
    X = offsets + scales * Z
    # y from the unrounded Z: a target of moderate size whatever the features' units.
    y = Z @ rng.normal(size=d) + 2.5 + noise * rng.normal(size=n)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return Case(X, y, rng.permutation(labels))


@st.composite
def cases(draw: st.DrawFn, primal: bool = False) -> Case:
    """Unequal folds, features of scales 1e-6 .. 1e9 at offsets up to 1e9 spreads.

    ``primal``: every fold has more rows than there are features, so every
    training part does too. sklearn's ``Ridge`` solves the dual ``n x n`` system
    on training parts with fewer rows than features; on raw features of very
    different scales its kernel ``X X^T`` drowns the small features in the
    rounding of the large (R² off by 0.2 in one draw), where ours, always the
    ``d x d`` primal system, agrees with exact arithmetic
    (``test_raw_fits_equal_exact_rational_arithmetic``). Standardised features
    all have scale 1, and both sklearn paths are accurate.
    """
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    k = draw(st.integers(min_value=2, max_value=10))
    d = draw(st.integers(min_value=1, max_value=5))
    sizes = [int(s) for s in rng.integers(d + 1 if primal else 2, 40, size=k)]  # unequal folds
    scales = 10.0 ** rng.uniform(-6, 9, size=d)
    # Offsets up to 1e9 spreads from zero: 1e9 +- 1 for a feature of scale 1.
    ratios = rng.choice([0.0, 1e3, 1e6, 1e9], size=d) * rng.choice([-1.0, 1.0], size=d)
    return _make_case(rng, sizes, scales, ratios * scales, noise=float(rng.uniform(0.1, 2.0)))


alpha_grids = st.lists(
    st.sampled_from([1e-3, 1e-2, 0.1, 0.5, 1.0, 3.0, 10.0, 100.0, 1e3, 1e5]),
    min_size=1,
    max_size=6,
)


def _grid_search(case: Case, alphas: list[float], standardize: bool) -> dict[str, np.ndarray]:
    """sklearn's cross-validation on the pooled rows, both scores in one search.

    Without standardising, ``Ridge`` sits behind a centring-only scaler: the same
    model (``Ridge`` centres its features anyway), but sklearn's prediction then
    forms ``x - mean`` before multiplying, so features at 1e9 keep their digits
    in the reference too (plain ``Ridge`` computes ``x @ coef + intercept``, which
    loses ~1e-7 of the fit there; see the ``RidgeCV`` tests).
    """
    pipe = make_pipeline(StandardScaler(with_std=standardize), Ridge())
    search = GridSearchCV(
        pipe,
        {"ridge__alpha": alphas},
        cv=PredefinedSplit(case.test_fold),
        scoring=list(SCORINGS),
        refit=False,
    )
    return search.fit(case.X, case.y).cv_results_  # type: ignore[no-any-return]


def _splits(results: dict[str, np.ndarray], scoring: str, k: int) -> np.ndarray:
    return np.column_stack([results[f"split{j}_test_{scoring}"] for j in range(k)])


def _assert_same_choice(ours: RidgeCVResult, reference_means: np.ndarray, best: int) -> None:
    """The same alpha as sklearn, unless two scores tie to rounding (then either)."""
    if ours.best_index != best:
        gap = abs(reference_means[ours.best_index] - reference_means[best])
        assert gap <= RTOL * max(abs(reference_means[best]), 1.0), (ours.best_index, best)


def _assert_equals_grid_search(
    ours: RidgeCVResult, results: dict[str, np.ndarray], k: int, rtol: float = RTOL
) -> None:
    np.testing.assert_allclose(ours.mean_r2, results["mean_test_r2"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ours.r2, _splits(results, "r2", k), rtol=rtol, atol=rtol)
    mse = -_splits(results, "neg_mean_squared_error", k)
    np.testing.assert_allclose(ours.mse, mse, rtol=rtol)
    scoring = ours.scoring
    np.testing.assert_allclose(
        ours.mean_test_score, results[f"mean_test_{scoring}"], rtol=rtol, atol=rtol
    )
    np.testing.assert_allclose(
        ours.split_test_scores, _splits(results, scoring, k), rtol=rtol, atol=rtol
    )
    # GridSearchCV's best_index_ is the first of the lowest rank_test_<scoring>.
    best = int(results[f"rank_test_{scoring}"].argmin())
    _assert_same_choice(ours, results[f"mean_test_{scoring}"], best)


@given(case=cases(), alphas=alpha_grids, scoring=st.sampled_from(SCORINGS))
@settings(max_examples=10, deadline=None)
def test_equals_grid_search_on_pooled_rows(
    case: Case, alphas: list[float], scoring: Scoring
) -> None:
    _check_against_grid_search(case, alphas, scoring, standardize=True)


@given(case=cases(primal=True), alphas=alpha_grids, scoring=st.sampled_from(SCORINGS))
@settings(max_examples=10, deadline=None)
def test_equals_grid_search_on_pooled_raw_rows(
    case: Case, alphas: list[float], scoring: Scoring
) -> None:
    _check_against_grid_search(case, alphas, scoring, standardize=False)


def _check_against_grid_search(
    case: Case, alphas: list[float], scoring: Scoring, standardize: bool
) -> None:
    # Execute
    ours = ridge_cv(case.fold_moments(), alphas, standardize=standardize, scoring=scoring)
    # Assert
    results = _grid_search(case, alphas, standardize)
    _assert_equals_grid_search(ours, results, case.k)
    np.testing.assert_array_equal(ours.alphas, alphas)
    np.testing.assert_array_equal(ours.fold_sizes, np.bincount(case.test_fold))


@pytest.mark.parametrize("k", range(2, 11))
def test_every_fold_count_from_2_to_10(k: int) -> None:
    # Prepare: unequal folds, features of scales 1e-6 .. 1e9, one at 1e9 +- 1
    rng = np.random.default_rng(100 + k)
    sizes = [int(s) for s in rng.integers(5, 30, size=k)]
    scales = np.array([1e-6, 1.0, 1e9, 3e-2])
    offsets = np.array([0.0, 1e9, -5e9, 1e3])
    case = _make_case(rng, sizes, scales, offsets)
    alphas = [1e-3, 0.3, 10.0, 1e3]
    for standardize in (True, False):
        results = _grid_search(case, alphas, standardize)
        for scoring in SCORINGS:
            # Execute
            ours = ridge_cv(case.fold_moments(), alphas, standardize=standardize, scoring=scoring)
            # Assert
            _assert_equals_grid_search(ours, results, k)


@pytest.mark.parametrize("standardize", [True, False])
def test_features_at_1e9_with_spread_1e_minus_3_keep_their_digits(standardize: bool) -> None:
    # Prepare: one double at 1e9 holds ~7 digits of a 1e-3 spread; the two-double
    # means of the folds and the training parts keep the rest.
    rng = np.random.default_rng(7)
    case = _make_case(rng, [40, 55, 61, 44], np.full(3, 1e-3), np.array([1e9, -1e9, 1e9 + 0.5]))
    alphas = [1e-9, 1e-7, 1e-6, 1e-5, 1e-3]
    # Execute
    ours = ridge_cv(case.fold_moments(), alphas, standardize=standardize)
    # Assert
    _assert_equals_grid_search(ours, _grid_search(case, alphas, standardize), case.k)
    assert 0.0 < ours.best_score < 1.0


def test_grid_search_best_index_and_best_score() -> None:
    # Prepare
    rng = np.random.default_rng(3)
    case = _make_case(rng, [30, 50, 20, 45, 35], np.array([1.0, 10.0, 0.1]), np.zeros(3), 2.0)
    alphas = [1e5, 10.0, 1e-3, 100.0, 1.0]
    for scoring in SCORINGS:
        search = GridSearchCV(
            make_pipeline(StandardScaler(), Ridge()),
            {"ridge__alpha": alphas},
            cv=PredefinedSplit(case.test_fold),
            scoring=scoring,
        ).fit(case.X, case.y)
        # Execute
        ours = ridge_cv(case.fold_moments(), alphas, scoring=scoring)
        # Assert
        assert ours.best_index == search.best_index_
        assert ours.best_alpha == search.best_params_["ridge__alpha"]
        assert ours.best_score == pytest.approx(search.best_score_, rel=RTOL)
        np.testing.assert_allclose(
            ours.mean_test_score, search.cv_results_["mean_test_score"], rtol=RTOL
        )


@given(case=cases(primal=True), alphas=alpha_grids)
@settings(max_examples=10, deadline=None)
def test_ridge_cv_on_raw_features_picks_the_same_alpha(case: Case, alphas: list[float]) -> None:
    # Prepare: sklearn's RidgeCV (a GridSearchCV over plain Ridge with cv given)
    search = RidgeCV(alphas=alphas, cv=PredefinedSplit(case.test_fold)).fit(case.X, case.y)
    # Execute
    ours = ridge_cv(case.fold_moments(), alphas, standardize=False)
    # Assert: plain Ridge predicts as x @ coef + intercept, which at 1e9 offsets
    # leaves ~1e-7 of the fit in sklearn's scores (not in ours); so compare the
    # choice to sklearn's own precision, and the scores to the centred pipeline.
    if ours.best_alpha != search.alpha_:
        assert abs(ours.mean_r2[alphas.index(search.alpha_)] - ours.best_score) <= 1e-6
    assert ours.best_score == pytest.approx(search.best_score_, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_ridge_cv_on_moderate_raw_features_agrees_tightly(k: int) -> None:
    rng = np.random.default_rng(k)
    sizes = [int(s) for s in rng.integers(5, 40, size=k)]
    case = _make_case(rng, sizes, np.array([0.1, 1.0, 50.0, 3.0]), np.array([0.0, 1e3, -20.0, 5.0]))
    alphas = [1e-3, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4]
    search = RidgeCV(alphas=alphas, cv=PredefinedSplit(case.test_fold)).fit(case.X, case.y)
    ours = ridge_cv(case.fold_moments(), alphas, standardize=False)
    assert ours.best_alpha == search.alpha_
    assert ours.best_score == pytest.approx(search.best_score_, rel=RTOL)


@st.composite
def federated_cases(draw: st.DrawFn) -> tuple[Case, np.ndarray, bool]:
    standardize = draw(st.booleans())
    case = draw(cases(primal=not standardize))
    cities = draw(st.integers(min_value=1, max_value=5))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    city = np.random.default_rng(seed).integers(0, cities, size=case.y.shape[0])
    return case, city, standardize


@given(federated=federated_cases(), alphas=alpha_grids)
@settings(max_examples=10, deadline=None)
def test_folds_merged_from_cities_give_the_pooled_result(
    federated: tuple[Case, np.ndarray, bool], alphas: list[float]
) -> None:
    # Prepare: every city sends the moments of its rows of each fold (some of
    # them empty); the coordinator merges them fold by fold, in city order.
    case, city, standardize = federated
    table = np.column_stack([case.X, case.y])
    p = table.shape[1]
    folds = [
        merge_all(
            (
                Moments.of(table[(case.test_fold == j) & (city == c)])
                for c in range(int(city.max()) + 1)
            ),
            p,
        )
        for j in range(case.k)
    ]
    # Execute
    federated_result = ridge_cv(folds, alphas, standardize=standardize)
    pooled_result = ridge_cv(case.fold_moments(), alphas, standardize=standardize)
    # Assert: the same as one table per fold, and as sklearn on the pooled rows
    np.testing.assert_allclose(federated_result.r2, pooled_result.r2, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(federated_result.mse, pooled_result.mse, rtol=1e-10)
    _assert_same_choice(federated_result, pooled_result.mean_r2, pooled_result.best_index)
    _assert_equals_grid_search(federated_result, _grid_search(case, alphas, standardize), case.k)


def _solve_exact(A: list[list[Fraction]], b: list[Fraction]) -> list[Fraction]:
    """Gaussian elimination in rationals (A symmetric positive definite)."""
    n = len(b)
    M = [[*row, rhs] for row, rhs in zip(A, b, strict=True)]
    for c in range(n):
        for r in range(c + 1, n):
            f = M[r][c] / M[c][c]
            M[r] = [a - f * p for a, p in zip(M[r], M[c], strict=True)]
    x = [Fraction(0)] * n
    for i in reversed(range(n)):
        x[i] = (M[i][n] - sum((M[i][j] * x[j] for j in range(i + 1, n)), Fraction(0))) / M[i][i]
    return x


def _exact_raw_scores(case: Case, alphas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """R² and MSE of raw-feature ridge on each fold, in exact rational arithmetic.

    Every double is a rational: centring, the normal equations, the solve and the
    residuals of each test row are computed without rounding; only the final
    scores are rounded to doubles.
    """
    d = case.X.shape[1]
    X = [[Fraction(v) for v in row] for row in case.X.tolist()]
    y = [Fraction(v) for v in case.y.tolist()]
    r2, mse = np.empty((len(alphas), case.k)), np.empty((len(alphas), case.k))
    zero = Fraction(0)
    for j in range(case.k):
        train = [i for i in range(len(y)) if case.test_fold[i] != j]
        test = [i for i in range(len(y)) if case.test_fold[i] == j]
        mx = [sum((X[i][a] for i in train), zero) / len(train) for a in range(d)]
        my = sum((y[i] for i in train), zero) / len(train)
        xc = [[X[i][a] - mx[a] for a in range(d)] for i in train]
        yc = [y[i] - my for i in train]
        Sxx = [[sum((r[a] * r[b] for r in xc), zero) for b in range(d)] for a in range(d)]
        Sxy = [sum((r[a] * t for r, t in zip(xc, yc, strict=True)), zero) for a in range(d)]
        test_mean = sum((y[i] for i in test), zero) / len(test)
        sst = sum(((y[i] - test_mean) ** 2 for i in test), zero)
        for m, alpha in enumerate(alphas):
            penalised = [
                [Sxx[a][b] + (Fraction(alpha) if a == b else zero) for b in range(d)]
                for a in range(d)
            ]
            w = _solve_exact(penalised, Sxy)
            sse = sum(
                (
                    (y[i] - my - sum((w[a] * (X[i][a] - mx[a]) for a in range(d)), zero)) ** 2
                    for i in test
                ),
                zero,
            )
            mse[m, j] = float(sse / len(test))
            r2[m, j] = float(1 - sse / sst)
    return r2, mse


def _scaled_condition(case: Case, alphas: list[float]) -> np.ndarray:
    """Condition number of each training part's ``Sxx + alpha I``, equilibrated.

    Any floating-point solve, ours included, perturbs the solution by about this
    times the rounding of the moments (~1e-16): e.g. two training rows for two
    features of scale 1e5 give a singular ``Sxx`` that ``alpha = 1e-3`` lifts by
    only 1e-13 of its diagonal.
    """
    folds = case.fold_moments()
    d = case.X.shape[1]
    cond = np.empty((len(alphas), case.k))
    for j in range(case.k):
        train = merge_all((f for i, f in enumerate(folds) if i != j), d + 1)
        for m, alpha in enumerate(alphas):
            A = train.scatter[:d, :d] + alpha * np.eye(d)
            D = np.sqrt(np.diag(A))
            cond[m, j] = np.linalg.cond(A / np.outer(D, D))
    return cond


@given(case=cases(), alphas=alpha_grids)
@settings(max_examples=10, deadline=None)
def test_raw_fits_equal_exact_rational_arithmetic(case: Case, alphas: list[float]) -> None:
    # Execute: every fold size from 2 rows, so training parts with fewer rows
    # than features too (where sklearn's dual solver loses the small features)
    ours = ridge_cv(case.fold_moments(), alphas, standardize=False)
    # Assert: wherever the problem itself is well conditioned
    r2, mse = _exact_raw_scores(case, alphas)
    posed = _scaled_condition(case, alphas) < 1e6
    np.testing.assert_allclose(ours.r2[posed], r2[posed], rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(ours.mse[posed], mse[posed], rtol=RTOL)


def test_fewer_training_rows_than_features_on_raw_scales_is_exact() -> None:
    # Prepare: 4 training rows for 5 features of scales 1e-5 .. 1e8 (sklearn's
    # Ridge takes its dual path here and scores fold 0 up to 0.12 off)
    rng = np.random.default_rng(79)
    scales = np.array([6e7, 3e-6, 2e-5, 8e-5, 16.0])
    case = _make_case(rng, [35, 4], scales, np.array([0.0, 3e3, 0.0, -8e4, 0.0]))
    alphas = [1e-3, 1.0, 1e3]
    # Execute
    ours = ridge_cv(case.fold_moments(), alphas, standardize=False)
    # Assert: a well-conditioned problem, which the dual system is not
    assert (_scaled_condition(case, alphas) < 1e3).all()
    r2, mse = _exact_raw_scores(case, alphas)
    np.testing.assert_allclose(ours.r2, r2, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(ours.mse, mse, rtol=RTOL)


def test_ties_go_to_the_first_alpha_of_the_grid() -> None:
    # Prepare: a constant feature gives the same (intercept-only) model for every
    # alpha, so every score ties exactly, in sklearn and here.
    rng = np.random.default_rng(11)
    n = 60
    X = np.column_stack([np.full(n, 5.0), np.full(n, -3.25)])
    y = rng.normal(size=n)
    case = Case(X, y, np.repeat(np.arange(3), 20))
    alphas = [10.0, 0.1, 1.0, 0.0]
    for scoring in SCORINGS:
        search = GridSearchCV(
            make_pipeline(StandardScaler(), Ridge()),
            {"ridge__alpha": alphas},
            cv=PredefinedSplit(case.test_fold),
            scoring=scoring,
        ).fit(X, y)
        # Execute
        ours = ridge_cv(case.fold_moments(), alphas, scoring=scoring)
        # Assert: first in grid order, not the smallest alpha
        assert len(set(ours.mean_test_score.tolist())) == 1
        assert search.best_index_ == 0
        assert ours.best_index == 0
        assert ours.best_alpha == 10.0


def test_a_repeated_alpha_ties_with_itself_and_the_first_wins() -> None:
    rng = np.random.default_rng(12)
    case = _make_case(rng, [25, 30, 35], np.array([1.0, 2.0]), np.zeros(2), 3.0)
    alphas = [1e4, 30.0, 30.0, 1e5]
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()),
        {"ridge__alpha": alphas},
        cv=PredefinedSplit(case.test_fold),
    ).fit(case.X, case.y)
    ours = ridge_cv(case.fold_moments(), alphas)
    assert ours.mean_r2[1] == ours.mean_r2[2]
    assert ours.best_index == search.best_index_ == 1


def test_unpenalised_alpha_zero_is_least_squares() -> None:
    rng = np.random.default_rng(13)
    case = _make_case(rng, [30, 40, 25, 33], np.array([1.0, 1e4, 1e-2]), np.array([0.0, 1e6, 1.0]))
    alphas = [0.0, 1.0, 1e3]
    for standardize in (True, False):
        ours = ridge_cv(case.fold_moments(), alphas, standardize=standardize)
        _assert_equals_grid_search(ours, _grid_search(case, alphas, standardize), case.k)


def test_default_grid() -> None:
    assert DEFAULT_ALPHAS == (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
    # sklearn's own RidgeCV default grid is part of it
    assert {0.1, 1.0, 10.0} <= set(DEFAULT_ALPHAS)
    # and alpha = "cv" in a federation spec searches the same grid by default
    assert DEFAULT_ALPHAS == DEFAULT_CV_ALPHAS
    rng = np.random.default_rng(14)
    case = _make_case(rng, [20, 30, 40], np.ones(2), np.zeros(2))
    result = ridge_cv(case.fold_moments())
    np.testing.assert_array_equal(result.alphas, DEFAULT_ALPHAS)
    assert result.scoring == "r2"


def test_indicators_left_unscaled_equal_a_column_transformer() -> None:
    # Prepare: two numeric features and the 0/1 indicators of a 3-level category
    rng = np.random.default_rng(16)
    n = 150
    numeric = rng.normal(size=(n, 2)) * [10.0, 0.01] + [1e3, 0.0]
    level = rng.integers(0, 3, size=n)
    indicators = np.column_stack([level == 1, level == 2]).astype(float)
    X = np.column_stack([numeric[:, 0], indicators[:, 0], numeric[:, 1], indicators[:, 1]])
    y = numeric @ [0.1, 100.0] + indicators @ [2.0, -1.0] + rng.normal(size=n)
    case = Case(X, y, rng.permutation(np.repeat(np.arange(4), [30, 45, 35, 40])))
    mask = [False, True, False, True]
    alphas = [0.01, 1.0, 10.0, 100.0]
    columns = ColumnTransformer(
        [("numeric", StandardScaler(), [0, 2]), ("levels", "passthrough", [1, 3])]
    )
    for scoring in SCORINGS:
        search = GridSearchCV(
            make_pipeline(columns, Ridge()),
            {"ridge__alpha": alphas},
            cv=PredefinedSplit(case.test_fold),
            scoring=scoring,
        ).fit(X, y)
        # Execute
        ours = ridge_cv(case.fold_moments(), alphas, scoring=scoring, unscaled=mask)
        # Assert (Ridge's penalty is the same whatever the order of the columns)
        np.testing.assert_allclose(
            ours.mean_test_score, search.cv_results_["mean_test_score"], rtol=RTOL
        )
        assert ours.best_index == search.best_index_
    plain = ridge_cv(case.fold_moments(), alphas)
    assert not np.allclose(plain.mean_r2, ours.mean_r2, rtol=1e-6)
    with pytest.raises(ValueError, match="unscaled has 2 flags for 4 features"):
        ridge_cv(case.fold_moments(), alphas, unscaled=[True, False])


def test_result_arrays_are_read_only() -> None:
    rng = np.random.default_rng(15)
    case = _make_case(rng, [20, 30], np.ones(2), np.zeros(2))
    result = ridge_cv(case.fold_moments(), [1.0, 2.0])
    with pytest.raises(ValueError, match="read-only"):
        result.r2[0, 0] = 0.0


# ---------------------------------------------------------------- refusals


def _two_folds() -> list[Moments]:
    rng = np.random.default_rng(20)
    return _make_case(rng, [10, 12], np.ones(2), np.zeros(2)).fold_moments()


def test_fewer_than_two_folds_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 folds, got 1"):
        ridge_cv(_two_folds()[:1], [1.0])
    with pytest.raises(ValueError, match="at least 2 folds, got 0"):
        ridge_cv([], [1.0])


def test_an_empty_fold_is_named() -> None:
    folds = _two_folds()
    folds.insert(1, Moments.empty(folds[0].dim))
    with pytest.raises(ValueError, match="fold 1 is empty"):
        ridge_cv(folds, [1.0])


def test_folds_of_different_widths_or_without_features_are_refused() -> None:
    folds = _two_folds()
    with pytest.raises(ValueError, match="fold 1 has 2 columns"):
        ridge_cv([folds[0], Moments.of(np.ones((3, 2)))], [1.0])
    only_y = [Moments.of(np.arange(3.0).reshape(3, 1)), Moments.of(np.arange(4.0).reshape(4, 1))]
    with pytest.raises(ValueError, match="at least one feature"):
        ridge_cv(only_y, [1.0])


def test_non_finite_moments_are_refused() -> None:
    folds = _two_folds()
    bad = Moments(folds[1].n, folds[1].mean, folds[1].scatter * np.nan)
    with pytest.raises(ValueError, match="fold 1 has non-finite moments"):
        ridge_cv([folds[0], bad], [1.0])


@pytest.mark.parametrize("alphas", [[], [-1.0], [1.0, math.nan], [math.inf]])
def test_a_bad_grid_is_refused(alphas: list[float]) -> None:
    with pytest.raises(ValueError, match="alpha"):
        ridge_cv(_two_folds(), alphas)


def test_an_unknown_scoring_is_refused() -> None:
    with pytest.raises(ValueError, match="scoring must be one of"):
        ridge_cv(_two_folds(), [1.0], scoring="neg_mean_absolute_error")  # type: ignore[arg-type]


def test_sklearn_r2_of_a_constant_fold_depends_on_rounding() -> None:
    # Why a constant-y fold is refused under "r2" rather than imitated: sklearn
    # scores it 0.0 when np.mean of the constant rounds back to it, and about
    # -5e27 when it does not (its "SST" is then rounding, not 0).
    assert np.mean(np.full(2, 0.1)) == 0.1
    assert np.mean(np.full(3, 0.1)) != 0.1
    assert r2_score(np.full(2, 0.1), np.full(2, 0.2)) == 0.0
    assert r2_score(np.full(3, 0.1), np.full(3, 0.2)) < -1e20


def _constant_fold_case() -> Case:
    rng = np.random.default_rng(21)
    case = _make_case(rng, [20, 25, 30], np.ones(2), np.zeros(2))
    y = case.y.copy()
    y[case.test_fold == 2] = 0.1
    return Case(case.X, y, case.test_fold)


def test_a_constant_fold_is_refused_under_r2_and_named() -> None:
    case = _constant_fold_case()
    with pytest.raises(ValueError, match="fold 2: y is constant on its 30 row"):
        ridge_cv(case.fold_moments(), [1.0, 10.0])


def test_a_constant_fold_is_scored_by_mse() -> None:
    # Prepare
    case = _constant_fold_case()
    alphas = [1.0, 10.0, 100.0]
    # Execute
    ours = ridge_cv(case.fold_moments(), alphas, scoring="neg_mean_squared_error")
    # Assert: MSE as sklearn's; R² undefined (NaN) on that fold only
    results = _grid_search(case, alphas, standardize=True)
    mse = -_splits(results, "neg_mean_squared_error", case.k)
    np.testing.assert_allclose(ours.mse, mse, rtol=RTOL)
    np.testing.assert_allclose(
        ours.mean_test_score, results["mean_test_neg_mean_squared_error"], rtol=RTOL
    )
    assert np.isnan(ours.r2[:, 2]).all() and np.isfinite(ours.r2[:, :2]).all()
    assert np.isnan(ours.mean_r2).all()
    assert ours.best_index == int(results["rank_test_neg_mean_squared_error"].argmin())


@pytest.mark.filterwarnings(
    "ignore:R\\^2 score is not well-defined", "ignore:One or more of the test"
)
def test_a_single_row_fold_is_refused_under_r2_and_scored_by_mse() -> None:
    # sklearn's r2_score is NaN on one row (UndefinedMetricWarning)
    rng = np.random.default_rng(22)
    case = _make_case(rng, [20, 1, 25], np.ones(2), np.zeros(2))
    folds = case.fold_moments()
    one = int(np.argmin([fold.n for fold in folds]))
    with pytest.raises(ValueError, match=f"fold {one}: y is constant on its 1 row"):
        ridge_cv(folds, [1.0])
    ours = ridge_cv(folds, [1.0, 10.0], scoring="neg_mean_squared_error")
    results = _grid_search(case, [1.0, 10.0], standardize=True)
    np.testing.assert_allclose(
        ours.mse, -_splits(results, "neg_mean_squared_error", case.k), rtol=RTOL
    )
