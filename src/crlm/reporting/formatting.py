"""How numbers are written wherever a reader sees them: one label per metric, one interval formatter, one
p-value formatter and one rule for the horizon a headline quotes.

This module imports nothing of crlm's, so every layer (the benchmark's text leaderboard, the figures, the model
card, MLflow run names, the CLI) can format through it without an import circle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MISSING_TEXT = "n/a"
HEADLINE_HORIZON_MONTHS = 36.0  # the horizon headlines quote when the benchmark evaluated it
METRIC_LABELS = {"harrell_c": "Harrell's C", "uno_c": "Uno's C", "mean_auc": "mean time-dependent AUC",
                 "ibs": "integrated Brier score", "ipa_ibs": "IPA (integrated)"}


def headline_horizon(horizons: Sequence[float]) -> float:
    """The horizon a headline quotes: 36 months when evaluated, else the last usable horizon.

    Parameters
    ----------
    horizons : sequence of float
        The evaluated horizons in months, in increasing order.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        When no horizon was evaluated.
    """
    values = [float(h) for h in horizons]
    if not values:
        raise ValueError("no evaluated horizon to quote")
    return HEADLINE_HORIZON_MONTHS if any(np.isclose(values, HEADLINE_HORIZON_MONTHS)) else values[-1]


def horizon_key(metric: str, horizons: Sequence[float]) -> str:
    """The leaderboard column of a per-horizon metric at the headline horizon, e.g. ``ici_36``.

    Parameters
    ----------
    metric : str
        ``ici`` or ``oe``.
    horizons : sequence of float

    Returns
    -------
    str
    """
    return f"{metric}_{headline_horizon(horizons):g}"


def is_missing(value) -> bool:
    """True for None, pandas' NA and NaN."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(np.isnan(float(value)))
    except (TypeError, ValueError):
        return False


def format_number(value, digits: int = 3, missing: str = MISSING_TEXT) -> str:
    """``0.712``; ``missing`` for an unknown value (never a number made up).

    Parameters
    ----------
    value : float or None
    digits : int
    missing : str

    Returns
    -------
    str
    """
    return missing if is_missing(value) else f"{float(value):.{digits}f}"


def format_interval(low, high, digits: int = 3, enclose: str = "()") -> str:
    """An interval as ``(0.680, 0.745)``: a comma, not a dash, so negative bounds read unambiguously.

    Parameters
    ----------
    low, high : float or None
        The bounds; an interval with an unknown bound is ``""``.
    digits : int
    enclose : str
        Opening and closing characters (``"()"``, ``"[]"``) or ``""`` for the bare ``0.680, 0.745``.

    Returns
    -------
    str
    """
    if is_missing(low) or is_missing(high):
        return ""
    text = f"{float(low):.{digits}f}, {float(high):.{digits}f}"
    return f"{enclose[0]}{text}{enclose[1]}" if enclose else text


def format_estimate(estimate, low=None, high=None, digits: int = 3, missing: str = MISSING_TEXT) -> str:
    """An estimate with its interval, ``0.712 (0.680, 0.745)``; the estimate alone when it has none.

    Parameters
    ----------
    estimate, low, high : float or None
    digits : int
    missing : str
        The text of an unknown estimate.

    Returns
    -------
    str
    """
    text = format_number(estimate, digits, missing)
    interval = format_interval(low, high, digits)
    return f"{text} {interval}" if interval and text != missing else text


def format_p(p, n_boot: int | None = None, missing: str = MISSING_TEXT) -> str:
    """A p-value: ``p = 0.012`` / ``p < 0.001`` for a test, or a bootstrap p-value as ``0.04`` / ``<0.01``.

    A bootstrap p-value cannot resolve below about ``2 / n_boot``; below that it is written as that bound.

    Parameters
    ----------
    p : float or None
    n_boot : int, optional
        The number of bootstrap resamples behind ``p`` (None: an analytic test's p-value).
    missing : str

    Returns
    -------
    str
    """
    if is_missing(p):
        return missing
    p = float(p)
    if n_boot is None:
        return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    floor = 2.0 / max(n_boot, 1)
    return f"<{floor:.2g}" if p < floor else f"{p:.2f}"
