"""Poisson regression and categorical features, federated: equal to sklearn and statsmodels.

Each test writes its own cities (CSV and Parquet, their own column names, units and
label spellings), runs the coordinator over cities answered in process, and
compares with the reference fitted on the pooled rows from the raw labels:
``make_pipeline(ColumnTransformer(OneHotEncoder(drop="first"), StandardScaler()), model)``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from cityfed_server.training import train
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from cityfed.config.spec import load_city, load_federation
from cityfed.data.city_data import load_city_data
from cityfed.errors import DataError, FederationError, SpecError
from cityfed.model.estimator import estimator_of

from .synthetic import local_exchange

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: How three cities spell the weekdays (the federation's levels are WEEKDAYS).
SPELLINGS = (
    dict(zip(WEEKDAYS, WEEKDAYS, strict=True)),
    dict(
        zip(
            WEEKDAYS,
            ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
            strict=True,
        )
    ),
    dict(zip(WEEKDAYS, ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So"), strict=True)),
)
DISTRICTS = ("centre", "suburb", "industrial")


def _draw(rng: np.random.Generator, n: int, task: str, exposure: bool) -> pd.DataFrame:
    """One city's rows in federation units: two numeric features on very different scales."""
    frame = pd.DataFrame(
        {
            "temp": rng.normal(12.0, 8.0, n),
            "traffic": rng.normal(2e5, 3e4, n),  # vehicles per day: far from zero
            "weekday": rng.choice(WEEKDAYS, n),
            "district": rng.choice(DISTRICTS, n),
        }
    )
    eta = (
        0.4
        + 0.03 * (frame["temp"] - 12.0)
        + 4e-6 * (frame["traffic"] - 2e5)
        + frame["weekday"].map(dict(zip(WEEKDAYS, np.linspace(0, 0.6, 7), strict=True)))
        + frame["district"].map({"centre": 0.0, "suburb": -0.4, "industrial": 0.3})
    ).to_numpy()
    if exposure:
        frame["road_km"] = rng.uniform(0.5, 20.0, n)
        eta = eta + np.log(frame["road_km"].to_numpy())
    if task == "count":
        frame["y"] = rng.poisson(np.exp(eta)).astype(float)
    elif task == "classification":
        frame["y"] = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-(eta - 1.0)))).astype(float)
    else:
        frame["y"] = 3.0 * eta + rng.normal(0.0, 0.5, n)
    return frame


def _write(
    tmp_path: Path,
    cities: list[pd.DataFrame],
    *,
    task: str,
    model: str,
    penalty: str,
    exposure: bool = False,
) -> tuple[Path, list[Path]]:
    """The federation and its cities; city i spells weekdays as SPELLINGS[i % 3].

    City 0 writes a CSV in federation units; city 1 a CSV with °F, a decimal comma
    and French weekdays; city 2 a Parquet file with German weekdays.
    """
    exposure_toml = '\n[exposure]\nname = "road_km"\nunit = "km"\n' if exposure else ""
    fed = tmp_path / "federation.toml"
    fed.write_text(
        f'[federation]\nname = "levels"\ntask = "{task}"\nmodel = "{model}"\n{penalty}\n'
        "holdout_fraction = 0.2\nmin_cities = 2\nmin_rows_per_city = 20\n"
        '\n[target]\nname = "y"\n'
        '\n[[features]]\nname = "weekday"\nlevels = ' + json.dumps(list(WEEKDAYS)) + "\n"
        '\n[[features]]\nname = "temp"\nunit = "degC"\n'
        '\n[[features]]\nname = "traffic"\n'
        '\n[[features]]\nname = "district"\nlevels = '
        + json.dumps(list(DISTRICTS))
        + "\n"
        + exposure_toml,
        encoding="utf-8",
    )
    configs = []
    for i, frame in enumerate(cities):
        spelling = SPELLINGS[i % 3]
        local = frame.copy()
        local["weekday"] = local["weekday"].map(spelling)
        labels = ", ".join(f'"{v}" = "{k}"' for k, v in spelling.items())
        exposure_col = 'road_km = { source = "road_km", unit = "km" }\n' if exposure else ""
        if i % 3 == 1:
            local["temp"] = local["temp"] * 9.0 / 5.0 + 32.0
            data = tmp_path / f"city{i}.csv"
            local.to_csv(data, sep=";", decimal=",", index=False)
            head = f'data = "{data.name}"\ndelimiter = ";"\ndecimal = ","\n'
            temp = 'temp = { source = "temp", unit = "degF" }\n'
        elif i % 3 == 2:
            data = tmp_path / f"city{i}.parquet"
            local.to_parquet(data, index=False)
            head = f'data = "{data.name}"\n'
            temp = 'temp = { source = "temp", unit = "degC" }\n'
        else:
            data = tmp_path / f"city{i}.csv"
            local.to_csv(data, index=False)
            head = f'data = "{data.name}"\n'
            temp = 'temp = { source = "temp", unit = "degC" }\n'
        toml = tmp_path / f"city{i}.toml"
        toml.write_text(
            f'[city]\nname = "city{i}"\n{head}\n[columns]\ny = "y"\n{temp}traffic = "traffic"\n'
            f'district = "district"\n{exposure_col}'
            f'weekday = {{ source = "weekday", labels = {{ {labels} }} }}\n'
            '\n[policy]\nagreed = ["federation.toml"]\nmax_params_fraction = 0.5\n',
            encoding="utf-8",
        )
        configs.append(toml)
    return fed, configs


def _pooled(fed_path: Path, configs: list[Path]) -> tuple[pd.DataFrame, np.ndarray]:
    """The training rows every city summarised, with the federation's labels (raw, not encoded)."""
    fed = load_federation(fed_path)
    frames, ys = [], []
    for config in configs:
        data = load_city_data(load_city(config), fed)
        X = pd.DataFrame(data.X_train, columns=list(fed.design_names))
        frame = pd.DataFrame({"temp": X["temp"], "traffic": X["traffic"]})
        for name, levels in (("weekday", WEEKDAYS), ("district", DISTRICTS)):
            codes = np.zeros(len(X), dtype=int)
            for k, level in enumerate(levels[1:], start=1):
                codes[X[f"{name}={level}"].to_numpy() == 1.0] = k
            frame[name] = [levels[c] for c in codes]
        if data.exposure_train is not None:
            frame["road_km"] = data.exposure_train
        frames.append(frame)
        ys.append(data.y_train)
    return pd.concat(frames, ignore_index=True), np.concatenate(ys)


def _design(frame: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """A constant, then the model's columns: the declared levels' indicators, the numbers."""
    columns = {}
    for name in names:
        feature, _, level = name.partition("=")
        columns[name] = (frame[feature] == level).astype(float) if level else frame[name]
    return np.asarray(sm.add_constant(pd.DataFrame(columns)[list(names)].to_numpy(dtype=float)))


def _reference(estimator: object) -> object:
    return make_pipeline(
        ColumnTransformer(
            [
                # The declared levels, in their order: the first is the reference (with
                # sorted categories sklearn would drop "Fri", another model under a penalty).
                (
                    "levels",
                    OneHotEncoder(categories=[list(WEEKDAYS), list(DISTRICTS)], drop="first"),
                    ["weekday", "district"],
                ),
                ("numeric", StandardScaler(), ["temp", "traffic"]),
            ]
        ),
        estimator,
    )


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**16),
    alpha=st.sampled_from([0.0, 1e-3, 0.1]),
    sizes=st.lists(st.integers(250, 600), min_size=2, max_size=4),
)
def test_poisson_with_levels_equals_pooled_sklearn(
    tmp_path_factory: pytest.TempPathFactory, seed: int, alpha: float, sizes: list[int]
) -> None:
    # Prepare: cities in CSV and Parquet, with their own units and weekday labels.
    tmp_path = tmp_path_factory.mktemp("poisson")
    rng = np.random.default_rng(seed)
    cities = [_draw(rng, n, "count", exposure=False) for n in sizes]
    fed_path, configs = _write(
        tmp_path, cities, task="count", model="poisson", penalty=f"alpha = {alpha}"
    )
    fed = load_federation(fed_path)
    # Execute
    result = train(fed, local_exchange(configs), run_id="t")
    # Assert: the expected counts equal sklearn's pooled fit from the raw labels, on
    # the rows of the cities that took part (a city with a level of fewer than
    # min_bin_rows rows refuses, as it should).
    taking_part = [c for c in configs if c.stem in result.model.cities]
    assert len(taking_part) >= 2
    frame, y = _pooled(fed_path, taking_part)
    reference = _reference(
        PoissonRegressor(alpha=alpha, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    ).fit(frame, y)
    estimator = estimator_of(result.model)
    ours = estimator.predict(frame)  # raw labels: the estimator encodes them itself
    theirs = reference.predict(frame)
    assert result.model.converged
    np.testing.assert_allclose(ours, theirs, rtol=1e-7)
    assert result.model.feature_names[:6] == tuple(f"weekday={d}" for d in WEEKDAYS[1:])


def test_unpenalised_poisson_inference_equals_statsmodels_glm(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    cities = [_draw(rng, n, "count", exposure=False) for n in (400, 250, 500)]
    fed_path, configs = _write(tmp_path, cities, task="count", model="poisson", penalty="alpha = 0")
    result = train(load_federation(fed_path), local_exchange(configs), run_id="t")
    frame, y = _pooled(fed_path, configs)
    design = _design(frame, result.model.feature_names)
    glm = sm.GLM(y, design, family=sm.families.Poisson()).fit()
    inference = result.model.inference
    assert inference is not None
    np.testing.assert_allclose(inference.estimate, glm.params, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(inference.std_error, glm.bse, rtol=1e-6)
    np.testing.assert_allclose(inference.p_value, glm.pvalues, rtol=1e-6, atol=1e-12)
    low, high = glm.conf_int().T
    np.testing.assert_allclose(inference.ci_low, low, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(inference.ci_high, high, rtol=1e-6, atol=1e-9)
    assert "Poisson, log link" in estimator_of(result.model).summary()


def test_poisson_with_exposure_equals_sklearn_and_statsmodels(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    cities = [_draw(rng, n, "count", exposure=True) for n in (300, 200, 450)]
    for alpha in (0.0, 0.01):
        folder = tmp_path / f"a{alpha}"
        folder.mkdir()
        fed_path, configs = _write(
            folder, cities, task="count", model="poisson", penalty=f"alpha = {alpha}", exposure=True
        )
        result = train(load_federation(fed_path), local_exchange(configs), run_id="t")
        frame, y = _pooled(fed_path, configs)
        e = frame.pop("road_km").to_numpy()
        reference = _reference(
            PoissonRegressor(alpha=alpha, solver="newton-cholesky", tol=1e-12, max_iter=1000)
        ).fit(frame, y / e, poissonregressor__sample_weight=e)
        estimator = estimator_of(result.model)
        np.testing.assert_allclose(
            estimator.predict(frame, exposure=e), reference.predict(frame) * e, rtol=1e-7
        )
        assert result.model.exposure is not None and result.model.exposure.name == "road_km"
        if alpha == 0.0:
            design = _design(frame, result.model.feature_names)
            glm = sm.GLM(y, design, family=sm.families.Poisson(), exposure=e).fit()
            assert result.model.inference is not None
            np.testing.assert_allclose(result.model.inference.std_error, glm.bse, rtol=1e-6)


@pytest.mark.parametrize(
    ("task", "model"), [("regression", "ridge"), ("classification", "logistic")]
)
def test_levels_in_ridge_and_logistic_equal_the_column_transformer_pipeline(
    tmp_path: Path, task: str, model: str
) -> None:
    rng = np.random.default_rng(3)
    cities = [_draw(rng, n, task, exposure=False) for n in (300, 220, 410)]
    penalty = "alpha = 2.5" if model == "ridge" else "C = 0.3"
    fed_path, configs = _write(tmp_path, cities, task=task, model=model, penalty=penalty)
    result = train(load_federation(fed_path), local_exchange(configs), run_id="t")
    frame, y = _pooled(fed_path, configs)
    estimator = estimator_of(result.model)
    if model == "ridge":
        reference = _reference(Ridge(alpha=2.5)).fit(frame, y)
        np.testing.assert_allclose(estimator.predict(frame), reference.predict(frame), rtol=1e-9)
    else:
        reference = _reference(LogisticRegression(C=0.3, tol=1e-12, max_iter=10_000)).fit(frame, y)
        np.testing.assert_allclose(
            estimator.predict_proba(frame)[:, 1],
            reference.predict_proba(frame)[:, 1],
            atol=1e-6,
        )


def test_an_unmapped_label_names_file_column_and_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cities = [_draw(rng, 100, "count", exposure=False) for _ in range(2)]
    fed_path, configs = _write(tmp_path, cities, task="count", model="poisson", penalty="alpha = 1")
    csv = tmp_path / "city1.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    lines[7] = (
        lines[7]
        .replace("centre", "harbour")
        .replace("suburb", "harbour")
        .replace("industrial", "harbour")
    )
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_city_data(load_city(configs[1]), load_federation(fed_path))
    message = str(info.value)
    assert "city1.csv: column 'district', row 7 (line 8): label 'harbour' is not a level" in message
    assert "labels in city1.toml" in message and "\n" not in message


def test_a_negative_count_and_a_zero_exposure_are_refused_by_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cities = [_draw(rng, 80, "count", exposure=True) for _ in range(2)]
    cities[0].loc[4, "y"] = -1.0
    cities[1].loc[9, "road_km"] = 0.0
    fed_path, configs = _write(
        tmp_path, cities, task="count", model="poisson", penalty="alpha = 1", exposure=True
    )
    fed = load_federation(fed_path)
    with pytest.raises(
        DataError, match=r"city0.csv: column 'y', row 5 \(line 6\): -1 is not a count"
    ):
        load_city_data(load_city(configs[0]), fed)
    with pytest.raises(
        DataError, match=r"column 'road_km', row 10 \(line 11\): 0 is not an exposure > 0"
    ):
        load_city_data(load_city(configs[1]), fed)


def test_derived_categories_from_a_timestamp(tmp_path: Path) -> None:
    times = pd.date_range("2024-11-28 22:00", periods=60, freq="h")  # Thu .. Sat, across months
    frame = pd.DataFrame({"when": times.strftime("%Y-%m-%dT%H:%M"), "y": np.arange(60) % 4})
    frame.loc[3, "when"] = "NA"
    (tmp_path / "c.csv").write_text(frame.to_csv(index=False), encoding="utf-8")
    (tmp_path / "federation.toml").write_text(
        '[federation]\nname = "t"\ntask = "count"\n[target]\nname = "y"\n'
        '[[features]]\nname = "hour"\nlevels = [' + ", ".join(f'"{h}"' for h in range(24)) + "]\n"
        '[[features]]\nname = "day"\nlevels = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]\n'
        '[[features]]\nname = "season"\nlevels = ["winter", "spring", "summer", "autumn"]\n',
        encoding="utf-8",
    )
    (tmp_path / "c.toml").write_text(
        '[city]\nname = "c"\ndata = "c.csv"\n[columns]\ny = "y"\nhour = "hour(when)"\n'
        'day = "weekday(when)"\nseason = "season(`when`)"\n',
        encoding="utf-8",
    )
    fed = load_federation(tmp_path / "federation.toml")
    data = load_city_data(load_city(tmp_path / "c.toml"), replace(fed, holdout_fraction=0.0))
    assert data.drop_reasons == {"missing hour": 1}
    X = pd.DataFrame(data.X_train, columns=list(fed.design_names))
    kept = frame.drop(index=3).reset_index(drop=True)
    when = pd.to_datetime(kept["when"])
    np.testing.assert_array_equal(X["hour=23"], (when.dt.hour == 23).astype(float))
    np.testing.assert_array_equal(X["day=Fri"], (when.dt.day_of_week == 4).astype(float))
    # 28-30 November is autumn, 1 December on is winter (the reference level: all zeros).
    np.testing.assert_array_equal(X["season=autumn"], (when.dt.month == 11).astype(float))


def test_category_mistakes_in_the_specs_are_one_line_errors(tmp_path: Path) -> None:
    base = '[federation]\nname = "t"\n[target]\nname = "y"\n'
    cases = {
        '[[features]]\nname = "d"\nlevels = ["a"]\n': "at least two levels",
        '[[features]]\nname = "d"\nlevels = ["a", "a"]\n': "level 'a' is listed twice",
        '[[features]]\nname = "d"\nunit = "m"\nlevels = ["a", "b"]\n': "has no unit",
        '[[features]]\nname = "d"\n[exposure]\nname = "e"\n': "an exposure is for model 'poisson'",
    }
    for body, expected in cases.items():
        path = tmp_path / "federation.toml"
        path.write_text(base + body, encoding="utf-8")
        with pytest.raises(SpecError, match=expected):
            load_federation(path)
    path.write_text(
        '[federation]\nname = "t"\ntask = "count"\n[target]\nname = "y"\n'
        '[[features]]\nname = "d"\nlevels = ["a", "b"]\n',
        encoding="utf-8",
    )
    (tmp_path / "c.csv").write_text("d,y\na,1\n", encoding="utf-8")
    (tmp_path / "c.toml").write_text(
        '[city]\nname = "c"\ndata = "c.csv"\n[columns]\ny = "y"\nd = "month_name(d)"\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError, match=r"month_name\(\) is not a category function"):
        load_city_data(load_city(tmp_path / "c.toml"), load_federation(path))


def test_all_zero_counts_stop_the_run_with_a_clear_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    cities = [_draw(rng, 300, "count", exposure=False) for _ in range(2)]
    for frame in cities:
        frame["y"] = 0.0
    fed_path, configs = _write(tmp_path, cities, task="count", model="poisson", penalty="alpha = 1")
    with pytest.raises(FederationError, match="every count of the target is 0"):
        train(load_federation(fed_path), local_exchange(configs), run_id="t")


def test_the_poisson_estimator_fits_in_memory_like_sklearn() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 3)) * [1.0, 1e3, 1e-3] + [0.0, 5e4, 2.0]
    e = rng.uniform(0.2, 4.0, 500)
    y = rng.poisson(e * np.exp(0.2 + 0.3 * (X[:, 0]) - 2e-4 * (X[:, 1] - 5e4))).astype(float)
    from cityfed import CityFedPoissonRegressor

    ours = CityFedPoissonRegressor(alpha=0.05).fit(X, y / e, sample_weight=e)
    theirs = make_pipeline(
        StandardScaler(), PoissonRegressor(alpha=0.05, solver="newton-cholesky", tol=1e-12)
    ).fit(X, y / e, poissonregressor__sample_weight=e)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-8)
    np.testing.assert_allclose(ours.predict(X, exposure=e), theirs.predict(X) * e, rtol=1e-8)


def test_a_count_model_with_levels_survives_model_pb_and_report_json(tmp_path: Path) -> None:
    from cityfed.model.proto import read_model, write_model
    from cityfed.report.build import build_report, read_report, write_report

    rng = np.random.default_rng(9)
    cities = [_draw(rng, n, "count", exposure=True) for n in (200, 150)]
    fed_path, configs = _write(
        tmp_path, cities, task="count", model="poisson", penalty="alpha = 0.01", exposure=True
    )
    fed = load_federation(fed_path)
    result = train(fed, local_exchange(configs), run_id="t")
    write_model(result.model, tmp_path / "model.pb")
    back = read_model(tmp_path / "model.pb")
    assert back.categories == result.model.categories
    assert back.exposure == result.model.exposure
    assert (back.kind, back.task, back.alpha) == ("poisson", "count", 0.01)
    frame, _ = _pooled(fed_path, configs)
    np.testing.assert_array_equal(
        estimator_of(back).predict(frame), estimator_of(result.model).predict(frame)
    )
    report = build_report(fed, result)
    write_report(report, tmp_path)
    again = read_report(tmp_path / "report.json")
    assert again.federation == fed
    assert again.model.alpha == 0.01


def test_a_level_per_row_is_refused_by_the_city(tmp_path: Path) -> None:
    """The attack: a federation declares one level per timestamp, so that each
    indicator's cross-products are one row's values. The city refuses to answer."""
    times = [f"2024-01-01T{h:02d}:00" for h in range(24)] * 5
    frame = pd.DataFrame({"when": times, "x": np.arange(120.0), "y": np.arange(120) % 3})
    (tmp_path / "c.csv").write_text(frame.to_csv(index=False), encoding="utf-8")
    levels = ", ".join(f'"{t}"' for t in sorted(set(times)))
    fed_text = (
        '[federation]\nname = "t"\ntask = "count"\nmin_rows_per_city = 10\n[target]\nname = "y"\n'
        f'[[features]]\nname = "x"\n[[features]]\nname = "slot"\nlevels = [{levels}]\n'
    )
    (tmp_path / "federation.toml").write_text(fed_text, encoding="utf-8")
    (tmp_path / "c.toml").write_text(
        '[city]\nname = "c"\ndata = "c.csv"\n[columns]\ny = "y"\nx = "x"\nslot = "when"\n'
        '[policy]\nagreed = ["federation.toml"]\nmax_params_fraction = 0.9\nmin_rows = 10\n',
        encoding="utf-8",
    )
    from cityfed_client.handlers import responder

    from cityfed.federation.protocol import Instruction

    reply = responder(tmp_path / "c.toml")(
        Instruction("moments", load_federation(tmp_path / "federation.toml"))
    )
    assert reply.status == "refused" and reply.moments is None
    assert "[policy] min_bin_rows = 10: level" in reply.reason
    assert "training rows; no statistics are sent" in reply.reason


def test_numeric_labels_match_their_levels_whatever_the_spelling(tmp_path: Path) -> None:
    """A text file's "5.0" or "05" is the level "5"; a typed column's 5 too."""
    (tmp_path / "federation.toml").write_text(
        '[federation]\nname = "t"\ntask = "count"\n[target]\nname = "y"\n'
        '[[features]]\nname = "hour"\nlevels = ["5", "6", "7"]\n',
        encoding="utf-8",
    )
    frame = pd.DataFrame({"h": ["5.0", "06", "7", "5", "6.0"] * 20, "y": [1, 2, 3, 4, 5] * 20})
    (tmp_path / "c.csv").write_text(frame.to_csv(index=False), encoding="utf-8")
    frame.assign(h=frame["h"].astype(float).astype(int)).to_parquet(tmp_path / "c.parquet")
    fed = replace(load_federation(tmp_path / "federation.toml"), holdout_fraction=0.0)
    for data in ("c.csv", "c.parquet"):
        (tmp_path / "c.toml").write_text(
            f'[city]\nname = "c"\ndata = "{data}"\n[columns]\ny = "y"\nhour = "h"\n',
            encoding="utf-8",
        )
        X = load_city_data(load_city(tmp_path / "c.toml"), fed).X_train
        np.testing.assert_array_equal(X[:5], [[0, 0], [1, 0], [0, 1], [0, 0], [1, 0]])
