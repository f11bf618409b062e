"""Kaplan–Meier estimates, read off scikit-survival's ``kaplan_meier_estimator``: the one place crlm turns
(time, event) into a survival curve, its value at given times, its median, or the censoring distribution.

Conventions (the same for every caller): S(t) = 1 before the first event time and is right-continuous (a
step at an event time counts at that time); beyond the last observed time S is unknown (NaN) unless the
curve has reached 0 (every patient still followed had the event), when it stays 0. No patients: NaN.
The bootstrap's vectorised, weighted estimate (``crlm.evaluation.weighted``) is the one exception: it
evaluates B weight vectors at once, which scikit-survival's estimator does not take.
"""

from __future__ import annotations

import numpy as np
from sksurv.nonparametric import kaplan_meier_estimator

__all__ = ["censoring_curve", "km_at", "km_curve", "km_median", "median_follow_up"]


def _arrays(time, event) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(time, dtype=float), np.asarray(event, dtype=bool)


def km_curve(time, event, conf_type: str | None = None):
    """The Kaplan–Meier curve: scikit-survival's ``kaplan_meier_estimator(event, time)``.

    Parameters
    ----------
    time : array-like of float
        Follow-up times.
    event : array-like of bool
        True for an event, False for a censored time.
    conf_type : {None, "log-log"}
        ``"log-log"`` also returns the pointwise 95% confidence band.

    Returns
    -------
    times, survival : ndarray
        The distinct observed times and S at each; with ``conf_type`` also the band, shape (2, len(times)).
    """
    time, event = _arrays(time, event)
    return kaplan_meier_estimator(event, time, conf_type=conf_type)


def _step(curve_times: np.ndarray, curve: np.ndarray, at: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(curve_times, at, side="right") - 1
    out = np.where(idx >= 0, curve[np.clip(idx, 0, None)], 1.0)
    return np.where((at > curve_times[-1]) & (curve[-1] > 0), np.nan, out)


def km_at(time, event, times):
    """Kaplan–Meier survival at ``times`` (the module's conventions: NaN beyond the follow-up, NaN for none).

    Parameters
    ----------
    time : array-like of float
        Follow-up times.
    event : array-like of bool
        True for an event.
    times : float or array-like of float
        Where to read the curve.

    Returns
    -------
    float or ndarray
        A float for a scalar ``times``, else an array of the same length.

    Examples
    --------
    >>> km_at([1.0, 2.0, 3.0, 4.0], [True, False, True, False], [0.5, 1.0, 3.0, 5.0]).tolist()
    [1.0, 0.75, 0.375, nan]
    """
    time, event = _arrays(time, event)
    at = np.atleast_1d(np.asarray(times, dtype=float))
    if len(time) == 0:
        out = np.full(at.shape, np.nan)
    else:
        curve_times, curve = kaplan_meier_estimator(event, time)
        out = _step(curve_times, curve, at)
    return float(out[0]) if np.ndim(times) == 0 else out


def km_median(time, event) -> float:
    """Kaplan–Meier median: the first time with S(t) <= 0.5; NaN when the curve never falls that far.

    Parameters
    ----------
    time : array-like of float
        Follow-up times.
    event : array-like of bool
        True for an event.

    Returns
    -------
    float
    """
    time, event = _arrays(time, event)
    if len(time) == 0:
        return float("nan")
    curve_times, curve = kaplan_meier_estimator(event, time)
    below = np.flatnonzero(curve <= 0.5)
    return float(curve_times[below[0]]) if len(below) else float("nan")


def censoring_curve(time, event) -> tuple[np.ndarray, np.ndarray]:
    """The censoring distribution G(t): Kaplan–Meier with censoring as the event ("reverse" KM, as used for
    inverse-probability-of-censoring weights; ``kaplan_meier_estimator(~event, time)``).

    Not ``kaplan_meier_estimator(..., reverse=True)`` / ``CensoringDistributionEstimator``: they order an
    event and a censoring at the same time differently (G differs at tied times by up to ~0.01 on
    whole-month data), and crlm's weights have always used this form.

    Parameters
    ----------
    time : array-like of float
        Follow-up times.
    event : array-like of bool
        True for an event (so False, a censored time, is the censoring "event").

    Returns
    -------
    times, G : ndarray
        The distinct observed times and G at each.
    """
    time, event = _arrays(time, event)
    return kaplan_meier_estimator(~event, time)


def median_follow_up(time, event) -> float:
    """Median follow-up by reverse Kaplan–Meier (the median of the censoring distribution).

    Parameters
    ----------
    time : array-like of float
        Follow-up times.
    event : array-like of bool
        True for an event.

    Returns
    -------
    float
    """
    return km_median(time, ~np.asarray(event, dtype=bool))
