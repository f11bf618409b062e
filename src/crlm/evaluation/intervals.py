"""Bootstrap helpers: resample patients, evaluate a metric per resample, form percentile intervals.

Passing the same indices to two models' metric functions gives paired replicates, so the interval of their
difference accounts for both being evaluated on the same patients.
"""

from __future__ import annotations

__all__ = ["bootstrap_indices", "bootstrap_metric", "centred_interval", "holm", "percentile_interval"]

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from statsmodels.stats.multitest import multipletests


def bootstrap_indices(n: int, n_boot: int, seed: int, strata=None) -> np.ndarray:
    """(n_boot, n) patient indices drawn with replacement, deterministic for a seed.

    With ``strata`` (labels per patient, or a structured y whose ``event`` field is used) each stratum is
    resampled to its own size, so every replicate keeps the number of events and censorings.
    """
    if n < 1 or n_boot < 1:
        raise ValueError(f"need n >= 1 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n))
    strata = np.asarray(strata)
    if strata.dtype.names and "event" in strata.dtype.names:
        strata = strata["event"]
    if len(strata) != n:
        raise ValueError(f"strata has {len(strata)} labels for n = {n} patients")
    out = np.empty((n_boot, n), dtype=np.intp)
    start = 0
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        out[:, start:start + len(members)] = members[rng.integers(0, len(members), (n_boot, len(members)))]
        start += len(members)
    return out


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring NaN (failed replicates); (nan, nan) if none."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[~np.isnan(v)]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(v) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(v, [alpha, 1 - alpha])
    return float(low), float(high)


def centred_interval(values, estimate: float, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates shifted so that their median is ``estimate``.

    Skewed metrics (ICI, O/E, IBS near 0) have replicates that sit above the estimate (a resample with
    duplicated patients is noisier), so the plain percentile interval can exclude its own estimate. Recentring
    keeps the replicates' spread and describes it around the reported estimate, which then always lies inside:
    ``[estimate - (median - q_low), estimate + (q_high - median)]``. (nan, nan) if no replicate is finite.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[~np.isnan(v)]
    if len(v) == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    low, high = percentile_interval(v - np.median(v) + estimate, level)
    return min(low, float(estimate)), max(high, float(estimate))  # guards the quantile's rounding only


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (statsmodels ``multipletests``); NaN entries stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def _run(fn: Callable, idx: np.ndarray):
    # A resample can make a metric undefined (e.g. no event before a horizon): record it, don't abort the run.
    try:
        return fn(idx), None
    except ValueError as err:
        return None, str(err)


def bootstrap_metric(fn: Callable[[np.ndarray], float | Mapping[str, float]], n: int, n_boot: int = 200,
                     seed: int = 0, strata=None, n_jobs: int = 1) -> np.ndarray | pd.DataFrame:
    """Evaluate ``fn(indices)`` on ``n_boot`` resamples of n patients.

    Returns an array of replicates when ``fn`` returns a float, or a DataFrame (one row per replicate, one
    column per metric) when it returns a dict. Replicates where ``fn`` raises ValueError become NaN (with one
    warning). ``fn`` must be picklable for ``n_jobs`` != 1.
    """
    indices = bootstrap_indices(n, n_boot, seed, strata)
    results = Parallel(n_jobs=n_jobs)(delayed(_run)(fn, idx) for idx in indices)
    errors = [err for _, err in results if err is not None]
    if errors:
        warnings.warn(f"{len(errors)} of {n_boot} bootstrap replicates failed and are NaN; first: {errors[0]}",
                      RuntimeWarning, stacklevel=2)
    values = [value for value, _ in results]
    if any(isinstance(v, Mapping) for v in values):
        return pd.DataFrame([dict(v) if v is not None else {} for v in values], dtype=float)
    return np.array([np.nan if v is None else float(v) for v in values])
