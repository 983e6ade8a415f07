"""The typed report of a run: built once, written as ``report.json``, rendered twice.

:func:`cityfed.report.build.build_report` makes a :class:`Report`;
``report.json`` is its JSON form, and both the HTML page and the terminal summary
read the same typed fields. A city's part is the coordinator's own
:class:`~cityfed.federation.outcome.CityOutcome`, not a copy of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cityfed.config.spec import Algorithm, FederationSpec, ModelKind, Task, VariableSpec
from cityfed.core.metrics import Scores
from cityfed.federation.outcome import CityOutcome

__all__ = [
    "CoefficientRow",
    "Compared",
    "InferenceSection",
    "ModelSection",
    "PooledCheck",
    "Report",
    "ScoreName",
    "Timing",
    "holdout_models",
    "score_of",
]

#: What the pooled check compares: predictions (regression) or P(class 1).
Compared = Literal["prediction", "predicted probability", "expected count"]
#: The holdout scores, by their field name in the score records and ``report.json``.
ScoreName = Literal[
    "r2", "rmse", "mae", "accuracy", "log_loss", "roc_auc", "base_rate", "precision", "recall"
]


@dataclass(frozen=True)
class CoefficientRow:
    """One coefficient's estimate, standard error, test and 95 % interval (federation units)."""

    name: str
    estimate: float
    std_error: float
    statistic: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class InferenceSection:
    """The inference table of a linear (OLS, ``t``) or logistic (Wald, ``normal``) fit."""

    coefficients: tuple[CoefficientRow, ...]
    distribution: Literal["t", "normal"]
    df_resid: float
    r2: float | None = None
    adj_r2: float | None = None
    rse: float | None = None


@dataclass(frozen=True)
class ModelSection:
    """The fitted model as the report shows it, in federation units.

    Parameters
    ----------
    kind, task, algorithm : str
        What was fitted, for which task, by which algorithm.
    features, units : tuple of str
        Federation names and units of the inputs, in model order.
    target : VariableSpec
        The predicted column.
    coef : tuple of float
        One coefficient per feature, in federation units.
    intercept : float
        The intercept, in federation units (log-odds for classification).
    rounds : int
        Training rounds run.
    converged : bool
        Whether the iterative fit met its tolerance (always true for exact fits).
    training_rows : int
        Training rows over all cities that took part.
    cities : tuple of str
        The cities whose rows the model was fitted on.
    metrics : Mapping[str, float]
        Fit diagnostics (``train_r2``, ``rank``, ...).
    """

    kind: ModelKind
    task: Task
    algorithm: Algorithm
    features: tuple[str, ...]
    units: tuple[str, ...]
    target: VariableSpec
    coef: tuple[float, ...]
    intercept: float
    rounds: int
    converged: bool
    training_rows: int
    cities: tuple[str, ...]
    metrics: Mapping[str, float]
    #: Standard errors and tests; None with ``inference_note`` saying why.
    inference: InferenceSection | None = None
    inference_note: str = ""
    #: The penalty used (ridge, Poisson): with ``alpha = "cv"`` the one chosen.
    alpha: float | None = None
    #: ``alpha = "cv"``: ``(alpha, mean cross-validation score)`` for the whole grid.
    alpha_path: tuple[tuple[float, float], ...] = ()
    #: Only masked statistics reached the coordinator.
    secure_aggregation: bool = False
    #: The run's differential privacy (0: none).
    epsilon: float = 0.0
    delta: float = 0.0


@dataclass(frozen=True)
class PooledCheck:
    """The federated model against a reference fitted on all rows pooled (simulation only).

    Parameters
    ----------
    max_abs_prediction_diff : float
        Largest absolute difference of the compared quantity over the pooled rows.
    relative_to_std_y : float or None
        That difference divided by std(y); None when y is constant.
    rows : int
        Pooled training rows compared.
    reference : str
        The reference estimator, e.g. ``sklearn Ridge(alpha=1)``.
    compared : Compared
        What was compared.
    within_tolerance : bool
        Whether the difference is within the tool's tolerance (a private model's
        difference is the price of its noise, told by ``cost``: always true).
    private : bool
        The model is differentially private.
    cost_metric : str
        The holdout score ``cost`` is told in (``rmse``, ``log_loss``).
    cost : Mapping[str, tuple[float, float]]
        Per city: the private model's score on its holdout rows, and the
        non-private pooled fit's on the same rows (the accuracy cost of privacy).
    """

    max_abs_prediction_diff: float
    relative_to_std_y: float | None
    rows: int
    reference: str
    compared: Compared
    within_tolerance: bool
    private: bool = False
    cost_metric: str = ""
    cost: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """How long the run took, in seconds.

    Parameters
    ----------
    wall_seconds : float
        The coordinator's run, from start to model.
    aggregation_seconds : float
        Time spent merging the cities' statistics.
    command_seconds : float or None, optional
        The whole command as the user waited for it (set by the CLI only).
    """

    wall_seconds: float
    aggregation_seconds: float
    command_seconds: float | None = None


@dataclass(frozen=True)
class Report:
    """Everything the report of a run says.

    Parameters
    ----------
    cityfed_version : str
        The CityFed version that wrote the report.
    created_at : str
        When the model was created (ISO 8601, UTC).
    run_id : str
        The run's identifier.
    federation : FederationSpec
        The federation spec the run trained.
    model : ModelSection
        The fitted model.
    cities : Mapping[str, CityOutcome]
        Every city's outcome, by city name, sorted by name.
    pooled_check : PooledCheck or None
        The comparison with a pooled fit (simulation only).
    timing : Timing
        Run durations.
    deployment : Mapping[str, str] or None, optional
        Facts about the deployment that ran it (``coordinator_certificate``),
        added by ``cityfed demo --deploy``; a run's own ``report.json`` has none.
    """

    cityfed_version: str
    created_at: str
    run_id: str
    federation: FederationSpec
    model: ModelSection
    cities: Mapping[str, CityOutcome]
    pooled_check: PooledCheck | None
    timing: Timing
    deployment: Mapping[str, str] | None = None


def holdout_models(city: CityOutcome) -> tuple[Scores | None, Scores | None, Scores | None]:
    """The local-only, federated and personalised scores of a city (Nones without holdout).

    Parameters
    ----------
    city : CityOutcome
        The city's outcome.

    Returns
    -------
    tuple
        ``(local_only, federated, personalized)``; each is None when not scored.
    """
    holdout = city.evaluation.holdout if city.evaluation is not None else None
    if holdout is None:
        return None, None, None
    return holdout.local_only, holdout.federated, holdout.personalized


def score_of(scores: Scores | None, name: ScoreName) -> float | None:
    """One finite score by name.

    Parameters
    ----------
    scores : Scores or None
        Regression or classification scores of one model.
    name : ScoreName
        The score's field name.

    Returns
    -------
    float or None
        The score; None when the model was not scored, the score is undefined
        (or not finite) or belongs to the other task.
    """
    value: float | None = getattr(scores, name, None)
    return value if value is not None and math.isfinite(value) else None
