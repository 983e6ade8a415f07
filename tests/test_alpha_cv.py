"""``alpha = "cv"``: ridge's alpha chosen in the single statistics round, as GridSearchCV would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cityfed_server.training import train
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cityfed.config.spec import load_city, load_federation
from cityfed.data.city_data import load_city_data, row_set
from cityfed.data.holdout import fold_ids
from cityfed.errors import SpecError
from cityfed.report.build import build_report

from .synthetic import local_exchange, write_federation


def _with_cv(path: Path, extra: str) -> None:
    """``alpha = "cv"`` in the federation and in the copy the cities agreed to."""
    for spec in (path, path.parent / f"agreed-{path.name}"):
        text = spec.read_text(encoding="utf-8")
        spec.write_text(text.replace("alpha = 1.0", 'alpha = "cv"' + extra), encoding="utf-8")


def _pooled_folds(fed_path: Path, configs: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every city's training rows and each row's fold, as the cities fixed them."""
    fed = load_federation(fed_path)
    Xs, ys, folds = [], [], []
    for config in configs:
        city = load_city(config)
        data = load_city_data(city, fed)
        Xs.append(data.X_train)
        ys.append(data.y_train)
        folds.append(fold_ids(data.y_train.size, fed.cv_folds, row_set(city, fed)[1], city.name))
    return np.vstack(Xs), np.concatenate(ys), np.concatenate(folds)


@pytest.mark.parametrize(("folds", "grid"), [(5, None), (3, [0.01, 3.0, 30.0, 300.0, 3000.0])])
def test_alpha_cv_picks_gridsearchcv_alpha_in_one_round(
    tmp_path: Path, folds: int, grid: list[float] | None
) -> None:
    # Prepare: noisy cities with few rows, so that the grid's scores differ.
    files = write_federation(tmp_path, model="ridge", alpha=1.0, sizes=(160, 110, 200, 100))
    extra = f"\ncv_folds = {folds}" + (f"\nalphas = {grid}" if grid else "")
    _with_cv(files.federation, extra)
    fed = load_federation(files.federation)
    assert fed.alpha_cv
    # Execute
    result = train(fed, local_exchange(files.cities), run_id="t")
    # Assert: the same folds in GridSearchCV give the same scores and the same alpha.
    assert result.model.cities == ("city0", "city1", "city2", "city3")
    X, y, test_fold = _pooled_folds(files.federation, files.cities)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()),
        {"ridge__alpha": list(fed.alphas)},
        cv=PredefinedSplit(test_fold),
    ).fit(X, y)
    model = result.model
    assert result.model.rounds == 1
    assert model.alpha == search.best_params_["ridge__alpha"]
    np.testing.assert_allclose(
        [score for _, score in model.alpha_path], search.cv_results_["mean_test_score"], rtol=1e-9
    )
    assert [a for a, _ in model.alpha_path] == list(fed.alphas)
    refit = search.best_estimator_
    np.testing.assert_allclose(model.decision(X), refit.predict(X), rtol=1e-9, atol=1e-9)
    report = build_report(fed, result)
    assert report.model.alpha == model.alpha and len(report.model.alpha_path) == len(fed.alphas)


def test_a_city_refuses_more_folds_than_its_policy_allows(tmp_path: Path) -> None:
    files = write_federation(tmp_path, model="ridge", alpha=1.0, sizes=(300, 300, 300))
    _with_cv(files.federation, "\ncv_folds = 8")
    text = files.cities[0].read_text(encoding="utf-8")
    files.cities[0].write_text(text + "max_folds = 5\n", encoding="utf-8")
    assert text.rstrip().splitlines()[-1].startswith(("agreed", "max_", "min_", "["))
    result = train(load_federation(files.federation), local_exchange(files.cities), run_id="t")
    refused = result.cities["city0"]
    assert refused.status == "refused"
    assert "[policy] max_folds = 5" in refused.reason and "8 folds" in refused.reason
    assert "city0" not in result.model.cities


def test_folds_too_small_for_the_city_floor_are_refused(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path, model="ridge", alpha=1.0, sizes=(300, 300, 90), min_rows_per_city=20
    )
    _with_cv(files.federation, "\ncv_folds = 5")
    result = train(load_federation(files.federation), local_exchange(files.cities), run_id="t")
    small = result.cities["city2"]  # 90 training rows: folds of 18 < min_rows_per_city = 20
    assert small.status == "refused"
    assert (
        'alpha = "cv": 5 folds of 90' in small.reason and "min_rows_per_city = 20" in small.reason
    )


def test_alpha_cv_spec_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "federation.toml"
    base = '[target]\nname = "y"\n[[features]]\nname = "x"\n'
    cases = {
        '[federation]\nname = "t"\nmodel = "linear"\nalpha = "cv"\n': "is for model 'ridge'",
        '[federation]\nname = "t"\nalphas = [1.0, 2.0]\n': 'needs alpha = "cv"',
        '[federation]\nname = "t"\nalpha = "cv"\nalphas = [1.0]\n': "at least two numbers",
        '[federation]\nname = "t"\nalpha = "cv"\nalphas = [1.0, -1.0]\n': "numbers >= 0",
        '[federation]\nname = "t"\nalpha = "cv"\ncv_folds = 1\n': "an integer >= 2",
    }
    for head, expected in cases.items():
        path.write_text(head + base, encoding="utf-8")
        with pytest.raises(SpecError, match=expected):
            load_federation(path)
