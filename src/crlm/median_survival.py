"""The median survival time read off a model's curve on its time grid (linear interpolation between
grid points; ``None`` when the curve stays above 0.5)."""

from __future__ import annotations

__all__ = ["median_time", "median_times"]

import numpy as np


def median_time(times: np.ndarray, surv: np.ndarray) -> float | None:
    """First time the curve reaches 0.5 (linear interpolation between grid points); None if not reached."""
    below = np.flatnonzero(surv <= 0.5)
    if len(below) == 0:
        return None
    j = int(below[0])
    if j == 0:
        return float(times[0])
    t0, t1, s0, s1 = times[j - 1], times[j], surv[j - 1], surv[j]
    return float(t0 + (s0 - 0.5) / (s0 - s1) * (t1 - t0)) if s0 != s1 else float(t1)


def median_times(times: np.ndarray, surv: np.ndarray) -> list[float | None]:
    """``median_time`` of every curve (rows of ``surv``), vectorised over the rows."""
    below = surv <= 0.5
    reached = np.asarray(below.any(axis=1), dtype=bool)  # an array (numpy's stubs: bool | Any)
    j = np.where(reached, below.argmax(axis=1), 1)
    rows = np.arange(len(surv))
    t0, t1 = times[np.maximum(j - 1, 0)], times[j]
    s0, s1 = surv[rows, np.maximum(j - 1, 0)], surv[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        interpolated = np.where(s0 != s1, t0 + (s0 - 0.5) / (s0 - s1) * (t1 - t0), t1)
    value = np.where(j == 0, times[0], interpolated)
    return [float(v) if r else None for v, r in zip(value.tolist(), reached.tolist(), strict=True)]
