"""The champion rule: a learned model is shipped only if it earns its place against the reference score.

The candidates are the learned models and the reference score's own survival model (the score re-expressed
as survival probabilities by a one-covariate Cox model on the score, ``crlm.models.score_cox``). The rule,
stated once here and quoted in the config, the model card and ``/model_info``:

1. Discrimination: a learned model qualifies only if its paired difference in ``selection.metric`` against
   the reference (nested-CV, on the patients both can score) is above 0 (point estimate).
2. Calibration: and only if its ICI at ``selection.ici_horizon`` is at most the larger of the reference's ICI
   and the *noise floor* at this cohort's size: the ``noise_floor_quantile`` (0.95) quantile of the ICI of
   predictions that are calibrated by construction (outcomes simulated from the model's own out-of-fold
   survival curves, censoring drawn from the cohort's reverse Kaplan-Meier), over ``noise_floor_resamples``
   resamples. An ICI below that floor is indistinguishable from perfect calibration at this n.
3. Among qualifying models the highest ``selection.metric`` wins; ties within ``tie_tolerance`` go to the
   simpler model. If none qualifies, the reference score's model is the champion and says so in words.
"""

from __future__ import annotations

__all__ = ["Decision", "SIMPLICITY", "choose_champion", "ici_noise_floor", "noise_floors"]

import contextlib
from dataclasses import dataclass, field

import numpy as np

from crlm.cohort.base import make_y
from crlm.evaluation.calibration import ici
from crlm.kaplan_meier import censoring_curve

# Simpler first: the tie-break of the selection rule.
SIMPLICITY = ("literature_cox", "coxph", "coxnet", "fong_plus", "cox_prior", "xgb_cox", "xgb_aft", "gbsa", "rsf",
              "ensemble")


@dataclass
class Decision:
    """The champion, the runner-up (the challenger alias), the rule and the verdict in words, and the
    per-candidate evidence (metric, delta vs reference, ICI, noise floor, qualifies)."""

    champion: str
    runner_up: str | None
    rule: str
    verdict: str
    reference_is_champion: bool
    candidates: list[dict] = field(default_factory=list)
    noise_floor: dict[str, dict[str, float]] = field(default_factory=dict)


def ici_noise_floor(y, survival: np.ndarray, grid: np.ndarray, horizon: float, n_resamples: int = 100,
                    seed: int = 0) -> dict[str, float]:
    """ICI at ``horizon`` of predictions that are calibrated by construction, at this cohort's size.

    Each resample draws every patient's event time from their own predicted curve ``survival`` (n, len(grid))
    (inverse transform; beyond the curve's last time the patient is event-free), and a censoring time from the
    cohort's reverse Kaplan-Meier (beyond its last time: censored there, administrative end of follow-up).
    The predicted S(horizon) is then the true survival of the simulated outcomes, so its ICI is pure noise.

    Returns
    -------
    dict
        ``mean``, ``q95`` (the 95th percentile) and ``n_resamples`` (successful resamples).
    """
    survival = np.asarray(survival, dtype=float)
    grid = np.asarray(grid, dtype=float)
    n = len(survival)
    j = int(np.argmin(np.abs(grid - horizon)))
    cens_times, cens_surv = censoring_curve(y["time"], y["event"])
    t_end = float(np.max(y["time"]))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        u = rng.random(n)
        below = survival <= u[:, None]  # first grid time where S(t) <= u is the event time
        has_event = below.any(axis=1)
        event_time = np.where(has_event, grid[np.argmax(below, axis=1)], np.inf)
        v = rng.random(n)
        k = np.searchsorted(-cens_surv, -v, side="left")  # first time the censoring survival drops to <= v
        cens_time = np.where(k < len(cens_times), cens_times[np.minimum(k, len(cens_times) - 1)], t_end)
        time = np.maximum(np.minimum(event_time, cens_time), 1e-3)
        y_sim = make_y(event_time <= cens_time, time)
        if y_sim["event"].sum() < 5 or np.max(time) <= horizon:
            continue
        with contextlib.suppress(ValueError, np.linalg.LinAlgError):
            values.append(ici(y_sim, survival[:, j], horizon)["ici"])
    if not values:
        return {"mean": float("nan"), "q95": float("nan"), "n_resamples": 0}
    return {"mean": float(np.mean(values)), "q95": float(np.quantile(values, 0.95)), "n_resamples": len(values)}


def noise_floors(result, models, horizon: float, n_resamples: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """The ICI noise floor of each model at ``horizon`` from its own repeat-averaged OOF curves."""
    out = {}
    for m in models:
        oof = result.oof[m]
        surv = oof.survival.mean(axis=0)[oof.valid]
        out[m] = ici_noise_floor(result.y[oof.valid], surv, result.grid, horizon, n_resamples, seed)
    return out


def choose_champion(result, models, reference: str, *, metric: str = "uno_c", ici_horizon: float = 36.0,
                    tie_tolerance: float = 0.005, noise_floor_resamples: int = 100, seed: int = 0,
                    reference_label: str | None = None) -> Decision:
    """Apply the rule of the module docstring to a ``BenchmarkResult``.

    Parameters
    ----------
    result : BenchmarkResult
        The nested benchmark (its OOF predictions, metrics and paired comparisons).
    models : sequence of str
        The learned candidates (those of them present in ``result``).
    reference : str
        The reference score model, itself a candidate.
    metric, ici_horizon, tie_tolerance, noise_floor_resamples, seed
        The rule's settings (``crlm.config.Selection``).
    reference_label : str, optional
        How the verdict names the reference ("the Fong score").

    Returns
    -------
    Decision
    """
    learned = [m for m in result.oof if m in models]
    if not learned:
        raise ValueError("no learned model to choose a champion from")
    has_ref = reference in result.oof
    horizon = ici_horizon if ici_horizon in result.horizons else result.horizons[-1]
    label = reference_label or reference
    floors = noise_floors(result, [*learned, *([reference] if has_ref else [])], horizon,
                          noise_floor_resamples, seed)
    ref_ici = result.estimate(reference, "ici", horizon) if has_ref else np.nan
    comp = result.comparisons
    candidates = []
    for m in learned:
        score = result.estimate(m, metric)
        sel = (comp.model == m) & (comp.metric == metric) if len(comp) else np.zeros(0, dtype=bool)
        if has_ref and np.any(sel):
            delta = float(comp[sel].iloc[0].delta)
        else:  # no bootstrap: the point difference (learned models score every patient of the population)
            delta = score - result.estimate(reference, metric) if has_ref else np.nan
        model_ici = result.estimate(m, "ici", horizon)
        floor = floors[m]["q95"]
        allowed = np.nanmax([ref_ici, floor]) if np.isfinite([ref_ici, floor]).any() else np.nan
        beats = bool(np.isfinite(delta) and delta > 0) if has_ref else True
        calibrated = bool(np.isfinite(model_ici) and np.isfinite(allowed) and model_ici <= allowed)
        candidates.append({"model": m, metric: score, f"delta_{metric}": delta, f"ici_{horizon:g}": model_ici,
                           "ici_noise_floor_q95": floor, "ici_allowed": allowed, "beats_reference": beats,
                           "calibration_ok": calibrated, "qualifies": beats and calibrated})
    qualified = [c["model"] for c in candidates if c["qualifies"]]
    score = {c["model"]: c[metric] for c in candidates}
    by_score = sorted(learned, key=lambda m: -score[m])
    rule = (f"a learned model is champion only if it beats {reference} on paired {metric} (nested CV, point "
            f"estimate on the patients both score) and its ICI at {horizon:g} months is at most the larger of "
            f"the reference's ICI and the noise floor at this n (95th percentile of the ICI of calibrated-by-"
            f"construction predictions, {noise_floor_resamples} resamples); the highest {metric} among those "
            f"wins (ties within {tie_tolerance} go to the simpler model); otherwise the reference score's model")
    if qualified:
        best = max(score[m] for m in qualified)
        ranked = sorted(qualified, key=lambda m: (-score[m] if best - score[m] > tie_tolerance else -best,
                                                  SIMPLICITY.index(m) if m in SIMPLICITY else 99))
        champion = ranked[0]
        runner_up = next((m for m in by_score if m != champion), None)
        c = next(c for c in candidates if c["model"] == champion)
        verdict = (f"{champion} beat {label} on this cohort: {metric} {c[metric]:.3f}, paired difference "
                   f"{c[f'delta_{metric}']:+.3f} on identical patients, ICI at {horizon:g} months "
                   f"{c[f'ici_{horizon:g}']:.3f} (allowed {c['ici_allowed']:.3f}); "
                   f"{len(qualified)} of {len(learned)} learned models qualified")
        return Decision(champion, runner_up, rule, verdict, False, candidates, floors)
    if not has_ref:
        raise ValueError(f"no learned model qualified and the reference {reference!r} is not in the benchmark")
    reasons = "; ".join(f"{c['model']}: " + ", ".join(
        r for r, bad in ((f"{metric} difference {c[f'delta_{metric}']:+.3f}", not c["beats_reference"]),
                         (f"ICI {c[f'ici_{horizon:g}']:.3f} > allowed {c['ici_allowed']:.3f}",
                          not c["calibration_ok"])) if bad) for c in candidates)
    verdict = (f"no learned model beat {label} on this cohort; the served model is {label} expressed as "
               f"survival probabilities (a Cox model on the score). Why: {reasons}")
    return Decision(reference, by_score[0], rule, verdict, True, candidates, floors)
