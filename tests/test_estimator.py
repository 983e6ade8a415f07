from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cityfed_server.training import train
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from cityfed import CityFedClassifier, CityFedError, CityFedRegressor, load_model
from cityfed.config.spec import load_federation
from cityfed.model.proto import read_model, write_model

from .synthetic import FEATURES, local_exchange, write_federation


def test_published_model_loads_as_sklearn_regressor(tmp_path: Path) -> None:
    # Prepare
    files = write_federation(tmp_path, sizes=(150, 80, 120))
    result = train(load_federation(files.federation), local_exchange(files.cities), run_id="r1")
    write_model(result.model, tmp_path / "model.pb")
    # Execute
    est = load_model(tmp_path / "model.pb")
    # Assert
    names = [n for n, _ in FEATURES]
    assert isinstance(est, CityFedRegressor)
    assert list(est.feature_names_in_) == names
    frame = pd.DataFrame(files.X_pooled, columns=names)
    shuffled = frame[names[::-1]]  # column order of the caller does not matter
    reference = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(
        files.X_pooled, files.y_pooled
    )
    np.testing.assert_allclose(est.predict(shuffled), reference.predict(files.X_pooled), rtol=1e-9)
    np.testing.assert_allclose(est.coef_, result.model.coef)
    assert est.intercept_ == result.model.intercept


def test_missing_column_is_named(tmp_path: Path) -> None:
    files = write_federation(tmp_path, sizes=(150, 80, 120))
    result = train(load_federation(files.federation), local_exchange(files.cities), run_id="r1")
    write_model(result.model, tmp_path / "model.pb")
    est = load_model(tmp_path / "model.pb")
    frame = pd.DataFrame(files.X_pooled[:, :3], columns=[n for n, _ in FEATURES][:3])
    with pytest.raises(CityFedError, match="column 'humidity' not found"):
        est.predict(frame)


def test_classifier_round_trip_and_proba(tmp_path: Path) -> None:
    files = write_federation(
        tmp_path, task="classification", model="logistic", sizes=(200, 150, 100)
    )
    result = train(load_federation(files.federation), local_exchange(files.cities), run_id="r2")
    write_model(result.model, tmp_path / "model.pb")
    est = load_model(tmp_path / "model.pb")
    assert isinstance(est, CityFedClassifier)
    frame = pd.DataFrame(files.X_pooled, columns=[n for n, _ in FEATURES])
    reference = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=10_000)).fit(
        files.X_pooled, files.y_pooled
    )
    np.testing.assert_allclose(
        est.predict_proba(frame), reference.predict_proba(files.X_pooled), atol=1e-5
    )
    assert set(np.unique(est.predict(frame))) <= {0, 1}
    assert read_model(tmp_path / "model.pb").rounds == result.model.rounds


def test_estimators_fit_like_sklearn_and_work_in_cross_validation() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)) * [1.0, 50.0, 0.1]
    y = X @ np.array([1.0, 0.02, 5.0]) + rng.normal(size=120)
    ours = CityFedRegressor(model="ridge", alpha=2.0).fit(X, y)
    ref = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-10)
    scores = cross_val_score(clone(ours), X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)
    labels = (y > 0).astype(int)
    clf = CityFedClassifier(C=1.0).fit(X, labels)
    ref_clf = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=10_000)).fit(
        X, labels
    )
    np.testing.assert_allclose(clf.predict_proba(X), ref_clf.predict_proba(X), atol=1e-6)


def test_not_a_model_file(tmp_path: Path) -> None:
    (tmp_path / "junk.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(CityFedError, match=r"junk\.pb"):
        load_model(tmp_path / "junk.pb")


@parametrize_with_checks(
    [CityFedRegressor(), CityFedRegressor(model="linear", standardize=False), CityFedClassifier()]
)
def test_estimators_pass_sklearn_checks(estimator: Any, check: Any) -> None:
    # scikit-learn's own estimator contract, every check it has for the kind.
    check(estimator)


def test_classifier_keeps_any_two_labels() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 2))
    labels = np.where(X[:, 0] + 0.3 * rng.normal(size=200) > 0, "rain", "dry")
    clf = CityFedClassifier().fit(X, labels)
    ref = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=10_000))
    ref.fit(X, labels)
    assert list(clf.classes_) == ["dry", "rain"]
    np.testing.assert_array_equal(clf.predict(X), ref.predict(X))
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), atol=1e-6)
