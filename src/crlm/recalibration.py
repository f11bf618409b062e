"""Recalibration of predicted survival, fitted on out-of-fold predictions only.

At each time t of a grid, the observed outcome (administratively censored at t) is regressed on
z = cloglog(1 - S_hat(t)) with a one-covariate Cox model (the calibration-slope model of Austin et al. 2020 /
McLernon et al. 2023). The recalibrated survival is that model's prediction,
    S_cal(t | x) = S0_t(t) ** exp(b_t * (z - z_mean_t)),
i.e. a new baseline (intercept) and slope per time: the "update baseline and slope" recalibration.
Curves are made non-increasing in t afterwards. Times with too few events before them are left unchanged.

The map is fitted on OOF predictions, never on a refit's own training predictions; the improvement is
measured by repeated 2-fold cross-fitting (fit the map on half the patients, measure ICI before and after on
the other half: the same patients for both).
"""

from __future__ import annotations

__all__ = [
    "apply_each", "cross_fitted_ici", "MIN_EVENTS", "MIN_EVENTS_BASELINE", "Recalibrator", "StackedMaps",
    "SurvivalMap",
]

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from crlm.evaluation.calibration import fit_cox, ici

MIN_EVENTS = 20  # below this many events before t, a per-time slope is too noisy: leave S unchanged
MIN_EVENTS_BASELINE = 5  # a baseline-only update needs fewer events (one parameter per time)


def _cloglog_event(surv: np.ndarray) -> np.ndarray:
    """log(-log S) of survival, the event probability clipped to [1e-6, 1 - 1e-6] (the maps' scale): one new
    array, every step in place in it (``apply_each`` evaluates (K, n, T) at once)."""
    work = np.subtract(1.0, np.asarray(surv, dtype=float))
    np.clip(work, 1e-6, 1 - 1e-6, out=work)
    np.negative(work, out=work)
    np.log1p(work, out=work)
    np.negative(work, out=work)
    return np.log(work, out=work)


class SurvivalMap(Protocol):
    """What a prediction uses of a recalibration: a per-time map of survival curves at ``times`` (a
    ``Recalibrator``, or a centre's map chained after the source model's, ``crlm.centre.ChainedRecalibrator``)."""

    times: np.ndarray

    @property
    def active(self) -> bool: ...

    def apply(self, surv: np.ndarray) -> np.ndarray: ...


@dataclass
class Recalibrator:
    times: np.ndarray  # grid of times (months) with a fitted map
    slope: np.ndarray  # b_t
    z_mean: np.ndarray  # centring of z at each t
    baseline_survival: np.ndarray  # S0_t(t): survival at t for z = z_mean
    fitted: np.ndarray  # bool: False where the identity is used

    @classmethod
    def identity(cls, times) -> Recalibrator:
        n = len(times)
        return cls(np.asarray(times, dtype=float), np.ones(n), np.zeros(n), np.ones(n), np.zeros(n, dtype=bool))

    @property
    def active(self) -> bool:
        return bool(self.fitted.any())

    @classmethod
    def fit(cls, y, surv_oof: np.ndarray, times, method: str = "baseline_slope") -> Recalibrator:
        """``surv_oof``: (n, len(times)) out-of-fold survival predictions at ``times``.

        ``method``: ``"baseline_slope"`` (a new baseline and slope per time, needs ``MIN_EVENTS`` events before
        t) or ``"baseline"`` (the slope stays 1: only the baseline hazard is refitted, a Breslow estimate with
        the predictions as offset; needs ``MIN_EVENTS_BASELINE``). Both keep each time's ranking of patients."""
        if method not in ("baseline_slope", "baseline"):
            raise ValueError(f"method must be 'baseline_slope' or 'baseline', got {method!r}")
        times = np.asarray(times, dtype=float)
        slope, z_mean, s0, fitted = (np.ones(len(times)), np.zeros(len(times)), np.ones(len(times)),
                                     np.zeros(len(times), dtype=bool))
        for j, t in enumerate(times):
            event_by_t = y["event"] & (y["time"] <= t)
            if method == "baseline":
                if event_by_t.sum() >= MIN_EVENTS_BASELINE:
                    s0[j], fitted[j] = _offset_baseline_survival(y, surv_oof[:, j], t), True
                continue
            if event_by_t.sum() < MIN_EVENTS:
                continue
            z = _cloglog_event(surv_oof[:, j])
            if np.std(z) < 1e-9:
                continue
            cox = fit_cox(z[:, None], np.minimum(y["time"], t), event_by_t)
            slope[j], z_mean[j] = cox.coef[0], cox.center[0]
            s0[j] = float(np.exp(-cox.cumhaz_baseline(t)[0]))
            fitted[j] = True
        return cls(times, slope, z_mean, s0, fitted)

    def apply(self, surv: np.ndarray) -> np.ndarray:
        """Recalibrate survival predictions at ``self.times`` (last axis; any leading axes, e.g. (models, n, T));
        curves stay monotone."""
        surv = np.asarray(surv, dtype=float)
        if self.active:
            z = _cloglog_event(surv)
            recal = self.baseline_survival ** np.exp(self.slope * (z - self.z_mean))
            surv = np.where(self.fitted, recal, surv)
        return np.minimum.accumulate(np.clip(surv, 0.0, 1.0), axis=-1)


def _offset_baseline_survival(y, surv_t: np.ndarray, t: float) -> float:
    """S0 such that S0 ** (-log S_i(t)) fits the outcomes censored at t: the Breslow estimate of the cumulative
    baseline hazard at t with log(-log S_i(t)) as offset (slope fixed at 1), i.e. one factor on every
    patient's predicted cumulative hazard."""
    hazard = -np.log(np.clip(surv_t, 1e-9, 1.0))
    time, event = np.minimum(y["time"], t), y["event"] & (y["time"] <= t)
    order = np.argsort(time, kind="stable")
    sorted_time = time[order]
    tail = np.cumsum(hazard[order][::-1])[::-1]  # sum of exp(offset) from each position on
    at_risk = tail[np.searchsorted(sorted_time, sorted_time, side="left")]  # ties share the risk set
    factor = float(np.sum(event[order] / np.maximum(at_risk, 1e-12)))
    return float(np.exp(-factor))


def cross_fitted_ici(y, surv_oof: np.ndarray, times, horizon: float, seed: int = 0,
                     repeats: int = 5) -> dict[str, float]:
    """ICI at ``horizon`` before and after recalibration, both measured on the same held-out patients.

    Repeated 2-fold cross-fitting: the map is fitted on one half and both the raw OOF predictions ("before")
    and the recalibrated ones ("after") are scored on the other half; each half in turn, ``repeats`` random
    splits (stratified by event), averaged. Before and after therefore describe identical patients and the
    same sample size, so neither side gets the smaller-sample noise of ICI the other does not.
    """
    times = np.asarray(times, dtype=float)
    j = int(np.argmin(np.abs(times - horizon)))
    rng = np.random.default_rng(seed)
    before, after = [], []
    for _ in range(repeats):
        half = np.zeros(len(y), dtype=bool)
        for label in (True, False):  # stratified: each half keeps about half the events
            members = rng.permutation(np.flatnonzero(y["event"] == label))
            half[members[: len(members) // 2]] = True
        for part in (half, ~half):
            recal = Recalibrator.fit(y[~part], surv_oof[~part], times)
            try:
                pair = (ici(y[part], surv_oof[part][:, j], horizon)["ici"],
                        ici(y[part], recal.apply(surv_oof[part])[:, j], horizon)["ici"])
            except ValueError:  # a half without an event by the horizon cannot judge calibration there
                continue
            before.append(pair[0])
            after.append(pair[1])
    if not before:
        return {"ici_before": float("nan"), "ici_after": float("nan")}
    return {"ici_before": float(np.mean(before)), "ici_after": float(np.mean(after))}


def _cloglog_of_event_probability(p: float) -> float:
    return float(np.log(-np.log1p(-p)))


# _cloglog_event's range: the event probability clipped to [1e-6, 1 - 1e-6], on the cloglog scale
CLOGLOG_RANGE = (_cloglog_of_event_probability(1e-6), _cloglog_of_event_probability(1 - 1e-6))


def apply_each(recalibrators: Sequence[SurvivalMap], curves: np.ndarray | None,
               cloglog: np.ndarray | None = None) -> np.ndarray:
    """Each map applied to its own models' curves in one vectorised pass: ``curves[k]`` by ``recalibrators[k]``.

    Parameters
    ----------
    recalibrators : sequence of SurvivalMap
        K maps on the same time grid (e.g. the bootstrap replicates'); maps other than ``Recalibrator`` (a
        centre's chained maps) are applied one by one.
    curves : array (K, n, T), or None with ``cloglog``
        Survival at the maps' times.
    cloglog : array (K, n, T), optional
        log(-log S) of the same curves, where the models give it directly (proportional hazards:
        ``SurvivalKernel.log_cumulative_hazard``): the maps read it without the survival being computed and
        logged back (S = exp(-exp(cloglog)) where a map is the identity).

    Returns
    -------
    array (K, n, T)
        Equal to ``np.stack([r.apply(c) for r, c in zip(recalibrators, curves)])`` (with ``cloglog``, to
        rounding).
    """
    maps = [r for r in recalibrators if isinstance(r, Recalibrator)]
    fitted = np.stack([r.fitted for r in maps]) if len(maps) == len(recalibrators) else None
    if cloglog is not None and fitted is not None and fitted.any():
        z = cloglog
        return _recalibrate(maps, fitted, np.clip(z, *CLOGLOG_RANGE), lambda k, t: np.exp(-np.exp(z[k, :, t])))
    if curves is None:
        if cloglog is None:
            raise ValueError("apply_each needs the curves or their cloglog")
        curves = np.exp(-np.exp(cloglog))  # a map that reads the curves themselves, or only identities
    surv = np.asarray(curves, dtype=float)
    if fitted is None:  # a map that reads the curves itself (a centre's chained maps)
        return np.stack([r.apply(c) for r, c in zip(recalibrators, surv, strict=True)])
    if not fitted.any():
        return _monotone(np.clip(surv, 0.0, 1.0))
    return _recalibrate(maps, fitted, _cloglog_event(surv), lambda k, t: surv[k, :, t])


@dataclass
class StackedMaps:
    """K ``Recalibrator`` maps' parameters stacked, (K, 1, T) each, to apply them together on the cloglog scale.

    A map is affine there: log(-log S_cal(t)) = log(-log S0_t) + b_t (z - z_mean_t), with z the curve's
    log(-log S) clipped as ``apply_each`` clips it (the identity where the map is not fitted), and making S
    non-increasing in t makes its log(-log S) non-decreasing. The confidence band is formed on this scale
    (``crlm.bootstrap_curves``): proportional-hazards replicates, whose models give log(-log S) directly
    (``SurvivalKernel.log_cumulative_hazard``), reach it without a survival curve in between.
    """

    slope: np.ndarray
    intercept: np.ndarray  # log(-log S0_t) - b_t z_mean_t
    unfitted: tuple[np.ndarray, np.ndarray]  # the (map, time) pairs where a map is the identity
    any_fitted: bool

    @classmethod
    def of(cls, recalibrators: Sequence[SurvivalMap]) -> StackedMaps | None:
        """The stacked maps, or None when one is not a ``Recalibrator``."""
        maps = [r for r in recalibrators if isinstance(r, Recalibrator)]
        if len(maps) != len(recalibrators):
            return None
        fitted = np.stack([r.fitted for r in maps])
        slope, z_mean, s0 = (np.stack([getattr(r, name) for r in maps])[:, None, :]
                             for name in ("slope", "z_mean", "baseline_survival"))
        with np.errstate(divide="ignore"):  # S0 = 1 (no event by t): -inf, S0 = 0: +inf, as S_cal's own cloglog
            intercept = np.log(-np.log(s0)) - slope * z_mean
        k, t = np.nonzero(~fitted)
        return cls(slope, intercept, (k, t), bool(fitted.any()))

    def cloglog(self, cloglog: np.ndarray) -> np.ndarray:
        """(K, n, T) log(-log S) of the recalibrated curves, from the (K, n, T) log(-log S) of each map's models.

        Equal to log(-log apply_each(maps, None, cloglog)) to rounding wherever that survival lies in
        [1e-300, 1 - 1e-15] (outside it the survival itself rounds to 0 or 1; here the value stays finite).
        """
        if not self.any_fitted:
            return _monotone(np.array(cloglog, dtype=float), np.maximum)
        work = np.clip(cloglog, *CLOGLOG_RANGE)
        np.multiply(work, self.slope, out=work)
        np.add(work, self.intercept, out=work)  # an infinite intercept stays infinite: slope x clipped z is finite
        k, t = self.unfitted
        work[k, :, t] = cloglog[k, :, t]
        return _monotone(work, np.maximum)


def _recalibrate(maps: list[Recalibrator], fitted: np.ndarray, work: np.ndarray, identity) -> np.ndarray:
    """The maps applied to ``work``, the (K, n, T) cloglog of the curves' clipped event probabilities (a new
    array, changed in place); ``fitted`` (K, T): where each map is fitted; ``identity(k, t)``: the curves' own
    values where it is not."""
    slope, z_mean, s0 = (np.stack([getattr(r, name) for r in maps])[:, None, :]
                         for name in ("slope", "z_mean", "baseline_survival"))
    # the same operations as Recalibrator.apply, in place in one buffer (a (K, n, T) array each step otherwise)
    np.subtract(work, z_mean, out=work)
    np.multiply(slope, work, out=work)
    np.exp(work, out=work)
    np.power(s0, work, out=work)
    k, t = np.nonzero(~fitted)  # the identity where a map is not fitted (few (map, time) pairs)
    work[k, :, t] = identity(k, t)
    np.clip(work, 0.0, 1.0, out=work)
    return _monotone(work)


ACCUMULATE_MAX_ROWS = 400  # up to this many curves numpy's accumulate is faster than the step-by-step loop


def _monotone(values: np.ndarray, op=np.minimum) -> np.ndarray:
    """``op.accumulate(values, axis=-1)`` in place (non-increasing survival; ``np.maximum``: its non-decreasing
    cloglog); for many curves one time step at a time (the same values: a minimum is exact; numpy's accumulate
    over a short last axis of many rows is twice as slow, and 8x faster for one patient's 50 replicates)."""
    if values.size <= ACCUMULATE_MAX_ROWS * values.shape[-1]:
        return op.accumulate(values, axis=-1, out=values)
    for j in range(1, values.shape[-1]):
        op(values[..., j - 1], values[..., j], out=values[..., j])
    return values
