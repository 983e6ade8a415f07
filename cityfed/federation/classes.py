"""A classification needs both classes: the refusal, worded once for simulation and runs."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["one_class_problem"]


def one_class_problem(counts: Mapping[str, tuple[int, int]]) -> str | None:
    """Why pooled labels cannot train a classifier, or None when both classes occur.

    Parameters
    ----------
    counts : Mapping[str, tuple[int, int]]
        Each city's training rows of class 0 and of class 1.

    Returns
    -------
    str or None
        "every pooled training label is 1 (EWR: 0 of class 0, 120 of class 1; ...)"
        and what to check, or None.
    """
    zeros = sum(c[0] for c in counts.values())
    ones = sum(c[1] for c in counts.values())
    if zeros and ones:
        return None
    label = 1 if ones else 0
    listed = "; ".join(
        f"{city}: {c[0]} of class 0, {c[1]} of class 1" for city, c in sorted(counts.items())
    )
    return (
        f"every pooled training label is {label} ({listed}); a classifier needs both "
        "classes: check the target's mapping, its threshold or the cities taking part"
    )
