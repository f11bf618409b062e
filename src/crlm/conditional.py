"""Conditional survival: the prognosis of a patient who is already event-free s months after resection.

S(t | T > s) = S(t) / S(s) for t >= s, applied to the calibrated curve of the refit (the estimate) and of every
bootstrap replicate (the interval: formed by the same method as the unconditional answer,
so estimate and interval describe the same models). S(s) and the horizons s + h are read off the curves by
linear interpolation between grid points, as the median is. The event is the endpoint's: alive (OS), alive and
recurrence-free (RFS).
"""

from __future__ import annotations

__all__ = ["CONDITIONS", "MIN_SURVIVAL_AT_S", "conditional_answers"]

import numpy as np

MIN_SURVIVAL_AT_S = 0.02  # below this, the ratio rests on the models' far tail: no conditional answer
CONDITIONS = {"os": "alive", "rfs": "alive and recurrence-free", "liver_rfs": "alive and free of liver recurrence"}


def _at(times: np.ndarray, curves: np.ndarray, t: float) -> np.ndarray:
    """Curves (..., T) on ``times`` read at ``t`` (linear interpolation; times[0] <= t <= times[-1])."""
    j = min(int(np.searchsorted(times, t, side="right")) - 1, len(times) - 2)
    w = (t - times[j]) / (times[j + 1] - times[j])
    return curves[..., j] * (1.0 - w) + curves[..., j + 1] * w


def _percentile_band(point: np.ndarray, refits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.quantile(refits, 0.025, axis=0), np.quantile(refits, 0.975, axis=0)


def _interval(point: np.ndarray, refits: np.ndarray, band) -> tuple[np.ndarray, np.ndarray]:
    """The band of one patient's conditional curve (T,) from its replicates (B, T), by the Predictor's method."""
    lower, upper = band(np.atleast_1d(point)[None, :], refits.reshape(len(refits), 1, -1))
    return lower[0], upper[0]


def conditional_answers(times: np.ndarray, curves: np.ndarray, horizons, event_free_months: float,
                        endpoint: str, band=None) -> list[dict]:
    """One conditional answer per patient.

    Parameters
    ----------
    times : array of float
        The curve grid (months since resection, starting at 0).
    curves : array of float, shape (1 + B, n, len(times))
        Calibrated survival of the refit (index 0) and of its B bootstrap refits, S = 1 at t = 0.
    horizons : sequence of float
        Months from now (after ``event_free_months``) at which to report survival.
    event_free_months : float
        s: the patient is known to be event-free (for OS: alive) s months after resection.
    endpoint : str
        The endpoint's name (``os``, ``rfs``, ...), for the wording of the condition.
    band : callable, optional
        ``band(point (n, T), replicates (B, n, T)) -> (lower, upper)``: the Predictor's interval method, so
        the conditional interval is formed as the unconditional one (default: 2.5-97.5 percentiles).

    Returns
    -------
    list of dict
        Per patient: the condition, ``available`` (and a ``reason`` when not), the survival since resection at
        s of the unconditional curve, the conditional curve from s on (months since resection) with its
        interval, and the horizons s + h with intervals (beyond the curve's end: ``available`` false).
    """
    band = band or _percentile_band
    s = float(event_free_months)
    if not np.isfinite(s) or s < 0:
        raise ValueError(f"event_free_at_months must be a number >= 0, got {event_free_months!r}")
    if s >= times[-1]:
        raise ValueError(f"event_free_at_months {s:g} is at or beyond the end of the model's curves "
                         f"({times[-1]:g} months, set by the training follow-up)")
    condition = f"{CONDITIONS.get(endpoint, 'event-free')} {s:g} months after resection"
    at_s = _at(times, curves, s)  # (1 + B, n)
    after = times > s
    grid = np.concatenate([[s], times[after]])
    answers = []
    for i in range(curves.shape[1]):
        answer = {"endpoint": endpoint, "event_free_at_months": s, "condition": condition,
                  "survival_at_condition": float(at_s[0, i])}
        if at_s[0, i] < MIN_SURVIVAL_AT_S:
            answers.append(answer | {"available": False, "reason": (
                f"the model gives {at_s[0, i]:.1%} survival at {s:g} months: too far in the tail to condition on")})
            continue
        ratio = curves[:, i, after] / np.maximum(at_s[:, i, None], 1e-12)
        cond = np.clip(np.concatenate([np.ones((len(curves), 1)), ratio], axis=1), 0.0, 1.0)
        point = np.minimum.accumulate(cond[0])
        lower, upper = _interval(point, cond[1:], band)
        lower, upper = np.minimum.accumulate(lower), np.minimum.accumulate(upper)
        rows = []
        for h in horizons:
            t = s + float(h)
            if t > times[-1]:
                rows.append({"months_from_now": float(h), "months_since_resection": t, "available": False,
                             "reason": f"beyond the end of the model's curves ({times[-1]:g} months)"})
                continue
            at_t = _at(grid, cond, t)
            p = float(_at(grid, point, t))
            lo, hi = _interval(np.array([p]), at_t[1:, None], band)
            rows.append({"months_from_now": float(h), "months_since_resection": t, "available": True,
                         "survival": p, "lower": float(lo[0]), "upper": float(hi[0])})
        answers.append(answer | {
            "available": True, "reason": None, "horizons": rows,
            "curve": {"months": grid.tolist(), "survival": point.round(5).tolist(),
                      "lower": lower.round(5).tolist(), "upper": upper.round(5).tolist()},
        })
    return answers
