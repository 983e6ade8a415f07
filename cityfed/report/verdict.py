"""What joining did for one city, in one sentence: the report's answer to "did it help us?"."""

from __future__ import annotations

from dataclasses import dataclass

from cityfed.federation.outcome import CityOutcome
from cityfed.report.types import ScoreName, holdout_models, score_of

__all__ = ["SAME_WITHIN", "Change", "change", "na_reason", "verdict"]

#: Changes smaller than this fraction of the local-only error count as "the same".
SAME_WITHIN = 0.005


@dataclass(frozen=True)
class Change:
    """A model's error against the city's own model, on the city's holdout rows.

    Parameters
    ----------
    metric : ScoreName
        The error compared (RMSE for regression, log-loss for classification).
    local, federated, personalized : float or None
        The errors of the three models.
    """

    metric: ScoreName
    local: float | None
    federated: float | None
    personalized: float | None

    def gain(self, which: str) -> float | None:
        """Relative error reduction of ``federated`` or ``personalized`` (0.12 = 12 % better)."""
        value = self.federated if which == "federated" else self.personalized
        if value is None or self.local is None or self.local <= 0.0:
            return None
        return (self.local - value) / self.local


def change(city: CityOutcome, classification: bool) -> Change:
    """The errors behind the verdict: RMSE (regression) or log-loss (classification)."""
    metric: ScoreName = "log_loss" if classification else "rmse"
    local, federated, personalized = (score_of(s, metric) for s in holdout_models(city))
    return Change(metric, local, federated, personalized)


def _pct(value: float) -> str:
    return f"{abs(value) * 100:.1f} %"


def na_reason(city: CityOutcome, classification: bool) -> str | None:
    """Why a city has no comparison with its own model, or None when it has one."""
    if city.status != "ok":
        return (
            f"the city did not take part ({city.status}{': ' + city.reason if city.reason else ''})"
        )
    holdout = city.evaluation.holdout if city.evaluation is not None else None
    if holdout is None:
        return (
            "no holdout rows were scored (holdout_fraction = 0, or fewer holdout rows "
            "than the city's [policy] min_bin_rows)"
        )
    if holdout.local_only is None:
        if classification:
            return "the city's own training rows have one class, so it has no model of its own"
        return "the city has no model of its own to compare with"
    c = change(city, classification)
    if c.gain("federated") is None:
        label = "log-loss" if classification else "RMSE"
        if c.local == 0.0:
            return f"the city's own model has a {label} of 0 on its holdout rows"
        return f"the {label} is undefined on the city's holdout rows"
    return None


def verdict(city: CityOutcome, classification: bool) -> str:
    """One plain sentence saying whether the federation improved this city's predictions.

    Parameters
    ----------
    city : CityOutcome
        The city's outcome, with its holdout scores.
    classification : bool
        Compare log-losses (True) or RMSEs (False).

    Returns
    -------
    str
        For example "Joining improved your RMSE by 12.0 % (1.84 → 1.62)" or "The
        federated model is 1.5 % worse than your own (RMSE 1.62 vs 1.60); the
        personalised model keeps your accuracy (RMSE 1.60)".
    """
    reason = na_reason(city, classification)
    if reason is not None:
        return f"No verdict: {reason}."
    c = change(city, classification)
    label = "log-loss" if classification else "RMSE"
    gain, personal = c.gain("federated"), c.gain("personalized")
    if c.local is None or c.federated is None or gain is None:  # na_reason said why
        return "No verdict."
    if gain > SAME_WITHIN:
        text = f"Joining improved your {label} by {_pct(gain)} ({c.local:.4g} → {c.federated:.4g})"
        if personal is not None and personal > gain + SAME_WITHIN:
            text += f"; the personalised model does better still ({c.personalized:.4g})"
        return text + "."
    if gain >= -SAME_WITHIN:
        text = (
            f"The federated model predicts as well as your own ({label} {c.federated:.4g} vs "
            f"{c.local:.4g}, within {_pct(SAME_WITHIN)})"
        )
    else:
        text = (
            f"The federated model is {_pct(gain)} worse than your own "
            f"({label} {c.federated:.4g} vs {c.local:.4g})"
        )
    if personal is None:
        return text + "."
    if personal > SAME_WITHIN:
        return (
            text + f"; the personalised model improves on your own by {_pct(personal)} "
            f"({c.personalized:.4g})."
        )
    if personal >= -SAME_WITHIN:
        return (
            text + f"; the personalised model keeps your accuracy ({label} {c.personalized:.4g})."
        )
    return text + f"; the personalised model is {_pct(personal)} worse too ({c.personalized:.4g})."
