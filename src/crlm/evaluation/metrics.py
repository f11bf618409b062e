"""Discrimination and overall accuracy of survival predictions on held-out data (software.md §1.1, §5).

Checked wrappers around scikit-survival's metrics. sksurv fails deep inside its IPCW code when a horizon or a
test time lies beyond the training follow-up (P14), so horizons are screened first (``usable_horizons``) and
test outcomes after the last horizon are censored there (``_truncate``), which leaves every metric at or
before that horizon unchanged: such patients stay controls/at risk, and their IPC weights are never used.
"""

from __future__ import annotations

__all__ = [
    "HorizonWarning", "SurvivalFn", "brier_scores", "default_tau", "evaluate_predictions",
    "evaluation_grid", "harrell_c", "integrated_brier", "integrated_ipa", "ipa", "km_reference",
    "survival_from_matrix", "time_dependent_auc", "uno_c", "usable_horizons",
]

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

from crlm.evaluation import calibration as cal
from crlm.evaluation.calibration import check_surv, check_y
from crlm.kaplan_meier import km_at
from crlm.schema import DEFAULT_HORIZONS_MONTHS

SurvivalFn = Callable[[np.ndarray], np.ndarray]


class HorizonWarning(UserWarning):
    """A requested horizon lies beyond what the data can evaluate and was dropped."""


# --------------------------------------------------------------------------- input checks and horizons


def _check_risk(risk, n: int) -> np.ndarray:
    r = np.asarray(risk, dtype=float)
    if r.ndim != 1 or len(r) != n:
        raise ValueError(f"risk has shape {r.shape}, expected ({n},) to match y_test")
    if not np.isfinite(r).all():
        raise ValueError("risk contains NaN or infinite values")
    return r


def _check_times(times, name: str = "horizons") -> np.ndarray:
    t = np.atleast_1d(np.asarray(times, dtype=float))
    if t.ndim != 1 or len(t) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of times")
    if not np.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{name} must be finite and positive, got {t.tolist()}")
    if (np.diff(t) <= 0).any():  # sksurv sorts times silently, which would misalign prediction columns
        raise ValueError(f"{name} must be strictly increasing, got {t.tolist()}")
    return t


def _usable_mask(y_train, y_test, horizons: np.ndarray) -> np.ndarray:
    """Which horizons the data can evaluate; warn about each one dropped, fail if none is left."""
    max_test, max_train = float(y_test["time"].max()), float(y_train["time"].max())
    event_times = y_test["time"][y_test["event"]]
    keep = np.ones(len(horizons), dtype=bool)
    for i, h in enumerate(horizons):
        reason = None
        if h >= max_test:
            reason = f"not before the last observed test time ({max_test:g})"
        elif h >= max_train:
            reason = f"not before the last training time ({max_train:g}), so censoring weights are unknown"
        elif not (event_times <= h).any():
            reason = "no test event at or before it"
        if reason:
            keep[i] = False
            warnings.warn(f"horizon {h:g} dropped: {reason}", HorizonWarning, stacklevel=3)
    if not keep.any():
        raise ValueError(f"none of the horizons {horizons.tolist()} can be evaluated: test follow-up ends at "
                         f"{max_test:g}, training follow-up at {max_train:g}, first test event at "
                         f"{event_times.min() if len(event_times) else float('nan'):g}")
    return keep


def usable_horizons(y_train, y_test, horizons=DEFAULT_HORIZONS_MONTHS) -> list[float]:
    """Horizons strictly inside test and training follow-up with at least one test event at or before them.

    Others are dropped with a ``HorizonWarning``; a ValueError only if none is left.
    """
    y_train, y_test = check_y(y_train, "y_train"), check_y(y_test, "y_test", need_events=True)
    horizons = _check_times(horizons)
    return horizons[_usable_mask(y_train, y_test, horizons)].tolist()


def _truncate(y_train, y_test, t_last: float) -> np.ndarray:
    """Censor test outcomes after t_last (< max training time) at min(time, max training time)."""
    out = y_test.copy()
    out["event"] = out["event"] & (out["time"] <= t_last)
    out["time"] = np.minimum(out["time"], y_train["time"].max())
    return out


def _tag(h: float) -> str:
    return f"{h:g}"


# --------------------------------------------------------------------------- discrimination


def harrell_c(y, risk) -> float:
    """Harrell's C (ties in risk count 1/2). Depends on the censoring pattern; report Uno's C alongside."""
    y = check_y(y, "y", need_events=True)
    risk = _check_risk(risk, len(y))
    try:
        return float(concordance_index_censored(y["event"], y["time"], risk)[0])
    except ValueError as err:  # e.g. the only events are at the last time: no comparable pair
        raise ValueError(f"Harrell's C undefined: {err}") from err


def default_tau(y_train, y_test, horizons=DEFAULT_HORIZONS_MONTHS) -> float:
    """Truncation time for Uno's C: the largest usable horizon.

    Chosen so C covers the same window [0, tau] as AUC(t) and the Brier scores, tau is clinically readable,
    and it stays fixed across bootstrap resamples (a follow-up percentile would change the estimand per resample).
    """
    return usable_horizons(y_train, y_test, horizons)[-1]


def uno_c(y_train, y_test, risk, tau: float) -> float:
    """Uno's IPCW C truncated at tau (censoring distribution from y_train); report tau with it."""
    y_train, y_test = check_y(y_train, "y_train"), check_y(y_test, "y_test", need_events=True)
    risk = _check_risk(risk, len(y_test))
    tau = float(tau)
    if not tau > 0 or tau > y_train["time"].max():
        raise ValueError(f"tau = {tau:g} must be positive and at most the last training time "
                         f"({y_train['time'].max():g}) so censoring weights exist")
    if not (y_test["event"] & (y_test["time"] < tau)).any():
        raise ValueError(f"no test event before tau = {tau:g}: Uno's C undefined")
    try:
        return float(concordance_index_ipcw(y_train, y_test, risk, tau=tau)[0])
    except ValueError as err:
        raise ValueError(f"Uno's C undefined: {err}") from err


def time_dependent_auc(y_train, y_test, risk_or_cumhaz, horizons=DEFAULT_HORIZONS_MONTHS) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC(t) per horizon (NaN for dropped horizons) and sksurv's KM-weighted mean.

    ``risk_or_cumhaz`` is a risk (n,) or a time-dependent risk (n, len(horizons)), e.g. cumulative hazard or
    1 - S(t); never survival probabilities.
    """
    y_train, y_test = check_y(y_train, "y_train"), check_y(y_test, "y_test", need_events=True)
    horizons = _check_times(horizons)
    est = np.asarray(risk_or_cumhaz, dtype=float)
    if est.ndim == 2:
        if est.shape != (len(y_test), len(horizons)) or not np.isfinite(est).all():
            raise ValueError(f"risk_or_cumhaz has shape {est.shape} (or non-finite values), "
                             f"expected finite ({len(y_test)},) or ({len(y_test)}, {len(horizons)})")
    else:
        est = _check_risk(est, len(y_test))
    keep = _usable_mask(y_train, y_test, horizons)
    if est.ndim == 2:
        est = est[:, keep]
    auc, mean_auc = cumulative_dynamic_auc(y_train, _truncate(y_train, y_test, horizons[keep][-1]), est,
                                           horizons[keep])
    out = np.full(len(horizons), np.nan)
    out[keep] = auc
    return out, float(mean_auc)


# --------------------------------------------------------------------------- overall accuracy


def km_reference(y_train, times) -> np.ndarray:
    """Null model: the training Kaplan–Meier survival at ``times`` (the same for every patient)."""
    y_train = check_y(y_train, "y_train")
    return km_at(y_train["time"], y_train["event"], np.atleast_1d(np.asarray(times, dtype=float)))


def brier_scores(y_train, y_test, surv_at_horizons, horizons=DEFAULT_HORIZONS_MONTHS) -> np.ndarray:
    """IPCW Brier score per horizon (Graf 1999); NaN for horizons dropped as beyond follow-up."""
    y_train, y_test = check_y(y_train, "y_train"), check_y(y_test, "y_test", need_events=True)
    horizons = _check_times(horizons)
    s = check_surv(surv_at_horizons, len(y_test), "surv_at_horizons", len(horizons))
    keep = _usable_mask(y_train, y_test, horizons)
    _, bs = brier_score(y_train, _truncate(y_train, y_test, horizons[keep][-1]), s[:, keep], horizons[keep])
    out = np.full(len(horizons), np.nan)
    out[keep] = bs
    return out


def evaluation_grid(y_train, y_test, n: int = 50, t_max: float | None = None) -> np.ndarray:
    """Time grid for the IBS: from the 10th percentile of observed test times to ``t_max`` (default the 80th
    percentile), kept strictly below the last test and training times as sksurv requires."""
    y_train, y_test = check_y(y_train, "y_train"), check_y(y_test, "y_test")
    times = y_test["time"]
    cap = min(times.max(), y_train["time"].max())
    hi = min(float(np.percentile(times, 80)) if t_max is None else float(t_max), np.nextafter(cap, 0))
    lo = float(np.percentile(times, 10))
    if lo >= hi:
        lo = float(times.min())
    if lo >= hi or n < 2:
        raise ValueError(f"no evaluation grid: test times span [{times.min():g}, {times.max():g}], "
                         f"upper end {hi:g}, n = {n}")
    return np.linspace(lo, hi, n)


def _check_grid(y_train, y_test, grid) -> np.ndarray:
    grid = _check_times(grid, "grid")
    cap = min(y_test["time"].max(), y_train["time"].max())
    if len(grid) < 2 or grid[0] < y_test["time"].min() or grid[-1] >= cap:
        raise ValueError(f"grid must have >= 2 times within [{y_test['time'].min():g}, {cap:g}[ "
                         "(test and training follow-up); build it with evaluation_grid")
    return grid


def integrated_brier(y_train, y_test, surv_on_grid, grid) -> float:
    """Integrated Brier score over ``grid`` (trapezoid / (grid[-1] - grid[0]), as sksurv)."""
    y_train, y_test = check_y(y_train, "y_train"), check_y(y_test, "y_test", need_events=True)
    grid = _check_grid(y_train, y_test, grid)
    s = check_surv(surv_on_grid, len(y_test), "surv_on_grid", len(grid))
    return float(integrated_brier_score(y_train, _truncate(y_train, y_test, grid[-1]), s, grid))


def ipa(y_train, y_test, surv_at_horizons, horizons=DEFAULT_HORIZONS_MONTHS) -> np.ndarray:
    """Index of prediction accuracy 1 - BS_model/BS_KM per horizon (Kattan & Gerds 2018); >0 beats KM."""
    horizons = _check_times(horizons)
    bs = brier_scores(y_train, y_test, surv_at_horizons, horizons)
    km = np.broadcast_to(km_reference(y_train, horizons), (len(y_test), len(horizons)))
    with warnings.catch_warnings():  # the same horizons were already reported once
        warnings.simplefilter("ignore", HorizonWarning)
        bs_km = brier_scores(y_train, y_test, km, horizons)
    return 1.0 - bs / bs_km


def integrated_ipa(y_train, y_test, surv_on_grid, grid) -> float:
    """1 - IBS_model/IBS_KM over the same grid."""
    grid = _check_times(grid, "grid")
    km = np.broadcast_to(km_reference(y_train, grid), (len(y_test), len(grid)))
    return 1.0 - integrated_brier(y_train, y_test, surv_on_grid, grid) / integrated_brier(y_train, y_test, km, grid)


# --------------------------------------------------------------------------- everything at once


def survival_from_matrix(surv: np.ndarray, times) -> SurvivalFn:
    """Wrap a precomputed (n, len(times)) survival matrix as a right-continuous step function of time."""
    times = _check_times(times, "times")
    surv = check_surv(surv, np.asarray(surv).shape[0], "surv", len(times))

    def survival(at) -> np.ndarray:
        idx = np.searchsorted(times, np.atleast_1d(np.asarray(at, dtype=float)), side="right") - 1
        return np.where(idx >= 0, surv[:, np.clip(idx, 0, None)], 1.0)

    return survival


def _call(survival: SurvivalFn, times: np.ndarray, n: int) -> np.ndarray:
    return check_surv(survival(times), n, "survival(times)", len(times))


def evaluate_predictions(y_train, y_test, risk, survival: SurvivalFn, horizons: Sequence[float] = DEFAULT_HORIZONS_MONTHS,
                         *, tau: float | None = None, grid_size: int = 50, knots: int = 3, dcal_bins: int = 10,
                         auc_from: str = "survival") -> dict[str, float]:
    """All discrimination, accuracy and calibration metrics as a flat dict of floats (stable MLflow names).

    ``risk`` (n,) is higher = worse; ``survival(times)`` returns (n, len(times)) survival probabilities and
    must accept any time up to the last test time (D-calibration needs S_i(T_i)). Every requested horizon h
    gets ``auc_h, brier_h, ipa_h, oe_h, slope_h, ici_h, e50_h, e90_h, emax_h``; horizons beyond follow-up are
    NaN (with a HorizonWarning) so the key set never changes. ``tau`` defaults to the largest usable horizon;
    the IBS grid runs from the 10th percentile of test times to that horizon. AUC(t) uses 1 - S(t) (handles
    non-proportional hazards) unless ``auc_from="risk"``.
    """
    y_train, y_test = check_y(y_train, "y_train"), check_y(y_test, "y_test", need_events=True)
    n = len(y_test)
    risk = _check_risk(risk, n)
    times = _check_times(horizons)
    if auc_from not in ("survival", "risk"):
        raise ValueError(f"auc_from must be 'survival' or 'risk', got {auc_from!r}")
    keep = _usable_mask(y_train, y_test, times)
    usable = times[keep]
    tau = float(usable[-1]) if tau is None else float(tau)
    s_h = _call(survival, usable, n)
    grid = evaluation_grid(y_train, y_test, grid_size, t_max=usable[-1])
    s_grid = _call(survival, grid, n)

    auc, mean_auc = time_dependent_auc(y_train, y_test, 1.0 - s_h if auc_from == "survival" else risk, usable)
    bs = brier_scores(y_train, y_test, s_h, usable)
    ipa_h = ipa(y_train, y_test, s_h, usable)
    ibs = integrated_brier(y_train, y_test, s_grid, grid)
    calib = {}
    for j, h in enumerate(usable):
        curve = cal.ici(y_test, s_h[:, j], h, knots=knots)
        calib[h] = {"oe": cal.calibration_in_the_large(y_test, s_h[:, j], h),
                    "slope": cal.calibration_slope(y_test, s_h[:, j], h),
                    **{k: curve[k] for k in ("ici", "e50", "e90", "emax")}}
    dcal_chi2, dcal_p = cal.d_calibration(y_test, cal.survival_at_own_time(survival, y_test["time"]), dcal_bins)

    def per_horizon(name: str, values) -> dict[str, float]:
        full = np.full(len(times), np.nan)
        full[keep] = values
        return {f"{name}_{_tag(h)}": float(v) for h, v in zip(times, full, strict=True)}

    out = {"n": float(n), "n_events": float(y_test["event"].sum()), "harrell_c": harrell_c(y_test, risk),
           "uno_c": uno_c(y_train, y_test, risk, tau), "uno_tau": tau}
    out |= per_horizon("auc", auc) | {"mean_auc": mean_auc}
    out |= per_horizon("brier", bs) | {"ibs": ibs}
    out |= per_horizon("ipa", ipa_h) | {"ipa_ibs": integrated_ipa(y_train, y_test, s_grid, grid)}
    for key in ("oe", "slope", "ici", "e50", "e90", "emax"):
        out |= per_horizon(key, [calib[h][key] for h in usable])
    out |= {"dcal_chi2": dcal_chi2, "dcal_p": dcal_p}
    return out
