"""Federation and city specs: TOML parsed once into frozen, validated dataclasses.

Every error is a :class:`~cityfed.errors.SpecError` whose message names the file
and the key, e.g. ``federation.toml: [federation] alpha: expected a number >= 0,
got 'strong'``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cityfed.core.ridge_cv import DEFAULT_ALPHAS
from cityfed.errors import SpecError
from cityfed.typing import FloatArray

__all__ = [
    "MODELS_FOR_TASK",
    "Agreement",
    "CitySpec",
    "ColumnSpec",
    "FederationSpec",
    "PolicySpec",
    "VariableSpec",
    "federation_digest",
    "federation_from_json",
    "federation_to_json",
    "load_city",
    "load_federation",
    "parse_city",
    "parse_federation",
]

Task = Literal["regression", "classification", "count"]
ModelKind = Literal["linear", "ridge", "logistic", "poisson"]
Algorithm = Literal["exact", "fedavg"]
MissingPolicy = Literal["drop", "error"]

MODELS_FOR_TASK: Mapping[str, tuple[str, ...]] = {
    "regression": ("linear", "ridge"),
    "classification": ("logistic",),
    "count": ("poisson",),
}

_TASKS: Mapping[str, Task] = {
    "regression": "regression",
    "classification": "classification",
    "count": "count",
}
_MODELS: Mapping[str, ModelKind] = {
    "linear": "linear",
    "ridge": "ridge",
    "logistic": "logistic",
    "poisson": "poisson",
}
#: The default model of each task.
_DEFAULT_MODEL: Mapping[str, str] = {
    "regression": "ridge",
    "classification": "logistic",
    "count": "poisson",
}
#: ``alpha = "cv"``: the grid searched unless ``alphas`` is given (1e-3 .. 1e3).
DEFAULT_CV_ALPHAS: tuple[float, ...] = DEFAULT_ALPHAS

DEFAULT_MISSING_VALUES: tuple[str, ...] = (
    "",
    "NA",
    "N/A",
    "n/a",
    "NaN",
    "nan",
    "NULL",
    "null",
    "None",
    "-",
    "?",
)


@dataclass(frozen=True)
class VariableSpec:
    """A federation column (feature, target or exposure): its name and federation unit.

    A categorical feature has its ``levels`` (at least two): the model sees one
    indicator column per level but the first (sklearn's ``OneHotEncoder(drop="first")``).
    """

    name: str
    unit: str
    levels: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        """True for a feature with declared levels."""
        return bool(self.levels)

    def indicators(self) -> tuple[VariableSpec, ...]:
        """The model's columns: the feature, or ``name=level`` per level but the first."""
        if not self.levels:
            return (self,)
        return tuple(
            VariableSpec(indicator_name(self.name, lv), "dimensionless") for lv in self.levels[1:]
        )


def indicator_name(feature: str, level: str) -> str:
    """The model column of one level of a categorical feature: ``weekday=Tue``."""
    return f"{feature}={level}"


#: How ``[privacy.city_keys]`` spells a city's identity key for secure aggregation.
IDENTITY_PREFIX = "ed25519:"


def parse_identity(text: str) -> bytes:
    """The raw 32 bytes of an ``ed25519:<base64>`` key.

    Raises
    ------
    ValueError
        If it is not that.
    """
    if not text.startswith(IDENTITY_PREFIX):
        raise ValueError(f"expected {IDENTITY_PREFIX}<base64>, got {text[:40]!r}")
    try:
        raw = base64.b64decode(text[len(IDENTITY_PREFIX) :], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"{text[:40]!r} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, {text[:40]!r} has {len(raw)}")
    return raw


def label_text(value: object) -> str:
    """A value as a categorical label: integral numbers without ``.0`` (``5``, not ``5.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass(frozen=True)
class FederationSpec:
    """What every city trains, in federation names and units (``federation.toml``)."""

    name: str
    task: Task
    model: ModelKind
    target: VariableSpec
    features: tuple[VariableSpec, ...]
    alpha: float = 1.0
    #: ``alpha = "cv"``: ridge's alpha chosen by k-fold cross-validation over ``alphas``.
    alpha_cv: bool = False
    alphas: tuple[float, ...] = DEFAULT_CV_ALPHAS
    cv_folds: int = 5
    C: float = 1.0
    standardize: bool = True
    holdout_fraction: float = 0.2
    seed: int = 0
    min_cities: int = 2
    min_rows_per_city: int = 50
    missing: MissingPolicy = "drop"
    algorithm: Algorithm = "exact"
    rounds: int = 20
    local_epochs: int = 1
    max_rounds: int = 25
    tolerance: float = 1e-6
    #: Seconds the coordinator waits for the cities' replies to one exchange.
    reply_timeout: float = 600.0
    #: Seconds after which a still-connected city that has not replied is asked
    #: the same question again (a reply lost in transit; phases are idempotent).
    resend_after: float = 60.0
    #: Poisson only: the column whose log is the offset (``E[y] = exposure * exp(...)``).
    exposure: VariableSpec | None = None
    #: ``[privacy] secure_aggregation``: the coordinator receives only masked
    #: statistics and learns their sum over the cities, nothing per city.
    secure_aggregation: bool = False
    #: ``[privacy] epsilon``, ``delta``: the differential privacy of one run (0: none).
    epsilon: float = 0.0
    delta: float = 0.0
    #: ``[privacy.bounds]``: each numeric feature's and the target's clipping range,
    #: in federation units (rows are clipped into it before any statistic).
    bounds: tuple[tuple[str, float, float], ...] = ()
    #: Logistic under differential privacy: the fixed number of noisy Newton steps.
    newton_rounds: int = 5
    #: ``[privacy.city_keys]``: each city's Ed25519 identity key (``ed25519:<base64>``);
    #: the cities sign their secure-aggregation keys and check each other's.
    city_keys: tuple[tuple[str, str], ...] = ()
    source: str = field(default="federation spec", compare=False)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Federation names of the features, in model order."""
        return tuple(f.name for f in self.features)

    @property
    def variables(self) -> tuple[VariableSpec, ...]:
        """Features, target, then the exposure if any: every column a city must provide."""
        exposure = () if self.exposure is None else (self.exposure,)
        return (*self.features, self.target, *exposure)

    @property
    def design(self) -> tuple[VariableSpec, ...]:
        """The model's input columns: numeric features, and categorical ones as indicators."""
        return tuple(column for feature in self.features for column in feature.indicators())

    @property
    def design_names(self) -> tuple[str, ...]:
        """Names of :attr:`design`, in model order."""
        return tuple(column.name for column in self.design)

    @property
    def indicator_mask(self) -> tuple[bool, ...]:
        """For each design column, whether it is a level indicator (0/1, never scaled)."""
        return tuple(feature.categorical for feature in self.features for _ in feature.indicators())

    @property
    def private(self) -> bool:
        """True when the run is differentially private (``[privacy] epsilon``)."""
        return self.epsilon > 0.0

    @property
    def releases(self) -> int:
        """Noisy releases of a private run: the statistics, and each Newton step for logistic."""
        return 1 + (self.newton_rounds if self.model == "logistic" else 0)

    def clip_range(self) -> tuple[FloatArray, FloatArray]:
        """Per design column then the target: the declared bounds (indicators: 0 and 1)."""
        declared = {name: (low, high) for name, low, high in self.bounds}
        low, high = [], []
        for column in (*self.design, self.target):
            # Undeclared: a level indicator, or a classification's 0/1 label.
            a, b = declared.get(column.name, (0.0, 1.0))
            low.append(a)
            high.append(b)
        return np.array(low), np.array(high)

    @property
    def newton(self) -> bool:
        """True when the model is fitted by federated Newton rounds (logistic, Poisson)."""
        return self.algorithm == "exact" and self.model in ("logistic", "poisson")

    @property
    def penalty(self) -> float:
        """The L2 strength on the (standardised) slopes: alpha, 0 for linear, 1/C.

        For Poisson this is ``alpha`` per unit of exposure: the solver multiplies
        it by the total exposure (the row count without an exposure column).
        """
        if self.model in ("ridge", "poisson"):
            return self.alpha
        if self.model == "logistic":
            return 1.0 / self.C
        return 0.0


@dataclass(frozen=True)
class ColumnSpec:
    """Where a city finds one federation column: a local column or expression.

    For a categorical feature, ``labels`` maps the city's own labels (``"lundi"``)
    to the federation's levels (``"Mon"``); labels that are levels already need
    no entry.
    """

    name: str
    source: str
    unit: str | None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Agreement:
    """A federation the city agreed to: where it says so, and the spec's digest."""

    source: str
    digest: str


@dataclass(frozen=True)
class PolicySpec:
    """What the city agreed to and what it is willing to disclose (``[policy]``).

    Where the federation sets a limit too, the stricter of the two applies.
    """

    agreed: tuple[Agreement, ...] = ()
    holdout_fraction: float | None = None
    seed: int | None = None
    min_rows: int = 50
    max_params_fraction: float = 0.33
    min_bin_rows: int = 10
    max_rounds: int = 30
    max_evaluations: int = 2
    max_runs_per_day: int = 20
    max_abs_weight: float = 1e4
    #: ``alpha = "cv"``: the most folds whose statistics the city sends (each is a
    #: summary of fewer rows: more detail); every fold must also have ``min_rows``.
    max_folds: int = 10
    #: Points of one Newton round (the coordinator's line search inside one exchange).
    max_points_per_round: int = 8
    #: CityFed app versions a node accepts; empty: the version installed on the node.
    accepted_versions: tuple[str, ...] = ()
    #: Answer only under secure aggregation: statistics leave the city masked.
    secure_aggregation: bool = False
    #: Take part in a secure sum only when the federation lists every city's identity
    #: key (``[privacy.city_keys]``), so that no key relayed can be the coordinator's.
    require_signed_keys: bool = False
    #: Under secure aggregation or differential privacy, whether the city tells the
    #: coordinator its own row counts and drop reasons (its statistics no longer do).
    release_counts: bool = True
    #: Whether the city sends its holdout scores, calibration and learning curve.
    release_scores: bool = True
    #: The differential-privacy budget the city spends over all runs (None: no limit,
    #: still recorded in its ledger).
    budget_epsilon: float | None = None
    budget_delta: float | None = None

    def agreement(self, fed: FederationSpec) -> Agreement | None:
        """The agreement ``fed`` is exactly, if any."""
        digest = federation_digest(fed)
        return next((a for a in self.agreed if a.digest == digest), None)


#: Database URL schemes a city may read (SQLAlchemy dialects whose drivers ship here).
DATABASE_SCHEMES: tuple[str, ...] = ("postgresql", "postgresql+psycopg", "sqlite")


@dataclass(frozen=True)
class DatabaseSpec:
    """Where a city's rows live in a database: a URL without password, a table or a query.

    The password comes from the environment variable ``password_env`` or the
    file ``password_file`` (never from ``city.toml``); the connection is
    read-only (PostgreSQL: ``default_transaction_read_only``; SQLite: opened
    ``mode=ro``).
    """

    url: str
    table: str | None = None
    query: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    @property
    def label(self) -> str:
        """How messages name the source: ``readings (postgresql)``.

        The host, user and database name stay on the city, as a CSV's folders do.
        """
        what = self.table if self.table is not None else "query"
        return f"{what} ({self.url.split(':', 1)[0].split('+', 1)[0]})"


@dataclass(frozen=True)
class CitySpec:
    """A city's private description of its data (``city.toml``)."""

    name: str
    data: Path
    columns: tuple[ColumnSpec, ...]
    delimiter: str = ","
    decimal: str = "."
    #: The digit-group separator the city's numbers use ("1.013,5"), or None: then
    #: a number with a separator that is not the decimal mark is refused.
    thousands: str | None = None
    encoding: str = "utf-8-sig"
    missing_values: tuple[str, ...] = DEFAULT_MISSING_VALUES
    personalize_tau: float | None = None
    policy: PolicySpec = field(default_factory=PolicySpec)
    #: The database the rows come from, when ``data`` is a URL (then ``data`` is unused).
    database: DatabaseSpec | None = None
    source: str = field(default="city spec", compare=False)

    @property
    def label(self) -> str:
        """How messages name the city's data: the file's name, or the table and database."""
        return self.database.label if self.database is not None else self.data.name

    def column(self, name: str) -> ColumnSpec | None:
        """The mapping for federation column ``name``, if the city gives one."""
        for col in self.columns:
            if col.name == name:
                return col
        return None


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- TOML


def _read_toml(path: Path) -> dict[str, Any]:
    label = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, expected a TOML file") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{label}: not UTF-8 text ({exc.reason})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{label}: invalid TOML: {exc}") from None


class _Table:
    """A TOML table read key by key; reports unknown keys and wrong types."""

    def __init__(self, data: Mapping[str, Any], source: str, section: str) -> None:
        self._data = data
        self._source = source
        self._section = section
        self._seen: set[str] = set()

    def where(self, key: str) -> str:
        """The ``file: [section] key`` prefix of an error message."""
        prefix = f"[{self._section}] " if self._section else ""
        return f"{self._source}: {prefix}{key}"

    def fail(self, key: str, expected: str, value: object) -> SpecError:
        """An error saying what ``key`` should have been."""
        return SpecError(f"{self.where(key)}: expected {expected}, got {value!r}")

    def _get(self, key: str, default: object) -> object:
        self._seen.add(key)
        if key not in self._data:
            if default is _REQUIRED:
                raise SpecError(f"{self.where(key)}: missing required key")
            return default
        return self._data[key]

    def string(self, key: str, default: object = None, *, choices: tuple[str, ...] = ()) -> str:
        """A non-empty string, optionally one of ``choices``."""
        value = self._get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value)
        if choices and value not in choices:
            raise self.fail(key, "one of " + ", ".join(repr(c) for c in choices), value)
        return value

    def character(self, key: str, default: str) -> str:
        """One character, whitespace such as a tab included (a backslash-t spelled out too)."""
        value = self._get(key, default)
        if value == "\\t":
            value = "\t"
        if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
            raise self.fail(key, "a single character such as ',', ';' or '\\t'", value)
        return value

    def optional_string(self, key: str) -> str | None:
        """A string or nothing."""
        value = self._get(key, None)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def number(
        self,
        key: str,
        default: object,
        *,
        minimum: float,
        strict: bool = False,
        maximum: float | None = None,
    ) -> float:
        """A finite number in a range (``strict`` excludes the minimum)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a number", value)
        number = float(value)
        low_ok = number > minimum if strict else number >= minimum
        high_ok = maximum is None or number <= maximum
        if not math.isfinite(number) or not low_ok or not high_ok:
            rng = f"{'>' if strict else '>='} {minimum:g}"
            if maximum is not None:
                rng += f" and <= {maximum:g}"
            raise self.fail(key, f"a number {rng}", value)
        return number

    def integer(self, key: str, default: object, *, minimum: int) -> int:
        """An integer at least ``minimum``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def boolean(self, key: str, default: object) -> bool:
        """``true`` or ``false``."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def table(self, key: str, *, required: bool = False) -> Mapping[str, Any]:
        """A sub-table (``{}`` when absent and not required)."""
        value = self._get(key, _REQUIRED if required else {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "a table", value)
        return value

    def string_list(self, key: str, default: object) -> tuple[str, ...]:
        """A list of strings."""
        value = self._get(key, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def raw(self, key: str) -> object:
        """The value as it is (the caller validates it)."""
        return self._get(key, _REQUIRED)

    def finish(self) -> None:
        """Fail on the first key that was never read."""
        for key in self._data:
            if key not in self._seen:
                raise SpecError(f"{self.where(key)}: unknown key (check the spelling)")


_REQUIRED = object()


def _variable(
    data: object, source: str, section: str, *, categorical: bool = False
) -> VariableSpec:
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: [{section}]: expected a table with name and unit")
    table = _Table(data, source, section)
    name = table.string("name", _REQUIRED)
    unit = table.optional_string("unit") or "dimensionless"
    levels: tuple[str, ...] = ()
    if categorical or "levels" in data:
        levels = _levels(table, unit, categorical)
    table.finish()
    return VariableSpec(name=name, unit=unit, levels=levels)


def _levels(table: _Table, unit: str, allowed: bool) -> tuple[str, ...]:
    """A categorical feature's levels: two or more distinct labels (numbers read as text)."""
    raw = table._get("levels", ())
    if not raw:
        return ()
    if not allowed:
        raise SpecError(f"{table.where('levels')}: only a feature can be categorical")
    if not isinstance(raw, list | tuple) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in raw
    ):
        raise table.fail("levels", 'a list of labels such as ["Mon", "Tue"]', raw)
    levels = tuple(label_text(v) for v in raw)
    if len(levels) < 2:
        raise table.fail("levels", "at least two levels", raw)
    seen: set[str] = set()
    for level in levels:
        if not level or "=" in level:
            raise table.fail("levels", "non-empty labels without '='", level)
        if level in seen:
            raise SpecError(f"{table.where('levels')}: level {level!r} is listed twice")
        seen.add(level)
    if unit != "dimensionless":
        raise SpecError(f"{table.where('unit')}: a categorical feature has no unit, got {unit!r}")
    return levels


# ---------------------------------------------------------------- federation.toml


def parse_federation(data: Mapping[str, Any], source: str) -> FederationSpec:
    """Validate a parsed ``federation.toml`` document.

    Parameters
    ----------
    data : Mapping[str, Any]
        The TOML document (or the same structure received from the coordinator).
    source : str
        How to name the document in error messages (usually the file name).

    Returns
    -------
    FederationSpec
        The validated spec.

    Raises
    ------
    SpecError
        On an unknown key, a wrong type, a model that does not fit the task, or a
        feature listed twice.
    """
    from cityfed.config.units import check_convertible, validate_unit

    top = _Table(data, source, "")
    fed = _Table(top.table("federation", required=True), source, "federation")
    name = fed.string("name", _REQUIRED)
    task = fed.string("task", "regression", choices=tuple(_TASKS))
    model = fed.string("model", _DEFAULT_MODEL[task], choices=tuple(_MODELS))
    if model not in MODELS_FOR_TASK[task]:
        allowed = " or ".join(repr(m) for m in MODELS_FOR_TASK[task])
        raise SpecError(
            f"{fed.where('model')}: {model!r} does not fit task {task!r}; use {allowed}"
        )
    alpha_cv = fed._data.get("alpha") == "cv"
    if alpha_cv and model != "ridge":
        raise SpecError(f"{fed.where('alpha')}: alpha = \"cv\" is for model 'ridge', not {model!r}")
    spec_kwargs: dict[str, Any] = {
        "alpha": _alpha(fed, alpha_cv),
        "alpha_cv": alpha_cv,
        "alphas": _alphas(fed, alpha_cv),
        "cv_folds": fed.integer("cv_folds", 5, minimum=2),
        "C": fed.number("C", 1.0, minimum=0.0, strict=True),
        "standardize": fed.boolean("standardize", True),
        "holdout_fraction": fed.number("holdout_fraction", 0.2, minimum=0.0, maximum=0.9),
        "seed": fed.integer("seed", 0, minimum=0),
        "min_cities": fed.integer("min_cities", 2, minimum=1),
        "min_rows_per_city": fed.integer("min_rows_per_city", 50, minimum=1),
        "missing": fed.string("missing", "drop", choices=("drop", "error")),
        "algorithm": fed.string("algorithm", "exact", choices=("exact", "fedavg")),
        "rounds": fed.integer("rounds", 20, minimum=1),
        "local_epochs": fed.integer("local_epochs", 1, minimum=1),
        "max_rounds": fed.integer("max_rounds", 25, minimum=2),
        "tolerance": fed.number("tolerance", 1e-6, minimum=0.0, strict=True),
        "reply_timeout": fed.number("reply_timeout", 600.0, minimum=0.0, strict=True),
        "resend_after": fed.number("resend_after", 60.0, minimum=0.0, strict=True),
    }
    if spec_kwargs["resend_after"] >= spec_kwargs["reply_timeout"]:
        raise SpecError(
            f"{fed.where('resend_after')}: {spec_kwargs['resend_after']:g} s is not shorter "
            f"than reply_timeout ({spec_kwargs['reply_timeout']:g} s); a lost reply would "
            "never be asked again"
        )
    if model == "linear" and "alpha" in fed._data:
        raise SpecError(f"{fed.where('alpha')}: model 'linear' has no alpha; use 'ridge'")
    fed.finish()

    target = _variable(top.raw("target"), source, "target")
    raw_features = top.raw("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise SpecError(f"{source}: [[features]]: expected at least one [[features]] table")
    features = tuple(
        _variable(item, source, f"features {i + 1}", categorical=True)
        for i, item in enumerate(raw_features)
    )
    raw_exposure = top._get("exposure", None)
    exposure = None if raw_exposure is None else _variable(raw_exposure, source, "exposure")
    privacy = _Table(top.table("privacy"), source, "privacy")
    spec_kwargs["secure_aggregation"] = privacy.boolean("secure_aggregation", False)
    spec_kwargs["epsilon"] = privacy.number("epsilon", 0.0, minimum=0.0)
    private = spec_kwargs["epsilon"] > 0.0
    spec_kwargs["delta"] = (
        privacy.number("delta", 1e-6, minimum=0.0, strict=True, maximum=0.1) if private else 0.0
    )
    spec_kwargs["newton_rounds"] = privacy.integer("newton_rounds", 5, minimum=1)
    raw_bounds = privacy.table("bounds")
    spec_kwargs["city_keys"] = _city_keys(
        privacy.table("city_keys"), source, spec_kwargs["secure_aggregation"]
    )
    privacy.finish()
    top.finish()
    if spec_kwargs["secure_aggregation"] and spec_kwargs["algorithm"] == "fedavg":
        raise SpecError(
            f"{source}: [privacy] secure_aggregation: needs algorithm = 'exact' (FedAvg's "
            "weighted average of models is not a sum of statistics)"
        )
    if exposure is not None and model != "poisson":
        raise SpecError(f"{source}: [exposure]: an exposure is for model 'poisson', not {model!r}")
    if exposure is not None and exposure.name in {target.name, *(f.name for f in features)}:
        raise SpecError(
            f"{source}: [exposure] name: {exposure.name!r} is also a feature or the target"
        )

    seen: set[str] = set()
    for i, feat in enumerate(features):
        if feat.name in seen:
            raise SpecError(
                f"{source}: [[features]] {i + 1} name: feature {feat.name!r} is listed twice"
            )
        seen.add(feat.name)
    if target.name in seen:
        raise SpecError(
            f"{source}: [target] name: {target.name!r} is also a feature; "
            "a model cannot predict its own input"
        )
    for i, feat in enumerate(features):
        validate_unit(feat.unit, where=f"{source}: [[features]] {i + 1} unit")
    validate_unit(target.unit, where=f"{source}: [target] unit")
    if task == "classification":
        check_convertible(target.unit, None, where=f"{source}: [target] unit (a 0/1 class label)")
    if task == "count":
        check_convertible(target.unit, None, where=f"{source}: [target] unit (a count)")
    if exposure is not None:
        validate_unit(exposure.unit, where=f"{source}: [exposure] unit")
    spec_kwargs["bounds"] = _bounds(
        raw_bounds, source, private, model, alpha_cv, spec_kwargs["algorithm"], features, target
    )
    if spec_kwargs["algorithm"] == "fedavg" and (model == "poisson" or alpha_cv):
        what = 'alpha = "cv"' if alpha_cv else "model 'poisson'"
        raise SpecError(f"{source}: [federation] algorithm: {what} needs algorithm = 'exact'")
    return FederationSpec(
        name=name,
        task=_TASKS[task],
        model=_MODELS[model],
        target=target,
        features=features,
        exposure=exposure,
        source=source,
        **spec_kwargs,
    )


def _bounds(
    raw: Mapping[str, Any],
    source: str,
    private: bool,
    model: str,
    alpha_cv: bool,
    algorithm: str,
    features: tuple[VariableSpec, ...],
    target: VariableSpec,
) -> tuple[tuple[str, float, float], ...]:
    """``[privacy.bounds]``: ``name = [low, high]`` for each numeric feature and the target."""
    where = f"{source}: [privacy]"
    if not private:
        if raw:
            raise SpecError(f"{where} bounds: clipping bounds need an epsilon")
        return ()
    if model not in ("linear", "ridge", "logistic") or alpha_cv or algorithm != "exact":
        what = 'alpha = "cv"' if alpha_cv else f"model {model!r}"
        if algorithm != "exact":
            what = f"algorithm {algorithm!r}"
        raise SpecError(
            f"{where} epsilon: differential privacy is for linear, ridge and logistic "
            f"regression by the exact algorithm, not {what}"
        )
    needed = [f.name for f in features if not f.categorical]
    if model != "logistic":
        needed.append(target.name)
    known = {f.name for f in features} | {target.name}
    out = []
    for name, value in raw.items():
        if name not in known:
            raise SpecError(f"{where} bounds {name}: not a feature or the target")
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            or not all(math.isfinite(v) for v in value)
            or not value[0] < value[1]
        ):
            raise SpecError(
                f"{where} bounds {name}: expected [low, high] with low < high, got {value!r}"
            )
        out.append((name, float(value[0]), float(value[1])))
    missing = [name for name in needed if name not in raw]
    if missing:
        raise SpecError(
            f"{where} bounds: {missing[0]!r} has no clipping range; a private run needs "
            "[low, high] in federation units for every numeric feature and the target"
        )
    return tuple(sorted(out))


def _city_keys(raw: Mapping[str, Any], source: str, secure: bool) -> tuple[tuple[str, str], ...]:
    """``[privacy.city_keys]``: ``name = "ed25519:<base64>"`` for each city."""
    if raw and not secure:
        raise SpecError(
            f"{source}: [privacy] city_keys: the cities' keys sign secure-aggregation keys; "
            "set secure_aggregation = true"
        )
    out = []
    for name, value in raw.items():
        try:
            parse_identity(value if isinstance(value, str) else "")
        except ValueError as exc:
            raise SpecError(f"{source}: [privacy.city_keys] {name}: {exc}") from None
        out.append((str(name), str(value)))
    return tuple(sorted(out))


def _alpha(fed: _Table, alpha_cv: bool) -> float:
    """Ridge's alpha; with ``alpha = "cv"`` a placeholder (the run chooses it)."""
    if alpha_cv:
        fed._get("alpha", None)
        return 1.0
    return fed.number("alpha", 1.0, minimum=0.0)


def _alphas(fed: _Table, alpha_cv: bool) -> tuple[float, ...]:
    """The grid of ``alpha = "cv"``: distinct numbers >= 0 (only with ``alpha = "cv"``)."""
    raw = fed._get("alphas", None)
    if raw is None:
        return DEFAULT_CV_ALPHAS
    if not alpha_cv:
        raise SpecError(f'{fed.where("alphas")}: a grid of alphas needs alpha = "cv"')
    if (
        not isinstance(raw, list)
        or len(raw) < 2
        or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in raw)
        or not all(math.isfinite(a) and a >= 0 for a in raw)
    ):
        raise fed.fail("alphas", "a list of at least two numbers >= 0", raw)
    if len(set(raw)) != len(raw):
        raise fed.fail("alphas", "distinct numbers", raw)
    return tuple(float(a) for a in raw)


def load_federation(path: str | Path) -> FederationSpec:
    """Read and validate a ``federation.toml`` file."""
    path = Path(path)
    return parse_federation(_read_toml(path), path.name)


def federation_to_json(spec: FederationSpec) -> str:
    """Serialise a spec so the coordinator can send it to the cities.

    Options at their defaults that older specs did not have (levels, an
    exposure, the cross-validation grid) are left out, so that a federation's
    digest does not change with the version that wrote it.
    """
    data = asdict(spec)
    data.pop("source")
    target = _plain(data.pop("target"))
    features = [_plain(f) for f in data.pop("features")]
    exposure = data.pop("exposure")
    privacy: dict[str, Any] = {}
    if data.pop("secure_aggregation"):
        privacy["secure_aggregation"] = True
    city_keys = data.pop("city_keys")
    if city_keys:
        privacy["city_keys"] = dict(city_keys)
    epsilon, delta = data.pop("epsilon"), data.pop("delta")
    bounds, newton_rounds = data.pop("bounds"), data.pop("newton_rounds")
    if epsilon > 0:
        privacy.update(epsilon=epsilon, delta=delta, newton_rounds=newton_rounds)
        privacy["bounds"] = {name: [low, high] for name, low, high in bounds}
    if data.pop("alpha_cv"):
        data["alpha"] = "cv"
        data["alphas"] = list(data["alphas"])
    else:
        data.pop("alphas")
        data.pop("cv_folds")
    document: dict[str, Any] = {"federation": data, "target": target, "features": features}
    if exposure is not None:
        document["exposure"] = _plain(exposure)
    if privacy:
        document["privacy"] = privacy
    return json.dumps(document)


def _plain(variable: dict[str, Any]) -> dict[str, Any]:
    """A variable's JSON: ``levels`` only for a categorical feature."""
    if not variable.get("levels"):
        variable.pop("levels", None)
    else:
        variable["levels"] = list(variable["levels"])
    return variable


def federation_from_json(
    text: str, source: str = "federation spec from coordinator"
) -> FederationSpec:
    """Parse what :func:`federation_to_json` wrote, with the same validation."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{source}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a JSON object")
    fed = data.get("federation")
    if isinstance(fed, dict) and fed.get("model") == "linear":
        fed.pop("alpha", None)
    return parse_federation(data, source)


@functools.lru_cache(maxsize=128)
def federation_digest(spec: FederationSpec) -> str:
    """``sha256:`` of the spec's canonical JSON: what a city's agreement pins."""
    canonical = json.dumps(
        json.loads(federation_to_json(spec)), sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------- city.toml


def _agreement(entry: str, where: str, base_dir: Path) -> Agreement:
    """An ``agreed`` entry: ``sha256:<hex>`` or the path of a ``federation.toml``."""
    if entry.startswith("sha256:"):
        digest = entry[len("sha256:") :]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise SpecError(f"{where}: {entry[:80]!r} is not sha256: and 64 hex digits")
        return Agreement(entry, entry)
    path = Path(entry)
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise SpecError(
            f"{where}: agreed federation {entry!r} not found next to the city's config "
            "(give the path of the federation.toml the city agreed to, or its sha256:)"
        )
    return Agreement(entry, federation_digest(load_federation(path)))


def _policy(top: _Table, source: str, base_dir: Path) -> PolicySpec:
    table = _Table(top.table("policy"), source, "policy")
    defaults = PolicySpec()
    agreed = tuple(
        _agreement(entry, table.where("agreed"), base_dir)
        for entry in table.string_list("agreed", [])
    )
    holdout_raw = table._get("holdout_fraction", None)
    seed_raw = table._get("seed", None)
    policy = PolicySpec(
        agreed=agreed,
        holdout_fraction=None
        if holdout_raw is None
        else table.number("holdout_fraction", None, minimum=0.0, maximum=0.9),
        seed=None if seed_raw is None else table.integer("seed", None, minimum=0),
        min_rows=table.integer("min_rows", defaults.min_rows, minimum=1),
        max_params_fraction=table.number(
            "max_params_fraction", defaults.max_params_fraction, minimum=0.0, strict=True,
            maximum=1.0,
        ),
        min_bin_rows=table.integer("min_bin_rows", defaults.min_bin_rows, minimum=1),
        max_rounds=table.integer("max_rounds", defaults.max_rounds, minimum=1),
        max_evaluations=table.integer("max_evaluations", defaults.max_evaluations, minimum=0),
        max_runs_per_day=table.integer("max_runs_per_day", defaults.max_runs_per_day, minimum=1),
        max_abs_weight=table.number(
            "max_abs_weight", defaults.max_abs_weight, minimum=0.0, strict=True
        ),
        max_folds=table.integer("max_folds", defaults.max_folds, minimum=0),
        max_points_per_round=table.integer(
            "max_points_per_round", defaults.max_points_per_round, minimum=1
        ),
        accepted_versions=table.string_list("accepted_versions", []),
        secure_aggregation=table.boolean("secure_aggregation", False),
        require_signed_keys=table.boolean("require_signed_keys", False),
        release_counts=table.boolean("release_counts", True),
        release_scores=table.boolean("release_scores", True),
        budget_epsilon=None if table._get("budget_epsilon", None) is None
        else table.number("budget_epsilon", None, minimum=0.0),
        budget_delta=None if table._get("budget_delta", None) is None
        else table.number("budget_delta", None, minimum=0.0, maximum=1.0),
    )  # fmt: skip
    table.finish()
    return policy


def parse_city(data: Mapping[str, Any], source: str, base_dir: Path) -> CitySpec:
    """Validate a parsed ``city.toml`` document.

    Parameters
    ----------
    data : Mapping[str, Any]
        The TOML document.
    source : str
        How to name the document in error messages.
    base_dir : Path
        The folder that a relative ``data`` path is relative to.

    Returns
    -------
    CitySpec
        The validated spec.
    """
    from cityfed.config.units import validate_unit

    top = _Table(data, source, "")
    city = _Table(top.table("city", required=True), source, "city")
    name = city.string("name", _REQUIRED)
    data_text = city.string("data", _REQUIRED)
    database = _database(city, data_text, base_dir)
    data_path = Path(data_text) if database is None else Path(database.label)
    delimiter = city.character("delimiter", ",")
    decimal = city.string("decimal", ".")
    thousands = city.optional_string("thousands")
    encoding = city.string("encoding", "utf-8-sig")
    missing_values = city.string_list("missing_values", list(DEFAULT_MISSING_VALUES))
    city.finish()
    if decimal not in (".", ","):
        raise city.fail("decimal", "'.' or ','", decimal)
    if decimal == delimiter:
        raise SpecError(f"{city.where('decimal')}: must differ from the delimiter {delimiter!r}")
    if thousands is not None and (
        thousands not in (".", ",", " ", "'", "_") or thousands == decimal
    ):
        raise city.fail(
            "thousands", "one of '.', ',', ' ', \"'\", '_', other than the decimal mark", thousands
        )
    try:
        "".encode(encoding)
    except LookupError:
        raise city.fail("encoding", "a known text encoding such as 'utf-8'", encoding) from None
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # a UTF-8 byte-order mark is accepted either way

    columns: list[ColumnSpec] = []
    col_table = _Table(top.table("columns"), source, "columns")
    for col_name, value in col_table._data.items():
        col_table._seen.add(col_name)
        where = col_table.where(col_name)
        if isinstance(value, str):
            value = {"source": value}
        if not isinstance(value, Mapping):
            raise SpecError(f'{where}: expected {{ source = "...", unit = "..." }}, got {value!r}')
        entry = _Table(value, source, f"columns.{col_name}")
        col_source = entry.string("source", col_name)
        unit = entry.optional_string("unit")
        labels = _labels(entry)
        entry.finish()
        if unit is not None:
            validate_unit(unit, where=f"{where} unit")
        same = [c.name for c in columns if c.source.strip(" `") == col_source.strip(" `")]
        if same:
            raise SpecError(
                f"{where}: reads the same source {_short(col_source)!r} as [columns] "
                f"{same[0]}; each federation column needs its own source column"
            )
        columns.append(ColumnSpec(name=col_name, source=col_source, unit=unit, labels=labels))

    personalize = _Table(top.table("personalize"), source, "personalize")
    tau_raw = personalize._get("tau", "auto")
    tau: float | None
    if tau_raw == "auto":
        tau = None
    elif isinstance(tau_raw, int | float) and not isinstance(tau_raw, bool) and tau_raw >= 0:
        tau = float(tau_raw)
    else:
        raise personalize.fail("tau", '"auto" or a number >= 0', tau_raw)
    personalize.finish()
    policy = _policy(top, source, base_dir)
    top.finish()

    resolved = data_path if data_path.is_absolute() else (base_dir / data_path)
    return CitySpec(
        name=name,
        data=resolved,
        columns=tuple(columns),
        delimiter=delimiter,
        decimal=decimal,
        thousands=thousands,
        encoding=encoding,
        missing_values=missing_values,
        personalize_tau=tau,
        policy=policy,
        database=database,
        source=source,
    )


_READ_ONLY_START = ("select", "with")


def _database(city: _Table, data: str, base_dir: Path) -> DatabaseSpec | None:
    """``data = "postgresql://..."`` or ``"sqlite:///..."`` with a ``table`` or a ``query``."""
    from urllib.parse import urlsplit

    if "://" not in data:
        for key in ("table", "query", "password_env", "password_file"):
            if key in city._data:
                raise SpecError(
                    f'{city.where(key)}: only for a database (data = "postgresql://...")'
                )
        return None
    parts = urlsplit(data)
    if parts.scheme not in DATABASE_SCHEMES:
        raise city.fail("data", "a file, or a URL of " + ", ".join(DATABASE_SCHEMES), data)
    if parts.password is not None:
        raise SpecError(
            f"{city.where('data')}: the URL holds a password; a password never goes in "
            "city.toml: set password_env (an environment variable) or password_file"
        )
    table = city.optional_string("table")
    query = city.optional_string("query")
    if (table is None) == (query is None):
        raise SpecError(f"{city.where('table')}: a database needs exactly one of table or query")
    if query is not None:
        body = query.strip().rstrip(";").strip()
        if not body.lower().startswith(_READ_ONLY_START) or ";" in body:
            raise SpecError(
                f"{city.where('query')}: expected one SELECT (or WITH ... SELECT) statement, "
                f"got {_short(query)!r}"
            )
        query = body
    url = data
    if parts.scheme == "sqlite":
        # sqlite:///relative.db (next to city.toml) or sqlite:////absolute/path.db.
        path = Path(parts.path[1:])
        resolved = path if path.is_absolute() else base_dir / path
        url = "sqlite:///" + str(resolved)
    password_file_raw = city.optional_string("password_file")
    password_file = None
    if password_file_raw is not None:
        password_file = Path(password_file_raw)
        password_file = password_file if password_file.is_absolute() else base_dir / password_file
    return DatabaseSpec(
        url=url,
        table=table,
        query=query,
        password_env=city.optional_string("password_env"),
        password_file=password_file,
    )


def _labels(entry: _Table) -> dict[str, str]:
    """``labels = { Mo = "Mon", ... }``: the city's labels to the federation's levels."""
    raw = entry.table("labels")
    labels: dict[str, str] = {}
    for local, level in raw.items():
        if isinstance(level, int) and not isinstance(level, bool):
            level = str(level)
        if not isinstance(level, str) or not level.strip():
            raise entry.fail(f"labels.{local}", "a level of the federation (a string)", level)
        labels[str(local).strip()] = level.strip()
    return labels


def load_city(path: str | Path) -> CitySpec:
    """Read and validate a ``city.toml`` file (``data`` is relative to it)."""
    path = Path(path)
    return parse_city(_read_toml(path), path.name, path.resolve().parent)
